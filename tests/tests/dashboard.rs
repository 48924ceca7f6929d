//! The dashboard in a real headless Chromium: rendering, live health, the seed
//! walkthrough done through the page, node weights and drains, errors shown inline,
//! the token rule, and the demo's page (with a screenshot).
//!
//! One browser at a time (a lock), each test bounded by the page waits.

use std::collections::HashMap;
use std::time::Duration;

use gatehouse_tests::browser::{Browser, WAIT};
use gatehouse_tests::{BinaryGateway, Client, TestGateway, TestUpstream};
use http::Method;
use serde_json::Value;
use tokio::sync::Mutex;

static ONE_BROWSER: Mutex<()> = Mutex::const_new(());

fn config(nodes: &[(&TestUpstream, &str, u32)], upstream: &str) -> String {
    let nodes: String = nodes
        .iter()
        .map(|(u, zone, w)| {
            format!(
                "          - {{ host: 127.0.0.1, port: {}, weight: {w}, zone: {zone} }}\n",
                u.port()
            )
        })
        .collect();
    format!(
        r#"gateway:
  group: test
  zone: zone-a
  region: region-1
services:
  - name: petstore
    versions:
      - version: 1.0.0
        routes:
          - {{ uri: "/*" }}
        upstream:
{upstream}
gateway_groups:
  - name: test
    services:
      - service: petstore
        version: 1.0.0
        nodes:
{nodes}"#
    )
}

/// Sends `n` requests through the gateway and counts answers per node.
async fn spread(gw: &TestGateway, n: usize) -> HashMap<String, usize> {
    let client = Client::new();
    let mut out = HashMap::new();
    for _ in 0..n {
        let r = client.get(&gw.url("/pet/1")).await.expect("request");
        *out.entry(r.node()).or_default() += 1;
    }
    out
}

async fn services(admin: &str) -> Value {
    Client::new()
        .get(&format!("{admin}/admin/v1/services"))
        .await
        .unwrap()
        .json()
}

fn row(port: u16) -> String {
    format!("[data-service=\"petstore\"] tr[data-node=\"127.0.0.1:{port}\"]")
}

/// Waits until the row of node `port` has `data-{attr}` equal to `value`.
async fn wait_row(browser: &Browser, port: u16, attr: &str, value: &str) {
    let script = format!(
        "return document.querySelector('{}')?.dataset.{attr} === '{value}'",
        row(port)
    );
    browser.wait_js(&script, &format!("node {port} {attr} {value}")).await;
}

