//! Retry policy with a per-route retry budget and status-specific backoff.
//!
//! - Retries connect failures, resets and timeouts (each can be turned off) and the
//!   statuses listed in `statuses`, up to `retries` retries per request.
//! - Each route may retry at most `budget.per_window` times per `budget.window_ms`
//!   (overridable per route in `budget.routes`); the count is a host counter, so it is
//!   shared by every worker and instance of the gateway.
//! - The pause before a retry is exponential with full jitter, with `base_ms`/`max_ms`
//!   chosen by the status (`backoff.statuses`, e.g. longer for 503 and 429) or
//!   `backoff.default`; a `Retry-After` from the node wins, capped at `retry_after_max_ms`.
//!
//! The gateway still applies its own safety rules on top (idempotency, global retry
//! budget, overall deadline, never the same node twice).

use std::collections::HashMap;

use gatehouse_plugin_sdk::{Outcome, RetryDecision, RetryPolicy, RetryRequest, export_plugin, host, key_hash};
use serde::Deserialize;

/// `plugins.retry.config`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    /// Retries per request.
    #[serde(default = "default_retries")]
    retries: u32,
    /// Statuses worth a retry.
    #[serde(default = "default_statuses")]
    statuses: Vec<u16>,
    #[serde(default = "yes")]
    connect_failure: bool,
    #[serde(default = "yes")]
    reset: bool,
    #[serde(default = "yes")]
    timeout: bool,
    #[serde(default)]
    budget: Budget,
    #[serde(default)]
    backoff: BackoffConfig,
    /// Longest `Retry-After` honoured.
    #[serde(default = "default_retry_after_max")]
    retry_after_max_ms: u32,
}

fn default_retries() -> u32 {
    2
}
fn default_statuses() -> Vec<u16> {
    vec![502, 503, 504]
}
fn yes() -> bool {
    true
}
fn default_retry_after_max() -> u32 {
    2000
}

/// Retries allowed per route and window.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Budget {
    #[serde(default = "default_per_window")]
    per_window: u32,
    #[serde(default = "default_window")]
    window_ms: u32,
    /// Route name -> retries per window.
    #[serde(default)]
    routes: HashMap<String, u32>,
}

impl Default for Budget {
    fn default() -> Self {
        Self {
            per_window: default_per_window(),
            window_ms: default_window(),
            routes: HashMap::new(),
        }
    }
}

