//! Upstream health: active probes, passive observation of real traffic, circuit
//! breakers per endpoint, and the verdict trait a plugin can replace.
//!
//! Data flows one way (docs/ARCHITECTURE.md):
//! - the request path calls [`UpstreamHealth::admit`] after a pick and
//!   [`UpstreamHealth::observe`] after every try; both only touch atomics of the
//!   endpoint's [`EndpointHealth`];
//! - probe tasks (the scheduler in `snapshot`) feed probe results the same way;
//! - a state change notifies the [`HealthHub`]; the sweeper (in `snapshot`) then
//!   ends timed states, recomputes the candidate tiers and updates the gauges.
//!
//! This module decides; it does no I/O. Probes are described by [`ProbeSpec`] and
//! run by the snapshot's scheduler over the connection pool's `connect`.
//!
//! Field reference and the state machine: `docs/health.md`.

mod breaker;
mod cell;
mod counters;
mod evaluator;
mod hub;
mod probe;
mod report;
mod state;
#[cfg(test)]
pub(crate) mod tests;

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
pub use probe::{PROBE_USER_AGENT, ProbeSpec};
pub use report::{report, upstream_report};
pub use state::{BreakerState, Cause, HealthState, NodeState, Transition, Transitions};

use crate::config::model::{OnPanic, ServiceVersion, UpstreamPolicy};
use crate::outcome::Outcome;
use crate::upstream::Endpoint;
use crate::zone::NodeHealth;

/// The health part of one published upstream: the evaluator in use, the health
/// cell of each endpoint (in the snapshot's endpoint order), and the resolved
/// metric handles. Built with each snapshot; the cells outlive it.
pub struct UpstreamHealth {
    /// Classifies observations: the built-in, or a plugin wrapping it.
    pub evaluator: Arc<dyn HealthEvaluator>,
    /// Metric handles of this service.
    pub metrics: ServiceHealthMetrics,
    /// Health of each endpoint, indexed like the snapshot's endpoints.
    pub cells: Vec<Arc<EndpointHealth>>,
    version: Arc<ServiceVersion>,
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
    /// The health part of `service` served with `version`, classifying with
    /// `evaluator`. Installs the version's breaker rules in `cells` (keeping
    /// windows when the rules did not change).
    pub fn new(
        service: &str,
        version: Arc<ServiceVersion>,
        evaluator: Arc<dyn HealthEvaluator>,
        cells: Vec<Arc<EndpointHealth>>,
        hub: &Arc<HealthHub>,
    ) -> Self {
        for cell in &cells {
            cell.configure(&version.upstream.breaker);
        }
        UpstreamHealth {
            evaluator,
            metrics: hub.service(service),
            cells,
            version,
            hub: hub.clone(),
        }
    }

    /// The upstream policy these endpoints are judged by.
    pub fn policy(&self) -> &UpstreamPolicy {
        &self.version.upstream
    }

    /// What the zone plan needs of endpoint `idx`.
    pub fn node_health(&self, idx: usize) -> NodeHealth {
        let cell = &self.cells[idx];
        NodeHealth {
            healthy: cell.is_healthy(),
            trial: cell.is_trial_only(),
        }
    }

    /// Admits a request to endpoint `idx`, just picked from tiers that are (or are
    /// not) in `panic`. `None`: pick another one (the endpoint went out after the
    /// tiers were computed, or it is half-open and its one trial is in flight). A
    /// fail-open panic admits everything: those tiers ignore health on purpose.
    pub fn admit(&self, idx: usize, panic: bool) -> Option<Admission<'_>> {
        if panic && self.policy().on_panic == OnPanic::FailOpen {
            return Some(Admission::Normal);
        }
        self.cells.get(idx)?.try_admit()
    }

    /// Feeds the outcome of one try of a real request to endpoint `idx` (of
    /// `endpoints`) to passive checks and breakers.
    pub fn observe(
        &self,
        endpoints: &[Arc<Endpoint>],
        idx: usize,
        outcome: Outcome,
        latency: Duration,
        retry_after: Option<Duration>,
    ) {
        let Some(ep) = endpoints.get(idx) else { return };
        if !matches!(outcome.http_equivalent(), Some(s) if s < 500) {
            ep.state.note_error();
        }
        let policy = self.policy();
        if policy.checks.passive.is_none() && policy.breaker.is_empty() {
            return; // nothing watches real traffic: skip the clock read
        }
        let obs = Observation {
            source: Source::Passive,
            observed: outcome.into(),
            latency,
            retry_after,
        };
        self.observe_at(ep, idx, &obs, Instant::now());
    }

    /// Feeds one observation of `ep` (endpoint `idx`) at `now`; returns the verdict.
    pub fn observe_at(&self, ep: &Endpoint, idx: usize, obs: &Observation, now: Instant) -> Verdict {
        let policy = self.policy();
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
            self.evaluator.evaluate(&node, obs)
        } else {
            Verdict::Ignore
        };
        let transitions = self.cells[idx].observe(policy, obs, verdict, now);
        if !transitions.is_empty() {
            self.publish(ep, idx, &transitions);
        }
        verdict
    }

    /// Ends timed states (ejections, breaker trips) that are due at `now`; returns
    /// the earliest time another one will be due.
    pub fn tick(&self, endpoints: &[Arc<Endpoint>], now: Instant) -> Option<Instant> {
        let mut next: Option<Instant> = None;
        for (idx, ep) in endpoints.iter().enumerate() {
            let (transitions, due) = self.cells[idx].tick(self.policy(), now);
            self.publish(ep, idx, &transitions);
            if let Some(due) = due {
                next = Some(next.map_or(due, |n| n.min(due)));
            }
        }
        next
    }

    /// Endpoints per [`NodeState`], for the gauges.
    pub fn state_counts(&self) -> [i64; NodeState::ALL.len()] {
        let mut counts = [0i64; NodeState::ALL.len()];
        for cell in &self.cells {
            counts[cell.state().index()] += 1;
        }
        counts
    }

    /// Logs, counts and signals transitions of `ep` (endpoint `idx`), each exactly
    /// once: only the observer whose compare-and-swap moved the state gets them.
    pub fn publish(&self, ep: &Endpoint, idx: usize, transitions: &Transitions) {
        for t in transitions.iter() {
            self.metrics.transitions[t.cause.index()].inc();
            self.hub.events.health(
                &ep.key.service,
                &ep.key.authority,
                t.from.as_str(),
                t.to.as_str(),
                t.cause.as_str(),
            );
            if t.to == NodeState::Healthy {
                ep.state.mark_joined();
            }
            log_transition(ep, &self.cells[idx], t);
        }
        if !transitions.is_empty() {
            self.hub.changed.notify_one();
        }
    }
}

/// One log line per transition: recoveries at info, the rest at warn.
fn log_transition(ep: &Endpoint, cell: &EndpointHealth, t: &Transition) {
    let out_for_ms = t.out_for.map(|d| d.as_millis() as u64);
    if matches!(t.to, NodeState::Healthy | NodeState::HalfOpen) {
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
            rule = t.rule.and_then(|r| cell.breaker_rule_name(r)),
            "node health changed"
        );
    }
}
