//! TLS termination with real clients: curl and `openssl s_client` (the system's
//! OpenSSL), and a rustls client speaking HTTP/2 or HTTP/1.1 by ALPN. Certificates
//! are issued per test by a test CA (rcgen; RSA keys from the openssl CLI).

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;
use tokio::process::Command;

use gatehouse_tests::tls::{self, Ca, Issued, KeyKind};
use gatehouse_tests::{Client, TestGateway, TestUpstream, eventually};
use http::Version;

/// A config whose `gateway:` section is `gateway` and that routes everything to `port`.
fn config(gateway: &str, port: u16) -> String {
    format!(
        r#"
gateway:
  group: g
  access_log: false
{gateway}
services:
  - name: api
    versions:
      - version: "1"
        routes: [ {{ uri: "/*" }} ]
        upstream: {{ type: roundrobin }}
gateway_groups:
  - name: g
    services:
      - service: api
        version: "1"
        nodes: [ {{ host: 127.0.0.1, port: {port} }} ]
"#
    )
}

/// `listen` + `tls` with the given certificate entries (YAML flow maps) and extra fields.
fn tls_gateway(certs: &[String], extra: &str) -> String {
    format!(
        "  listen: 127.0.0.1:0\n  tls:\n    certificates:\n{}{extra}",
        certs.iter().map(|c| format!("      - {c}\n")).collect::<String>()
    )
}

fn entry(dir: &Path, name: &str, issued: &Issued, snis: Option<&str>) -> String {
    let (cert, key) = issued.write(dir, name);
    match snis {
        Some(s) => format!("{{ cert: {}, key: {}, snis: {s} }}", cert.display(), key.display()),
        None => format!("{{ cert: {}, key: {} }}", cert.display(), key.display()),
    }
}

/// Runs curl (async: the gateway serves on this test's runtime).
async fn curl(args: &[&str]) -> (bool, String, String) {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "10"])
        .args(args)
        .output()
        .await
        .expect("curl runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

async fn s_client(addr: SocketAddr, args: &[&str]) -> String {
    let run = Command::new("openssl")
        .arg("s_client")
        .arg("-connect")
        .arg(addr.to_string())
        .args(args)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(10), run)
        .await
        .expect("s_client finishes")
        .expect("openssl runs");
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[tokio::test]
async fn sni_selects_certificates_wildcards_and_the_default_for_curl() {
    let up = TestUpstream::start("n1").await;
    let scratch = tempfile::tempdir().unwrap();
    let ca = Ca::new("Test CA");
    let ca_file = scratch.path().join("ca.pem");
    std::fs::write(&ca_file, &ca.pem).unwrap();
    let default = ca.server(&["default.test", "127.0.0.1"], KeyKind::Ed25519);
    let a = ca.server(&["a.test"], KeyKind::Ecdsa);
    let b = ca.server(&["b.test", "*.wild.test"], KeyKind::Rsa);
    let certs = [
        entry(scratch.path(), "default", &default, None),
        entry(scratch.path(), "a", &a, None),
        entry(scratch.path(), "b", &b, None),
    ];
    let gw = TestGateway::start(&config(&tls_gateway(&certs, ""), up.port())).await;
    let port = gw.gateway.proxy_addr.port();
    let cacert = ca_file.to_str().unwrap();
    for name in ["a.test", "b.test", "x.wild.test", "default.test"] {
        let resolve = format!("{name}:{port}:127.0.0.1");
        let url = format!("https://{name}:{port}/hello");
        let (ok, out, err) = curl(&[
            "--cacert",
            cacert,
            "--resolve",
            &resolve,
            "-w",
            " %{http_version}",
            &url,
        ])
        .await;
        assert!(ok, "curl {name} failed (certificate not valid for the name?): {err}");
        assert!(out.contains("n1"), "{name}: body {out}");
        assert!(out.ends_with(" 2"), "{name}: curl negotiates HTTP/2 over TLS: {out}");
    }
    // No SNI (an IP address): the default certificate, which lists the IP.
    let (ok, out, err) = curl(&["--cacert", cacert, &format!("https://127.0.0.1:{port}/x")]).await;
    assert!(ok && out.contains("n1"), "{err}");

    // The exact certificate each name gets, as a rustls client sees it.
    let client = tls::client_config(&ca.pem, &[b"h2", b"http/1.1"], None);
    let addr = gw.gateway.proxy_addr;
    let seen = |name: &'static str| {
        let client = client.clone();
        async move { tls::get(addr, name, &client, "/").await.unwrap().peer_cert }
    };
    assert_eq!(seen("a.test").await, a.der);
    assert_eq!(seen("b.test").await, b.der);
    assert_eq!(seen("y.wild.test").await, b.der);
    assert_eq!(seen("default.test").await, default.der);
    // A name no certificate claims gets the default (and fails verification).
    assert!(tls::get(addr, "unknown.test", &client, "/").await.is_err());
    // Plain HTTP on a TLS listener is refused, not served.
    assert!(Client::new().get(&format!("http://{addr}/")).await.is_err());
    gw.stop().await;
}

