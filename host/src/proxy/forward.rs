//! One try: send a request to one endpoint over a pooled keep-alive connection (or a
//! shared HTTP/2 connection for `grpc`/`grpcs` upstreams) and wait for the response
//! head under the per-try timers.
//!
//! Timers: `connect` bounds making a new connection (name resolution included);
//! `send` bounds any pause while the request body streams out; `read` runs from the
//! moment the whole request has been sent (or the connection was ready, for a
//! request without a streamed body) until the response head arrives.

use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;

use super::body::{BodyTooLarge, ClientBodyError, Progress, TryBody};
use crate::config::model::Timeouts;
use crate::outcome::now_ms;
use crate::upstream::Endpoint;
use crate::upstream::h2;
use crate::upstream::pool::{self, Checkout, ConnectError};

/// How a try failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TryError {
    /// No connection could be made (`timeout`: it took too long). The request never
    /// reached the upstream.
    Connect {
        /// The connect timed out rather than being refused.
        timeout: bool,
    },
    /// The upstream took longer than the send or read timeout.
    Timeout,
    /// The connection broke, or the upstream sent something that is not HTTP.
    Reset,
    /// The client's body went over the size limit.
    BodyTooLarge,
    /// The client's body broke (malformed, truncated, the client left).
    ClientBody,
    /// The client sent no body data for `client_body_timeout`.
    ClientStalled,
}

impl TryError {
    /// Whether the upstream may have received (part of) the request.
    pub fn reached_upstream(self) -> bool {
        !matches!(self, TryError::Connect { .. })
    }
}

/// A response head, and the connection it came on (it goes back to the pool when
/// the response body ends).
#[derive(Debug)]
pub struct Sent {
    /// The response (its body still streaming).
    pub response: Response<Incoming>,
    /// The connection (HTTP/1.1, with its pool kind) or the HTTP/2 stream's lease.
    pub conn: Checkout<TryBody>,
}

/// Pooled connections that turn out to be closed are replaced this many times
/// before the try fails.
const STALE_RETRIES: usize = 3;

/// The timers of one try: the upstream's, and how long the client's body may stall.
#[derive(Debug, Clone, Copy)]
pub struct Timers<'a> {
    /// Connect, send and read timeouts of the upstream.
    pub upstream: &'a Timeouts,
    /// Longest pause of the client's body (`gateway.client_body_timeout`).
    pub client_body: Duration,
}

/// Sends `req` to `ep` and waits for the response head: over a pooled HTTP/1.1
/// connection, or over one of the endpoint's shared HTTP/2 connections.
pub async fn send(
    ep: &Endpoint,
    mut req: Request<TryBody>,
    timers: Timers<'_>,
    progress: Option<Arc<Progress>>,
) -> Result<Sent, TryError> {
    if ep.http2 {
        return send_h2(ep, req, timers, progress).await;
    }
    let timeouts = timers.upstream;
    let kind = ep.tls.as_ref().map_or(pool::PLAIN, |t| t.kind);
    for _ in 0..STALE_RETRIES {
        let (mut conn, reused) = match ep.state.pool.take(kind) {
            Some(c) => (c, true),
            None => (
                pool::connect(&ep.target, &ep.node.host, ep.tls.as_deref(), timeouts.connect)
                    .await
                    .map_err(|e| connect_failed(ep, e))?,
                false,
            ),
        };
        // A pooled connection may still be finishing its previous response.
        if !usable(conn.ready(), timeouts.connect, reused).await? {
            continue;
        }
        let connected_ms = now_ms();
        let fut = conn.try_send_request(req);
        match resend_or(watch(fut, connected_ms, timers, progress.as_deref()).await, reused)? {
            Attempt::Answered(response) => {
                return Ok(Sent {
                    response,
                    conn: Checkout::Http1(conn, kind),
                });
            }
            Attempt::Unsent(unsent) => req = unsent,
        }
    }
    Err(TryError::Reset)
}

/// [`send`] over HTTP/2: the request in absolute form (`:scheme`, `:authority` from
/// the `Host` header, which HTTP/2 does not carry), on a shared connection.
async fn send_h2(
    ep: &Endpoint,
    mut req: Request<TryBody>,
    timers: Timers<'_>,
    progress: Option<Arc<Progress>>,
) -> Result<Sent, TryError> {
    let timeouts = timers.upstream;
    let kind = ep.tls.as_ref().map_or(pool::PLAIN, |t| t.kind);
    to_h2_form(&mut req, ep);
    for _ in 0..STALE_RETRIES {
        let (mut conn, lease, reused) = match ep.state.h2.take(kind) {
            Some((c, lease)) => (c, lease, true),
            None => {
                let tx = h2::connect(&ep.target, &ep.node.host, ep.tls.as_deref(), timeouts.connect)
                    .await
                    .map_err(|e| connect_failed(ep, e))?;
                let (c, lease) = ep.state.h2.insert(tx, kind);
                (c, lease, false)
            }
        };
        if !usable(conn.ready(), timeouts.connect, reused).await? {
            continue;
        }
        let connected_ms = now_ms();
        let fut = conn.try_send_request(req);
        match resend_or(watch(fut, connected_ms, timers, progress.as_deref()).await, reused)? {
            Attempt::Answered(response) => {
                return Ok(Sent {
                    response,
                    conn: Checkout::Http2(lease),
                });
            }
            Attempt::Unsent(unsent) => req = unsent,
        }
    }
    Err(TryError::Reset)
}

