//! Per-tenant rate limiter: the tenant comes from a request header, each tenant's limit
//! from the config (`tenants`, else `default_limit`) per fixed window of `window_ms`.
//! Counts are host counters, so the limit holds across every worker thread and instance
//! of the gateway. Requests without the header share one anonymous bucket (or are all
//! allowed, or all denied: `anonymous`).

use std::collections::HashMap;

use gatehouse_plugin_sdk::{
    LimitRequest, LimitState, LimitVerdict, RateLimiter, RequestKey, export_plugin, host, key_hash,
};
use serde::Deserialize;

/// `plugins.rate_limit.config`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    /// The header naming the tenant.
    #[serde(default = "default_header")]
    header: String,
    /// Window length.
    #[serde(default = "default_window")]
    window_ms: u32,
    /// Requests per window for tenants not listed.
    default_limit: u32,
    /// Tenant -> requests per window.
    #[serde(default)]
    tenants: HashMap<String, u32>,
    /// Requests without the header: `shared` (one bucket at `default_limit`), `allow`, `deny`.
    #[serde(default)]
    anonymous: Anonymous,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Anonymous {
    #[default]
    Shared,
    Allow,
    Deny,
}

fn default_header() -> String {
    "x-tenant".into()
}
fn default_window() -> u32 {
    1000
}

/// Counter key of the anonymous bucket (no tenant hash is 0).
const ANONYMOUS: u64 = 0;

struct TenantLimit {
    header: String,
    window_ms: u32,
    default_limit: u32,
    limits: HashMap<u64, u32>,
    anonymous: Anonymous,
}

impl RateLimiter for TenantLimit {
    type Config = Config;

    fn new(c: Config) -> Result<Self, String> {
        if c.window_ms == 0 {
            return Err("window_ms must be positive".into());
        }
        if c.header.is_empty() {
            return Err("header must not be empty".into());
        }
        Ok(Self {
            header: c.header,
            window_ms: c.window_ms,
            default_limit: c.default_limit,
            limits: c.tenants.iter().map(|(t, l)| (key_hash(t), *l)).collect(),
            anonymous: c.anonymous,
        })
    }

    fn keys(&self) -> Vec<RequestKey> {
        vec![RequestKey::Header(self.header.clone())]
    }

    fn check(&mut self, req: &LimitRequest) -> LimitVerdict {
        let (bucket, limit) = match (req.key(0), self.anonymous) {
            (Some(tenant), _) => (tenant, self.limits.get(&tenant).copied().unwrap_or(self.default_limit)),
            (None, Anonymous::Allow) => return LimitVerdict::Allow(None),
            (None, Anonymous::Deny) => {
                return LimitVerdict::Deny(LimitState {
                    limit: 0,
                    remaining: 0,
                    reset_ms: self.window_ms,
                });
            }
            (None, Anonymous::Shared) => (ANONYMOUS, self.default_limit),
        };
        let w = host::counter_add(bucket, 1, self.window_ms);
        let used = u32::try_from(w.count.max(0)).unwrap_or(u32::MAX);
        let state = LimitState {
            limit,
            remaining: limit.saturating_sub(used),
            reset_ms: w.reset_ms,
        };
        if used > limit {
            LimitVerdict::Deny(state)
        } else {
            LimitVerdict::Allow(Some(state))
        }
    }
}

export_plugin!(rate_limiter: TenantLimit);

#[cfg(test)]
mod tests {
    use super::*;
    use gatehouse_plugin_sdk::testing::{self, LimiterHarness};

    fn harness(config: &str) -> LimiterHarness<TenantLimit> {
        testing::reset();
        LimiterHarness::new(config).unwrap()
    }

    fn as_tenant(t: &str) -> LimitRequest {
        LimitRequest::with_keys(vec![key_hash(t)])
    }

    fn allowed(h: &mut LimiterHarness<TenantLimit>, req: &LimitRequest, n: usize) -> usize {
        (0..n)
            .filter(|_| matches!(h.check(req), LimitVerdict::Allow(_)))
            .count()
    }

    #[test]
    fn each_tenant_gets_its_own_limit() {
        let mut h = harness(r#"{"default_limit": 3, "tenants": {"acme": 5, "free": 1}}"#);
        assert_eq!(h.keys(), vec![RequestKey::Header("x-tenant".into())]);
        assert_eq!(allowed(&mut h, &as_tenant("acme"), 10), 5);
        assert_eq!(allowed(&mut h, &as_tenant("free"), 10), 1);
        assert_eq!(allowed(&mut h, &as_tenant("someone"), 10), 3);
        assert_eq!(allowed(&mut h, &as_tenant("other"), 10), 3);
    }

    #[test]
    fn denials_say_when_to_come_back_and_windows_reset() {
        let mut h = harness(r#"{"default_limit": 2, "window_ms": 1000}"#);
        let r = as_tenant("t");
        assert!(matches!(
            h.check(&r),
            LimitVerdict::Allow(Some(LimitState {
                limit: 2,
                remaining: 1,
                ..
            }))
        ));
        assert!(matches!(
            h.check(&r),
            LimitVerdict::Allow(Some(LimitState { remaining: 0, .. }))
        ));
        match h.check(&r) {
            LimitVerdict::Deny(s) => assert!(s.reset_ms > 0 && s.reset_ms <= 1000 && s.remaining == 0),
            v => panic!("expected a denial, got {v:?}"),
        }
        testing::advance_ms(1000);
        assert_eq!(allowed(&mut h, &r, 5), 2);
    }

    #[test]
    fn anonymous_requests_follow_the_policy() {
        let none = LimitRequest::with_keys(vec![0]);
        let mut shared = harness(r#"{"default_limit": 2}"#);
        assert_eq!(allowed(&mut shared, &none, 5), 2);
        let mut allow = harness(r#"{"default_limit": 2, "anonymous": "allow"}"#);
        assert_eq!(allowed(&mut allow, &none, 5), 5);
        let mut deny = harness(r#"{"default_limit": 2, "anonymous": "deny"}"#);
        assert_eq!(allowed(&mut deny, &none, 5), 0);
    }

    #[test]
    fn a_custom_header_is_asked_for() {
        let h = harness(r#"{"default_limit": 1, "header": "x-api-key"}"#);
        assert_eq!(h.keys(), vec![RequestKey::Header("x-api-key".into())]);
    }

    #[test]
    fn rejects_bad_configs() {
        for bad in [
            "{}",
            r#"{"default_limit": 1, "window_ms": 0}"#,
            r#"{"default_limit": 1, "anonymous": "maybe"}"#,
            r#"{"default_limit": 1, "header": ""}"#,
        ] {
            assert!(LimiterHarness::<TenantLimit>::new(bad).is_err(), "{bad}");
        }
    }
}
