//! The read side: the Prometheus HTTP query API ([`api`]) over the PromQL engine of the
//! `promscale-promql` crate, reading series from PostgreSQL through
//! [`crate::storage::select`].

pub mod api;
pub mod json;
pub mod params;

use std::time::Duration;

/// Limits of every query.
#[derive(Clone, Debug)]
pub struct QueryOptions {
    pub timeout: Duration,
    pub max_samples: usize,
    /// Raw samples a query may read from storage (all selectors together).
    pub max_fetched_samples: usize,
    /// Longest PromQL expression accepted, in bytes.
    pub max_query_bytes: usize,
    pub lookback_delta: Duration,
    /// Prometheus 3's or Prometheus 2's rules where they differ.
    pub semantics: promscale_promql::Semantics,
    /// Optional PromQL features (`--metrics.promql.enable-feature`).
    pub features: promscale_promql::Features,
}
