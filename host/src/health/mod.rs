//! Upstream health: active probes, passive observation of real traffic, circuit
//! breakers per endpoint, and the verdict trait a plugin can replace.
//!
//! Data flows one way (DESIGN.md §2):
//! - the request path calls [`admit`] after a pick and [`observe`] after every
//!   try; both only touch atomics of the endpoint's [`EndpointHealth`];
//! - probe tasks ([`HealthManager`]) feed probe results the same way;
//! - a state change notifies the [`HealthHub`]; the sweeper ([`sweep`]) then ends
//!   timed states, recomputes the candidate tiers and updates the gauges.
//!
//! Field reference and the state machine: `docs/health.md`.

mod breaker;
mod cell;
mod counters;
mod evaluator;
mod hub;
mod manager;
mod probe;
mod report;
mod state;
#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

pub use breaker::{BUCKETS, BreakerSet, RETRY_AFTER_CAP, Trip, Window};
pub use cell::{Admission, EndpointHealth, FORCED_OUT_FOR, TrialPermit};
pub use counters::Counts;
pub use evaluator::{
    BuiltinEvaluator, FailureKind, HealthEvaluator, NodeInfo, Observation, Observed, Source, StatusSet, Verdict,
};
pub use hub::{HealthHub, ServiceHealthMetrics};
pub use manager::{HealthManager, sweep};
pub use probe::{ProbeSpec, run_probe};
pub use report::{report, upstream_report};
pub use state::{BreakerState, Cause, HealthState, NodeState, Transition, Transitions};

use crate::config::model::OnPanic;
use crate::upstream::{Endpoint, Outcome, Upstream};
use crate::zone::Tiers;

/// The health part of one published upstream: the evaluator in use and the
/// resolved metric handles. Built with each snapshot.
pub struct UpstreamHealth {
    /// Classifies observations: the built-in, or a plugin wrapping it.
    pub evaluator: Arc<dyn HealthEvaluator>,
    /// Metric handles of this service.
    pub metrics: ServiceHealthMetrics,
    hub: Arc<HealthHub>,
}

impl std::fmt::Debug for UpstreamHealth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamHealth")
            .field("evaluator", &self.evaluator.name())
            .finish_non_exhaustive()
    }
}

impl UpstreamHealth {
    /// The health part of `service`, classifying with `evaluator`.
    pub fn new(service: &str, evaluator: Arc<dyn HealthEvaluator>, hub: &Arc<HealthHub>) -> Self {
        UpstreamHealth {
            evaluator,
            metrics: hub.service(service),
            hub: hub.clone(),
        }
    }

    /// Logs, counts and signals transitions of `ep` (each exactly once: only the
    /// observer whose compare-and-swap moved the state gets them).
    pub fn publish(&self, ep: &Endpoint, transitions: &Transitions) {
        for t in transitions.iter() {
            self.metrics.transitions[t.cause.index()].inc();
            if t.to == NodeState::Healthy {
                ep.state.mark_joined();
            }
            let out_for_ms = t.out_for.map(|d| d.as_millis() as u64);
            let recovering = matches!(t.to, NodeState::Healthy | NodeState::HalfOpen);
            if recovering {
                tracing::info!(
                    target: "gatehouse::health",
                    node = %ep.key,
                    from = t.from.as_str(),
                    to = t.to.as_str(),
                    cause = t.cause.as_str(),
                    count = t.count,
                    ejections = t.ejections,
                    "node health changed"
                );
            } else {
                tracing::warn!(
                    target: "gatehouse::health",
                    node = %ep.key,
                    from = t.from.as_str(),
                    to = t.to.as_str(),
                    cause = t.cause.as_str(),
                    count = t.count,
                    requests = t.requests,
                    out_for_ms,
                    ejections = t.ejections,
                    rule = t.rule.and_then(|r| ep.state.health.breaker_rule_name(r)),
                    "node health changed"
                );
            }
        }
        if !transitions.is_empty() {
            self.hub.changed.notify_one();
        }
    }
}

/// Admits a request to endpoint `idx` of `up`, just picked from `tiers`. `None`:
/// pick another one (the endpoint went out after the tiers were computed, or it is
/// half-open and its one trial is in flight). A fail-open panic admits everything:
/// those tiers ignore health on purpose.
pub fn admit<'a>(up: &'a Upstream, idx: usize, tiers: &Tiers) -> Option<Admission<'a>> {
    if tiers.panic && up.version.upstream.on_panic == OnPanic::FailOpen {
        return Some(Admission::Normal);
    }
    up.endpoints.get(idx)?.state.health.try_admit()
}

/// Feeds the outcome of one try of a real request to passive checks and breakers.
pub fn observe(up: &Upstream, idx: usize, outcome: Outcome, latency: Duration, retry_after: Option<Duration>) {
    let Some(ep) = up.endpoints.get(idx) else { return };
    let policy = &up.version.upstream;
    if policy.checks.passive.is_none() && policy.breaker.is_empty() {
        return; // nothing watches real traffic: skip the clock read
    }
    let obs = Observation {
        source: Source::Passive,
        observed: outcome.into(),
        latency,
        retry_after,
    };
    observe_at(up, ep, &obs, Instant::now());
}

/// Feeds one observation of `ep` (a member of `up`) at `now`; returns the verdict.
pub fn observe_at(up: &Upstream, ep: &Endpoint, obs: &Observation, now: Instant) -> Verdict {
    let policy = &up.version.upstream;
    let judged = match obs.source {
        Source::Active => policy.checks.active.is_some(),
        Source::Passive => policy.checks.passive.is_some(),
    };
    if !judged && (obs.source == Source::Active || policy.breaker.is_empty()) {
        return Verdict::Ignore;
    }
    let verdict = if judged {
        let node = NodeInfo {
            key: &ep.key,
            node: &ep.node,
        };
        up.health.evaluator.evaluate(&node, obs)
    } else {
        Verdict::Ignore
    };
    let transitions = ep.state.health.observe(policy, obs, verdict, now);
    if !transitions.is_empty() {
        up.health.publish(ep, &transitions);
    }
    verdict
}

/// Prepares the endpoints of a snapshot being built: installs the breaker rules
/// of the serving version (keeping windows when the rules did not change).
pub fn prepare(endpoints: &[Arc<Endpoint>], policy: &crate::config::model::UpstreamPolicy) {
    for ep in endpoints {
        ep.state.health.configure(&policy.breaker);
    }
}