/// Rewrites an origin-form HTTP/1.1 request into HTTP/2 form for `ep`.
fn to_h2_form(req: &mut Request<TryBody>, ep: &Endpoint) {
    let authority = req
        .headers_mut()
        .remove(http::header::HOST)
        .and_then(|h| http::uri::Authority::try_from(h.as_bytes()).ok())
        .unwrap_or_else(|| ep.authority.clone());
    let scheme = if ep.tls.is_some() {
        http::uri::Scheme::HTTPS
    } else {
        http::uri::Scheme::HTTP
    };
    let mut parts = std::mem::take(req.uri_mut()).into_parts();
    parts.scheme = Some(scheme);
    parts.authority = Some(authority);
    if parts.path_and_query.is_none() {
        parts.path_and_query = Some(http::uri::PathAndQuery::from_static("/"));
    }
    *req.uri_mut() = http::Uri::from_parts(parts).expect("scheme, authority and path make a URI");
    *req.version_mut() = http::Version::HTTP_2;
}

/// The try error for a failed connect, logged where operators look.
fn connect_failed(ep: &Endpoint, e: ConnectError) -> TryError {
    if matches!(e, ConnectError::Tls { .. }) {
        // A certificate problem is a setup problem: say so where operators look.
        tracing::warn!(node = %ep.key.authority, error = %e, "upstream TLS handshake failed");
    } else {
        tracing::debug!(node = %ep.key.authority, error = %e, "connect failed");
    }
    TryError::Connect {
        timeout: matches!(e, ConnectError::Timeout(_)),
    }
}

/// Waits up to `timeout` for a connection to take a request. `Ok(false)`: a reused
/// connection that is not usable (closed by the upstream meanwhile): take another.
async fn usable(
    ready: impl Future<Output = hyper::Result<()>>,
    timeout: Duration,
    reused: bool,
) -> Result<bool, TryError> {
    match tokio::time::timeout(timeout, ready).await {
        Ok(Ok(())) => Ok(true),
        _ if reused => Ok(false),
        Ok(Err(_)) => Err(TryError::Connect { timeout: false }),
        Err(_) => Err(TryError::Connect { timeout: true }),
    }
}

/// What one send on a connection came to.
enum Attempt {
    /// The response head.
    Answered(Response<Incoming>),
    /// Never written: a reused connection the upstream had closed. The request goes
    /// out again on another connection; the upstream saw nothing.
    Unsent(Request<TryBody>),
}

/// Maps a send's result to an [`Attempt`] or the try's error.
fn resend_or(sent: Result<Response<Incoming>, Failure>, reused: bool) -> Result<Attempt, TryError> {
    match sent {
        Ok(response) => Ok(Attempt::Answered(response)),
        Err(Failure::Timeout) => Err(TryError::Timeout),
        Err(Failure::ClientStalled) => Err(TryError::ClientStalled),
        Err(Failure::Hyper(mut e)) => match e.take_message() {
            Some(unsent) if reused => Ok(Attempt::Unsent(unsent)),
            _ => Err(classify(&(*e).into_error())),
        },
    }
}

enum Failure {
    Timeout,
    ClientStalled,
    Hyper(Box<hyper::client::conn::TrySendError<Request<TryBody>>>),
}

/// Waits for the response head: the send timer while the body streams out (the
/// client body timer while the body waits on the client), then the read timer.
async fn watch(
    fut: impl Future<Output = Result<Response<Incoming>, hyper::client::conn::TrySendError<Request<TryBody>>>>,
    connected_ms: u32,
    timers: Timers<'_>,
    progress: Option<&Progress>,
) -> Result<Response<Incoming>, Failure> {
    tokio::pin!(fut);
    let send_ms = millis(timers.upstream.send);
    let read_ms = millis(timers.upstream.read);
    let client_ms = millis(timers.client_body);
    loop {
        let (deadline, on_client) = match progress {
            None => (connected_ms.wrapping_add(read_ms), false),
            Some(p) => match p.done_ms() {
                Some(done) => (later(done, connected_ms).wrapping_add(read_ms), false),
                None if p.waiting_on_client() => (later(p.last_ms(), connected_ms).wrapping_add(client_ms), true),
                None => (later(p.last_ms(), connected_ms).wrapping_add(send_ms), false),
            },
        };
        let remaining = deadline.wrapping_sub(now_ms()) as i32;
        if remaining <= 0 {
            return Err(if on_client {
                Failure::ClientStalled
            } else {
                Failure::Timeout
            });
        }
        // While the body streams, who is waiting on whom can change: look again
        // within the client body timeout.
        let streaming = progress.is_some_and(|p| p.done_ms().is_none());
        let remaining = if streaming {
            remaining.min(client_ms as i32)
        } else {
            remaining
        };
        tokio::select! {
            biased;
            res = &mut fut => return res.map_err(|e| Failure::Hyper(Box::new(e))),
            _ = tokio::time::sleep(Duration::from_millis(remaining as u64)) => {}
        }
    }
}

fn millis(d: Duration) -> u32 {
    d.as_millis().min(u128::from(u32::MAX / 4)) as u32
}

/// The later of two process-clock timestamps (wrapping-aware).
fn later(a: u32, b: u32) -> u32 {
    if (a.wrapping_sub(b) as i32) >= 0 { a } else { b }
}

fn classify(err: &hyper::Error) -> TryError {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = source {
        if e.is::<BodyTooLarge>() {
            return TryError::BodyTooLarge;
        }
        if e.is::<ClientBodyError>() {
            return TryError::ClientBody;
        }
        source = e.source();
    }
    TryError::Reset
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn later_wraps() {
        assert_eq!(later(5, 3), 5);
        assert_eq!(later(3, 5), 5);
        assert_eq!(later(2, u32::MAX - 1), 2);
    }
}
