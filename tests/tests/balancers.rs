//! The four built-in balancers, measured through a real gateway in front of real
//! upstream servers.

use gatehouse::control::Served;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use gatehouse::config;
use gatehouse_tests::{Behavior, Client, TestGateway, TestUpstream};

fn config_yaml(balancer: &str, extra: &str, nodes: &[(&TestUpstream, u32)]) -> String {
    let nodes: String = nodes
        .iter()
        .map(|(u, w)| format!("          - {{ host: 127.0.0.1, port: {}, weight: {w} }}\n", u.port()))
        .collect();
    format!(
        r#"
gateway: {{ group: g, access_log: false }}
services:
  - name: api
    versions:
      - version: "1"
        routes: [ {{ uri: "/*" }} ]
        upstream:
          type: {balancer}
{extra}
gateway_groups:
  - name: g
    services:
      - service: api
        version: "1"
        nodes:
{nodes}"#
    )
}

async fn count_nodes(
    client: &Client,
    url: &str,
    n: usize,
    headers: impl Fn(usize) -> Vec<(String, String)>,
) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for i in 0..n {
        let h = headers(i);
        let hv: Vec<(&str, &str)> = h.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let r = client.request(http::Method::GET, url, &hv, "").await.unwrap();
        assert_eq!(r.status, 200, "{}", r.text());
        *counts.entry(r.node()).or_default() += 1;
    }
    counts
}

#[tokio::test]
async fn weighted_round_robin_follows_weights() {
    let (a, b, c) = (
        TestUpstream::start("a").await,
        TestUpstream::start("b").await,
        TestUpstream::start("c").await,
    );
    let gw = TestGateway::start(&config_yaml("roundrobin", "", &[(&a, 100), (&b, 100), (&c, 50)])).await;
    let counts = count_nodes(&Client::new(), &gw.url("/x"), 1000, |_| vec![]).await;
    for (name, share) in [("a", 0.40), ("b", 0.40), ("c", 0.20)] {
        let got = counts[name] as f64 / 1000.0;
        assert!((got - share).abs() <= 0.03, "{name}: {got} vs {share} ({counts:?})");
    }
    gw.stop().await;
}

#[tokio::test]
async fn weight_zero_receives_nothing() {
    let (a, b) = (TestUpstream::start("a").await, TestUpstream::start("b").await);
    let gw = TestGateway::start(&config_yaml("roundrobin", "", &[(&a, 1), (&b, 0)])).await;
    let counts = count_nodes(&Client::new(), &gw.url("/x"), 50, |_| vec![]).await;
    assert_eq!(counts.get("b"), None);
    assert_eq!(b.hits(), 0);
    gw.stop().await;
}

#[tokio::test]
async fn chash_is_sticky_and_moves_few_keys_when_a_node_leaves() {
    let ups = [
        TestUpstream::start("n0").await,
        TestUpstream::start("n1").await,
        TestUpstream::start("n2").await,
        TestUpstream::start("n3").await,
    ];
    let extra = "          hash_on: header\n          key: x-user\n";
    let all: Vec<(&TestUpstream, u32)> = ups.iter().map(|u| (u, 100)).collect();
    let gw = TestGateway::start(&config_yaml("chash", extra, &all)).await;
    let client = Client::new();
    let key_header = |i: usize| vec![("x-user".to_string(), format!("user-{i}"))];
    let mut first = Vec::new();
    for i in 0..1000 {
        let hv = key_header(i);
        let r = client
            .request(http::Method::GET, &gw.url("/k"), &[(&hv[0].0, &hv[0].1)], "")
            .await
            .unwrap();
        first.push(r.node());
    }
    // Same key, same node.
    for i in (0..1000).step_by(50) {
        let hv = key_header(i);
        let r = client
            .request(http::Method::GET, &gw.url("/k"), &[(&hv[0].0, &hv[0].1)], "")
            .await
            .unwrap();
        assert_eq!(r.node(), first[i]);
    }
    // Remove n3 with a config swap.
    let three: Vec<(&TestUpstream, u32)> = ups[..3].iter().map(|u| (u, 100)).collect();
    let text = config_yaml("chash", extra, &three);
    let loaded = config::load_str(&text, "test", &gw_overrides(), std::path::Path::new(".")).unwrap();
    gw.gateway.state.apply(loaded.config);
    let mut moved = 0;
    for (i, before) in first.iter().enumerate() {
        let hv = key_header(i);
        let r = client
            .request(http::Method::GET, &gw.url("/k"), &[(&hv[0].0, &hv[0].1)], "")
            .await
            .unwrap();
        if &r.node() != before {
            moved += 1;
            assert_eq!(before, "n3", "key user-{i} moved off a node that stayed");
        }
    }
    assert!(moved <= 350, "{moved} of 1000 keys moved");
    assert!(moved > 0);
    gw.stop().await;
}

fn gw_overrides() -> config::Overrides {
    config::Overrides {
        listen: Some("127.0.0.1:0".parse().unwrap()),
        admin_listen: Some("127.0.0.1:0".parse().unwrap()),
        ..Default::default()
    }
}

#[tokio::test]
async fn chash_missing_key_falls_back_to_client_address() {
    let ups = [
        TestUpstream::start("n0").await,
        TestUpstream::start("n1").await,
        TestUpstream::start("n2").await,
    ];
    let extra = "          hash_on: cookie\n          key: sid\n";
    let all: Vec<(&TestUpstream, u32)> = ups.iter().map(|u| (u, 1)).collect();
    let gw = TestGateway::start(&config_yaml("chash", extra, &all)).await;
    // All requests come from 127.0.0.1 without the cookie: one node serves them all.
    let counts = count_nodes(&Client::new(), &gw.url("/"), 30, |_| vec![]).await;
    assert_eq!(counts.len(), 1, "{counts:?}");
    // With the cookie, keys spread.
    let counts = count_nodes(&Client::new(), &gw.url("/"), 300, |i| {
        vec![("cookie".to_string(), format!("a=1; sid=s{i}"))]
    })
    .await;
    assert_eq!(counts.len(), 3, "{counts:?}");
    gw.stop().await;
}

/// 16 concurrent clients; one node answers 200 ms slower; it must get under 15 %.
async fn slow_node_share(balancer: &str) -> f64 {
    let (a, b, slow) = (
        TestUpstream::start("fast-a").await,
        TestUpstream::start("fast-b").await,
        TestUpstream::start("slow").await,
    );
    a.set(Behavior::Delay(Duration::from_millis(2)));
    b.set(Behavior::Delay(Duration::from_millis(2)));
    slow.set(Behavior::Delay(Duration::from_millis(202)));
    let gw = TestGateway::start(&config_yaml(balancer, "", &[(&a, 100), (&b, 100), (&slow, 100)])).await;
    let client = Client::new();
    let url = Arc::new(gw.url("/work"));
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let client = client.clone();
        let url = url.clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..60 {
                let r = client.get(&url).await.unwrap();
                assert_eq!(r.status, 200);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let total = (a.hits() + b.hits() + slow.hits()) as f64;
    gw.stop().await;
    slow.hits() as f64 / total
}

#[tokio::test]
async fn least_conn_avoids_a_slow_node() {
    let share = slow_node_share("least_conn").await;
    assert!(share < 0.15, "slow node got {:.1} %", share * 100.0);
}

#[tokio::test]
async fn ewma_avoids_a_slow_node() {
    let share = slow_node_share("ewma").await;
    assert!(share < 0.15, "slow node got {:.1} %", share * 100.0);
}
