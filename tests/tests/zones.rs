//! Zone- and region-aware routing and priority failover with real nodes and real
//! outages: nodes are killed and restarted on their ports while clients keep going.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use gatehouse::config::Overrides;
use gatehouse_tests::{Behavior, Client, TestGateway, TestUpstream};

/// Nodes as (upstream, zone, region, priority, weight).
type Spec<'a> = (&'a TestUpstream, &'a str, &'a str, i32, u32);

fn yaml(upstream_extra: &str, nodes: &[Spec<'_>]) -> String {
    let nodes: String = nodes
        .iter()
        .map(|(u, z, r, p, w)| {
            format!(
                "          - {{ host: 127.0.0.1, port: {}, zone: {z}, region: {r}, priority: {p}, weight: {w} }}\n",
                u.port()
            )
        })
        .collect();
    format!(
        r#"
gateway: {{ group: g, access_log: false, zone: zone-a, region: region-1 }}
services:
  - name: api
    versions:
      - version: "1"
        routes: [ {{ uri: "/*" }} ]
        upstream:
          type: roundrobin
          timeout: {{ connect: 0.5, send: 2, read: 2 }}
          checks:
            active:
              type: http
              http_path: /health
              timeout: 0.5
              healthy: {{ interval: 0.2, successes: 2 }}
              unhealthy: {{ interval: 0.2, http_failures: 2, tcp_failures: 2, timeouts: 2 }}
            passive:
              unhealthy: {{ http_failures: 3, tcp_failures: 2, timeouts: 2 }}
{upstream_extra}
gateway_groups:
  - name: g
    services:
      - service: api
        version: "1"
        nodes:
{nodes}"#
    )
}

async fn start_gateway(text: &str) -> TestGateway {
    TestGateway::start_with(text, Overrides::default()).await
}

/// Serves `n` requests and counts the answering nodes; every request must succeed.
async fn spread(gw: &TestGateway, n: usize) -> HashMap<String, usize> {
    let c = Client::new();
    let mut counts = HashMap::new();
    for _ in 0..n {
        let r = c.get(&gw.url("/x")).await.unwrap();
        assert_eq!(r.status, 200, "{}", r.text());
        *counts.entry(r.node()).or_default() += 1;
    }
    counts
}

/// Polls until `f(spread)` holds for a window of 20 requests, or panics after `limit`.
async fn until(gw: &TestGateway, limit: Duration, what: &str, f: impl Fn(&HashMap<String, usize>) -> bool) {
    let start = Instant::now();
    loop {
        let s = spread(gw, 20).await;
        if f(&s) {
            eprintln!("{what}: after {:?} ({s:?})", start.elapsed());
            return;
        }
        assert!(
            start.elapsed() < limit,
            "{what}: not after {limit:?}; last spread {s:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn share(counts: &HashMap<String, usize>, prefix: &str) -> f64 {
    let total: usize = counts.values().sum();
    let part: usize = counts
        .iter()
        .filter(|(k, _)| k.starts_with(prefix))
        .map(|(_, v)| v)
        .sum();
    part as f64 / total.max(1) as f64
}

async fn six_nodes() -> Vec<TestUpstream> {
    let mut out = Vec::new();
    for name in ["a1", "a2", "b1", "b2", "c1", "c2"] {
        out.push(TestUpstream::start(name).await);
    }
    out
}

fn zones_spec(n: &[TestUpstream]) -> Vec<Spec<'_>> {
    vec![
        (&n[0], "zone-a", "region-1", 0, 100),
        (&n[1], "zone-a", "region-1", 0, 100),
        (&n[2], "zone-b", "region-1", 0, 100),
        (&n[3], "zone-b", "region-1", 0, 100),
        (&n[4], "zone-c", "region-1", 0, 100),
        (&n[5], "zone-c", "region-1", 0, 100),
    ]
}

#[tokio::test]
async fn all_traffic_stays_in_the_gateways_zone() {
    let n = six_nodes().await;
    let gw = start_gateway(&yaml("", &zones_spec(&n))).await;
    let s = spread(&gw, 200).await;
    assert_eq!(share(&s, "a"), 1.0, "{s:?}");
    assert_eq!((s["a1"], s["a2"]), (100, 100));
    gw.stop().await;
}

#[tokio::test]
async fn zone_outage_drill_has_no_client_visible_failures_and_fails_back() {
    let mut n = six_nodes().await;
    n[2].set(Behavior::Delay(Duration::from_millis(1)));
    let spec = zones_spec(&n);
    // Zone b weighs twice zone c: the outage traffic splits 2:1.
    let spec: Vec<Spec<'_>> = spec
        .into_iter()
        .map(|(u, z, r, p, w)| (u, z, r, p, if z == "zone-b" { w * 2 } else { w }))
        .collect();
    let gw = start_gateway(&yaml("", &spec)).await;
    let url = Arc::new(gw.url("/x"));
    let stop = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    // (ms since start, node, ok)
    let log = Arc::new(std::sync::Mutex::new(Vec::<(u128, String, bool)>::new()));
    let mut loops = Vec::new();
    for _ in 0..4 {
        let (url, stop, log) = (url.clone(), stop.clone(), log.clone());
        loops.push(tokio::spawn(async move {
            let c = Client::new();
            while !stop.load(Ordering::Relaxed) {
                let r = c.get(&url).await;
                let ok = matches!(&r, Ok(r) if r.status == 200);
                let node = r.map(|r| r.node()).unwrap_or_else(|e| e);
                log.lock().unwrap().push((start.elapsed().as_millis(), node, ok));
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let (a1, a2) = (n[0].addr, n[1].addr);
    n[0].stop();
    n[1].stop();
    let killed = start.elapsed().as_millis();
    eprintln!("t={killed}ms: zone-a killed");
    tokio::time::sleep(Duration::from_millis(3000)).await;
    n[0] = TestUpstream::start_on("a1", a1).await;
    n[1] = TestUpstream::start_on("a2", a2).await;
    let restored = start.elapsed().as_millis();
    eprintln!("t={restored}ms: zone-a restarted");
    tokio::time::sleep(Duration::from_millis(2500)).await;
    while log.lock().unwrap().len() < 3000 {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.store(true, Ordering::Relaxed);
    for l in loops {
        l.await.unwrap();
    }
    let log = log.lock().unwrap().clone();
    let failures: Vec<_> = log.iter().filter(|(_, _, ok)| !ok).collect();
    assert!(
        failures.is_empty(),
        "{} client-visible failures: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );

    let window = |from: u128, to: u128| -> HashMap<String, usize> {
        let mut m = HashMap::new();
        for (t, node, _) in &log {
            if *t >= from && *t < to {
                *m.entry(node.clone()).or_default() += 1;
            }
        }
        m
    };
    let before = window(0, killed);
    let outage = window(killed + 1000, restored);
    let after = window(restored + 1500, u128::MAX);
    eprintln!("timeline: before {before:?}\n  outage (from +1 s) {outage:?}\n  after (from +1.5 s) {after:?}");
    // The first moment zone-a answered again.
    let back = log
        .iter()
        .find(|(t, node, _)| *t > restored && node.starts_with('a'))
        .map(|(t, _, _)| t - restored);
    eprintln!("zone-a took traffic again {back:?} ms after restart");
    assert_eq!(share(&before, "a"), 1.0);
    assert_eq!(share(&outage, "a"), 0.0, "{outage:?}");
    let b = share(&outage, "b");
    assert!(
        (b - 2.0 / 3.0).abs() < 0.1,
        "zone b should take 2/3 of the outage traffic: {outage:?}"
    );
    assert_eq!(share(&after, "a"), 1.0, "traffic returned to zone a: {after:?}");
    assert!(log.len() >= 3000);
    gw.stop().await;
}

#[tokio::test]
async fn half_a_zone_down_stays_local_or_spills_the_shortfall() {
    let n = six_nodes().await;
    for (extra, local_share) in [
        ("          min_local_share: 0.5\n", 1.0),
        ("          min_local_share: 0.75\n", 2.0 / 3.0),
    ] {
        n[1].set_health(Behavior::Status(500));
        let gw = start_gateway(&yaml(extra, &zones_spec(&n))).await;
        until(&gw, Duration::from_secs(5), "a2 out", |s| !s.contains_key("a2")).await;
        let s = spread(&gw, 600).await;
        let a = share(&s, "a1");
        assert!(
            (a - local_share).abs() < 0.05,
            "local share {a} vs {local_share}: {s:?}"
        );
        if local_share < 1.0 {
            // The shortfall splits evenly over b1, b2, c1, c2.
            for node in ["b1", "b2", "c1", "c2"] {
                let got = s.get(node).copied().unwrap_or(0) as f64 / 600.0;
                assert!((got - (1.0 - local_share) / 4.0).abs() < 0.04, "{node}: {got} ({s:?})");
            }
        }
        gw.stop().await;
        n[1].set_health(Behavior::Ok);
    }
}

#[tokio::test]
async fn region_failover_and_failback() {
    let n = six_nodes().await;
    let spec: Vec<Spec<'_>> = vec![
        (&n[0], "zone-a", "region-1", 0, 100),
        (&n[1], "zone-b", "region-1", 0, 100),
        (&n[2], "zone-x", "region-2", 0, 100),
        (&n[3], "zone-y", "region-2", 0, 100),
    ];
    let gw = start_gateway(&yaml("", &spec)).await;
    assert_eq!(share(&spread(&gw, 50).await, "a1"), 1.0);
    n[0].set_health(Behavior::Status(503));
    n[1].set_health(Behavior::Status(503));
    until(&gw, Duration::from_secs(5), "region-1 out", |s| share(s, "b") == 1.0).await;
    let s = spread(&gw, 200).await;
    assert_eq!(s["b1"] + s["b2"], 200, "{s:?}");
    assert!(s["b1"].abs_diff(s["b2"]) <= 2);
    for u in &n[..2] {
        u.set_health(Behavior::Ok);
    }
    until(&gw, Duration::from_secs(5), "failback to zone-a", |s| {
        share(s, "a1") == 1.0
    })
    .await;
    gw.stop().await;
}

#[tokio::test]
async fn priority_tiers_fail_over_and_back() {
    let n = six_nodes().await;
    let spec: Vec<Spec<'_>> = vec![
        (&n[0], "zone-a", "region-1", 1, 100),
        (&n[1], "zone-a", "region-1", 1, 100),
        (&n[2], "zone-a", "region-1", 0, 100),
        (&n[3], "zone-a", "region-1", 0, 100),
    ];
    for extra in ["", "          priority_failover: backup\n"] {
        let gw = start_gateway(&yaml(extra, &spec)).await;
        let s = spread(&gw, 100).await;
        assert_eq!(share(&s, "a"), 1.0, "tier 1 serves all: {s:?}");
        n[0].set_health(Behavior::Status(500));
        n[1].set_health(Behavior::Status(500));
        until(&gw, Duration::from_secs(5), "tier 1 out", |s| share(s, "b") == 1.0).await;
        n[0].set_health(Behavior::Ok);
        n[1].set_health(Behavior::Ok);
        until(&gw, Duration::from_secs(5), "back to tier 1", |s| share(s, "a") == 1.0).await;
        gw.stop().await;
    }
}
