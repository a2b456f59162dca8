//! Why a reconciliation failed; every variant is retried with backoff.

use crate::database::DatabaseError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API request failed: {0}")]
    Kube(#[from] kube::Error),
    #[error(transparent)]
    Database(#[from] DatabaseError),
    #[error("MetricPolicy finalizer failed: {0}")]
    Finalizer(#[source] Box<kube::runtime::finalizer::Error<Error>>),
    #[error("the object has no {0}; the API server always sets it")]
    MissingField(&'static str),
}

impl Error {
    /// A short, bounded label for the error counter.
    pub fn metric_reason(&self) -> &'static str {
        match self {
            Error::Kube(_) => "kubernetes_api",
            Error::Database(e) => e.reason(),
            Error::Finalizer(_) => "finalizer",
            Error::MissingField(_) => "invalid_object",
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
