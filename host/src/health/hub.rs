//! The process-wide part of health: the signal that wakes the sweeper when a
//! state changes, and the Prometheus families. Held by
//! the snapshot layer's live registry, so it outlives snapshots.

use std::collections::HashSet;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::Notify;

use super::evaluator::Verdict;
use super::state::{Cause, NodeState};
use crate::metrics::{Metrics, ServiceLabels};

/// `service`, `state`
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabels {
    /// Service name.
    pub service: String,
    /// A [`NodeState`] name.
    pub state: String,
}

/// `service`, `cause`
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CauseLabels {
    /// Service name.
    pub service: String,
    /// A [`Cause`] name.
    pub cause: String,
}

/// `service`, `verdict`
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProbeLabels {
    /// Service name.
    pub service: String,
    /// `success`, `failure` or `ignored`.
    pub verdict: String,
}

/// Health signal and metric families, one per process.
#[derive(Debug, Default)]
pub struct HealthHub {
    /// Notified whenever an endpoint's state changes; wakes the sweeper, which
    /// recomputes tiers and reschedules its timers.
    pub changed: Notify,
    nodes: Family<StateLabels, Gauge>,
    transitions: Family<CauseLabels, Counter>,
    panic: Family<ServiceLabels, Gauge>,
    probes: Family<ProbeLabels, Counter>,
    registered: AtomicBool,
    /// Services whose gauges were written, to drop series of services that left.
    gauged: Mutex<HashSet<String>>,
    /// The operator-visible journal that transitions are recorded in.
    pub events: std::sync::Arc<crate::events::Events>,
}

/// Handles resolved for one service, so the request path only bumps atomics.
#[derive(Debug, Clone)]
pub struct ServiceHealthMetrics {
    /// Transitions by cause, indexed by [`Cause::index`].
    pub transitions: [Counter; Cause::ALL.len()],
    /// Probes by verdict: success, failure, ignored.
    pub probes: [Counter; 3],
}

impl ServiceHealthMetrics {
    /// Counts one probe.
    pub fn probe(&self, verdict: Verdict) {
        let i = match verdict {
            Verdict::Success => 0,
            Verdict::Failure(_) => 1,
            Verdict::Ignore => 2,
        };
        self.probes[i].inc();
    }
}

impl HealthHub {
    /// A hub recording transitions in `events`.
    pub fn with_events(events: std::sync::Arc<crate::events::Events>) -> Self {
        HealthHub {
            events,
            ..Default::default()
        }
    }

    /// Registers the families with the process metrics (once; later calls do nothing).
    pub fn register(&self, metrics: &Metrics) {
        if self.registered.swap(true, Ordering::AcqRel) {
            return;
        }
        metrics.register(|r| {
            r.register(
                "health_nodes",
                "Upstream nodes by health state (healthy, unhealthy, ejected, half_open, breaker_open), by service",
                self.nodes.clone(),
            );
            r.register(
                "health_transitions",
                "Node health transitions, by service and cause",
                self.transitions.clone(),
            );
            r.register(
                "upstream_panic",
                "1 while a service is in panic (healthy capacity under panic_threshold)",
                self.panic.clone(),
            );
            r.register(
                "health_probes",
                "Active health probes, by service and verdict",
                self.probes.clone(),
            );
        });
    }

    /// Resolves the handles of one service.
    pub fn service(&self, service: &str) -> ServiceHealthMetrics {
        let transitions = Cause::ALL.map(|c| {
            self.transitions
                .get_or_create(&CauseLabels {
                    service: service.to_string(),
                    cause: c.as_str().to_string(),
                })
                .clone()
        });
        let probes = ["success", "failure", "ignored"].map(|v| {
            self.probes
                .get_or_create(&ProbeLabels {
                    service: service.to_string(),
                    verdict: v.to_string(),
                })
                .clone()
        });
        ServiceHealthMetrics { transitions, probes }
    }

    /// Sets the node gauges and the panic gauge of the services being served, and
    /// drops the series of services that are no longer served.
    pub fn set_gauges<'a>(&self, services: impl IntoIterator<Item = (&'a str, [i64; 5], bool)>) {
        let mut seen = HashSet::new();
        for (service, counts, panic) in services {
            for (state, n) in NodeState::ALL.iter().zip(counts) {
                self.nodes
                    .get_or_create(&StateLabels {
                        service: service.to_string(),
                        state: state.as_str().to_string(),
                    })
                    .set(n);
            }
            self.panic
                .get_or_create(&ServiceLabels {
                    service: service.to_string(),
                })
                .set(i64::from(panic));
            seen.insert(service.to_string());
        }
        let mut gauged = self.gauged.lock().unwrap_or_else(|p| p.into_inner());
        for gone in gauged.difference(&seen) {
            for state in NodeState::ALL {
                self.nodes.remove(&StateLabels {
                    service: gone.clone(),
                    state: state.as_str().to_string(),
                });
            }
            self.panic.remove(&ServiceLabels { service: gone.clone() });
        }
        *gauged = seen;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gauges_of_a_removed_service_disappear() {
        let metrics = Metrics::new();
        let hub = HealthHub::default();
        hub.register(&metrics);
        hub.register(&metrics); // twice is harmless
        hub.set_gauges([("a", [2, 1, 0, 0, 0], false), ("b", [0, 0, 0, 0, 3], true)]);
        let text = metrics.render();
        assert!(
            text.contains(r#"gatehouse_health_nodes{service="a",state="unhealthy"} 1"#),
            "{text}"
        );
        assert!(text.contains(r#"gatehouse_upstream_panic{service="b"} 1"#), "{text}");
        hub.set_gauges([("a", [3, 0, 0, 0, 0], false)]);
        let text = metrics.render();
        assert!(!text.contains(r#"service="b""#), "{text}");
        hub.service("a").transitions[Cause::BreakerTripped.index()].inc();
        let text = metrics.render();
        assert!(
            text.contains(r#"gatehouse_health_transitions_total{service="a",cause="breaker_tripped"} 1"#),
            "{text}"
        );
    }
}
