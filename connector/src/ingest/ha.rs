//! Deduplication of Prometheus HA pairs (`--metrics.high-availability`,
//! docs/high-availability.md): of the series that carry both the cluster and the replica
//! label (Prometheus' external labels), only those of the replica holding its cluster's lease
//! are stored, without the replica label; a standby's are kept aside
//! ([`crate::storage::ha_lease`]) and written if it takes over ([`replay_kept`]). Series
//! without both labels pass as they are (as in Mimir): servers that set only one of them are
//! not known to be one pair.

use std::collections::{BTreeMap, HashSet};
use std::sync::Mutex;
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
    /// Tenants are kept apart (--metrics.multi-tenancy): a cluster is named within its
    /// tenant, its lease keyed `tenant|cluster`, so that two tenants' `prod` never share one.
    pub per_tenant: bool,
}

/// HA deduplication of one connector: its options, and the leaders whose kept requests it
/// is writing.
#[derive(Debug)]
pub struct Ha {
    pub options: HaOptions,
    replaying: Mutex<HashSet<(String, String)>>,
    /// One leader's kept requests written at a time: each holds a connection of the pool
    /// while it writes, which live writes need too.
    replay_turn: tokio::sync::Semaphore,
}

impl Ha {
    pub fn new(options: HaOptions) -> Self {
        Ha {
            options,
            replaying: Mutex::new(HashSet::new()),
            replay_turn: tokio::sync::Semaphore::new(1),
        }
    }

    /// Marks the writing of `leader`'s kept requests as started by this connector; false
    /// when it already is.
    pub fn start_replay(&self, leader: &Leader) -> bool {
        let key = (leader.cluster.clone(), leader.replica.clone());
        self.replaying.lock().unwrap_or_else(|e| e.into_inner()).insert(key)
    }

    pub fn finish_replay(&self, leader: &Leader) {
        let key = (leader.cluster.clone(), leader.replica.clone());
        self.replaying.lock().unwrap_or_else(|e| e.into_inner()).remove(&key);
    }
}

/// A leader of a request: its cluster, itself, its fence, the newest time of what the request
/// stores of it, and whether it has kept requests to write (after a takeover).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leader {
    pub cluster: String,
    pub replica: String,
    pub fence_ms: i64,
    pub max_ms: i64,
    pub pending: bool,
}

/// The cluster and replica labels of a series, if it has both.
fn pair_of(series: &Series, options: &HaOptions) -> Option<(String, String)> {
    let find = |name: &str| series.labels.iter().find(|l| l.name() == name).map(|l| l.value());
    let (cluster, replica) = (find(&options.cluster_label)?, find(&options.replica_label)?);
    let cluster = match find(crate::tenancy::TENANT_LABEL).filter(|_| options.per_tenant) {
        // A tenant name never holds `|`.
        Some(tenant) => format!("{tenant}|{cluster}"),
        None => cluster.to_string(),
    };
    Some((cluster, replica.to_string()))
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

/// The oldest and newest sample or histogram time of some series (exemplars do not count:
/// a series' exemplars may be far older than its samples).
fn time_span<'a>(series: impl Iterator<Item = &'a Series>) -> Option<(i64, i64)> {
    series
        .flat_map(|s| {
            s.samples
                .iter()
                .map(|x| x.timestamp)
                .chain(s.histograms.iter().map(|h| h.timestamp))
        })
        .fold(None, |span, t| match span {
            None => Some((t, t)),
            Some((lo, hi)) => Some((t.min(lo), t.max(hi))),
        })
}

