//! A published version never changes in place, whatever the source: a file edit, a
//! SIGHUP-style forced reload, an import, or a file changed while the unit was down.
//! Nodes and unpublished versions stay free; `--allow-published-edits` accepts and
//! records.

use std::path::Path;
use std::time::Duration;

use gatehouse::config::{self, Overrides};
use gatehouse::control::ReloadOutcome;
use gatehouse::{Gateway, StartOptions};
use gatehouse_tests::{Client, TestGateway, TestUpstream, eventually};
use serde_json::Value;

/// Service `probe`: 1.0.0 (published, template `upstream_1`) and 2.0.0 (not
/// published, template `upstream_2`), with `nodes`.
fn doc(upstream_1: &str, extra_1: &str, upstream_2: &str, nodes: &[u16]) -> String {
    let nodes: Vec<String> = nodes
        .iter()
        .map(|p| format!("{{ host: 127.0.0.1, port: {p} }}"))
        .collect();
    format!(
        r#"gateway:
  access_log: false
services:
  - name: probe
    versions:
      - version: 1.0.0
        routes: [ {{ uri: "/*" }} ]
        upstream: {upstream_1}
{extra_1}
      - version: 2.0.0
        routes: [ {{ uri: "/*" }} ]
        upstream: {upstream_2}
gateway_groups:
  - name: default
    services:
      - {{ service: probe, version: 1.0.0, nodes: [ {} ] }}
"#,
        nodes.join(", ")
    )
}

const RR: &str = "{ type: roundrobin, retries: 0 }";

async fn json(url: &str) -> Value {
    let r = Client::new().get(url).await.unwrap();
    assert_eq!(r.status, 200, "{url}: {}", r.text());
    r.json()
}

/// Distinct nodes that answered `n` requests with the same `x-user` header.
async fn nodes_seen(gw: &TestGateway, n: usize) -> usize {
    let client = Client::new();
    let mut seen = std::collections::HashSet::new();
    for _ in 0..n {
        let r = client
            .request(
                http::Method::GET,
                &gw.url("/x"),
                &[("x-user", "42")],
                bytes::Bytes::new(),
            )
            .await
            .unwrap();
        assert_eq!(r.status, 200, "{}", r.text());
        seen.insert(r.node());
    }
    seen.len()
}

async fn reload(gw: &TestGateway, text: &str) -> ReloadOutcome {
    std::fs::write(gw.config_path(), text).unwrap();
    gw.gateway.reload().await
}

/// Reloading `text` is refused with an error at `field` of probe@1.0.0, shown in the
/// status; the served generation stays.
async fn assert_refused(gw: &TestGateway, field: &str, text: &str, generation: u64) {
    let ReloadOutcome::Rejected(errors) = reload(gw, text).await else {
        panic!("a change of {field} in published probe@1.0.0 was applied");
    };
    let path = format!("services[0].versions[0].{field}");
    assert!(
        errors.iter().any(|e| e.path.starts_with(&path)
            && e.message.contains("probe@1.0.0")
            && e.message.contains("create version 1.0.1 and publish it")),
        "{field}: {errors:?}"
    );
    let status = json(&format!("{}/admin/v1/status", gw.admin)).await;
    let reported = status["last_error"]["errors"].as_array().unwrap();
    assert!(
        reported.iter().any(|e| e["path"].as_str().unwrap().starts_with(&path)),
        "{field}: {status}"
    );
    assert_eq!(status["in_sync"], false);
    assert_eq!(
        gw.gateway.control.generation(),
        generation,
        "{field} changed what is served"
    );
}

