//! Client faults are the client's: a malformed, truncated, oversized or stalled
//! request body, and a request head that breaks RFC 9112's host rules, are answered to
//! the client (400 / 408 / 413, or nothing if it left) and never count against a node.
//! Clients talk over raw sockets so they can break HTTP the way hostile clients do.

use std::time::{Duration, Instant};

use gatehouse_tests::{Client, TestGateway, TestUpstream};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// One node behind passive checks that eject on the first failure of any kind.
fn config(port: u16, gateway: &str) -> String {
    format!(
        r#"gateway:
  access_log: false
{gateway}
services:
  - name: api
    versions:
      - version: "1"
        routes: [ {{ uri: "/*" }} ]
        upstream:
          retries: 2
          checks:
            passive:
              unhealthy: {{ http_statuses: [500, 502, 503], http_failures: 1, tcp_failures: 1, timeouts: 1 }}
gateway_groups:
  - name: default
    services:
      - {{ service: api, version: "1", nodes: [ {{ host: 127.0.0.1, port: {port} }} ] }}
"#
    )
}

/// Sends `raw` on a new connection and returns what came back until the gateway
/// closed it or `wait` passed.
async fn exchange(addr: &str, raw: &[u8], wait: Duration) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(raw).await.unwrap();
    read_until_close(&mut s, wait).await
}

