//! One try: send a request to one endpoint over the pooled client and wait for the
//! response head under the per-try timers.
//!
//! Timers: `connect` bounds making a new connection (enforced by the connector);
//! `send` bounds any pause while the request body streams out; `read` runs from the
//! moment the whole request has been sent (or the connection was ready, for a
//! request without a streamed body) until the response head arrives.

use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::capture_connection;

use super::body::{BodyTooLarge, Progress};
use crate::config::model::Timeouts;
use crate::upstream::client::{Body, UpstreamClient};
use crate::upstream::now_ms;

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
}

impl TryError {
    /// Whether the upstream may have received (part of) the request.
    pub fn reached_upstream(self) -> bool {
        !matches!(self, TryError::Connect { .. })
    }
}

/// Slack on top of the connector's own connect timeout before the watchdog steps in.
const CONNECT_SLACK: Duration = Duration::from_millis(100);

/// Sends `req` and waits for the response head.
pub async fn send(
    client: &UpstreamClient,
    mut req: Request<Body>,
    timeouts: &Timeouts,
    progress: Option<Arc<Progress>>,
) -> Result<Response<Incoming>, TryError> {
    let mut capture = capture_connection(&mut req);
    let fut = client.inner().request(req);
    tokio::pin!(fut);

    // Phase 1: until a connection is ready (new or pooled).
    let connected = async { capture.wait_for_connection_metadata().await.is_some() };
    let connected_ms = tokio::select! {
        biased;
        res = &mut fut => return classify(res),
        ok = connected => {
            if !ok {
                // The request ended before it got a connection: its error follows.
                return classify(fut.await);
            }
            now_ms()
        }
        _ = tokio::time::sleep(timeouts.connect + CONNECT_SLACK) => return Err(TryError::Connect { timeout: true }),
    };

    // Phase 2: body out (send timer), then the response head (read timer).
    let send_ms = millis(timeouts.send);
    let read_ms = millis(timeouts.read);
    loop {
        let deadline = match progress.as_deref() {
            None => connected_ms.wrapping_add(read_ms),
            Some(p) => match p.done_ms() {
                Some(done) => later(done, connected_ms).wrapping_add(read_ms),
                None => later(p.last_ms(), connected_ms).wrapping_add(send_ms),
            },
        };
        let remaining = deadline.wrapping_sub(now_ms()) as i32;
        if remaining <= 0 {
            return Err(TryError::Timeout);
        }
        tokio::select! {
            biased;
            res = &mut fut => return classify(res),
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

fn classify(
    res: Result<Response<Incoming>, hyper_util::client::legacy::Error>,
) -> Result<Response<Incoming>, TryError> {
    let err = match res {
        Ok(resp) => return Ok(resp),
        Err(e) => e,
    };
    let mut timed_out = false;
    let mut too_large = false;
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&err);
    while let Some(e) = source {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            timed_out |= io.kind() == std::io::ErrorKind::TimedOut;
        }
        too_large |= e.is::<BodyTooLarge>();
        timed_out |= e.to_string().contains("timed out");
        source = e.source();
    }
    Err(if err.is_connect() {
        TryError::Connect { timeout: timed_out }
    } else if too_large {
        TryError::BodyTooLarge
    } else {
        TryError::Reset
    })
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
