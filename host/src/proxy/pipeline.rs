//! The request pipeline: route -> tiers -> balancer pick -> forward -> record the
//! outcome -> retry decision -> response.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::request::Parts;
use http::{Request, Response, Uri, Version};
use http_body::Body as _;
use http_body_util::BodyExt;
use hyper::body::Incoming;

use super::ProxyContext;
use super::body::{Body, BodyTooLarge, LimitedBody, Progress, StreamSlot, TryBody, UpstreamBody};
use super::error::{ProxyError, error_response};
use super::forward::{self, TryError};
use super::headers;
use crate::balance::{NodeSet, PickContext, RequestView};
use crate::config::model::{GatewaySettings, PassHost};
use crate::retry::{RetryContext, RetryDecision, idempotent, parse_retry_after};
use crate::router::{RouteTarget, request_host};

use crate::outcome::Outcome;
use crate::snapshot::Upstream;
use crate::zone::Tiers;

static IDEMPOTENCY_KEY: header::HeaderName = header::HeaderName::from_static("idempotency-key");

/// Handles one client request.
pub async fn handle(ctx: &ProxyContext, req: Request<Incoming>, remote: SocketAddr) -> Response<Body> {
    let start = Instant::now();
    let snap = ctx.snapshot.load_full();
    let (parts, body) = req.into_parts();
    let route = snap
        .router
        .find(&parts.method, request_host(&parts), parts.uri.path())
        .cloned();
    let Some(route) = route else {
        ctx.metrics.unrouted.inc();
        ctx.metrics.unrouted_response(404);
        let msg = format!("no route matches {} {}", parts.method, parts.uri.path());
        if snap.config.gateway.access_log {
            access_log(&parts, remote, 404, "-", "-", 0, start);
        }
        return error_response(ProxyError::RouteNotFound, &msg);
    };
    let up = snap.upstreams[route.upstream].clone();
    let debug = route.debug
        || snap
            .config
            .gateway
            .debug_header
            .as_ref()
            .is_some_and(|h| parts.headers.contains_key(h));
    let method = parts.method.clone();
    let path = snap.config.gateway.access_log.then(|| parts.uri.clone());
    let (mut resp, served) = match crate::ratelimit::enforce(up.limiter.as_ref(), &route.name, &parts, remote) {
        Ok(limit_headers) => {
            // Boxed: the proxy future holds a few KiB of state that would otherwise be
            // copied each time hyper moves the request future.
            let (mut resp, served) =
                Box::pin(proxy(&snap.config.gateway, &up, &route, parts, body, remote, start)).await;
            if let Some(h) = limit_headers {
                h.apply(resp.headers_mut());
            }
            (resp, served)
        }
        Err(refused) => (super::refusal::refusal(&refused), Served::default()),
    };
    if debug && let Some(v) = explain(&up, &served) {
        resp.headers_mut().insert(DEBUG_HEADER.clone(), v);
    }
    let status = resp.status().as_u16();
    up.metrics.response(status);
    up.metrics.latency.observe(start.elapsed().as_secs_f64());
    if let Some(uri) = path {
        let node = served.node.map(|i| &*up.endpoints[i].key.authority).unwrap_or("-");
        tracing::info!(
            target: "gatehouse::access",
            client = %remote.ip(),
            method = %method,
            uri = %uri,
            status,
            service = %up.service,
            route = %route.name,
            node,
            tries = served.tries,
            ms = start.elapsed().as_secs_f64() * 1000.0,
        );
    }
    resp
}

fn access_log(parts: &Parts, remote: SocketAddr, status: u16, service: &str, node: &str, tries: u32, start: Instant) {
    tracing::info!(
        target: "gatehouse::access",
        client = %remote.ip(),
        method = %parts.method,
        uri = %parts.uri,
        status,
        service,
        node,
        tries,
        ms = start.elapsed().as_secs_f64() * 1000.0,
    );
}

/// What served a request, for logs and the debug header.
#[derive(Debug, Default, Clone)]
struct Served {
    node: Option<usize>,
    tier: usize,
    tries: u32,
    /// Tries that failed: (endpoint index, outcome).
    failures: Vec<(usize, Outcome)>,
}

