//! [`RawConfig`] -> [`Config`]: checks every value, fills every default, and reports
//! all problems at once, each with the key path where it was found.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

mod groups;
mod limits;
mod tls;
mod upstream;

use super::ConfigError;
use super::duration::RawDuration;
use super::model::*;
use super::parse::Broken;
use super::raw::*;

/// Values that flags put over the file's `gateway:` section.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// `--group`
    pub group: Option<String>,
    /// `--zone`
    pub zone: Option<String>,
    /// `--region`
    pub region: Option<String>,
    /// `--listen`
    pub listen: Option<SocketAddr>,
    /// `--admin-listen`
    pub admin_listen: Option<SocketAddr>,
    /// `--state-dir`
    pub state_dir: Option<PathBuf>,
    /// `--plugins-dir`
    pub plugins_dir: Option<PathBuf>,
}

/// Defaults that are not obvious from the field alone.
pub mod defaults {
    use std::time::Duration;

    /// Proxy listener.
    pub const LISTEN: &str = "127.0.0.1:8080";
    /// Admin listener.
    pub const ADMIN_LISTEN: &str = "127.0.0.1:9180";
    /// Group.
    pub const GROUP: &str = "default";
    /// 100 MiB.
    pub const MAX_BODY_SIZE: u64 = 100 * 1024 * 1024;
    /// Time a client may take to send its whole request head (HAProxy's
    /// `timeout http-request`).
    pub const CLIENT_HEADER_TIMEOUT: Duration = Duration::from_secs(10);
    /// Longest pause while a client sends its request body.
    pub const CLIENT_BODY_TIMEOUT: Duration = Duration::from_secs(60);
    /// Shutdown grace.
    pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);
    /// Connect timeout.
    pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
    /// Send timeout.
    pub const SEND_TIMEOUT: Duration = Duration::from_secs(60);
    /// Read timeout.
    pub const READ_TIMEOUT: Duration = Duration::from_secs(60);
    /// Retries after the first try.
    pub const RETRIES: u32 = 2;
    /// Node weight.
    pub const WEIGHT: u32 = 100;
    /// Largest node weight.
    pub const MAX_WEIGHT: u32 = 65_535;
    /// Body kept for replay.
    pub const MAX_REPLAY_BODY: u64 = 64 * 1024;
}

/// Validates a raw config. `base_dir` anchors relative directories.
pub fn validate(raw: &RawConfig, overrides: &Overrides, base_dir: &Path) -> Result<Config, Vec<ConfigError>> {
    validate_partial(raw, overrides, base_dir, &Broken::default())
}

/// Validates the pieces of a document that parsed; references to pieces that
/// failed to parse (`broken`) are not reported again.
pub fn validate_partial(
    raw: &RawConfig,
    overrides: &Overrides,
    base_dir: &Path,
    broken: &Broken,
) -> Result<Config, Vec<ConfigError>> {
    let mut v = Validator {
        broken: broken.clone(),
        base_dir: base_dir.to_path_buf(),
        ..Validator::default()
    };
    let gateway = v.gateway(raw.gateway.as_ref(), overrides, base_dir);
    let services = v.services(&raw.services, &gateway);
    let groups = v.groups(&raw.gateway_groups, &services);
    if !groups.contains_key(&gateway.group) && !raw.gateway_groups.is_empty() && !broken.gateway {
        let known: Vec<_> = groups.keys().map(String::as_str).collect();
        v.error(
            "gateway.group",
            format!(
                "group {:?} is not defined; defined groups: {}",
                gateway.group,
                known.join(", ")
            ),
        );
    }
    if v.errors.is_empty() {
        Ok(Config {
            gateway,
            services,
            groups,
        })
    } else {
        Err(v.errors)
    }
}

#[derive(Default)]
pub(super) struct Validator {
    pub(super) errors: Vec<ConfigError>,
    pub(super) broken: Broken,
    /// Directory relative file names are resolved against.
    pub(super) base_dir: PathBuf,
}

pub(super) fn dur(d: &Option<RawDuration>, default: Duration) -> Duration {
    d.as_ref().map(|d| d.value).unwrap_or(default)
}

impl Validator {
    pub(super) fn error(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.errors.push(ConfigError::new(path, message));
    }

