//! Validation of `upstream:`: balancer, timeouts, retries, zones, health checks, breakers.

use std::time::Duration;

use super::{Validator, defaults, dur, parse_status_range};
use crate::config::model::*;
use crate::config::raw::*;
use crate::outcome::GrpcCodes;

/// gRPC codes a passive check counts as failures by default: unknown,
/// deadline_exceeded, resource_exhausted, internal, unavailable, data_loss.
const DEFAULT_UNHEALTHY_GRPC: [u8; 6] = [2, 4, 8, 13, 14, 15];

impl Validator {
    pub(super) fn upstream(&mut self, u: &RawUpstream, path: &str, gw: &GatewaySettings) -> UpstreamPolicy {
        let balancer = self.choice(
            u.kind.as_deref(),
            "roundrobin",
            &[
                ("roundrobin", BalancerKind::RoundRobin),
                ("chash", BalancerKind::Chash),
                ("ewma", BalancerKind::Ewma),
                ("least_conn", BalancerKind::LeastConn),
            ],
            || format!("{path}.type"),
            "balancer",
        );
        let hash_key = self.hash_key(u, path, balancer);
        let pass_host = self.pass_host(u, path);
        let timeouts = self.timeouts(u, path);
        let retry = self.retry(u, path);
        let (zone_routing, min_local_share, priority_failover) = self.zones(u, path, gw);
        let slow_start = self.slow_start(u, path);
        let checks = self.checks(u.checks.as_ref(), &format!("{path}.checks"));
        let breaker = u
            .circuit_breaker
            .as_ref()
            .map(|cb| {
                cb.rules
                    .iter()
                    .enumerate()
                    .filter_map(|(i, r)| self.breaker_rule(r, &format!("{path}.circuit_breaker.rules[{i}]"), i))
                    .collect()
            })
            .unwrap_or_default();
        let (panic_threshold, on_panic) = self.panic(u, path);
        let (scheme, tls) = self.upstream_scheme(u, path);
        UpstreamPolicy {
            balancer,
            scheme,
            tls,
            hash_key,
            pass_host,
            timeouts,
            retry,
            zone_routing,
            min_local_share,
            priority_failover,
            slow_start,
            checks,
            breaker,
            panic_threshold,
            on_panic,
        }
    }

    pub(super) fn hash_key(&mut self, u: &RawUpstream, path: &str, balancer: BalancerKind) -> HashKey {
        if balancer != BalancerKind::Chash {
            if u.hash_on.is_some() || u.key.is_some() {
                let field = if u.hash_on.is_some() { "hash_on" } else { "key" };
                self.error(format!("{path}.{field}"), "only allowed with type: chash");
            }
            return HashKey::RemoteAddr;
        }
        let key = u.key.as_deref().unwrap_or("");
        match u.hash_on.as_deref().unwrap_or("vars") {
            "vars" => match if key.is_empty() { "remote_addr" } else { key } {
                "remote_addr" => HashKey::RemoteAddr,
                "uri" => HashKey::Uri,
                "host" => HashKey::Host,
                "client_cert" => HashKey::Header(http::HeaderName::from_static(CLIENT_CERT_HEADER)),
                other => {
                    self.error(
                        format!("{path}.key"),
                        format!("unknown variable {other:?}; expected one of remote_addr, uri, host, client_cert"),
                    );
                    HashKey::RemoteAddr
                }
            },
            kind @ ("header" | "cookie" | "query") => {
                if key.is_empty() {
                    self.error(format!("{path}.key"), format!("required when hash_on is {kind:?}"));
                    return HashKey::RemoteAddr;
                }
                match kind {
                    "header" => self
                        .header_name(key, &format!("{path}.key"))
                        .map(HashKey::Header)
                        .unwrap_or(HashKey::RemoteAddr),
                    "cookie" => HashKey::Cookie(key.to_string()),
                    _ => HashKey::Query(key.to_string()),
                }
            }
            other => {
                self.error(
                    format!("{path}.hash_on"),
                    format!("unknown value {other:?}; expected one of vars, header, cookie, query"),
                );
                HashKey::RemoteAddr
            }
        }
    }

