//! Series held in memory: for tests, and for sources that load whole blocks. Selections come
//! in the order the series were first added, as from Prometheus' head (and the connector's
//! storage): the order that decides which of equal values topk, bottomk and limitk keep.

use std::collections::HashMap;

use futures::future::BoxFuture;
use promql_parser::label::Matcher;

use crate::error::QueryError;
use crate::labels::Labels;
use crate::source::{SelectHints, SeriesSource};
use crate::value::{HistogramSample, Sample, Series};

#[derive(Default, Debug, Clone)]
pub struct MemorySource {
    /// In the order they were first added.
    series: Vec<(Labels, Stored)>,
    index: HashMap<Labels, usize>,
}

/// A series' float and native histogram samples, each in time order; at most one of either
/// at a time.
#[derive(Default, Debug, Clone)]
struct Stored {
    samples: Vec<Sample>,
    histograms: Vec<HistogramSample>,
    /// Beside `samples` once any float sample was added with a start timestamp (0: none).
    start_times: Vec<i64>,
    keeps_start_times: bool,
}

impl MemorySource {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds samples to the series `labels`; a sample at a time already present (float or
    /// histogram) replaces it.
    pub fn add(&mut self, labels: Labels, samples: impl IntoIterator<Item = Sample>) {
        self.add_with_start_times(labels, samples.into_iter().map(|s| (s, 0)));
    }

    /// Adds samples with their start timestamps (ms; 0: unknown), as Prometheus' TSDB keeps
    /// them for float samples.
    pub fn add_with_start_times(&mut self, labels: Labels, samples: impl IntoIterator<Item = (Sample, i64)>) {
        let stored = self.entry(labels);
        for (s, start) in samples {
            if let Ok(i) = stored.histograms.binary_search_by_key(&s.t, |x| x.t) {
                stored.histograms.remove(i);
            }
            if start != 0 && !stored.keeps_start_times {
                stored.keeps_start_times = true;
                stored.start_times.resize(stored.samples.len(), 0);
            }
            let keep_starts = stored.keeps_start_times;
            match stored.samples.binary_search_by_key(&s.t, |x| x.t) {
                Ok(i) => {
                    stored.samples[i] = s;
                    if keep_starts {
                        stored.start_times[i] = start;
                    }
                }
                Err(i) => {
                    stored.samples.insert(i, s);
                    if keep_starts {
                        stored.start_times.insert(i, start);
                    }
                }
            }
        }
    }

    /// Adds native histogram samples to the series `labels`, as [`MemorySource::add`] does
    /// floats.
    pub fn add_histograms(&mut self, labels: Labels, histograms: impl IntoIterator<Item = HistogramSample>) {
        let stored = self.entry(labels);
        for h in histograms {
            if let Ok(i) = stored.samples.binary_search_by_key(&h.t, |x| x.t) {
                stored.samples.remove(i);
                if stored.keeps_start_times {
                    stored.start_times.remove(i);
                }
            }
            match stored.histograms.binary_search_by_key(&h.t, |x| x.t) {
                Ok(i) => stored.histograms[i] = h,
                Err(i) => stored.histograms.insert(i, h),
            }
        }
    }

    pub fn clear(&mut self) {
        self.series.clear();
        self.index.clear();
    }

    fn entry(&mut self, labels: Labels) -> &mut Stored {
        let next = self.series.len();
        let i = *self.index.entry(labels.clone()).or_insert(next);
        if i == next {
            self.series.push((labels, Stored::default()));
        }
        &mut self.series[i].1
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
                .filter_map(|(labels, stored)| {
                    // Only the windows' samples, as a database source reads them: the PromQL
                    // test scripts then check the planner's windows too.
                    let wanted =
                        |t: i64| t >= hints.start && t <= hints.end && hints.windows.is_none_or(|w| w.contains(t));
                    let samples: Vec<Sample> = stored.samples.iter().filter(|s| wanted(s.t)).copied().collect();
                    let start_times: Vec<i64> = if !stored.keeps_start_times {
                        Vec::new()
                    } else {
                        (stored.samples.iter().zip(&stored.start_times))
                            .filter(|(s, _)| wanted(s.t))
                            .map(|(_, &start)| start)
                            .collect()
                    };
                    let histograms: Vec<HistogramSample> =
                        stored.histograms.iter().filter(|h| wanted(h.t)).cloned().collect();
                    (!samples.is_empty() || !histograms.is_empty()).then(|| Series {
                        labels: labels.clone(),
                        samples,
                        histograms,
                        start_times,
                    })
                })
                .collect();
            let total: usize = selected.iter().map(|s| s.samples.len() + s.histograms.len()).sum();
            if hints.max_samples.is_some_and(|max| total > max) {
                return Err(QueryError::TooManySamples("reading series"));
            }
            Ok(selected)
        })
    }
}
