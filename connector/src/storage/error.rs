//! How database failures map onto what Prometheus should do with a request.

/// A storage failure, classified by whether sending the same data again can succeed.
#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum StorageError {
    /// The database cannot be reached or failed for reasons unrelated to the data: the sender
    /// should retry (HTTP 503).
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// The database refused the data itself (e.g. a label value too long to index): retrying
    /// cannot help (HTTP 400).
    #[error("database refused the data: {0}")]
    Rejected(String),
}

impl From<sqlx::Error> for StorageError {
    fn from(err: sqlx::Error) -> Self {
        match &err {
            sqlx::Error::Database(db) => {
                let code = db.code().unwrap_or_default();
                // Class 22 is "data exception", class 54 "program limit exceeded" (for
                // example an index row that is too large): both are about the data sent.
                if code.starts_with("22") || code.starts_with("54") {
                    StorageError::Rejected(format!("{} (SQLSTATE {code})", db.message()))
                } else {
                    StorageError::Unavailable(format!("{} (SQLSTATE {code})", db.message()))
                }
            }
            // Configuration errors may quote the connection string, which holds the password.
            sqlx::Error::Configuration(_) => StorageError::Unavailable("invalid database configuration".to_string()),
            other => StorageError::Unavailable(other.to_string()),
        }
    }
}
