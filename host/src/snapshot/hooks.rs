//! The plugin seam: how optional subsystems replace the built-in policies of a
//! service version while a snapshot is built.

use std::sync::Arc;

use crate::balance::Balancer;
use crate::config::model::ServiceVersion;
use crate::health::{EndpointHealth, HealthEvaluator};
use crate::ratelimit::RateLimiter;
use crate::retry::RetryPolicy;

/// Lets optional subsystems (plugins) replace the built-in policies of a service
/// version while a snapshot is built. The defaults keep the built-ins.
pub trait PolicyHooks: Send + Sync {
    /// The balancer to use; `builtin` is the configured built-in.
    fn balancer(&self, _version: &ServiceVersion, builtin: Arc<dyn Balancer>) -> Arc<dyn Balancer> {
        builtin
    }
    /// As [`balancer`](Self::balancer), given the endpoints' health cells (indexed like
    /// the snapshot's endpoints) for balancers that read live health.
    fn balancer_with_health(
        &self,
        version: &ServiceVersion,
        builtin: Arc<dyn Balancer>,
        _health: &[Arc<EndpointHealth>],
    ) -> Arc<dyn Balancer> {
        self.balancer(version, builtin)
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