fn default_per_window() -> u32 {
    100
}
fn default_window() -> u32 {
    1000
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
struct Backoff {
    base_ms: u32,
    max_ms: u32,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BackoffConfig {
    #[serde(default = "default_backoff")]
    default: Backoff,
    /// Status (as a string key, JSON objects have string keys) -> backoff.
    #[serde(default)]
    statuses: HashMap<String, Backoff>,
}

impl Default for BackoffConfig {
    fn default() -> Self {
        Self {
            default: default_backoff(),
            statuses: HashMap::new(),
        }
    }
}

fn default_backoff() -> Backoff {
    Backoff {
        base_ms: 25,
        max_ms: 250,
    }
}

struct StatusRetry {
    c: Config,
    by_status: HashMap<u16, Backoff>,
}

impl StatusRetry {
    fn retryable(&self, outcome: Outcome) -> bool {
        match outcome {
            Outcome::Status(s) => self.c.statuses.contains(&s),
            Outcome::ConnectFailure => self.c.connect_failure,
            Outcome::Reset => self.c.reset,
            Outcome::Timeout => self.c.timeout,
        }
    }

    /// Spends one retry of the route's budget; false when it is used up.
    fn spend_budget(&self, route: &str) -> bool {
        let allowed = self
            .c
            .budget
            .routes
            .get(route)
            .copied()
            .unwrap_or(self.c.budget.per_window);
        let w = host::counter_add(key_hash(format!("retry-budget:{route}")), 1, self.c.budget.window_ms);
        w.count <= i64::from(allowed)
    }

    fn backoff_ms(&self, req: &RetryRequest) -> u32 {
        if let Some(after) = req.retry_after_ms {
            return after.min(self.c.retry_after_max_ms);
        }
        let b = match req.outcome {
            Outcome::Status(s) => self.by_status.get(&s).copied().unwrap_or(self.c.backoff.default),
            _ => self.c.backoff.default,
        };
        let exp = u64::from(b.base_ms) << req.tries.saturating_sub(1).min(20);
        let cap = exp.min(u64::from(b.max_ms));
        // Full jitter: uniform in [0, cap].
        (jitter(host::now_us() ^ u64::from(req.tries)) % (cap + 1)) as u32
    }
}

/// splitmix64: a well-mixed pseudo-random value from a seed.
fn jitter(seed: u64) -> u64 {
    let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl RetryPolicy for StatusRetry {
    type Config = Config;

    fn new(c: Config) -> Result<Self, String> {
        let mut by_status = HashMap::new();
        for (k, b) in &c.backoff.statuses {
            let status: u16 = k
                .parse()
                .map_err(|_| format!("backoff.statuses: {k:?} is not a status"))?;
            if b.base_ms > b.max_ms {
                return Err(format!("backoff.statuses.{k}: base_ms exceeds max_ms"));
            }
            by_status.insert(status, *b);
        }
        if c.backoff.default.base_ms > c.backoff.default.max_ms {
            return Err("backoff.default: base_ms exceeds max_ms".into());
        }
        if c.budget.window_ms == 0 {
            return Err("budget.window_ms must be positive".into());
        }
        Ok(Self { c, by_status })
    }

    fn decide(&mut self, req: &RetryRequest) -> RetryDecision {
        if req.tries > self.c.retries || !self.retryable(req.outcome) || !self.spend_budget(&req.route) {
            return RetryDecision::Stop;
        }
        RetryDecision::Retry {
            backoff_ms: self.backoff_ms(req),
        }
    }
}

export_plugin!(retry_policy: StatusRetry);

#[cfg(test)]
mod tests {
    use super::*;
    use gatehouse_plugin_sdk::testing::{self, RetryHarness};

    fn harness(config: &str) -> RetryHarness<StatusRetry> {
        testing::reset();
        RetryHarness::new(config).unwrap()
    }

    fn backoff(d: RetryDecision) -> u32 {
        match d {
            RetryDecision::Retry { backoff_ms } => backoff_ms,
            RetryDecision::Stop => panic!("expected a retry"),
        }
    }

    #[test]
    fn retries_listed_failures_up_to_the_limit() {
        let mut h = harness(r#"{"retries": 2}"#);
        for o in [
            Outcome::Status(502),
            Outcome::Status(503),
            Outcome::ConnectFailure,
            Outcome::Timeout,
        ] {
            assert!(matches!(
                h.decide(&RetryRequest::new("r", o)),
                RetryDecision::Retry { .. }
            ));
        }
        assert_eq!(
            h.decide(&RetryRequest::new("r", Outcome::Status(500))),
            RetryDecision::Stop
        );
        assert_eq!(
            h.decide(&RetryRequest::new("r", Outcome::Status(404))),
            RetryDecision::Stop
        );
        let third = RetryRequest {
            tries: 3,
            ..RetryRequest::new("r", Outcome::Status(503))
        };
        assert_eq!(h.decide(&third), RetryDecision::Stop);
        let mut quiet = harness(r#"{"timeout": false, "statuses": [500]}"#);
        assert_eq!(
            quiet.decide(&RetryRequest::new("r", Outcome::Timeout)),
            RetryDecision::Stop
        );
        assert_ne!(
            quiet.decide(&RetryRequest::new("r", Outcome::Status(500))),
            RetryDecision::Stop
        );
    }

    #[test]
    fn the_budget_is_per_route_and_per_window() {
        let mut h = harness(r#"{"budget": {"per_window": 3, "window_ms": 1000, "routes": {"checkout": 1}}}"#);
        let try_route = |h: &mut RetryHarness<StatusRetry>, route: &str| {
            h.decide(&RetryRequest::new(route, Outcome::Status(503))) != RetryDecision::Stop
        };
        assert_eq!(
            (0..5).map(|_| try_route(&mut h, "search")).collect::<Vec<_>>(),
            [true, true, true, false, false]
        );
        assert!(try_route(&mut h, "checkout"));
        assert!(!try_route(&mut h, "checkout"));
        testing::advance_ms(1000);
        assert!(try_route(&mut h, "search"), "a new window restores the budget");
        assert!(try_route(&mut h, "checkout"));
    }

    #[test]
    fn backoff_depends_on_the_status_and_grows() {
        let mut h = harness(
            r#"{"retries": 10, "budget": {"per_window": 100000},
                "backoff": {"default": {"base_ms": 10, "max_ms": 40},
                            "statuses": {"503": {"base_ms": 200, "max_ms": 5000}}}}"#,
        );
        let mut max_503 = 0;
        let mut max_502 = 0;
        for i in 0..500 {
            testing::advance_ms(1);
            let tries = 1 + i % 3;
            let r503 = RetryRequest {
                tries,
                ..RetryRequest::new("r", Outcome::Status(503))
            };
            let r502 = RetryRequest {
                tries,
                ..RetryRequest::new("r", Outcome::Status(502))
            };
            let (a, b) = (backoff(h.decide(&r503)), backoff(h.decide(&r502)));
            assert!(a <= 200 << (tries - 1), "{a}");
            assert!(b <= 40, "{b}");
            max_503 = max_503.max(a);
            max_502 = max_502.max(b);
        }
        assert!(max_503 > 400, "503 backoff grows with tries: {max_503}");
        assert!(max_502 > 20, "jitter spans the range: {max_502}");
    }

    #[test]
    fn retry_after_wins_but_is_capped() {
        let mut h = harness(r#"{"retry_after_max_ms": 1500}"#);
        let r = RetryRequest {
            retry_after_ms: Some(700),
            ..RetryRequest::new("r", Outcome::Status(503))
        };
        assert_eq!(backoff(h.decide(&r)), 700);
        let r = RetryRequest {
            retry_after_ms: Some(60_000),
            ..RetryRequest::new("r", Outcome::Status(503))
        };
        assert_eq!(backoff(h.decide(&r)), 1500);
    }

    #[test]
    fn rejects_bad_configs() {
        for bad in [
            r#"{"backoff": {"statuses": {"abc": {"base_ms": 1, "max_ms": 2}}}}"#,
            r#"{"backoff": {"default": {"base_ms": 10, "max_ms": 2}}}"#,
            r#"{"budget": {"window_ms": 0}}"#,
            r#"{"retries": "two"}"#,
        ] {
            assert!(RetryHarness::<StatusRetry>::new(bad).is_err(), "{bad}");
        }
    }
}
