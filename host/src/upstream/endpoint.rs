//! Endpoint identity and the live state kept per endpoint.
//!
//! An endpoint is one node of one service (`service + host:port`). Its live state
//! (in-flight requests, latency estimate, balancer position, idle connections) is shared by
//! every snapshot that contains the endpoint, so it survives node edits, config
//! reloads and version publishes. It is only ever touched through atomics.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use super::body::TryBody;
use super::h2::H2Pool;
use super::pool::{ConnPool, Target};
use crate::config::model::Node;
use crate::outcome::{EndpointKey, now_ms};

/// Decay time of the latency estimate.
pub const EWMA_DECAY: Duration = Duration::from_secs(10);

/// Live state of one endpoint.
#[derive(Debug)]
pub struct EndpointState {
    /// Requests currently being served by this endpoint (held until the response body ends).
    inflight: AtomicU32,
    /// Peak-EWMA latency in microseconds (f32 bits, high half) and the time of the
    /// last update in ms (low half), packed so one CAS updates both.
    ewma: AtomicU64,
    /// Smooth weighted round robin's running weight.
    rr_current: AtomicI64,
    /// When the endpoint (re)joined: slow start runs from here. Milliseconds from origin.
    joined_ms: AtomicU32,
    /// Requests sent to this endpoint, ever.
    requests: AtomicU64,
    /// Tries that ended in a 5xx or no answer, ever.
    errors: AtomicU64,
    /// Idle keep-alive connections to this endpoint.
    pub pool: ConnPool<TryBody>,
    /// Shared HTTP/2 connections to this endpoint (`scheme: grpc` / `grpcs`).
    pub h2: H2Pool<TryBody>,
}

impl EndpointState {
    /// A fresh endpoint whose latency estimate starts at `seed_us`.
    pub fn new(seed_us: f32) -> Self {
        Self {
            inflight: AtomicU32::new(0),
            ewma: AtomicU64::new(pack(seed_us, now_ms())),
            rr_current: AtomicI64::new(0),
            joined_ms: AtomicU32::new(now_ms()),
            requests: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            pool: ConnPool::default(),
            h2: H2Pool::default(),
        }
    }

    /// Requests in flight.
    pub fn inflight(&self) -> u32 {
        self.inflight.load(Ordering::Relaxed)
    }

    /// Requests ever sent here.
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// Tries that ended in a 5xx or no answer, ever.
    pub fn errors(&self) -> u64 {
        self.errors.load(Ordering::Relaxed)
    }

    /// Counts one failed try (5xx, connect failure, timeout, reset).
    pub fn note_error(&self) {
        self.errors.fetch_add(1, Ordering::Relaxed);
    }

    /// Marks one request as started; the guard ends it when dropped.
    pub fn start_request(self: &Arc<Self>) -> InflightGuard {
        self.inflight.fetch_add(1, Ordering::Relaxed);
        self.requests.fetch_add(1, Ordering::Relaxed);
        InflightGuard { state: self.clone() }
    }

    /// Current latency estimate in microseconds, decayed for the time since the last
    /// observation (so an idle endpoint is tried again eventually).
    pub fn ewma_us(&self) -> f32 {
        let (v, at) = unpack(self.ewma.load(Ordering::Relaxed));
        v * decay(now_ms().wrapping_sub(at))
    }

    /// The estimate without decay, for seeding new endpoints.
    pub fn ewma_raw_us(&self) -> f32 {
        unpack(self.ewma.load(Ordering::Relaxed)).0
    }

    /// Feeds one latency observation into the peak-EWMA estimate.
    pub fn observe_latency(&self, latency: Duration) {
        let rtt = latency.as_secs_f32() * 1e6;
        let now = now_ms();
        let _ = self.ewma.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |cur| {
            let (v, at) = unpack(cur);
            let next = if rtt > v {
                rtt
            } else {
                let w = decay(now.wrapping_sub(at));
                v * w + rtt * (1.0 - w)
            };
            Some(pack(next, now))
        });
    }

    /// Smooth weighted round robin: the running weight.
    pub fn rr_current(&self) -> &AtomicI64 {
        &self.rr_current
    }

    /// Restarts slow start (the endpoint joined or recovered now).
    pub fn mark_joined(&self) {
        self.joined_ms.store(now_ms(), Ordering::Relaxed);
    }

    /// Time since the endpoint joined or last recovered.
    pub fn since_joined(&self) -> Duration {
        Duration::from_millis(u64::from(now_ms().wrapping_sub(self.joined_ms.load(Ordering::Relaxed))))
    }
}