    pub(super) fn socket_addr(&mut self, text: Option<&str>, default: &str, path: &str) -> SocketAddr {
        let t = text.unwrap_or(default);
        match t.parse() {
            Ok(a) => a,
            Err(_) => {
                self.error(
                    path,
                    format!("invalid address {t:?}; expected ip:port, e.g. 127.0.0.1:8080"),
                );
                default.parse().expect("default address parses")
            }
        }
    }

    pub(super) fn header_name(&mut self, name: &str, path: &str) -> Option<http::HeaderName> {
        match http::HeaderName::from_bytes(name.trim().to_ascii_lowercase().as_bytes()) {
            Ok(h) => Some(h),
            Err(_) => {
                self.error(path, format!("invalid header name {name:?}"));
                None
            }
        }
    }

    /// `value` (or `default`) as one of `options`. An unknown value is an error at
    /// `path` ("unknown {what} ...; expected one of ...") and gives the default's.
    pub(super) fn choice<T: Copy>(
        &mut self,
        value: Option<&str>,
        default: &str,
        options: &[(&str, T)],
        path: impl FnOnce() -> String,
        what: &str,
    ) -> T {
        let find = |v: &str| options.iter().find(|(name, _)| *name == v).map(|(_, t)| *t);
        let fallback = find(default).expect("the default is one of the options");
        let v = value.unwrap_or(default);
        find(v).unwrap_or_else(|| {
            let names: Vec<&str> = options.iter().map(|(n, _)| *n).collect();
            self.error(
                path(),
                format!("unknown {what} {v:?}; expected one of {}", names.join(", ")),
            );
            fallback
        })
    }

    pub(super) fn positive(&mut self, d: Duration, path: &str) -> Duration {
        if d.is_zero() {
            self.error(path, "must be greater than 0");
        }
        d
    }

    fn gateway(&mut self, raw: Option<&RawGateway>, o: &Overrides, base: &Path) -> GatewaySettings {
        let empty = RawGateway::default();
        let g = raw.unwrap_or(&empty);
        let (listen, listeners) = self.listeners(g, o, base);
        let admin = g.admin.clone().unwrap_or_default();
        let admin_listen = o.admin_listen.unwrap_or_else(|| {
            self.socket_addr(admin.listen.as_deref(), defaults::ADMIN_LISTEN, "gateway.admin.listen")
        });
        if let Some(env) = &admin.token_env
            && (env.is_empty() || env.contains('='))
        {
            self.error(
                "gateway.admin.token_env",
                format!("invalid environment variable name {env:?}"),
            );
        }
        let dir = |value: &Option<String>, over: &Option<PathBuf>, default: &str| -> PathBuf {
            over.clone()
                .unwrap_or_else(|| base.join(value.as_deref().unwrap_or(default)))
        };
        let max_body_size = g.max_body_size.unwrap_or(defaults::MAX_BODY_SIZE);
        if max_body_size == 0 {
            self.error("gateway.max_body_size", "must be greater than 0");
        }
        let redis = g.redis.as_ref().map(|r| {
            if !(r.url.starts_with("redis://") || r.url.starts_with("rediss://") || r.url.starts_with("unix://")) {
                self.error(
                    "gateway.redis.url",
                    format!("invalid Redis URL {:?}; expected redis://host:port", r.url),
                );
            }
            RedisSettings {
                url: r.url.clone(),
                timeout: dur(&r.timeout, Duration::from_millis(250)),
            }
        });
        let consumer_header = g
            .consumer_header
            .as_deref()
            .and_then(|h| self.header_name(h, "gateway.consumer_header"));
        let debug_header = g
            .debug_header
            .as_deref()
            .and_then(|h| self.header_name(h, "gateway.debug_header"));
        let label = |over: &Option<String>, value: &Option<String>| over.clone().or(value.clone()).unwrap_or_default();
        GatewaySettings {
            listen,
            listeners,
            admin_listen,
            admin_token_env: admin.token_env,
            group: Some(label(&o.group, &g.group))
                .filter(|g| !g.is_empty())
                .unwrap_or_else(|| defaults::GROUP.to_string()),
            zone: label(&o.zone, &g.zone),
            region: label(&o.region, &g.region),
            plugins_dir: dir(&g.plugins_dir, &o.plugins_dir, "plugins"),
            state_dir: dir(&g.state_dir, &o.state_dir, "state"),
            access_log: g.access_log.unwrap_or(true),
            max_body_size,
            client_header_timeout: self.positive(
                dur(&g.client_header_timeout, defaults::CLIENT_HEADER_TIMEOUT),
                "gateway.client_header_timeout",
            ),
            client_body_timeout: self.positive(
                dur(&g.client_body_timeout, defaults::CLIENT_BODY_TIMEOUT),
                "gateway.client_body_timeout",
            ),
            shutdown_grace: dur(&g.shutdown_grace, defaults::SHUTDOWN_GRACE),
            worker_model: self.choice(
                g.worker_model.as_deref(),
                "shared",
                &[("shared", WorkerModel::Shared), ("per_worker", WorkerModel::PerWorker)],
                || "gateway.worker_model".to_string(),
                "worker model",
            ),
            redis,
            consumer_header,
            debug_header,
        }
    }