/// Sends requests to `url` until the page shows `css` (a row) in `state`.
async fn until_state(browser: &Browser, url: &str, css: &str, state: &str) -> bool {
    let client = Client::new();
    let script = format!("return document.querySelector('{css}')?.dataset.state === '{state}'");
    for _ in 0..150 {
        let _ = client.get(url).await;
        if browser.js(&script).await == Value::Bool(true) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

/// Sets the weight of node `port` through the change-weight form.
async fn set_weight(browser: &Browser, port: u16, weight: &str) {
    let form = "[data-service=\"petstore\"] .forms form.set-weight";
    browser
        .select(&format!("{form} select[name=node]"), &format!("127.0.0.1:{port}"))
        .await;
    browser.fill(&format!("{form} input[name=weight]"), weight).await;
    browser.click(&format!("{form} button[type=submit]")).await;
}

/// The page loads without errors and shows every node under its zone; a node the
/// test kills turns "ejected" and comes back when restarted. The error collector
/// itself is checked to catch an error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_by_zone_and_a_killed_node_is_ejected_then_returns() {
    let _one = ONE_BROWSER.lock().await;
    let a = TestUpstream::start("a").await;
    let b1 = TestUpstream::start("b1").await;
    let b2 = TestUpstream::start("b2").await;
    let upstream = "          type: roundrobin\n          zone_routing: \"off\"\n          retries: 2\n          checks:\n            passive:\n              unhealthy: { tcp_failures: 1 }\n              base_ejection_time: 3\n";
    let gw = TestGateway::start(&config(
        &[(&a, "zone-a", 100), (&b1, "zone-b", 100), (&b2, "zone-b", 100)],
        upstream,
    ))
    .await;
    let browser = Browser::start().await;
    browser.open(&format!("{}/#traffic", gw.admin)).await;
    for (u, zone) in [(&a, "zone-a"), (&b1, "zone-b"), (&b2, "zone-b")] {
        browser
            .wait_js(
                &format!(
                    "return !!document.querySelector('[data-zone=\"{zone}\"] tr[data-node=\"127.0.0.1:{}\"]')",
                    u.port()
                ),
                &format!("{} under {zone}", u.name),
            )
            .await;
    }
    assert_eq!(browser.page_errors().await, Some(vec![]), "the page logged errors");

    b1.stop();
    let ejected = until_state(&browser, &gw.url("/x"), &row(b1.port()), "ejected").await;
    assert!(ejected, "the killed node never showed as ejected");
    let badge = browser.text(&format!("{} td.state", row(b1.port()))).await;
    assert!(badge.contains("ejected") && badge.contains("s left"), "{badge}");

    let _b1 = TestUpstream::start_on("b1", b1.addr).await;
    let back = until_state(&browser, &gw.url("/x"), &row(b1.port()), "healthy").await;
    assert!(back, "the restarted node never showed as healthy again");

    // The events view lists the transitions of that node.
    browser.click("#tabs a[data-view=events]").await;
    browser
        .fill("#event-filter input[name=node]", &b1.port().to_string())
        .await;
    browser
        .wait_js(
            "return [...document.querySelectorAll('#view-events li[data-type=health]')].some(li => li.textContent.includes('ejected'))",
            "the ejection in the events view",
        )
        .await;
    assert_eq!(browser.page_errors().await, Some(vec![]), "the page logged errors");
    // The collector catches errors (else the checks above could not fail).
    browser
        .js("console.error('probe-console'); window.dispatchEvent(new ErrorEvent('error', { message: 'probe-error' })); return null")
        .await;
    browser
        .wait_js(
            "return ['probe-console', 'probe-error'].every(p => window.__gatehouseErrors.some(e => e.includes(p)))",
            "the probe errors",
        )
        .await;
    browser.close().await;
    gw.stop().await;
}

/// Weight 300:100 shifts the measured spread; a bad weight shows the API's error
/// next to the field; a drained node gets nothing, an undrained one its weight back.
async fn weights_and_drain(browser: &Browser, gw: &TestGateway, n1: &TestUpstream, n2: &TestUpstream) {
    set_weight(browser, n1.port(), "300").await;
    wait_row(browser, n1.port(), "weight", "300").await;
    let s = spread(gw, 200).await;
    let (c1, c2) = (s.get("n1").copied().unwrap_or(0), s.get("n2").copied().unwrap_or(0));
    assert!(c1 > 2 * c2 && c2 > 0, "300:100 weights gave {s:?}");

    set_weight(browser, n1.port(), "lots").await;
    let err = browser
        .text("[data-service=\"petstore\"] form.set-weight input[name=weight] + .field-error")
        .await;
    assert!(err.contains("invalid type") || err.contains("expected"), "{err}");
    set_weight(browser, n1.port(), "100").await;
    wait_row(browser, n1.port(), "weight", "100").await;

    browser.click(&format!("{} button.drain", row(n2.port()))).await;
    wait_row(browser, n2.port(), "weight", "0").await;
    let s = spread(gw, 40).await;
    assert_eq!(s.get("n2"), None, "a drained node got traffic: {s:?}");
    browser.click(&format!("{} button.undrain", row(n2.port()))).await;
    wait_row(browser, n2.port(), "weight", "100").await;
}

/// Makes version 1.0.1 from the published 1.0.0 in the page: least connections,
/// active HTTP `/health` and passive checks; then publishes it.
async fn publish_101_through_the_page(browser: &Browser) {
    browser.click("#tabs a[data-view=services]").await;
    let editor = "[data-service=\"petstore\"] form.new-version";
    browser
        .wait_js(
            &format!("return !!document.querySelector('{editor}')"),
            "the version editor",
        )
        .await;
    assert_eq!(
        browser
            .js(&format!(
                "return document.querySelector('{editor} input[name=version]').value"
            ))
            .await,
        "1.0.1"
    );
    browser
        .select(&format!("{editor} select[name=\"upstream.type\"]"), "least_conn")
        .await;
    browser.click(&format!("{editor} input[name=active]")).await;
    browser
        .select(
            &format!("{editor} select[name=\"upstream.checks.active.type\"]"),
            "http",
        )
        .await;
    browser
        .fill(
            &format!("{editor} input[name=\"upstream.checks.active.http_path\"]"),
            "/health",
        )
        .await;
    browser.click(&format!("{editor} input[name=passive]")).await;
    browser.click(&format!("{editor} button.create-publish")).await;
    browser
        .wait_js(
            "return !!document.querySelector('[data-service=\"petstore\"] tr[data-version=\"1.0.1\"] .badge.active')",
            "1.0.1 published",
        )
        .await;
}

/// The seed walkthrough through the page alone, plus weights, drain and a bad
/// weight's error shown next to the field.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn walkthrough_weights_and_drain_through_the_page() {
    let _one = ONE_BROWSER.lock().await;
    let n1 = TestUpstream::start("n1").await;
    let n2 = TestUpstream::start("n2").await;
    let gw = TestGateway::start(&config(&[(&n1, "zone-a", 100)], "          type: roundrobin\n")).await;
    let browser = Browser::start().await;
    browser.open(&format!("{}/#traffic", gw.admin)).await;
    let forms = "[data-service=\"petstore\"] .forms";

    // Add a second node.
    browser
        .wait_js(&format!("return !!document.querySelector('{}')", row(n1.port())), "n1")
        .await;
    browser
        .fill(
            &format!("{forms} form.add-node input[name=port]"),
            &n2.port().to_string(),
        )
        .await;
    browser
        .click(&format!("{forms} form.add-node button[type=submit]"))
        .await;
    browser
        .wait_js(
            &format!("return !!document.querySelector('{}')", row(n2.port())),
            "n2 added",
        )
        .await;

    weights_and_drain(&browser, &gw, &n1, &n2).await;

    publish_101_through_the_page(&browser).await;

    let svc = services(&gw.admin).await;
    let pet = &svc["services"][0];
    assert_eq!(pet["version"], "1.0.1", "{svc}");
    assert_eq!(pet["balancer"], "least_conn", "{svc}");
    assert_eq!(pet["nodes"].as_array().unwrap().len(), 2, "{svc}");
    let version = Client::new()
        .get(&format!("{}/admin/v1/versions", gw.admin))
        .await
        .unwrap()
        .json();
    let v = &version["services"][0]["versions"][1]["config"]["upstream"];
    assert_eq!(v["checks"]["active"]["http_path"], "/health", "{v}");
    assert!(v["checks"]["passive"].is_object(), "{v}");
    tokio::time::timeout(WAIT, async {
        loop {
            if n1.health_hits() > 0 && n2.health_hits() > 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .expect("active checks probe both nodes");
    let s = spread(&gw, 40).await;
    assert!(
        s.contains_key("n1") && s.contains_key("n2"),
        "traffic after publish: {s:?}"
    );
    assert_eq!(browser.page_errors().await, Some(vec![]), "the page logged errors");
    browser.close().await;
    gw.stop().await;
}

/// With a token configured, the page without it is read-only: its actions are
/// refused by the API and the refusal is shown; with the token they work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_token_actions_are_refused() {
    let _one = ONE_BROWSER.lock().await;
    let n1 = TestUpstream::start("n1").await;
    let yaml = config(&[(&n1, "zone-a", 100)], "          type: roundrobin\n").replace(
        "gateway:\n",
        "gateway:\n  admin: { token_env: GATEHOUSE_DASHBOARD_TEST_TOKEN }\n",
    );
    let dir = tempfile::tempdir().unwrap();
    let path = gatehouse_tests::write_config(dir.path(), "gw.yaml", &yaml);
    let gw = BinaryGateway::start_with_env(&path, &[], &[("GATEHOUSE_DASHBOARD_TEST_TOKEN", "s3cret-token")]).await;
    let browser = Browser::start().await;
    browser.open(&format!("{}/#traffic", gw.admin)).await;
    assert_eq!(browser.text("#access").await, "read-only");
    let forms = "[data-service=\"petstore\"] .forms";
    browser
        .wait_js(&format!("return !!document.querySelector('{}')", row(n1.port())), "n1")
        .await;
    browser.click(&format!("{} button.drain", row(n1.port()))).await;
    let err = browser.text(&format!("{forms} form.node-actions .form-error")).await;
    assert!(err.contains("refused") && err.contains("unauthorized"), "{err}");
    assert_eq!(services(&gw.admin).await["services"][0]["nodes"][0]["weight"], 100);

    browser.fill("#token-input", "s3cret-token").await;
    browser.click("#token-save").await;
    browser.click(&format!("{} button.drain", row(n1.port()))).await;
    browser
        .wait_js(
            &format!(
                "return document.querySelector('{}')?.dataset.weight === '0'",
                row(n1.port())
            ),
            "drained",
        )
        .await;
    let r = Client::new()
        .request(Method::GET, &format!("{}/", gw.admin), &[], "")
        .await
        .unwrap();
    assert!(
        r.header("content-security-policy")
            .unwrap()
            .contains("script-src 'self'")
    );
    assert_eq!(browser.page_errors().await, Some(vec![]), "the page logged errors");
    browser.close().await;
    drop(gw);
}

/// `gatehouse demo` prints the dashboard's URL; the page shows its six nodes in
/// three zones; stopping a node from the page takes it out, starting it brings it
/// back. Saves a screenshot under the target directory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_page_stops_and_starts_a_node() {
    use tokio::io::{AsyncBufReadExt, BufReader};
    let _one = ONE_BROWSER.lock().await;
    let (proxy, admin) = (
        gatehouse_tests::gateway::free_port(),
        gatehouse_tests::gateway::free_port(),
    );
    let mut child = tokio::process::Command::new(gatehouse_tests::gateway::binary())
        .args([
            "demo",
            "--listen",
            &format!("127.0.0.1:{proxy}"),
            "--admin-listen",
            &format!("127.0.0.1:{admin}"),
        ])
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start gatehouse demo");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let url = tokio::time::timeout(WAIT, async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if let Some(rest) = line.strip_prefix("Dashboard: ") {
                return rest.split_whitespace().next().unwrap().to_string();
            }
        }
        panic!("the demo ended without printing the dashboard URL");
    })
    .await
    .expect("the demo prints the dashboard URL");
    assert_eq!(url, format!("http://127.0.0.1:{admin}/"));
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });

    let browser = Browser::start().await;
    browser.open(&format!("{url}#traffic")).await;
    browser
        .wait_js(
            "return ['zone-a','zone-b','zone-c'].every(z => document.querySelectorAll(`[data-service=\"hello\"] [data-zone=\"${z}\"] tr[data-node]`).length === 2)",
            "six demo nodes in three zones",
        )
        .await;
    let client = Client::new();
    for _ in 0..30 {
        client
            .get(&format!("http://127.0.0.1:{proxy}/hello"))
            .await
            .expect("demo request");
    }
    let a1 = "[data-service=\"hello\"] [data-zone=\"zone-a\"] tr[data-node]:first-of-type";
    browser.click(&format!("{a1} button.demo-stop")).await;
    let a1_out = format!(
        "return !!document.querySelector('{a1} button.demo-start') && document.querySelector('{a1}').dataset.state !== 'healthy'"
    );
    let mut out = false;
    for _ in 0..100 {
        let _ = client.get(&format!("http://127.0.0.1:{proxy}/hello")).await;
        if browser.js(&a1_out).await == Value::Bool(true) {
            out = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(out, "the stopped demo node never left the healthy state");
    let shot = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard-demo.png");
    browser.screenshot(&shot).await;
    assert!(std::fs::metadata(&shot).unwrap().len() > 10_000, "screenshot too small");
    browser.click(&format!("{a1} button.demo-start")).await;
    browser
        .wait_js(
            &format!("return document.querySelector('{a1}').dataset.state === 'healthy'"),
            "a-1 healthy again",
        )
        .await;
    // The other views render too (screenshots for a look).
    for view in ["overview", "services", "events"] {
        browser.click(&format!("#tabs a[data-view={view}]")).await;
        browser
            .wait_js(
                &format!("return document.querySelector('#view-{view}').children.length > 0"),
                view,
            )
            .await;
        browser
            .screenshot(&std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("dashboard-demo-{view}.png")))
            .await;
    }
    assert_eq!(browser.page_errors().await, Some(vec![]), "the page logged errors");
    browser.close().await;
    child.kill().await.ok();
}

