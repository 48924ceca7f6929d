//! TLS to upstream nodes (`scheme: https`) against a real HTTPS server with its
//! own CA: verification on and off, a custom server name, a wrong CA.

use std::path::Path;

use gatehouse_tests::tls::{Ca, HttpsUpstream, KeyKind};
use gatehouse_tests::{Client, TestGateway};

fn config(port: u16, tls: &str) -> String {
    format!(
        r#"
gateway: {{ group: g, access_log: false }}
services:
  - name: api
    versions:
      - version: "1"
        routes: [ {{ uri: "/*" }} ]
        upstream:
          type: roundrobin
          scheme: https
          retries: 0
          tls: {tls}
gateway_groups:
  - name: g
    services:
      - service: api
        version: "1"
        nodes: [ {{ host: 127.0.0.1, port: {port} }} ]
"#
    )
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p.display().to_string()
}

#[tokio::test]
async fn an_https_upstream_with_its_own_ca_is_verified_by_ip_or_by_sni() {
    let scratch = tempfile::tempdir().unwrap();
    let ca = Ca::new("Backend CA");
    let ca_file = write(scratch.path(), "backend-ca.pem", &ca.pem);
    // Verified against the node's IP.
    let by_ip = HttpsUpstream::start("ip", &ca.server(&["127.0.0.1"], KeyKind::Ecdsa)).await;
    let gw = TestGateway::start(&config(by_ip.addr.port(), &format!("{{ ca_file: {ca_file} }}"))).await;
    for _ in 0..3 {
        let r = Client::new().get(&gw.url("/x")).await.unwrap();
        assert_eq!((r.status, r.text()), (200, "secure ip".to_string()));
    }
    assert_eq!(
        by_ip.handshakes.load(std::sync::atomic::Ordering::Relaxed),
        1,
        "TLS connections are pooled and reused"
    );
    gw.stop().await;

    // Verified against a configured server name.
    let by_name = HttpsUpstream::start("name", &ca.server(&["backend.internal"], KeyKind::Rsa)).await;
    let tls = format!("{{ ca_file: {ca_file}, sni: backend.internal }}");
    let gw = TestGateway::start(&config(by_name.addr.port(), &tls)).await;
    let r = Client::new().get(&gw.url("/x")).await.unwrap();
    assert_eq!((r.status, r.text()), (200, "secure name".to_string()));
    gw.stop().await;
}

#[tokio::test]
async fn a_wrong_ca_is_a_502_counted_as_a_connect_failure_unless_verification_is_off() {
    let scratch = tempfile::tempdir().unwrap();
    let ca = Ca::new("Backend CA");
    let other = Ca::new("Other CA");
    let up = HttpsUpstream::start("n", &ca.server(&["127.0.0.1"], KeyKind::Ecdsa)).await;
    let wrong = write(scratch.path(), "other-ca.pem", &other.pem);
    let gw = TestGateway::start(&config(up.addr.port(), &format!("{{ ca_file: {wrong} }}"))).await;
    let r = Client::new().get(&gw.url("/x")).await.unwrap();
    assert_eq!(r.status, 502);
    assert!(r.text().contains("upstream_connect_failed"), "{}", r.text());
    let metrics = Client::new()
        .get(&format!("{}/metrics", gw.admin))
        .await
        .unwrap()
        .text();
    let line = metrics
        .lines()
        .find(|l| l.starts_with("gatehouse_upstream_attempts_total{") && l.contains("outcome=\"connect_failure\""))
        .unwrap_or_else(|| panic!("no connect_failure attempts in\n{metrics}"));
    assert!(line.ends_with(" 1"), "{line}");
    gw.stop().await;

    // The same server with verification off.
    let gw = TestGateway::start(&config(up.addr.port(), "{ verify: false }")).await;
    let r = Client::new().get(&gw.url("/x")).await.unwrap();
    assert_eq!((r.status, r.text()), (200, "secure n".to_string()));
    gw.stop().await;
}