    fn services(&mut self, raw: &[RawService], gw: &GatewaySettings) -> BTreeMap<String, Service> {
        let mut out = BTreeMap::new();
        let mut first_at: HashMap<&str, usize> = HashMap::new();
        for (i, s) in raw.iter().enumerate() {
            let path = format!("services[{i}]");
            if !valid_name(&s.name) {
                self.error(
                    format!("{path}.name"),
                    format!(
                        "invalid service name {:?}; use letters, digits, '-', '_' and '.'",
                        s.name
                    ),
                );
            }
            if let Some(j) = first_at.insert(&s.name, i) {
                self.error(
                    format!("{path}.name"),
                    format!("duplicate service {:?} (first defined at services[{j}])", s.name),
                );
                continue;
            }
            let mut versions = Vec::new();
            let mut seen: HashMap<&str, usize> = HashMap::new();
            for (k, ver) in s.versions.iter().enumerate() {
                let vpath = format!("{path}.versions[{k}]");
                if !valid_name(&ver.version) {
                    self.error(format!("{vpath}.version"), format!("invalid version {:?}", ver.version));
                }
                if let Some(j) = seen.insert(&ver.version, k) {
                    self.error(
                        format!("{vpath}.version"),
                        format!(
                            "duplicate version {:?} of service {:?} (first at versions[{j}])",
                            ver.version, s.name
                        ),
                    );
                    continue;
                }
                versions.push(Arc::new(self.version(&s.name, ver, &vpath, gw)));
            }
            out.insert(
                s.name.clone(),
                Service {
                    name: s.name.clone(),
                    versions,
                },
            );
        }
        out
    }

    fn version(&mut self, service: &str, raw: &RawVersion, path: &str, gw: &GatewaySettings) -> ServiceVersion {
        let routes = raw
            .routes
            .iter()
            .enumerate()
            .map(|(i, r)| self.route(r, &format!("{path}.routes[{i}]"), service, &raw.version, i))
            .collect::<Vec<_>>();
        if raw.routes.is_empty() {
            self.error(format!("{path}.routes"), "a service version needs at least one route");
        }
        let upstream = self.upstream(&raw.upstream, &format!("{path}.upstream"), gw);
        let mut limit_names = HashSet::new();
        let limits = raw
            .limits
            .iter()
            .enumerate()
            .filter_map(|(i, l)| {
                let lp = format!("{path}.limits[{i}]");
                let rule = self.limit(l, &lp, i, gw)?;
                if !limit_names.insert(rule.name.clone()) {
                    self.error(format!("{lp}.name"), format!("duplicate limit name {:?}", rule.name));
                }
                Some(rule)
            })
            .collect();
        if raw.limits.len() > MAX_RULES {
            self.error(
                format!("{path}.limits"),
                format!("at most {} rules per version", MAX_RULES),
            );
        }
        let quota = raw
            .quota
            .as_ref()
            .and_then(|q| self.quota(q, &format!("{path}.quota"), gw));
        let plugins = self.plugins(raw.plugins.as_ref(), &format!("{path}.plugins"));
        ServiceVersion {
            service: service.to_string(),
            version: raw.version.clone(),
            routes,
            upstream,
            limits,
            quota,
            plugins,
        }
    }