fn decay(elapsed_ms: u32) -> f32 {
    (-(elapsed_ms as f32) / EWMA_DECAY.as_millis() as f32).exp()
}

fn pack(v: f32, at: u32) -> u64 {
    (u64::from(v.to_bits()) << 32) | u64::from(at)
}

fn unpack(x: u64) -> (f32, u32) {
    (f32::from_bits((x >> 32) as u32), x as u32)
}

/// Ends an in-flight request when dropped.
#[derive(Debug)]
pub struct InflightGuard {
    state: Arc<EndpointState>,
}

impl InflightGuard {
    /// The endpoint's live state.
    pub fn state(&self) -> &Arc<EndpointState> {
        &self.state
    }
}

impl Drop for InflightGuard {
    fn drop(&mut self) {
        self.state.inflight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// One endpoint as it appears in a snapshot: its identity, its node settings, what
/// the forwarder needs to reach it, and its live state.
#[derive(Debug)]
pub struct Endpoint {
    /// Identity.
    pub key: EndpointKey,
    /// Node settings (weight, zone, region, priority, tags).
    pub node: Node,
    /// `http://host:port` as a URI authority, for building upstream request URIs.
    pub authority: http::uri::Authority,
    /// `host:port` as a header value, for `pass_host: node`.
    pub host_header: http::HeaderValue,
    /// Where to connect.
    pub target: Target,
    /// TLS to this node (`scheme: https` or `grpcs`), shared by the upstream's endpoints.
    pub tls: Option<Arc<crate::tls::client::UpstreamConnector>>,
    /// The node speaks HTTP/2 (`scheme: grpc` or `grpcs`): requests go over the
    /// endpoint's shared HTTP/2 connections.
    pub http2: bool,
    /// Live state.
    pub state: Arc<EndpointState>,
}

impl Endpoint {
    /// The endpoint for `node` of `service`, with its live `state`.
    pub fn new(service: Arc<str>, node: Node, state: Arc<EndpointState>) -> Self {
        let authority_text = node.authority();
        Self {
            key: EndpointKey {
                service,
                authority: authority_text.as_str().into(),
            },
            authority: authority_text
                .parse()
                .expect("a validated host:port is a URI authority"),
            host_header: http::HeaderValue::from_str(&authority_text).expect("a validated host:port is a header value"),
            target: Target::new(&node.host, node.port),
            tls: None,
            http2: false,
            node,
            state,
        }
    }

    /// This endpoint, reached through TLS with `connector`.
    pub fn with_tls(mut self, connector: Option<Arc<crate::tls::client::UpstreamConnector>>) -> Self {
        self.tls = connector;
        self
    }

    /// This endpoint, reached over HTTP/2 when `http2` is set.
    pub fn with_http2(mut self, http2: bool) -> Self {
        self.http2 = http2;
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ewma_jumps_to_peaks_and_decays_toward_lower_samples() {
        let s = EndpointState::new(1000.0);
        s.observe_latency(Duration::from_millis(200));
        assert!((s.ewma_raw_us() - 200_000.0).abs() < 1.0);
        s.observe_latency(Duration::from_millis(1));
        // No time passed: a lower sample barely moves a peak.
        assert!(s.ewma_raw_us() > 150_000.0);
    }

    #[test]
    fn inflight_guard_counts() {
        let s = Arc::new(EndpointState::new(0.0));
        let g1 = s.start_request();
        let g2 = s.start_request();
        assert_eq!(s.inflight(), 2);
        drop(g1);
        drop(g2);
        assert_eq!(s.inflight(), 0);
        assert_eq!(s.requests(), 2);
    }

    #[test]
    fn pack_round_trips() {
        let (v, at) = unpack(pack(123.5, 77));
        assert_eq!((v, at), (123.5, 77));
    }
}