#[tokio::test]
async fn each_template_field_of_a_published_version_is_refused_and_the_old_one_serves() {
    let (a, b) = (TestUpstream::start("a").await, TestUpstream::start("b").await);
    let nodes = [a.port(), b.port()];
    let good = doc(RR, "", RR, &nodes);
    let gw = TestGateway::start(&good).await;
    assert_eq!(nodes_seen(&gw, 4).await, 2, "round robin spreads one user");
    let generation = gw.gateway.control.generation();
    let chash = "{ type: chash, hash_on: header, key: x-user, retries: 0 }";
    let cases: Vec<(&str, String)> = vec![
        ("upstream.type", doc(chash, "", RR, &nodes)),
        (
            "upstream.checks",
            doc(
                "{ type: roundrobin, retries: 0, checks: { passive: { unhealthy: { http_failures: 3 } } } }",
                "",
                RR,
                &nodes,
            ),
        ),
        (
            "upstream.retries",
            doc("{ type: roundrobin, retries: 2 }", "", RR, &nodes),
        ),
        (
            "upstream.timeout",
            doc("{ type: roundrobin, retries: 0, timeout: { read: 9 } }", "", RR, &nodes),
        ),
        (
            "limits",
            doc(
                RR,
                "        limits: [ { key: remote_addr, algorithm: token_bucket, rate: 100, burst: 100 } ]",
                RR,
                &nodes,
            ),
        ),
        (
            "plugins",
            doc(RR, "        plugins: { balancer: { name: pinned } }", RR, &nodes),
        ),
    ];
    for (field, text) in cases {
        assert_refused(&gw, field, &text, generation).await;
    }
    // The old behaviour still serves: round robin, not a hash by user.
    assert_eq!(nodes_seen(&gw, 4).await, 2);
    let services = json(&format!("{}/admin/v1/services", gw.admin)).await;
    assert_eq!(services["services"][0]["balancer"], "roundrobin");
    // Back to the served text: accepted (a forced reload applies it again), in sync.
    assert!(matches!(reload(&gw, &good).await, ReloadOutcome::Applied { .. }));
    let status = json(&format!("{}/admin/v1/status", gw.admin)).await;
    assert_eq!(status["in_sync"], true);
    gw.stop().await;
}

#[tokio::test]
async fn the_hash_key_of_a_published_chash_version_is_refused_and_the_old_key_serves() {
    let (a, b) = (TestUpstream::start("a").await, TestUpstream::start("b").await);
    let nodes = [a.port(), b.port()];
    let by_user = "{ type: chash, hash_on: header, key: x-user, retries: 0 }";
    let gw = TestGateway::start(&doc(by_user, "", RR, &nodes)).await;
    assert_eq!(nodes_seen(&gw, 6).await, 1, "one user, one node");
    let generation = gw.gateway.control.generation();
    let by_other = "{ type: chash, hash_on: header, key: x-other, retries: 0 }";
    assert_refused(&gw, "upstream.key", &doc(by_other, "", RR, &nodes), generation).await;
    // One node per user still; the served document keeps the published key.
    assert_eq!(nodes_seen(&gw, 6).await, 1);
    let cfg = Client::new()
        .request(
            http::Method::GET,
            &format!("{}/admin/v1/config", gw.admin),
            &[("accept", "application/json")],
            bytes::Bytes::new(),
        )
        .await
        .unwrap()
        .json();
    assert_eq!(cfg["services"][0]["versions"][0]["upstream"]["key"], "x-user");
    gw.stop().await;
}

#[tokio::test]
async fn unpublished_versions_and_nodes_change_freely() {
    let (a, b) = (TestUpstream::start("a").await, TestUpstream::start("b").await);
    let gw = TestGateway::start(&doc(RR, "", RR, &[a.port()])).await;
    // 2.0.0 is not published: its template may change.
    let outcome = reload(&gw, &doc(RR, "", "{ type: least_conn }", &[a.port()])).await;
    assert!(matches!(outcome, ReloadOutcome::Applied { .. }), "{outcome:?}");
    // Nodes are runtime config.
    let outcome = reload(&gw, &doc(RR, "", "{ type: least_conn }", &[a.port(), b.port()])).await;
    assert!(matches!(outcome, ReloadOutcome::Applied { .. }), "{outcome:?}");
    // (The file watcher may apply a write before the forced reload does, so the
    // generation can move more than once per write: check what is served instead.)
    let served = gw.gateway.control.served_raw();
    assert_eq!(
        served.services[0].versions[1].upstream.kind.as_deref(),
        Some("least_conn")
    );
    assert_eq!(nodes_seen(&gw, 4).await, 2, "the new node serves");
    gw.stop().await;
}

