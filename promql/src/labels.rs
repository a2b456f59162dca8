//! Label sets: sorted by name, at most one value per name, no empty values.
//!
//! A label set is shared, not copied: cloning one (as evaluation does for every series at
//! every step) only counts a reference, and changing a shared one copies it first.

use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

pub const METRIC_NAME: &str = "__name__";
/// Prometheus 3's labels of a metric's type and unit (its type-and-unit-labels feature).
pub const METRIC_TYPE: &str = "__type__";
pub const METRIC_UNIT: &str = "__unit__";

/// Whether `name` is one of the labels that name the metric rather than the series.
pub fn is_metadata_label(name: &str) -> bool {
    name == METRIC_NAME || name == METRIC_TYPE || name == METRIC_UNIT
}

#[derive(Clone, Debug, Default, Eq, PartialOrd, Ord)]
pub struct Labels(Arc<Vec<(String, String)>>);

impl PartialEq for Labels {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0) || self.0 == other.0
    }
}

impl Hash for Labels {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.0.as_slice().hash(state)
    }
}

impl Labels {
    pub fn new(mut pairs: Vec<(String, String)>) -> Self {
        pairs.retain(|(_, v)| !v.is_empty());
        pairs.sort();
        pairs.dedup_by(|a, b| a.0 == b.0);
        Labels(Arc::new(pairs))
    }

    /// Identifies this shared label set (not its content): equal for clones of one set, and
    /// never reused by another set while this one is alive.
    pub(crate) fn shared_id(&self) -> usize {
        Arc::as_ptr(&self.0) as usize
    }

    pub fn from_pairs(pairs: &[(&str, &str)]) -> Self {
        Self::new(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect())
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The value of `name`, "" when absent (as in Prometheus, an absent label and an empty
    /// one are the same).
    pub fn get(&self, name: &str) -> &str {
        match self.0.binary_search_by(|(k, _)| k.as_str().cmp(name)) {
            Ok(i) => &self.0[i].1,
            Err(_) => "",
        }
    }

    pub fn has(&self, name: &str) -> bool {
        !self.get(name).is_empty()
    }

    /// Sets `name` to `value`; an empty value removes the label.
    pub fn set(&mut self, name: &str, value: &str) {
        match self.0.binary_search_by(|(k, _)| k.as_str().cmp(name)) {
            Ok(i) if value.is_empty() => {
                Arc::make_mut(&mut self.0).remove(i);
            }
            Ok(i) if self.0[i].1 == value => {}
            Ok(i) => Arc::make_mut(&mut self.0)[i].1 = value.to_string(),
            Err(_) if value.is_empty() => {}
            Err(i) => Arc::make_mut(&mut self.0).insert(i, (name.to_string(), value.to_string())),
        }
    }

    pub fn remove(&mut self, name: &str) {
        self.set(name, "");
    }

    /// The set without the labels that name the metric: `__name__`, and the `__type__` and
    /// `__unit__` that Prometheus 3 adds with its type-and-unit-labels feature and drops
    /// wherever it drops the name (its `schema.IsMetadataLabel`; Prometheus 2 has no such
    /// labels). The same shared set when it has none.
    pub fn without_metadata_labels(&self) -> Labels {
        if !self.0.iter().any(|(k, _)| is_metadata_label(k)) {
            return self.clone();
        }
        Labels(Arc::new(
            self.0.iter().filter(|(k, _)| !is_metadata_label(k)).cloned().collect(),
        ))
    }

    /// Only the labels named in `names`.
    pub fn keep(&self, names: &[String]) -> Labels {
        Labels(Arc::new(
            self.0.iter().filter(|(k, _)| names.contains(k)).cloned().collect(),
        ))
    }

    /// All labels but those named in `names`.
    pub fn drop(&self, names: &[String]) -> Labels {
        Labels(Arc::new(
            self.0.iter().filter(|(k, _)| !names.contains(k)).cloned().collect(),
        ))
    }
}

impl fmt::Display for Labels {
    /// `{a="1", b="2"}`, as Prometheus prints label sets.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("{")?;
        for (i, (k, v)) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{k}={v:?}")?;
        }
        f.write_str("}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_metric_name_type_and_unit_are_dropped_together() {
        let l = Labels::from_pairs(&[
            ("__name__", "http_requests_total"),
            ("__type__", "counter"),
            ("__unit__", "request"),
            ("__other__", "kept"),
            ("job", "api"),
        ]);
        assert_eq!(
            l.without_metadata_labels(),
            Labels::from_pairs(&[("__other__", "kept"), ("job", "api")])
        );
    }

    #[test]
    fn sorted_without_empty_values_and_settable() {
        let mut l = Labels::from_pairs(&[("b", "2"), ("a", "1"), ("c", "")]);
        assert_eq!(l.to_string(), r#"{a="1", b="2"}"#);
        l.set("a", "");
        l.set("0", "x");
        assert_eq!(l.to_string(), r#"{0="x", b="2"}"#);
        assert_eq!(l.get("missing"), "");
    }
}
