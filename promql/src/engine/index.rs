//! Finding a series or a group again at every step without rebuilding or rehashing its
//! labels: label sets are shared, so a set seen at an earlier step is usually the very same
//! set, recognised by identity; content is compared only for sets not seen before.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use crate::labels::Labels;
use crate::value::{HistogramSample, Sample, Series};

/// A hasher for the identities of shared label sets (addresses): one multiplication.
#[derive(Default)]
pub struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }

    fn write_u64(&mut self, n: u64) {
        let h = (self.0 ^ n).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        // Addresses are aligned: fold the high bits, which vary, into the low ones the table
        // indexes by.
        self.0 = h ^ (h >> 29);
    }

    fn write_usize(&mut self, n: usize) {
        self.write_u64(n as u64);
    }
}

pub type IdMap<V> = HashMap<usize, V, BuildHasherDefault<IdHasher>>;

/// Collects the samples of a range query (or subquery), step by step, into series.
pub struct MatrixBuilder {
    series: Vec<(Labels, Vec<Sample>, Vec<HistogramSample>)>,
    /// Positions in `series` by the identity of the label set stored there, which that entry
    /// keeps alive (so the identity cannot be reused by another set meanwhile).
    by_id: IdMap<usize>,
    by_labels: HashMap<Labels, usize>,
    /// Room for the samples of a new series: the number of steps, as Prometheus sizes it,
    /// up to [`MAX_PREALLOCATED`].
    steps: usize,
    samples: usize,
}

/// The most samples room is made for in advance per series: every step of the longest range
/// query the API accepts (11,000 points), but not the billions of steps a subquery like
/// `[365d:1ms]` asks for, whose samples the sample limit stops long before.
pub const MAX_PREALLOCATED: usize = 16 * 1024;

impl MatrixBuilder {
    pub fn new(steps: usize) -> Self {
        MatrixBuilder {
            series: Vec::new(),
            by_id: IdMap::default(),
            by_labels: HashMap::new(),
            steps: steps.min(MAX_PREALLOCATED),
            samples: 0,
        }
    }

    pub fn push(&mut self, labels: Labels, sample: Sample) {
        let i = self.position(labels, true);
        self.series[i].1.push(sample);
    }

    /// Adds a native histogram sample.
    pub fn push_histogram(&mut self, labels: Labels, sample: HistogramSample) {
        let i = self.position(labels, false);
        self.series[i].2.push(sample);
    }

    /// Where the series of `labels` is, added when new (room made for floats or histograms).
    fn position(&mut self, labels: Labels, floats: bool) -> usize {
        self.samples += 1;
        if let Some(&i) = self.by_id.get(&labels.shared_id()) {
            return i;
        }
        match self.by_labels.get(&labels) {
            Some(&i) => i,
            None => {
                let i = self.series.len();
                self.by_id.insert(labels.shared_id(), i);
                self.by_labels.insert(labels.clone(), i);
                let room = |wanted: bool| if wanted { self.steps } else { 0 };
                let (samples, histograms) = (Vec::with_capacity(room(floats)), Vec::with_capacity(room(!floats)));
                self.series.push((labels, samples, histograms));
                i
            }
        }
    }

    /// Samples collected so far.
    pub fn samples(&self) -> usize {
        self.samples
    }

    /// The series, sorted by labels as Prometheus sorts a matrix.
    pub fn finish(self) -> Vec<Series> {
        let mut series: Vec<Series> = self
            .series
            .into_iter()
            .map(|(labels, mut samples, mut histograms)| {
                samples.shrink_to_fit();
                histograms.shrink_to_fit();
                Series {
                    labels,
                    samples,
                    histograms,
                    start_times: Vec::new(),
                }
            })
            .collect();
        series.sort_unstable_by(|a, b| a.labels.cmp(&b.labels));
        series
    }
}

