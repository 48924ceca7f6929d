//! The config file as written: serde types that mirror docs/configuration.md field for field.
//!
//! Every struct rejects unknown fields. Enumerations are kept as strings here and
//! checked in [`super::validate`], so that an error can say which values are allowed.
//! These types are also what the admin API exports and persists, so they serialize
//! back to the same shape (absent optional fields stay absent).

use serde::{Deserialize, Serialize};

use super::duration::RawDuration;
pub use super::raw_tls::{RawCertificate, RawListener, RawTls, RawUpstreamTls};

/// The whole config document.
#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawConfig {
    /// This instance's identity and listeners.
    pub gateway: Option<RawGateway>,
    /// Services with their versions.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub services: Vec<RawService>,
    /// Gateway groups and the service versions published to them.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub gateway_groups: Vec<RawGroup>,
}

/// `gateway:` — settings of one gateway instance (flags can override them).
#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawGateway {
    /// Proxy listen address, `host:port`.
    pub listen: Option<String>,
    /// Makes `listen` a TLS listener (`docs/tls.md`).
    pub tls: Option<RawTls>,
    /// Several proxy listeners, each plain or TLS (instead of `listen` and `tls`).
    pub listeners: Option<Vec<RawListener>>,
    /// Admin listener.
    pub admin: Option<RawAdmin>,
    /// The gateway group this instance serves.
    pub group: Option<String>,
    /// This instance's zone.
    pub zone: Option<String>,
    /// This instance's region.
    pub region: Option<String>,
    /// Directory watched for `.wasm` plugins (relative to the config file).
    pub plugins_dir: Option<String>,
    /// Directory for durable state such as quota counters (relative to the config file).
    pub state_dir: Option<String>,
    /// One log line per request.
    pub access_log: Option<bool>,
    /// Largest accepted request body, in bytes.
    pub max_body_size: Option<u64>,
    /// Time a client may take to send its request head.
    pub client_header_timeout: Option<RawDuration>,
    /// Longest pause while a client sends its request body.
    pub client_body_timeout: Option<RawDuration>,
    /// Time in-flight requests get to finish after SIGTERM/SIGINT.
    pub shutdown_grace: Option<RawDuration>,
    /// How proxy listeners use the worker threads: `shared` or `per_worker`.
    pub worker_model: Option<String>,
    /// Redis connection used by `policy: redis` limits and quotas.
    pub redis: Option<RawRedis>,
    /// Header that names the consumer for `key: consumer` limits.
    pub consumer_header: Option<String>,
    /// Request header that turns on the decision debug header for one request.
    pub debug_header: Option<String>,
}

/// `gateway.admin:`
#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawAdmin {
    /// Admin listen address (loopback by default).
    pub listen: Option<String>,
    /// Environment variable that holds the bearer token for admin writes.
    pub token_env: Option<String>,
}

/// `gateway.redis:`
#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRedis {
    /// `redis://host:port[/db]`.
    pub url: String,
    /// Time one Redis operation may take before it counts as a failure.
    pub timeout: Option<RawDuration>,
}

/// One entry of `services:`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawService {
    /// Service name, unique in the file.
    pub name: String,
    /// Immutable-once-published versions.
    #[serde(default)]
    pub versions: Vec<RawVersion>,
}

/// One entry of `services[].versions:`.
#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawVersion {
    /// Version label, unique within the service (e.g. `1.0.0`).
    pub version: String,
    /// Routes that lead to this service.
    #[serde(default)]
    pub routes: Vec<RawRoute>,
    /// How to reach and treat the upstream nodes.
    #[serde(default)]
    pub upstream: RawUpstream,
    /// Rate limits.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub limits: Vec<RawLimit>,
    /// Long-period quota.
    pub quota: Option<RawQuota>,
    /// Wasm plugins that replace built-in policies.
    pub plugins: Option<RawPlugins>,
}

