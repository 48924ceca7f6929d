//! Prometheus metrics. Families are registered once; each snapshot resolves the
//! label sets it needs into plain handles ([`UpstreamMetrics`]) so the request path
//! only bumps atomics and never hashes label strings.

use std::sync::Mutex;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// `service`
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ServiceLabels {
    /// Service name.
    pub service: String,
}

/// `service`, `class` (1xx..5xx)
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// Service name ("" for requests that matched no route).
    pub service: String,
    /// Status class.
    pub class: String,
}

/// `service`, `node`, `outcome`
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AttemptLabels {
    /// Service name.
    pub service: String,
    /// `host:port`.
    pub node: String,
    /// `2xx`..`5xx`, `connect_failure`, `timeout`, `reset`.
    pub outcome: String,
}

/// `result` (ok | invalid)
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    /// Outcome.
    pub result: String,
}

pub use crate::outcome::{OUTCOMES, RESET};

/// Counters of one endpoint's attempts by outcome.
#[derive(Debug, Clone, Default)]
pub struct NodeAttemptCounters(pub [Counter; 8]);

/// Handles resolved for one upstream of one snapshot.
#[derive(Debug, Clone)]
pub struct UpstreamMetrics {
    /// Responses by status class 1xx..5xx (index 0..5).
    pub responses: [Counter; 5],
    /// Request latency.
    pub latency: Histogram,
    /// Per-endpoint attempts, by endpoint index.
    pub attempts: Vec<NodeAttemptCounters>,
    /// Retries made.
    pub retries: Counter,
    /// Retries refused by the budget.
    pub retry_budget_exhausted: Counter,
}

/// All metric families of the process.
#[derive(Debug)]
pub struct Metrics {
    registry: Mutex<Registry>,
    requests: Family<RequestLabels, Counter>,
    latency: Family<ServiceLabels, Histogram, fn() -> Histogram>,
    attempts: Family<AttemptLabels, Counter>,
    retries: Family<ServiceLabels, Counter>,
    retry_budget_exhausted: Family<ServiceLabels, Counter>,
    /// Config reloads by result.
    pub config_reloads: Family<ResultLabels, Counter>,
    /// Current config generation.
    pub config_generation: Gauge,
    /// In-place edits of published versions accepted by `--allow-published-edits`.
    pub published_edits: Counter,
    /// Requests that matched no route.
    pub unrouted: Counter,
}

fn latency_histogram() -> Histogram {
    // 0.5 ms .. ~16 s
    Histogram::new(exponential_buckets(0.0005, 2.0, 16))
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Registers every family.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("gatehouse");
        let requests = Family::<RequestLabels, Counter>::default();
        let latency = Family::<ServiceLabels, Histogram, fn() -> Histogram>::new_with_constructor(
            latency_histogram as fn() -> Histogram,
        );
        let attempts = Family::<AttemptLabels, Counter>::default();
        let retries = Family::<ServiceLabels, Counter>::default();
        let retry_budget_exhausted = Family::<ServiceLabels, Counter>::default();
        let config_reloads = Family::<ResultLabels, Counter>::default();
        let config_generation = Gauge::default();
        let published_edits = Counter::default();
        let unrouted = Counter::default();
        registry.register(
            "requests",
            "Requests answered, by service and status class",
            requests.clone(),
        );
        registry.register(
            "request_duration_seconds",
            "Time from request head to response head, by service",
            latency.clone(),
        );
        registry.register(
            "upstream_attempts",
            "Tries sent to upstream nodes, by outcome",
            attempts.clone(),
        );
        registry.register("retries", "Retries made, by service", retries.clone());
        registry.register(
            "retry_budget_exhausted",
            "Retries not made because the retry budget was spent",
            retry_budget_exhausted.clone(),
        );
        registry.register("config_reloads", "Config loads by result", config_reloads.clone());
        registry.register(
            "config_generation",
            "Generation of the config being served",
            config_generation.clone(),
        );
        registry.register(
            "published_version_edits",
            "Template fields of published versions changed in place (allowed by --allow-published-edits)",
            published_edits.clone(),
        );
        registry.register("unrouted_requests", "Requests that matched no route", unrouted.clone());
        Self {
            registry: Mutex::new(registry),
            requests,
            latency,
            attempts,
            retries,
            retry_budget_exhausted,
            config_reloads,
            config_generation,
            published_edits,
            unrouted,
        }
    }

    /// Lets other modules register their own metrics; returns what `f` returns
    /// (usually the handles it registered).
    pub fn register<T>(&self, f: impl FnOnce(&mut Registry) -> T) -> T {
        f(&mut self.registry.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Resolves the handles one upstream needs.
    pub fn upstream(&self, service: &str, nodes: &[String]) -> UpstreamMetrics {
        let class = |c: &str| {
            self.requests
                .get_or_create(&RequestLabels {
                    service: service.to_string(),
                    class: c.to_string(),
                })
                .clone()
        };
        let svc = ServiceLabels {
            service: service.to_string(),
        };
        let attempts = nodes
            .iter()
            .map(|node| {
                let mut counters: [Counter; 8] = Default::default();
                for (i, outcome) in OUTCOMES.iter().chain(&["reset"]).enumerate() {
                    counters[i] = self
                        .attempts
                        .get_or_create(&AttemptLabels {
                            service: service.to_string(),
                            node: node.clone(),
                            outcome: outcome.to_string(),
                        })
                        .clone();
                }
                NodeAttemptCounters(counters)
            })
            .collect();
        UpstreamMetrics {
            responses: [class("1xx"), class("2xx"), class("3xx"), class("4xx"), class("5xx")],
            latency: self.latency.get_or_create(&svc).clone(),
            attempts,
            retries: self.retries.get_or_create(&svc).clone(),
            retry_budget_exhausted: self.retry_budget_exhausted.get_or_create(&svc).clone(),
        }
    }

    /// Counts a response that was answered without an upstream (by status).
    pub fn unrouted_response(&self, status: u16) {
        self.requests
            .get_or_create(&RequestLabels {
                service: String::new(),
                class: format!("{}xx", status / 100),
            })
            .inc();
    }

    /// Counts a config load.
    pub fn config_reload(&self, ok: bool) {
        self.config_reloads
            .get_or_create(&ResultLabels {
                result: if ok { "ok" } else { "invalid" }.to_string(),
            })
            .inc();
    }

    /// Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let registry = self.registry.lock().unwrap_or_else(|p| p.into_inner());
        encode(&mut out, &registry).expect("writing to a String cannot fail");
        out
    }
}

impl UpstreamMetrics {
    /// Counts a response by status.
    pub fn response(&self, status: u16) {
        if let Some(c) = self.responses.get(usize::from(status / 100).wrapping_sub(1)) {
            c.inc();
        }
    }
}
