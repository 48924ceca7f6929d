//! Runtime tests against real components: the example plugins (`plugins/`) and the fault
//! fixtures (`tests/plugins/`), both built by `scripts/build-plugins.sh`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use super::counters::HostCounters;
use super::registry::{Host, Registry};
use super::*;
use crate::balance::roundrobin::RoundRobin;
use crate::balance::testing::{all, endpoints, remote};
use crate::balance::{NodeSet, PickContext, RequestView};
use crate::config::model::{RetryOn, RetryPolicyConfig};
use crate::outcome::Outcome;
use crate::retry::{BuiltinRetry, RetryContext, RetryDecision};

/// The bytes of `name.wasm` from the example plugins or the fixtures.
pub(crate) fn wasm(name: &str) -> Vec<u8> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    for dir in ["plugins", "tests/plugins"] {
        let p = root
            .join(dir)
            .join("target/wasm32-wasip2/release")
            .join(format!("{name}.wasm"));
        if let Ok(b) = std::fs::read(&p) {
            return b;
        }
    }
    panic!("{name}.wasm not found: build the plugins first with scripts/build-plugins.sh");
}

pub(super) fn limits() -> PluginLimits {
    PluginLimits {
        fault_limit: 3,
        ..PluginLimits::default()
    }
}

fn registry_in(dir: &Path, cache: Option<PathBuf>) -> Arc<Registry> {
    let host = Arc::new(Host {
        engine: PluginEngine::shared().expect("plugin engine"),
        limits: limits(),
        counters: Arc::new(HostCounters::new()),
        events: Arc::default(),
        placement: Default::default(),
    });
    Arc::new(Registry::new(host, dir.to_path_buf(), cache))
}

pub(super) fn registry() -> (Arc<Registry>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    (registry_in(dir.path(), None), dir)
}

fn balancer(reg: &Registry, name: &str, config: &str) -> balancer::PluginBalancer {
    let use_ = reg.register_use(name, Kind::Balancer, config, "svc", "1");
    balancer::PluginBalancer::new(use_, Arc::new(RoundRobin::new()))
}

pub(super) fn request(headers: &[(&str, &str)]) -> http::request::Parts {
    let mut b = http::Request::builder().uri("/");
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(()).unwrap().into_parts().0
}

/// Picks once for a request with `headers` over endpoints of `weights`.
fn pick_with(
    b: &dyn crate::balance::Balancer,
    weights: &[u32],
    excluded: &NodeSet,
    headers: &[(&str, &str)],
) -> Option<usize> {
    let eps = endpoints(weights);
    let set = all(&eps);
    let parts = request(headers);
    b.pick(&PickContext {
        endpoints: &eps,
        candidates: &set,
        excluded,
        request: RequestView {
            parts: &parts,
            remote: remote(),
        },
    })
}

pub(super) fn stats(reg: &Registry, name: &str) -> stats::StatsSnapshot {
    reg.slot(name).current().as_ref().expect("loaded").stats.snapshot()
}

#[test]
fn the_engine_falls_back_to_on_demand_when_the_pool_cannot_be_reserved() {
    let engine = PluginEngine::new(&EngineSettings {
        pool_instances: u32::MAX / 8,
        max_memory: 256 << 20,
    })
    .expect("an engine, without the pool");
    assert!(!engine.pooling());
    let host = Arc::new(Host {
        engine,
        limits: limits(),
        counters: Arc::new(HostCounters::new()),
        events: Arc::default(),
        placement: Default::default(),
    });
    let dir = tempfile::tempdir().unwrap();
    let reg = Registry::new(host, dir.path().to_path_buf(), None);
    reg.load("rr", &wasm("round_robin"));
    assert_eq!(reg.slot("rr").state(), "active");
    let b = balancer(&reg, "rr", "{}");
    assert_eq!(pick_with(&b, &[1, 1], &NodeSet::new(), &[]), Some(0));
    assert_eq!(stats(&reg, "rr").calls, 1);
}

