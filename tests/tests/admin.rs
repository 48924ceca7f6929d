//! The admin API end to end: the API7 publish walkthrough, auth, bad bodies,
//! persistence across restarts, and bad config at startup. Export/import and
//! in-memory-only writes are in [`backup`].

#[path = "admin/backup.rs"]
mod backup;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use gatehouse::config::{self, Overrides};
use gatehouse::{Gateway, StartOptions};
use gatehouse_tests::gateway::{binary, free_port};
use gatehouse_tests::{BinaryGateway, Client, Reply, TestGateway, TestUpstream, eventually};
use http::Method;
use serde_json::{Value, json};

const JSON: (&str, &str) = ("content-type", "application/json");

fn petstore(test_port: u16, prod_port: u16) -> String {
    format!(
        r#"
gateway:
  access_log: false
  group: test
services:
  - name: petstore
    versions:
      - version: 1.0.0
        routes:
          - {{ uri: "/pet/*" }}
        upstream: {{ type: roundrobin }}
gateway_groups:
  - name: test
    services:
      - service: petstore
        version: 1.0.0
        nodes: [ {{ host: 127.0.0.1, port: {test_port} }} ]
  - name: prod
    services:
      - service: petstore
        version: 1.0.0
        nodes: [ {{ host: 127.0.0.1, port: {prod_port} }} ]
"#
    )
}