    pub(super) fn retry(&mut self, u: &RawUpstream, path: &str) -> RetryPolicyConfig {
        let r = u.retry.clone().unwrap_or_default();
        let rp = format!("{path}.retry");
        let mut on = RetryOn::default();
        match &r.retry_on {
            None => {
                on.connect_failure = true;
                on.reset = true;
                on.timeout = true;
            }
            Some(list) => {
                for (i, item) in list.iter().enumerate() {
                    let ip = format!("{rp}.retry_on[{i}]");
                    match item {
                        serde_json::Value::String(s) => match s.as_str() {
                            "connect_failure" => on.connect_failure = true,
                            "reset" => on.reset = true,
                            "timeout" => on.timeout = true,
                            "5xx" => on.any_5xx = true,
                            "gateway_error" => on.gateway_error = true,
                            other => match (other.parse::<u16>(), retry_grpc_code(other)) {
                                (Ok(code), _) if (100..600).contains(&code) => on.statuses.push(code),
                                (_, Some(code)) => on.grpc = GrpcCodes(on.grpc.0 | 1 << code),
                                _ => self.error(
                                    ip,
                                    format!(
                                        "unknown retry condition {other:?}; expected one of connect_failure, reset, timeout, 5xx, gateway_error, a status code, or a gRPC status: cancelled, deadline_exceeded, internal, resource_exhausted, unavailable"
                                    ),
                                ),
                            },
                        },
                        serde_json::Value::Number(n) => match n.as_u64() {
                            Some(code) if (100..600).contains(&code) => on.statuses.push(code as u16),
                            _ => self.error(ip, format!("{n} is not an HTTP status code")),
                        },
                        other => self.error(ip, format!("expected a condition name or status code, found {other}")),
                    }
                }
            }
        }
        let budget_percent = r.budget_percent.unwrap_or(20.0);
        if !(0.0..=100.0).contains(&budget_percent) {
            self.error(
                format!("{rp}.budget_percent"),
                format!("{budget_percent} is not a percentage (0-100)"),
            );
        }
        let backoff_base = dur(&r.backoff_base, Duration::from_millis(25));
        let backoff_max = dur(&r.backoff_max, Duration::from_millis(250));
        if backoff_max < backoff_base {
            self.error(format!("{rp}.backoff_max"), "must not be smaller than backoff_base");
        }
        RetryPolicyConfig {
            retries: u.retries.unwrap_or(defaults::RETRIES),
            retry_timeout: u.retry_timeout.as_ref().map(|d| d.value).filter(|d| !d.is_zero()),
            retry_on: on,
            backoff_base,
            backoff_max,
            retry_after_max: dur(&r.retry_after_max, Duration::from_secs(10)),
            budget_percent,
            budget_min_concurrent: r.budget_min_concurrent.unwrap_or(3),
            max_replay_body: r.max_replay_body.unwrap_or(defaults::MAX_REPLAY_BODY),
        }
    }

    pub(super) fn statuses(&mut self, list: &Option<Vec<u16>>, default: &[u16], path: &str) -> Vec<u16> {
        match list {
            None => default.to_vec(),
            Some(l) => {
                for (i, s) in l.iter().enumerate() {
                    if !(100..600).contains(s) {
                        self.error(format!("{path}[{i}]"), format!("{s} is not an HTTP status code"));
                    }
                }
                l.clone()
            }
        }
    }

    /// `pass_host` and `upstream_host` at `path`.
    fn pass_host(&mut self, u: &RawUpstream, path: &str) -> PassHost {
        match (u.pass_host.as_deref().unwrap_or("pass"), &u.upstream_host) {
            ("pass", None) => PassHost::Pass,
            ("node", None) => PassHost::Node,
            ("rewrite", Some(h)) => match http::HeaderValue::from_str(h) {
                Ok(v) if !h.is_empty() => PassHost::Rewrite(v),
                _ => {
                    self.error(format!("{path}.upstream_host"), format!("invalid host {h:?}"));
                    PassHost::Pass
                }
            },
            ("rewrite", None) => {
                self.error(
                    format!("{path}.upstream_host"),
                    "required when pass_host is \"rewrite\"",
                );
                PassHost::Pass
            }
            ("pass" | "node", Some(_)) => {
                self.error(format!("{path}.upstream_host"), "only allowed with pass_host: rewrite");
                PassHost::Pass
            }
            (other, _) => {
                self.error(
                    format!("{path}.pass_host"),
                    format!("unknown value {other:?}; expected one of pass, node, rewrite"),
                );
                PassHost::Pass
            }
        }
    }