/// One entry of `routes:`.
#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRoute {
    /// Optional route name (shown in metrics and errors).
    pub name: Option<String>,
    /// Exact path, or a prefix ending in `/*`.
    pub uri: String,
    /// Allowed methods (any when empty).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub methods: Vec<String>,
    /// Allowed hosts (any when empty); `*.example.com` matches one or more labels.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<String>,
    /// Always add the decision debug header to responses of this route.
    pub debug: Option<bool>,
}

/// `upstream:` — the template of a service version's upstream.
#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawUpstream {
    /// Balancer: `roundrobin` | `chash` | `ewma` | `least_conn`.
    #[serde(rename = "type")]
    pub kind: Option<String>,
    /// Protocol to the nodes: `http` (default) | `https` | `grpc` (h2c) | `grpcs` (h2 over TLS).
    pub scheme: Option<String>,
    /// TLS to the nodes (with `scheme: https`).
    pub tls: Option<RawUpstreamTls>,
    /// chash key source: `vars` | `header` | `cookie` | `query`.
    pub hash_on: Option<String>,
    /// chash key name (variable, header, cookie or query argument).
    pub key: Option<String>,
    /// Host header sent upstream: `pass` (default) | `node` | `rewrite`.
    pub pass_host: Option<String>,
    /// Host header used with `pass_host: rewrite`.
    pub upstream_host: Option<String>,
    /// Per-try timeouts.
    pub timeout: Option<RawTimeouts>,
    /// Retries after the first try.
    pub retries: Option<u32>,
    /// Overall deadline for all tries of one request.
    pub retry_timeout: Option<RawDuration>,
    /// Retry conditions, backoff and budget.
    pub retry: Option<RawRetry>,
    /// `prefer_local` | `local_only` | `off`.
    pub zone_routing: Option<String>,
    /// Share of the local zone's weight that must be healthy to keep all traffic local.
    pub min_local_share: Option<f64>,
    /// Priority failover: `graceful` (capacity based) | `backup` (next tier only when none is healthy).
    pub priority_failover: Option<String>,
    /// Slow start after a node joins or recovers.
    pub slow_start: Option<RawSlowStart>,
    /// Active and passive health checks.
    pub checks: Option<RawChecks>,
    /// Circuit breaker rules, applied per node.
    pub circuit_breaker: Option<RawCircuitBreaker>,
    /// Percent of healthy capacity below which the upstream is in panic.
    pub panic_threshold: Option<f64>,
    /// In panic: `fail_open` (all nodes) | `fail` (503).
    pub on_panic: Option<String>,
}

/// `upstream.timeout:`
#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawTimeouts {
    /// TCP connect.
    pub connect: Option<RawDuration>,
    /// Longest pause while sending the request body upstream.
    pub send: Option<RawDuration>,
    /// Wait for the response head, and longest pause in the response body.
    pub read: Option<RawDuration>,
}

/// `upstream.retry:`
#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawRetry {
    /// Conditions: `connect_failure`, `reset`, `timeout`, `5xx`, `gateway_error`, or status codes.
    pub retry_on: Option<Vec<serde_json::Value>>,
    /// Backoff base.
    pub backoff_base: Option<RawDuration>,
    /// Backoff cap.
    pub backoff_max: Option<RawDuration>,
    /// Longest `Retry-After` honoured before a retry.
    pub retry_after_max: Option<RawDuration>,
    /// Retry budget: percent of active requests that may be retries.
    pub budget_percent: Option<f64>,
    /// Retry budget: retries always allowed concurrently.
    pub budget_min_concurrent: Option<u32>,
    /// Request bodies up to this many bytes are kept for replay.
    pub max_replay_body: Option<u64>,
}

/// `upstream.slow_start:`
#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawSlowStart {
    /// Ramp duration (0 turns slow start off).
    pub window: Option<RawDuration>,
    /// Weight share at the start of the ramp, 0..1.
    pub min_weight_percent: Option<f64>,
}

/// `upstream.checks:`
#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawChecks {
    /// Probes.
    pub active: Option<RawActiveCheck>,
    /// Observation of real traffic.
    pub passive: Option<RawPassiveCheck>,
}