#[test]
fn a_balancer_plugin_decides_on_a_warm_instance() {
    let (reg, _dir) = registry();
    reg.load("rr", &wasm("round_robin"));
    let slot = reg.slot("rr");
    assert_eq!(slot.current().as_ref().unwrap().kinds(), vec![Kind::Balancer]);
    let b = balancer(&reg, "rr", "{}");
    let eps = endpoints(&[5, 1, 1]);
    let set = all(&eps);
    let parts = request(&[]);
    let none = NodeSet::new();
    let picks: Vec<usize> = (0..7)
        .map(|_| {
            b.pick(&PickContext {
                endpoints: &eps,
                candidates: &set,
                excluded: &none,
                request: RequestView {
                    parts: &parts,
                    remote: remote(),
                },
            })
            .unwrap()
        })
        .collect();
    assert_eq!(picks, vec![0, 0, 1, 0, 2, 0, 0], "smooth weighted round robin");
    let s = stats(&reg, "rr");
    assert_eq!((s.calls, s.instances), (7, 1), "one warm instance served every pick");
    assert!(s.p99().is_some());
    // Exclusions reach the plugin.
    let mut tried = NodeSet::new();
    tried.insert(0);
    tried.insert(1);
    assert_eq!(pick_with(&b, &[1, 1, 1], &tried, &[]), Some(2));
}

/// Loads a fault fixture, checks it serves, then that each fault falls back to the
/// built-in, is classified as `kind`, and disables the plugin after the limit.
fn fault_fixture(name: &str, kind: FaultKind) -> String {
    let (reg, _dir) = registry();
    reg.load(name, &wasm(name));
    assert_eq!(reg.slot(name).state(), "active", "{name} passes validation");
    let b = balancer(&reg, name, "{}");
    let none = NodeSet::new();
    assert_eq!(pick_with(&b, &[1, 1, 1], &none, &[]), Some(0));
    assert_eq!(stats(&reg, name).calls, 1);
    let limit = limits().fault_limit;
    for i in 1..=limit {
        let idx = pick_with(&b, &[1, 1, 1], &none, &[("x-fault", "1")]);
        assert!(matches!(idx, Some(0..=2)), "the built-in answered for {name}");
        let s = stats(&reg, name);
        assert_eq!(
            s.faults_of(kind),
            u64::from(i),
            "{name}: {:?}",
            reg.slot(name).last_error()
        );
        assert_eq!(s.faults.iter().sum::<u64>(), u64::from(i), "{name}: one kind only");
    }
    let slot = reg.slot(name);
    assert_eq!(slot.state(), "disabled");
    let err = slot.last_error().unwrap().1;
    assert!(err.contains("disabled after"), "{err}");
    // Disabled: the built-in serves without calling the plugin.
    let calls = stats(&reg, name).calls;
    assert!(pick_with(&b, &[1, 1, 1], &none, &[]).is_some());
    assert_eq!(stats(&reg, name).calls, calls);
    // The same bytes again do not re-enable it; a new file does.
    reg.load(name, &wasm(name));
    assert_eq!(slot.state(), "disabled");
    reg.load(name, &wasm("round_robin"));
    assert_eq!(slot.state(), "active");
    err
}

