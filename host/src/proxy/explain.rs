//! What served a request: the record the pipeline keeps of its tries, and the debug
//! header that explains the routing decision.

use http::header::{self, HeaderValue};

use crate::outcome::Outcome;
use crate::snapshot::Upstream;

/// What served a request, for logs and the debug header.
#[derive(Debug, Default, Clone)]
pub(super) struct Served {
    /// The node of the last try.
    pub(super) node: Option<usize>,
    /// The tier it was picked from.
    pub(super) tier: usize,
    /// Tries made.
    pub(super) tries: u32,
    /// Tries that failed: (endpoint index, outcome).
    pub(super) failures: Vec<(usize, Outcome)>,
    /// Why the balancer's fallback picked the last node (`None`: the balancer did).
    pub(super) fallback: Option<&'static str>,
}

/// Response header that explains the routing decision.
pub static DEBUG_HEADER: header::HeaderName = header::HeaderName::from_static("x-gatehouse-debug");

/// The debug header's value: node, zone, tier, tries and why.
pub(super) fn explain(up: &Upstream, served: &Served) -> Option<HeaderValue> {
    let tiers = up.tiers.load();
    let mut out = match served.node {
        Some(i) => {
            let n = &up.endpoints[i].node;
            format!(
                "node={}; zone={}; region={}; priority={}; tier={}",
                up.endpoints[i].key.authority,
                if n.zone.is_empty() { &up.locality.zone } else { &n.zone },
                if n.region.is_empty() {
                    &up.locality.region
                } else {
                    &n.region
                },
                n.priority,
                served.tier
            )
        }
        None => "node=none".to_string(),
    };
    let balancer = match (served.fallback, up.balancer.fallback_name()) {
        (Some(why), Some(builtin)) => format!("{builtin} ({} {why})", up.balancer.name()),
        _ => up.balancer.name().to_string(),
    };
    out.push_str(&format!(
        "; tries={}; balancer={balancer}; panic={}",
        served.tries, tiers.panic
    ));
    if !served.failures.is_empty() {
        let failed: Vec<String> = served
            .failures
            .iter()
            .map(|(i, o)| format!("{} {}", up.endpoints[*i].key.authority, outcome_name(*o)))
            .collect();
        out.push_str(&format!("; failed=[{}]", failed.join(", ")));
    }
    out.push_str(&format!("; plan=\"{}\"", tiers.note));
    HeaderValue::from_str(&out).ok()
}

fn outcome_name(o: Outcome) -> String {
    match o {
        Outcome::Status(s) => s.to_string(),
        Outcome::ConnectFailure => "connect_failure".into(),
        Outcome::Timeout => "timeout".into(),
        Outcome::Reset => "reset".into(),
        Outcome::Grpc(code) => format!(
            "grpc_{}",
            crate::outcome::GRPC_CODES.get(usize::from(code)).unwrap_or(&"unknown")
        ),
    }
}
