//! Deduplication of Prometheus HA pairs (`--metrics.high-availability`,
//! docs/high-availability.md): of the series that carry both the cluster and the replica
//! label (Prometheus' external labels), only those of the replica holding its cluster's lease
//! are stored, without the replica label; a standby's are kept aside
//! ([`crate::storage::ha_lease`]) and written if it takes over. Series without those labels
//! pass as they are.

use std::collections::BTreeMap;
use std::time::Duration;

use sqlx::PgPool;

use crate::metrics::Metrics;
use crate::model::Series;
use crate::prompb;
use crate::remote_write::decode::WriteBatch;
use crate::storage::ha_lease::{self, Decision};
use crate::storage::StorageError;

/// `--metrics.ha.*`.
#[derive(Debug, Clone)]
pub struct HaOptions {
    pub cluster_label: String,
    pub replica_label: String,
    /// How long (in sample time) a leader may send nothing newer before another replica
    /// takes over.
    pub lease_timeout: Duration,
}

/// A leader whose kept requests (from its time as a standby) are to be written now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Takeover {
    pub cluster: String,
    pub replica: String,
    pub fence_ms: i64,
}

/// The cluster and replica labels of a series, if it has both.
fn pair_of<'s>(series: &'s Series, options: &HaOptions) -> Option<(&'s str, &'s str)> {
    let find = |name: &str| series.labels.iter().find(|l| l.name() == name).map(|l| l.value());
    Some((find(&options.cluster_label)?, find(&options.replica_label)?))
}

/// Removes the replica label and everything at or before `fence_ms`; whether anything is
/// left to store.
pub fn keep_after(series: &mut Series, replica_label: &str, fence_ms: i64) -> bool {
    series.labels.retain(|l| l.name() != replica_label);
    series.samples.retain(|s| s.timestamp > fence_ms);
    series.histograms.retain(|h| h.timestamp > fence_ms);
    series.exemplars.retain(|e| e.timestamp > fence_ms);
    !(series.samples.is_empty() && series.histograms.is_empty() && series.exemplars.is_empty())
}

/// The oldest and newest sample, histogram or exemplar time of some series.
fn time_span<'a>(series: impl Iterator<Item = &'a Series>) -> Option<(i64, i64)> {
    series
        .flat_map(|s| {
            s.samples
                .iter()
                .map(|x| x.timestamp)
                .chain(s.histograms.iter().map(|h| h.timestamp))
                .chain(s.exemplars.iter().map(|e| e.timestamp))
        })
        .fold(None, |span, t| match span {
            None => Some((t, t)),
            Some((lo, hi)) => Some((t.min(lo), t.max(hi))),
        })
}

/// A standby's series as a remote-write 1.0 body (exemplars are not kept).
fn standby_body(series: &[Series]) -> Vec<u8> {
    prompb::WriteRequest {
        timeseries: series
            .iter()
            .map(|s| prompb::TimeSeries {
                labels: s
                    .labels
                    .iter()
                    .map(|l| prompb::Label {
                        name: l.name.clone(),
                        value: l.value.clone(),
                    })
                    .collect(),
                samples: s.samples.clone(),
                histograms: s.histograms.clone(),
                exemplars: Vec::new(),
            })
            .collect(),
        metadata: Vec::new(),
    }
    .to_snappy()
}

