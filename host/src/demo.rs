//! `gatehouse demo`: six small upstream servers in three zones and a gateway in
//! front of them, from a built-in config. Needs no files.

use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use http::{Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

/// The demo's nodes: (name, zone).
pub const NODES: [(&str, &str); 6] = [
    ("a-1", "zone-a"),
    ("a-2", "zone-a"),
    ("b-1", "zone-b"),
    ("b-2", "zone-b"),
    ("c-1", "zone-c"),
    ("c-2", "zone-c"),
];

/// The built-in config; `@PORT_x-n@` are replaced by the demo nodes' ports.
pub const CONFIG_TEMPLATE: &str = r#"# Gatehouse demo: one gateway in zone-a in front of six nodes in three zones.
gateway:
  listen: "@LISTEN@"
  admin: { listen: "@ADMIN@" }
  group: demo
  zone: zone-a
  region: region-1
  access_log: true

services:
  - name: hello
    versions:
      - version: 1.0.0
        routes:
          - { uri: "/*" }
        upstream:
          type: roundrobin
          zone_routing: prefer_local
          timeout: { connect: 1, send: 5, read: 5 }
          retries: 2
          checks:
            active:
              type: http
              http_path: /health
              healthy: { interval: 1, successes: 2 }
              unhealthy: { interval: 1, http_failures: 2, tcp_failures: 2, timeouts: 2 }
            passive:
              unhealthy: { http_statuses: [500, 502, 503], http_failures: 3, tcp_failures: 2, timeouts: 3 }
  - name: sticky
    versions:
      - version: 1.0.0
        routes:
          - { uri: "/sticky/*" }
        upstream:
          type: chash
          hash_on: header
          key: x-user-id
          zone_routing: "off"

gateway_groups:
  - name: demo
    services:
      - service: hello
        version: 1.0.0
        nodes:
          - { host: 127.0.0.1, port: @PORT_a-1@, weight: 100, zone: zone-a }
          - { host: 127.0.0.1, port: @PORT_a-2@, weight: 100, zone: zone-a }
          - { host: 127.0.0.1, port: @PORT_b-1@, weight: 100, zone: zone-b }
          - { host: 127.0.0.1, port: @PORT_b-2@, weight: 100, zone: zone-b }
          - { host: 127.0.0.1, port: @PORT_c-1@, weight: 100, zone: zone-c }
          - { host: 127.0.0.1, port: @PORT_c-2@, weight: 100, zone: zone-c }
      - service: sticky
        version: 1.0.0
        nodes:
          - { host: 127.0.0.1, port: @PORT_a-1@ }
          - { host: 127.0.0.1, port: @PORT_b-1@ }
          - { host: 127.0.0.1, port: @PORT_c-1@ }
"#;

/// Starts the six demo nodes on ephemeral loopback ports; returns (name, address).
pub async fn start_nodes() -> std::io::Result<Vec<(String, SocketAddr)>> {
    let mut out = Vec::new();
    for (name, zone) in NODES {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        tokio::spawn(serve_node(listener, name, zone));
        out.push((name.to_string(), addr));
    }
    Ok(out)
}

/// Renders the built-in config for nodes started by [`start_nodes`].
pub fn render_config(nodes: &[(String, SocketAddr)], listen: SocketAddr, admin: SocketAddr) -> String {
    let mut text = CONFIG_TEMPLATE
        .replace("@LISTEN@", &listen.to_string())
        .replace("@ADMIN@", &admin.to_string());
    for (name, addr) in nodes {
        text = text.replace(&format!("@PORT_{name}@"), &addr.port().to_string());
    }
    text
}

async fn serve_node(listener: TcpListener, name: &'static str, zone: &'static str) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        tokio::spawn(async move {
            let service =
                service_fn(move |req: Request<Incoming>| async move { Ok::<_, Infallible>(answer(name, zone, &req)) });
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

fn answer(name: &'static str, zone: &str, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    if req.uri().path() == "/health" {
        return Response::new(Full::new(Bytes::from_static(b"ok\n")));
    }
    let body = serde_json::json!({
        "node": name,
        "zone": zone,
        "method": req.method().as_str(),
        "path": req.uri().path(),
    })
    .to_string()
        + "\n";
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = StatusCode::OK;
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, http::HeaderValue::from_static("application/json"));
    resp.headers_mut()
        .insert("x-node", http::HeaderValue::from_static(name));
    resp
}
