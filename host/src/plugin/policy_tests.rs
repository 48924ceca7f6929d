//! The health-evaluator and rate-limiter adapters against real components: what the
//! plugin decides, what the built-in decides when the plugin declines or fails, how the
//! two limiters combine, and where plugin counters live.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use super::bindings::types::{self as wit, LimitState, LimitVerdict};
use super::tests::{limits, registry, request, stats, wasm};
use super::*;
use crate::balance::testing::remote;
use crate::config::Overrides;
use crate::config::model::Node;
use crate::health::{self as h, FailureKind, NodeInfo, Verdict};
use crate::outcome::EndpointKey;
use crate::ratelimit::time::Clock;
use crate::ratelimit::{Decision, LimitRequest, RateHeaders, SharedCounters};

/// A built-in evaluator that always answers `verdict` (so a fallback is unmistakable).
#[derive(Debug)]
struct Fixed(Verdict);

impl HealthEvaluator for Fixed {
    fn name(&self) -> &str {
        "fixed"
    }

    fn evaluate(&self, _: &NodeInfo<'_>, _: &h::Observation) -> Verdict {
        self.0
    }
}

fn node_and_key() -> (Node, EndpointKey) {
    let node = Node {
        host: "10.0.0.1".into(),
        port: 80,
        weight: 1,
        zone: String::new(),
        region: String::new(),
        priority: 0,
        tags: vec![],
    };
    let key = EndpointKey {
        service: "svc".into(),
        authority: "10.0.0.1:80".into(),
    };
    (node, key)
}

fn seen(observed: h::Observed, ms: u64) -> h::Observation {
    h::Observation {
        source: h::Source::Passive,
        observed,
        latency: Duration::from_millis(ms),
        retry_after: None,
    }
}

#[test]
fn plugin_verdicts_map_to_host_verdicts_and_builtin_means_fallback() {
    use wit::{FailureKind as K, HealthVerdict as V};
    assert_eq!(health::verdict(V::Success), Some(Verdict::Success));
    assert_eq!(health::verdict(V::Ignore), Some(Verdict::Ignore));
    assert_eq!(
        health::verdict(V::Failure(K::Http)),
        Some(Verdict::Failure(FailureKind::Http))
    );
    assert_eq!(
        health::verdict(V::Failure(K::Tcp)),
        Some(Verdict::Failure(FailureKind::Tcp))
    );
    assert_eq!(
        health::verdict(V::Failure(K::Timeout)),
        Some(Verdict::Failure(FailureKind::Timeout))
    );
    assert_eq!(health::verdict(V::Builtin), None);
}

#[test]
fn observations_reach_the_plugin_as_hashes_and_microseconds() {
    let (node, key) = node_and_key();
    let info = NodeInfo { key: &key, node: &node };
    let o = health::observation(&info, &seen(h::Observed::Status(503), 12));
    assert_eq!(o.node, keys::hash(b"10.0.0.1:80"), "the SDK's key_hash(\"host:port\")");
    assert_eq!(o.source, wit::ObservationSource::Traffic);
    assert_eq!(o.observed, wit::Observed::Status(503));
    assert_eq!(o.latency_us, 12_000);
    let probe = h::Observation {
        source: h::Source::Active,
        ..seen(h::Observed::Connected, 0)
    };
    let o = health::observation(&info, &probe);
    assert_eq!(
        (o.source, o.observed),
        (wit::ObservationSource::Probe, wit::Observed::Connected)
    );
    let forever = health::observation(&info, &seen(h::Observed::Timeout, 10_000_000));
    assert_eq!(forever.latency_us, u32::MAX, "saturates instead of wrapping");
}

