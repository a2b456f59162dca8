//! Label sets: sorted by name, at most one value per name, no empty values.

use std::fmt;

pub const METRIC_NAME: &str = "__name__";

#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Labels(Vec<(String, String)>);

impl Labels {
    pub fn new(mut pairs: Vec<(String, String)>) -> Self {
        pairs.retain(|(_, v)| !v.is_empty());
        pairs.sort();
        pairs.dedup_by(|a, b| a.0 == b.0);
        Labels(pairs)
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
                self.0.remove(i);
            }
            Ok(i) => self.0[i].1 = value.to_string(),
            Err(_) if value.is_empty() => {}
            Err(i) => self.0.insert(i, (name.to_string(), value.to_string())),
        }
    }

    pub fn remove(&mut self, name: &str) {
        self.set(name, "");
    }

    pub fn without_metric_name(&self) -> Labels {
        Labels(self.0.iter().filter(|(k, _)| k != METRIC_NAME).cloned().collect())
    }

    /// Only the labels named in `names`.
    pub fn keep(&self, names: &[String]) -> Labels {
        Labels(self.0.iter().filter(|(k, _)| names.contains(k)).cloned().collect())
    }

    /// All labels but those named in `names`.
    pub fn drop(&self, names: &[String]) -> Labels {
        Labels(self.0.iter().filter(|(k, _)| !names.contains(k)).cloned().collect())
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
    fn sorted_without_empty_values_and_settable() {
        let mut l = Labels::from_pairs(&[("b", "2"), ("a", "1"), ("c", "")]);
        assert_eq!(l.to_string(), r#"{a="1", b="2"}"#);
        l.set("a", "");
        l.set("0", "x");
        assert_eq!(l.to_string(), r#"{0="x", b="2"}"#);
        assert_eq!(l.get("missing"), "");
    }
}