#[tokio::test]
async fn upstream_tls_settings_are_checked_with_key_paths() {
    let scratch = tempfile::tempdir().unwrap();
    let path = scratch.path().join("gw.yaml");
    let bad = config(9, "{ ca_file: missing-ca.pem }");
    std::fs::write(&path, &bad).unwrap();
    let loaded = gatehouse::config::load_file(&path, &Default::default()).unwrap();
    let errors = gatehouse::tls::check(&loaded.config).unwrap_err();
    assert_eq!(errors[0].path, "services[0].versions[0].upstream.tls.ca_file");
    assert!(errors[0].message.contains("missing-ca.pem"), "{}", errors[0].message);
    std::fs::write(
        &path,
        config(9, "{ verify: false }").replace("scheme: https", "scheme: http"),
    )
    .unwrap();
    let err = gatehouse::config::load_file(&path, &Default::default())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("services[0].versions[0].upstream.tls: only allowed with scheme: https"),
        "{err}"
    );
}

fn two_nodes(a: u16, b: u16, tls: &str, verify_probe: bool) -> String {
    config(a, tls)
        .replace(
            "          retries: 0\n",
            &format!(
                "          retries: 0\n          checks:\n            active:\n              type: https\n              https_verify_certificate: {verify_probe}\n              timeout: 0.5\n              healthy: {{ interval: 0.1, successes: 1 }}\n              unhealthy: {{ interval: 0.1, tcp_failures: 1 }}\n"
            ),
        )
        .replace(
            &format!("nodes: [ {{ host: 127.0.0.1, port: {a} }} ]"),
            &format!("nodes: [ {{ host: 127.0.0.1, port: {a} }}, {{ host: 127.0.0.1, port: {b} }} ]"),
        )
}

/// Whether `n` requests in a row all reach the node named `only`.
async fn only_reaches(gw: &TestGateway, only: &str, n: usize) -> bool {
    for _ in 0..n {
        match Client::new().get(&gw.url("/x")).await {
            Ok(r) if r.status == 200 && r.text() == format!("secure {only}") => {}
            _ => return false,
        }
    }
    true
}

#[tokio::test]
async fn https_probes_verify_the_certificate_unless_told_not_to() {
    let scratch = tempfile::tempdir().unwrap();
    let ca = Ca::new("Backend CA");
    let stranger = Ca::new("Stranger CA");
    let ca_file = write(scratch.path(), "backend-ca.pem", &ca.pem);
    let a = HttpsUpstream::start("a", &ca.server(&["127.0.0.1"], KeyKind::Ecdsa)).await;
    let b = HttpsUpstream::start("b", &stranger.server(&["127.0.0.1"], KeyKind::Ecdsa)).await;
    let tls = format!("{{ ca_file: {ca_file} }}");
    let gw = TestGateway::start(&two_nodes(a.addr.port(), b.addr.port(), &tls, true)).await;
    // The probe fails b's handshake: b is ejected before any request is sent (so
    // not by passive checks), and only a serves.
    let probed = gatehouse_tests::eventually(std::time::Duration::from_secs(10), || async {
        b.handshakes.load(std::sync::atomic::Ordering::Relaxed) == 0
            && a.handshakes.load(std::sync::atomic::Ordering::Relaxed) >= 2
    })
    .await;
    assert!(probed, "the https probe did not reach a");
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(
        only_reaches(&gw, "a", 10).await,
        "b (untrusted certificate) was not ejected by the https probe"
    );
    gw.stop().await;

    // Probes and traffic without verification: both nodes stay in.
    let gw = TestGateway::start(&two_nodes(a.addr.port(), b.addr.port(), "{ verify: false }", false)).await;
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..10 {
        let r = Client::new().get(&gw.url("/x")).await.unwrap();
        assert_eq!(r.status, 200);
        seen.insert(r.text());
    }
    assert_eq!(seen.len(), 2, "{seen:?}");
    gw.stop().await;
}
