//! The aggregate the request path reads: one immutable [`Snapshot`] per config
//! generation, holding the routes and, per published service, an [`Upstream`] with
//! its endpoints and every policy (built-in or replaced through [`PolicyHooks`]).
//!
//! Also here, because they assemble or walk snapshots: the [`LiveRegistry`] of state
//! that outlives them, the active-probe scheduler ([`ProbeScheduler`]) and the
//! health sweeper ([`sweep`]). Background tasks build the next snapshot and publish
//! it with one atomic swap; the request path only reads.

mod hooks;
mod live;
mod probe;
mod probe_grpc;
mod probes;
mod sweep;
#[cfg(test)]
mod tests;

use std::sync::Arc;

use arc_swap::ArcSwap;

pub use hooks::{BuiltinPolicies, PolicyHooks};
pub use live::{LiveEndpoint, LiveRegistry};
pub use probe::run_probe;
pub use probes::ProbeScheduler;
pub use sweep::{SWEEP_INTERVAL, sweep};

use crate::balance::{self, Balancer};
use crate::config::Config;
use crate::config::model::{Published, ServiceVersion};
use crate::health::{BuiltinEvaluator, UpstreamHealth};
use crate::metrics::{Metrics, UpstreamMetrics};
use crate::outcome::EndpointKey;
use crate::ratelimit::RateLimiter;
use crate::retry::{BuiltinRetry, RetryBudget, RetryPolicy};
use crate::router::Router;
use crate::upstream::Endpoint;
use crate::zone::{self, Locality, Tiers};

/// What a snapshot build assembles upstreams from.
struct Parts<'a> {
    config: &'a Config,
    live: &'a LiveRegistry,
    metrics: &'a Metrics,
    hooks: &'a dyn PolicyHooks,
    locality: Locality,
}

impl Parts<'_> {
    /// The upstream of one published service: its endpoints (with their live state
    /// and health cells) and every policy, built-in or replaced by a hook.
    fn upstream(&self, published: &Published, version: &Arc<ServiceVersion>) -> Upstream {
        let (live, hooks) = (self.live, self.hooks);
        let service: Arc<str> = published.service.as_str().into();
        let keys: Vec<EndpointKey> = published
            .nodes
            .iter()
            .map(|n| EndpointKey {
                service: service.clone(),
                authority: n.authority().into(),
            })
            .collect();
        let states = live.endpoints(&keys);
        let http2 = version.upstream.scheme.http2();
        let connector = crate::tls::client::connector_for(version.upstream.tls.as_deref())
            .map(|c| if http2 { c.alpn_h2() } else { c });
        let endpoints: Vec<Arc<Endpoint>> = published
            .nodes
            .iter()
            .zip(&states)
            .map(|(node, live)| {
                let ep = Endpoint::new(service.clone(), node.clone(), live.state.clone());
                Arc::new(ep.with_tls(connector.clone()).with_http2(http2))
            })
            .collect();
        let cells = states.into_iter().map(|l| l.health).collect();
        let policy = &version.upstream;
        let builtin = balance::build(policy.balancer, &endpoints, &policy.hash_key);
        let evaluator = hooks.health_evaluator(version, Arc::new(BuiltinEvaluator::new(&policy.checks)));
        let health = UpstreamHealth::new(&service, version.clone(), evaluator, cells, live.health_hub());
        let limiter = live.limits.limiter(&service, version, &self.config.gateway);
        let tiers: Tiers = zone::compute(&endpoints, |i| health.node_health(i), policy, &self.locality);
        let node_names: Vec<String> = endpoints.iter().map(|e| e.key.authority.to_string()).collect();
        Upstream {
            metrics: self.metrics.upstream(&service, &node_names),
            balancer: hooks.balancer_with_health(version, builtin, &health.cells),
            retry: hooks.retry(version, Arc::new(BuiltinRetry::new(policy.retry.clone()))),
            limiter: hooks.rate_limiter(version, limiter),
            tiers: ArcSwap::from_pointee(tiers),
            budget: live.budget(&service),
            locality: self.locality.clone(),
            version: version.clone(),
            service,
            health,
            endpoints,
        }
    }
}

/// Everything the request path needs, for one config generation.
#[derive(Debug)]
pub struct Snapshot {
    /// Config generation (1, 2, ...).
    pub generation: u64,
    /// The validated config.
    pub config: Arc<Config>,
    /// Routes of the served group.
    pub router: Router,
    /// Upstreams of the served group, indexed by [`crate::router::RouteTarget::upstream`].
    pub upstreams: Vec<Arc<Upstream>>,
}

impl Snapshot {
    /// Builds a snapshot; live state for endpoints that stay is taken from `live`.
    pub fn build(
        config: Arc<Config>,
        generation: u64,
        live: &LiveRegistry,
        metrics: &Metrics,
        hooks: &dyn PolicyHooks,
    ) -> Snapshot {
        let parts = Parts {
            config: &config,
            live,
            metrics,
            hooks,
            locality: Locality {
                zone: config.gateway.zone.clone(),
                region: config.gateway.region.clone(),
            },
        };
        let upstreams: Vec<Arc<Upstream>> = config
            .own_group()
            .into_iter()
            .flat_map(|group| &group.services)
            // validation guarantees the version exists
            .filter_map(|published| Some(Arc::new(parts.upstream(published, config.version_of(published)?))))
            .collect();
        let router = Router::new(
            upstreams
                .iter()
                .enumerate()
                .flat_map(|(i, u)| u.version.routes.iter().map(move |r| (i, r))),
        );
        Snapshot {
            generation,
            config,
            router,
            upstreams,
        }
    }

    /// Endpoint identities served by this snapshot.
    pub fn endpoint_keys(&self) -> Vec<EndpointKey> {
        self.upstreams
            .iter()
            .flat_map(|u| u.endpoints.iter().map(|e| e.key.clone()))
            .collect()
    }

    /// Service names served by this snapshot.
    pub fn service_names(&self) -> Vec<Arc<str>> {
        self.upstreams.iter().map(|u| u.service.clone()).collect()
    }

    /// Recomputes every upstream's tiers; returns how many changed.
    pub fn refresh_tiers(&self) -> usize {
        self.upstreams.iter().filter(|u| u.refresh_tiers()).count()
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
    /// The service's retry budget, shared across snapshots.
    pub budget: Arc<RetryBudget>,
    /// The gateway's own zone and region.
    pub locality: Locality,
    /// Pre-resolved metric handles.
    pub metrics: UpstreamMetrics,
    /// Health cells of the endpoints, the evaluator (built-in, or a plugin wrapping
    /// the built-in) and health metrics.
    pub health: UpstreamHealth,
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
        let next = zone::compute(
            &self.endpoints,
            |i| self.health.node_health(i),
            &self.version.upstream,
            &self.locality,
        );
        let current = self.tiers.load();
        if next.same_routing(&current) {
            return false;
        }
        self.tiers.store(Arc::new(next));
        true
    }
}
