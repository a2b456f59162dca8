//! Everything that talks to PostgreSQL: the block format ([`codec`]), the write path into the
//! head ([`samples`]; exemplars and native histograms beside it in [`exemplars`] and
//! [`histograms`]), series ids ([`series`]), [`compaction`] into series chunks, [`deletion`]
//! of series data (asked for in SQL: [`deletion_queue`]), series
//! selection by label matchers ([`select`]), reading samples ([`read`]), and what the HTTP
//! API asks of the catalog ([`catalog`]). See `docs/storage.md`. No SQL lives outside this
//! module.

pub mod catalog;
pub mod codec;
pub mod compaction;
pub mod deletion;
pub mod deletion_queue;
pub mod error;
pub mod exemplars;
pub mod ha_lease;
pub mod histogram_codec;
pub mod histograms;
pub mod limits;
pub mod maintenance;
pub mod metadata;
pub mod migrations;
pub mod read;
pub mod samples;
pub mod select;
pub mod series;
pub mod series_cache;

pub use error::StorageError;
