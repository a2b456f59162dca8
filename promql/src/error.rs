//! Query errors, in the classes Prometheus' HTTP API reports them.

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum QueryError {
    /// The query does not parse or is invalid as PromQL (`bad_data`, 400).
    #[error("{0}")]
    BadData(String),
    /// The query is valid but cannot be evaluated on this data (`execution`, 422).
    #[error("{0}")]
    Execution(String),
    /// The query ran longer than allowed (`timeout`, 503).
    #[error("query timed out in {0}")]
    Timeout(&'static str),
    /// The query would hold more samples in memory than allowed (`execution`, 422).
    #[error("query processing would load too many samples into memory in {0}")]
    TooManySamples(&'static str),
    /// The series source failed (`internal`/`unavailable`, 503).
    #[error("{0}")]
    Storage(String),
}
