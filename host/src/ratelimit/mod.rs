//! Rate limits and quotas: the [`RateLimiter`] trait, the built-in limiter with
//! local and Redis-shared counters, durable quotas, and the counter interface
//! plugins use.
//!
//! The request path calls [`enforce`] once per routed request. Deciding never
//! waits: local rules are a few arithmetic steps under a per-shard lock, shared
//! rules decide from a local grant and view that a background task keeps in sync
//! with Redis (see [`shared`]). The user guide is `docs/rate-limiting.md`.

pub mod algo;
pub mod builtin;
pub mod counters;
pub mod key;
pub mod local;
pub mod metrics;
pub mod quota;
mod registry;
mod scripts;
pub mod shared;
pub mod store;
pub mod table;
pub mod time;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::request::Parts;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Uri};

pub use builtin::{BuiltinLimiter, QUOTA_RULE};
pub use counters::SharedCounters;
pub use metrics::LimitMetrics;
pub use registry::{LimitRegistry, RuleUsage};

pub use crate::config::model::MAX_RULES;

/// `RateLimit-Limit`
pub static RATELIMIT_LIMIT: HeaderName = HeaderName::from_static("ratelimit-limit");
/// `RateLimit-Remaining`
pub static RATELIMIT_REMAINING: HeaderName = HeaderName::from_static("ratelimit-remaining");
/// `RateLimit-Reset`
pub static RATELIMIT_RESET: HeaderName = HeaderName::from_static("ratelimit-reset");

/// What a limiter sees of a request.
#[derive(Debug, Clone, Copy)]
pub struct LimitRequest<'a> {
    /// Request method (for plugin limiters' request keys).
    pub method: &'a Method,
    /// Request URI (for plugin limiters' request keys).
    pub uri: &'a Uri,
    /// Request headers.
    pub headers: &'a HeaderMap,
    /// Client address.
    pub remote: SocketAddr,
    /// Name of the matched route.
    pub route: &'a str,
}

/// Values of the `RateLimit-*` response headers (IETF draft, as Kong sends them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateHeaders {
    /// The rule's limit (`burst`, `count` or `calls`).
    pub limit: u64,
    /// Requests left after this one.
    pub remaining: u64,
    /// Time until the rule is back at its full limit.
    pub reset: Duration,
}

impl RateHeaders {
    /// Sets the three headers on a response.
    pub fn apply(&self, headers: &mut HeaderMap) {
        headers.insert(RATELIMIT_LIMIT.clone(), HeaderValue::from(self.limit));
        headers.insert(RATELIMIT_REMAINING.clone(), HeaderValue::from(self.remaining));
        headers.insert(RATELIMIT_RESET.clone(), HeaderValue::from(ceil_secs(self.reset)));
    }
}

/// A limiter's answer for one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Go on; add these headers to the response.
    Allow {
        /// Headers of the tightest enforced rule, if any.
        headers: Option<RateHeaders>,
    },
    /// A rate limit refused the request: 429.
    Limited {
        /// The refusing rule (the one asking for the longest wait).
        rule: Arc<str>,
        /// Time until a request would be admitted.
        retry_after: Duration,
        /// Headers for the 429.
        headers: RateHeaders,
    },
    /// The quota is spent: 403 until the period resets.
    QuotaExceeded {
        /// The quota's name.
        rule: Arc<str>,
        /// Time until the period resets.
        retry_after: Duration,
    },
    /// A `fail_closed` rule cannot reach its shared store: 503.
    Unavailable {
        /// The rule.
        rule: Arc<str>,
        /// Suggested wait.
        retry_after: Duration,
    },
}

/// Decides whether requests of one service version may go on.
///
/// The built-in implementation is [`BuiltinLimiter`]; a plugin limiter wraps it
/// (the snapshot layer's policy hooks, `rate_limiter`).
pub trait RateLimiter: Send + Sync + 'static {
    /// Name for logs.
    fn name(&self) -> &str;
    /// Decides one request. Must not block or wait for I/O.
    fn check(&self, req: &LimitRequest<'_>) -> Decision;
    /// The host counters a plugin limiter may use (`counter-incr`), if any.
    fn counters(&self) -> Option<Arc<SharedCounters>> {
        None
    }
}

/// Kinds of admission, so a refused request can give its slots back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Counted in local state.
    Counted,
    /// Taken from a grant reserved in Redis.
    Grant,
    /// Counted locally, to be pushed to Redis.
    Provisional,
    /// Counted by the degraded local fallback (and pushed later).
    Degraded,
    /// Not counted (`fail_open` while Redis is down).
    Uncounted,
}

/// What one rule says about one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuleStep {
    /// Admitted.
    Admit {
        /// The rule's limit.
        limit: u64,
        /// Requests left (`u64::MAX` when unknown).
        remaining: u64,
        /// Time until the full limit is back.
        reset: Duration,
        /// How it was counted.
        how: Admission,
    },
    /// Refused.
    Deny {
        /// The rule's limit.
        limit: u64,
        /// Time until a request would be admitted.
        retry: Duration,
        /// Time until the full limit is back.
        reset: Duration,
    },
    /// Refused for now: the shared store shows room, but this unit's share of it
    /// has not arrived yet (a 429 even for a quota: it is not spent).
    Busy {
        /// The rule's limit.
        limit: u64,
        /// Time until the share is expected.
        retry: Duration,
        /// Time until the full limit is back.
        reset: Duration,
    },
    /// The shared store is unreachable and the rule fails closed.
    Unavailable,
}

/// Whole seconds, rounded up (so a client that waits them is admitted).
pub fn ceil_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

/// Applies `limiter` to a routed request: `Ok` with headers for the response, or
/// the refusal (the proxy renders it as a 429, 403 or 503).
pub fn enforce(
    limiter: &dyn RateLimiter,
    route: &str,
    parts: &Parts,
    remote: SocketAddr,
) -> Result<Option<RateHeaders>, Decision> {
    let req = LimitRequest {
        method: &parts.method,
        uri: &parts.uri,
        headers: &parts.headers,
        remote,
        route,
    };
    match limiter.check(&req) {
        Decision::Allow { headers } => Ok(headers),
        refused => Err(refused),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_rounds_up_to_whole_seconds() {
        assert_eq!(ceil_secs(Duration::from_millis(100)), 1);
        assert_eq!(ceil_secs(Duration::from_secs(2)), 2);
        assert_eq!(ceil_secs(Duration::from_millis(2001)), 3);
        assert_eq!(ceil_secs(Duration::ZERO), 0);
    }
}
