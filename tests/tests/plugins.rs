//! Wasm plugins in a real gateway with real upstreams and real traffic: the example
//! plugins at work, hot reload under load, and the fault fixtures contained.
//!
//! The `.wasm` files come from `scripts/build-plugins.sh` (run by `scripts/test.sh`).
//! Health-evaluator and rate-limiter plugins are in [`kinds`]; Plugin API 0.2 in [`v2`].

#[path = "plugins/kinds.rs"]
mod kinds;
#[path = "plugins/v2.rs"]
mod v2;

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use gatehouse_tests::plugin_wasm as wasm;
use gatehouse_tests::{BinaryGateway, Client, TestGateway, TestUpstream, write_config};
use http::Method;
use serde_json::Value;

/// Puts `bytes` in `dir` as `name.wasm` the way operators should: write, then rename.
fn install_bytes(dir: &Path, name: &str, bytes: &[u8]) {
    let tmp = dir.join(format!(".{name}.wasm.tmp"));
    std::fs::write(&tmp, bytes).unwrap();
    std::fs::rename(&tmp, dir.join(format!("{name}.wasm"))).unwrap();
}

fn install(dir: &Path, name: &str, plugin: &str) {
    install_bytes(dir, name, &std::fs::read(wasm(plugin)).unwrap());
}

/// One service of a test config: route prefix, `plugins:` YAML, nodes (port, tags), and
/// extra YAML under `upstream:` (indented 10) and in the version (indented 8).
#[derive(Default)]
struct Svc<'a> {
    name: &'a str,
    prefix: &'a str,
    plugins: String,
    nodes: Vec<(u16, &'a str)>,
    retries: u32,
    upstream: &'a str,
    extra: &'a str,
}