/// An in-process gateway on an existing config file, on ephemeral ports.
async fn start_on(path: &Path, group: Option<&str>) -> Gateway {
    let overrides = Overrides {
        group: group.map(str::to_string),
        listen: Some("127.0.0.1:0".parse().unwrap()),
        admin_listen: Some("127.0.0.1:0".parse().unwrap()),
        ..Default::default()
    };
    let loaded = config::load_file(path, &overrides).unwrap_or_else(|e| panic!("{e}"));
    Gateway::start(
        loaded,
        StartOptions {
            config_path: Some(path.to_path_buf()),
            overrides,
            ..StartOptions::default()
        },
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"))
}

async fn send(method: Method, url: &str, headers: &[(&str, &str)], body: impl Into<bytes::Bytes>) -> Reply {
    Client::new()
        .request(method, url, headers, body)
        .await
        .unwrap_or_else(|e| panic!("{url}: {e}"))
}

async fn put_json(url: &str, body: &Value) -> Reply {
    send(Method::PUT, url, &[JSON], body.to_string()).await
}

async fn get_json(url: &str) -> Value {
    let r = send(Method::GET, url, &[], "").await;
    assert_eq!(r.status, 200, "{url}: {}", r.text());
    r.json()
}

/// Nodes (`x-node`) that answered `n` GETs of `url`.
async fn nodes_hit(url: &str, n: usize) -> BTreeSet<String> {
    let client = Client::new();
    let mut seen = BTreeSet::new();
    for _ in 0..n {
        let r = client.get(url).await.unwrap();
        assert_eq!(r.status, 200, "{url}: {}", r.text());
        seen.insert(r.node());
    }
    seen
}

fn served(services: &Value, name: &str) -> (String, String, Vec<u64>) {
    let s = services["services"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["service"] == name)
        .unwrap_or_else(|| panic!("{name} not served: {services}"));
    let ports = s["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["port"].as_u64().unwrap())
        .collect();
    (
        s["version"].as_str().unwrap().to_string(),
        s["balancer"].as_str().unwrap().to_string(),
        ports,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api7_walkthrough_publishes_versions_and_edits_nodes_per_group() {
    let (n1, n2, n3) = (
        TestUpstream::start("n1").await,
        TestUpstream::start("n2").await,
        TestUpstream::start("prod").await,
    );
    let test = TestGateway::start(&petstore(n1.port(), n3.port())).await;
    let prod = start_on(&test.config_path(), Some("prod")).await;
    let prod_url = format!("http://{}/pet/1", prod.proxy_addr);
    let prod_admin = format!("http://{}", prod.admin_addr);
    assert_eq!(
        nodes_hit(&test.url("/pet/1"), 6).await,
        BTreeSet::from(["n1".to_string()])
    );

    // Add a second node with weight 100 in place: no restart, traffic reaches both.
    let nodes_url = format!("{}/admin/v1/groups/test/services/petstore/nodes", test.admin);
    let body = json!({ "nodes": [
        { "host": "127.0.0.1", "port": n1.port(), "weight": 100, "zone": "zone-a" },
        { "host": "127.0.0.1", "port": n2.port(), "weight": 100, "zone": "zone-b", "priority": 0 },
    ]});
    let r = put_json(&nodes_url, &body).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["persisted"], true);
    let hit = nodes_hit(&test.url("/pet/1"), 20).await;
    assert_eq!(hit, BTreeSet::from(["n1".to_string(), "n2".to_string()]));
    let services = get_json(&format!("{}/admin/v1/services", test.admin)).await;
    let node = &services["services"][0]["nodes"][1];
    assert_eq!(node["zone"], "zone-b");
    assert_eq!(node["weight"], 100);
    assert_eq!(node["state"], "healthy", "{services}");
    let file = std::fs::read_to_string(test.config_path()).unwrap();
    assert!(
        file.contains(&n2.port().to_string()),
        "node edit not persisted:\n{file}"
    );

    // Changing the balancer of the published 1.0.0 is refused, and changes nothing.
    let before = send(Method::GET, &format!("{}/admin/v1/config", test.admin), &[], "").await;
    let version = json!({ "routes": [ { "uri": "/pet/*" } ], "upstream": { "type": "least_conn" } });
    let r = put_json(
        &format!("{}/admin/v1/services/petstore/versions/1.0.0", test.admin),
        &version,
    )
    .await;
    assert_eq!(r.status, 409, "{}", r.text());
    assert_eq!(r.json()["error"]["code"], "immutable");
    let after = send(Method::GET, &format!("{}/admin/v1/config", test.admin), &[], "").await;
    assert_eq!(before.body, after.body);

    // Create 1.0.1 with least_conn and publish it to `test`.
    let r = put_json(
        &format!("{}/admin/v1/services/petstore/versions/1.0.1", test.admin),
        &version,
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let publish = json!({ "service": "petstore", "version": "1.0.1" });
    let r = send(
        Method::POST,
        &format!("{}/admin/v1/groups/test/publish", test.admin),
        &[JSON],
        publish.to_string(),
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["previous"], "1.0.0");
    let services = get_json(&format!("{}/admin/v1/services", test.admin)).await;
    let (v, balancer, ports) = served(&services, "petstore");
    assert_eq!((v.as_str(), balancer.as_str()), ("1.0.1", "least_conn"));
    assert_eq!(ports, vec![u64::from(n1.port()), u64::from(n2.port())], "nodes kept");
    let hit = nodes_hit(&test.url("/pet/1"), 20).await;
    assert!(hit.contains("n1") || hit.contains("n2"), "{hit:?}");

    // 1.0.1 is now published: it has become immutable too.
    let changed = json!({ "routes": [ { "uri": "/pet/*" } ], "upstream": { "type": "ewma" } });
    let r = put_json(
        &format!("{}/admin/v1/services/petstore/versions/1.0.1", test.admin),
        &changed,
    )
    .await;
    assert_eq!(r.status, 409);

    // The second group, which publishes 1.0.0 from the same file, saw the changes
    // (its generation moved) but still serves 1.0.0 with its own node only.
    let target = test.gateway.control.generation();
    assert!(target >= 4);
    let moved = eventually(Duration::from_secs(10), || async {
        get_json(&format!("{prod_admin}/admin/v1/status")).await["in_sync"] == true
            && prod.control.served_raw().gateway_groups[0].services[0].version == "1.0.1"
    })
    .await;
    assert!(moved, "the prod unit never read the file changes");
    let services = get_json(&format!("{prod_admin}/admin/v1/services")).await;
    assert_eq!(
        served(&services, "petstore"),
        (
            "1.0.0".to_string(),
            "roundrobin".to_string(),
            vec![u64::from(n3.port())]
        )
    );
    assert_eq!(nodes_hit(&prod_url, 10).await, BTreeSet::from(["prod".to_string()]));
    prod.shutdown().await;
    test.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_names_and_invalid_values_get_404_and_422_with_paths() {
    let n1 = TestUpstream::start("n1").await;
    let gw = TestGateway::start(&petstore(n1.port(), n1.port())).await;
    let admin = &gw.admin;
    let generation = gw.gateway.control.generation();
    let r = put_json(
        &format!("{admin}/admin/v1/groups/nope/services/petstore/nodes"),
        &json!({ "nodes": [] }),
    )
    .await;
    assert_eq!((r.status, r.json()["error"]["code"].clone()), (404, json!("not_found")));
    let r = put_json(
        &format!("{admin}/admin/v1/groups/test/services/nope/nodes"),
        &json!({ "nodes": [] }),
    )
    .await;
    assert_eq!(r.status, 404);
    let r = send(
        Method::POST,
        &format!("{admin}/admin/v1/groups/test/publish"),
        &[JSON],
        json!({ "service": "petstore", "version": "9.9.9" }).to_string(),
    )
    .await;
    assert_eq!(r.status, 404);
    let r = put_json(
        &format!("{admin}/admin/v1/groups/test/services/petstore/nodes"),
        &json!({ "nodes": [ { "host": "127.0.0.1", "port": 0 } ] }),
    )
    .await;
    assert_eq!(r.status, 422, "{}", r.text());
    assert_eq!(r.json()["error"]["path"], "nodes[0].port");
    let r = put_json(
        &format!("{admin}/admin/v1/services/petstore/versions/2.0.0"),
        &json!({ "routes": [ { "uri": "/pet/*" } ], "upstream": { "type": "fastest" } }),
    )
    .await;
    assert_eq!(r.status, 422, "{}", r.text());
    assert_eq!(r.json()["error"]["path"], "upstream.type");
    let r = put_json(
        &format!("{admin}/admin/v1/services/petstore/versions/2.0.0"),
        &json!({ "version": "3.0.0", "routes": [ { "uri": "/x" } ] }),
    )
    .await;
    assert_eq!((r.status, r.json()["error"]["path"].clone()), (400, json!("version")));
    let r = send(Method::GET, &format!("{admin}/admin/v1/nothing"), &[], "").await;
    assert_eq!(r.status, 404);
    let r = send(Method::DELETE, &format!("{admin}/admin/v1/config"), &[], "").await;
    assert_eq!(r.status, 405);
    assert_eq!(
        gw.gateway.control.generation(),
        generation,
        "a failed call changed state"
    );
    gw.stop().await;
}

/// Runs the binary with an environment variable, returning it once ready.
async fn binary_with_env(config: &Path, admin_listen: &str, env: &[(&str, &str)]) -> BinaryGateway {
    let mut cmd = tokio::process::Command::new(binary());
    let port = free_port();
    cmd.arg("run")
        .arg("--config")
        .arg(config)
        .arg("--listen")
        .arg(format!("127.0.0.1:{port}"))
        .arg("--admin-listen")
        .arg(admin_listen)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .kill_on_drop(true);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let admin_port = admin_listen.rsplit(':').next().unwrap();
    let gw = BinaryGateway {
        child: cmd.spawn().unwrap(),
        url: format!("http://127.0.0.1:{port}"),
        admin: format!("http://127.0.0.1:{admin_port}"),
    };
    gw.wait_ready(Duration::from_secs(20)).await;
    gw
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_body_limits_and_malformed_json_never_change_state() {
    let n1 = TestUpstream::start("n1").await;
    let dir = tempfile::tempdir().unwrap();
    let yaml = petstore(n1.port(), n1.port()).replace(
        "  access_log: false\n",
        "  access_log: false\n  admin: { token_env: GATEHOUSE_TEST_ADMIN_TOKEN }\n",
    );
    let path = gatehouse_tests::write_config(dir.path(), "gw.yaml", &yaml);
    let mut gw = binary_with_env(
        &path,
        &format!("127.0.0.1:{}", free_port()),
        &[("GATEHOUSE_TEST_ADMIN_TOKEN", "s3cret")],
    )
    .await;
    let admin = gw.admin.clone();
    let nodes = format!("{admin}/admin/v1/groups/test/services/petstore/nodes");
    let good = json!({ "nodes": [ { "host": "127.0.0.1", "port": n1.port(), "weight": 5 } ] }).to_string();
    let auth = ("authorization", "Bearer s3cret");
    let file_before = std::fs::read(&path).unwrap();
    let status_before = get_json(&format!("{admin}/admin/v1/status")).await;

    let r = send(Method::PUT, &nodes, &[JSON], good.clone()).await;
    assert_eq!(
        (r.status, r.json()["error"]["code"].clone()),
        (401, json!("unauthorized"))
    );
    assert_eq!(r.header("www-authenticate").as_deref(), Some("Bearer"));
    let r = send(
        Method::PUT,
        &nodes,
        &[JSON, ("authorization", "Bearer nope")],
        good.clone(),
    )
    .await;
    assert_eq!((r.status, r.json()["error"]["code"].clone()), (403, json!("forbidden")));
    let r = send(Method::GET, &format!("{admin}/admin/v1/config"), &[], "").await;
    assert_eq!(r.status, 401, "the export can hold credentials");
    let r = send(Method::PUT, &format!("{admin}/admin/v1/config"), &[], "gateway: {}").await;
    assert_eq!(r.status, 401);
    let huge = format!(r#"{{"nodes": [], "pad": "{}"}}"#, "x".repeat(2 * 1024 * 1024));
    let r = send(Method::PUT, &nodes, &[JSON, auth], huge).await;
    assert_eq!(
        (r.status, r.json()["error"]["code"].clone()),
        (413, json!("body_too_large"))
    );
    let r = send(Method::PUT, &nodes, &[JSON, auth], r#"{"nodes": [ {"host": "#).await;
    assert_eq!(
        (r.status, r.json()["error"]["code"].clone()),
        (400, json!("malformed_json"))
    );
    let r = send(
        Method::PUT,
        &nodes,
        &[JSON, auth],
        r#"{"nodes": [ {"host": "h", "port": "x"} ]}"#,
    )
    .await;
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["error"]["path"], "nodes[0].port");
    let r = send(Method::PUT, &nodes, &[JSON, auth], r#"{"nodes": [], "colour": 1}"#).await;
    assert_eq!(r.status, 400);
    let r = send(
        Method::PUT,
        &format!("{admin}/admin/v1/config"),
        &[auth],
        "services: [ {",
    )
    .await;
    assert_eq!(r.status, 400);

    // Nothing above changed anything.
    assert_eq!(std::fs::read(&path).unwrap(), file_before);
    let status = get_json(&format!("{admin}/admin/v1/status")).await;
    assert_eq!(status["generation"], status_before["generation"]);
    assert_eq!(status["sha256"], status_before["sha256"]);

    // Reads stay open; the right token writes.
    let r = send(Method::PUT, &nodes, &[JSON, auth], good).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let services = get_json(&format!("{admin}/admin/v1/services")).await;
    assert_eq!(services["services"][0]["nodes"][0]["weight"], 5);
    gw.signal("TERM");
    assert_eq!(gw.wait(Duration::from_secs(20)).await, Some(0));

    // A non-loopback admin listener needs a token...
    let out = tokio::time::timeout(
        Duration::from_secs(20),
        tokio::process::Command::new(binary())
            .args(["run", "--config"])
            .arg(&path)
            .args(["--listen", &format!("127.0.0.1:{}", free_port())])
            .args(["--admin-listen", &format!("0.0.0.0:{}", free_port())])
            .env_remove("GATEHOUSE_TEST_ADMIN_TOKEN")
            .output(),
    )
    .await
    .expect("the gateway must refuse to start, not run")
    .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("non-loopback"), "{stderr}");
    // ...and starts with one.
    let port = free_port();
    let mut open = binary_with_env(
        &path,
        &format!("0.0.0.0:{port}"),
        &[("GATEHOUSE_TEST_ADMIN_TOKEN", "s3cret")],
    )
    .await;
    let r = send(
        Method::PUT,
        &format!("{}/admin/v1/config", open.admin),
        &[],
        "gateway: {}",
    )
    .await;
    assert_eq!(r.status, 401);
    open.signal("TERM");
    open.wait(Duration::from_secs(20)).await;
}
