//! Metrics of rate limits and quotas. Families are registered once per
//! [`crate::metrics::Metrics`]; each rule resolves its label sets into plain
//! counters when it is built, so a decision only bumps atomics.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// `service`, `rule`, `result`
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct DecisionLabels {
    /// Service name.
    pub service: String,
    /// Rule name (`quota` for the quota).
    pub rule: String,
    /// `allowed`, `limited`, `shadow_limited` or `unavailable`.
    pub result: String,
}

/// Handles of one rule.
#[derive(Debug, Clone, Default)]
pub struct RuleMetrics {
    /// Requests the rule admitted (of requests that went on).
    pub allowed: Counter,
    /// Requests the rule refused.
    pub limited: Counter,
    /// Requests a shadow rule would have refused.
    pub shadow_limited: Counter,
    /// Requests refused because the shared store was down (`fail_closed`).
    pub unavailable: Counter,
}

/// Every rate-limit metric family.
#[derive(Debug, Clone)]
pub struct LimitMetrics {
    decisions: Family<DecisionLabels, Counter>,
    /// Duration of one Redis sync round trip (one batch).
    pub sync_duration: Histogram,
    /// Redis operations that failed or timed out.
    pub sync_failures: Counter,
    /// 1 while Redis is unreachable and shared rules follow `on_store_failure`.
    pub degraded: Gauge,
    /// Units counted live through Redis heartbeats (last known).
    pub live_units: Gauge,
    /// Quota state files that could not be written.
    pub persist_failures: Counter,
    /// Keys dropped from full tables while their state still mattered.
    pub evicted_keys: Counter,
}

impl Default for LimitMetrics {
    fn default() -> Self {
        Self::detached()
    }
}

impl LimitMetrics {
    /// Registers the families in `registry` (prefix `gatehouse_ratelimit_`).
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self::detached();
        let r = registry.sub_registry_with_prefix("ratelimit");
        r.register(
            "decisions",
            "Rate-limit and quota decisions, by service, rule and result",
            m.decisions.clone(),
        );
        r.register(
            "redis_sync_duration_seconds",
            "Time of one Redis sync batch",
            m.sync_duration.clone(),
        );
        r.register(
            "redis_failures",
            "Redis operations that failed or timed out",
            m.sync_failures.clone(),
        );
        r.register(
            "degraded",
            "1 while Redis is unreachable and shared limits follow on_store_failure",
            m.degraded.clone(),
        );
        r.register(
            "live_units",
            "Gateway units counted live through Redis heartbeats",
            m.live_units.clone(),
        );
        r.register(
            "persist_failures",
            "Quota state files that could not be written",
            m.persist_failures.clone(),
        );
        r.register(
            "evicted_keys",
            "Limiter keys dropped from full tables while their state still mattered",
            m.evicted_keys.clone(),
        );
        m
    }

    /// Families that are not registered anywhere (placeholder snapshots, tests).
    pub fn detached() -> Self {
        Self {
            decisions: Family::default(),
            // 100 µs .. ~1.6 s
            sync_duration: Histogram::new(exponential_buckets(0.0001, 2.0, 15)),
            sync_failures: Counter::default(),
            degraded: Gauge::default(),
            live_units: Gauge::default(),
            persist_failures: Counter::default(),
            evicted_keys: Counter::default(),
        }
    }

    /// Resolves the counters of one rule.
    pub fn rule(&self, service: &str, rule: &str) -> RuleMetrics {
        let get = |result: &str| {
            self.decisions
                .get_or_create(&DecisionLabels {
                    service: service.to_string(),
                    rule: rule.to_string(),
                    result: result.to_string(),
                })
                .clone()
        };
        RuleMetrics {
            allowed: get("allowed"),
            limited: get("limited"),
            shadow_limited: get("shadow_limited"),
            unavailable: get("unavailable"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::LimitMetrics;
    use crate::metrics::Metrics;

    #[test]
    fn names_are_the_documented_ones() {
        let m = Metrics::new();
        let limits = m.register(LimitMetrics::register);
        limits.rule("svc", "r").limited.inc();
        limits.sync_failures.inc();
        let text = m.render();
        for name in [
            "gatehouse_ratelimit_decisions_total{service=\"svc\",rule=\"r\",result=\"limited\"} 1",
            "gatehouse_ratelimit_redis_sync_duration_seconds_count 0",
            "gatehouse_ratelimit_redis_failures_total 1",
            "gatehouse_ratelimit_degraded 0",
            "gatehouse_ratelimit_live_units 0",
            "gatehouse_ratelimit_persist_failures_total 0",
            "gatehouse_ratelimit_evicted_keys_total 0",
        ] {
            assert!(text.contains(name), "{name} missing in\n{text}");
        }
    }
}
