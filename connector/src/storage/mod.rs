//! Everything that talks to PostgreSQL about samples: the block format ([`codec`]), the write
//! path into the head ([`samples`]), [`compaction`] into series chunks, and [`read`]. See
//! `docs/storage.md`.

pub mod codec;
pub mod compaction;
pub mod error;
pub mod maintenance;
pub mod metadata;
pub mod migrations;
pub mod read;
pub mod samples;
pub mod series;
pub mod series_cache;

pub use error::StorageError;