#[tokio::test]
async fn a_cancelled_token_ends_the_ticker_thread_even_while_it_sleeps() {
    let cancel = tokio_util::sync::CancellationToken::new();
    let engine = PluginEngine::new_until(
        &engine::EngineSettings {
            pool_instances: 2,
            ..engine::EngineSettings::default()
        },
        cancel.clone(),
    )
    .unwrap();
    let waited = std::time::Instant::now();
    while engine.ticker().sleeps() == 0 {
        assert!(
            waited.elapsed() < Duration::from_secs(10),
            "the idle ticker never slept"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(!engine.ticker().ended());
    cancel.cancel();
    // Woken by the cancellation, not by the 1 s park check.
    let waited = std::time::Instant::now();
    while !engine.ticker().ended() {
        assert!(waited.elapsed() < Duration::from_secs(10), "the ticker did not stop");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[test]
fn the_ticker_sleeps_while_idle_and_still_interrupts_a_spin_after_waking() {
    // An engine of its own, so no other test's calls keep its ticker awake.
    let engine = PluginEngine::new(&engine::EngineSettings {
        pool_instances: 8,
        ..engine::EngineSettings::default()
    })
    .unwrap();
    let host = Arc::new(Host {
        engine: engine.clone(),
        limits: limits(),
        counters: Arc::new(HostCounters::new()),
        events: Arc::default(),
        placement: Default::default(),
    });
    let dir = tempfile::tempdir().unwrap();
    let reg = Arc::new(Registry::new(host, dir.path().to_path_buf(), None));
    reg.load("fault_spin", &wasm("fault_spin"));
    assert_eq!(reg.slot("fault_spin").state(), "active");
    let waited = std::time::Instant::now();
    while engine.ticker().sleeps() == 0 {
        assert!(
            waited.elapsed() < Duration::from_secs(10),
            "the idle ticker never slept"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    // The call wakes the ticker, so the spin is interrupted at its deadline instead of
    // running forever.
    let (tx, rx) = std::sync::mpsc::channel();
    let r = reg.clone();
    std::thread::spawn(move || {
        let b = balancer(&r, "fault_spin", "{}");
        let started = std::time::Instant::now();
        let idx = pick_with(&b, &[1, 1, 1], &NodeSet::new(), &[("x-fault", "1")]);
        let _ = tx.send((idx, started.elapsed()));
    });
    let (idx, took) = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("a spinning call after the ticker slept was never interrupted");
    assert!(idx.is_some(), "the built-in answered");
    // The deadline is 25 ms; a ticker left asleep would only notice after its 1 s check.
    assert!(
        took < Duration::from_millis(700),
        "the spin ran {took:?} past a 25 ms deadline"
    );
    assert_eq!(stats(&reg, "fault_spin").faults_of(FaultKind::Timeout), 1);
}

#[test]
fn a_trap_is_contained_and_classified() {
    fault_fixture("fault_trap", FaultKind::Trap);
}

#[test]
fn a_runaway_loop_is_interrupted_at_the_deadline() {
    fault_fixture("fault_spin", FaultKind::Timeout);
}

#[test]
fn unbounded_allocation_hits_the_memory_cap() {
    // Inside a tokio runtime too: the allocation-failure message goes to stderr, which
    // plugins do not have.
    let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    rt.block_on(async { fault_fixture("fault_hog", FaultKind::Memory) });
}

#[test]
fn a_node_that_was_not_offered_is_a_contract_violation() {
    fault_fixture("fault_bad_id", FaultKind::Contract);
}

#[test]
fn blocking_stdout_in_a_plugin_cannot_take_the_worker_down() {
    let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    // Inside a tokio runtime, where blocking WASI I/O panics in the host.
    let err = rt.block_on(async { fault_fixture("fault_stdout", FaultKind::Trap) });
    assert!(err.contains("get-stdout is not available to plugins"), "{err}");
}

#[test]
fn the_panic_message_reaches_the_fault_report() {
    let (reg, _dir) = registry();
    reg.load("t", &wasm("fault_trap"));
    let b = balancer(&reg, "t", "{}");
    pick_with(&b, &[1], &NodeSet::new(), &[("x-fault", "1")]);
    let err = reg.slot("t").last_error().unwrap().1;
    assert!(err.contains("fault_trap was asked to fail"), "{err}");
}

#[test]
fn bad_files_are_rejected_and_the_old_version_keeps_serving() {
    let (reg, _dir) = registry();
    let slot = reg.slot("p");
    reg.load("p", b"definitely not wasm");
    assert_eq!(slot.state(), "rejected");
    assert_eq!(slot.rejected().unwrap().rejection.reason, loader::RejectReason::Invalid);
    reg.load("p", &wasm("wrong_world"));
    assert_eq!(
        slot.rejected().unwrap().rejection.reason,
        loader::RejectReason::WrongWorld
    );
    let b = balancer(&reg, "p", "{}");
    assert_eq!(
        pick_with(&b, &[1, 1, 1], &NodeSet::new(), &[]),
        Some(0),
        "built-in serves"
    );

    reg.load("p", &wasm("pin_high"));
    assert_eq!(slot.state(), "active");
    assert!(slot.rejected().is_none());
    assert_eq!(pick_with(&b, &[1, 1, 1], &NodeSet::new(), &[]), Some(2));
    reg.load("p", b"\0asm garbage");
    assert_eq!(slot.rejected().unwrap().rejection.reason, loader::RejectReason::Invalid);
    assert_eq!(slot.state(), "active", "the previous version keeps serving");
    assert_eq!(pick_with(&b, &[1, 1, 1], &NodeSet::new(), &[]), Some(2));
    // A retry policy where a balancer is configured is the wrong world too.
    reg.load("p", &wasm("status_retry"));
    let r = slot.rejected().unwrap().rejection;
    assert_eq!(r.reason, loader::RejectReason::WrongWorld);
    assert!(r.message.contains("configured as a balancer"), "{}", r.message);
    // A new version replaces the old one on the next pick of the same thread.
    reg.load("p", &wasm("pin_low"));
    assert_eq!(pick_with(&b, &[1, 1, 1], &NodeSet::new(), &[]), Some(0));
}

#[test]
fn a_file_whose_init_refuses_a_live_config_is_rejected() {
    let (reg, _dir) = registry();
    let b = balancer(&reg, "c", r#"{"percnt": 5}"#);
    reg.load("c", &wasm("round_robin"));
    assert_eq!(reg.slot("c").state(), "active");
    reg.load("c", &wasm("canary"));
    let r = reg.slot("c").rejected().unwrap().rejection;
    assert_eq!(r.reason, loader::RejectReason::Init);
    assert!(
        r.message.contains("percnt") && r.message.contains("svc@1"),
        "{}",
        r.message
    );
    assert!(pick_with(&b, &[1, 1], &NodeSet::new(), &[]).is_some());
    assert_eq!(stats(&reg, "c").calls, 1, "round_robin still serves");
}

#[test]
fn a_refused_config_serves_the_builtin_and_is_reported() {
    let (reg, _dir) = registry();
    reg.load("canary", &wasm("canary"));
    let b = balancer(&reg, "canary", r#"{"percent": 150}"#);
    assert_eq!(pick_with(&b, &[1, 1], &NodeSet::new(), &[]), Some(0));
    let s = stats(&reg, "canary");
    assert_eq!((s.calls, s.fallbacks, s.refusals), (0, 0, 1), "a refusal, not a fault");
    let err = reg.slot("canary").last_error().unwrap().1;
    assert!(err.contains("percent must be between 0 and 100"), "{err}");
    // Another service with a good config uses it.
    let good = balancer(&reg, "canary", r#"{"percent": 0}"#);
    assert!(pick_with(&good, &[1, 1], &NodeSet::new(), &[]).is_some());
    assert_eq!(stats(&reg, "canary").calls, 1);
}

#[test]
fn the_directory_drives_loads_replacements_and_removals() {
    let dir = tempfile::tempdir().unwrap();
    let cache = dir.path().join("cache");
    let plugins = dir.path().join("plugins");
    std::fs::create_dir(&plugins).unwrap();
    let reg = registry_in(&plugins, Some(cache.clone()));
    let write = |bytes: &[u8]| {
        let tmp = plugins.join(".lb.wasm.tmp");
        std::fs::write(&tmp, bytes).unwrap();
        std::fs::rename(&tmp, plugins.join("lb.wasm")).unwrap();
    };
    write(&wasm("pin_low"));
    std::fs::write(plugins.join("notes.txt"), "ignored").unwrap();
    reg.sync_dir();
    let slot = reg.slot("lb");
    let first = slot.current().as_ref().unwrap().clone();
    assert!(!first.from_cache);
    assert_eq!(reg.slots().len(), 1, "only .wasm files are plugins");
    write(&wasm("pin_high"));
    reg.sync_dir();
    assert_ne!(slot.current_generation(), Some(first.id));
    write(b"junk");
    reg.sync_dir();
    assert_eq!(slot.state(), "active");
    assert!(slot.rejected().is_some());
    std::fs::remove_file(plugins.join("lb.wasm")).unwrap();
    reg.sync_dir();
    assert_eq!(slot.state(), "absent");
    // Re-adding compiled code that is cached loads from the cache.
    write(&wasm("pin_low"));
    reg.sync_dir();
    assert!(slot.current().as_ref().unwrap().from_cache);
    let cached: Vec<_> = std::fs::read_dir(&cache).unwrap().collect();
    assert_eq!(cached.len(), 2, "pin_low and pin_high");
    #[cfg(unix)]
    for f in cached {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(f.unwrap().metadata().unwrap().permissions().mode() & 0o777, 0o600);
    }
    // A fresh registry (a restart) finds the cached artifact as well.
    let again = registry_in(&plugins, Some(cache));
    again.sync_dir();
    assert!(again.slot("lb").current().as_ref().unwrap().from_cache);
}

#[test]
fn a_retry_plugin_decides_and_the_builtin_covers_its_failures() {
    let (reg, _dir) = registry();
    reg.load("sr", &wasm("status_retry"));
    let use_ = reg.register_use(
        "sr",
        Kind::RetryPolicy,
        r#"{"retries": 2, "statuses": [503]}"#,
        "svc",
        "1",
    );
    let never = BuiltinRetry::new(RetryPolicyConfig {
        retries: 0,
        retry_timeout: None,
        retry_on: RetryOn::default(),
        backoff_base: Duration::from_millis(1),
        backoff_max: Duration::from_millis(1),
        retry_after_max: Duration::from_secs(1),
        budget_percent: 20.0,
        budget_min_concurrent: 3,
        max_replay_body: 0,
    });
    let policy = retry::PluginRetry::new(use_, Arc::new(never));
    let ctx = |outcome, tries| RetryContext {
        route: "r",
        method: &http::Method::GET,
        tries,
        outcome,
        retry_after: Some(Duration::from_millis(40)),
        elapsed: Duration::ZERO,
    };
    use crate::retry::RetryPolicy as _;
    assert_eq!(
        policy.decide(&ctx(Outcome::Status(503), 1)),
        RetryDecision::Retry {
            backoff: Duration::from_millis(40)
        }
    );
    assert_eq!(policy.decide(&ctx(Outcome::Status(500), 1)), RetryDecision::Stop);
    assert_eq!(policy.decide(&ctx(Outcome::Status(503), 3)), RetryDecision::Stop);
    let s = stats(&reg, "sr");
    assert_eq!((s.calls, s.instances), (3, 3), "a fresh instance per decision");
    // A rejected file leaves the plugin serving; without a file the built-in decides.
    reg.load("sr", b"junk");
    assert_ne!(policy.decide(&ctx(Outcome::Status(503), 1)), RetryDecision::Stop);
    reg.sync_dir();
    assert_eq!(reg.slot("sr").state(), "absent");
    assert_eq!(policy.decide(&ctx(Outcome::Status(503), 1)), RetryDecision::Stop);
}

#[test]
fn a_health_plugin_classifies_slow_nodes_as_failing() {
    use super::bindings::types::{FailureKind as K, HealthVerdict as V, Observation, ObservationSource, Observed};
    let (reg, _dir) = registry();
    reg.load("lh", &wasm("latency_health"));
    let use_ = reg.register_use(
        "lh",
        Kind::HealthEvaluator,
        r#"{"max_latency_ms": 50, "window": 3, "min_samples": 3}"#,
        "svc",
        "1",
    );
    let h = health::PluginHealth::new(use_);
    let obs = |ms: u32| Observation {
        node: keys::hash(b"10.0.0.1:80"),
        source: ObservationSource::Traffic,
        observed: Observed::Status(200),
        latency_us: ms * 1000,
    };
    assert_eq!(h.evaluate(&obs(10)), Some(V::Builtin));
    assert_eq!(h.evaluate(&obs(200)), Some(V::Builtin));
    assert_eq!(h.evaluate(&obs(200)), Some(V::Failure(K::Timeout)));
    assert_eq!(h.evaluate(&obs(10)), Some(V::Failure(K::Timeout)));
    assert_eq!(h.evaluate(&obs(10)), Some(V::Builtin));
    assert_eq!(stats(&reg, "lh").instances, 1, "one instance keeps the history");
    // Without a plugin file the caller answers None: the built-in classifies.
    reg.sync_dir();
    assert_eq!(h.evaluate(&obs(10)), None);
}

#[test]
fn a_rate_limit_plugin_counts_through_the_host() {
    use super::bindings::types::LimitVerdict;
    let (reg, _dir) = registry();
    reg.load("tl", &wasm("tenant_limit"));
    let use_ = reg.register_use(
        "tl",
        Kind::RateLimiter,
        r#"{"default_limit": 3, "window_ms": 60000, "tenants": {"big": 5}}"#,
        "svc",
        "1",
    );
    let l = ratelimit::PluginLimiter::new(use_);
    let allowed = |tenant: &str, n: usize| {
        let parts = request(&[("x-tenant", tenant)]);
        (0..n)
            .filter(|_| {
                let input = keys::KeyInput::from_parts(&parts, remote());
                matches!(l.check(&input), Some(LimitVerdict::Allow(_)))
            })
            .count()
    };
    assert_eq!(allowed("small", 10), 3);
    assert_eq!(allowed("big", 10), 5);
    // Another thread has its own instance but the same counters.
    let other = std::thread::scope(|s| s.spawn(|| allowed("small", 2)).join().unwrap());
    assert_eq!(other, 0);
    assert_eq!(stats(&reg, "tl").instances, 2);
}

#[test]
fn the_watcher_finds_a_directory_created_later_and_follows_it() {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("later");
    let rt = PluginRuntime::start_with(
        PluginEngine::shared().unwrap(),
        PluginSettings {
            dir: dir.clone(),
            cache_dir: None,
            limits: limits(),
            rescan: Duration::from_millis(100),
            cancel: Default::default(),
            events: Arc::default(),
            placement: Default::default(),
        },
    )
    .unwrap();
    let wait_for = |state: &str| {
        let start = std::time::Instant::now();
        while rt.registry().slot("rr").state() != state {
            assert!(start.elapsed() < Duration::from_secs(10), "never became {state}");
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    std::fs::create_dir(&dir).unwrap();
    std::fs::write(dir.join("rr.wasm"), wasm("round_robin")).unwrap();
    wait_for("active");
    std::fs::remove_file(dir.join("rr.wasm")).unwrap();
    wait_for("absent");
    let registry = Arc::downgrade(rt.registry());
    drop(rt);
    let start = std::time::Instant::now();
    while registry.upgrade().is_some() {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "the reload thread let go of the registry"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn declines_faults_and_refusals_are_counted_apart_and_name_who_decided() {
    let (reg, _dir) = registry();
    reg.load("canary", &wasm("canary"));
    reg.load("fault_trap", &wasm("fault_trap"));
    let eps = endpoints(&[1, 1]);
    let set = all(&eps);
    let mut tried = NodeSet::new();
    tried.insert(0);
    tried.insert(1);
    let explain_with = |b: &dyn crate::balance::Balancer, headers: &[(&str, &str)], excluded: &NodeSet| {
        let parts = request(headers);
        b.pick_explained(&PickContext {
            endpoints: &eps,
            candidates: &set,
            excluded,
            request: RequestView {
                parts: &parts,
                remote: remote(),
            },
        })
    };
    let explain =
        |b: &dyn crate::balance::Balancer, headers: &[(&str, &str)]| explain_with(b, headers, &NodeSet::new());
    // Every node already tried: the plugin has nothing to offer and declines.
    let declining = balancer(&reg, "canary", r#"{"percent": 100}"#);
    assert_eq!(explain_with(&declining, &[], &tried), (None, Some("declined")));
    assert_eq!(declining.fallback_name(), Some("roundrobin"));
    let refused = balancer(&reg, "canary", r#"{"percent": 150}"#);
    assert_eq!(explain(&refused, &[]).1, Some("refused its config"));
    let serving = balancer(&reg, "canary", r#"{"percent": 0}"#);
    assert_eq!(explain(&serving, &[]).1, None, "the plugin decided");
    let s = stats(&reg, "canary");
    assert_eq!((s.calls, s.declines, s.refusals, s.fallbacks), (2, 1, 1, 0));

    let trapping = balancer(&reg, "fault_trap", "{}");
    assert_eq!(explain(&trapping, &[("x-fault", "1")]).1, Some("faulted"));
    let s = stats(&reg, "fault_trap");
    assert_eq!((s.declines, s.refusals, s.fallbacks), (0, 0, 1));
}

#[test]
fn a_plugin_that_fails_only_when_a_key_is_present_is_refused_before_it_serves() {
    let (reg, _dir) = registry();
    reg.load("key_panic", &wasm("key_panic"));
    let err = reg.verify("key_panic", Kind::Balancer, "{}").unwrap_err();
    assert!(
        err.contains("smoke call") && err.contains("key_panic does not expect x-user"),
        "{err}"
    );
    // A service using it stays on the built-in: the header never reaches the plugin.
    let b = balancer(&reg, "key_panic", "{}");
    assert!(pick_with(&b, &[1, 1], &NodeSet::new(), &[("x-user", "alice")]).is_some());
    let s = stats(&reg, "key_panic");
    assert_eq!((s.faults.iter().sum::<u64>(), s.refusals), (0, 1));
}
