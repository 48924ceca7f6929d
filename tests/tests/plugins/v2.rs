//! Plugin API 0.2 in a real gateway: the `premium_latency` example (a 0.2 balancer that
//! reads live node latency and a request header by value) serving next to the 0.1
//! plugins, with real upstreams of different speeds.

use std::collections::HashMap;
use std::time::Duration;

use gatehouse_tests::{Behavior, Client, TestGateway, TestUpstream};
use http::Method;

use super::{Svc, config_with, install, plugin_report, plugin_yaml, scratch};

async fn node_of(client: &Client, url: &str, tier: Option<&str>) -> String {
    let headers: Vec<(&str, &str)> = tier.map(|t| ("x-tier", t)).into_iter().collect();
    let r = client.request(Method::GET, url, &headers, "").await.unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    r.node()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn premium_latency_sends_gold_to_the_fastest_node_and_rotates_the_rest() {
    let (slow, medium, fast) = (
        TestUpstream::start("slow").await,
        TestUpstream::start("medium").await,
        TestUpstream::start("fast").await,
    );
    slow.set(Behavior::Delay(Duration::from_millis(60)));
    medium.set(Behavior::Delay(Duration::from_millis(25)));
    let dir = scratch();
    install(&dir.path().join("plugins"), "premium_latency", "premium_latency");
    let yaml = config_with(
        dir.path(),
        "  zone: z1\n  region: r1\n",
        &[Svc {
            name: "web",
            prefix: "/",
            plugins: plugin_yaml("balancer", "premium_latency", "{ premium: [gold] }"),
            nodes: vec![(slow.port(), ""), (medium.port(), ""), (fast.port(), "")],
            retries: 0,
            ..Default::default()
        }],
    );
    let gw = TestGateway::start(&yaml).await;
    let client = Client::new();
    let url = gw.url("/x");

    // Everyone else rotates: every node serves, so every node's latency is measured.
    let mut others: HashMap<String, u32> = HashMap::new();
    for i in 0..30 {
        let tier = if i % 2 == 0 { Some("silver") } else { None };
        *others.entry(node_of(&client, &url, tier).await).or_default() += 1;
    }
    assert_eq!(others.len(), 3, "non-gold traffic rotates over all nodes: {others:?}");
    assert!(others.values().all(|n| *n >= 5), "{others:?}");

    // Gold goes to the lowest latency, every time (the header is read by value:
    // case and surrounding spaces do not matter).
    for tier in ["gold", "GOLD", " Gold "] {
        for _ in 0..30 {
            assert_eq!(node_of(&client, &url, Some(tier)).await, "fast");
        }
    }

    // Latency changes move gold traffic: the fast node becomes the slowest.
    fast.set(Behavior::Delay(Duration::from_millis(150)));
    for _ in 0..6 {
        node_of(&client, &url, None).await;
    }
    let moved = node_of(&client, &url, Some("gold")).await;
    assert_ne!(moved, "fast", "gold follows the live latency");

    let report = plugin_report(&gw.admin, "premium_latency").await;
    assert_eq!(report["state"], "active", "{report}");
    assert_eq!(report["kind"], "balancer", "{report}");
    assert_eq!(report["fallbacks"], 0, "{report}");
    assert!(report["calls"].as_u64().unwrap() >= 127, "{report}");
    assert!(gw.stop().await);
}