/// `checks.active:`
#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawActiveCheck {
    /// `http` | `https` | `tcp` | `grpc`.
    #[serde(rename = "type")]
    pub kind: Option<String>,
    /// `type: https`: verify the node's certificate (default true).
    pub https_verify_certificate: Option<bool>,
    /// `type: grpc`: the service name sent to `grpc.health.v1.Health/Check`
    /// (default `""`: the whole server).
    pub grpc_service: Option<String>,
    /// Probe timeout.
    pub timeout: Option<RawDuration>,
    /// Probes in flight at once for this upstream.
    pub concurrency: Option<u32>,
    /// HTTP method of the probe.
    pub http_method: Option<String>,
    /// HTTP path of the probe.
    pub http_path: Option<String>,
    /// Host header of the probe (default: the node's host).
    pub host: Option<String>,
    /// Probe this port instead of the node's.
    pub port: Option<u16>,
    /// Extra request headers, `"Name: value"`.
    pub req_headers: Option<Vec<String>>,
    /// When a node counts as healthy.
    pub healthy: Option<RawActiveHealthy>,
    /// When a node counts as unhealthy.
    pub unhealthy: Option<RawActiveUnhealthy>,
}

/// `checks.active.healthy:`
#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawActiveHealthy {
    /// Probe interval while healthy.
    pub interval: Option<RawDuration>,
    /// Consecutive successes that mark a node healthy.
    pub successes: Option<u32>,
    /// Statuses that count as success.
    pub http_statuses: Option<Vec<u16>>,
}

/// `checks.active.unhealthy:`
#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawActiveUnhealthy {
    /// Probe interval while unhealthy.
    pub interval: Option<RawDuration>,
    /// Consecutive bad statuses that mark a node unhealthy.
    pub http_failures: Option<u32>,
    /// Consecutive connect failures that mark a node unhealthy.
    pub tcp_failures: Option<u32>,
    /// Consecutive timeouts that mark a node unhealthy.
    pub timeouts: Option<u32>,
    /// Statuses that count as failure.
    pub http_statuses: Option<Vec<u16>>,
}

/// `checks.passive:`
#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawPassiveCheck {
    /// `http` | `https` | `tcp` (APISIX's `checks.passive.type`).
    #[serde(rename = "type")]
    pub kind: Option<String>,
    /// When real traffic shows a node healthy again.
    pub healthy: Option<RawPassiveHealthy>,
    /// When real traffic ejects a node.
    pub unhealthy: Option<RawPassiveUnhealthy>,
    /// First ejection time (multiplied by the number of ejections).
    pub base_ejection_time: Option<RawDuration>,
    /// Longest ejection time.
    pub max_ejection_time: Option<RawDuration>,
}

/// `checks.passive.healthy:`
#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawPassiveHealthy {
    /// Statuses that count as success.
    pub http_statuses: Option<Vec<u16>>,
    /// Consecutive successes that clear failure counters.
    pub successes: Option<u32>,
}

/// `checks.passive.unhealthy:`
#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawPassiveUnhealthy {
    /// Statuses that count as failure.
    pub http_statuses: Option<Vec<u16>>,
    /// Consecutive bad statuses that eject.
    pub http_failures: Option<u32>,
    /// Consecutive connect failures that eject.
    pub tcp_failures: Option<u32>,
    /// Consecutive timeouts that eject.
    pub timeouts: Option<u32>,
    /// gRPC status names (`unavailable`, ...) that count as failure.
    pub grpc_statuses: Option<Vec<String>>,
}

/// `upstream.circuit_breaker:`
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawCircuitBreaker {
    /// Trip rules; any one trips the breaker of a node.
    pub rules: Vec<RawBreakerRule>,
}