#[test]
fn the_health_adapter_takes_the_plugins_verdict_and_falls_back_on_builtin_and_absence() {
    let (reg, _dir) = registry();
    reg.load("lh", &wasm("latency_health"));
    let config = r#"{"max_latency_ms": 50, "window": 2, "min_samples": 2}"#;
    let use_ = reg.register_use("lh", Kind::HealthEvaluator, config, "svc", "1");
    let e = health::PluginEvaluator::new(use_, Arc::new(Fixed(Verdict::Ignore)));
    assert_eq!(e.name(), "lh");
    let (node, key) = node_and_key();
    let info = NodeInfo { key: &key, node: &node };
    let ok = |ms| seen(h::Observed::Status(200), ms);
    // One sample is not enough to judge: the plugin says `builtin`.
    assert_eq!(e.evaluate(&info, &ok(200)), Verdict::Ignore);
    // A slow median: the plugin's verdict, where the built-in would ignore it.
    assert_eq!(e.evaluate(&info, &ok(200)), Verdict::Failure(FailureKind::Timeout));
    // Errors are left to the built-in.
    assert_eq!(e.evaluate(&info, &seen(h::Observed::Reset, 1)), Verdict::Ignore);
    assert_eq!(stats(&reg, "lh").calls, 3);
    reg.sync_dir(); // the directory is empty: the file is gone
    assert_eq!(e.evaluate(&info, &ok(500)), Verdict::Ignore, "no plugin: the built-in");
}

#[test]
fn a_faulting_health_plugin_falls_back_to_the_builtin_verdict() {
    let (reg, _dir) = registry();
    reg.load("fh", &wasm("fault_health"));
    assert_eq!(reg.slot("fh").state(), "active", "passes validation");
    let use_ = reg.register_use("fh", Kind::HealthEvaluator, "{}", "svc", "1");
    let builtin = Verdict::Failure(FailureKind::Http);
    let e = health::PluginEvaluator::new(use_, Arc::new(Fixed(builtin)));
    let (node, key) = node_and_key();
    let info = NodeInfo { key: &key, node: &node };
    let limit = limits().fault_limit;
    for i in 1..=limit {
        assert_eq!(e.evaluate(&info, &seen(h::Observed::Status(503), 1)), builtin);
        let s = stats(&reg, "fh");
        assert_eq!(
            s.faults_of(FaultKind::Trap),
            u64::from(i),
            "{:?}",
            reg.slot("fh").last_error()
        );
    }
    assert_eq!(reg.slot("fh").state(), "disabled");
    let calls = stats(&reg, "fh").calls;
    assert_eq!(e.evaluate(&info, &seen(h::Observed::Status(200), 1)), builtin);
    assert_eq!(stats(&reg, "fh").calls, calls, "a disabled plugin is not called");
}

/// A built-in limiter that admits `admit` requests, then refuses, counting its calls.
#[derive(Debug)]
struct Budget {
    admit: u32,
    calls: AtomicU32,
    counters: Arc<SharedCounters>,
}

impl Budget {
    fn new(admit: u32) -> Arc<Self> {
        Arc::new(Self {
            admit,
            calls: AtomicU32::new(0),
            counters: Arc::new(SharedCounters::new(Arc::new(Clock::new()))),
        })
    }
}

impl RateLimiter for Budget {
    fn name(&self) -> &str {
        "budget"
    }

    fn check(&self, _: &LimitRequest<'_>) -> Decision {
        let n = self.calls.fetch_add(1, Ordering::Relaxed) + 1;
        let headers = RateHeaders {
            limit: u64::from(self.admit),
            remaining: u64::from(self.admit.saturating_sub(n)),
            reset: Duration::from_secs(10),
        };
        if n <= self.admit {
            Decision::Allow { headers: Some(headers) }
        } else {
            Decision::Limited {
                rule: "budget".into(),
                retry_after: Duration::from_secs(10),
                headers,
            }
        }
    }

    fn counters(&self) -> Option<Arc<SharedCounters>> {
        Some(self.counters.clone())
    }
}

fn check(l: &dyn RateLimiter, headers: &[(&str, &str)]) -> Decision {
    let parts = request(headers);
    l.check(&LimitRequest {
        method: &parts.method,
        uri: &parts.uri,
        headers: &parts.headers,
        remote: remote(),
        route: "r",
    })
}

