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

use crate::outcome::Outcome;
use crate::upstream::InflightGuard;
pub use crate::upstream::body::{
    BodyTooLarge, BoxError, ClientBodyError, LimitedBody, Progress, Recording, StreamSlot, TryBody,
};
use crate::upstream::pool::Checkout;

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

/// Records a gRPC call's outcome once its response body ends: the `grpc-status`
/// of its trailers (OK as 200, else the code), `UNKNOWN` when it ended without
/// one, a reset when the body broke, and 200 when the client left first (the
/// node answered). Called once, on the task that polls the body, never blocking
/// it.
pub struct EndWatch(Option<Box<dyn FnOnce(Outcome) + Send>>);

impl EndWatch {
    /// A watch that hands the outcome to `record`.
    pub fn new(record: impl FnOnce(Outcome) + Send + 'static) -> Self {
        EndWatch(Some(Box::new(record)))
    }

    fn fire(&mut self, outcome: Outcome) {
        if let Some(f) = self.0.take() {
            f(outcome);
        }
    }

    fn frame(&mut self, frame: &Option<Result<Frame<Bytes>, hyper::Error>>) {
        match frame {
            Some(Ok(f)) => {
                if let Some(trailers) = f.trailers_ref() {
                    self.fire(match super::headers::grpc_status(trailers) {
                        Some(0) => Outcome::Status(200),
                        Some(code) => Outcome::Grpc(code),
                        None => Outcome::Grpc(GRPC_UNKNOWN),
                    });
                }
            }
            None => self.fire(Outcome::Grpc(GRPC_UNKNOWN)),
            Some(Err(_)) => self.fire(Outcome::Reset),
        }
    }
}

/// `grpc-status` UNKNOWN: a gRPC response that ended without a status.
const GRPC_UNKNOWN: u8 = 2;

impl Drop for EndWatch {
    fn drop(&mut self) {
        self.fire(Outcome::Status(200));
    }
}

impl std::fmt::Debug for EndWatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EndWatch").field("pending", &self.0.is_some()).finish()
    }
}

/// The upstream's response body on its way to the client.
#[derive(Debug)]
pub struct UpstreamBody {
    inner: Incoming,
    guard: Option<InflightGuard>,
    /// The connection, handed back to the endpoint's pool when the body ends.
    conn: Option<Checkout<TryBody>>,
    idle: Duration,
    /// Allocated on the first pause, then re-armed in place.
    timer: Option<Pin<Box<Sleep>>>,
    armed: bool,
    /// A gRPC call whose outcome is in its trailers.
    watch: Option<EndWatch>,
}

impl UpstreamBody {
    /// Wraps a response body; `guard` is released when the body ends or fails, and
    /// `conn` goes back to the endpoint's pool when it ends cleanly.
    pub fn new(inner: Incoming, guard: InflightGuard, conn: Checkout<TryBody>, idle: Duration) -> Self {
        let mut body = Self {
            inner,
            guard: Some(guard),
            conn: Some(conn),
            idle,
            timer: None,
            armed: false,
            watch: None,
        };
        if body.inner.is_end_stream() {
            body.finish(true);
        }
        body
    }

    /// Records the call's outcome from its trailers through `watch` when the body ends.
    pub fn with_watch(mut self, watch: EndWatch) -> Self {
        self.watch = Some(watch);
        self
    }

    /// Releases the in-flight count; a clean end returns the connection to the pool.
    fn finish(&mut self, clean: bool) {
        if let (true, Some(conn), Some(guard)) = (clean, self.conn.take(), self.guard.as_ref()) {
            conn.give_back(&guard.state().pool);
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
                if let Some(w) = &mut this.watch {
                    w.frame(&frame);
                }
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
                if let Some(w) = &mut this.watch {
                    w.fire(Outcome::Timeout);
                }
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
