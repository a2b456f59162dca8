//! What a stack's status says: conditions from the reconciliation's outcome and from the
//! entries the connector pods write, and the endpoint URLs.

use std::time::Duration;

use k8s_openapi::jiff::Timestamp;
use promscale_crds::conditions::{DEGRADED, PROGRESSING, READY};
use promscale_crds::stack::Endpoints;
use promscale_crds::ConnectorStatus;

use crate::conditions::Observed;
use crate::database::DatabaseError;

use super::names::StackNames;

/// How many connector pods report ready, counting only entries refreshed within `stale_after`.
pub fn ready_connectors(entries: &[ConnectorStatus], now: Timestamp, stale_after: Duration) -> i32 {
    entries.iter().filter(|c| c.ready && age(c, now) <= stale_after).count() as i32
}

/// Entries whose pod stopped reporting `forget_after` ago: their pods are gone.
pub fn forgotten(
    entries: &[ConnectorStatus],
    now: Timestamp,
    forget_after: Duration,
) -> impl Iterator<Item = (usize, &ConnectorStatus)> {
    entries
        .iter()
        .enumerate()
        .filter(move |(_, c)| age(c, now) > forget_after)
}

fn age(entry: &ConnectorStatus, now: Timestamp) -> Duration {
    Duration::try_from(now.duration_since(entry.last_report_time.0)).unwrap_or(Duration::ZERO)
}

pub fn endpoints(names: &StackNames, cluster_domain: &str, port: i32) -> Endpoints {
    let base = names.service_url(cluster_domain, port);
    Endpoints {
        remote_write: format!("{base}/write"),
        remote_read: format!("{base}/read"),
        query: base,
    }
}

/// The conditions for a reconciliation that applied every object, given how the database part
/// went and how many connectors report ready.
pub fn conditions(database: &Result<(), DatabaseError>, ready: i32, desired: i32) -> Vec<Observed> {
    let counted = format!("{ready}/{desired} connectors report ready");
    match database {
        Err(DatabaseError::SchemaMissing) => vec![
            Observed::new(
                READY,
                false,
                "WaitingForSchema",
                DatabaseError::SchemaMissing.to_string(),
            ),
            Observed::new(PROGRESSING, true, "WaitingForSchema", counted),
            Observed::new(DEGRADED, false, "AsExpected", "nothing is wrong"),
        ],
        Err(e) => vec![
            Observed::new(READY, false, e.reason(), e.to_string()),
            Observed::new(PROGRESSING, false, e.reason(), "retrying with backoff"),
            Observed::new(DEGRADED, true, e.reason(), e.to_string()),
        ],
        Ok(()) => {
            let (ready_condition, progressing) = if desired == 0 {
                (
                    Observed::new(READY, false, "ScaledToZero", "spec.connector.replicas is 0"),
                    Observed::new(PROGRESSING, false, "ScaledToZero", counted.clone()),
                )
            } else if ready == 0 {
                (
                    Observed::new(READY, false, "NoConnectorReady", counted.clone()),
                    Observed::new(PROGRESSING, true, "WaitingForConnectors", counted.clone()),
                )
            } else if ready < desired {
                (
                    Observed::new(READY, true, "Available", counted.clone()),
                    Observed::new(PROGRESSING, true, "WaitingForConnectors", counted.clone()),
                )
            } else {
                (
                    Observed::new(READY, true, "Available", counted.clone()),
                    Observed::new(PROGRESSING, false, "Complete", counted.clone()),
                )
            };
            vec![
                ready_condition,
                progressing,
                Observed::new(DEGRADED, false, "AsExpected", "database reachable, settings applied"),
            ]
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn entry(pod: &str, ready: bool, seconds_ago: i64, now: Timestamp) -> ConnectorStatus {
        ConnectorStatus {
            pod: pod.into(),
            version: "0.1.0".into(),
            ready,
            samples_per_second: 0.0,
            active_series: 0,
            last_successful_write: None,
            last_error: None,
            last_report_time: Time(Timestamp::from_second(now.as_second() - seconds_ago).unwrap()),
        }
    }

    #[test]
    fn only_fresh_ready_entries_count_and_old_ones_are_forgotten() {
        let now = Timestamp::from_second(1_000_000).unwrap();
        let entries = vec![
            entry("fresh-ready", true, 10, now),
            entry("fresh-not-ready", false, 10, now),
            entry("stale-ready", true, 120, now),
            entry("gone", true, 3600, now),
        ];
        assert_eq!(ready_connectors(&entries, now, Duration::from_secs(60)), 1);
        let gone: Vec<_> = forgotten(&entries, now, Duration::from_secs(600))
            .map(|(i, c)| (i, c.pod.as_str()))
            .collect();
        assert_eq!(gone, vec![(3, "gone")]);
    }

    #[test]
    fn conditions_follow_database_and_connectors() {
        let ready = |c: &[Observed]| c.iter().find(|o| o.type_ == READY).unwrap().clone();
        assert!(ready(&conditions(&Ok(()), 2, 2)).status);
        assert_eq!(ready(&conditions(&Ok(()), 0, 2)).reason, "NoConnectorReady");
        let unreachable = conditions(&Err(DatabaseError::Unreachable("connection refused".into())), 2, 2);
        assert!(!ready(&unreachable).status);
        let degraded = unreachable.iter().find(|o| o.type_ == DEGRADED).unwrap();
        assert!(degraded.status);
        assert_eq!(degraded.reason, "DatabaseUnreachable");
        assert_eq!(
            ready(&conditions(&Err(DatabaseError::SchemaMissing), 0, 1)).reason,
            "WaitingForSchema"
        );
    }
}
