//! Validated configuration: every value checked, every default filled in.
//!
//! Built from [`super::raw::RawConfig`] by [`super::validate`]; the rest of the
//! gateway only ever sees these types.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// A whole validated config.
#[derive(Debug, Clone)]
pub struct Config {
    /// Instance settings (after flag overrides).
    pub gateway: GatewaySettings,
    /// Services by name.
    pub services: BTreeMap<String, Service>,
    /// Gateway groups by name.
    pub groups: BTreeMap<String, Group>,
}

impl Config {
    /// The group this instance serves, if it exists.
    pub fn own_group(&self) -> Option<&Group> {
        self.groups.get(&self.gateway.group)
    }

    /// The published version of `service` in `group`.
    pub fn version_of(&self, published: &Published) -> Option<&Arc<ServiceVersion>> {
        self.services
            .get(&published.service)?
            .versions
            .iter()
            .find(|v| v.version == published.version)
    }
}

/// Instance settings.
#[derive(Debug, Clone)]
pub struct GatewaySettings {
    /// Proxy listener.
    pub listen: SocketAddr,
    /// Admin listener.
    pub admin_listen: SocketAddr,
    /// Name of the environment variable holding the admin token.
    pub admin_token_env: Option<String>,
    /// Group served by this instance.
    pub group: String,
    /// This instance's zone ("" when unknown).
    pub zone: String,
    /// This instance's region ("" when unknown).
    pub region: String,
    /// Plugin directory (absolute, or relative to the working directory).
    pub plugins_dir: PathBuf,
    /// Durable state directory.
    pub state_dir: PathBuf,
    /// One log line per request.
    pub access_log: bool,
    /// Largest request body in bytes.
    pub max_body_size: u64,
    /// Time a client may take to send its request head.
    pub client_header_timeout: Duration,
    /// Grace period for in-flight requests at shutdown.
    pub shutdown_grace: Duration,
    /// Redis settings for `policy: redis`.
    pub redis: Option<RedisSettings>,
    /// Header naming the consumer.
    pub consumer_header: Option<http::HeaderName>,
    /// Request header that asks for the debug response header.
    pub debug_header: Option<http::HeaderName>,
}

/// Redis connection settings.
#[derive(Debug, Clone)]
pub struct RedisSettings {
    /// Connection URL.
    pub url: String,
    /// Per-operation timeout.
    pub timeout: Duration,
}

/// A service and its versions.
#[derive(Debug, Clone)]
pub struct Service {
    /// Service name.
    pub name: String,
    /// Versions in file order.
    pub versions: Vec<Arc<ServiceVersion>>,
}

/// One immutable service version.
#[derive(Debug, Clone, PartialEq)]
pub struct ServiceVersion {
    /// Service name.
    pub service: String,
    /// Version label.
    pub version: String,
    /// Routes.
    pub routes: Vec<Route>,
    /// Upstream policy.
    pub upstream: UpstreamPolicy,
    /// Rate-limit rules.
    pub limits: Vec<LimitRule>,
    /// Quota.
    pub quota: Option<QuotaRule>,
    /// Plugin references.
    pub plugins: PluginRefs,
}

/// A route.
#[derive(Debug, Clone, PartialEq)]
pub struct Route {
    /// Name (given, or `service@version#index`).
    pub name: String,
    /// Path pattern.
    pub uri: UriPattern,
    /// Allowed methods; empty = any.
    pub methods: Vec<http::Method>,
    /// Allowed hosts (lower case); empty = any.
    pub hosts: Vec<HostPattern>,
    /// Always emit the debug header.
    pub debug: bool,
}

/// A path pattern.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum UriPattern {
    /// Matches this path only.
    Exact(String),
    /// Matches every path that starts with this prefix (the pattern minus its `*`).
    Prefix(String),
}

/// A host pattern.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum HostPattern {
    /// `api.example.com`
    Exact(String),
    /// `*.example.com`: the suffix including the leading dot.
    Suffix(String),
}

impl HostPattern {
    /// Whether `host` (lower case, without port) matches.
    pub fn matches(&self, host: &str) -> bool {
        match self {
            HostPattern::Exact(h) => h == host,
            HostPattern::Suffix(s) => host.len() > s.len() && host.ends_with(s.as_str()),
        }
    }
}

/// Balancer kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BalancerKind {
    /// Smooth weighted round robin.
    RoundRobin,
    /// Consistent hashing (ketama).
    Chash,
    /// Peak EWMA latency with two random choices.
    Ewma,
    /// Fewest in-flight requests per weight.
    LeastConn,
}

