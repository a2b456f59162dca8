//! Series held in memory: for tests, and for sources that load whole blocks.

use std::collections::BTreeMap;

use futures::future::BoxFuture;
use promql_parser::label::Matcher;

use crate::error::QueryError;
use crate::labels::Labels;
use crate::source::{SelectHints, SeriesSource};
use crate::value::{Sample, Series};

#[derive(Default, Debug, Clone)]
pub struct MemorySource {
    series: BTreeMap<Labels, Vec<Sample>>,
}

impl MemorySource {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds samples to the series `labels`; a sample at a time already present replaces it.
    pub fn add(&mut self, labels: Labels, samples: impl IntoIterator<Item = Sample>) {
        let stored = self.series.entry(labels).or_default();
        for s in samples {
            match stored.binary_search_by_key(&s.t, |x| x.t) {
                Ok(i) => stored[i] = s,
                Err(i) => stored.insert(i, s),
            }
        }
    }

    pub fn clear(&mut self) {
        self.series.clear();
    }
}

pub fn matches(labels: &Labels, matchers: &[Matcher]) -> bool {
    matchers.iter().all(|m| m.is_match(labels.get(&m.name)))
}

impl SeriesSource for MemorySource {
    fn select<'a>(
        &'a self,
        matchers: &'a [Matcher],
        hints: &'a SelectHints,
    ) -> BoxFuture<'a, Result<Vec<Series>, QueryError>> {
        Box::pin(async move {
            let selected: Vec<Series> = self
                .series
                .iter()
                .filter(|(labels, _)| matches(labels, matchers))
                .filter_map(|(labels, samples)| {
                    let from = samples.partition_point(|s| s.t < hints.start);
                    let to = samples.partition_point(|s| s.t <= hints.end);
                    // Only the windows' samples, as a database source reads them: the PromQL
                    // test scripts then check the planner's windows too.
                    let kept: Vec<Sample> = samples[from..to]
                        .iter()
                        .filter(|s| hints.windows.is_none_or(|w| w.contains(s.t)))
                        .copied()
                        .collect();
                    (!kept.is_empty()).then(|| Series::floats(labels.clone(), kept))
                })
                .collect();
            let total: usize = selected.iter().map(|s| s.samples.len()).sum();
            if hints.max_samples.is_some_and(|max| total > max) {
                return Err(QueryError::TooManySamples("reading series"));
            }
            Ok(selected)
        })
    }
}
