//! The read side: the Prometheus HTTP query API ([`api`]) over the PromQL engine of the
//! `promscale-promql` crate, reading series from PostgreSQL through [`source`].

pub mod api;
pub mod json;
pub mod params;
pub mod source;

use std::time::Duration;

/// Limits of every query.
#[derive(Clone, Debug)]
pub struct QueryOptions {
    pub timeout: Duration,
    pub max_samples: usize,
    pub lookback_delta: Duration,
}
