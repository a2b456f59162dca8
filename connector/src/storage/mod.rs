//! Everything that talks to PostgreSQL on the write path.

pub mod error;
pub mod maintenance;
pub mod metadata;
pub mod migrations;
pub mod samples;
pub mod series;
pub mod series_cache;

pub use error::StorageError;
