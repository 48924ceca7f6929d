//! What `GET /admin/v1/services` shows of health: per node, its state, timers,
//! the last transition with its cause, and the counters; per upstream, panic.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};
use tokio::time::Instant;

use super::cell::EndpointHealth;
use super::evaluator::Source;
use super::state::BreakerState;
use std::sync::Arc;

use super::UpstreamHealth;
use crate::config::model::OnPanic;
use crate::upstream::Endpoint;

/// Wall-clock milliseconds since the Unix epoch of a monotonic instant.
fn unix_ms(at: Instant, now: Instant) -> u64 {
    let wall = SystemTime::now();
    let wall = if at >= now {
        wall + (at - now)
    } else {
        wall - (now - at)
    };
    wall.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO).as_millis() as u64
}

/// The health part of an endpoint's entry in `GET /admin/v1/services`:
///
/// ```json
/// { "state": "ejected", "health": "ejected", "breaker": "closed",
///   "ejected_until_ms": 1767225600000, "ejected_remaining_ms": 29000, "ejections": 1,
///   "trial_in_flight": false,
///   "last_transition": { "from": "healthy", "to": "ejected", "cause": "passive_http_failures",
///                        "count": 5, "at_ms": 1767225571000 },
///   "transitions": 1,
///   "counters": { "active": {...}, "passive": {...} } }
/// ```
///
/// `state` is one of `healthy`, `unhealthy`, `ejected`, `half_open`, `breaker_open`;
/// `*_until_ms` and `at_ms` are Unix epoch milliseconds.
pub fn report(h: &EndpointHealth) -> Value {
    let now = Instant::now();
    let mut v = json!({
        "state": h.state().as_str(),
        "health": h.health_state().as_str(),
        "breaker": h.breaker_state().as_str(),
        "ejections": h.ejections(),
        "trial_in_flight": h.trial_in_flight(),
        "transitions": h.transitions_total(),
        "counters": {
            "active": h.counts(Source::Active).to_json(),
            "passive": h.counts(Source::Passive).to_json(),
        },
    });
    let (ejected_until, breaker_until) = h.out_until();
    if let Some(until) = ejected_until {
        v["ejected_until_ms"] = json!(unix_ms(until, now));
        v["ejected_remaining_ms"] = json!(until.saturating_duration_since(now).as_millis() as u64);
    }
    if let Some(until) = breaker_until {
        v["breaker_until_ms"] = json!(unix_ms(until, now));
        v["breaker_remaining_ms"] = json!(until.saturating_duration_since(now).as_millis() as u64);
    }
    if h.breaker_state() != BreakerState::Closed {
        v["breaker_rule"] = json!(h.breaker_rule_name(h.breaker_rule()));
    }
    if let Some((t, at)) = h.last_transition() {
        let mut last = json!({
            "from": t.from.as_str(),
            "to": t.to.as_str(),
            "cause": t.cause.as_str(),
            "count": t.count,
            "at_ms": unix_ms(at, now),
        });
        if let Some(d) = t.out_for {
            last["out_for_ms"] = json!(d.as_millis() as u64);
        }
        if t.requests > 0 {
            last["requests"] = json!(t.requests);
        }
        if let Some(rule) = t.rule {
            last["rule"] = json!(h.breaker_rule_name(rule));
        }
        v["last_transition"] = last;
    }
    v
}

/// Per upstream: whether it is in panic (`panic`, from its current tiers), the
/// healthy share of configured weight, and the evaluator in use.
pub fn upstream_report(health: &UpstreamHealth, endpoints: &[Arc<Endpoint>], panic: bool) -> Value {
    let (healthy, total) = endpoints
        .iter()
        .zip(&health.cells)
        .filter(|(e, _)| e.node.weight > 0)
        .fold((0u64, 0u64), |(h, t), (e, cell)| {
            let w = u64::from(e.node.weight);
            (h + if cell.is_healthy() { w } else { 0 }, t + w)
        });
    let percent = if total == 0 {
        0.0
    } else {
        healthy as f64 * 100.0 / total as f64
    };
    let policy = health.policy();
    json!({
        "panic": panic,
        "healthy_weight_percent": (percent * 10.0).round() / 10.0,
        "panic_threshold": policy.panic_threshold,
        "on_panic": match policy.on_panic {
            OnPanic::FailOpen => "fail_open",
            OnPanic::Fail => "fail",
        },
        "evaluator": health.evaluator.name(),
    })
}
