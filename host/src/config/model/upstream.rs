//! The upstream policy of a service version: how the Host is passed, zone and
//! priority routing, timeouts, retries, health checks and circuit breakers.

use std::time::Duration;

use super::{BalancerKind, HashKey};

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
    /// gRPC status codes (`unavailable`, `resource_exhausted`, ...).
    pub grpc: crate::outcome::GrpcCodes,
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
    /// HTTP request over TLS (the upstream's `tls` settings; `https_verify_certificate`).
    Https,
    /// TCP connect.
    Tcp,
    /// `grpc.health.v1.Health/Check` over HTTP/2 (TLS when the upstream is `grpcs`).
    Grpc,
}

/// `checks.passive.type`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum PassiveKind {
    /// Statuses, connection failures and timeouts count (the default).
    #[default]
    Http,
    /// As `http`, for nodes reached over TLS.
    Https,
    /// Only connection failures and timeouts count; every status is a success.
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
    /// `type: https`: verify the node's certificate.
    pub https_verify_certificate: bool,
    /// `type: grpc`: the service name asked about (`""`: the whole server).
    pub grpc_service: String,
}

/// Passive health check.
#[derive(Debug, Clone, PartialEq)]
pub struct PassiveCheck {
    /// What real traffic is judged on: `http`/`https` statuses and connection
    /// failures, or only connection failures and timeouts (`tcp`).
    pub kind: PassiveKind,
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
    /// gRPC codes that count as failures (`unhealthy.grpc_statuses`).
    pub unhealthy_grpc_statuses: crate::outcome::GrpcCodes,
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
    /// Protocol to the nodes.
    pub scheme: super::Scheme,
    /// TLS to the nodes (`Some` exactly when `scheme` is `https` or `grpcs`).
    pub tls: Option<std::sync::Arc<super::UpstreamTls>>,
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