async fn read_until_close(s: &mut TcpStream, wait: Duration) -> String {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break,
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
        }
        // One answer is enough: stop at the end of a complete JSON error body.
        if out.ends_with(b"}}") {
            break;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn status_of(reply: &str) -> u16 {
    reply
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// The node's health as the admin API shows it.
async fn node(gw: &TestGateway) -> Value {
    let r = Client::new()
        .get(&format!("{}/admin/v1/services", gw.admin))
        .await
        .unwrap();
    r.json()["services"][0]["nodes"][0].clone()
}

async fn assert_node_untouched(gw: &TestGateway, what: &str) {
    let n = node(gw).await;
    assert_eq!(n["state"], "healthy", "{what} hurt the node: {n}");
    for kind in ["http_failures", "tcp_failures", "timeouts"] {
        assert_eq!(n["counters"]["passive"][kind], 0, "{what}: {n}");
    }
    let served = Client::new().get(&gw.url("/after")).await.unwrap();
    assert_eq!(served.status, 200, "{what}: the node still serves");
}

fn addr(gw: &TestGateway) -> String {
    gw.url("").trim_start_matches("http://").to_string()
}

#[tokio::test]
async fn malformed_chunked_bodies_get_400_and_never_eject_the_node() {
    let up = TestUpstream::start("a").await;
    let gw = TestGateway::start(&config(up.port(), "")).await;
    let bad = b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\nzz\r\n";
    for i in 0..5 {
        let reply = exchange(&addr(&gw), bad, Duration::from_secs(5)).await;
        assert_eq!(status_of(&reply), 400, "malformed body {i}: {reply}");
    }
    assert_node_untouched(&gw, "five malformed bodies").await;
    gw.stop().await;
}

#[tokio::test]
async fn a_client_that_leaves_mid_upload_is_not_the_nodes_failure() {
    let up = TestUpstream::start("a").await;
    let gw = TestGateway::start(&config(up.port(), "")).await;
    let hits = up.hits();
    for _ in 0..3 {
        let mut s = TcpStream::connect(addr(&gw)).await.unwrap();
        // Declares 1 MiB (streamed, not buffered), sends 10 bytes, then leaves.
        s.write_all(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 1048576\r\n\r\n0123456789")
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        drop(s);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(up.hits() - hits <= 3, "no retry of a body the client broke");
    assert_node_untouched(&gw, "three clients leaving mid-upload").await;
    gw.stop().await;
}

#[tokio::test]
async fn a_truncated_body_gets_400_and_an_oversized_one_413() {
    let up = TestUpstream::start("a").await;
    let gw = TestGateway::start(&config(up.port(), "  max_body_size: 100000")).await;
    // Half-closed after 10 of 100 000 declared bytes: the body can never complete.
    let mut s = TcpStream::connect(addr(&gw)).await.unwrap();
    s.write_all(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 90000\r\n\r\n0123456789")
        .await
        .unwrap();
    s.shutdown().await.unwrap();
    let reply = read_until_close(&mut s, Duration::from_secs(5)).await;
    assert_eq!(status_of(&reply), 400, "{reply}");
    // Chunked, so the size is only known as it streams: over the limit is 413.
    let mut raw = b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    for _ in 0..30 {
        raw.extend_from_slice(b"1000\r\n");
        raw.extend_from_slice(&[b'x'; 0x1000]);
        raw.extend_from_slice(b"\r\n");
    }
    raw.extend_from_slice(b"0\r\n\r\n");
    let reply = exchange(&addr(&gw), &raw, Duration::from_secs(5)).await;
    assert_eq!(status_of(&reply), 413, "{reply}");
    assert_node_untouched(&gw, "a truncated and an oversized body").await;
    gw.stop().await;
}

#[tokio::test]
async fn a_body_that_stalls_is_cut_with_408_and_the_node_is_not_blamed() {
    let up = TestUpstream::start("a").await;
    let gw = TestGateway::start(&config(up.port(), "  client_body_timeout: 0.5")).await;
    let mut s = TcpStream::connect(addr(&gw)).await.unwrap();
    // Streamed (chunked), one chunk, then nothing.
    s.write_all(b"POST /echo HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
        .await
        .unwrap();
    let reply = read_until_close(&mut s, Duration::from_secs(10)).await;
    assert_eq!(status_of(&reply), 408, "{reply}");
    // A small body (buffered before any try) that stalls: 408 as well.
    let mut s = TcpStream::connect(addr(&gw)).await.unwrap();
    s.write_all(b"POST /echo HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\n01234")
        .await
        .unwrap();
    let reply = read_until_close(&mut s, Duration::from_secs(10)).await;
    assert_eq!(status_of(&reply), 408, "{reply}");
    assert_node_untouched(&gw, "two stalled bodies").await;
    gw.stop().await;
}

#[tokio::test]
async fn rfc_9112_host_rules() {
    let up = TestUpstream::start("a").await;
    let gw = TestGateway::start(&config(up.port(), "")).await;
    let a = addr(&gw);
    let wait = Duration::from_secs(5);
    let reply = exchange(&a, b"GET /x HTTP/1.1\r\n\r\n", wait).await;
    assert_eq!(status_of(&reply), 400, "no Host on HTTP/1.1: {reply}");
    let reply = exchange(
        &a,
        b"GET /x HTTP/1.1\r\nHost: a.example\r\nHost: b.example\r\n\r\n",
        wait,
    )
    .await;
    assert_eq!(status_of(&reply), 400, "two Hosts: {reply}");
    let hits = up.hits();
    let reply = exchange(&a, b"GET /x HTTP/1.0\r\n\r\n", wait).await;
    assert_eq!(status_of(&reply), 200, "HTTP/1.0 without Host keeps working: {reply}");
    assert_eq!(up.hits(), hits + 1);
    let reply = exchange(
        &a,
        b"GET http://api.example:8080/x HTTP/1.1\r\nHost: other.example\r\nConnection: close\r\n\r\n",
        wait,
    )
    .await;
    assert_eq!(status_of(&reply), 200, "{reply}");
    let seen = up.last_headers().unwrap();
    assert_eq!(seen["host"], "api.example:8080", "the absolute-form authority wins");
    gw.stop().await;
}

#[tokio::test]
async fn trickling_heads_are_closed_at_the_header_deadline_while_others_are_served() {
    let up = TestUpstream::start("a").await;
    let gw = TestGateway::start(&config(up.port(), "  client_header_timeout: 1")).await;
    let a = addr(&gw);
    // 200 clients each send one byte of a 40-byte head every 250 ms: 10 s for the
    // whole head, far past the 1 s deadline. A per-read timeout would never fire.
    let head: &'static [u8] = b"GET /slow HTTP/1.1\r\nHost: t\r\nX-A: 1234\r\n\r\n";
    let started = Instant::now();
    let mut slow = Vec::new();
    for _ in 0..200 {
        let a = a.clone();
        slow.push(tokio::spawn(async move {
            let mut s = TcpStream::connect(&a).await.unwrap();
            for b in head {
                if s.write_all(std::slice::from_ref(b)).await.is_err() {
                    return (false, Instant::now());
                }
                let mut buf = [0u8; 512];
                match tokio::time::timeout(Duration::from_millis(250), s.read(&mut buf)).await {
                    Ok(Ok(_)) | Ok(Err(_)) => return (false, Instant::now()), // closed (or 408)
                    Err(_) => {}
                }
            }
            (true, Instant::now())
        }));
    }
    // Meanwhile ordinary clients are served.
    let client = Client::new();
    for _ in 0..20 {
        let r = client.get(&gw.url("/ok")).await.unwrap();
        assert_eq!(r.status, 200);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for task in slow {
        let (completed, at) = task.await.unwrap();
        assert!(!completed, "a trickling head was allowed to finish");
        assert!(
            at - started < Duration::from_secs(9),
            "closed only after the head would have been complete"
        );
    }
    gw.stop().await;
}
