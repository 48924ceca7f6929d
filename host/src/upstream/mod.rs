//! One endpoint and how to reach it: identity and node settings, live per-endpoint
//! state (in-flight, latency estimate, balancer position), and the keep-alive
//! connection pool with the request body type it sends. A leaf: it knows no policy.

pub mod body;
mod endpoint;
pub mod pool;

pub use endpoint::{EWMA_DECAY, Endpoint, EndpointState, InflightGuard};
