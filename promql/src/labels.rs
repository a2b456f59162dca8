//! Label sets: sorted by name, at most one value per name, no empty values.
//!
//! A label set is shared, not copied: cloning one (as evaluation does for every series at
//! every step) only counts a reference, and changing a shared one copies it first.
//!
//! Under delayed name removal (Prometheus' `promql-delayed-name-removal`) a set also carries
//! a mark, Prometheus' `DropName`: its metric name is to be dropped when evaluation ends. The
//! mark is no part of the set's identity: sets equal but for it are equal, hash and sort alike.

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

#[derive(Clone, Debug, Default, Eq)]
pub struct Labels(Arc<Vec<(String, String)>>, NameMark);

/// Whether the metric name of a label set is to be dropped when evaluation ends.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum NameMark {
    #[default]
    Kept,
    ToDrop,
}

impl PartialEq for Labels {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0) || self.0 == other.0
    }
}

impl PartialOrd for Labels {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Labels {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.cmp(&other.0)
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
        Labels(Arc::new(pairs), NameMark::Kept)
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
        Labels(
            Arc::new(self.0.iter().filter(|(k, _)| !is_metadata_label(k)).cloned().collect()),
            self.1,
        )
    }

    /// The same set, marked (or not) as one whose metric name is to be dropped when
    /// evaluation ends (delayed name removal).
    pub fn with_name_to_drop(mut self, to_drop: bool) -> Labels {
        self.1 = if to_drop { NameMark::ToDrop } else { NameMark::Kept };
        self
    }

    /// Whether the set is marked as one whose metric name is to be dropped when evaluation
    /// ends.
    pub fn name_to_drop(&self) -> bool {
        self.1 == NameMark::ToDrop
    }

    /// The set as evaluation hands it out: without the labels that name the metric if it was
    /// marked so (Prometheus' `cleanupMetricLabels`), and unmarked.
    pub fn with_marked_name_dropped(&self) -> Labels {
        if self.name_to_drop() {
            self.without_metadata_labels().with_name_to_drop(false)
        } else {
            self.clone()
        }
    }

    /// Only the labels named in `names`.
    pub fn keep(&self, names: &[String]) -> Labels {
        Labels(
            Arc::new(self.0.iter().filter(|(k, _)| names.contains(k)).cloned().collect()),
            NameMark::Kept,
        )
    }

    /// All labels but those named in `names`.
    pub fn drop(&self, names: &[String]) -> Labels {
        Labels(
            Arc::new(self.0.iter().filter(|(k, _)| !names.contains(k)).cloned().collect()),
            NameMark::Kept,
        )
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
    fn a_name_marked_to_drop_is_no_part_of_the_identity_and_dropped_at_the_end() {
        let l = Labels::from_pairs(&[("__name__", "up"), ("__type__", "gauge"), ("job", "api")]);
        let marked = l.clone().with_name_to_drop(true);
        assert!(marked.name_to_drop() && !l.name_to_drop());
        assert_eq!(marked, l);
        assert_eq!(marked.cmp(&l), std::cmp::Ordering::Equal);
        let hash = |l: &Labels| {
            let mut h = std::collections::hash_map::DefaultHasher::new();
            l.hash(&mut h);
            h.finish()
        };
        assert_eq!(hash(&marked), hash(&l));
        assert_eq!(
            l.with_marked_name_dropped().to_string(),
            r#"{__name__="up", __type__="gauge", job="api"}"#
        );
        let dropped = marked.with_marked_name_dropped();
        assert_eq!(dropped.to_string(), r#"{job="api"}"#);
        assert!(!dropped.name_to_drop());
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
