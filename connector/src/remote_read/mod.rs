//! Prometheus remote read: XOR and histogram chunks and the HTTP endpoint (messages in
//! [`crate::prompb`]).

pub mod handler;
pub mod histogram_chunk;
pub mod xor_chunk;
