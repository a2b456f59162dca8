//! Prometheus remote write: decoding and the HTTP endpoint (messages in [`crate::prompb`]).

pub mod decode;
pub mod handler;