#[tokio::test]
async fn an_import_that_edits_a_published_version_is_a_conflict() {
    let a = TestUpstream::start("a").await;
    let gw = TestGateway::start(&doc(RR, "", RR, &[a.port()])).await;
    let generation = gw.gateway.control.generation();
    let edited = doc("{ type: least_conn, retries: 0 }", "", RR, &[a.port()]);
    let r = Client::new()
        .request(
            http::Method::PUT,
            &format!("{}/admin/v1/config", gw.admin),
            &[("content-type", "application/yaml")],
            edited,
        )
        .await
        .unwrap();
    assert_eq!(r.status, 409, "{}", r.text());
    assert!(
        r.text().contains("services[0].versions[0].upstream.type"),
        "{}",
        r.text()
    );
    assert_eq!(gw.gateway.control.generation(), generation);
    gw.stop().await;
}

async fn start(path: &Path, allow_published_edits: bool) -> Gateway {
    let overrides = Overrides {
        listen: Some("127.0.0.1:0".parse().unwrap()),
        admin_listen: Some("127.0.0.1:0".parse().unwrap()),
        ..Overrides::default()
    };
    let loaded = config::load_file(path, &overrides).unwrap_or_else(|e| panic!("{e}"));
    let options = StartOptions {
        config_path: Some(path.to_path_buf()),
        overrides,
        allow_published_edits,
    };
    Gateway::start(loaded, options).await.unwrap_or_else(|e| panic!("{e}"))
}

#[tokio::test]
async fn a_file_changed_while_the_unit_was_down_is_reported_and_the_unit_starts_from_its_cache() {
    let (a, b) = (TestUpstream::start("a").await, TestUpstream::start("b").await);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gatehouse.yaml");
    std::fs::write(&path, doc(RR, "", RR, &[a.port(), b.port()])).unwrap();
    let first = start(&path, false).await;
    assert!(dir.path().join("state").join(gatehouse::control::CACHE_FILE).exists());
    first.shutdown().await;

    let chash = "{ type: chash, hash_on: header, key: x-user, retries: 0 }";
    std::fs::write(&path, doc(chash, "", RR, &[a.port(), b.port()])).unwrap();
    let gw = start(&path, false).await;
    let admin = format!("http://{}", gw.admin_addr);
    let status = json(&format!("{admin}/admin/v1/status")).await;
    let errors = status["last_error"]["errors"]
        .as_array()
        .expect("the change is reported");
    assert!(
        errors
            .iter()
            .any(|e| e["path"] == "services[0].versions[0].upstream.type"),
        "{status}"
    );
    assert_eq!(status["in_sync"], false);
    let services = json(&format!("{admin}/admin/v1/services")).await;
    assert_eq!(
        services["services"][0]["balancer"], "roundrobin",
        "served from the cache"
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn the_escape_switch_applies_and_records_each_edit() {
    let a = TestUpstream::start("a").await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gatehouse.yaml");
    std::fs::write(&path, doc(RR, "", RR, &[a.port()])).unwrap();
    let gw = start(&path, true).await;
    let admin = format!("http://{}", gw.admin_addr);
    std::fs::write(&path, doc("{ type: least_conn, retries: 0 }", "", RR, &[a.port()])).unwrap();
    assert!(matches!(gw.reload().await, ReloadOutcome::Applied { .. }));
    let services = json(&format!("{admin}/admin/v1/services")).await;
    assert_eq!(services["services"][0]["balancer"], "least_conn");
    let status = json(&format!("{admin}/admin/v1/status")).await;
    assert_eq!(status["allow_published_edits"], true);
    let edits = status["published_edits"].as_array().unwrap();
    assert_eq!(edits.len(), 1, "{status}");
    assert_eq!(edits[0]["version"], "probe@1.0.0");
    assert_eq!(edits[0]["path"], "services[0].versions[0].upstream.type");
    assert_eq!(edits[0]["was"], "roundrobin");
    assert_eq!(edits[0]["now"], "least_conn");
    let metrics = Client::new().get(&format!("{admin}/metrics")).await.unwrap().text();
    assert!(
        metrics.contains("gatehouse_published_version_edits_total 1"),
        "{metrics}"
    );
    // The file watcher path records too (not only forced reloads).
    std::fs::write(&path, doc("{ type: ewma, retries: 0 }", "", RR, &[a.port()])).unwrap();
    let recorded = eventually(Duration::from_secs(5), || async {
        let s = json(&format!("{admin}/admin/v1/status")).await;
        s["published_edits"].as_array().unwrap().len() == 2
    })
    .await;
    assert!(recorded, "the watcher applied and recorded the second edit");
    gw.shutdown().await;
}
