//! The request pipeline: route -> rate limit -> tiers -> balancer pick -> forward ->
//! record the outcome -> retry decision -> response.
//!
//! [`handle`] routes and applies limits; an [`Exchange`] carries one routed request
//! through its tries, so no step needs more than the request and its context.

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
use super::body::{Body, BodyTooLarge, EndWatch, LimitedBody, Progress, Recording, StreamSlot, TryBody, UpstreamBody};
use super::error::{ProxyError, error_response};
pub use super::explain::DEBUG_HEADER;
use super::explain::{Served, explain};
use super::forward::{self, TryError};
use super::headers;
use crate::balance::{NodeSet, PickContext, RequestView};
use crate::config::model::{GatewaySettings, PassHost};
use crate::outcome::Outcome;
use crate::retry::{BudgetGuard, RetryContext, RetryDecision, RetrySlot, idempotent, parse_retry_after};
use crate::router::{RouteTarget, request_host};
use crate::snapshot::Upstream;
use crate::upstream::InflightGuard;
use crate::zone::Tiers;

static IDEMPOTENCY_KEY: header::HeaderName = header::HeaderName::from_static("idempotency-key");

/// Handles one client request.
pub async fn handle(ctx: &ProxyContext, req: Request<Incoming>, remote: SocketAddr) -> Response<Body> {
    let start = Instant::now();
    let snap = ctx.snapshot.load_full();
    let gw = &snap.config.gateway;
    let (mut parts, body) = req.into_parts();
    if let Err(why) = headers::apply_host_rules(&mut parts) {
        ctx.metrics.unrouted_response(400);
        if gw.access_log {
            AccessLine::new(&parts, remote, start).write(400, "-", "-", "-", 0);
        }
        return error_response(ProxyError::BadRequest, why);
    }
    let route = snap
        .router
        .find(&parts.method, request_host(&parts), parts.uri.path())
        .cloned();
    let Some(route) = route else {
        ctx.metrics.unrouted.inc();
        ctx.metrics.unrouted_response(404);
        let msg = format!("no route matches {} {}", parts.method, parts.uri.path());
        if gw.access_log {
            AccessLine::new(&parts, remote, start).write(404, "-", "-", "-", 0);
        }
        return error_response(ProxyError::RouteNotFound, &msg);
    };
    let up = snap.upstreams[route.upstream].clone();
    let debug = route.debug || gw.debug_header.as_ref().is_some_and(|h| parts.headers.contains_key(h));
    let line = gw.access_log.then(|| AccessLine::new(&parts, remote, start));
    let (mut resp, served) = match crate::ratelimit::enforce(up.limiter.as_ref(), &route.name, &parts, remote) {
        Ok(limit_headers) => {
            let exchange = Exchange {
                gw,
                up: &up,
                route: &route,
                remote,
                start,
                served: Served::default(),
            };
            // Boxed: the exchange future holds a few KiB of state that would otherwise
            // be copied each time hyper moves the request future.
            let (mut resp, served) = Box::pin(exchange.run(parts, body)).await;
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
    if let Some(line) = line {
        let node = served.node.map(|i| &*up.endpoints[i].key.authority).unwrap_or("-");
        line.write(status, &up.service, &route.name, node, served.tries);
    }
    resp
}

/// One access-log line: what is known when the request arrives, written once the
/// answer is known.
struct AccessLine {
    client: std::net::IpAddr,
    method: http::Method,
    uri: Uri,
    start: Instant,
}

impl AccessLine {
    fn new(parts: &Parts, remote: SocketAddr, start: Instant) -> Self {
        AccessLine {
            client: remote.ip(),
            method: parts.method.clone(),
            uri: parts.uri.clone(),
            start,
        }
    }

    fn write(&self, status: u16, service: &str, route: &str, node: &str, tries: u32) {
        tracing::info!(
            target: "gatehouse::access",
            client = %self.client,
            method = %self.method,
            uri = %self.uri,
            status,
            service,
            route,
            node,
            tries,
            ms = self.start.elapsed().as_secs_f64() * 1000.0,
        );
    }
}

/// The client's body as the tries will send it.
enum Prepared {
    Empty,
    Full(Bytes),
    /// Streamed: untouched in its slot, or recorded as the first try sent it.
    Stream(StreamSlot, Arc<Recording>),
}

impl Prepared {
    /// A body for the next try (and its progress, for the send/read timers).
    fn for_try(&self) -> (TryBody, Option<Arc<Progress>>) {
        match self {
            Prepared::Empty => (TryBody::Empty, None),
            Prepared::Full(b) => (TryBody::Full(Some(b.clone())), None),
            Prepared::Stream(slot, recording) => {
                if !Self::untouched(slot)
                    && let Some(copy) = recording.replay()
                {
                    return (TryBody::Full(Some(copy)), None);
                }
                let progress = Progress::new();
                let body = TryBody::Stream {
                    slot: slot.clone(),
                    taken: None,
                    progress: progress.clone(),
                    recording: recording.clone(),
                };
                (body, Some(progress))
            }
        }
    }

    fn untouched(slot: &StreamSlot) -> bool {
        slot.lock().unwrap_or_else(|p| p.into_inner()).is_some()
    }

    /// Whether another try can still send the whole body.
    fn replayable(&self) -> bool {
        match self {
            Prepared::Empty | Prepared::Full(_) => true,
            Prepared::Stream(slot, recording) => Self::untouched(slot) || recording.replay().is_some(),
        }
    }
}

/// Reads small bodies into memory (so they can be replayed) within `stall` (the
/// client body timeout); leaves large or unsized ones streaming.
async fn prepare_body(body: Incoming, max_body: u64, max_replay: u64, stall: Duration) -> Result<Prepared, ProxyError> {
    if body.is_end_stream() {
        return Ok(Prepared::Empty);
    }
    let limited = LimitedBody::new(body, max_body);
    match limited.size_hint().exact() {
        Some(len) if len <= max_replay => match tokio::time::timeout(stall, limited.collect()).await {
            Ok(Ok(collected)) => Ok(Prepared::Full(collected.to_bytes())),
            Ok(Err(e)) if e.is::<BodyTooLarge>() => Err(ProxyError::BodyTooLarge),
            Ok(Err(_)) => Err(ProxyError::BadRequest),
            Err(_) => Err(ProxyError::RequestTimeout),
        },
        _ => Ok(Prepared::Stream(
            Arc::new(std::sync::Mutex::new(Some(limited))),
            Recording::new(max_replay),
        )),
    }
}

/// One routed request on its way through its upstream: what every try needs, and
/// the record of the tries made.
struct Exchange<'a> {
    gw: &'a GatewaySettings,
    up: &'a Arc<Upstream>,
    route: &'a RouteTarget,
    remote: SocketAddr,
    start: Instant,
    served: Served,
}

/// The answer of one try, with what the retry decision needs.
struct Tried {
    result: Result<forward::Sent, TryError>,
    inflight: InflightGuard,
    outcome: Outcome,
    retry_after: Option<Duration>,
    /// A gRPC call whose status is still to come in the trailers: recorded when the
    /// body ends (with this head latency), not now.
    deferred: Option<Duration>,
}

impl Exchange<'_> {
    /// Forwards the request, retrying as the policy and the safety rules allow.
    async fn run(mut self, mut parts: Parts, body: Incoming) -> (Response<Body>, Served) {
        let max_body = self.gw.max_body_size;
        if let Some(len) = body.size_hint().exact()
            && len > max_body
        {
            let msg = format!("request body of {len} bytes exceeds the limit of {max_body} bytes");
            return self.answer(error_response(ProxyError::BodyTooLarge, &msg));
        }
        let via = self.upstream_headers(&mut parts);
        let policy = &self.up.version.upstream;
        let stall = self.gw.client_body_timeout;
        let body = match prepare_body(body, max_body, policy.retry.max_replay_body, stall).await {
            Ok(b) => b,
            Err(e) => return self.answer(error_response(e, "the request body could not be read")),
        };
        let up = self.up;
        let _active = up.budget.start_request();
        // gRPC's own rule replaces idempotency: a call may be retried as long as no
        // part of the response has reached the client, which holds for every retry
        // decided here (on a response head, before it is passed on).
        let may_repeat = idempotent(&parts.method)
            || parts.headers.contains_key(&IDEMPOTENCY_KEY)
            || headers::is_grpc(&parts.headers);
        let deadline = policy.retry.retry_timeout.map(|t| self.start + t);
        let mut excluded = NodeSet::new();
        let mut retry_slot = RetrySlot::default();
        loop {
            let tiers = up.tiers.load();
            let Some((idx, tier, fallback)) = pick(up, &tiers, &excluded, &parts, self.remote) else {
                return self.answer(no_node(up, tiers.panic));
            };
            excluded.insert(idx);
            // Out since the tiers were computed, or half-open with its one trial taken.
            let Some(admission) = up.health.admit(idx, tiers.panic) else {
                continue;
            };
            drop(tiers);
            self.served.tries += 1;
            self.served.node = Some(idx);
            self.served.tier = tier;
            self.served.fallback = fallback;
            let tried = match self.try_once(&parts, &body, idx, deadline).await {
                Ok(t) => t,
                Err(resp) => return self.answer(resp),
            };
            drop(admission);
            let reached = tried.result.as_ref().map_or_else(|e| e.reached_upstream(), |_| true);
            let safe = (may_repeat || !reached) && body.replayable();
            let retry = self.may_retry(&parts, &tried, reached, safe, deadline, &excluded);
            if !matches!(tried.outcome.http_equivalent(), Some(s) if s < 500) {
                self.served.failures.push((idx, tried.outcome));
            }
            let Some((backoff, guard)) = retry else {
                let watch = tried.deferred.map(|latency| {
                    let up = up.clone();
                    EndWatch::new(move |outcome| record(&up, idx, outcome, latency, None))
                });
                return self.answer(finish(tried.result, tried.inflight, up, via, watch));
            };
            up.metrics.retries.inc();
            if let Some(latency) = tried.deferred {
                record(up, idx, tried.outcome, latency, None);
            }
            drop(tried);
            if let Some(guard) = guard {
                retry_slot.hold(guard);
            }
            if !backoff.is_zero() {
                tokio::time::sleep(backoff).await;
            }
        }
    }

    fn answer(self, resp: Response<Body>) -> (Response<Body>, Served) {
        (resp, self.served)
    }

    /// The answer to a try the client broke (its body too large, malformed,
    /// truncated, or stalled). The upstream connection it used is closed, not pooled.
    fn client_fault(&self, e: TryError) -> Response<Body> {
        let (err, msg) = match e {
            TryError::BodyTooLarge => (
                ProxyError::BodyTooLarge,
                format!("request body exceeds the limit of {} bytes", self.gw.max_body_size),
            ),
            TryError::ClientStalled => (
                ProxyError::RequestTimeout,
                format!(
                    "the request body stalled for longer than {:?} (client_body_timeout)",
                    self.gw.client_body_timeout
                ),
            ),
            _ => (
                ProxyError::BadRequest,
                "the request body is malformed or incomplete".to_string(),
            ),
        };
        tracing::debug!(client = %self.remote, error = ?e, "request body failed on the client's side");
        error_response(err, &msg)
    }

    /// Turns the client's head into the head every try sends: hop-by-hop headers
    /// gone, `X-Forwarded-*` added, `Host` as the policy says. Returns the `Via`
    /// value for the response.
    fn upstream_headers(&self, parts: &mut Parts) -> HeaderValue {
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
        let te_trailers = headers::te_trailers(&parts.headers);
        headers::strip_hop_by_hop(&mut parts.headers);
        if te_trailers && self.up.version.upstream.scheme.http2() {
            parts.headers.insert(header::TE, HeaderValue::from_static("trailers"));
        }
        if let Some(h) = &self.gw.debug_header {
            parts.headers.remove(h);
        }
        headers::add_forwarded(&mut parts.headers, self.remote, client_host.as_ref(), via.clone());
        match &self.up.version.upstream.pass_host {
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
        via
    }

    /// Sends one try to endpoint `idx` and records its outcome. `Err` is the
    /// client's answer when the try cannot be judged (the body was too large).
    async fn try_once(
        &self,
        parts: &Parts,
        body: &Prepared,
        idx: usize,
        deadline: Option<Instant>,
    ) -> Result<Tried, Response<Body>> {
        let up = self.up;
        let policy = &up.version.upstream;
        let ep = up.endpoints[idx].clone();
        let (try_body, progress) = body.for_try();
        let req = upstream_request(parts, &ep.host_header, &policy.pass_host, try_body);
        let inflight = ep.state.start_request();
        let t0 = Instant::now();
        let timers = forward::Timers {
            upstream: &policy.timeouts,
            client_body: self.gw.client_body_timeout,
        };
        let send = forward::send(&ep, req, timers, progress);
        let result = match deadline {
            // The overall deadline also cuts the try in progress.
            Some(d) => tokio::time::timeout_at(d.into(), send)
                .await
                .unwrap_or(Err(TryError::Timeout)),
            None => send.await,
        };
        let latency = t0.elapsed();
        let outcome = match &result {
            Ok(r) => head_outcome(&r.response),
            Err(TryError::Connect { .. }) => Outcome::ConnectFailure,
            Err(TryError::Timeout) => Outcome::Timeout,
            Err(TryError::Reset) => Outcome::Reset,
            // The client's fault: answered to it, never counted against the node.
            Err(e @ (TryError::BodyTooLarge | TryError::ClientBody | TryError::ClientStalled)) => {
                return Err(self.client_fault(*e));
            }
        };
        let retry_after = result
            .as_ref()
            .ok()
            .and_then(|r| r.response.headers().get(header::RETRY_AFTER))
            .and_then(parse_retry_after);
        let deferred = result
            .as_ref()
            .is_ok_and(|r| status_in_trailers(&r.response))
            .then_some(latency);
        if deferred.is_none() {
            record(up, idx, outcome, latency, retry_after);
        }
        tracing::debug!(service = %up.service, node = %ep.key.authority, ?outcome, ?latency, "try finished");
        Ok(Tried {
            result,
            inflight,
            outcome,
            retry_after,
            deferred,
        })
    }

    /// Whether to try again, after how long, and with which budget slot: the policy
    /// decides first, then the host's rules (safe to repeat, in time, a node left,
    /// budget) can only say no. A retry of a request that never reached an
    /// upstream adds no load there, so it does not spend the budget.
    fn may_retry(
        &self,
        parts: &Parts,
        tried: &Tried,
        reached: bool,
        safe: bool,
        deadline: Option<Instant>,
        excluded: &NodeSet,
    ) -> Option<(Duration, Option<BudgetGuard>)> {
        let up = self.up;
        let decision = up.retry.decide(&RetryContext {
            route: &self.route.name,
            method: &parts.method,
            tries: self.served.tries,
            outcome: tried.outcome,
            retry_after: tried.retry_after,
            elapsed: self.start.elapsed(),
        });
        let RetryDecision::Retry { backoff } = decision else {
            return None;
        };
        let in_time = deadline.is_none_or(|d| Instant::now() + backoff < d);
        if !(safe && in_time && has_open_candidate(&up.tiers.load(), excluded)) {
            return None;
        }
        if !reached {
            return Some((backoff, None));
        }
        let budget = &up.version.upstream.retry;
        match up
            .budget
            .try_start_retry(budget.budget_percent, budget.budget_min_concurrent)
        {
            Some(guard) => Some((backoff, Some(guard))),
            None => {
                up.metrics.retry_budget_exhausted.inc();
                None
            }
        }
    }
}

/// The 503 when no node can be picked.
fn no_node(up: &Upstream, panic: bool) -> Response<Body> {
    let msg = if panic {
        format!(
            "service {} is in panic (too little healthy capacity) and on_panic is fail",
            up.service
        )
    } else {
        format!("no healthy node is available for service {}", up.service)
    };
    error_response(ProxyError::NoHealthyUpstream, &msg)
}

/// Picks from the first tier that still has an untried candidate; returns the
/// endpoint, the tier it came from, and why a fallback decided (if one did).
fn pick(
    up: &Upstream,
    tiers: &Tiers,
    excluded: &NodeSet,
    parts: &Parts,
    remote: SocketAddr,
) -> Option<(usize, usize, Option<&'static str>)> {
    for (tier, set) in tiers.tiers.iter().enumerate() {
        let ctx = PickContext {
            endpoints: &up.endpoints,
            candidates: set,
            excluded,
            request: RequestView { parts, remote },
        };
        if let (Some(idx), why) = up.balancer.pick_explained(&ctx)
            && set.contains(idx)
            && !excluded.contains(idx)
        {
            return Some((idx, tier, why));
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
    up.balancer.observe(idx, outcome, latency);
    let ep = &up.endpoints[idx];
    // Failures that come back fast must not look attractive to latency-aware balancers.
    let sample = match outcome {
        o if matches!(o.http_equivalent(), Some(s) if s < 500) => latency,
        _ => latency.max(FAILURE_PENALTY),
    };
    ep.state.observe_latency(sample);
    if let Some(counters) = up.metrics.attempts.get(idx) {
        counters.0[outcome.metric_index()].inc();
    }
}

/// The outcome of a response head: its status, or the code of a gRPC response
/// that carries a `grpc-status` other than OK in its head (trailers-only).
fn head_outcome(resp: &Response<Incoming>) -> Outcome {
    let status = resp.status().as_u16();
    match headers::grpc_status(resp.headers()) {
        Some(code) if status == 200 && code != 0 => Outcome::Grpc(code),
        _ => Outcome::Status(status),
    }
}

/// Whether a response is a gRPC call whose status comes in its trailers (a 200
/// with a gRPC content type and no `grpc-status` in the head).
fn status_in_trailers(resp: &Response<Incoming>) -> bool {
    resp.status() == http::StatusCode::OK
        && headers::is_grpc(resp.headers())
        && !resp.headers().contains_key("grpc-status")
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
    inflight: InflightGuard,
    up: &Upstream,
    via: HeaderValue,
    watch: Option<EndWatch>,
) -> Response<Body> {
    match result {
        Ok(sent) => {
            let (mut parts, body) = sent.response.into_parts();
            headers::strip_hop_by_hop(&mut parts.headers);
            headers::append_via(&mut parts.headers, via);
            let mut body = UpstreamBody::new(body, inflight, sent.conn, up.version.upstream.timeouts.read);
            if let Some(w) = watch {
                body = body.with_watch(w);
            }
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
                TryError::ClientBody => (ProxyError::BadRequest, "the request body is malformed or incomplete"),
                TryError::ClientStalled => (ProxyError::RequestTimeout, "the request body stalled"),
            };
            error_response(err, msg)
        }
    }
}
