//! The immutable snapshot the request path reads: routes and upstreams of the
//! group this gateway serves, built from one validated config.

use std::sync::Arc;

use arc_swap::ArcSwap;

use super::{Endpoint, EndpointKey, LiveRegistry, Upstream};
use crate::balance::{self, Balancer};
use crate::config::Config;
use crate::config::model::ServiceVersion;
use crate::health::{self, BuiltinEvaluator, HealthEvaluator, UpstreamHealth};
use crate::metrics::Metrics;
use crate::ratelimit::RateLimiter;
use crate::retry::{BuiltinRetry, RetryPolicy};
use crate::router::Router;
use crate::zone::{self, Locality, Tiers};

/// Lets optional subsystems (plugins) replace the built-in policies of a service
/// version while a snapshot is built. The defaults keep the built-ins.
pub trait PolicyHooks: Send + Sync {
    /// The balancer to use; `builtin` is the configured built-in.
    fn balancer(&self, _version: &ServiceVersion, builtin: Arc<dyn Balancer>) -> Arc<dyn Balancer> {
        builtin
    }
    /// The retry policy to use; `builtin` is the configured built-in.
    fn retry(&self, _version: &ServiceVersion, builtin: Arc<dyn RetryPolicy>) -> Arc<dyn RetryPolicy> {
        builtin
    }
    /// The health evaluator to use; `builtin` classifies by the version's `checks`.
    /// Thresholds, counters and the state machine stay in the host either way.
    fn health_evaluator(
        &self,
        _version: &ServiceVersion,
        builtin: Arc<dyn HealthEvaluator>,
    ) -> Arc<dyn HealthEvaluator> {
        builtin
    }
    /// The rate limiter to use; `builtin` applies the version's `limits:` and
    /// `quota:` (and offers the host counters through `RateLimiter::counters`).
    fn rate_limiter(&self, _version: &ServiceVersion, builtin: Arc<dyn RateLimiter>) -> Arc<dyn RateLimiter> {
        builtin
    }
}

/// Keeps every built-in policy.
#[derive(Debug, Default)]
pub struct BuiltinPolicies;

impl PolicyHooks for BuiltinPolicies {}

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
        let locality = Locality {
            zone: config.gateway.zone.clone(),
            region: config.gateway.region.clone(),
        };
        let mut upstreams = Vec::new();
        if let Some(group) = config.own_group() {
            for published in &group.services {
                let Some(version) = config.version_of(published) else {
                    continue; // validation guarantees it exists
                };
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
                let endpoints: Vec<Arc<Endpoint>> = published
                    .nodes
                    .iter()
                    .zip(states)
                    .map(|(node, state)| Arc::new(Endpoint::new(service.clone(), node.clone(), state)))
                    .collect();
                let policy = &version.upstream;
                let builtin = balance::build(policy.balancer, &endpoints, &policy.hash_key);
                let balancer = hooks.balancer(version, builtin);
                let retry = hooks.retry(version, Arc::new(BuiltinRetry::new(policy.retry.clone())));
                let evaluator = hooks.health_evaluator(version, Arc::new(BuiltinEvaluator::new(&policy.checks)));
                health::prepare(&endpoints, policy);
                let limiter = hooks.rate_limiter(
                    version,
                    live.limits.limiter(&service, version, &config.gateway, metrics),
                );
                let tiers: Tiers = zone::compute(&endpoints, policy, &locality);
                let node_names: Vec<String> = endpoints.iter().map(|e| e.key.authority.to_string()).collect();
                upstreams.push(Arc::new(Upstream {
                    metrics: metrics.upstream(&service, &node_names),
                    service: service.clone(),
                    version: version.clone(),
                    balancer,
                    retry,
                    limiter,
                    tiers: ArcSwap::from_pointee(tiers),
                    live: live.service(&service),
                    locality: locality.clone(),
                    health: UpstreamHealth::new(&service, evaluator, live.health_hub()),
                    endpoints,
                }));
            }
        }
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