fn config(dir: &Path, services: &[Svc<'_>]) -> String {
    config_with(dir, "", services)
}

/// As [`config`], with extra `gateway:` lines (indented 2).
fn config_with(dir: &Path, gateway: &str, services: &[Svc<'_>]) -> String {
    let mut out = format!(
        "gateway:\n  listen: 127.0.0.1:0\n  admin: {{ listen: 127.0.0.1:0 }}\n  group: g\n  \
         plugins_dir: {}\n  state_dir: {}\n  access_log: false\n{gateway}\nservices:\n",
        dir.join("plugins").display(),
        dir.join("state").display()
    );
    for s in services {
        out += &format!(
            "  - name: {}\n    versions:\n      - version: 1.0.0\n        routes:\n          - {{ uri: \"{}*\" }}\n        \
             upstream:\n          type: roundrobin\n          retries: {}\n{}\n        plugins:\n{}\n{}\n",
            s.name, s.prefix, s.retries, s.upstream, s.plugins, s.extra
        );
    }
    out += "gateway_groups:\n  - name: g\n    services:\n";
    for s in services {
        out += &format!("      - service: {}\n        version: 1.0.0\n        nodes:\n", s.name);
        for (port, tags) in &s.nodes {
            out += &format!("          - {{ host: 127.0.0.1, port: {port}, weight: 1, tags: [{tags}] }}\n");
        }
    }
    out
}

fn plugin_yaml(kind: &str, name: &str, config: &str) -> String {
    format!("          {kind}: {{ name: {name}, config: {config} }}")
}

/// The plugin's entry in `GET /admin/v1/plugins`.
async fn plugin_report(admin: &str, name: &str) -> Value {
    let r = Client::new().get(&format!("{admin}/admin/v1/plugins")).await.unwrap();
    assert_eq!(r.status, 200);
    let all = r.json();
    all["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == name)
        .unwrap_or_else(|| panic!("no plugin {name} in {all}"))
        .clone()
}

/// Scratch directory with `plugins/` and `state/`.
fn scratch() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("plugins")).unwrap();
    dir
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn canary_balancer_splits_real_traffic() {
    let (a, b, c) = (
        TestUpstream::start("a").await,
        TestUpstream::start("b").await,
        TestUpstream::start("canary").await,
    );
    let dir = scratch();
    install(&dir.path().join("plugins"), "canary", "canary");
    let yaml = config(
        dir.path(),
        &[Svc {
            name: "web",
            prefix: "/",
            plugins: plugin_yaml("balancer", "canary", "{ percent: 10, header: x-canary }"),
            nodes: vec![(a.port(), ""), (b.port(), ""), (c.port(), "canary")],
            retries: 0,
            ..Default::default()
        }],
    );
    let gw = TestGateway::start(&yaml).await;
    let client = Client::new();
    let mut by_node: HashMap<String, u32> = HashMap::new();
    for _ in 0..2000 {
        let r = client.get(&gw.url("/x")).await.unwrap();
        assert_eq!(r.status, 200);
        *by_node.entry(r.node()).or_default() += 1;
    }
    let canary = f64::from(by_node.get("canary").copied().unwrap_or(0)) / 20.0;
    assert!(
        (7.0..=13.0).contains(&canary),
        "10 % configured, {canary} % observed: {by_node:?}"
    );
    assert!(
        by_node["a"] > 700 && by_node["b"] > 700,
        "stable nodes share the rest: {by_node:?}"
    );
    for _ in 0..50 {
        let r = client
            .request(Method::GET, &gw.url("/x"), &[("x-canary", "1")], "")
            .await
            .unwrap();
        assert_eq!(r.node(), "canary", "the header forces the canary");
    }
    let report = plugin_report(&gw.admin, "canary").await;
    assert_eq!(report["state"], "active");
    assert_eq!(report["kind"], "balancer");
    assert!(report["calls"].as_u64().unwrap() >= 2050, "{report}");
    assert!(report["p99_us"].as_f64().unwrap() > 0.0, "{report}");
    let metrics = client.get(&format!("{}/metrics", gw.admin)).await.unwrap().text();
    let calls = metrics
        .lines()
        .find(|l| l.starts_with("gatehouse_plugin_calls_total{plugin=\"canary\"}"))
        .unwrap_or_else(|| panic!("no plugin call counter in\n{metrics}"));
    let n: f64 = calls.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(n >= 2050.0, "{calls}");
    assert!(gw.stop().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_plugin_retries_what_the_builtin_would_not() {
    let (bad, good) = (TestUpstream::start("bad").await, TestUpstream::start("good").await);
    bad.set(gatehouse_tests::Behavior::Status(503));
    let dir = scratch();
    install(&dir.path().join("plugins"), "status_retry", "status_retry");
    let services = |plugins: String| {
        vec![Svc {
            name: "web",
            prefix: "/",
            plugins,
            nodes: vec![(bad.port(), ""), (good.port(), "")],
            retries: 0,
            ..Default::default()
        }]
    };
    let yaml = config(
        dir.path(),
        &services(plugin_yaml(
            "retry",
            "status_retry",
            "{ retries: 1, statuses: [503], backoff: { default: { base_ms: 1, max_ms: 5 } } }",
        )),
    );
    let gw = TestGateway::start(&yaml).await;
    let client = Client::new();
    for _ in 0..20 {
        let r = client.get(&gw.url("/x")).await.unwrap();
        assert_eq!((r.status, r.node()), (200, "good".to_string()));
    }
    assert!(bad.hits() >= 5, "requests did reach the failing node first");
    let report = plugin_report(&gw.admin, "status_retry").await;
    assert_eq!(report["kind"], "retry-policy");
    assert_eq!(
        report["calls"].as_u64(),
        Some(bad.hits()),
        "one decision per failed try: {report}"
    );
    gw.stop().await;

    // The same upstreams with the built-in policy (retries: 0): the 503s reach the client.
    let dir = scratch();
    let gw = TestGateway::start(&config(dir.path(), &services(String::new()))).await;
    let mut statuses = Vec::new();
    for _ in 0..10 {
        statuses.push(client.get(&gw.url("/x")).await.unwrap().status);
    }
    assert!(statuses.contains(&503), "{statuses:?}");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hot_reload_under_load_loses_no_request() {
    let (low, high) = (TestUpstream::start("low").await, TestUpstream::start("high").await);
    let dir = scratch();
    let plugins = dir.path().join("plugins");
    install(&plugins, "lb", "pin_low");
    let yaml = config(
        dir.path(),
        &[Svc {
            name: "web",
            prefix: "/",
            plugins: plugin_yaml("balancer", "lb", "{}"),
            nodes: vec![(low.port(), ""), (high.port(), "")],
            retries: 0,
            ..Default::default()
        }],
    );
    let gw = Arc::new(TestGateway::start(&yaml).await);
    let stop = Arc::new(AtomicBool::new(false));
    let (sent, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let mut load = Vec::new();
    for _ in 0..4 {
        let (gw, stop, sent, failed) = (gw.clone(), stop.clone(), sent.clone(), failed.clone());
        load.push(tokio::spawn(async move {
            let client = Client::new();
            while !stop.load(Ordering::Relaxed) {
                let ok = matches!(client.get(&gw.url("/load")).await, Ok(r) if r.status == 200);
                sent.fetch_add(1, Ordering::Relaxed);
                if !ok {
                    failed.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    let probe = Client::new();
    // Waits until 20 consecutive answers together satisfy `want`. The built-in round
    // robin interleaves the probe with four load clients, so a handful of answers can
    // all land on one node by chance; twenty cannot.
    let visible = |want: fn(&[String]) -> bool| {
        let (probe, gw) = (probe.clone(), gw.clone());
        async move {
            let start = Instant::now();
            loop {
                let mut nodes = Vec::new();
                for _ in 0..20 {
                    nodes.push(probe.get(&gw.url("/probe")).await.unwrap().node());
                }
                if want(&nodes) {
                    return start.elapsed();
                }
                assert!(
                    start.elapsed() < Duration::from_secs(10),
                    "behaviour never changed: {nodes:?}"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    let all_low: fn(&[String]) -> bool = |n| n.iter().all(|n| n == "low");
    let all_high: fn(&[String]) -> bool = |n| n.iter().all(|n| n == "high");
    let both: fn(&[String]) -> bool = |n| n.iter().any(|n| n == "low") && n.iter().any(|n| n == "high");
    visible(all_low).await;
    let mut slowest = Duration::ZERO;
    for i in 0..10 {
        let (file, want) = if i % 2 == 0 {
            ("pin_high", all_high)
        } else {
            ("pin_low", all_low)
        };
        install(&plugins, "lb", file);
        slowest = slowest.max(visible(want).await);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The last replacement installed pin_low. A broken file changes nothing.
    install_bytes(&plugins, "lb", b"this is not a component");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(all_low(&[probe.get(&gw.url("/p")).await.unwrap().node()]));
    let report = plugin_report(&gw.admin, "lb").await;
    assert_eq!(report["state"], "active", "{report}");
    assert_eq!(report["rejected"]["reason"], "invalid", "{report}");
    // Removed: the built-in round robin. Re-added: the plugin again.
    std::fs::remove_file(plugins.join("lb.wasm")).unwrap();
    slowest = slowest.max(visible(both).await);
    assert_eq!(plugin_report(&gw.admin, "lb").await["state"], "absent");
    install(&plugins, "lb", "pin_high");
    slowest = slowest.max(visible(all_high).await);
    while sent.load(Ordering::Relaxed) < 3000 {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.store(true, Ordering::Relaxed);
    for t in load {
        t.await.unwrap();
    }
    let (sent, failed) = (sent.load(Ordering::Relaxed), failed.load(Ordering::Relaxed));
    assert_eq!(failed, 0, "{failed} of {sent} requests failed during reloads");
    assert!(slowest < Duration::from_secs(2), "a change took {slowest:?} to show");
    let report = plugin_report(&gw.admin, "lb").await;
    assert_eq!(report["state"], "active");
    assert_eq!(
        report["faults"]
            .as_object()
            .unwrap()
            .values()
            .map(|v| v.as_u64().unwrap())
            .sum::<u64>(),
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faulty_plugins_are_contained_classified_and_disabled() {
    let (a, b) = (TestUpstream::start("a").await, TestUpstream::start("b").await);
    let dir = scratch();
    let plugins = dir.path().join("plugins");
    // (plugin, route prefix, expected fault kind or rejection reason)
    let runtime_faults = [
        ("fault_trap", "/trap/", "trap"),
        ("fault_spin", "/spin/", "timeout"),
        ("fault_hog", "/hog/", "memory"),
        ("fault_bad_id", "/badid/", "contract"),
        ("fault_stdout", "/stdout/", "trap"),
    ];
    let load_faults = [
        ("wrong_world", "/wrong/", "wrong_world"),
        ("garbage", "/garbage/", "invalid"),
    ];
    for (name, _, _) in runtime_faults {
        install(&plugins, name, name);
    }
    install(&plugins, "wrong_world", "wrong_world");
    install_bytes(
        &plugins,
        "garbage",
        &(0..4096u32).map(|i| (i * 7919 % 251) as u8).collect::<Vec<_>>(),
    );
    let services: Vec<Svc<'_>> = runtime_faults
        .iter()
        .chain(&load_faults)
        .map(|(name, prefix, _)| Svc {
            name,
            prefix,
            plugins: plugin_yaml("balancer", name, "{}"),
            nodes: vec![(a.port(), ""), (b.port(), "")],
            retries: 0,
            ..Default::default()
        })
        .collect();
    let gw = TestGateway::start(&config(dir.path(), &services)).await;
    let client = Client::new();
    let fault = [("x-fault", "1")];
    for (name, prefix, kind) in runtime_faults {
        let url = gw.url(&format!("{prefix}x"));
        let r = client.get(&url).await.unwrap();
        assert_eq!(
            (r.status, r.node()),
            (200, "a".to_string()),
            "{name} serves while it behaves"
        );
        for i in 0..8 {
            let r = client.request(Method::GET, &url, &fault, "").await.unwrap();
            assert_eq!(r.status, 200, "{name}: faulty request {i} is served by the fallback");
        }
        let report = plugin_report(&gw.admin, name).await;
        assert_eq!(report["state"], "disabled", "{report}");
        let faults = report["faults"].as_object().unwrap();
        assert_eq!(faults[kind], 5, "{name} classified as {kind}: {report}");
        assert_eq!(faults.values().map(|v| v.as_u64().unwrap()).sum::<u64>(), 5, "{report}");
        assert!(
            report["last_error"]["message"]
                .as_str()
                .unwrap()
                .contains("disabled after 5 faults")
        );
        // Disabled: no more calls, traffic keeps flowing.
        let calls = report["calls"].as_u64().unwrap();
        for _ in 0..4 {
            assert_eq!(client.request(Method::GET, &url, &fault, "").await.unwrap().status, 200);
        }
        assert_eq!(plugin_report(&gw.admin, name).await["calls"].as_u64().unwrap(), calls);
    }
    for (name, prefix, reason) in load_faults {
        let r = client.get(&gw.url(&format!("{prefix}x"))).await.unwrap();
        assert_eq!(r.status, 200, "{name}: the built-in serves");
        let report = plugin_report(&gw.admin, name).await;
        assert_eq!(report["state"], "rejected", "{report}");
        assert_eq!(report["rejected"]["reason"], reason, "{report}");
    }
    let metrics = client.get(&format!("{}/metrics", gw.admin)).await.unwrap().text();
    for line in [
        "gatehouse_plugin_faults_total{plugin=\"fault_spin\",fault=\"timeout\"} 5",
        "gatehouse_plugin_faults_total{plugin=\"fault_hog\",fault=\"memory\"} 5",
        "gatehouse_plugin_state{plugin=\"fault_trap\",state=\"disabled\"} 1",
        "gatehouse_plugin_loads_total{plugin=\"garbage\",result=\"rejected\"} 1",
    ] {
        assert!(metrics.lines().any(|l| l == line), "missing {line:?} in\n{metrics}");
    }
    // A new file re-enables a disabled plugin.
    install(&plugins, "fault_trap", "round_robin");
    let start = Instant::now();
    while plugin_report(&gw.admin, "fault_trap").await["state"] != "active" {
        assert!(start.elapsed() < Duration::from_secs(10), "the new file was not loaded");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_loads_plugins_at_startup() {
    let (a, b) = (TestUpstream::start("a").await, TestUpstream::start("b").await);
    let dir = scratch();
    install(&dir.path().join("plugins"), "round_robin", "round_robin");
    let yaml = config(
        dir.path(),
        &[Svc {
            name: "web",
            prefix: "/",
            plugins: plugin_yaml("balancer", "round_robin", "{}"),
            nodes: vec![(a.port(), ""), (b.port(), "")],
            retries: 0,
            ..Default::default()
        }],
    );
    let path = write_config(dir.path(), "gatehouse.yaml", &yaml);
    let gw = BinaryGateway::start(&path, &[]).await;
    let client = Client::new();
    let mut nodes = Vec::new();
    for _ in 0..20 {
        let r = client.get(&gw.url("/")).await.unwrap();
        assert_eq!(r.status, 200);
        nodes.push(r.node());
    }
    // Each worker thread has its own instance (and its own rotation): balanced, not
    // strictly alternating.
    let a_count = nodes.iter().filter(|n| *n == "a").count();
    assert!((8..=12).contains(&a_count), "{nodes:?}");
    let report = plugin_report(&gw.admin, "round_robin").await;
    assert_eq!(report["state"], "active");
    assert_eq!(
        report["calls"], 20,
        "the first request already used the plugin: {report}"
    );
    assert!(
        dir.path().join("state/plugin-cache").read_dir().unwrap().count() == 1,
        "the compiled plugin is cached in the state directory"
    );
}
