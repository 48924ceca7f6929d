//! Units: several `gatehouse run` processes sharing one config file converge on
//! every change, and `/readyz` tells an outer load balancer when a unit can serve.

use std::path::Path;
use std::time::{Duration, Instant};

use gatehouse_tests::{Behavior, BinaryGateway, Client, TestUpstream};
use http::Method;
use serde_json::{Value, json};

fn yaml(ports: &[u16]) -> String {
    let nodes: Vec<String> = ports
        .iter()
        .map(|p| format!("{{ host: 127.0.0.1, port: {p}, zone: zone-a }}"))
        .collect();
    format!(
        r#"gateway:
  access_log: false
  region: region-1
  shutdown_grace: 10
services:
  - name: petstore
    versions:
      - version: 1.0.0
        routes: [ {{ uri: "/pet/*" }} ]
gateway_groups:
  - name: default
    services:
      - service: petstore
        version: 1.0.0
        nodes: [ {} ]
"#,
        nodes.join(", ")
    )
}

async fn ports(admin: &str) -> Vec<u64> {
    let Ok(r) = Client::new().get(&format!("{admin}/admin/v1/services")).await else {
        return Vec::new();
    };
    let v: Value = r.json();
    v["services"][0]["nodes"]
        .as_array()
        .map(|n| n.iter().map(|n| n["port"].as_u64().unwrap()).collect())
        .unwrap_or_default()
}

/// Waits until every unit serves `expected` nodes; returns the time it took.
async fn converge(units: &[&BinaryGateway], expected: &[u16], start: Instant) -> Duration {
    let expected: Vec<u64> = expected.iter().map(|p| u64::from(*p)).collect();
    for u in units {
        while ports(&u.admin).await != expected {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "unit {} never served {expected:?}",
                u.admin
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    start.elapsed()
}

fn write_by_hand(path: &Path, text: &str) {
    let tmp = path.with_file_name("gw.yaml.new");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_units_on_one_file_serve_every_change_within_a_second() {
    let (a, b) = (TestUpstream::start("a").await, TestUpstream::start("b").await);
    let dir = tempfile::tempdir().unwrap();
    let path = gatehouse_tests::write_config(dir.path(), "gw.yaml", &yaml(&[a.port()]));
    let u1 = BinaryGateway::start(&path, &["--zone", "zone-a"]).await;
    let u2 = BinaryGateway::start(&path, &["--zone", "zone-b"]).await;
    let u3 = BinaryGateway::start(&path, &["--zone", "zone-c"]).await;
    for (u, zone) in [(&u1, "zone-a"), (&u2, "zone-b"), (&u3, "zone-c")] {
        let s: Value = Client::new()
            .get(&format!("{}/admin/v1/status", u.admin))
            .await
            .unwrap()
            .json();
        assert_eq!(s["zone"], zone);
        assert_eq!(
            Client::new().get(&format!("{}/readyz", u.admin)).await.unwrap().status,
            200
        );
    }

    // An admin write on unit 1 ...
    let start = Instant::now();
    let body = json!({ "nodes": [
        { "host": "127.0.0.1", "port": a.port(), "zone": "zone-a" },
        { "host": "127.0.0.1", "port": b.port(), "zone": "zone-b" },
    ]});
    let r = Client::new()
        .request(
            Method::PUT,
            &format!("{}/admin/v1/groups/default/services/petstore/nodes", u1.admin),
            &[("content-type", "application/json")],
            body.to_string(),
        )
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    // ... is served by units 2 and 3.
    let took = converge(&[&u2, &u3], &[a.port(), b.port()], start).await;
    eprintln!("admin write on unit 1 served by units 2 and 3 after {took:?}");
    assert!(took < Duration::from_secs(5), "took {took:?} (aim: under 1 s)");
    // Unit 3 is in zone-c: nothing local, so it spreads over both zones' nodes.
    let client = Client::new();
    let mut nodes = std::collections::BTreeSet::new();
    for _ in 0..20 {
        nodes.insert(client.get(&u3.url("/pet/1")).await.unwrap().node());
    }
    assert!(nodes.contains("b"), "{nodes:?}");

    // A change by hand reaches all three.
    let start = Instant::now();
    write_by_hand(&path, &yaml(&[b.port()]));
    let took = converge(&[&u1, &u2, &u3], &[b.port()], start).await;
    eprintln!("hand edit served by all three units after {took:?}");
    assert!(took < Duration::from_secs(5), "took {took:?} (aim: under 1 s)");
    for u in [&u1, &u2, &u3] {
        let s: Value = Client::new()
            .get(&format!("{}/admin/v1/status", u.admin))
            .await
            .unwrap()
            .json();
        assert_eq!(s["in_sync"], true, "{s}");
        assert_eq!(s["loaded_by"], "file_change", "{s}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_answers_503_while_a_unit_drains() {
    let slow = TestUpstream::start("slow").await;
    slow.set(Behavior::Delay(Duration::from_millis(1500)));
    let dir = tempfile::tempdir().unwrap();
    let path = gatehouse_tests::write_config(dir.path(), "gw.yaml", &yaml(&[slow.port()]));
    let mut gw = BinaryGateway::start(&path, &[]).await;
    let readyz = format!("{}/readyz", gw.admin);
    assert_eq!(Client::new().get(&readyz).await.unwrap().status, 200);
    let url = gw.url("/pet/1");
    let in_flight = tokio::spawn(async move { Client::new().get(&url).await });
    while slow.hits() == 0 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    gw.signal("TERM");
    let mut saw_503 = false;
    for _ in 0..100 {
        if let Ok(r) = Client::new().get(&readyz).await
            && r.status == 503
        {
            saw_503 = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(saw_503, "/readyz never said 503 during the drain");
    let r = in_flight.await.unwrap().unwrap();
    assert_eq!(r.status, 200, "the in-flight request was cut");
    assert_eq!(gw.wait(Duration::from_secs(20)).await, Some(0));
}