#[tokio::test]
async fn alpn_offers_h2_and_http11_min_version_is_enforced_and_sessions_resume() {
    let up = TestUpstream::start("n1").await;
    let scratch = tempfile::tempdir().unwrap();
    let ca = Ca::new("Test CA");
    let cert = ca.server(&["a.test"], KeyKind::Ecdsa);
    let certs = [entry(scratch.path(), "a", &cert, None)];
    let gw = TestGateway::start(&config(&tls_gateway(&certs, "    min_version: \"1.3\"\n"), up.port())).await;
    let addr = gw.gateway.proxy_addr;
    let out = s_client(addr, &["-servername", "a.test", "-alpn", "h2"]).await;
    assert!(out.contains("ALPN protocol: h2"), "{out}");
    assert!(out.contains("TLSv1.3"), "{out}");
    let out = s_client(addr, &["-servername", "a.test", "-alpn", "http/1.1"]).await;
    assert!(out.contains("ALPN protocol: http/1.1"), "{out}");
    let out = s_client(addr, &["-servername", "a.test", "-tls1_2"]).await;
    assert!(
        out.contains("Cipher is (NONE)") && !out.contains("ALPN protocol"),
        "TLS 1.2 is refused: {out}"
    );

    // A real HTTP/2 client over TLS, and an HTTP/1.1-only one.
    let h2 = tls::client_config(&ca.pem, &[b"h2", b"http/1.1"], None);
    let r = tls::get(addr, "a.test", &h2, "/p").await.unwrap();
    assert_eq!(
        (r.status, r.version, r.alpn.as_deref()),
        (200, Version::HTTP_2, Some(&b"h2"[..]))
    );
    assert!(r.body.contains("n1"));
    let h1 = tls::client_config(&ca.pem, &[b"http/1.1"], None);
    let r = tls::get(addr, "a.test", &h1, "/p").await.unwrap();
    assert_eq!((r.status, r.version), (200, Version::HTTP_11));
    // Session tickets: a client that kept its session resumes it.
    let resuming = tls::resuming(&h2);
    assert!(!tls::get(addr, "a.test", &resuming, "/").await.unwrap().resumed);
    assert!(tls::get(addr, "a.test", &resuming, "/").await.unwrap().resumed);
    let none = tls::client_config(&ca.pem, &[], None);
    let r = tls::get(addr, "a.test", &none, "/p").await.unwrap();
    assert_eq!((r.status, r.version, r.alpn), (200, Version::HTTP_11, None));
    gw.stop().await;
}

#[tokio::test]
async fn a_plain_and_a_tls_listener_serve_side_by_side() {
    let up = TestUpstream::start("n1").await;
    let scratch = tempfile::tempdir().unwrap();
    let ca = Ca::new("Test CA");
    let cert = ca.server(&["a.test"], KeyKind::Ecdsa);
    let e = entry(scratch.path(), "a", &cert, None);
    let gateway = format!(
        "  listeners:\n    - {{ addr: 127.0.0.1:0 }}\n    - {{ addr: 127.0.0.1:0, tls: {{ certificates: [ {e} ] }} }}\n"
    );
    let gw = TestGateway::start(&config(&gateway, up.port())).await;
    assert_eq!(gw.gateway.listener_addrs.len(), 2);
    let plain = Client::new().get(&gw.url("/x")).await.unwrap();
    assert_eq!(plain.status, 200);
    let client = tls::client_config(&ca.pem, &[b"h2"], None);
    let r = tls::get(gw.gateway.listener_addrs[1], "a.test", &client, "/x")
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.peer_cert, cert.der);
    gw.stop().await;
}

