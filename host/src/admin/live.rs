//! `GET /admin/v1/events`: the event journal. With `Accept: text/event-stream`
//! (what a browser's `EventSource` sends) it is a server-sent event stream: every
//! kept event oldest first, then each new one as it happens. Otherwise one JSON
//! document with the kept events, newest first.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Response, StatusCode, header};
use http_body::Frame;
use serde_json::json;
use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;

use super::AdminState;
use crate::events::Event;
use crate::proxy::body::{Body, BoxError};

/// A comment line is sent this often so proxies keep an idle stream open.
const KEEPALIVE: Duration = Duration::from_secs(15);

/// Whether the client asked for an event stream.
fn wants_stream(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.to_ascii_lowercase().contains("text/event-stream"))
}

/// Answers `GET /admin/v1/events`.
pub fn events(state: &AdminState, headers: &HeaderMap) -> Response<Body> {
    if !wants_stream(headers) {
        return super::json(StatusCode::OK, &json!({ "events": state.events.history() }));
    }
    let (history, rx) = state.events.subscribe();
    let (tx, body_rx) = mpsc::channel(64);
    state.tasks.spawn(forward(state.stop.clone(), history, rx, tx));
    let mut resp = Response::new(Body::boxed(SseBody(body_rx)));
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

/// One event in the SSE wire format.
fn frame(event: &Event) -> Bytes {
    let data = serde_json::to_string(event).unwrap_or_default();
    Bytes::from(format!("id: {}\ndata: {data}\n\n", event.seq))
}

/// Feeds one stream: the kept events, then each new one, until the client leaves
/// or the gateway stops (so the stream never holds the admin listener's graceful
/// shutdown).
async fn forward(
    stop: CancellationToken,
    history: Vec<Event>,
    mut rx: broadcast::Receiver<Event>,
    tx: mpsc::Sender<Bytes>,
) {
    if tx.send(Bytes::from_static(b"retry: 2000\n\n")).await.is_err() {
        return;
    }
    for event in history.iter().rev() {
        if tx.send(frame(event)).await.is_err() {
            return;
        }
    }
    let mut keepalive = tokio::time::interval(KEEPALIVE);
    loop {
        let out = tokio::select! {
            r = rx.recv() => match r {
                Ok(event) => frame(&event),
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    Bytes::from(format!("event: lagged\ndata: {n}\n\n"))
                }
                Err(broadcast::error::RecvError::Closed) => return,
            },
            _ = keepalive.tick() => Bytes::from_static(b": keepalive\n\n"),
            _ = stop.cancelled() => return,
            _ = tx.closed() => return,
        };
        if tx.send(out).await.is_err() {
            return;
        }
    }
}

/// A body fed by a channel; it ends when the sender is dropped.
struct SseBody(mpsc::Receiver<Bytes>);

impl http_body::Body for SseBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.0.poll_recv(cx).map(|o| o.map(|b| Ok(Frame::data(b))))
    }
}
