//! The proxy: listener, hyper service, request pipeline, forwarding and the
//! gateway's own error responses.

pub mod body;
pub mod error;
mod explain;
pub mod forward;
pub mod headers;
pub mod pipeline;
pub mod refusal;
pub mod server;
pub mod tls;
pub mod workers;

use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::metrics::Metrics;
use crate::snapshot::Snapshot;

/// What the request path reads: the current snapshot and the metric families.
#[derive(Debug)]
pub struct ProxyContext {
    /// The config being served; swapped atomically on reload.
    pub snapshot: Arc<ArcSwap<Snapshot>>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
}