#[test]
fn the_strictest_of_plugin_and_builtin_wins() {
    let rule: Arc<str> = "p".into();
    let state = |remaining| LimitState {
        limit: 10,
        remaining,
        reset_ms: 1500,
    };
    let allow = |remaining| Decision::Allow {
        headers: Some(RateHeaders {
            limit: 5,
            remaining,
            reset: Duration::from_secs(1),
        }),
    };
    let never = || -> Decision { panic!("a plugin refusal must not consult the built-in") };
    let Decision::Limited {
        rule: r,
        retry_after,
        headers,
    } = ratelimit::combine(&rule, Some(LimitVerdict::Deny(state(3))), never)
    else {
        panic!("a plugin refusal is a 429")
    };
    assert_eq!((&*r, retry_after), ("p", Duration::from_millis(1500)));
    assert_eq!((headers.limit, headers.remaining), (10, 0));
    // Both admit: the headers of the limit with fewer requests left.
    let d = ratelimit::combine(&rule, Some(LimitVerdict::Allow(Some(state(2)))), || allow(4));
    assert!(
        matches!(
            d,
            Decision::Allow {
                headers: Some(RateHeaders {
                    limit: 10,
                    remaining: 2,
                    ..
                })
            }
        ),
        "{d:?}"
    );
    let d = ratelimit::combine(&rule, Some(LimitVerdict::Allow(Some(state(9)))), || allow(4));
    assert!(
        matches!(
            d,
            Decision::Allow {
                headers: Some(RateHeaders {
                    limit: 5,
                    remaining: 4,
                    ..
                })
            }
        ),
        "{d:?}"
    );
    let d = ratelimit::combine(&rule, Some(LimitVerdict::Allow(Some(state(9)))), || Decision::Allow {
        headers: None,
    });
    assert!(
        matches!(
            d,
            Decision::Allow {
                headers: Some(RateHeaders { limit: 10, .. })
            }
        ),
        "{d:?}"
    );
    let d = ratelimit::combine(&rule, Some(LimitVerdict::Allow(None)), || allow(4));
    assert_eq!(d, allow(4));
    // The built-in refuses what the plugin admitted: its refusal stands.
    let quota = || Decision::QuotaExceeded {
        rule: "quota".into(),
        retry_after: Duration::from_secs(60),
    };
    assert_eq!(
        ratelimit::combine(&rule, Some(LimitVerdict::Allow(Some(state(9)))), quota),
        quota()
    );
    // No usable plugin, or a fault: the built-in alone.
    assert_eq!(ratelimit::combine(&rule, None, quota), quota());
}

#[test]
fn the_tenant_limiter_refuses_one_tenant_and_the_builtin_still_applies() {
    let (reg, _dir) = registry();
    reg.load("tl", &wasm("tenant_limit"));
    let config = r#"{"default_limit": 2, "window_ms": 3600000}"#;
    let builtin = Budget::new(5);
    let use_ = reg.register_use("tl", Kind::RateLimiter, config, "svc", "1");
    let l = ratelimit::PluginRateLimiter::new(use_, builtin.clone());
    assert_eq!(l.name(), "tl");
    assert!(Arc::ptr_eq(&l.counters().unwrap(), &builtin.counters));
    let acme = [("x-tenant", "acme")];
    assert!(matches!(check(&l, &acme), Decision::Allow { .. }));
    assert!(matches!(check(&l, &acme), Decision::Allow { .. }));
    let Decision::Limited { rule, .. } = check(&l, &acme) else {
        panic!("acme is past its limit of 2")
    };
    assert_eq!(&*rule, "tl");
    assert_eq!(
        builtin.calls.load(Ordering::Relaxed),
        2,
        "the plugin's refusal cost the built-in nothing"
    );
    // Another tenant is unaffected by acme, but the built-in's 5 are shared.
    let other = [("x-tenant", "other")];
    assert!(matches!(check(&l, &other), Decision::Allow { .. }));
    assert!(matches!(check(&l, &other), Decision::Allow { .. }));
    let third = [("x-tenant", "third")];
    assert!(matches!(check(&l, &third), Decision::Allow { .. }));
    let Decision::Limited { rule, .. } = check(&l, &third) else {
        panic!("the built-in's budget of 5 is spent")
    };
    assert_eq!(&*rule, "budget");
}

