//! Rate limits and quotas, black-box: real gateways, real upstreams, real Redis.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use gatehouse::config::Overrides;
use gatehouse_tests::redis::TestRedis;
use gatehouse_tests::{BinaryGateway, Client, Reply, TestGateway, TestUpstream, write_config};
use http::Method;

/// One service `api` on `/*` with the given `limits:`/`quota:` YAML (indented for
/// a version), a node at `port`, and an optional `gateway:` block.
fn config(gateway: &str, version_extra: &str, port: u16) -> String {
    format!(
        r#"
gateway:
  access_log: false
{gateway}
services:
  - name: api
    versions:
      - version: "1"
        routes:
          - {{ uri: "/*" }}
{version_extra}
gateway_groups:
  - name: default
    services:
      - service: api
        version: "1"
        nodes:
          - {{ host: 127.0.0.1, port: {port} }}
"#
    )
}

fn redis_gateway(redis: &TestRedis) -> String {
    format!("  redis: {{ url: \"{}\", timeout: 0.3 }}", redis.url)
}

async fn get(client: &Client, url: &str, headers: &[(&str, &str)]) -> Reply {
    client
        .request(Method::GET, url, headers, "")
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"))
}

/// Sends `n` requests one after another; returns how many got 200.
async fn passed(client: &Client, url: &str, headers: &[(&str, &str)], n: usize) -> usize {
    let mut ok = 0;
    for _ in 0..n {
        let r = get(client, url, headers).await;
        assert!(matches!(r.status, 200 | 429), "unexpected {}: {}", r.status, r.text());
        ok += usize::from(r.status == 200);
    }
    ok
}

async fn wait_until(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < limit,
            "timed out after {limit:?} waiting until {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn store(gw: &TestGateway) -> Arc<gatehouse::ratelimit::store::Store> {
    gw.gateway
        .state
        .live
        .limits
        .store()
        .expect("gateway.redis is configured")
}

/// Two units sharing the version's `limits:`/`quota:` (`version_extra`) through
/// one Redis, in front of one upstream, both counting the other live.
struct SharedPair {
    redis: TestRedis,
    _up: TestUpstream,
    a: TestGateway,
    b: TestGateway,
}

impl SharedPair {
    async fn start(version_extra: &str) -> Self {
        let redis = TestRedis::start().await;
        let up = TestUpstream::start("a").await;
        let yaml = config(&redis_gateway(&redis), version_extra, up.port());
        let a = TestGateway::start(&yaml).await;
        let b = TestGateway::start(&yaml).await;
        wait_shared(&[&a, &b], 2).await;
        Self { redis, _up: up, a, b }
    }
}

async fn wait_shared(units: &[&TestGateway], live: u32) {
    wait_until("every unit counts the others live", Duration::from_secs(10), || {
        units
            .iter()
            .all(|g| !store(g).degraded() && store(g).live_units() == live)
    })
    .await;
}

