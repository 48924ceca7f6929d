//! Validation of `limits:` and `quota:`.

use std::time::Duration;

use super::{Validator, dur};
use crate::config::model::*;
use crate::config::raw::*;

impl Validator {
    pub(super) fn key(&mut self, key: &str, path: &str, gw: &GatewaySettings) -> Vec<KeyPart> {
        let mut parts = Vec::new();
        for piece in key.split(',').map(str::trim) {
            match piece {
                "remote_addr" => parts.push(KeyPart::RemoteAddr),
                "route" => parts.push(KeyPart::Route),
                // The verified client certificate's subject, set by mTLS listeners.
                "client_cert" => parts.push(KeyPart::Header(http::HeaderName::from_static(CLIENT_CERT_HEADER))),
                "consumer" => {
                    if gw.consumer_header.is_none() {
                        self.error(path, "key \"consumer\" needs gateway.consumer_header");
                    }
                    parts.push(KeyPart::Consumer)
                }
                other => match other.strip_prefix("header:") {
                    Some(h) => {
                        if let Some(name) = self.header_name(h, path) {
                            parts.push(KeyPart::Header(name));
                        }
                    }
                    None => self.error(
                        path,
                        format!("unknown key {other:?}; expected remote_addr, route, consumer, client_cert, header:<name> or a comma list"),
                    ),
                },
            }
        }
        parts
    }

    pub(super) fn policy(&mut self, p: &Option<String>, path: &str, gw: &GatewaySettings) -> CounterPolicy {
        match p.as_deref().unwrap_or("local") {
            "local" => CounterPolicy::Local,
            "redis" => {
                if gw.redis.is_none() {
                    self.error(path, "policy \"redis\" needs gateway.redis");
                }
                CounterPolicy::Redis
            }
            other => {
                self.error(path, format!("unknown policy {other:?}; expected one of local, redis"));
                CounterPolicy::Local
            }
        }
    }

    /// At least 10 ms: shorter intervals would turn every unit into a Redis load test.
    fn sync_interval(&mut self, d: Duration, path: &str) -> Duration {
        if d < Duration::from_millis(10) {
            self.error(path, "must be at least 10ms");
        }
        d
    }

    pub(super) fn store_failure(&mut self, s: &Option<String>, path: &str) -> StoreFailure {
        match s.as_deref().unwrap_or("degrade") {
            "degrade" => StoreFailure::Degrade,
            "fail_open" => StoreFailure::FailOpen,
            "fail_closed" => StoreFailure::FailClosed,
            other => {
                self.error(
                    path,
                    format!("unknown value {other:?}; expected one of degrade, fail_open, fail_closed"),
                );
                StoreFailure::Degrade
            }
        }
    }

    pub(super) fn limit(&mut self, l: &RawLimit, path: &str, index: usize, gw: &GatewaySettings) -> Option<LimitRule> {
        let key = self.key(&l.key, &format!("{path}.key"), gw);
        let algorithm = match l.algorithm.as_str() {
            "token_bucket" => {
                let rate = l.rate.unwrap_or(0.0);
                if rate <= 0.0 || !rate.is_finite() {
                    self.error(format!("{path}.rate"), "token_bucket needs rate > 0");
                }
                let burst = l.burst.unwrap_or(rate.max(1.0));
                if burst < 1.0 || !burst.is_finite() {
                    self.error(format!("{path}.burst"), "burst must be at least 1");
                }
                if l.count.is_some() || l.window.is_some() {
                    self.error(path, "count and window belong to sliding_window");
                }
                LimitAlgorithm::TokenBucket { rate, burst }
            }
            "sliding_window" => {
                let count = l.count.unwrap_or(0);
                if count == 0 {
                    self.error(format!("{path}.count"), "sliding_window needs count > 0");
                }
                let window = dur(&l.window, Duration::ZERO);
                if window.is_zero() {
                    self.error(format!("{path}.window"), "sliding_window needs window > 0");
                }
                if l.rate.is_some() || l.burst.is_some() {
                    self.error(path, "rate and burst belong to token_bucket");
                }
                LimitAlgorithm::SlidingWindow { count, window }
            }
            other => {
                self.error(
                    format!("{path}.algorithm"),
                    format!("unknown algorithm {other:?}; expected one of token_bucket, sliding_window"),
                );
                return None;
            }
        };
        Some(LimitRule {
            name: l.name.clone().unwrap_or_else(|| format!("limit-{index}")),
            key,
            algorithm,
            policy: self.policy(&l.policy, &format!("{path}.policy"), gw),
            shadow: l.shadow.unwrap_or(false),
            sync_interval: self.sync_interval(
                dur(&l.sync_interval, Duration::from_millis(100)),
                &format!("{path}.sync_interval"),
            ),
            on_store_failure: self.store_failure(&l.on_store_failure, &format!("{path}.on_store_failure")),
        })
    }

