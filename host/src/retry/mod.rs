//! Retries: the [`RetryPolicy`] trait (which failures to retry, and after how
//! long) and the built-in policy with full-jitter exponential backoff that honours
//! `Retry-After`.
//!
//! Safety rules stay with the caller and no policy can lift them: a retry always
//! goes to a node not yet tried, non-idempotent requests are retried only when they
//! never reached the upstream (or carry `Idempotency-Key`), a body that was streamed
//! is not replayed, the overall deadline holds, and the retry budget caps retries.

mod budget;

use std::time::Duration;

use crate::config::model::RetryPolicyConfig;
use crate::outcome::Outcome;

pub use budget::{BudgetGuard, RetryBudget, RetrySlot};

/// What a policy sees of a failed try.
#[derive(Debug, Clone, Copy)]
pub struct RetryContext<'a> {
    /// Route name.
    pub route: &'a str,
    /// Request method.
    pub method: &'a http::Method,
    /// Tries made so far (1 after the first).
    pub tries: u32,
    /// How the last try ended.
    pub outcome: Outcome,
    /// The upstream's `Retry-After`, if it sent one.
    pub retry_after: Option<Duration>,
    /// Time since the request arrived.
    pub elapsed: Duration,
}

/// A policy's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryDecision {
    /// Return what we have.
    Stop,
    /// Try another node after this pause.
    Retry {
        /// Pause before the next try.
        backoff: Duration,
    },
}

/// Decides whether and when a failed try is retried.
pub trait RetryPolicy: Send + Sync + 'static {
    /// Name for logs and the debug header.
    fn name(&self) -> &str;
    /// The decision for one failed try.
    fn decide(&self, ctx: &RetryContext<'_>) -> RetryDecision;
}

/// The built-in policy: `retries`, `retry_on` and backoff from the upstream config.
#[derive(Debug, Clone)]
pub struct BuiltinRetry {
    cfg: RetryPolicyConfig,
}

impl BuiltinRetry {
    /// A policy for `cfg`.
    pub fn new(cfg: RetryPolicyConfig) -> Self {
        Self { cfg }
    }

    /// Whether `outcome` is a retry condition.
    pub fn retryable(&self, outcome: Outcome) -> bool {
        let on = &self.cfg.retry_on;
        match outcome {
            Outcome::ConnectFailure => on.connect_failure,
            Outcome::Reset => on.reset,
            Outcome::Timeout => on.timeout,
            Outcome::Status(s) => on.status(s),
            Outcome::Grpc(code) => on.grpc.contains(code),
        }
    }
}

/// Full-jitter exponential backoff: uniform in `[0, min(max, base × 2^(tries-1))]`.
pub fn backoff(base: Duration, max: Duration, tries: u32) -> Duration {
    let exp = base.saturating_mul(1u32 << tries.saturating_sub(1).min(20));
    let cap = exp.min(max);
    cap.mul_f64(fastrand::f64())
}

impl RetryPolicy for BuiltinRetry {
    fn name(&self) -> &str {
        "builtin"
    }

    fn decide(&self, ctx: &RetryContext<'_>) -> RetryDecision {
        if ctx.tries > self.cfg.retries || !self.retryable(ctx.outcome) {
            return RetryDecision::Stop;
        }
        let backoff = match ctx.retry_after {
            Some(after) => after.min(self.cfg.retry_after_max),
            None => backoff(self.cfg.backoff_base, self.cfg.backoff_max, ctx.tries),
        };
        RetryDecision::Retry { backoff }
    }
}

/// Methods that may be repeated without changing the outcome (RFC 9110 §9.2.2).
pub fn idempotent(method: &http::Method) -> bool {
    matches!(
        *method,
        http::Method::GET
            | http::Method::HEAD
            | http::Method::OPTIONS
            | http::Method::TRACE
            | http::Method::PUT
            | http::Method::DELETE
    )
}

/// Parses `Retry-After` (seconds or an HTTP date; a date in the past means now).
pub fn parse_retry_after(value: &http::HeaderValue) -> Option<Duration> {
    let s = value.to_str().ok()?.trim();
    if let Ok(secs) = s.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let when = httpdate::parse_http_date(s).ok()?;
    Some(
        when.duration_since(std::time::SystemTime::now())
            .unwrap_or(Duration::ZERO),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::model::RetryOn;

    fn cfg() -> RetryPolicyConfig {
        RetryPolicyConfig {
            retries: 2,
            retry_timeout: None,
            retry_on: RetryOn {
                connect_failure: true,
                reset: true,
                timeout: true,
                gateway_error: true,
                ..Default::default()
            },
            backoff_base: Duration::from_millis(25),
            backoff_max: Duration::from_millis(250),
            retry_after_max: Duration::from_secs(2),
            budget_percent: 20.0,
            budget_min_concurrent: 3,
            max_replay_body: 65536,
        }
    }

    fn ctx(tries: u32, outcome: Outcome, retry_after: Option<Duration>) -> RetryContext<'static> {
        RetryContext {
            route: "r",
            method: &http::Method::GET,
            tries,
            outcome,
            retry_after,
            elapsed: Duration::ZERO,
        }
    }

    #[test]
    fn conditions_and_attempt_limit() {
        let p = BuiltinRetry::new(cfg());
        assert!(matches!(
            p.decide(&ctx(1, Outcome::ConnectFailure, None)),
            RetryDecision::Retry { .. }
        ));
        assert!(matches!(
            p.decide(&ctx(1, Outcome::Status(503), None)),
            RetryDecision::Retry { .. }
        ));
        assert_eq!(p.decide(&ctx(1, Outcome::Status(500), None)), RetryDecision::Stop);
        assert_eq!(p.decide(&ctx(3, Outcome::Reset, None)), RetryDecision::Stop);
    }

    #[test]
    fn grpc_statuses_are_retried_only_when_named() {
        let mut c = cfg();
        c.retry_on.grpc = crate::outcome::GrpcCodes::new(&[14]);
        let p = BuiltinRetry::new(c);
        assert!(matches!(
            p.decide(&ctx(1, Outcome::Grpc(14), None)),
            RetryDecision::Retry { .. }
        ));
        // Not named, even though its HTTP equivalent (504) is a gateway error.
        assert_eq!(p.decide(&ctx(1, Outcome::Grpc(4), None)), RetryDecision::Stop);
        assert_eq!(p.decide(&ctx(1, Outcome::Grpc(5), None)), RetryDecision::Stop);
    }

    #[test]
    fn retry_after_is_capped() {
        let p = BuiltinRetry::new(cfg());
        assert_eq!(
            p.decide(&ctx(1, Outcome::Status(503), Some(Duration::from_secs(60)))),
            RetryDecision::Retry {
                backoff: Duration::from_secs(2)
            }
        );
    }

    #[test]
    fn backoff_is_jittered_and_capped() {
        for tries in 1..10 {
            let b = backoff(Duration::from_millis(25), Duration::from_millis(250), tries);
            assert!(b <= Duration::from_millis(250));
            assert!(b <= Duration::from_millis(25) * (1 << (tries - 1)));
        }
    }

    #[test]
    fn parses_retry_after() {
        assert_eq!(parse_retry_after(&"7".parse().unwrap()), Some(Duration::from_secs(7)));
        assert_eq!(
            parse_retry_after(&"Sun, 06 Nov 1994 08:49:37 GMT".parse().unwrap()),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after(&"soon".parse().unwrap()), None);
    }
}