/// Applies the lease to a decoded request, in place: standbys' series are taken out (and
/// kept aside when newer than the leader's newest sample), leaders' lose the replica label
/// and what lies at or before their fence. Returns the leaders whose kept requests are to be
/// written (after a takeover, or when an earlier attempt did not finish).
pub async fn apply(
    options: &HaOptions,
    pool: &PgPool,
    metrics: &Metrics,
    batch: &mut WriteBatch,
) -> Result<Vec<Takeover>, StorageError> {
    // (cluster, replica) -> indexes of its series.
    let mut groups: BTreeMap<(String, String), Vec<usize>> = BTreeMap::new();
    for (i, s) in batch.series.iter().enumerate() {
        if let Some((cluster, replica)) = pair_of(s, options) {
            groups
                .entry((cluster.to_string(), replica.to_string()))
                .or_default()
                .push(i);
        }
    }
    if groups.is_empty() {
        return Ok(Vec::new());
    }
    let mut keep = vec![true; batch.series.len()];
    let mut takeovers = Vec::new();
    for ((cluster, replica), members) in groups {
        let Some((min_ms, max_ms)) = time_span(members.iter().map(|&i| &batch.series[i])) else {
            // Nothing to store.
            for &i in &members {
                keep[i] = false;
            }
            continue;
        };
        let Decision {
            is_leader,
            fence_ms,
            took_over,
            pending,
        } = ha_lease::decide(pool, &cluster, &replica, min_ms, max_ms, options.lease_timeout).await?;
        if is_leader {
            if took_over {
                metrics.ha_takeovers.inc();
                tracing::info!(cluster, replica, "this replica took over its cluster's HA lease");
            }
            for &i in &members {
                let series = &mut batch.series[i];
                let before = series.samples.len() + series.histograms.len();
                keep[i] = keep_after(series, &options.replica_label, fence_ms);
                let fenced = before - series.samples.len() - series.histograms.len();
                metrics.ha_fenced_samples.inc_by(fenced as u64);
            }
            if pending > 0 {
                takeovers.push(Takeover {
                    cluster,
                    replica,
                    fence_ms,
                });
            }
        } else {
            let series: Vec<Series> = members.iter().map(|&i| batch.series[i].clone()).collect();
            let samples: usize = series.iter().map(|s| s.samples.len() + s.histograms.len()).sum();
            metrics.ha_standby_samples.inc_by(samples as u64);
            for &i in &members {
                keep[i] = false;
            }
            if max_ms > fence_ms {
                ha_lease::keep_standby(pool, &cluster, &replica, min_ms, max_ms, &standby_body(&series)).await?;
            }
        }
    }
    let mut i = 0;
    batch.series.retain(|_| {
        i += 1;
        keep[i - 1]
    });
    Ok(takeovers)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Label;
    use crate::prompb::Sample;

    fn series(labels: &[(&str, &str)], times: &[i64]) -> Series {
        Series {
            labels: labels.iter().map(|(n, v)| Label::new(*n, *v)).collect(),
            samples: times
                .iter()
                .map(|&timestamp| Sample { value: 1.0, timestamp })
                .collect(),
            histograms: vec![],
            exemplars: vec![],
        }
    }

    #[test]
    fn a_leader_series_loses_its_replica_label_and_what_lies_before_the_fence() {
        let options = HaOptions {
            cluster_label: "cluster".into(),
            replica_label: "__replica__".into(),
            lease_timeout: Duration::from_secs(30),
        };
        let mut s = series(
            &[("__name__", "up"), ("__replica__", "a"), ("cluster", "c1")],
            &[10, 20, 30],
        );
        assert_eq!(pair_of(&s, &options), Some(("c1", "a")));
        assert_eq!(time_span([&s].into_iter()), Some((10, 30)));
        assert!(keep_after(&mut s, "__replica__", 20));
        assert_eq!(s.samples.iter().map(|x| x.timestamp).collect::<Vec<_>>(), vec![30]);
        assert_eq!(
            s.labels.iter().map(|l| l.name()).collect::<Vec<_>>(),
            vec!["__name__", "cluster"]
        );
        assert!(!keep_after(&mut s, "__replica__", 30));
        let plain = series(&[("__name__", "up"), ("cluster", "c1")], &[1]);
        assert_eq!(pair_of(&plain, &options), None);
        // What a standby keeps reads back as the same series.
        let kept = standby_body(&[series(
            &[("__name__", "up"), ("__replica__", "b"), ("cluster", "c1")],
            &[5, 6],
        )]);
        let back = crate::remote_write::decode::decode_snappy(&kept, 1 << 20).unwrap();
        assert_eq!(back.series.len(), 1);
        assert_eq!(back.series[0].labels.len(), 3);
        assert_eq!(back.series[0].samples.len(), 2);
    }
}
