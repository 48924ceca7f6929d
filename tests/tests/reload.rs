//! Hot reload of the config file: under load, with invalid changes in between,
//! atomic renames and in-place rewrites, SIGHUP, and live state across reloads.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use gatehouse::config::{self, Overrides};
use gatehouse_tests::{BinaryGateway, Client, TestGateway, TestUpstream, eventually};
use http::Method;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

fn yaml(ports: &[u16]) -> String {
    let nodes: Vec<String> = ports
        .iter()
        .map(|p| format!("{{ host: 127.0.0.1, port: {p} }}"))
        .collect();
    format!(
        r#"gateway:
  access_log: false
services:
  - name: api
    versions:
      - version: "1"
        routes: [ {{ uri: "/api/*" }} ]
        upstream: {{ type: roundrobin, retries: 0 }}
gateway_groups:
  - name: default
    services:
      - service: api
        version: "1"
        nodes: [ {} ]
"#,
        nodes.join(", ")
    )
}

/// Invalid variants of [`yaml`], each for a different reason.
fn invalid(kind: usize, port: u16) -> String {
    let good = yaml(&[port]);
    let text = match kind % 4 {
        0 => good.replace("type: roundrobin", "type: fastest"),
        1 => "services: [ { name: \"api\n".to_string(),
        // Cut mid-string, as a crashed writer would leave it.
        2 => good[..good.find("/api/*").unwrap() + 3].to_string(),
        // Valid YAML that lost its groups: refused, this unit would serve nothing.
        _ => good[..good.find("gateway_groups:").unwrap()].to_string(),
    };
    assert_ne!(text, good);
    text
}

fn sha(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

/// Writes like an editor or `kubectl` that replaces the file (temp + rename), or
/// like one that rewrites it in place.
fn write(path: &Path, text: &str, rename: bool) {
    if rename {
        let tmp = path.with_file_name("incoming.tmp");
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, path).unwrap();
    } else {
        std::fs::write(path, text).unwrap();
    }
}

async fn get_json(url: &str) -> Value {
    let r = Client::new().get(url).await.unwrap();
    assert_eq!(r.status, 200, "{url}: {}", r.text());
    r.json()
}

