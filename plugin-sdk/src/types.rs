//! The values that cross the plugin boundary, as plain Rust types (they mirror the
//! `gatehouse:plugin/types` WIT interface one to one).

/// Severity of a log line written with [`crate::host::log`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Level {
    /// Very detailed.
    Trace,
    /// Debugging detail.
    Debug,
    /// Normal operation.
    Info,
    /// Something looks wrong.
    Warn,
    /// Something failed.
    Error,
}

/// A part of the request a plugin wants to key on. The host hands each one over as
/// [`key_hash`](crate::key_hash) of its value, 0 when absent.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum RequestKey {
    /// A request header by name (case-insensitive); the first value if repeated.
    Header(String),
    /// A query-string parameter by name (raw, undecoded value).
    Query(String),
    /// A cookie by name.
    Cookie(String),
    /// The client's IP address in text form (`10.0.0.1`, `::1`).
    ClientIp,
    /// The request path without the query.
    Path,
    /// The request method in upper case.
    Method,
}

/// One node a balancer may choose.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Node {
    /// The id to return from `pick`.
    pub id: u32,
    /// Effective weight now (> 0).
    pub weight: u32,
    /// Priority (higher is preferred).
    pub priority: i32,
    /// Zone label ("" when unknown).
    pub zone: String,
    /// Region label ("" when unknown).
    pub region: String,
    /// Tags from the config, for example `canary`.
    pub tags: Vec<String>,
}

impl Node {
    /// A node with an id and a weight and nothing else (handy in tests).
    pub fn new(id: u32, weight: u32) -> Self {
        Self {
            id,
            weight,
            ..Self::default()
        }
    }

    /// The same node with these tags.
    pub fn with_tags<I, S>(mut self, tags: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.tags = tags.into_iter().map(Into::into).collect();
        self
    }

    /// Whether the node carries `tag`.
    pub fn has_tag(&self, tag: &str) -> bool {
        self.tags.iter().any(|t| t == tag)
    }
}

/// One balancing decision.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PickRequest {
    /// Uniformly random per decision; use it for percentage splits.
    pub request_id: u64,
    /// 1 for the first try, 2 for the first retry, ...
    pub attempt: u32,
    /// Node ids this request already tried: never return one of them.
    pub excluded: Vec<u32>,
    /// Hashes of the plugin's request keys, in `keys()` order; 0 = absent.
    pub keys: Vec<u64>,
}

impl PickRequest {
    /// A first try with this request id, no exclusions and no keys.
    pub fn new(request_id: u64) -> Self {
        Self {
            request_id,
            attempt: 1,
            ..Self::default()
        }
    }

    /// The same request as retry number `attempt - 1`, having tried `excluded`.
    pub fn retrying(mut self, excluded: &[u32]) -> Self {
        self.excluded = excluded.to_vec();
        self.attempt = excluded.len() as u32 + 1;
        self
    }

    /// The same request with these key hashes.
    pub fn with_keys(mut self, keys: Vec<u64>) -> Self {
        self.keys = keys;
        self
    }

    /// Whether `id` was already tried.
    pub fn is_excluded(&self, id: u32) -> bool {
        self.excluded.contains(&id)
    }

    /// The hash of key `i`, or `None` when the request does not carry it.
    pub fn key(&self, i: usize) -> Option<u64> {
        self.keys.get(i).copied().filter(|h| *h != 0)
    }
}

/// How one try to an upstream node ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// The node answered with this status.
    Status(u16),
    /// No connection could be made.
    ConnectFailure,
    /// The node did not answer in time.
    Timeout,
    /// The connection broke.
    Reset,
}

/// What a retry policy sees of a failed try.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryRequest {
    /// Name of the matched route.
    pub route: String,
    /// Request method in upper case.
    pub method: String,
    /// Tries made so far (1 after the first).
    pub tries: u32,
    /// How the last try ended.
    pub outcome: Outcome,
    /// The node's `Retry-After` in milliseconds, if it sent one.
    pub retry_after_ms: Option<u32>,
    /// Milliseconds since the request arrived.
    pub elapsed_ms: u32,
}

impl RetryRequest {
    /// A request on `route` whose first try ended with `outcome`.
    pub fn new(route: &str, outcome: Outcome) -> Self {
        Self {
            route: route.to_string(),
            method: "GET".to_string(),
            tries: 1,
            outcome,
            retry_after_ms: None,
            elapsed_ms: 0,
        }
    }
}

/// A retry policy's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryDecision {
    /// Return what we have.
    Stop,
    /// Try another node after this pause.
    Retry {
        /// Pause in milliseconds.
        backoff_ms: u32,
    },
}

/// Where a health observation came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ObservationSource {
    /// An active probe.
    Probe,
    /// A real request.
    Traffic,
}

/// What a health observation saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Observed {
    /// The node answered with this status.
    Status(u16),
    /// A TCP probe connected.
    Connected,
    /// No connection could be made.
    ConnectFailure,
    /// The node did not answer in time.
    Timeout,
    /// The connection broke, or the answer was not HTTP.
    Reset,
}

/// One observation of a node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Observation {
    /// The node: [`key_hash`](crate::key_hash) of its `host:port`.
    pub node: u64,
    /// Probe or traffic.
    pub source: ObservationSource,
    /// What happened.
    pub observed: Observed,
    /// Time to the response head (or the failure) in microseconds.
    pub latency_us: u32,
}

impl Observation {
    /// A 200 from real traffic to `node` (a `host:port`) that took `latency_ms`.
    pub fn ok(node: &str, latency_ms: u32) -> Self {
        Self {
            node: crate::key_hash(node),
            source: ObservationSource::Traffic,
            observed: Observed::Status(200),
            latency_us: latency_ms.saturating_mul(1000),
        }
    }
}

/// Which failure counter a failure feeds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FailureKind {
    /// `http_failures`
    Http,
    /// `tcp_failures`
    Tcp,
    /// `timeouts`
    Timeout,
}

/// How the gateway counts one observation (thresholds and state stay in the gateway).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HealthVerdict {
    /// Counts toward `healthy.successes`.
    Success,
    /// Counts toward this failure counter.
    Failure(FailureKind),
    /// Counts toward nothing.
    Ignore,
    /// Let the built-in evaluator classify it.
    Builtin,
}

/// One rate-limit decision.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LimitRequest {
    /// Uniformly random per request.
    pub request_id: u64,
    /// Hashes of the plugin's request keys, in `keys()` order; 0 = absent.
    pub keys: Vec<u64>,
}

impl LimitRequest {
    /// A request carrying these key hashes.
    pub fn with_keys(keys: Vec<u64>) -> Self {
        Self { request_id: 0, keys }
    }

    /// The hash of key `i`, or `None` when the request does not carry it.
    pub fn key(&self, i: usize) -> Option<u64> {
        self.keys.get(i).copied().filter(|h| *h != 0)
    }
}

/// Where a client stands against a limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LimitState {
    /// The limit that applies.
    pub limit: u32,
    /// Requests left in this window.
    pub remaining: u32,
    /// Milliseconds until the window resets.
    pub reset_ms: u32,
}

/// A rate limiter's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LimitVerdict {
    /// Let the request through.
    Allow(Option<LimitState>),
    /// Refuse it with 429.
    Deny(LimitState),
}

/// A shared counter's value in its current window (see [`crate::host::counter_add`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// Value after the addition.
    pub count: i64,
    /// Milliseconds until the window ends.
    pub reset_ms: u32,
}