impl BalancerKind {
    /// The config spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            BalancerKind::RoundRobin => "roundrobin",
            BalancerKind::Chash => "chash",
            BalancerKind::Ewma => "ewma",
            BalancerKind::LeastConn => "least_conn",
        }
    }
}

/// Where the chash key comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HashKey {
    /// `remote_addr`
    RemoteAddr,
    /// `uri` (path only)
    Uri,
    /// `host`
    Host,
    /// A request header.
    Header(http::HeaderName),
    /// A cookie.
    Cookie(String),
    /// A query argument.
    Query(String),
}

/// How the `Host` header is set upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PassHost {
    /// The client's Host.
    Pass,
    /// The node's `host:port`.
    Node,
    /// A fixed value.
    Rewrite(http::HeaderValue),
}

/// Zone routing modes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ZoneRouting {
    /// Stay in the local zone while it has enough healthy capacity.
    PreferLocal,
    /// Never leave the local zone.
    LocalOnly,
    /// Ignore zones.
    Off,
}

/// Priority failover modes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PriorityFailover {
    /// Spill the shortfall of healthy capacity to the next tier.
    Graceful,
    /// Use the next tier only when the higher one has no healthy node.
    Backup,
}

/// Behaviour when the upstream is in panic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnPanic {
    /// Send to all nodes regardless of health.
    FailOpen,
    /// Answer 503.
    Fail,
}

/// Per-try timeouts.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Timeouts {
    /// TCP connect.
    pub connect: Duration,
    /// Longest pause while sending the request body.
    pub send: Duration,
    /// Wait for the response head and longest pause in its body.
    pub read: Duration,
}

/// Conditions under which a try is retried.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RetryOn {
    /// The TCP connection could not be made.
    pub connect_failure: bool,
    /// The connection broke after it was made.
    pub reset: bool,
    /// The try timed out.
    pub timeout: bool,
    /// Any 5xx response.
    pub any_5xx: bool,
    /// 502, 503 or 504.
    pub gateway_error: bool,
    /// Listed status codes.
    pub statuses: Vec<u16>,
}

impl RetryOn {
    /// Whether a response status is a retry condition.
    pub fn status(&self, status: u16) -> bool {
        (self.any_5xx && (500..600).contains(&status))
            || (self.gateway_error && matches!(status, 502..=504))
            || self.statuses.contains(&status)
    }
}

/// Retry settings.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicyConfig {
    /// Retries after the first try.
    pub retries: u32,
    /// Deadline for all tries (None = only per-try timeouts).
    pub retry_timeout: Option<Duration>,
    /// Conditions.
    pub retry_on: RetryOn,
    /// Backoff base.
    pub backoff_base: Duration,
    /// Backoff cap.
    pub backoff_max: Duration,
    /// Longest `Retry-After` honoured.
    pub retry_after_max: Duration,
    /// Budget: percent of active requests that may be retries.
    pub budget_percent: f64,
    /// Budget: retries always allowed concurrently.
    pub budget_min_concurrent: u32,
    /// Largest request body kept for replay.
    pub max_replay_body: u64,
}

/// Slow start.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SlowStart {
    /// Ramp duration (zero = off).
    pub window: Duration,
    /// Weight share at the start, 0..1.
    pub min_weight: f64,
}

/// Active probe kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProbeKind {
    /// HTTP request.
    Http,
    /// TCP connect.
    Tcp,
}

/// Active health check.
#[derive(Debug, Clone, PartialEq)]
pub struct ActiveCheck {
    /// Probe kind.
    pub kind: ProbeKind,
    /// Probe timeout.
    pub timeout: Duration,
    /// Probes in flight at once per upstream.
    pub concurrency: u32,
    /// HTTP method.
    pub http_method: http::Method,
    /// HTTP path (with query).
    pub http_path: String,
    /// Host header override.
    pub host: Option<String>,
    /// Port override.
    pub port: Option<u16>,
    /// Extra headers.
    pub req_headers: Vec<(http::HeaderName, http::HeaderValue)>,
    /// Interval while healthy.
    pub healthy_interval: Duration,
    /// Successes to become healthy.
    pub healthy_successes: u32,
    /// Success statuses.
    pub healthy_statuses: Vec<u16>,
    /// Interval while unhealthy.
    pub unhealthy_interval: Duration,
    /// Bad statuses to become unhealthy.
    pub unhealthy_http_failures: u32,
    /// Connect failures to become unhealthy.
    pub unhealthy_tcp_failures: u32,
    /// Timeouts to become unhealthy.
    pub unhealthy_timeouts: u32,
    /// Failure statuses.
    pub unhealthy_statuses: Vec<u16>,
}