/// One breaker rule.
#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawBreakerRule {
    /// Rule name (for logs and the admin API).
    pub name: Option<String>,
    /// Trip after this many failures in `interval`.
    pub count: Option<u32>,
    /// Trip when this percent of requests in `interval` failed.
    pub percentage: Option<f64>,
    /// Requests needed in `interval` before `percentage` is judged.
    pub min_requests: Option<u32>,
    /// Observation window.
    pub interval: Option<RawDuration>,
    /// Statuses that count as failure: codes or ranges like `"500-599"`.
    pub status_codes: Option<Vec<serde_json::Value>>,
    /// Transport errors that count as failure: `connect_failure`, `timeout`, `reset`.
    pub errors: Option<Vec<String>>,
    /// How long a tripped breaker stays open.
    pub trip_duration: Option<RawDuration>,
    /// Stay open for the upstream's `Retry-After` on 429/503 when it is longer.
    pub accept_retry_after: Option<bool>,
}

/// One entry of `limits:`.
#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLimit {
    /// Rule name (defaults to its position).
    pub name: Option<String>,
    /// What is counted: `remote_addr`, `header:<name>`, `route`, `consumer`, or a comma list.
    pub key: String,
    /// `token_bucket` | `sliding_window`.
    pub algorithm: String,
    /// Token bucket: tokens per second.
    pub rate: Option<f64>,
    /// Token bucket: bucket size.
    pub burst: Option<f64>,
    /// Sliding window: requests per window.
    pub count: Option<u64>,
    /// Sliding window: window length.
    pub window: Option<RawDuration>,
    /// `local` | `redis`.
    pub policy: Option<String>,
    /// Count and report without enforcing.
    pub shadow: Option<bool>,
    /// Redis policy: how often local counts are synced.
    pub sync_interval: Option<RawDuration>,
    /// Redis policy when Redis is unreachable: `degrade` | `fail_open` | `fail_closed`.
    pub on_store_failure: Option<String>,
}

/// `quota:`
#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawQuota {
    /// What is counted (same syntax as a limit key).
    pub key: String,
    /// Calls allowed per period.
    pub calls: u64,
    /// `hour` | `day` | `month`.
    pub period: String,
    /// `calendar` (default) | `rolling`.
    pub alignment: Option<String>,
    /// `local` | `redis`.
    pub policy: Option<String>,
    /// How often counts are persisted or synced.
    pub sync_interval: Option<RawDuration>,
    /// Redis policy when Redis is unreachable: `degrade` | `fail_open` | `fail_closed`.
    pub on_store_failure: Option<String>,
}

/// `plugins:` — Wasm plugins by kind.
#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawPlugins {
    /// Replaces the balancer's pick.
    pub balancer: Option<RawPluginRef>,
    /// Replaces the health verdict.
    pub health: Option<RawPluginRef>,
    /// Replaces the retry decision.
    pub retry: Option<RawPluginRef>,
    /// Adds a rate-limit decision.
    pub rate_limit: Option<RawPluginRef>,
}

/// A reference to a plugin by name (its file stem) with its config.
#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPluginRef {
    /// Plugin name = `.wasm` file stem in `plugins_dir`.
    pub name: String,
    /// Passed to the plugin's `init` as JSON.
    pub config: Option<serde_json::Value>,
}

/// One entry of `gateway_groups:`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawGroup {
    /// Group name.
    pub name: String,
    /// Published service versions and their runtime nodes.
    #[serde(default)]
    pub services: Vec<RawPublished>,
}

/// One service version published to a group.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPublished {
    /// Service name.
    pub service: String,
    /// Published version.
    pub version: String,
    /// Runtime nodes of this (group, service).
    #[serde(default)]
    pub nodes: Vec<RawNode>,
}

/// One upstream node.
#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawNode {
    /// Host name or IP.
    pub host: String,
    /// TCP port.
    pub port: u32,
    /// Relative weight (0 drains the node).
    pub weight: Option<u32>,
    /// Zone label.
    pub zone: Option<String>,
    /// Region label.
    pub region: Option<String>,
    /// Priority tier (higher first).
    pub priority: Option<i32>,
    /// Free-form tags that plugins can see (e.g. `canary`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
}
