//! Upstreams: endpoint identity, live per-endpoint state, the per-config snapshot,
//! and the pooled HTTP client.

mod endpoint;
pub mod live;
pub mod pool;
pub mod snapshot;

use std::sync::Arc;

use arc_swap::ArcSwap;

pub use endpoint::{EWMA_DECAY, Endpoint, EndpointKey, EndpointState, InflightGuard, now_ms};
pub use live::{LiveRegistry, ServiceLive};
pub use snapshot::{BuiltinPolicies, PolicyHooks, Snapshot};

use crate::balance::Balancer;
use crate::config::model::ServiceVersion;
use crate::metrics::UpstreamMetrics;
use crate::ratelimit::RateLimiter;
use crate::retry::RetryPolicy;
use crate::zone::{Locality, Tiers};

/// What became of one try, as seen by health, breakers, metrics and retries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The upstream answered with this status.
    Status(u16),
    /// No connection could be made.
    ConnectFailure,
    /// The upstream did not answer in time.
    Timeout,
    /// The connection broke.
    Reset,
}

impl Outcome {
    /// Metric label index (see [`crate::metrics::OUTCOMES`]).
    pub fn metric_index(self) -> usize {
        match self {
            Outcome::Status(s) => usize::from(s / 100).clamp(1, 5) - 1,
            Outcome::ConnectFailure => 5,
            Outcome::Timeout => 6,
            Outcome::Reset => crate::metrics::RESET,
        }
    }
}

/// One published service of this gateway's group, as served by one snapshot.
pub struct Upstream {
    /// Service name.
    pub service: Arc<str>,
    /// The published version (routes, policies).
    pub version: Arc<ServiceVersion>,
    /// Endpoints in node order; indexes are used by balancers and tiers.
    pub endpoints: Vec<Arc<Endpoint>>,
    /// The balancer (built-in, or a plugin wrapping the built-in).
    pub balancer: Arc<dyn Balancer>,
    /// The retry policy (built-in, or a plugin wrapping the built-in).
    pub retry: Arc<dyn RetryPolicy>,
    /// Rate limits and quota (built-in, or a plugin wrapping the built-in).
    pub limiter: Arc<dyn RateLimiter>,
    /// Candidate tiers; recomputed off the request path when health changes.
    pub tiers: ArcSwap<Tiers>,
    /// Live per-service state shared across snapshots.
    pub live: Arc<ServiceLive>,
    /// The gateway's own zone and region.
    pub locality: Locality,
    /// Pre-resolved metric handles.
    pub metrics: UpstreamMetrics,
    /// Health evaluator (built-in, or a plugin wrapping the built-in) and health metrics.
    pub health: crate::health::UpstreamHealth,
}

impl std::fmt::Debug for Upstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upstream")
            .field("service", &self.service)
            .field("version", &self.version.version)
            .field("endpoints", &self.endpoints.len())
            .finish()
    }
}

impl Upstream {
    /// Recomputes the candidate tiers from the endpoints' current health.
    /// Returns whether they changed.
    pub fn refresh_tiers(&self) -> bool {
        let next = crate::zone::compute(&self.endpoints, &self.version.upstream, &self.locality);
        let current = self.tiers.load();
        if next.same_routing(&current) {
            return false;
        }
        self.tiers.store(Arc::new(next));
        true
    }
}