/// A standby's series as a remote-write 1.0 body (exemplars are not kept).
fn standby_body<'a>(series: impl Iterator<Item = &'a Series>) -> Vec<u8> {
    prompb::WriteRequest {
        timeseries: series
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
/// kept aside when newer than the leader's newest committed sample), leaders' lose the
/// replica label and what lies at or before their fence. Returns the request's leaders: once
/// its samples are committed, [`committed`] tells the lease, and [`replay`] writes what a
/// new leader kept as a standby.
pub async fn apply(
    options: &HaOptions,
    pool: &PgPool,
    metrics: &Metrics,
    batch: &mut WriteBatch,
) -> Result<Vec<Leader>, StorageError> {
    // (cluster, replica) -> indexes of its series.
    let mut groups: BTreeMap<(String, String), Vec<usize>> = BTreeMap::new();
    for (i, s) in batch.series.iter().enumerate() {
        if let Some((cluster, replica)) = pair_of(s, options) {
            groups.entry((cluster, replica)).or_default().push(i);
        }
    }
    if groups.is_empty() {
        return Ok(Vec::new());
    }
    let mut keep = vec![true; batch.series.len()];
    let mut leaders = Vec::new();
    for ((cluster, replica), members) in groups {
        let Some((min_ms, max_ms)) = time_span(members.iter().map(|&i| &batch.series[i])) else {
            // Exemplars alone (no sample to decide by): left out, counted as dropped.
            for &i in &members {
                keep[i] = false;
                batch.exemplars_dropped += batch.series[i].exemplars.len();
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
            leaders.push(Leader {
                cluster,
                replica,
                fence_ms,
                max_ms,
                pending,
            });
        } else {
            let samples: usize = members
                .iter()
                .map(|&i| batch.series[i].samples.len() + batch.series[i].histograms.len())
                .sum();
            metrics.ha_standby_samples.inc_by(samples as u64);
            if max_ms > fence_ms {
                let body = standby_body(members.iter().map(|&i| &batch.series[i]));
                ha_lease::keep_standby(pool, &cluster, &replica, min_ms, max_ms, &body).await?;
            }
            for &i in &members {
                keep[i] = false;
            }
        }
    }
    let mut i = 0;
    batch.series.retain(|_| {
        i += 1;
        keep[i - 1]
    });
    Ok(leaders)
}

/// Tells the lease that the leaders' samples of a request are committed. A failure is
/// logged, not answered: the samples are stored; the lease's record lags until the next
/// request (a takeover meanwhile would take the new leader's samples from an earlier fence).
pub async fn committed(pool: &PgPool, leaders: &[Leader]) {
    for leader in leaders {
        if let Err(e) = ha_lease::committed(pool, &leader.cluster, &leader.replica, leader.max_ms).await {
            tracing::warn!(error = %e, cluster = leader.cluster, replica = leader.replica, "recording an HA leader's commit failed");
        }
    }
}

/// Writes what a leader sent while it was a standby and that is newer than its fence, oldest
/// first (run in a task of its own: nothing here changes the answer to the request that
/// started it). Each kept request is claimed (locked) while it is written, then dropped, so
/// that connectors share the work; the writing stops if the lease moves. A request that
/// cannot be stored (the database refuses its data, or it does not decode) is dropped with a
/// warning; when the database is unavailable, the error is returned and the rest waits for
/// the leader's next request.
pub async fn replay_kept(
    ha: &Ha,
    pool: &PgPool,
    ingestor: &crate::ingest::Ingestor,
    metrics: &Metrics,
    leader: &Leader,
) -> Result<(), StorageError> {
    let _turn = ha.replay_turn.acquire().await;
    loop {
        let mut tx = pool.begin().await?;
        let Some((id, body)) = ha_lease::claim_kept(&mut tx, &leader.cluster, &leader.replica, leader.fence_ms).await?
        else {
            return Ok(());
        };
        // Written by a connector from a request it decoded: no size limit applies again.
        match crate::remote_write::decode::decode_snappy(&body, usize::MAX / 4) {
            Ok(mut batch) => {
                batch
                    .series
                    .retain_mut(|s| keep_after(s, &ha.options.replica_label, leader.fence_ms));
                match ingestor.ingest(batch).await {
                    Ok(report) => {
                        metrics
                            .ha_replayed_samples
                            .inc_by((report.samples + report.histograms) as u64);
                    }
                    Err(StorageError::Rejected(e)) => {
                        tracing::warn!(error = %e, cluster = leader.cluster, replica = leader.replica, "a kept HA standby request was refused by the database and is dropped");
                    }
                    Err(e) => return Err(e),
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, cluster = leader.cluster, replica = leader.replica, "a kept HA standby request does not decode and is dropped");
            }
        }
        ha_lease::forget(&mut tx, id).await?;
        tx.commit().await?;
    }
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
            per_tenant: true,
        };
        let tenant = series(
            &[
                ("__name__", "up"),
                ("__replica__", "a"),
                ("__tenant__", "t1"),
                ("cluster", "c1"),
            ],
            &[1],
        );
        assert_eq!(pair_of(&tenant, &options), Some(("t1|c1".into(), "a".into())));
        let mut s = series(
            &[("__name__", "up"), ("__replica__", "a"), ("cluster", "c1")],
            &[10, 20, 30],
        );
        assert_eq!(pair_of(&s, &options), Some(("c1".into(), "a".into())));
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
        let unnamed = series(&[("__name__", "up"), ("__replica__", "b")], &[1]);
        assert_eq!(pair_of(&unnamed, &options), None);
        // What a standby keeps reads back as the same series.
        let standby = [series(
            &[("__name__", "up"), ("__replica__", "b"), ("cluster", "c1")],
            &[5, 6],
        )];
        let kept = standby_body(standby.iter());
        let back = crate::remote_write::decode::decode_snappy(&kept, 1 << 20).unwrap();
        assert_eq!(back.series.len(), 1);
        assert_eq!(back.series[0].labels.len(), 3);
        assert_eq!(back.series[0].samples.len(), 2);
    }
}