/// The read endpoints behind the page: rate-limit usage of the busiest keys, the
/// event journal as JSON, and as a live event stream that delivers a refused
/// change as it happens.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ratelimits_and_the_event_stream() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let n1 = TestUpstream::start("n1").await;
    let upstream = "          type: roundrobin\n        limits:\n          - { name: per-client, key: remote_addr, algorithm: sliding_window, count: 50, window: 60 }\n";
    let gw = TestGateway::start(&config(&[(&n1, "zone-a", 100)], upstream)).await;
    let client = Client::new();
    for _ in 0..3 {
        assert_eq!(client.get(&gw.url("/x")).await.unwrap().status, 200);
    }
    let rl = client
        .get(&format!("{}/admin/v1/ratelimits", gw.admin))
        .await
        .unwrap()
        .json();
    let rule = &rl["services"][0]["rules"][0];
    assert_eq!(rule["name"], "per-client", "{rl}");
    assert_eq!(rule["usage"]["busiest"][0]["key"], "127.0.0.1", "{rl}");
    assert_eq!(rule["usage"]["busiest"][0]["used"], 3, "{rl}");
    assert_eq!(rule["usage"]["busiest"][0]["limit"], 50, "{rl}");
    assert_eq!(rl["redis"]["configured"], false, "{rl}");

    let events = client
        .get(&format!("{}/admin/v1/events", gw.admin))
        .await
        .unwrap()
        .json();
    let first = &events["events"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(
        (first["type"].as_str(), first["source"].as_str()),
        (Some("config"), Some("startup")),
        "{events}"
    );

    let addr = gw.admin.trim_start_matches("http://").to_string();
    let mut stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
    stream
        .write_all(
            format!("GET /admin/v1/events HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\n\r\n").as_bytes(),
        )
        .await
        .unwrap();
    let mut seen = String::new();
    let mut buf = [0u8; 4096];
    tokio::time::timeout(WAIT, async {
        while !seen.contains("\"source\":\"startup\"") {
            let n = stream.read(&mut buf).await.unwrap();
            assert!(n > 0, "stream closed: {seen}");
            seen.push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    })
    .await
    .expect("history on the stream");
    assert!(seen.contains("content-type: text/event-stream"), "{seen}");
    let bad = client
        .request(
            Method::PUT,
            &format!("{}/admin/v1/groups/test/services/petstore/nodes", gw.admin),
            &[],
            r#"{"nodes": [{"host": "127.0.0.1", "port": 0}]}"#,
        )
        .await
        .unwrap();
    assert_eq!(bad.status, 422, "{}", bad.text());
    tokio::time::timeout(WAIT, async {
        while !seen.contains("\"ok\":false") {
            let n = stream.read(&mut buf).await.unwrap();
            assert!(n > 0, "stream closed: {seen}");
            seen.push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    })
    .await
    .expect("the refused change arrives live");
    assert!(seen.contains("\"source\":\"admin\""), "{seen}");
    // The stream stays open while the gateway stops: it must end, not hold the
    // shutdown.
    assert!(gw.stop().await, "the event stream held the shutdown");
    let ended = tokio::time::timeout(WAIT, async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(
        ended.is_ok(),
        "the event stream was still open after the gateway stopped"
    );
}
