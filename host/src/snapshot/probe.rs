//! Runs one active probe: a TCP connect, an HTTP(S) request, or a gRPC health check
//! (`probe_grpc`) on a new connection
//! made by the pool's `connect` (never a pooled one, so a probe sees what a new
//! connection sees and pooled connections are not disturbed). The connection is
//! closed after the answer's head.

use bytes::Bytes;
use http::HeaderValue;
use http::Request;
use http::header::{CONNECTION, HOST, USER_AGENT};
use http_body_util::Empty;

use crate::config::model::ProbeKind;
use crate::health::{Observed, PROBE_USER_AGENT, ProbeSpec};
use crate::tls::client::UpstreamConnector;
use crate::upstream::pool::{self, ConnectError, Target};

/// Runs one probe (through `tls` for `https` probes); a probe that exceeds
/// `timeout` anywhere is a timeout.
pub async fn run_probe(spec: &ProbeSpec, tls: Option<&UpstreamConnector>) -> Observed {
    tokio::time::timeout(spec.timeout, attempt(spec, tls))
        .await
        .unwrap_or(Observed::Timeout)
}

async fn attempt(spec: &ProbeSpec, tls: Option<&UpstreamConnector>) -> Observed {
    let target = Target::new(&spec.host, spec.port);
    let stream = match pool::connect_tcp(&target, spec.timeout).await {
        Ok(s) => s,
        Err(ConnectError::Timeout(_)) => return Observed::Timeout,
        Err(_) => return Observed::ConnectFailure,
    };
    if spec.kind == ProbeKind::Tcp {
        return Observed::Connected;
    }
    if spec.kind == ProbeKind::Grpc {
        return match tls {
            None => super::probe_grpc::check(spec, stream, false).await,
            Some(tls) => {
                let Some(name) = tls.server_name(&spec.host) else {
                    return Observed::ConnectFailure;
                };
                let connector = tokio_rustls::TlsConnector::from(tls.config.clone());
                match connector.connect(name, stream).await {
                    Ok(stream) => super::probe_grpc::check(spec, stream, true).await,
                    Err(_) => Observed::ConnectFailure,
                }
            }
        };
    }
    let sender = match tls {
        None => pool::handshake::<Empty<Bytes>, _>(stream).await,
        Some(tls) => {
            let Some(name) = tls.server_name(&spec.host) else {
                return Observed::ConnectFailure;
            };
            let connector = tokio_rustls::TlsConnector::from(tls.config.clone());
            match connector.connect(name, stream).await {
                Ok(stream) => pool::handshake::<Empty<Bytes>, _>(stream).await,
                // An untrusted or wrong certificate: the node cannot be reached safely.
                Err(_) => return Observed::ConnectFailure,
            }
        }
    };
    let Ok(mut sender) = sender else {
        return Observed::Reset;
    };
    let mut req = Request::new(Empty::new());
    *req.method_mut() = spec.method.clone();
    *req.uri_mut() = match spec.path.parse() {
        Ok(uri) => uri,
        Err(_) => return Observed::Reset,
    };
    let headers = req.headers_mut();
    headers.insert(HOST, spec.host_header.clone());
    headers.insert(USER_AGENT, HeaderValue::from_static(PROBE_USER_AGENT));
    headers.insert(CONNECTION, HeaderValue::from_static("close"));
    for (name, value) in &spec.headers {
        headers.insert(name.clone(), value.clone());
    }
    match sender.send_request(req).await {
        Ok(resp) => Observed::Status(resp.status().as_u16()),
        Err(_) => Observed::Reset,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use http::{HeaderName, Method};

    use super::*;
    use crate::config::model::{ActiveCheck, Node};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    fn check(kind: ProbeKind) -> ActiveCheck {
        ActiveCheck {
            kind,
            timeout: Duration::from_millis(500),
            concurrency: 1,
            http_method: Method::HEAD,
            http_path: "/ready?deep=1".into(),
            host: Some("probe.example".into()),
            port: None,
            req_headers: vec![(HeaderName::from_static("x-probe"), HeaderValue::from_static("yes"))],
            healthy_interval: Duration::from_secs(1),
            healthy_successes: 2,
            healthy_statuses: vec![200],
            unhealthy_interval: Duration::from_secs(1),
            unhealthy_http_failures: 5,
            unhealthy_tcp_failures: 2,
            unhealthy_timeouts: 3,
            unhealthy_statuses: vec![500],
            https_verify_certificate: true,
            grpc_service: String::new(),
        }
    }

    fn node(port: u16) -> Node {
        Node {
            host: "127.0.0.1".into(),
            port,
            weight: 1,
            zone: String::new(),
            region: String::new(),
            priority: 0,
            tags: vec![],
        }
    }

    /// A one-shot server: returns the request head it read, answers with `answer`.
    async fn one_shot(answer: &'static [u8]) -> (u16, tokio::task::JoinHandle<String>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let task = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut buf = vec![0u8; 4096];
            let mut head = Vec::new();
            while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = s.read(&mut buf).await.unwrap();
                if n == 0 {
                    break;
                }
                head.extend_from_slice(&buf[..n]);
            }
            if !answer.is_empty() {
                s.write_all(answer).await.unwrap();
            } else {
                // Stall: keep the connection open without answering.
                tokio::time::sleep(Duration::from_secs(5)).await;
            }
            String::from_utf8_lossy(&head).into_owned()
        });
        (port, task)
    }

    #[tokio::test]
    async fn http_probe_sends_method_path_host_and_headers_and_reads_the_status() {
        let (port, server) = one_shot(b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\n\r\n").await;
        let spec = ProbeSpec::new(&check(ProbeKind::Http), &node(port));
        assert_eq!(run_probe(&spec, None).await, Observed::Status(503));
        let head = server.await.unwrap().to_ascii_lowercase();
        assert!(head.starts_with("head /ready?deep=1 http/1.1\r\n"), "{head}");
        assert!(head.contains("host: probe.example\r\n"), "{head}");
        assert!(head.contains("x-probe: yes\r\n"), "{head}");
        assert!(head.contains("connection: close\r\n"), "{head}");
    }

    #[tokio::test]
    async fn port_override_closed_port_and_stall() {
        let (port, _server) = one_shot(b"").await;
        let mut c = check(ProbeKind::Http);
        c.timeout = Duration::from_millis(200);
        let spec = ProbeSpec::new(&c, &node(port));
        assert_eq!(run_probe(&spec, None).await, Observed::Timeout);

        let closed = TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        c.port = Some(closed);
        let spec = ProbeSpec::new(&c, &node(port));
        assert_eq!(spec.port, closed);
        assert_eq!(run_probe(&spec, None).await, Observed::ConnectFailure);
    }

    #[tokio::test]
    async fn tcp_probe_only_connects() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let spec = ProbeSpec::new(&check(ProbeKind::Tcp), &node(port));
        assert_eq!(run_probe(&spec, None).await, Observed::Connected);
        drop(listener);
        assert_eq!(run_probe(&spec, None).await, Observed::ConnectFailure);
    }

    #[tokio::test]
    async fn a_connection_closed_without_an_answer_is_a_reset() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            let (s, _) = listener.accept().await.unwrap();
            drop(s);
        });
        let spec = ProbeSpec::new(&check(ProbeKind::Http), &node(port));
        assert_eq!(run_probe(&spec, None).await, Observed::Reset);
    }
}