    /// `timeout` at `path`.
    fn timeouts(&mut self, u: &RawUpstream, path: &str) -> Timeouts {
        let t = u.timeout.clone().unwrap_or_default();
        Timeouts {
            connect: self.positive(
                dur(&t.connect, defaults::CONNECT_TIMEOUT),
                &format!("{path}.timeout.connect"),
            ),
            send: self.positive(dur(&t.send, defaults::SEND_TIMEOUT), &format!("{path}.timeout.send")),
            read: self.positive(dur(&t.read, defaults::READ_TIMEOUT), &format!("{path}.timeout.read")),
        }
    }

    /// `zone_routing`, `min_local_share` and `priority_failover` at `path`.
    fn zones(&mut self, u: &RawUpstream, path: &str, gw: &GatewaySettings) -> (ZoneRouting, f64, PriorityFailover) {
        // Without a zone of its own the gateway has nothing to prefer.
        let zone_default = if gw.zone.is_empty() { "off" } else { "prefer_local" };
        let zone_routing = self.choice(
            u.zone_routing.as_deref(),
            zone_default,
            &[
                ("prefer_local", ZoneRouting::PreferLocal),
                ("local_only", ZoneRouting::LocalOnly),
                ("off", ZoneRouting::Off),
            ],
            || format!("{path}.zone_routing"),
            "value",
        );
        let min_local_share = u.min_local_share.unwrap_or(0.5);
        if !(0.0..=1.0).contains(&min_local_share) {
            self.error(
                format!("{path}.min_local_share"),
                format!("{min_local_share} is not between 0 and 1"),
            );
        }
        let priority_failover = self.choice(
            u.priority_failover.as_deref(),
            "graceful",
            &[
                ("graceful", PriorityFailover::Graceful),
                ("backup", PriorityFailover::Backup),
            ],
            || format!("{path}.priority_failover"),
            "value",
        );
        (zone_routing, min_local_share, priority_failover)
    }

    /// `panic_threshold` and `on_panic` at `path`.
    fn panic(&mut self, u: &RawUpstream, path: &str) -> (f64, OnPanic) {
        let panic_threshold = u.panic_threshold.unwrap_or(0.0);
        if !(0.0..=100.0).contains(&panic_threshold) {
            self.error(
                format!("{path}.panic_threshold"),
                format!("{panic_threshold} is not a percentage (0-100)"),
            );
        }
        let on_panic = self.choice(
            u.on_panic.as_deref(),
            "fail_open",
            &[("fail_open", OnPanic::FailOpen), ("fail", OnPanic::Fail)],
            || format!("{path}.on_panic"),
            "value",
        );
        (panic_threshold, on_panic)
    }

    /// `slow_start` at `path`.
    fn slow_start(&mut self, u: &RawUpstream, path: &str) -> SlowStart {
        let ss = u.slow_start.clone().unwrap_or_default();
        let min_weight = ss.min_weight_percent.unwrap_or(10.0);
        if !(0.0..=100.0).contains(&min_weight) {
            self.error(
                format!("{path}.slow_start.min_weight_percent"),
                format!("{min_weight} is not between 0 and 100"),
            );
        }
        SlowStart {
            window: dur(&ss.window, Duration::ZERO),
            min_weight: min_weight / 100.0,
        }
    }