#[tokio::test]
async fn token_bucket_per_client_address() {
    let up = TestUpstream::start("a").await;
    let limits = r#"
        limits:
          - { name: per-client, key: remote_addr, algorithm: token_bucket, rate: 10, burst: 10 }
          - { name: watch, key: remote_addr, algorithm: sliding_window, count: 5, window: 60, shadow: true }
"#;
    let gw = TestGateway::start(&config("", limits, up.port())).await;
    let client = Client::new();
    let url = gw.url("/x");
    let start = Instant::now();
    let replies = futures_util::future::join_all((0..50).map(|_| get(&client, &url, &[]))).await;
    let elapsed = start.elapsed();
    let ok: Vec<&Reply> = replies.iter().filter(|r| r.status == 200).collect();
    let limited: Vec<&Reply> = replies.iter().filter(|r| r.status == 429).collect();
    assert_eq!(ok.len() + limited.len(), 50);
    // 10 at once, plus one per 100 ms the burst took (none when it is fast).
    let refilled = (elapsed.as_secs_f64() * 10.0).ceil() as usize;
    assert!(
        ok.len() >= 10 && ok.len() <= 10 + refilled,
        "{} passed in {elapsed:?}",
        ok.len()
    );
    for r in &ok {
        assert_eq!(r.header("ratelimit-limit").as_deref(), Some("10"));
        assert!(r.header("ratelimit-remaining").is_some());
    }
    let mut retry = 0;
    for r in &limited {
        assert_eq!(r.header("ratelimit-limit").as_deref(), Some("10"));
        assert_eq!(r.header("ratelimit-remaining").as_deref(), Some("0"));
        let body = r.json();
        assert_eq!(body["error"]["code"], "rate_limited");
        assert!(body["error"]["message"].as_str().unwrap().contains("per-client"));
        let secs: u64 = r.header("retry-after").expect("Retry-After").parse().unwrap();
        assert!((1..=2).contains(&secs), "Retry-After {secs}");
        retry = retry.max(secs);
    }
    // Honest: after waiting Retry-After a request passes.
    tokio::time::sleep(Duration::from_secs(retry)).await;
    assert_eq!(get(&client, &url, &[]).await.status, 200);
    // The shadow rule refused nothing but counted what it would have refused.
    let metrics = get(&client, &format!("{}/metrics", gw.admin), &[]).await.text();
    let shadow = metrics
        .lines()
        .find(|l| l.contains("rule=\"watch\"") && l.contains("shadow_limited"))
        .unwrap_or_else(|| panic!("no shadow metric in\n{metrics}"));
    let n: f64 = shadow.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(n >= 5.0, "{shadow}");
    gw.stop().await;
}

#[tokio::test]
async fn sliding_window_keys_are_independent() {
    let up = TestUpstream::start("a").await;
    let limits = r#"
        limits:
          - { name: per-key, key: "header:x-api-key", algorithm: sliding_window, count: 3, window: 60 }
"#;
    let gw = TestGateway::start(&config("", limits, up.port())).await;
    let client = Client::new();
    let url = gw.url("/x");
    assert_eq!(passed(&client, &url, &[("x-api-key", "alpha")], 5).await, 3);
    assert_eq!(passed(&client, &url, &[("x-api-key", "beta")], 5).await, 3);
    let r = get(&client, &url, &[("x-api-key", "alpha")]).await;
    assert_eq!(r.status, 429);
    let secs: u64 = r.header("retry-after").unwrap().parse().unwrap();
    assert!(secs > 1 && secs <= 120, "Retry-After {secs}");
    // Without the header the client's address is the key: its own allowance.
    assert_eq!(passed(&client, &url, &[], 5).await, 3);
    gw.stop().await;
}

const QUOTA: &str = r#"
        quota: { key: remote_addr, calls: 20, period: day, sync_interval: 0.2 }
"#;

async fn spend_quota(client: &Client, url: &str) {
    for i in 0..20 {
        assert_eq!(get(client, url, &[]).await.status, 200, "call {}", i + 1);
    }
    assert_quota_spent(client, url).await;
}

async fn assert_quota_spent(client: &Client, url: &str) {
    let r = get(client, url, &[]).await;
    assert_eq!(r.status, 403, "{}", r.text());
    assert_eq!(r.json()["error"]["code"], "quota_exceeded");
    let secs: u64 = r.header("retry-after").expect("Retry-After").parse().unwrap();
    assert!((1..=86_400).contains(&secs), "Retry-After {secs}");
}

#[tokio::test]
async fn quota_survives_a_restart() {
    let up = TestUpstream::start("a").await;
    let state = tempfile::tempdir().unwrap();
    let overrides = || Overrides {
        state_dir: Some(state.path().to_path_buf()),
        ..Overrides::default()
    };
    let yaml = config("", QUOTA, up.port());
    let client = Client::new();
    let gw = TestGateway::start_with(&yaml, overrides()).await;
    spend_quota(&client, &gw.url("/x")).await;
    assert!(gw.stop().await);
    let gw = TestGateway::start_with(&yaml, overrides()).await;
    assert_quota_spent(&client, &gw.url("/x")).await;
    gw.stop().await;
}