    pub(super) fn quota(&mut self, q: &RawQuota, path: &str, gw: &GatewaySettings) -> Option<QuotaRule> {
        let key = self.key(&q.key, &format!("{path}.key"), gw);
        if q.calls == 0 {
            self.error(format!("{path}.calls"), "must be greater than 0");
        }
        let period = match q.period.as_str() {
            "hour" => QuotaPeriod::Hour,
            "day" => QuotaPeriod::Day,
            "month" => QuotaPeriod::Month,
            other => {
                self.error(
                    format!("{path}.period"),
                    format!("unknown period {other:?}; expected one of hour, day, month"),
                );
                return None;
            }
        };
        let calendar = match q.alignment.as_deref().unwrap_or("calendar") {
            "calendar" => true,
            "rolling" => false,
            other => {
                self.error(
                    format!("{path}.alignment"),
                    format!("unknown value {other:?}; expected one of calendar, rolling"),
                );
                true
            }
        };
        Some(QuotaRule {
            key,
            calls: q.calls,
            period,
            calendar,
            policy: self.policy(&q.policy, &format!("{path}.policy"), gw),
            sync_interval: self.sync_interval(
                dur(&q.sync_interval, Duration::from_secs(1)),
                &format!("{path}.sync_interval"),
            ),
            on_store_failure: self.store_failure(&q.on_store_failure, &format!("{path}.on_store_failure")),
        })
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::config::{Overrides, load_str};

    fn errors(limits: &str) -> Vec<String> {
        let text = format!(
            r#"
gateway: {{ redis: {{ url: "redis://127.0.0.1:6379" }} }}
services:
  - name: a
    versions:
      - version: "1"
        routes: [ {{ uri: "/" }} ]
{limits}
gateway_groups:
  - {{ name: default, services: [ {{ service: a, version: "1", nodes: [ {{ host: h, port: 1 }} ] }} ] }}
"#
        );
        match load_str(&text, "t", &Overrides::default(), Path::new(".")) {
            Ok(_) => Vec::new(),
            Err(e) => e.errors().iter().map(|e| e.to_string()).collect(),
        }
    }

    #[test]
    fn redis_sync_interval_has_a_floor() {
        let errs = errors(
            "        limits: [ { key: route, algorithm: token_bucket, rate: 1, policy: redis, sync_interval: 1ms } ]",
        );
        assert_eq!(
            errs,
            ["services[0].versions[0].limits[0].sync_interval: must be at least 10ms"]
        );
        assert!(errors("        quota: { key: route, calls: 5, period: day, sync_interval: 0.5 }").is_empty());
    }

    #[test]
    fn too_many_rules() {
        let rule = "          - { key: route, algorithm: token_bucket, rate: 1 }\n";
        let mut limits = String::from("        limits:\n");
        for i in 0..33 {
            limits.push_str(&rule.replace("{ key", &format!("{{ name: r{i}, key")));
        }
        let errs = errors(&limits);
        assert_eq!(errs, ["services[0].versions[0].limits: at most 32 rules per version"]);
    }
}