/// Response header that explains the routing decision.
pub static DEBUG_HEADER: header::HeaderName = header::HeaderName::from_static("x-gatehouse-debug");

/// The debug header's value: node, zone, tier, tries and why.
fn explain(up: &Upstream, served: &Served) -> Option<HeaderValue> {
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
    out.push_str(&format!(
        "; tries={}; balancer={}; panic={}",
        served.tries,
        up.balancer.name(),
        tiers.panic
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
    }
}

/// The client's body as the tries will send it.
enum Prepared {
    Empty,
    Full(Bytes),
    Stream(StreamSlot),
}

impl Prepared {
    /// A body for the next try (and its progress, for the send/read timers).
    fn for_try(&self) -> (TryBody, Option<Arc<Progress>>) {
        match self {
            Prepared::Empty => (TryBody::Empty, None),
            Prepared::Full(b) => (TryBody::Full(Some(b.clone())), None),
            Prepared::Stream(slot) => {
                let progress = Progress::new();
                let body = TryBody::Stream {
                    slot: slot.clone(),
                    taken: None,
                    progress: progress.clone(),
                };
                (body, Some(progress))
            }
        }
    }

    /// Whether another try can still send the whole body.
    fn replayable(&self) -> bool {
        match self {
            Prepared::Empty | Prepared::Full(_) => true,
            Prepared::Stream(slot) => slot.lock().unwrap_or_else(|p| p.into_inner()).is_some(),
        }
    }
}

/// Reads small bodies into memory (so they can be replayed); leaves large or
/// unsized ones streaming.
async fn prepare_body(body: Incoming, max_body: u64, max_replay: u64) -> Result<Prepared, ProxyError> {
    if body.is_end_stream() {
        return Ok(Prepared::Empty);
    }
    let limited = LimitedBody::new(body, max_body);
    match limited.size_hint().exact() {
        Some(len) if len <= max_replay => match limited.collect().await {
            Ok(collected) => Ok(Prepared::Full(collected.to_bytes())),
            Err(e) if e.is::<BodyTooLarge>() => Err(ProxyError::BodyTooLarge),
            Err(_) => Err(ProxyError::BadRequest),
        },
        _ => Ok(Prepared::Stream(Arc::new(std::sync::Mutex::new(Some(limited))))),
    }
}

#[allow(clippy::too_many_arguments)]
async fn proxy(
    gw: &GatewaySettings,
    up: &Arc<Upstream>,
    route: &RouteTarget,
    mut parts: Parts,
    body: Incoming,
    remote: SocketAddr,
    start: Instant,
) -> (Response<Body>, Served) {
    let mut served = Served::default();
    let gw_max_body = gw.max_body_size;
    let policy = &up.version.upstream;
    if let Some(len) = body.size_hint().exact()
        && len > gw_max_body
    {
        let msg = format!("request body of {len} bytes exceeds the limit of {gw_max_body} bytes");
        return (error_response(ProxyError::BodyTooLarge, &msg), served);
    }

    // Headers for the upstream, shared by every try.
    let client_host = parts.headers.get(header::HOST).cloned().or_else(|| {
        parts
            .uri
            .authority()
            .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
    });
    let via = if parts.version == Version::HTTP_2 {
        headers::VIA_H2
    } else {
        headers::VIA_H1
    };
    headers::strip_hop_by_hop(&mut parts.headers);
    if let Some(h) = &gw.debug_header {
        parts.headers.remove(h);
    }
    headers::add_forwarded(&mut parts.headers, remote, client_host.as_ref(), via.clone());
    match &policy.pass_host {
        // HTTP/1 requests carry Host already; an HTTP/2 request's authority becomes it.
        PassHost::Pass => {
            if let Some(h) = client_host
                && !parts.headers.contains_key(header::HOST)
            {
                parts.headers.insert(header::HOST, h);
            }
        }
        PassHost::Rewrite(v) => {
            parts.headers.insert(header::HOST, v.clone());
        }
        PassHost::Node => {}
    }

    let body = match prepare_body(body, gw_max_body, policy.retry.max_replay_body).await {
        Ok(b) => b,
        Err(e) => return (error_response(e, "the request body could not be read"), served),
    };

    let _active = up.budget.start_request();
    let may_repeat = idempotent(&parts.method) || parts.headers.contains_key(&IDEMPOTENCY_KEY);
    let deadline = policy.retry.retry_timeout.map(|t| start + t);
    let mut excluded = NodeSet::new();
    let mut _retry_slot = None;
    loop {
        let tiers = up.tiers.load();
        let Some((idx, tier)) = pick(up, &tiers, &excluded, &parts, remote) else {
            let msg = if tiers.panic {
                format!(
                    "service {} is in panic (too little healthy capacity) and on_panic is fail",
                    up.service
                )
            } else {
                format!("no healthy node is available for service {}", up.service)
            };
            return (error_response(ProxyError::NoHealthyUpstream, &msg), served);
        };
        excluded.insert(idx);
        // Out since the tiers were computed, or half-open with its one trial taken.
        let Some(admission) = up.health.admit(idx, tiers.panic) else {
            continue;
        };
        drop(tiers);
        served.tries += 1;
        served.node = Some(idx);
        served.tier = tier;
        let ep = up.endpoints[idx].clone();
        let (try_body, progress) = body.for_try();
        let req = upstream_request(&parts, &ep.host_header, &policy.pass_host, try_body);
        let inflight = ep.state.start_request();
        let t0 = Instant::now();
        let send = forward::send(&ep, req, &policy.timeouts, progress);
        let result = match deadline {
            // The overall deadline also cuts the try in progress.
            Some(d) => tokio::time::timeout_at(d.into(), send)
                .await
                .unwrap_or(Err(TryError::Timeout)),
            None => send.await,
        };
        let latency = t0.elapsed();
        let outcome = match &result {
            Ok(r) => Outcome::Status(r.response.status().as_u16()),
            Err(TryError::Connect { .. }) => Outcome::ConnectFailure,
            Err(TryError::Timeout) => Outcome::Timeout,
            Err(TryError::Reset) => Outcome::Reset,
            Err(TryError::BodyTooLarge) => {
                let msg = format!("request body exceeds the limit of {gw_max_body} bytes");
                return (error_response(ProxyError::BodyTooLarge, &msg), served);
            }
        };
        let retry_after = result
            .as_ref()
            .ok()
            .and_then(|r| r.response.headers().get(header::RETRY_AFTER))
            .and_then(parse_retry_after);
        record(up, idx, outcome, latency, retry_after);
        drop(admission);
        tracing::debug!(service = %up.service, node = %ep.key.authority, ?outcome, ?latency, "try finished");

        let decision = up.retry.decide(&RetryContext {
            route: &route.name,
            method: &parts.method,
            tries: served.tries,
            outcome,
            retry_after,
            elapsed: start.elapsed(),
        });
        let reached = match &result {
            Ok(_) => true,
            Err(e) => e.reached_upstream(),
        };
        let retry = match decision {
            RetryDecision::Stop => None,
            RetryDecision::Retry { backoff } => {
                let safe = (may_repeat || !reached) && body.replayable();
                let in_time = deadline.is_none_or(|d| Instant::now() + backoff < d);
                let node_left = has_open_candidate(&up.tiers.load(), &excluded);
                if !(safe && in_time && node_left) {
                    None
                } else if !reached {
                    // The request never reached an upstream: retrying it adds no load
                    // to the upstreams, so it does not spend the budget.
                    Some((backoff, None))
                } else {
                    match up
                        .budget
                        .try_start_retry(policy.retry.budget_percent, policy.retry.budget_min_concurrent)
                    {
                        Some(guard) => Some((backoff, Some(guard))),
                        None => {
                            up.metrics.retry_budget_exhausted.inc();
                            None
                        }
                    }
                }
            }
        };
        if !matches!(outcome, Outcome::Status(s) if s < 500) {
            served.failures.push((idx, outcome));
        }
        let Some((backoff, guard)) = retry else {
            return (finish(result, inflight, up, via), served);
        };
        up.metrics.retries.inc();
        drop(result);
        drop(inflight);
        if guard.is_some() {
            _retry_slot = guard;
        }
        if !backoff.is_zero() {
            tokio::time::sleep(backoff).await;
        }
    }
}

/// Picks from the first tier that still has an untried candidate; returns the
/// endpoint and the tier it came from.
fn pick(up: &Upstream, tiers: &Tiers, excluded: &NodeSet, parts: &Parts, remote: SocketAddr) -> Option<(usize, usize)> {
    for (tier, set) in tiers.tiers.iter().enumerate() {
        let ctx = PickContext {
            endpoints: &up.endpoints,
            candidates: set,
            excluded,
            request: RequestView { parts, remote },
        };
        if let Some(idx) = up.balancer.pick(&ctx)
            && set.contains(idx)
            && !excluded.contains(idx)
        {
            return Some((idx, tier));
        }
    }
    None
}

fn has_open_candidate(tiers: &Tiers, excluded: &NodeSet) -> bool {
    tiers
        .tiers
        .iter()
        .any(|t| t.list.iter().any(|c| !excluded.contains(c.idx as usize)))
}

/// Feeds one try's outcome to the endpoint's latency estimate, health and breakers,
/// and the metrics.
fn record(up: &Upstream, idx: usize, outcome: Outcome, latency: Duration, retry_after: Option<Duration>) {
    up.health.observe(&up.endpoints, idx, outcome, latency, retry_after);
    let ep = &up.endpoints[idx];
    // Failures that come back fast must not look attractive to latency-aware balancers.
    let sample = match outcome {
        Outcome::Status(s) if s < 500 => latency,
        _ => latency.max(FAILURE_PENALTY),
    };
    ep.state.observe_latency(sample);
    if let Some(counters) = up.metrics.attempts.get(idx) {
        counters.0[outcome.metric_index()].inc();
    }
}

/// Latency charged to a failed try, so latency-aware balancers steer away.
const FAILURE_PENALTY: Duration = Duration::from_secs(1);

/// The request of one try: origin-form URI, the shared upstream headers, and a
/// Host header (the node's when the policy says so or the client sent none).
fn upstream_request(parts: &Parts, node_host: &HeaderValue, pass_host: &PassHost, body: TryBody) -> Request<TryBody> {
    let path = parts
        .uri
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/"));
    let mut req = Request::new(body);
    *req.method_mut() = parts.method.clone();
    *req.uri_mut() = Uri::from(path);
    *req.version_mut() = Version::HTTP_11;
    *req.headers_mut() = parts.headers.clone();
    if *pass_host == PassHost::Node || !req.headers().contains_key(header::HOST) {
        req.headers_mut().insert(header::HOST, node_host.clone());
    }
    req
}

/// Turns the last try into the client's response.
fn finish(
    result: Result<forward::Sent, TryError>,
    inflight: crate::upstream::InflightGuard,
    up: &Upstream,
    via: HeaderValue,
) -> Response<Body> {
    match result {
        Ok(sent) => {
            let (mut parts, body) = sent.response.into_parts();
            headers::strip_hop_by_hop(&mut parts.headers);
            headers::append_via(&mut parts.headers, via);
            let body = UpstreamBody::new(body, inflight, sent.conn, up.version.upstream.timeouts.read);
            Response::from_parts(parts, Body::Upstream(body))
        }
        Err(e) => {
            let (err, msg) = match e {
                TryError::Connect { timeout: true } => {
                    (ProxyError::UpstreamTimeout, "connecting to the upstream timed out")
                }
                TryError::Connect { timeout: false } => {
                    (ProxyError::ConnectFailed, "could not connect to the upstream")
                }
                TryError::Timeout => (ProxyError::UpstreamTimeout, "the upstream did not answer in time"),
                TryError::Reset => (ProxyError::UpstreamReset, "the upstream connection failed"),
                TryError::BodyTooLarge => (ProxyError::BodyTooLarge, "request body too large"),
            };
            error_response(err, msg)
        }
    }
}
