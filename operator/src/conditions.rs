//! Builds `status.conditions` the way `kubectl wait` and GitOps tools read them: one entry per
//! type, whose `lastTransitionTime` moves only when its status changes.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;

/// A condition as a reconciliation concludes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observed {
    pub type_: &'static str,
    pub status: bool,
    pub reason: &'static str,
    pub message: String,
}

impl Observed {
    pub fn new(type_: &'static str, status: bool, reason: &'static str, message: impl Into<String>) -> Self {
        Observed {
            type_,
            status,
            reason,
            message: message.into(),
        }
    }
}

/// The conditions to write: `observed`, keeping each unchanged condition's transition time from
/// `previous`.
pub fn merge(previous: &[Condition], observed: &[Observed], generation: Option<i64>) -> Vec<Condition> {
    observed
        .iter()
        .map(|o| {
            let status = if o.status { "True" } else { "False" };
            let last_transition_time = previous
                .iter()
                .find(|p| p.type_ == o.type_ && p.status == status)
                .map(|p| p.last_transition_time.clone())
                .unwrap_or_else(|| Time(Timestamp::now()));
            Condition {
                type_: o.type_.to_string(),
                status: status.to_string(),
                reason: o.reason.to_string(),
                message: o.message.clone(),
                observed_generation: generation,
                last_transition_time,
            }
        })
        .collect()
}

/// Whether the `type_` condition turned to `status` (or appeared with it) between two lists.
pub fn turned(previous: &[Condition], current: &[Condition], type_: &str, status: bool) -> bool {
    let status = if status { "True" } else { "False" };
    let was = previous.iter().find(|c| c.type_ == type_).map(|c| c.status.as_str());
    let now = current.iter().find(|c| c.type_ == type_).map(|c| c.status.as_str());
    now == Some(status) && was != Some(status)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transition_time_moves_only_when_the_status_changes() {
        let first = merge(&[], &[Observed::new("Ready", false, "Starting", "a")], Some(1));
        let old_time = Time(Timestamp::from_second(1_000).unwrap());
        let mut previous = first.clone();
        previous[0].last_transition_time = old_time.clone();

        let same = merge(
            &previous,
            &[Observed::new("Ready", false, "StillStarting", "b")],
            Some(2),
        );
        assert_eq!(same[0].last_transition_time, old_time);
        assert_eq!(same[0].reason, "StillStarting");
        assert_eq!(same[0].observed_generation, Some(2));

        let flipped = merge(&previous, &[Observed::new("Ready", true, "Running", "c")], Some(2));
        assert_ne!(flipped[0].last_transition_time, old_time);
        assert!(turned(&previous, &flipped, "Ready", true));
        assert!(!turned(&flipped, &flipped, "Ready", true));
    }
}