#[test]
fn a_faulting_rate_limit_plugin_leaves_requests_to_the_builtin() {
    let (reg, _dir) = registry();
    reg.load("fl", &wasm("fault_limit"));
    assert_eq!(reg.slot("fl").state(), "active", "passes validation");
    let builtin = Budget::new(100);
    let use_ = reg.register_use("fl", Kind::RateLimiter, "{}", "svc", "1");
    let l = ratelimit::PluginRateLimiter::new(use_, builtin.clone());
    assert!(
        matches!(check(&l, &[]), Decision::Limited { .. }),
        "the fixture refuses"
    );
    assert_eq!(builtin.calls.load(Ordering::Relaxed), 0);
    let limit = limits().fault_limit;
    for i in 1..=limit {
        assert!(matches!(
            check(&l, &[("x-fault", "1")]),
            Decision::Allow {
                headers: Some(RateHeaders { limit: 100, .. })
            }
        ));
        assert_eq!(stats(&reg, "fl").faults_of(FaultKind::Trap), u64::from(i));
    }
    assert_eq!(reg.slot("fl").state(), "disabled");
    assert!(
        matches!(check(&l, &[]), Decision::Allow { .. }),
        "disabled: the built-in alone"
    );
    assert_eq!(builtin.calls.load(Ordering::Relaxed), limit + 1);
}

#[test]
fn plugin_counters_are_the_gateways_and_separate_per_service() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("tl.wasm"), wasm("tenant_limit")).unwrap();
    let rt = PluginRuntime::start_with(
        PluginEngine::shared().unwrap(),
        PluginSettings {
            dir: dir.path().to_path_buf(),
            cache_dir: None,
            limits: limits(),
            rescan: Duration::from_secs(3600),
            cancel: Default::default(),
            events: Arc::default(),
            placement: Default::default(),
        },
    )
    .unwrap();
    let yaml = r#"
services:
  - name: web
    versions:
      - version: "1"
        routes: [ { uri: "/web/*" } ]
        plugins: { rate_limit: { name: tl, config: { default_limit: 1, window_ms: 3600000 } } }
      - version: "2"
        routes: [ { uri: "/web/*" } ]
        plugins: { rate_limit: { name: tl, config: { default_limit: 1, window_ms: 3600000 } } }
  - name: api
    versions:
      - version: "1"
        routes: [ { uri: "/api/*" } ]
        plugins: { rate_limit: { name: tl, config: { default_limit: 1, window_ms: 3600000 } } }
gateway_groups:
  - { name: default, services: [ { service: web, version: "1", nodes: [ { host: h, port: 1 } ] } ] }
"#;
    let cfg = crate::config::load_str(yaml, "t", &Overrides::default(), Path::new("."))
        .unwrap()
        .config;
    let builtin = Budget::new(100);
    let limiter = |service: &str, i: usize| {
        let version = &cfg.services[service].versions[i];
        PolicyHooks::rate_limiter(&*rt, version, builtin.clone())
    };
    let (web1, web2, api) = (limiter("web", 0), limiter("web", 1), limiter("api", 0));
    assert!(
        Arc::ptr_eq(&rt.counters().current(), &builtin.counters),
        "the built-in's counters are bound"
    );
    let acme = [("x-tenant", "acme")];
    assert!(matches!(check(&*web1, &acme), Decision::Allow { .. }));
    assert!(
        matches!(check(&*web2, &acme), Decision::Limited { .. }),
        "versions of one service share counts"
    );
    assert!(
        matches!(check(&*api, &acme), Decision::Allow { .. }),
        "another service counts separately"
    );
    let window = Duration::from_millis(3_600_000);
    let tenant = format!("{:016x}", keys::hash(b"acme"));
    assert_eq!(builtin.counters.get("tl/web", &tenant, window), 2);
    assert_eq!(builtin.counters.get("tl/api", &tenant, window), 1);
}