async fn served_ports(admin: &str) -> Vec<u64> {
    let s = get_json(&format!("{admin}/admin/v1/services")).await;
    s["services"][0]["nodes"]
        .as_array()
        .map(|n| n.iter().map(|n| n["port"].as_u64().unwrap()).collect())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hot_reload_under_load_fails_no_request_and_follows_valid_changes() {
    let (a, b) = (TestUpstream::start("a").await, TestUpstream::start("b").await);
    let gw = TestGateway::start(&yaml(&[a.port()])).await;
    let path = gw.config_path();
    let admin = gw.admin.clone();
    let writes_done = Arc::new(AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let failures = Arc::new(Mutex::new(Vec::new()));
    let mut loops = Vec::new();
    for _ in 0..4 {
        let (url, done, ok, failed, failures) = (
            gw.url("/api/x"),
            writes_done.clone(),
            ok.clone(),
            failed.clone(),
            failures.clone(),
        );
        loops.push(tokio::spawn(async move {
            let client = Client::new();
            while !(done.load(Ordering::Acquire) && ok.load(Ordering::Relaxed) + failed.load(Ordering::Relaxed) >= 2000)
            {
                match client.get(&url).await {
                    Ok(r) if r.status == 200 => {
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                    other => {
                        failed.fetch_add(1, Ordering::Relaxed);
                        failures.lock().unwrap().push(format!("{other:?}"));
                    }
                }
            }
        }));
    }

    let mut serving = a.port();
    let mut generation = get_json(&format!("{admin}/admin/v1/status")).await["generation"]
        .as_u64()
        .unwrap();
    for i in 0..20 {
        let rename = i % 4 < 2;
        if i % 2 == 0 {
            let next = if serving == a.port() { b.port() } else { a.port() };
            write(&path, &yaml(&[next]), rename);
            let followed = eventually(Duration::from_secs(10), || async {
                served_ports(&admin).await == vec![u64::from(next)]
            })
            .await;
            assert!(followed, "valid change {i} was not served");
            let status = get_json(&format!("{admin}/admin/v1/status")).await;
            assert!(status["generation"].as_u64().unwrap() > generation);
            assert_eq!(status["in_sync"], true);
            generation = status["generation"].as_u64().unwrap();
            serving = next;
        } else {
            let text = invalid(i / 2, serving);
            assert!(
                config::load_str(&text, "t", &Overrides::default(), Path::new(".")).is_err() || i / 2 % 4 == 3,
                "variant {i} should not validate"
            );
            write(&path, &text, rename);
            let hash = sha(&text);
            let reported = eventually(Duration::from_secs(10), || async {
                get_json(&format!("{admin}/admin/v1/status")).await["last_error"]["sha256"] == hash.as_str()
            })
            .await;
            assert!(reported, "invalid change {i} was not reported");
            let status = get_json(&format!("{admin}/admin/v1/status")).await;
            assert_eq!(
                status["generation"].as_u64().unwrap(),
                generation,
                "invalid change {i} applied"
            );
            assert_eq!(status["in_sync"], false);
            assert!(!status["last_error"]["errors"].as_array().unwrap().is_empty());
            assert_eq!(served_ports(&admin).await, vec![u64::from(serving)]);
        }
    }
    writes_done.store(true, Ordering::Release);
    for l in loops {
        l.await.unwrap();
    }
    let total = ok.load(Ordering::Relaxed) + failed.load(Ordering::Relaxed);
    eprintln!("hot reload under load: {total} requests, 20 rewrites");
    assert!(total >= 2000);
    assert_eq!(
        failed.load(Ordering::Relaxed),
        0,
        "failures: {:?}",
        failures.lock().unwrap()
    );
    assert!(a.hits() > 0 && b.hits() > 0, "traffic followed the valid changes");
    let metrics = Client::new().get(&format!("{admin}/metrics")).await.unwrap().text();
    assert!(
        metrics.contains(r#"gatehouse_config_reloads_total{result="invalid"}"#),
        "{metrics}"
    );
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invalid_file_is_reported_with_key_paths_and_blocks_edits_until_fixed() {
    let (a, b) = (TestUpstream::start("a").await, TestUpstream::start("b").await);
    let gw = TestGateway::start(&yaml(&[a.port()])).await;
    let admin = gw.admin.clone();
    let path = gw.config_path();
    let generation = gw.gateway.control.generation();
    write(&path, &invalid(0, a.port()), true);
    let reported = eventually(Duration::from_secs(10), || async {
        !get_json(&format!("{admin}/admin/v1/status")).await["last_error"].is_null()
    })
    .await;
    assert!(reported);
    let status = get_json(&format!("{admin}/admin/v1/status")).await;
    assert_eq!(
        status["last_error"]["errors"][0]["path"],
        "services[0].versions[0].upstream.type"
    );
    assert_eq!(status["last_error"]["cause"], "file_change");
    assert_eq!(status["in_sync"], false);
    assert_eq!(gw.gateway.control.generation(), generation);
    assert_eq!(Client::new().get(&gw.url("/api/x")).await.unwrap().status, 200);

    // An admin edit on top of an unknown, invalid file change would discard it: refused.
    let nodes = format!("{admin}/admin/v1/groups/default/services/api/nodes");
    let body = json!({ "nodes": [ { "host": "127.0.0.1", "port": b.port() } ] }).to_string();
    let r = Client::new()
        .request(Method::PUT, &nodes, &[], body.clone())
        .await
        .unwrap();
    assert_eq!(r.status, 409, "{}", r.text());
    assert_eq!(r.json()["error"]["code"], "source_invalid");
    assert_eq!(r.json()["error"]["path"], "services[0].versions[0].upstream.type");

    // An import repairs the file.
    let r = Client::new()
        .request(Method::PUT, &format!("{admin}/admin/v1/config"), &[], yaml(&[b.port()]))
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    let status = get_json(&format!("{admin}/admin/v1/status")).await;
    assert_eq!(
        (status["in_sync"].clone(), status["loaded_by"].clone()),
        (json!(true), json!("admin"))
    );
    assert_eq!(served_ports(&admin).await, vec![u64::from(b.port())]);
    let r = Client::new().request(Method::PUT, &nodes, &[], body).await.unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_state_survives_a_reload_and_editor_double_writes_settle() {
    let (a, b) = (TestUpstream::start("a").await, TestUpstream::start("b").await);
    let gw = TestGateway::start(&yaml(&[a.port()])).await;
    let admin = gw.admin.clone();
    let client = Client::new();
    for _ in 0..10 {
        assert_eq!(client.get(&gw.url("/api/x")).await.unwrap().status, 200);
    }
    // An editor that truncates, writes, then writes again.
    let path = gw.config_path();
    std::fs::write(&path, "").unwrap();
    std::fs::write(&path, &yaml(&[a.port()])[..40]).unwrap();
    std::fs::write(&path, yaml(&[a.port(), b.port()])).unwrap();
    let two = eventually(Duration::from_secs(10), || async {
        served_ports(&admin).await.len() == 2
    })
    .await;
    assert!(two);
    let services = get_json(&format!("{admin}/admin/v1/services")).await;
    let nodes = services["services"][0]["nodes"].as_array().unwrap().clone();
    assert!(
        nodes[0]["requests"].as_u64().unwrap() >= 10,
        "a's counters were reset: {services}"
    );
    assert_eq!(nodes[1]["requests"], 0);
    // Settled on the final content; no error left that is newer than it.
    let status = get_json(&format!("{admin}/admin/v1/status")).await;
    assert_eq!(status["in_sync"], true, "{status}");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_forces_a_reload() {
    let a = TestUpstream::start("a").await;
    let dir = tempfile::tempdir().unwrap();
    let path = gatehouse_tests::write_config(dir.path(), "gw.yaml", &yaml(&[a.port()]));
    let mut gw = BinaryGateway::start(&path, &[]).await;
    let status = get_json(&format!("{}/admin/v1/status", gw.admin)).await;
    assert_eq!(status["loaded_by"], "startup");
    let generation = status["generation"].as_u64().unwrap();
    gw.signal("HUP");
    let reloaded = eventually(Duration::from_secs(10), || async {
        let s = get_json(&format!("{}/admin/v1/status", gw.admin)).await;
        s["loaded_by"] == "signal" && s["generation"].as_u64().unwrap() == generation + 1
    })
    .await;
    assert!(reloaded, "SIGHUP did not reload");
    assert_eq!(Client::new().get(&gw.url("/api/x")).await.unwrap().status, 200);
    gw.signal("TERM");
    assert_eq!(gw.wait(Duration::from_secs(20)).await, Some(0));
}
