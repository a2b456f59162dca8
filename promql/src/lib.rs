//! A PromQL engine: Prometheus 3's evaluation rules (or Prometheus 2.42's, see
//! [`Semantics`]) over any [`SeriesSource`].
//!
//! Parsing is the `promql-parser` crate's, behind a bound on nesting depth ([`parse`]). A
//! query runs in two phases, as in Prometheus: [`plan`] walks the syntax tree and asks the
//! source for every selector's series over the time range the query will look at (the only
//! asynchronous step, where a database is queried), then [`eval`] computes the result in
//! memory, step by step, within the sample limit and the timeout. Native histograms are
//! computed on with Prometheus 3's arithmetic ([`histogram`]), by the functions and
//! aggregations that take them; the others leave them out.

pub mod annotations;
pub mod byte_escapes;
pub mod durations;
pub mod error;
mod gomath;
pub mod histogram;
pub mod labels;
pub mod memory;
pub mod parse;
pub mod positions;
pub mod source;
pub mod syntax_markers;
pub mod trim_operators;
pub mod value;

mod engine;

pub use annotations::Annotations;
pub use engine::functions::{Kind as FunctionKind, FUNCTIONS};
pub use engine::{Engine, EngineOptions, Features, Semantics};
pub use error::QueryError;
pub use labels::Labels;
pub use memory::MemorySource;
pub use source::{SelectHints, SeriesSource, Windows};
pub use value::{format_value, write_decimal, HistogramSample, InstantSample, Sample, Series, Value, STALE_NAN_BITS};
