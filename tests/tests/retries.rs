//! Safe retries: another node each time, the idempotency guard, the budget,
//! `Retry-After`, the overall deadline, and the debug header that explains it.

use std::time::{Duration, Instant};

use gatehouse_tests::{Behavior, Client, TestGateway, TestUpstream};
use http::Method;

fn yaml(upstream_extra: &str, nodes: &[u16]) -> String {
    let nodes: String = nodes
        .iter()
        .map(|p| format!("          - {{ host: 127.0.0.1, port: {p} }}\n"))
        .collect();
    format!(
        r#"
gateway: {{ group: g, access_log: false, debug_header: x-debug }}
services:
  - name: api
    versions:
      - version: "1"
        routes: [ {{ uri: "/*" }} ]
        upstream:
          type: roundrobin
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

/// A port with nothing listening.
fn closed_port() -> u16 {
    gatehouse_tests::gateway::free_port()
}

#[tokio::test]
async fn a_post_that_got_a_503_is_not_retried() {
    let (a, b) = (TestUpstream::start("a").await, TestUpstream::start("b").await);
    a.set(Behavior::Status(503));
    b.set(Behavior::Status(503));
    let extra = "          retries: 3\n          retry: { retry_on: [gateway_error] }\n";
    let gw = TestGateway::start(&yaml(extra, &[a.port(), b.port()])).await;
    let c = Client::new();
    let r = c.request(Method::POST, &gw.url("/order"), &[], "body").await.unwrap();
    assert_eq!(r.status, 503);
    assert_eq!(
        a.hits() + b.hits(),
        1,
        "the POST reached an upstream and must not be replayed"
    );
    // The same POST with an Idempotency-Key may be retried.
    a.reset_hits();
    b.reset_hits();
    let r = c
        .request(Method::POST, &gw.url("/order"), &[("idempotency-key", "k-1")], "body")
        .await
        .unwrap();
    assert_eq!(r.status, 503);
    assert_eq!(
        a.hits() + b.hits(),
        2,
        "retried once on the other node, then out of nodes"
    );
    // A GET is retried on 503 too.
    a.set(Behavior::Ok);
    for _ in 0..4 {
        let r = c.get(&gw.url("/x")).await.unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(r.node(), "a");
    }
    gw.stop().await;
}

#[tokio::test]
async fn a_post_that_hit_a_refused_connection_is_retried() {
    let good = TestUpstream::start("good").await;
    let gw = TestGateway::start(&yaml("", &[closed_port(), good.port()])).await;
    let c = Client::new();
    for i in 0..6 {
        let r = c
            .request(
                Method::POST,
                &gw.url("/order"),
                &[("x-debug", "1")],
                format!("order {i}"),
            )
            .await
            .unwrap();
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.node(), "good");
    }
    let r = c
        .request(Method::POST, &gw.url("/echo"), &[("x-debug", "1")], "abc")
        .await
        .unwrap();
    assert!(r.text().starts_with("3 "), "the body was replayed intact: {}", r.text());
    assert_eq!(good.hits(), 7);
    gw.stop().await;
}

#[tokio::test]
async fn a_large_streamed_post_is_replayed_only_if_no_try_consumed_it() {
    let good = TestUpstream::start("good").await;
    let extra = "          retry: { max_replay_body: 16 }\n";
    let gw = TestGateway::start(&yaml(extra, &[closed_port(), good.port()])).await;
    let c = Client::new();
    // 1 KiB body > max_replay_body: it streams; a refused connection never touched it.
    for _ in 0..4 {
        let r = c
            .request(Method::POST, &gw.url("/echo"), &[], vec![1u8; 1024])
            .await
            .unwrap();
        assert_eq!(r.status, 200);
        assert!(r.text().starts_with("1024 "), "{}", r.text());
    }
    gw.stop().await;
}

#[tokio::test]
async fn the_debug_header_explains_a_retry() {
    let good = TestUpstream::start("good").await;
    let dead = closed_port();
    let gw = TestGateway::start(&yaml("", &[dead, good.port()])).await;
    let c = Client::new();
    let mut saw_retry = false;
    for _ in 0..4 {
        let r = c
            .request(Method::GET, &gw.url("/x"), &[("x-debug", "1")], "")
            .await
            .unwrap();
        let d = r.header("x-gatehouse-debug").expect("debug header");
        assert!(d.contains(&format!("node=127.0.0.1:{}", good.port())), "{d}");
        if d.contains("tries=2") {
            assert!(d.contains(&format!("failed=[127.0.0.1:{dead} connect_failure]")), "{d}");
            saw_retry = true;
        }
        assert!(
            good.last_headers().unwrap().get("x-debug").is_none(),
            "debug request header leaked upstream"
        );
    }
    assert!(saw_retry);
    let plain = c.get(&gw.url("/x")).await.unwrap();
    assert!(plain.header("x-gatehouse-debug").is_none(), "off by default");
    gw.stop().await;
}

#[tokio::test]
async fn the_budget_caps_retries_when_every_node_fails() {
    let ups = [
        TestUpstream::start("a").await,
        TestUpstream::start("b").await,
        TestUpstream::start("c").await,
        TestUpstream::start("d").await,
    ];
    for u in &ups {
        u.set(Behavior::Status(503));
    }
    let extra = "          retries: 3\n          retry: { retry_on: [gateway_error], budget_percent: 20, budget_min_concurrent: 1, backoff_base: 0.05, backoff_max: 0.05 }\n";
    let ports: Vec<u16> = ups.iter().map(|u| u.port()).collect();
    let gw = TestGateway::start(&yaml(extra, &ports)).await;
    let c = Client::new();
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let c = c.clone();
        let url = gw.url("/x");
        tasks.push(tokio::spawn(async move { c.get(&url).await.unwrap().status }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), 503);
    }
    let attempts: u64 = ups.iter().map(|u| u.hits()).sum();
    // Without a budget: 20 × 4 = 80 tries. With 20 % of ≤ 20 in flight (≥ 1): far fewer.
    assert!(attempts < 60, "{attempts} tries for 20 requests");
    assert!(attempts >= 20);
    let metrics = c.get(&format!("{}/metrics", gw.admin)).await.unwrap().text();
    let exhausted: f64 = metrics
        .lines()
        .find(|l| l.starts_with("gatehouse_retry_budget_exhausted_total{service=\"api\"}"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    assert!(exhausted > 0.0, "budget exhaustion is visible in metrics");
    gw.stop().await;
}

#[tokio::test]
async fn retry_after_is_honoured_up_to_its_cap() {
    let (a, b) = (TestUpstream::start("a").await, TestUpstream::start("b").await);
    a.set(Behavior::RetryAfter(503, 1));
    b.set(Behavior::RetryAfter(503, 1));
    let extra = "          retries: 1\n          retry: { retry_on: [gateway_error], retry_after_max: 0.3 }\n";
    let gw = TestGateway::start(&yaml(extra, &[a.port(), b.port()])).await;
    let start = Instant::now();
    let r = Client::new().get(&gw.url("/x")).await.unwrap();
    let took = start.elapsed();
    assert_eq!(r.status, 503);
    assert_eq!(a.hits() + b.hits(), 2);
    assert!(took >= Duration::from_millis(280), "waited only {took:?}");
    assert!(
        took < Duration::from_millis(900),
        "Retry-After of 1 s was not capped: {took:?}"
    );
    gw.stop().await;
}

#[tokio::test]
async fn retry_timeout_bounds_all_tries() {
    let ups = [
        TestUpstream::start("a").await,
        TestUpstream::start("b").await,
        TestUpstream::start("c").await,
    ];
    for u in &ups {
        u.set(Behavior::Stall);
    }
    let extra =
        "          retries: 5\n          retry_timeout: 1\n          timeout: { connect: 1, send: 1, read: 0.4 }\n";
    let ports: Vec<u16> = ups.iter().map(|u| u.port()).collect();
    let gw = TestGateway::start(&yaml(extra, &ports)).await;
    let start = Instant::now();
    let r = Client::new().get(&gw.url("/x")).await.unwrap();
    let took = start.elapsed();
    assert_eq!(r.status, 504);
    assert!(took >= Duration::from_millis(950), "{took:?}");
    assert!(
        took < Duration::from_millis(1300),
        "the deadline did not cut the last try: {took:?}"
    );
    let tries: u64 = ups.iter().map(|u| u.hits()).sum();
    assert!((2..=3).contains(&tries), "{tries} tries");
    gw.stop().await;
}
