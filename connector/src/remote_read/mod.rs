//! Prometheus remote read: wire format, XOR chunks and the HTTP endpoint.

pub mod handler;
pub mod proto;
pub mod xor_chunk;
