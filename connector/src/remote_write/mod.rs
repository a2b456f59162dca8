//! Prometheus remote write: wire format, decoding and the HTTP endpoint.

pub mod decode;
pub mod handler;
pub mod proto;
