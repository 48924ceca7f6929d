//! Bodies in flight: the request body of one try (size-limited, replayable when it
//! is small or untouched, reporting its progress for the send/read timers) and
//! the upstream's response body on its way to the client (holding the endpoint's
//! in-flight count until it ends, bounded by the read timeout between chunks).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use hyper::body::Incoming;
use tokio::time::Sleep;

use http_body_util::combinators::UnsyncBoxBody;
use hyper::client::conn::http1::SendRequest;

use crate::upstream::InflightGuard;
pub use crate::upstream::body::{BodyTooLarge, BoxError, ClientBodyError, LimitedBody, Progress, StreamSlot, TryBody};

/// Every response body the gateway sends: its own small answers, upstream
/// responses on their way through, and anything else boxed. An enum rather than a
/// box, so the common cases cost no allocation.
#[derive(Debug)]
pub enum Body {
    /// A complete in-memory body.
    Full(Option<Bytes>),
    /// An upstream's response body.
    Upstream(UpstreamBody),
    /// Any other body.
    Boxed(UnsyncBoxBody<Bytes, BoxError>),
}

impl Body {
    /// A complete in-memory body.
    pub fn full(data: impl Into<Bytes>) -> Self {
        let data = data.into();
        Body::Full((!data.is_empty()).then_some(data))
    }

    /// Boxes any body.
    pub fn boxed<B>(body: B) -> Self
    where
        B: HttpBody<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        use http_body_util::BodyExt;
        Body::Boxed(body.map_err(Into::into).boxed_unsync())
    }
}

impl HttpBody for Body {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match &mut *self {
            Body::Full(data) => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
            Body::Upstream(b) => Pin::new(b).poll_frame(cx),
            Body::Boxed(b) => Pin::new(b).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Body::Full(d) => d.is_none(),
            Body::Upstream(b) => b.is_end_stream(),
            Body::Boxed(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Body::Full(d) => SizeHint::with_exact(d.as_ref().map_or(0, |d| d.len() as u64)),
            Body::Upstream(b) => b.size_hint(),
            Body::Boxed(b) => b.size_hint(),
        }
    }
}

/// The upstream paused longer than the read timeout inside a response body.
#[derive(Debug, thiserror::Error)]
#[error("upstream sent no response data for {0:?}")]
pub struct ReadIdleTimeout(pub Duration);

/// The upstream's response body on its way to the client.
#[derive(Debug)]
pub struct UpstreamBody {
    inner: Incoming,
    guard: Option<InflightGuard>,
    /// The connection and its kind, handed back to the endpoint's pool when the body ends.
    conn: Option<(SendRequest<TryBody>, u64)>,
    idle: Duration,
    /// Allocated on the first pause, then re-armed in place.
    timer: Option<Pin<Box<Sleep>>>,
    armed: bool,
}

impl UpstreamBody {
    /// Wraps a response body; `guard` is released when the body ends or fails, and
    /// `conn` (with its pool kind) goes back to the endpoint's pool when it ends cleanly.
    pub fn new(inner: Incoming, guard: InflightGuard, conn: (SendRequest<TryBody>, u64), idle: Duration) -> Self {
        let mut body = Self {
            inner,
            guard: Some(guard),
            conn: Some(conn),
            idle,
            timer: None,
            armed: false,
        };
        if body.inner.is_end_stream() {
            body.finish(true);
        }
        body
    }

    /// Releases the in-flight count; a clean end returns the connection to the pool.
    fn finish(&mut self, clean: bool) {
        if let (true, Some((conn, kind)), Some(guard)) = (clean, self.conn.take(), self.guard.as_ref()) {
            guard.state().pool.put(conn, kind);
        }
        self.conn = None;
        self.guard = None;
    }
}

impl HttpBody for UpstreamBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => {
                this.armed = false;
                match &frame {
                    Some(Ok(_)) if this.inner.is_end_stream() => this.finish(true),
                    Some(Ok(_)) => {}
                    None => this.finish(true),
                    Some(Err(_)) => this.finish(false),
                }
                Poll::Ready(frame.map(|r| r.map_err(Into::into)))
            }
            Poll::Pending => {
                let deadline = tokio::time::Instant::now() + this.idle;
                let timer = this
                    .timer
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
                if !this.armed {
                    timer.as_mut().reset(deadline);
                    this.armed = true;
                }
                ready!(timer.as_mut().poll(cx));
                this.finish(false);
                Poll::Ready(Some(Err(Box::new(ReadIdleTimeout(this.idle)))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