/// Passive health check.
#[derive(Debug, Clone, PartialEq)]
pub struct PassiveCheck {
    /// Success statuses.
    pub healthy_statuses: Vec<u16>,
    /// Successes that clear failure counters.
    pub healthy_successes: u32,
    /// Failure statuses.
    pub unhealthy_statuses: Vec<u16>,
    /// Bad statuses that eject.
    pub unhealthy_http_failures: u32,
    /// Connect failures that eject.
    pub unhealthy_tcp_failures: u32,
    /// Timeouts that eject.
    pub unhealthy_timeouts: u32,
    /// First ejection time.
    pub base_ejection_time: Duration,
    /// Longest ejection time.
    pub max_ejection_time: Duration,
}

/// Health checks.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Checks {
    /// Probes.
    pub active: Option<ActiveCheck>,
    /// Traffic observation.
    pub passive: Option<PassiveCheck>,
}

/// A transport error class used by breakers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// Connect failed.
    ConnectFailure,
    /// Timed out.
    Timeout,
    /// Connection broke.
    Reset,
}

/// How a breaker rule measures failure.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum TripCondition {
    /// This many failures in the interval.
    Count(u32),
    /// This percent of requests failed in the interval (with a minimum of requests).
    Percentage {
        /// Percent, 0..=100.
        percent: f64,
        /// Requests needed before judging.
        min_requests: u32,
    },
}

/// A breaker rule.
#[derive(Debug, Clone, PartialEq)]
pub struct BreakerRule {
    /// Name.
    pub name: String,
    /// Condition.
    pub condition: TripCondition,
    /// Window.
    pub interval: Duration,
    /// Failure statuses as inclusive ranges.
    pub status_ranges: Vec<(u16, u16)>,
    /// Failure error classes.
    pub errors: Vec<ErrorClass>,
    /// Open time.
    pub trip_duration: Duration,
    /// Honour `Retry-After`.
    pub accept_retry_after: bool,
}

/// Upstream policy of a service version.
#[derive(Debug, Clone, PartialEq)]
pub struct UpstreamPolicy {
    /// Balancer.
    pub balancer: BalancerKind,
    /// chash key.
    pub hash_key: HashKey,
    /// Host header policy.
    pub pass_host: PassHost,
    /// Timeouts.
    pub timeouts: Timeouts,
    /// Retries.
    pub retry: RetryPolicyConfig,
    /// Zone routing (resolved against the instance's zone).
    pub zone_routing: ZoneRouting,
    /// Min healthy share of the local zone.
    pub min_local_share: f64,
    /// Priority failover.
    pub priority_failover: PriorityFailover,
    /// Slow start.
    pub slow_start: SlowStart,
    /// Health checks.
    pub checks: Checks,
    /// Breaker rules.
    pub breaker: Vec<BreakerRule>,
    /// Panic threshold, percent of healthy capacity.
    pub panic_threshold: f64,
    /// Panic behaviour.
    pub on_panic: OnPanic,
}

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

/// A plugin reference.
#[derive(Debug, Clone, PartialEq)]
pub struct PluginRef {
    /// Plugin name (file stem).
    pub name: String,
    /// Config passed to `init`, as JSON text.
    pub config: String,
}

/// Plugins of a service version.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct PluginRefs {
    /// Balancer plugin.
    pub balancer: Option<PluginRef>,
    /// Health evaluator plugin.
    pub health: Option<PluginRef>,
    /// Retry policy plugin.
    pub retry: Option<PluginRef>,
    /// Rate limiter plugin.
    pub rate_limit: Option<PluginRef>,
}

/// A gateway group.
#[derive(Debug, Clone)]
pub struct Group {
    /// Name.
    pub name: String,
    /// Published services.
    pub services: Vec<Published>,
}

/// A service version published to a group, with its nodes.
#[derive(Debug, Clone)]
pub struct Published {
    /// Service name.
    pub service: String,
    /// Version.
    pub version: String,
    /// Runtime nodes.
    pub nodes: Vec<Node>,
}

/// An upstream node.
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    /// Host.
    pub host: String,
    /// Port.
    pub port: u16,
    /// Weight.
    pub weight: u32,
    /// Zone ("" = the gateway's own).
    pub zone: String,
    /// Region ("" = the gateway's own).
    pub region: String,
    /// Priority (higher first).
    pub priority: i32,
    /// Tags.
    pub tags: Vec<String>,
}

impl Node {
    /// `host:port` (IPv6 hosts in brackets).
    pub fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}