    /// `checks.active` at `ap`.
    fn active_check(&mut self, a: &RawActiveCheck, ap: &str) -> ActiveCheck {
        let kind = self.choice(
            a.kind.as_deref(),
            "http",
            &[
                ("http", ProbeKind::Http),
                ("https", ProbeKind::Https),
                ("tcp", ProbeKind::Tcp),
                ("grpc", ProbeKind::Grpc),
            ],
            || format!("{ap}.type"),
            "probe type",
        );
        let h = a.healthy.clone().unwrap_or_default();
        let u = a.unhealthy.clone().unwrap_or_default();
        let http_path = a.http_path.clone().unwrap_or_else(|| "/".to_string());
        if !http_path.starts_with('/') {
            self.error(format!("{ap}.http_path"), format!("{http_path:?} must start with '/'"));
        }
        let http_method = match http::Method::from_bytes(a.http_method.as_deref().unwrap_or("GET").as_bytes()) {
            Ok(m) => m,
            Err(_) => {
                self.error(format!("{ap}.http_method"), "invalid HTTP method");
                http::Method::GET
            }
        };
        let req_headers = a
            .req_headers
            .iter()
            .flatten()
            .enumerate()
            .filter_map(|(i, line)| {
                let parsed = line.split_once(':').and_then(|(n, v)| {
                    Some((
                        http::HeaderName::from_bytes(n.trim().as_bytes()).ok()?,
                        http::HeaderValue::from_str(v.trim()).ok()?,
                    ))
                });
                if parsed.is_none() {
                    self.error(
                        format!("{ap}.req_headers[{i}]"),
                        format!("expected \"Name: value\", found {line:?}"),
                    );
                }
                parsed
            })
            .collect();
        let successes = h.successes.unwrap_or(2);
        let counts = [
            ("healthy.successes", successes),
            ("unhealthy.http_failures", u.http_failures.unwrap_or(5)),
            ("unhealthy.tcp_failures", u.tcp_failures.unwrap_or(2)),
            ("unhealthy.timeouts", u.timeouts.unwrap_or(3)),
        ];
        for (field, n) in counts {
            if !(1..=254).contains(&n) {
                self.error(format!("{ap}.{field}"), format!("{n} is not between 1 and 254"));
            }
        }
        ActiveCheck {
            kind,
            timeout: self.positive(dur(&a.timeout, Duration::from_secs(1)), &format!("{ap}.timeout")),
            concurrency: a.concurrency.unwrap_or(10).max(1),
            http_method,
            http_path,
            host: a.host.clone(),
            port: a.port,
            req_headers,
            healthy_interval: self.positive(
                dur(&h.interval, Duration::from_secs(1)),
                &format!("{ap}.healthy.interval"),
            ),
            healthy_successes: successes,
            healthy_statuses: self.statuses(&h.http_statuses, &[200, 302], &format!("{ap}.healthy.http_statuses")),
            unhealthy_interval: self.positive(
                dur(&u.interval, Duration::from_secs(1)),
                &format!("{ap}.unhealthy.interval"),
            ),
            unhealthy_http_failures: u.http_failures.unwrap_or(5),
            unhealthy_tcp_failures: u.tcp_failures.unwrap_or(2),
            unhealthy_timeouts: u.timeouts.unwrap_or(3),
            unhealthy_statuses: self.statuses(
                &u.http_statuses,
                &[429, 404, 500, 501, 502, 503, 504, 505],
                &format!("{ap}.unhealthy.http_statuses"),
            ),
            https_verify_certificate: a.https_verify_certificate.unwrap_or(true),
            grpc_service: a.grpc_service.clone().unwrap_or_default(),
        }
    }

    /// gRPC status names at `path` (or `default`).
    fn grpc_codes(&mut self, names: Option<&[String]>, default: &[u8], path: &str) -> GrpcCodes {
        let Some(names) = names else {
            return GrpcCodes::new(default);
        };
        let codes: Vec<u8> = names
            .iter()
            .enumerate()
            .filter_map(|(i, n)| {
                let code = crate::outcome::grpc_code(n);
                if code.is_none() {
                    self.error(
                        format!("{path}[{i}]"),
                        format!("unknown gRPC status {n:?}; expected a name such as unavailable or internal"),
                    );
                }
                code
            })
            .collect();
        GrpcCodes::new(&codes)
    }