/// The groups one grouping expression (an aggregation, histogram_quantile) sorts its input
/// into, remembered across steps: each input label set's group, and a number that comes with
/// it (a bucket's upper bound).
#[derive(Default)]
pub struct GroupCache {
    /// By identity of an input label set, which the entry keeps alive: its group and number,
    /// or None for a set the grouping ignores.
    by_id: IdMap<(Labels, Option<(usize, f64)>)>,
    by_key: HashMap<Labels, usize>,
    /// The label sets of the groups, by group number.
    pub groups: Vec<Labels>,
}

impl GroupCache {
    /// Called before each step's input: forgets input label sets once they are many times the
    /// input (because the input's label sets are rebuilt at every step, say).
    pub fn begin_step(&mut self, input_len: usize) {
        if self.by_id.len() > 4 * input_len + 1024 {
            self.by_id.clear();
        }
    }

    /// The group of `labels`, computing its key with `key` the first time the set is seen.
    pub fn group_of(
        &mut self,
        labels: &Labels,
        key: impl FnOnce(&Labels) -> Option<(Labels, f64)>,
    ) -> Option<(usize, f64)> {
        if let Some((_, found)) = self.by_id.get(&labels.shared_id()) {
            return *found;
        }
        let found = key(labels).map(|(group, number)| {
            let next = self.groups.len();
            let g = *self.by_key.entry(group.clone()).or_insert(next);
            if g == next {
                self.groups.push(group);
            }
            (g, number)
        });
        self.by_id.insert(labels.shared_id(), (labels.clone(), found));
        found
    }
}

/// Per step, the groups in the order their first member appears, each with its state.
pub struct StepGroups<T> {
    slot_of_group: Vec<usize>,
    pub slots: Vec<(usize, T)>,
}

impl<T> StepGroups<T> {
    pub fn new() -> Self {
        StepGroups {
            slot_of_group: Vec::new(),
            slots: Vec::new(),
        }
    }

    /// The state of group `g`, created by `first` when the group has no member yet.
    pub fn get_or_insert(&mut self, g: usize, first: impl FnOnce() -> T) -> (&mut T, bool) {
        if g >= self.slot_of_group.len() {
            self.slot_of_group.resize(g + 1, usize::MAX);
        }
        let slot = self.slot_of_group[g];
        if slot == usize::MAX {
            self.slot_of_group[g] = self.slots.len();
            self.slots.push((g, first()));
            (&mut self.slots.last_mut().expect("just pushed").1, true)
        } else {
            (&mut self.slots[slot].1, false)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matrix_builder_finds_series_by_identity_or_content() {
        let a = Labels::from_pairs(&[("a", "1")]);
        let b = Labels::from_pairs(&[("a", "0")]);
        let mut m = MatrixBuilder::new(2);
        m.push(a.clone(), Sample { t: 1, v: 1.0 });
        m.push(b, Sample { t: 1, v: 2.0 });
        m.push(a.clone(), Sample { t: 2, v: 3.0 });
        m.push(Labels::from_pairs(&[("a", "1")]), Sample { t: 3, v: 4.0 });
        assert_eq!(m.samples(), 4);
        let out = m.finish();
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].labels.to_string(), r#"{a="0"}"#);
        assert_eq!(out[1].samples.len(), 3);
    }

    #[test]
    fn group_cache_maps_equal_keys_to_one_group() {
        let mut c = GroupCache::default();
        let key = |l: &Labels| Some((l.keep(&["a".to_string()]), 0.0));
        let x = Labels::from_pairs(&[("a", "1"), ("b", "1")]);
        let y = Labels::from_pairs(&[("a", "1"), ("b", "2")]);
        let z = Labels::from_pairs(&[("a", "2")]);
        assert_eq!(c.group_of(&x, key), Some((0, 0.0)));
        assert_eq!(c.group_of(&y, key), Some((0, 0.0)));
        assert_eq!(c.group_of(&z, key), Some((1, 0.0)));
        assert_eq!(c.group_of(&x, |_| unreachable!("known by identity")), Some((0, 0.0)));
        assert_eq!(c.groups.len(), 2);
    }
}