#[tokio::test]
async fn quota_survives_a_crash() {
    let up = TestUpstream::start("a").await;
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path(), "gatehouse.yaml", &config("", QUOTA, up.port()));
    let client = Client::new();
    let mut gw = BinaryGateway::start(&path, &[]).await;
    spend_quota(&client, &gw.url("/x")).await;
    // Longer than sync_interval, then SIGKILL: no chance to write at exit.
    tokio::time::sleep(Duration::from_millis(700)).await;
    gw.signal("KILL");
    gw.wait(Duration::from_secs(10)).await;
    let gw = BinaryGateway::start(&path, &[]).await;
    assert_quota_spent(&client, &gw.url("/x")).await;
}

/// Starts the next run at least `needed` before the end of its `window`
/// (windows are aligned to Unix time), so a run stays in one window.
async fn fit_in_window(window: Duration, needed: Duration) {
    let w = window.as_millis() as u64;
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64;
    let left = w - now % w;
    if left < needed.as_millis() as u64 {
        tokio::time::sleep(Duration::from_millis(left + 50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_units_share_a_limit_within_ten_percent() {
    let limits = r#"
        limits:
          - { name: shared, key: route, algorithm: sliding_window, count: 100, window: 10, policy: redis }
"#;
    let SharedPair {
        redis: _redis,
        _up,
        a,
        b,
    } = SharedPair::start(limits).await;
    let run = Duration::from_secs(3);
    fit_in_window(Duration::from_secs(10), run + Duration::from_secs(2)).await;
    let counts: Vec<Arc<AtomicU64>> = (0..4).map(|_| Arc::new(AtomicU64::new(0))).collect();
    let deadline = Instant::now() + run;
    let mut workers = Vec::new();
    for w in 0..8 {
        let url = if w % 2 == 0 { a.url("/load") } else { b.url("/load") };
        let (ok, refused) = (counts[w % 2].clone(), counts[2 + w % 2].clone());
        workers.push(tokio::spawn(async move {
            let client = Client::new();
            while Instant::now() < deadline {
                match get(&client, &url, &[]).await.status {
                    200 => ok.fetch_add(1, Ordering::Relaxed),
                    429 => refused.fetch_add(1, Ordering::Relaxed),
                    s => panic!("unexpected status {s}"),
                };
            }
        }));
    }
    for w in workers {
        w.await.unwrap();
    }
    let [on_a, on_b, refused_a, refused_b] = [0, 1, 2, 3].map(|i| counts[i].load(Ordering::Relaxed));
    let admitted = on_a + on_b;
    eprintln!(
        "shared limit 100/10 s: admitted {admitted} (unit a {on_a}, unit b {on_b}), refused {}",
        refused_a + refused_b
    );
    assert!(
        refused_a > 0 && refused_b > 0,
        "the load must exceed the limit on both units"
    );
    assert!((90..=110).contains(&admitted), "admitted {admitted}, limit 100 ± 10 %");
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_token_bucket_and_quota() {
    let extra = r#"
        limits:
          - { name: bucket, key: "header:x-tenant", algorithm: token_bucket, rate: 0.01, burst: 20, policy: redis }
        quota: { key: "header:x-user", calls: 10, period: day, policy: redis, sync_interval: 0.1 }
"#;
    let SharedPair {
        redis: _redis,
        _up,
        a,
        b,
    } = SharedPair::start(extra).await;
    let client = Client::new();
    // Bucket: 20 tokens for the tenant across both units (users differ, so the
    // quota does not interfere). Unshared, the three rounds would admit 15 + 15 + 5;
    // shared, 20 plus at most 20 / 2 for a unit's first request of the key.
    // Pauses let a unit give back the grant it holds once its traffic stops.
    let mut total = 0;
    for (i, gw) in [&a, &b, &a].into_iter().enumerate() {
        for j in 0..15 {
            let user = format!("u{i}-{j}");
            let r = get(&client, &gw.url("/t"), &[("x-tenant", "t1"), ("x-user", &user)]).await;
            assert!(matches!(r.status, 200 | 429), "{}: {}", r.status, r.text());
            total += usize::from(r.status == 200);
        }
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
    eprintln!("shared bucket of 20: admitted {total}");
    assert!((19..=30).contains(&total), "bucket of 20 admitted {total}");
    // Quota: 10 calls a day for one user across both units. A 429 means "not
    // yet" (the unit's share is on its way), so the client retries it.
    let mut ok = 0;
    for (i, gw) in [&a, &b, &a, &b].into_iter().enumerate() {
        for j in 0..4 {
            let tenant = format!("t-{i}-{j}");
            let headers = [("x-tenant", tenant.as_str()), ("x-user", "ann")];
            let mut r = get(&client, &gw.url("/q"), &headers).await;
            for _ in 0..20 {
                if r.status != 429 {
                    break;
                }
                assert_eq!(r.header("retry-after").as_deref(), Some("1"));
                tokio::time::sleep(Duration::from_millis(100)).await;
                r = get(&client, &gw.url("/q"), &headers).await;
            }
            assert!(matches!(r.status, 200 | 403), "{}", r.status);
            ok += usize::from(r.status == 200);
        }
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
    eprintln!("shared quota of 10: admitted {ok}");
    assert!((10..=11).contains(&ok), "quota of 10 admitted {ok}");
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_outage_degrades_to_a_share_and_recovers() {
    let limits = r#"
        limits:
          - { name: phase, key: "header:x-phase", algorithm: sliding_window, count: 40, window: 3600, policy: redis }
"#;
    let SharedPair { mut redis, _up, a, b } = SharedPair::start(limits).await;
    let client = Client::new();
    let shared_run = |key: &'static str| {
        let (client, ua, ub) = (client.clone(), a.url("/p"), b.url("/p"));
        async move {
            let on_a = passed(&client, &ua, &[("x-phase", key)], 36).await;
            // A unit gives back grants it does not use within a sync interval.
            tokio::time::sleep(Duration::from_millis(500)).await;
            let on_b = passed(&client, &ub, &[("x-phase", key)], 36).await;
            eprintln!("phase {key}: unit a {on_a}, unit b {on_b}");
            (on_a, on_b)
        }
    };

    // Shared: what unit a used is gone for unit b. Alone, b would admit 36; a unit
    // that has never seen a key may overshoot by at most 40 / 2 live units.
    let shared = |on_a: usize, on_b: usize| {
        assert!(on_a >= 33, "unit a alone admitted {on_a} of 36 (limit 40)");
        assert!(on_b >= 1 && on_a + on_b <= 40 + 20, "shared 40: a {on_a} + b {on_b}");
    };
    let (on_a, on_b) = shared_run("one").await;
    shared(on_a, on_b);

    // Redis dies: each unit enforces 40 / 2 live units on its own.
    redis.stop();
    wait_until("both units degrade", Duration::from_secs(10), || {
        store(&a).degraded() && store(&b).degraded()
    })
    .await;
    for gw in [&a, &b] {
        let t = Instant::now();
        assert_eq!(passed(&client, &gw.url("/p"), &[("x-phase", "two")], 36).await, 20);
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "requests must not wait for Redis"
        );
    }
    let r = get(&client, &a.url("/p"), &[("x-phase", "two")]).await;
    assert_eq!(r.status, 429);
    assert!(r.header("retry-after").is_some());

    // Redis is back: shared mode resumes without a restart.
    redis.restart().await;
    wait_until("both units recover", Duration::from_secs(10), || {
        !store(&a).degraded() && !store(&b).degraded()
    })
    .await;
    let (on_a, on_b) = shared_run("three").await;
    shared(on_a, on_b);
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_failure_modes_answer_as_documented() {
    let mut redis = TestRedis::start().await;
    let up = TestUpstream::start("a").await;
    let yaml = format!(
        r#"
gateway:
  access_log: false
{}
services:
  - name: closed
    versions:
      - version: "1"
        routes: [ {{ uri: "/closed/*" }} ]
        limits:
          - {{ name: strict, key: route, algorithm: sliding_window, count: 1000, window: 60, policy: redis, on_store_failure: fail_closed }}
  - name: open
    versions:
      - version: "1"
        routes: [ {{ uri: "/open/*" }} ]
        limits:
          - {{ name: lenient, key: route, algorithm: sliding_window, count: 2, window: 3600, policy: redis, on_store_failure: fail_open }}
gateway_groups:
  - name: default
    services:
      - {{ service: closed, version: "1", nodes: [ {{ host: 127.0.0.1, port: {port} }} ] }}
      - {{ service: open, version: "1", nodes: [ {{ host: 127.0.0.1, port: {port} }} ] }}
"#,
        redis_gateway(&redis),
        port = up.port()
    );
    let gw = TestGateway::start(&yaml).await;
    wait_shared(&[&gw], 1).await;
    let client = Client::new();
    assert_eq!(get(&client, &gw.url("/closed/x"), &[]).await.status, 200);
    let mut open = 0;
    for _ in 0..4 {
        open += usize::from(get(&client, &gw.url("/open/x"), &[]).await.status == 200);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(open, 2, "shared limit of 2 while Redis is up");

    redis.stop();
    wait_until("the unit degrades", Duration::from_secs(10), || store(&gw).degraded()).await;
    let r = get(&client, &gw.url("/closed/x"), &[]).await;
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(r.json()["error"]["code"], "rate_limit_unavailable");
    assert!(r.json()["error"]["message"].as_str().unwrap().contains("strict"));
    assert_eq!(r.header("retry-after").as_deref(), Some("1"));
    assert_eq!(passed(&client, &gw.url("/open/x"), &[], 5).await, 5, "fail_open admits");
    gw.stop().await;
}

/// The admin view of a Redis rule shows the keys this unit tracks with the use
/// the whole group made of them: what unit a counted reaches unit b's view
/// through Redis.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_rule_usage_shows_the_group_count() {
    let limits = r#"
        limits:
          - { name: shared, key: remote_addr, algorithm: sliding_window, count: 1000, window: 60, policy: redis }
"#;
    let SharedPair {
        redis: _redis,
        _up,
        a,
        b,
    } = SharedPair::start(limits).await;
    let client = Client::new();
    assert_eq!(passed(&client, &a.url("/x"), &[], 20).await, 20);
    assert_eq!(passed(&client, &b.url("/x"), &[], 1).await, 1);
    let usage_on_b = || async {
        let rl = client
            .get(&format!("{}/admin/v1/ratelimits", b.admin))
            .await
            .unwrap()
            .json();
        rl["services"][0]["rules"][0]["usage"].clone()
    };
    let start = Instant::now();
    let usage = loop {
        let usage = usage_on_b().await;
        if usage["busiest"][0]["used"].as_u64().unwrap_or(0) >= 21 {
            break usage;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "unit b never saw unit a's 20 requests: {usage}"
        );
        // Each request on b syncs its key with Redis again.
        passed(&client, &b.url("/x"), &[], 1).await;
        tokio::time::sleep(Duration::from_millis(150)).await;
    };
    assert_eq!(usage["shared"], true, "{usage}");
    assert_eq!(usage["keys"], 1, "{usage}");
    assert_eq!(usage["busiest"][0]["key"], "127.0.0.1", "{usage}");
    assert_eq!(usage["busiest"][0]["limit"], 1000, "{usage}");
    assert!(usage["busiest"][0]["used"].as_u64().unwrap() <= 40, "{usage}");
    a.stop().await;
    b.stop().await;
}