    /// `checks.passive` at `pp`.
    fn passive_check(&mut self, p: &RawPassiveCheck, pp: &str) -> PassiveCheck {
        let h = p.healthy.clone().unwrap_or_default();
        let u = p.unhealthy.clone().unwrap_or_default();
        let base = dur(&p.base_ejection_time, Duration::from_secs(30));
        let max = dur(&p.max_ejection_time, Duration::from_secs(300).max(base));
        if max < base {
            self.error(
                format!("{pp}.max_ejection_time"),
                "must not be smaller than base_ejection_time",
            );
        }
        let mut healthy_statuses: Vec<u16> = (200..=208).collect();
        healthy_statuses.push(226);
        healthy_statuses.extend(300..=308);
        let kind = self.choice(
            p.kind.as_deref(),
            "http",
            &[
                ("http", PassiveKind::Http),
                ("https", PassiveKind::Https),
                ("tcp", PassiveKind::Tcp),
            ],
            || format!("{pp}.type"),
            "passive check type",
        );
        PassiveCheck {
            kind,
            healthy_statuses: self.statuses(
                &h.http_statuses,
                &healthy_statuses,
                &format!("{pp}.healthy.http_statuses"),
            ),
            healthy_successes: h.successes.unwrap_or(5),
            unhealthy_statuses: self.statuses(
                &u.http_statuses,
                &[429, 500, 503],
                &format!("{pp}.unhealthy.http_statuses"),
            ),
            unhealthy_http_failures: u.http_failures.unwrap_or(5),
            unhealthy_tcp_failures: u.tcp_failures.unwrap_or(2),
            unhealthy_timeouts: u.timeouts.unwrap_or(7),
            unhealthy_grpc_statuses: self.grpc_codes(
                u.grpc_statuses.as_deref(),
                &DEFAULT_UNHEALTHY_GRPC,
                &format!("{pp}.unhealthy.grpc_statuses"),
            ),
            base_ejection_time: self.positive(base, &format!("{pp}.base_ejection_time")),
            max_ejection_time: max,
        }
    }

    pub(super) fn checks(&mut self, c: Option<&RawChecks>, path: &str) -> Checks {
        let Some(c) = c else { return Checks::default() };
        let active = c
            .active
            .as_ref()
            .map(|a| self.active_check(a, &format!("{path}.active")));
        let passive = c
            .passive
            .as_ref()
            .map(|p| self.passive_check(p, &format!("{path}.passive")));
        Checks { active, passive }
    }

    pub(super) fn breaker_rule(&mut self, r: &RawBreakerRule, path: &str, index: usize) -> Option<BreakerRule> {
        let condition = match (r.count, r.percentage) {
            (Some(n), None) if n > 0 => TripCondition::Count(n),
            (None, Some(p)) if p > 0.0 && p <= 100.0 => TripCondition::Percentage {
                percent: p,
                min_requests: r.min_requests.unwrap_or(10).max(1),
            },
            (Some(_), Some(_)) => {
                self.error(path, "set either count or percentage, not both");
                return None;
            }
            (None, None) => {
                self.error(path, "a rule needs count or percentage");
                return None;
            }
            _ => {
                self.error(path, "count must be > 0 and percentage in (0, 100]");
                return None;
            }
        };
        let mut status_ranges = Vec::new();
        let default_codes = [serde_json::json!("500-599")];
        let codes = r.status_codes.as_deref().unwrap_or(&default_codes);
        for (i, c) in codes.iter().enumerate() {
            match parse_status_range(c) {
                Some(range) => status_ranges.push(range),
                None => self.error(
                    format!("{path}.status_codes[{i}]"),
                    format!("expected a status code or a range like \"500-599\", found {c}"),
                ),
            }
        }
        let mut errors = Vec::new();
        let default_errors = [
            "connect_failure".to_string(),
            "timeout".to_string(),
            "reset".to_string(),
        ];
        for (i, e) in r.errors.as_deref().unwrap_or(&default_errors).iter().enumerate() {
            match e.as_str() {
                "connect_failure" => errors.push(ErrorClass::ConnectFailure),
                "timeout" => errors.push(ErrorClass::Timeout),
                "reset" => errors.push(ErrorClass::Reset),
                other => self.error(
                    format!("{path}.errors[{i}]"),
                    format!("unknown error class {other:?}; expected one of connect_failure, timeout, reset"),
                ),
            }
        }
        Some(BreakerRule {
            name: r.name.clone().unwrap_or_else(|| format!("rule-{index}")),
            condition,
            interval: self.positive(dur(&r.interval, Duration::from_secs(10)), &format!("{path}.interval")),
            status_ranges,
            errors,
            trip_duration: self.positive(
                dur(&r.trip_duration, Duration::from_secs(30)),
                &format!("{path}.trip_duration"),
            ),
            accept_retry_after: r.accept_retry_after.unwrap_or(false),
        })
    }
}

/// The gRPC statuses `retry_on` accepts (Envoy's `retry_on` gRPC names, with `_`
/// or `-`).
fn retry_grpc_code(name: &str) -> Option<u8> {
    crate::outcome::grpc_code(name).filter(|c| matches!(c, 1 | 4 | 8 | 13 | 14))
}
