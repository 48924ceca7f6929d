//! One endpoint and how to reach it: identity and node settings, live per-endpoint
//! state (in-flight, latency estimate, balancer position), and the keep-alive
//! connection pool (HTTP/1.1 keep-alive, or shared HTTP/2 connections for `grpc`/`grpcs`
//! upstreams) with the request body type it sends. A leaf: it knows no policy.

pub mod body;
mod endpoint;
pub mod h2;
pub mod pool;

pub use endpoint::{EWMA_DECAY, Endpoint, EndpointState, InflightGuard};
