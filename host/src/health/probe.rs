//! What one active probe of one node sends: a plain description, run by the
//! snapshot's probe scheduler.

use std::time::Duration;

use http::{HeaderName, HeaderValue, Method};

use crate::config::model::{ActiveCheck, Node, ProbeKind, UpstreamTls};

/// `User-Agent` of HTTP probes.
pub const PROBE_USER_AGENT: &str = concat!("gatehouse-health-check/", env!("CARGO_PKG_VERSION"));

/// Everything one probe of one node needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeSpec {
    /// `tcp`, `http`, `https` or `grpc`.
    pub kind: ProbeKind,
    /// Host to connect to (the node's).
    pub host: String,
    /// Port to connect to (`checks.active.port`, else the node's).
    pub port: u16,
    /// Whole-probe timeout (connect and answer).
    pub timeout: Duration,
    /// HTTP method.
    pub method: Method,
    /// Path and query.
    pub path: String,
    /// `Host` header (`checks.active.host`, else the node's `host:port`).
    pub host_header: HeaderValue,
    /// Extra headers.
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// `https` probes, and `grpc` probes of `grpcs` upstreams: the TLS settings
    /// (set by [`ProbeSpec::with_tls`]).
    pub tls: Option<UpstreamTls>,
    /// `grpc` probes: the service name asked about.
    pub grpc_service: String,
}

impl ProbeSpec {
    /// The probe of `node` under `check`.
    pub fn new(check: &ActiveCheck, node: &Node) -> Self {
        let port = check.port.unwrap_or(node.port);
        let host_header = check
            .host
            .as_deref()
            .and_then(|h| HeaderValue::from_str(h).ok())
            .or_else(|| HeaderValue::from_str(&node.authority()).ok())
            .unwrap_or_else(|| HeaderValue::from_static("localhost"));
        ProbeSpec {
            kind: check.kind,
            host: node.host.clone(),
            port,
            timeout: check.timeout,
            method: check.http_method.clone(),
            path: check.http_path.clone(),
            host_header,
            headers: check.req_headers.clone(),
            tls: None,
            grpc_service: check.grpc_service.clone(),
        }
    }

    /// An `https` probe's TLS: the upstream's `tls` settings (or the defaults) with
    /// `verify` from `https_verify_certificate`; other kinds are unchanged.
    pub fn with_tls(mut self, check: &ActiveCheck, upstream: Option<&UpstreamTls>) -> Self {
        if check.kind == ProbeKind::Grpc {
            // gRPC probes speak TLS exactly when the upstream does (`grpcs`).
            self.tls = upstream.cloned();
            return self;
        }
        if check.kind != ProbeKind::Https {
            return self;
        }
        let base = upstream.cloned().unwrap_or(UpstreamTls {
            verify: true,
            ca_file: None,
            sni: None,
            client_identity: None,
            key_path: "checks.active".to_string(),
        });
        self.tls = Some(UpstreamTls {
            verify: check.https_verify_certificate,
            ..base
        });
        self
    }
}
