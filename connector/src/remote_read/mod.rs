//! Prometheus remote read: XOR chunks and the HTTP endpoint (messages in [`crate::prompb`]).

pub mod handler;
pub mod xor_chunk;
