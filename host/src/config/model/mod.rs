//! Validated configuration: every value checked, every default filled in.
//!
//! Built from [`super::raw::RawConfig`] by [`super::validate`]; the rest of the
//! gateway only ever sees these types.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

mod limits;
mod tls;
mod upstream;

pub use limits::*;
pub use tls::*;
pub use upstream::*;

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
    /// Proxy listener (the first of `listeners`).
    pub listen: SocketAddr,
    /// Every proxy listener, plain or TLS, in file order.
    pub listeners: Vec<Listener>,
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
    /// Longest pause while a client sends its request body (then 408).
    pub client_body_timeout: Duration,
    /// Grace period for in-flight requests at shutdown.
    pub shutdown_grace: Duration,
    /// How proxy listeners use the worker threads.
    pub worker_model: WorkerModel,
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

/// How the proxy listeners use the worker threads (`TOKIO_WORKER_THREADS`, default
/// one per core).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WorkerModel {
    /// One multi-threaded runtime: every worker accepts on every listener and
    /// tasks move between workers (tokio's work stealing).
    #[default]
    Shared,
    /// nginx's model: each worker is a thread with its own single-threaded runtime
    /// and its own `SO_REUSEPORT` socket per listener; a connection stays on the
    /// worker the kernel gave it to, and so do the upstream connections it opens.
    PerWorker,
}
