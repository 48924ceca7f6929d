//! Rate limits and quotas of a service version.

use std::time::Duration;

/// Most `limits:` rules one service version may have (the limiter keeps its
/// per-request state in a fixed array of this size).
pub const MAX_RULES: usize = 32;

/// Limit algorithm.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum LimitAlgorithm {
    /// Token bucket.
    TokenBucket {
        /// Tokens per second.
        rate: f64,
        /// Bucket size.
        burst: f64,
    },
    /// Sliding window.
    SlidingWindow {
        /// Requests per window.
        count: u64,
        /// Window length.
        window: Duration,
    },
}

/// One part of a limit key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyPart {
    /// Client IP.
    RemoteAddr,
    /// A header value.
    Header(http::HeaderName),
    /// The matched route.
    Route,
    /// The consumer (from `gateway.consumer_header`).
    Consumer,
}

/// Counter store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CounterPolicy {
    /// In this process.
    Local,
    /// Shared through Redis.
    Redis,
}

/// Behaviour when the shared store is down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreFailure {
    /// Enforce limit ÷ live units locally.
    Degrade,
    /// Allow.
    FailOpen,
    /// Deny.
    FailClosed,
}

/// A rate-limit rule.
#[derive(Debug, Clone, PartialEq)]
pub struct LimitRule {
    /// Name.
    pub name: String,
    /// Key parts (joined).
    pub key: Vec<KeyPart>,
    /// Algorithm.
    pub algorithm: LimitAlgorithm,
    /// Store.
    pub policy: CounterPolicy,
    /// Report only.
    pub shadow: bool,
    /// Sync interval for `redis`.
    pub sync_interval: Duration,
    /// Store failure behaviour.
    pub on_store_failure: StoreFailure,
}

/// Quota period.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QuotaPeriod {
    /// One hour.
    Hour,
    /// One day.
    Day,
    /// One (calendar) month.
    Month,
}

/// A quota.
#[derive(Debug, Clone, PartialEq)]
pub struct QuotaRule {
    /// Key parts.
    pub key: Vec<KeyPart>,
    /// Calls per period.
    pub calls: u64,
    /// Period.
    pub period: QuotaPeriod,
    /// Calendar-aligned (true) or rolling.
    pub calendar: bool,
    /// Store.
    pub policy: CounterPolicy,
    /// Persist/sync interval.
    pub sync_interval: Duration,
    /// Store failure behaviour.
    pub on_store_failure: StoreFailure,
}