    fn route(&mut self, r: &RawRoute, path: &str, service: &str, version: &str, index: usize) -> Route {
        let uri = if !r.uri.starts_with('/') {
            self.error(format!("{path}.uri"), format!("uri {:?} must start with '/'", r.uri));
            UriPattern::Exact(r.uri.clone())
        } else if let Some(prefix) = r.uri.strip_suffix('*') {
            if prefix.contains('*') || !prefix.ends_with('/') {
                self.error(
                    format!("{path}.uri"),
                    format!("uri {:?}: a wildcard is only allowed as a final \"/*\"", r.uri),
                );
            }
            UriPattern::Prefix(prefix.to_string())
        } else {
            if r.uri.contains('*') {
                self.error(
                    format!("{path}.uri"),
                    format!("uri {:?}: a wildcard is only allowed as a final \"/*\"", r.uri),
                );
            }
            UriPattern::Exact(r.uri.clone())
        };
        let methods = r
            .methods
            .iter()
            .enumerate()
            .filter_map(|(i, m)| {
                let upper = m.to_ascii_uppercase();
                let ok = !upper.is_empty() && upper.bytes().all(|b| b.is_ascii_uppercase() || b == b'-');
                match (ok, http::Method::from_bytes(upper.as_bytes())) {
                    (true, Ok(m)) => Some(m),
                    _ => {
                        self.error(format!("{path}.methods[{i}]"), format!("invalid HTTP method {m:?}"));
                        None
                    }
                }
            })
            .collect();
        let hosts = r
            .hosts
            .iter()
            .enumerate()
            .filter_map(|(i, h)| {
                let h = h.to_ascii_lowercase();
                let (pattern, name) = match h.strip_prefix("*.") {
                    Some(rest) => (HostPattern::Suffix(format!(".{rest}")), rest.to_string()),
                    None => (HostPattern::Exact(h.clone()), h.clone()),
                };
                let valid = !name.is_empty()
                    && name
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b':' | b'[' | b']'));
                if valid {
                    Some(pattern)
                } else {
                    self.error(format!("{path}.hosts[{i}]"), format!("invalid host {h:?}"));
                    None
                }
            })
            .collect();
        Route {
            name: r.name.clone().unwrap_or_else(|| format!("{service}@{version}#{index}")),
            uri,
            methods,
            hosts,
            debug: r.debug.unwrap_or(false),
        }
    }

    fn plugins(&mut self, p: Option<&RawPlugins>, path: &str) -> PluginRefs {
        let Some(p) = p else { return PluginRefs::default() };
        let mut one = |r: &Option<RawPluginRef>, kind: &str| {
            r.as_ref().map(|r| {
                if !valid_name(&r.name) {
                    self.error(
                        format!("{path}.{kind}.name"),
                        format!(
                            "invalid plugin name {:?}; it is a .wasm file stem: letters, digits, '-', '_', '.'",
                            r.name
                        ),
                    );
                }
                PluginRef {
                    name: r.name.clone(),
                    config: r
                        .config
                        .as_ref()
                        .map(|c| c.to_string())
                        .unwrap_or_else(|| "{}".to_string()),
                }
            })
        };
        PluginRefs {
            balancer: one(&p.balancer, "balancer"),
            health: one(&p.health, "health"),
            retry: one(&p.retry, "retry"),
            rate_limit: one(&p.rate_limit, "rate_limit"),
        }
    }
}

pub(super) fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// `500`, `"500"` or `"500-599"` -> inclusive range.
pub(super) fn parse_status_range(v: &serde_json::Value) -> Option<(u16, u16)> {
    let (lo, hi) = match v {
        serde_json::Value::Number(n) => {
            let c = u16::try_from(n.as_u64()?).ok()?;
            (c, c)
        }
        serde_json::Value::String(s) => match s.split_once('-') {
            Some((a, b)) => (a.trim().parse().ok()?, b.trim().parse().ok()?),
            None => {
                let c = s.trim().parse().ok()?;
                (c, c)
            }
        },
        _ => return None,
    };
    ((100..600).contains(&lo) && (100..600).contains(&hi) && lo <= hi).then_some((lo, hi))
}
