//! Bodies in flight: the request body of one try (size-limited, replayable when it
//! is small or untouched, reporting its progress for the send/read timers) and
//! the upstream's response body on its way to the client (holding the endpoint's
//! in-flight count until it ends, bounded by the read timeout between chunks).

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use hyper::body::Incoming;
use tokio::time::Sleep;

use http_body_util::combinators::UnsyncBoxBody;
use hyper::client::conn::http1::SendRequest;

use crate::upstream::{InflightGuard, now_ms};

/// Boxed error used by bodies.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

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

/// The request body exceeded `max_body_size`.
#[derive(Debug, thiserror::Error)]
#[error("request body exceeds the limit of {limit} bytes")]
pub struct BodyTooLarge {
    /// The limit.
    pub limit: u64,
}

/// The upstream paused longer than the read timeout inside a response body.
#[derive(Debug, thiserror::Error)]
#[error("upstream sent no response data for {0:?}")]
pub struct ReadIdleTimeout(pub Duration);

/// The client's body, counted against the size limit.
#[derive(Debug)]
pub struct LimitedBody {
    inner: Incoming,
    seen: u64,
    limit: u64,
}

impl LimitedBody {
    /// Wraps a client body.
    pub fn new(inner: Incoming, limit: u64) -> Self {
        Self { inner, seen: 0, limit }
    }
}

impl HttpBody for LimitedBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let frame = ready!(Pin::new(&mut self.inner).poll_frame(cx));
        if let Some(Ok(f)) = &frame
            && let Some(d) = f.data_ref()
        {
            self.seen += d.len() as u64;
            if self.seen > self.limit {
                return Poll::Ready(Some(Err(Box::new(BodyTooLarge { limit: self.limit }))));
            }
        }
        Poll::Ready(frame.map(|r| r.map_err(Into::into)))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// When the last byte of a try's request body went out, and when data last moved.
#[derive(Debug)]
pub struct Progress {
    last_ms: AtomicU32,
    done_ms: AtomicU32,
}

/// `done_ms` before the body has ended.
const NOT_DONE: u32 = u32::MAX;

impl Progress {
    /// Progress of a body that starts now.
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            last_ms: AtomicU32::new(now_ms()),
            done_ms: AtomicU32::new(NOT_DONE),
        })
    }

    /// Milliseconds (process clock) of the last movement.
    pub fn last_ms(&self) -> u32 {
        self.last_ms.load(Ordering::Relaxed)
    }

    /// When the body ended, if it has.
    pub fn done_ms(&self) -> Option<u32> {
        Some(self.done_ms.load(Ordering::Relaxed)).filter(|d| *d != NOT_DONE)
    }

    fn moved(&self) {
        self.last_ms.store(now_ms(), Ordering::Relaxed);
    }

    fn done(&self) {
        let now = now_ms();
        // NOT_DONE is a sentinel; a real timestamp equal to it is nudged by 1 ms.
        self.done_ms
            .store(if now == NOT_DONE { now - 1 } else { now }, Ordering::Relaxed);
    }
}

/// A streamed client body that a retry can still use if no try has touched it.
pub type StreamSlot = Arc<Mutex<Option<LimitedBody>>>;

/// The request body of one try.
#[derive(Debug)]
pub enum TryBody {
    /// No body.
    Empty,
    /// A buffered body (replayable).
    Full(Option<Bytes>),
    /// The client's stream, taken from its slot on first poll.
    Stream {
        /// Where the untouched stream waits.
        slot: StreamSlot,
        /// The stream once taken.
        taken: Option<LimitedBody>,
        /// Progress for the send/read timers.
        progress: Arc<Progress>,
    },
}

impl HttpBody for TryBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match &mut *self {
            TryBody::Empty => Poll::Ready(None),
            TryBody::Full(data) => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
            TryBody::Stream { slot, taken, progress } => {
                if taken.is_none() {
                    *taken = slot.lock().unwrap_or_else(|p| p.into_inner()).take();
                }
                let Some(body) = taken.as_mut() else {
                    return Poll::Ready(Some(Err("request body was already consumed by an earlier try".into())));
                };
                let frame = ready!(Pin::new(body).poll_frame(cx));
                match &frame {
                    None => progress.done(),
                    Some(_) => progress.moved(),
                }
                Poll::Ready(frame)
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            TryBody::Empty => true,
            TryBody::Full(d) => d.is_none(),
            TryBody::Stream { taken, .. } => taken.as_ref().is_some_and(|b| b.is_end_stream()),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            TryBody::Empty => SizeHint::with_exact(0),
            TryBody::Full(d) => SizeHint::with_exact(d.as_ref().map_or(0, |d| d.len() as u64)),
            TryBody::Stream { slot, taken, .. } => match taken {
                Some(b) => b.size_hint(),
                None => slot
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .as_ref()
                    .map(|b| b.size_hint())
                    .unwrap_or_default(),
            },
        }
    }
}

/// The upstream's response body on its way to the client.
#[derive(Debug)]
pub struct UpstreamBody {
    inner: Incoming,
    guard: Option<InflightGuard>,
    /// The connection, handed back to the endpoint's pool when the body ends.
    conn: Option<SendRequest<TryBody>>,
    idle: Duration,
    /// Allocated on the first pause, then re-armed in place.
    timer: Option<Pin<Box<Sleep>>>,
    armed: bool,
}

impl UpstreamBody {
    /// Wraps a response body; `guard` is released when the body ends or fails, and
    /// `conn` goes back to the endpoint's pool when it ends cleanly.
    pub fn new(inner: Incoming, guard: InflightGuard, conn: SendRequest<TryBody>, idle: Duration) -> Self {
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
        if let (true, Some(conn), Some(guard)) = (clean, self.conn.take(), self.guard.as_ref()) {
            guard.state().pool.put(conn);
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
