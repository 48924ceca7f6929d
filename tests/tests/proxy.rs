//! The proxy as a client sees it: routing, headers, protocols, bodies and the
//! gateway's own error responses.

use std::time::{Duration, Instant};

use gatehouse_tests::{Behavior, Client, TestGateway, TestUpstream};
use http::Method;

fn one_service(port: u16, upstream_extra: &str, routes: &str) -> String {
    format!(
        r#"
gateway: {{ group: g, access_log: false, max_body_size: 1048576 }}
services:
  - name: api
    versions:
      - version: "1"
        routes: {routes}
        upstream:
          type: roundrobin
{upstream_extra}
gateway_groups:
  - name: g
    services:
      - service: api
        version: "1"
        nodes:
          - {{ host: 127.0.0.1, port: {port} }}
"#
    )
}

#[tokio::test]
async fn forwards_with_proxy_headers_and_strips_hop_by_hop() {
    let up = TestUpstream::start("n").await;
    let gw = TestGateway::start(&one_service(up.port(), "", r#"[ { uri: "/*" } ]"#)).await;
    let r = Client::new()
        .request(
            Method::GET,
            &gw.url("/a/b?q=1"),
            &[
                ("host", "api.example.com"),
                ("connection", "x-drop-me"),
                ("x-drop-me", "secret"),
                ("x-forwarded-for", "203.0.113.7"),
                ("x-keep", "yes"),
            ],
            "",
        )
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "n");
    assert_eq!(r.header("via").as_deref(), Some("1.1 gatehouse"));
    let h = up.last_headers().unwrap();
    assert_eq!(h["host"], "api.example.com", "Host passes through by default");
    assert_eq!(h["x-forwarded-for"], "203.0.113.7, 127.0.0.1");
    assert_eq!(h["x-forwarded-proto"], "http");
    assert_eq!(h["x-forwarded-host"], "api.example.com");
    assert_eq!(h["via"], "1.1 gatehouse");
    assert_eq!(h["x-keep"], "yes");
    assert!(!h.contains_key("x-drop-me"));
    gw.stop().await;
}

#[tokio::test]
async fn h2c_clients_are_served() {
    let up = TestUpstream::start("n").await;
    let gw = TestGateway::start(&one_service(up.port(), "", r#"[ { uri: "/*" } ]"#)).await;
    let r = Client::h2().get(&gw.url("/h2")).await.unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "n");
    let h = up.last_headers().unwrap();
    assert_eq!(h["via"], "2 gatehouse");
    // The client's authority (the gateway's address), not the node's, as Host.
    assert_eq!(h["host"], gw.url("").trim_start_matches("http://"));
    gw.stop().await;
}

#[tokio::test]
async fn unmatched_requests_get_a_json_404() {
    let up = TestUpstream::start("n").await;
    let routes = r#"[ { uri: "/pet/*", methods: [GET], hosts: [petstore.local] } ]"#;
    let gw = TestGateway::start(&one_service(up.port(), "", routes)).await;
    let c = Client::new();
    let ok = c
        .request(Method::GET, &gw.url("/pet/1"), &[("host", "petstore.local")], "")
        .await
        .unwrap();
    assert_eq!(ok.status, 200);
    for (method, path, host) in [
        (Method::GET, "/store", "petstore.local"),
        (Method::POST, "/pet/1", "petstore.local"),
        (Method::GET, "/pet/1", "other.local"),
    ] {
        let r = c.request(method, &gw.url(path), &[("host", host)], "").await.unwrap();
        assert_eq!(r.status, 404);
        assert_eq!(r.json()["error"]["code"], "route_not_found");
    }
    assert_eq!(up.hits(), 1);
    gw.stop().await;
}

#[tokio::test]
async fn refused_connection_is_a_json_502() {
    let up = TestUpstream::start("n").await;
    let port = up.port();
    up.stop();
    drop(up);
    let gw = TestGateway::start(&one_service(port, "          retries: 0\n", r#"[ { uri: "/*" } ]"#)).await;
    let r = Client::new().get(&gw.url("/x")).await.unwrap();
    assert_eq!(r.status, 502);
    assert_eq!(r.json()["error"]["code"], "upstream_connect_failed");
    gw.stop().await;
}

#[tokio::test]
async fn slow_upstream_is_a_json_504_after_the_read_timeout() {
    let up = TestUpstream::start("n").await;
    up.set(Behavior::Stall);
    let extra = "          retries: 0\n          timeout: { connect: 1, send: 1, read: 0.5 }\n";
    let gw = TestGateway::start(&one_service(up.port(), extra, r#"[ { uri: "/*" } ]"#)).await;
    let start = Instant::now();
    let r = Client::new().get(&gw.url("/x")).await.unwrap();
    let took = start.elapsed();
    assert_eq!(r.status, 504);
    assert_eq!(r.json()["error"]["code"], "upstream_timeout");
    assert!(took >= Duration::from_millis(450), "answered after {took:?}");
    assert!(took < Duration::from_secs(5), "held the client for {took:?}");
    gw.stop().await;
}

#[tokio::test]
async fn empty_upstream_is_a_json_503() {
    let text = r#"
gateway: { group: g, access_log: false }
services:
  - name: api
    versions:
      - version: "1"
        routes: [ { uri: "/*" } ]
gateway_groups:
  - name: g
    services:
      - { service: api, version: "1", nodes: [] }
"#;
    let gw = TestGateway::start(text).await;
    let r = Client::new().get(&gw.url("/x")).await.unwrap();
    assert_eq!(r.status, 503);
    assert_eq!(r.json()["error"]["code"], "no_healthy_upstream");
    gw.stop().await;
}

#[tokio::test]
async fn body_over_the_limit_is_refused_with_413() {
    let up = TestUpstream::start("n").await;
    let gw = TestGateway::start(&one_service(up.port(), "", r#"[ { uri: "/*" } ]"#)).await;
    let c = Client::new();
    let small = c
        .request(Method::POST, &gw.url("/echo"), &[], vec![7u8; 1000])
        .await
        .unwrap();
    assert_eq!(small.status, 200);
    assert!(small.text().starts_with("1000 "));
    let big = c
        .request(Method::POST, &gw.url("/echo"), &[], vec![7u8; 2 * 1024 * 1024])
        .await
        .unwrap();
    assert_eq!(big.status, 413);
    assert_eq!(big.json()["error"]["code"], "body_too_large");
    gw.stop().await;
}

#[tokio::test]
async fn gets_survive_a_node_that_resets_connections() {
    let (bad, good) = (TestUpstream::start("bad").await, TestUpstream::start("good").await);
    bad.set(Behavior::Reset);
    let text = format!(
        r#"
gateway: {{ group: g, access_log: false }}
services:
  - name: api
    versions:
      - version: "1"
        routes: [ {{ uri: "/*" }} ]
gateway_groups:
  - name: g
    services:
      - service: api
        version: "1"
        nodes:
          - {{ host: 127.0.0.1, port: {} }}
          - {{ host: 127.0.0.1, port: {} }}
"#,
        bad.port(),
        good.port()
    );
    let gw = TestGateway::start(&text).await;
    let c = Client::new();
    for _ in 0..20 {
        let r = c.get(&gw.url("/x")).await.unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(r.node(), "good");
    }
    assert!(bad.hits() > 0, "the resetting node was never tried");
    // A POST that reached the resetting node is not retried.
    let mut failed_posts = 0;
    for _ in 0..6 {
        let r = c.request(Method::POST, &gw.url("/x"), &[], "payload").await.unwrap();
        if r.status == 502 {
            failed_posts += 1;
        }
    }
    assert!(failed_posts > 0, "POSTs were replayed after reaching the upstream");
    gw.stop().await;
}

#[tokio::test]
async fn a_client_that_never_finishes_its_headers_is_cut_off() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let up = TestUpstream::start("n").await;
    let text = one_service(up.port(), "", r#"[ { uri: "/*" } ]"#).replace(
        "max_body_size: 1048576",
        "max_body_size: 1048576, client_header_timeout: 0.5",
    );
    let gw = TestGateway::start(&text).await;
    let mut s = tokio::net::TcpStream::connect(gw.url.trim_start_matches("http://"))
        .await
        .unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n").await.unwrap();
    let start = Instant::now();
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf)).await;
    assert!(read.is_ok(), "connection still open after 5 s");
    assert!(start.elapsed() >= Duration::from_millis(400));
    assert_eq!(up.hits(), 0);
    gw.stop().await;
}
