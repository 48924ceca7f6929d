//! What one active probe of one node sends: a plain description, run by the
//! snapshot's probe scheduler.

use std::time::Duration;

use http::{HeaderName, HeaderValue, Method};

use crate::config::model::{ActiveCheck, Node, ProbeKind};

/// `User-Agent` of HTTP probes.
pub const PROBE_USER_AGENT: &str = concat!("gatehouse-health-check/", env!("CARGO_PKG_VERSION"));

/// Everything one probe of one node needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProbeSpec {
    /// `tcp` or `http`.
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
        }
    }
}
