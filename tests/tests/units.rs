//! Units: several `gatehouse run` processes sharing one config file converge on
//! every change, and `/readyz` tells an outer load balancer when a unit can serve.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

use gatehouse::config::{self, Overrides};
use gatehouse::{Gateway, StartOptions};
use gatehouse_tests::gateway::{binary, free_port};
use gatehouse_tests::{Behavior, BinaryGateway, Client, Reply, TestGateway, TestUpstream};
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

async fn call(method: Method, url: &str, body: &Value) -> Reply {
    let headers = [("content-type", "application/json")];
    Client::new()
        .request(method, url, &headers, body.to_string())
        .await
        .unwrap()
}

/// An in-process unit on an existing config file, on ephemeral ports.
async fn start_on(path: &Path) -> Gateway {
    let overrides = Overrides {
        listen: Some("127.0.0.1:0".parse().unwrap()),
        admin_listen: Some("127.0.0.1:0".parse().unwrap()),
        ..Default::default()
    };
    let loaded = config::load_file(path, &overrides).unwrap_or_else(|e| panic!("{e}"));
    let options = StartOptions {
        config_path: Some(path.to_path_buf()),
        overrides,
        ..StartOptions::default()
    };
    Gateway::start(loaded, options).await.unwrap_or_else(|e| panic!("{e}"))
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_unit_keeps_admin_edits() {
    let (n1, n2) = (TestUpstream::start("n1").await, TestUpstream::start("n2").await);
    let dir = tempfile::tempdir().unwrap();
    let path = gatehouse_tests::write_config(dir.path(), "gw.yaml", &yaml(&[n1.port()]));
    let mut gw = BinaryGateway::start(&path, &[]).await;
    let version = json!({ "routes": [ { "uri": "/pet/*" } ], "upstream": { "type": "least_conn" } });
    let r = call(
        Method::PUT,
        &format!("{}/admin/v1/services/petstore/versions/1.0.1", gw.admin),
        &version,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let publish = json!({ "service": "petstore", "version": "1.0.1" });
    let r = call(
        Method::POST,
        &format!("{}/admin/v1/groups/default/publish", gw.admin),
        &publish,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let nodes = json!({ "nodes": [ { "host": "127.0.0.1", "port": n2.port(), "weight": 7 } ] });
    let url = format!("{}/admin/v1/groups/default/services/petstore/nodes", gw.admin);
    let r = call(Method::PUT, &url, &nodes).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let services = format!("{}/admin/v1/services", gw.admin);
    let before = Client::new().get(&services).await.unwrap().json()["services"].clone();
    gw.signal("TERM");
    assert_eq!(gw.wait(Duration::from_secs(20)).await, Some(0));

    let gw = BinaryGateway::start(&path, &[]).await;
    let services = format!("{}/admin/v1/services", gw.admin);
    let after = Client::new().get(&services).await.unwrap().json()["services"].clone();
    assert_eq!(after[0]["version"], "1.0.1");
    assert_eq!(after[0]["balancer"], "least_conn");
    assert_eq!(after[0]["nodes"][0]["weight"], 7);
    assert_eq!(after[0]["nodes"][0]["port"], before[0]["nodes"][0]["port"]);
    let client = Client::new();
    for _ in 0..5 {
        assert_eq!(client.get(&gw.url("/pet/1")).await.unwrap().node(), "n2");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_truncated_or_garbage_config_at_startup_exits_non_zero() {
    let dir = tempfile::tempdir().unwrap();
    let full = yaml(&[9]);
    let cut = &full[..full.find("routes:").unwrap() + 14];
    let cases: [(&str, &[u8]); 4] = [
        ("truncated.yaml", cut.as_bytes()),
        ("garbage.yaml", b"\x00\x9f\x92\x96 not yaml {{{ ]]"),
        ("empty.yaml", b""),
        ("wrong.yaml", b"services: 7\n"),
    ];
    for (name, content) in cases {
        let path = dir.path().join(name);
        std::fs::write(&path, content).unwrap();
        let out = tokio::time::timeout(
            Duration::from_secs(20),
            tokio::process::Command::new(binary())
                .args(["run", "--config"])
                .arg(&path)
                .args(["--listen", &format!("127.0.0.1:{}", free_port())])
                .args(["--admin-listen", &format!("127.0.0.1:{}", free_port())])
                .output(),
        )
        .await
        .unwrap_or_else(|_| panic!("{name}: the gateway started instead of refusing"))
        .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{name}: exit {:?}", out.status);
        assert!(
            stderr.contains(name),
            "{name}: the error should name the file: {stderr}"
        );
        assert!(
            stderr.contains("invalid") || stderr.contains("cannot read"),
            "{name}: {stderr}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_admin_writers_on_two_units_lose_no_update() {
    let n1 = TestUpstream::start("n1").await;
    let unit1 = TestGateway::start(&yaml(&[n1.port()])).await;
    let unit2 = start_on(&unit1.config_path()).await;
    let admins = [unit1.admin.clone(), format!("http://{}", unit2.admin_addr)];
    let mut tasks = Vec::new();
    for i in 0..16 {
        let admin = admins[i % 2].clone();
        tasks.push(tokio::spawn(async move {
            let body = json!({ "routes": [ { "uri": format!("/v{i}/*") } ] });
            call(
                Method::PUT,
                &format!("{admin}/admin/v1/services/petstore/versions/2.{i}"),
                &body,
            )
            .await
        }));
    }
    for t in tasks {
        let r = t.await.unwrap();
        assert_eq!(r.status, 200, "{}", r.text());
    }
    let file = config::load_file(&unit1.config_path(), &Overrides::default()).unwrap();
    let versions: BTreeSet<String> = file.raw.services[0]
        .versions
        .iter()
        .map(|v| v.version.clone())
        .collect();
    for i in 0..16 {
        assert!(versions.contains(&format!("2.{i}")), "2.{i} lost: {versions:?}");
    }
    unit2.shutdown().await;
    unit1.stop().await;
}
