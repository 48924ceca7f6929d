//! Health-evaluator and rate-limiter plugins in a real gateway: the `tenant_limit` and
//! `latency_health` examples at work next to the built-in policies, plugin counters
//! shared by two units through Redis, and the `fault_health` / `fault_limit` fixtures
//! falling back to the built-in.

use std::time::Duration;

use gatehouse_tests::redis::TestRedis;
use gatehouse_tests::{Behavior, Client, TestGateway, TestUpstream};
use http::Method;
use serde_json::Value;

use super::{Svc, config, config_with, install, plugin_report, plugin_yaml, scratch};

/// A window no test run crosses (about 46 days, aligned to Unix time).
const LONG_WINDOW_MS: u64 = 4_000_000_000;

/// Status and `x-node` / error body of one GET with `headers`.
async fn get(client: &Client, url: &str, headers: &[(&str, &str)]) -> gatehouse_tests::Reply {
    client
        .request(Method::GET, url, headers, "")
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"))
}

/// The statuses of `n` GETs of `url` with `headers`, one after another.
async fn statuses(client: &Client, url: &str, headers: &[(&str, &str)], n: usize) -> Vec<u16> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        out.push(get(client, url, headers).await.status);
    }
    out
}

/// The entry of the node on `port` of service `service` in `GET /admin/v1/services`.
async fn node_report(admin: &str, service: &str, port: u16) -> Value {
    let all = Client::new()
        .get(&format!("{admin}/admin/v1/services"))
        .await
        .unwrap()
        .json();
    let svc = all["services"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["service"] == service)
        .unwrap_or_else(|| panic!("no service {service} in {all}"))
        .clone();
    let node = svc["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["port"] == port)
        .unwrap_or_else(|| panic!("no node {port} in {svc}"))
        .clone();
    serde_json::json!({ "evaluator": svc["evaluator"], "node": node })
}

/// The rule a refusal names (`rate limit "<rule>" exceeded; ...`).
fn refused_by(r: &gatehouse_tests::Reply) -> String {
    let message = r.json()["error"]["message"].as_str().unwrap_or_default().to_string();
    message.split('"').nth(1).unwrap_or_default().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenant_limit_refuses_one_tenant_past_its_limit_and_not_another() {
    let up = TestUpstream::start("a").await;
    let dir = scratch();
    install(&dir.path().join("plugins"), "tenant_limit", "tenant_limit");
    let tenants = plugin_yaml(
        "rate_limit",
        "tenant_limit",
        &format!("{{ default_limit: 3, window_ms: {LONG_WINDOW_MS}, tenants: {{ big: 5 }} }}"),
    );
    let both_extra = "        limits:\n          \
                      - { name: per-route, key: route, algorithm: sliding_window, count: 4, window: 3600 }";
    let yaml = config(
        dir.path(),
        &[
            Svc {
                name: "web",
                prefix: "/web/",
                plugins: tenants.clone(),
                nodes: vec![(up.port(), "")],
                ..Default::default()
            },
            Svc {
                name: "both",
                prefix: "/both/",
                plugins: tenants,
                nodes: vec![(up.port(), "")],
                extra: both_extra,
                ..Default::default()
            },
        ],
    );
    let gw = TestGateway::start(&yaml).await;
    let client = Client::new();
    let web = gw.url("/web/x");
    let acme = [("x-tenant", "acme")];
    let mut remaining = Vec::new();
    for _ in 0..3 {
        let r = get(&client, &web, &acme).await;
        assert_eq!(r.status, 200, "{}", r.text());
        remaining.push(r.header("ratelimit-remaining").unwrap_or_default());
    }
    assert_eq!(
        remaining,
        ["2", "1", "0"],
        "the plugin's limit state becomes RateLimit-*"
    );
    for _ in 0..2 {
        let r = get(&client, &web, &acme).await;
        assert_eq!(r.status, 429, "acme is past its limit: {}", r.text());
        assert_eq!(refused_by(&r), "tenant_limit");
        assert_eq!(r.header("ratelimit-limit").as_deref(), Some("3"));
        assert_eq!(r.header("ratelimit-remaining").as_deref(), Some("0"));
        let retry: u64 = r.header("retry-after").unwrap().parse().unwrap();
        assert!((1..=LONG_WINDOW_MS / 1000 + 1).contains(&retry), "Retry-After {retry}");
    }
    assert_eq!(
        statuses(&client, &web, &[("x-tenant", "globex")], 3).await,
        [200; 3],
        "another tenant is unaffected"
    );
    let big = statuses(&client, &web, &[("x-tenant", "big")], 6).await;
    assert_eq!(big, [200, 200, 200, 200, 200, 429], "a tenant with its own limit");
    let anonymous = statuses(&client, &web, &[], 4).await;
    assert_eq!(
        anonymous,
        [200, 200, 200, 429],
        "requests without the header share one bucket"
    );

    // With built-in rules too: both must admit. acme starts afresh here (the plugin's
    // counters are per service); its refusal by the plugin spends none of the built-in
    // `per-route` budget of 4, which the next tenant then exhausts.
    let both = gw.url("/both/x");
    assert_eq!(statuses(&client, &both, &acme, 3).await, [200; 3]);
    let r = get(&client, &both, &acme).await;
    assert_eq!((r.status, refused_by(&r)), (429, "tenant_limit".to_string()));
    assert_eq!(get(&client, &both, &[("x-tenant", "globex")]).await.status, 200);
    let r = get(&client, &both, &[("x-tenant", "globex")]).await;
    assert_eq!(
        (r.status, refused_by(&r)),
        (429, "per-route".to_string()),
        "{}",
        r.text()
    );

    let report = plugin_report(&gw.admin, "tenant_limit").await;
    assert_eq!(report["kind"], "rate-limiter");
    assert_eq!(report["state"], "active");
    assert_eq!(report["calls"], 24, "one call per request: {report}");
    assert_eq!(report["fallbacks"], 0, "{report}");
    assert!(gw.stop().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenant_counters_are_shared_by_units_through_redis() {
    let redis = TestRedis::start().await;
    let up = TestUpstream::start("a").await;
    let redis_line = format!("  redis: {{ url: \"{}\", timeout: 0.3 }}", redis.url);
    let unit = |dir: &tempfile::TempDir| {
        install(&dir.path().join("plugins"), "tenant_limit", "tenant_limit");
        config_with(
            dir.path(),
            &redis_line,
            &[Svc {
                name: "web",
                prefix: "/",
                plugins: plugin_yaml(
                    "rate_limit",
                    "tenant_limit",
                    &format!("{{ default_limit: 3, window_ms: {LONG_WINDOW_MS} }}"),
                ),
                nodes: vec![(up.port(), "")],
                ..Default::default()
            }],
        )
    };
    let (dir_a, dir_b) = (scratch(), scratch());
    let a = TestGateway::start(&unit(&dir_a)).await;
    let b = TestGateway::start(&unit(&dir_b)).await;
    let client = Client::new();
    let acme = [("x-tenant", "acme")];
    assert_eq!(statuses(&client, &a.url("/x"), &acme, 3).await, [200; 3]);
    // Unit a adds its counts to Redis every 100 ms; give it ten times that.
    tokio::time::sleep(Duration::from_secs(1)).await;
    // Unit b learns the shared count when it syncs its own first count: at most one
    // request (two on a slow machine) gets through before it does. Unshared, all three
    // of b's own limit would.
    let mut on_b = Vec::new();
    for _ in 0..10 {
        on_b.push(get(&client, &b.url("/x"), &acme).await.status);
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let admitted = on_b.iter().filter(|s| **s == 200).count();
    assert!(
        admitted <= 2 && on_b.ends_with(&[429, 429, 429]),
        "unit b sees unit a's counts: {on_b:?}"
    );
    assert_eq!(
        statuses(&client, &b.url("/x"), &[("x-tenant", "globex")], 3).await,
        [200; 3],
        "another tenant is unaffected"
    );
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latency_health_ejects_a_slow_node_that_the_builtin_keeps() {
    let (fast, slow) = (TestUpstream::start("fast").await, TestUpstream::start("slow").await);
    slow.set(Behavior::Delay(Duration::from_millis(250)));
    let dir = scratch();
    install(&dir.path().join("plugins"), "latency_health", "latency_health");
    let checks = "          checks:\n            passive:\n              \
                  unhealthy: { http_statuses: [503], timeouts: 2 }\n              base_ejection_time: 60";
    let service = |name, prefix, plugins| Svc {
        name,
        prefix,
        plugins,
        nodes: vec![(fast.port(), ""), (slow.port(), "")],
        upstream: checks,
        ..Default::default()
    };
    let yaml = config(
        dir.path(),
        &[
            service(
                "lat",
                "/lat/",
                plugin_yaml(
                    "health",
                    "latency_health",
                    "{ max_latency_ms: 100, window: 4, min_samples: 2 }",
                ),
            ),
            service("plain", "/plain/", String::new()),
        ],
    );
    let gw = TestGateway::start(&yaml).await;
    let client = Client::new();
    // Every answer is a 200: the built-in sees only successes. The plugin sees the
    // slow node's median of 250 ms over its bound of 100 ms and reports timeouts; two
    // in a row eject it.
    let mut nodes = Vec::new();
    for _ in 0..12 {
        let r = get(&client, &gw.url("/lat/x"), &[]).await;
        assert_eq!(r.status, 200);
        nodes.push(r.node());
    }
    let report = node_report(&gw.admin, "lat", slow.port()).await;
    assert_eq!(report["evaluator"], "latency_health");
    assert_eq!(report["node"]["state"], "ejected", "{report}");
    assert_eq!(
        report["node"]["last_transition"]["cause"], "passive_timeouts",
        "{report}"
    );
    assert_eq!(
        nodes.iter().filter(|n| *n == "slow").count(),
        3,
        "one judged sample, then two slow verdicts: {nodes:?}"
    );
    for _ in 0..10 {
        assert_eq!(get(&client, &gw.url("/lat/x"), &[]).await.node(), "fast");
    }
    assert_eq!(
        node_report(&gw.admin, "lat", fast.port()).await["node"]["state"],
        "healthy"
    );
    // The same nodes and checks without the plugin: the slow node keeps serving.
    let mut plain = Vec::new();
    for _ in 0..12 {
        plain.push(get(&client, &gw.url("/plain/x"), &[]).await.node());
    }
    assert_eq!(plain.iter().filter(|n| *n == "slow").count(), 6, "{plain:?}");
    let report = node_report(&gw.admin, "plain", slow.port()).await;
    assert_eq!(report["evaluator"], "builtin");
    assert_eq!(report["node"]["state"], "healthy", "{report}");
    let plugin = plugin_report(&gw.admin, "latency_health").await;
    assert_eq!(plugin["kind"], "health-evaluator");
    assert_eq!(plugin["calls"], 12 + 10, "one call per observation: {plugin}");
    assert!(gw.stop().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faulting_health_and_rate_limit_plugins_fall_back_to_the_builtin() {
    let (good, bad) = (TestUpstream::start("good").await, TestUpstream::start("bad").await);
    bad.set(Behavior::Status(503));
    let dir = scratch();
    let plugins = dir.path().join("plugins");
    install(&plugins, "fault_health", "fault_health");
    install(&plugins, "fault_limit", "fault_limit");
    let yaml = config(
        dir.path(),
        &[
            Svc {
                name: "fh",
                prefix: "/fh/",
                plugins: plugin_yaml("health", "fault_health", "{}"),
                nodes: vec![(good.port(), ""), (bad.port(), "")],
                upstream: "          checks:\n            passive:\n              \
                           unhealthy: { http_statuses: [503], http_failures: 2 }\n              \
                           base_ejection_time: 60",
                ..Default::default()
            },
            Svc {
                name: "fl",
                prefix: "/fl/",
                plugins: plugin_yaml("rate_limit", "fault_limit", "{}"),
                nodes: vec![(good.port(), "")],
                extra: "        limits:\n          \
                        - { name: per-client, key: remote_addr, algorithm: sliding_window, count: 6, window: 3600 }",
                ..Default::default()
            },
        ],
    );
    let gw = TestGateway::start(&yaml).await;
    let client = Client::new();

    // Health: every 503 traps the plugin; the built-in classifies it as an HTTP failure,
    // so the failing node is ejected after two, as it would be without the plugin.
    let mut seen = Vec::new();
    for _ in 0..12 {
        let r = get(&client, &gw.url("/fh/x"), &[]).await;
        seen.push((r.status, r.node()));
    }
    let failed = seen.iter().filter(|(s, _)| *s == 503).count();
    assert_eq!(failed, 2, "two failures eject the node: {seen:?}");
    assert!(seen[4..].iter().all(|(s, n)| *s == 200 && n == "good"), "{seen:?}");
    let report = node_report(&gw.admin, "fh", bad.port()).await;
    assert_eq!(report["node"]["state"], "ejected", "{report}");
    assert_eq!(report["node"]["last_transition"]["cause"], "passive_http_failures");
    let plugin = plugin_report(&gw.admin, "fault_health").await;
    assert_eq!(plugin["faults"]["trap"], 2, "{plugin}");
    assert_eq!(plugin["state"], "active", "two faults do not disable it: {plugin}");

    // Rate limit: the fixture refuses every request it is asked about...
    let url = gw.url("/fl/x");
    let r = get(&client, &url, &[]).await;
    assert_eq!((r.status, refused_by(&r)), (429, "fault_limit".to_string()));
    // ...and traps on x-fault: the built-in `per-client` rule (6) alone decides those.
    let fault = [("x-fault", "1")];
    assert_eq!(statuses(&client, &url, &fault, 5).await, [200; 5]);
    let plugin = plugin_report(&gw.admin, "fault_limit").await;
    assert_eq!(plugin["faults"]["trap"], 5, "{plugin}");
    assert_eq!(plugin["state"], "disabled", "{plugin}");
    // Disabled: the built-in alone, whose sixth and last slot the first refusal did
    // not spend.
    assert_eq!(get(&client, &url, &[]).await.status, 200);
    let r = get(&client, &url, &[]).await;
    assert_eq!((r.status, refused_by(&r)), (429, "per-client".to_string()));
    assert!(gw.stop().await);
}
