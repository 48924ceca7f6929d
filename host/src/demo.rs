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
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::admin::demo::DemoControl;

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
    Ok(DemoNodes::start().await?.addresses())
}

/// The demo's running nodes, each of which can be stopped (its port closed and
/// its connections cut, as if the process died) and started again on the same port.
#[derive(Debug)]
pub struct DemoNodes {
    nodes: Vec<DemoNode>,
}

#[derive(Debug)]
struct DemoNode {
    name: &'static str,
    zone: &'static str,
    addr: SocketAddr,
    /// Stops the running node when sent (or dropped); `None` while stopped.
    running: Mutex<Option<watch::Sender<bool>>>,
}

impl DemoNodes {
    /// Starts the six demo nodes on ephemeral loopback ports.
    pub async fn start() -> std::io::Result<Arc<DemoNodes>> {
        let mut nodes = Vec::new();
        for (name, zone) in NODES {
            let listener = TcpListener::bind("127.0.0.1:0").await?;
            let addr = listener.local_addr()?;
            let (stop, rx) = watch::channel(false);
            tokio::spawn(serve_node(listener, name, zone, rx));
            nodes.push(DemoNode {
                name,
                zone,
                addr,
                running: Mutex::new(Some(stop)),
            });
        }
        Ok(Arc::new(DemoNodes { nodes }))
    }

    /// (name, address) of each node.
    pub fn addresses(&self) -> Vec<(String, SocketAddr)> {
        self.nodes.iter().map(|n| (n.name.to_string(), n.addr)).collect()
    }
}

impl DemoControl for DemoNodes {
    fn nodes(&self) -> Value {
        let nodes: Vec<Value> = self
            .nodes
            .iter()
            .map(|n| {
                json!({
                    "name": n.name,
                    "zone": n.zone,
                    "address": n.addr.to_string(),
                    "up": n.running.lock().unwrap_or_else(|p| p.into_inner()).is_some(),
                })
            })
            .collect();
        Value::Array(nodes)
    }

    fn set(&self, name: &str, up: bool) -> Result<Value, String> {
        let node = self
            .nodes
            .iter()
            .find(|n| n.name == name)
            .ok_or_else(|| format!("no demo node named {name:?}"))?;
        let mut running = node.running.lock().unwrap_or_else(|p| p.into_inner());
        match (up, running.is_some()) {
            (false, true) => {
                if let Some(stop) = running.take() {
                    let _ = stop.send(true);
                }
                tracing::info!(node = name, "demo node stopped");
            }
            (true, false) => {
                let std = std::net::TcpListener::bind(node.addr)
                    .and_then(|l| l.set_nonblocking(true).map(|()| l))
                    .map_err(|e| format!("cannot listen on {} again: {e}", node.addr))?;
                let listener = TcpListener::from_std(std).map_err(|e| e.to_string())?;
                let (stop, rx) = watch::channel(false);
                tokio::spawn(serve_node(listener, node.name, node.zone, rx));
                *running = Some(stop);
                tracing::info!(node = name, "demo node started");
            }
            _ => {}
        }
        Ok(json!({ "name": name, "up": up }))
    }
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

async fn serve_node(listener: TcpListener, name: &'static str, zone: &'static str, mut stop: watch::Receiver<bool>) {
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = stop.changed() => return,
        };
        let Ok((stream, _)) = accepted else {
            continue;
        };
        let mut stop = stop.clone();
        tokio::spawn(async move {
            let service =
                service_fn(move |req: Request<Incoming>| async move { Ok::<_, Infallible>(answer(name, zone, &req)) });
            let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            let conn = builder.serve_connection(TokioIo::new(stream), service);
            tokio::select! {
                _ = conn => {}
                _ = stop.changed() => {}
            }
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