/// Replaces `name.pem`/`name.key` atomically (temp + rename, key first).
fn replace(dir: &Path, name: &str, issued: &Issued) {
    for (ext, text) in [("key", &issued.key_pem), ("pem", &issued.cert_pem)] {
        let tmp = dir.join(format!(".{name}.{ext}.tmp"));
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, dir.join(format!("{name}.{ext}"))).unwrap();
    }
}

#[tokio::test]
async fn a_certificate_rotated_under_load_fails_no_request_and_new_connections_see_it() {
    let up = TestUpstream::start("n1").await;
    let scratch = tempfile::tempdir().unwrap();
    let ca = Ca::new("Test CA");
    let old = ca.server(&["a.test"], KeyKind::Ecdsa);
    let new = ca.server(&["a.test"], KeyKind::Ecdsa);
    let certs = [entry(scratch.path(), "a", &old, None)];
    let gw = TestGateway::start(&config(&tls_gateway(&certs, ""), up.port())).await;
    let addr = gw.gateway.proxy_addr;
    let client = tls::client_config(&ca.pem, &[b"h2", b"http/1.1"], None);
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, failed, saw_new) = (
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicBool::new(false)),
    );
    let mut load = Vec::new();
    for _ in 0..4 {
        let (client, stop, ok, failed, saw_new, new_der) = (
            client.clone(),
            stop.clone(),
            ok.clone(),
            failed.clone(),
            saw_new.clone(),
            new.der.clone(),
        );
        load.push(tokio::spawn(async move {
            while !stop.load(Ordering::Acquire) {
                match tls::get(addr, "a.test", &client, "/").await {
                    Ok(r) if r.status == 200 => {
                        ok.fetch_add(1, Ordering::Relaxed);
                        if r.peer_cert == new_der {
                            saw_new.store(true, Ordering::Release);
                        }
                    }
                    Ok(r) => panic!("status {}", r.status),
                    Err(e) => {
                        eprintln!("request failed: {e}");
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }));
    }
    assert!(eventually(Duration::from_secs(5), || async { ok.load(Ordering::Relaxed) >= 20 }).await);
    replace(scratch.path(), "a", &new);
    let rotated = eventually(Duration::from_secs(10), || async { saw_new.load(Ordering::Acquire) }).await;
    let before = ok.load(Ordering::Relaxed);
    assert!(
        eventually(Duration::from_secs(5), || async {
            ok.load(Ordering::Relaxed) >= before + 20
        })
        .await
    );
    stop.store(true, Ordering::Release);
    for t in load {
        t.await.unwrap();
    }
    assert!(rotated, "no new connection got the new certificate");
    assert_eq!(failed.load(Ordering::Relaxed), 0, "requests failed during the rotation");
    let status = gw.gateway.control.status();
    assert!(status.last_error.is_none(), "{:?}", status.last_error);
    gw.stop().await;
}

/// Waits until the served config has a rejection naming `path`; its message.
async fn rejection_at(gw: &TestGateway, path: &str) -> String {
    let mut message = String::new();
    let found = eventually(Duration::from_secs(10), || {
        let status = gw.gateway.control.status();
        let hit = status
            .last_error
            .iter()
            .flat_map(|e| e.errors.iter())
            .find(|e| e.path == path)
            .map(|e| e.message.clone());
        if let Some(m) = hit {
            message = m;
        }
        std::future::ready(!message.is_empty())
    })
    .await;
    assert!(
        found,
        "no rejection at {path}: {:?}",
        gw.gateway.control.status().last_error
    );
    message
}

#[tokio::test]
async fn broken_mismatched_or_expired_files_are_refused_and_the_old_pair_keeps_serving() {
    let up = TestUpstream::start("n1").await;
    let scratch = tempfile::tempdir().unwrap();
    let ca = Ca::new("Test CA");
    let good = ca.server(&["a.test"], KeyKind::Ecdsa);
    let certs = [entry(scratch.path(), "a", &good, None)];
    let gw = TestGateway::start(&config(&tls_gateway(&certs, ""), up.port())).await;
    let addr = gw.gateway.proxy_addr;
    let client = tls::client_config(&ca.pem, &[b"h2"], None);
    let serves_good = || async { tls::get(addr, "a.test", &client, "/").await.unwrap().peer_cert == good.der };
    assert!(serves_good().await);

    // A certificate file that is not PEM.
    std::fs::write(scratch.path().join("a.pem"), "not a certificate\n").unwrap();
    let m = rejection_at(&gw, "gateway.tls.certificates[0].cert").await;
    assert!(m.contains("a.pem") && m.contains("no usable certificate"), "{m}");
    assert!(serves_good().await);

    // The key of another certificate.
    let other = ca.server(&["a.test"], KeyKind::Ecdsa);
    std::fs::write(scratch.path().join("a.pem"), &good.cert_pem).unwrap();
    std::fs::write(scratch.path().join("a.key"), &other.key_pem).unwrap();
    let m = rejection_at(&gw, "gateway.tls.certificates[0].key").await;
    assert!(m.contains("does not match"), "{m}");
    assert!(serves_good().await);

    // An expired pair.
    let expired = ca.expired_server(&["a.test"]);
    replace(scratch.path(), "a", &expired);
    let m = loop {
        let m = rejection_at(&gw, "gateway.tls.certificates[0].cert").await;
        if m.contains("expired") {
            break m;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(m.contains("expired"), "{m}");
    assert!(serves_good().await);

    // Good files again are picked up.
    let fresh = ca.server(&["a.test"], KeyKind::Ecdsa);
    replace(scratch.path(), "a", &fresh);
    let fresh_der = fresh.der.clone();
    let client2 = client.clone();
    assert!(
        eventually(Duration::from_secs(10), || {
            let (c, d) = (client2.clone(), fresh_der.clone());
            async move { tls::get(addr, "a.test", &c, "/").await.is_ok_and(|r| r.peer_cert == d) }
        })
        .await
    );
    gw.stop().await;
}

#[tokio::test]
async fn mutual_tls_refuses_clients_without_a_certificate_and_passes_the_subject_on() {
    let up = TestUpstream::start("n1").await;
    let scratch = tempfile::tempdir().unwrap();
    let ca = Ca::new("Server CA");
    let clients = Ca::new("Client CA");
    let stranger_ca = Ca::new("Stranger CA");
    std::fs::write(scratch.path().join("clients.pem"), &clients.pem).unwrap();
    let cert = ca.server(&["a.test"], KeyKind::Ecdsa);
    let e = entry(scratch.path(), "a", &cert, None);
    let ca_file = scratch.path().join("clients.pem");
    let gateway = format!(
        "  listeners:\n    - {{ addr: 127.0.0.1:0 }}\n    - {{ addr: 127.0.0.1:0, tls: {{ certificates: [ {e} ], client_ca: {} }} }}\n    - {{ addr: 127.0.0.1:0, tls: {{ certificates: [ {e} ], client_ca: {}, client_auth: optional }} }}\n",
        ca_file.display(),
        ca_file.display()
    );
    let gw = TestGateway::start(&config(&gateway, up.port())).await;
    let (required, optional) = (gw.gateway.listener_addrs[1], gw.gateway.listener_addrs[2]);

    let anonymous = tls::client_config(&ca.pem, &[b"h2"], None);
    assert!(
        tls::get(required, "a.test", &anonymous, "/").await.is_err(),
        "served without a certificate"
    );
    let stranger = tls::client_config(&ca.pem, &[b"h2"], Some(&stranger_ca.client("eve")));
    assert!(
        tls::get(required, "a.test", &stranger, "/").await.is_err(),
        "served an unknown CA"
    );

    let alice = tls::client_config(&ca.pem, &[b"h2"], Some(&clients.client("alice")));
    let r = tls::get(required, "a.test", &alice, "/").await.unwrap();
    assert_eq!(r.status, 200);
    let subject = up.last_headers().unwrap();
    let subject = subject.get("x-client-cert-subject").unwrap().to_str().unwrap();
    assert!(subject.contains("CN=alice"), "{subject}");

    // Optional: served without a certificate, and without an identity.
    let r = tls::get(optional, "a.test", &anonymous, "/").await.unwrap();
    assert_eq!(r.status, 200);
    assert!(up.last_headers().unwrap().get("x-client-cert-subject").is_none());

    // A client cannot claim an identity by sending the header itself.
    let r = Client::new()
        .request(
            http::Method::GET,
            &gw.url("/"),
            &[("x-client-cert-subject", "CN=mallory")],
            bytes::Bytes::new(),
        )
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    assert!(up.last_headers().unwrap().get("x-client-cert-subject").is_none());
    gw.stop().await;
}

#[tokio::test]
async fn certificates_show_their_expiry_in_the_admin_api_and_metrics() {
    let up = TestUpstream::start("n1").await;
    let scratch = tempfile::tempdir().unwrap();
    let ca = Ca::new("Test CA");
    let cert = ca.server_valid_for(&["a.test"], 30);
    let certs = [entry(scratch.path(), "a", &cert, Some("[a.test, \"*.a.test\"]"))];
    let gw = TestGateway::start(&config(&tls_gateway(&certs, ""), up.port())).await;
    let body = Client::new()
        .get(&format!("{}/admin/v1/certificates", gw.admin))
        .await
        .unwrap()
        .json();
    let c = &body["certificates"][0];
    assert_eq!(c["key_path"], "gateway.tls.certificates[0]");
    assert_eq!(c["names"], serde_json::json!(["a.test", "*.a.test"]));
    assert_eq!(c["default"], true);
    let left = c["expires_in_seconds"].as_i64().unwrap();
    assert!((29 * 86_400..=30 * 86_400).contains(&left), "{left}");
    let metrics = Client::new()
        .get(&format!("{}/metrics", gw.admin))
        .await
        .unwrap()
        .text();
    let line = metrics
        .lines()
        .find(|l| l.starts_with("gatehouse_tls_certificate_expiry_seconds{"))
        .unwrap_or_else(|| panic!("no expiry gauge in\n{metrics}"));
    let value: i64 = line.rsplit(' ').next().unwrap().parse().unwrap();
    assert!((29 * 86_400..=30 * 86_400).contains(&value), "{line}");
    gw.stop().await;
}

fn validate(path: &Path) -> (bool, String) {
    let out = std::process::Command::new(gatehouse_tests::gateway::binary())
        .arg("validate")
        .arg(path)
        .output()
        .unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[tokio::test]
async fn validate_checks_the_files_and_warns_before_expiry() {
    let scratch = tempfile::tempdir().unwrap();
    let dir = scratch.path();
    let ca = Ca::new("Test CA");
    let soon = ca.server_valid_for(&["a.test"], 5);
    let certs = [entry(dir, "a", &soon, None)];
    let path = gatehouse_tests::write_config(dir, "gw.yaml", &config(&tls_gateway(&certs, ""), 8080));
    let (ok, err) = validate(&path);
    assert!(ok, "{err}");
    assert!(
        err.contains("warning: gateway.tls.certificates[0].cert")
            && (err.contains("expires in 4 days") || err.contains("expires in 5 days")),
        "{err}"
    );

    // The key of another certificate, and a file that does not exist.
    std::fs::write(dir.join("a.key"), ca.server(&["a.test"], KeyKind::Ecdsa).key_pem).unwrap();
    let missing = format!("{{ cert: {}, key: missing.key }}", dir.join("a.pem").display());
    let certs = ["{ cert: a.pem, key: a.key }".to_string(), missing];
    let path = gatehouse_tests::write_config(dir, "gw.yaml", &config(&tls_gateway(&certs, ""), 8080));
    let (ok, err) = validate(&path);
    assert!(!ok);
    assert!(err.contains("gateway.tls.certificates[0].key: the key in"), "{err}");
    assert!(err.contains("does not match the certificate"), "{err}");
    assert!(err.contains("gateway.tls.certificates[1].key: cannot read"), "{err}");
}
