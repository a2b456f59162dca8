//! The condition types both resources report, as `kubectl wait --for=condition=Ready` and
//! GitOps health checks expect them (`metav1.Condition`, one entry per type).

/// Everything the resource asks for is in place and working.
pub const READY: &str = "Ready";
/// The operator is changing something towards the spec (a rollout, waiting for the schema).
pub const PROGRESSING: &str = "Progressing";
/// Something is wrong that needs a person or will be retried: the reason says what.
pub const DEGRADED: &str = "Degraded";
