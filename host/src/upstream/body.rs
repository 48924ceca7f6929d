//! The request body of one try as the connection pool sends it: size-limited,
//! replayable when it is small or untouched, and reporting its progress for the
//! send/read timers.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use hyper::body::Incoming;

use crate::outcome::now_ms;

/// Boxed error used by bodies.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The request body exceeded `max_body_size`.
#[derive(Debug, thiserror::Error)]
#[error("request body exceeds the limit of {limit} bytes")]
pub struct BodyTooLarge {
    /// The limit.
    pub limit: u64,
}

/// The client's request body broke: malformed chunked framing, a connection closed
/// before the declared length arrived, or any other read error. The client's fault,
/// never the upstream's.
#[derive(Debug, thiserror::Error)]
#[error("the client's request body could not be read: {0}")]
pub struct ClientBodyError(#[source] pub hyper::Error);

/// The client's body, counted against the size limit; its read errors become
/// [`ClientBodyError`] so a failed try can tell them from the upstream's.
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
        Poll::Ready(frame.map(|r| r.map_err(|e| Box::new(ClientBodyError(e)) as BoxError)))
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
    /// The try is waiting for the client's next bytes (not for the upstream to read).
    waiting_on_client: AtomicBool,
}

/// `done_ms` before the body has ended.
const NOT_DONE: u32 = u32::MAX;

impl Progress {
    /// Progress of a body that starts now.
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            last_ms: AtomicU32::new(now_ms()),
            done_ms: AtomicU32::new(NOT_DONE),
            waiting_on_client: AtomicBool::new(false),
        })
    }

    /// Milliseconds (process clock) of the last movement.
    pub fn last_ms(&self) -> u32 {
        self.last_ms.load(Ordering::Relaxed)
    }

    /// Whether the body is stalled on the client: the last poll found no data from
    /// it yet (so a pause now is the client's, not the upstream's).
    pub fn waiting_on_client(&self) -> bool {
        self.waiting_on_client.load(Ordering::Relaxed)
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

/// A copy of what a streamed body sent, kept while it stays within
/// `max_replay_body`: once the body has ended within the limit, a retry resends
/// the copy (a gRPC call's request is streamed without a length, yet is usually
/// small). A body over the limit, with trailers, or broken is not kept.
#[derive(Debug)]
pub struct Recording {
    state: Mutex<RecState>,
}

#[derive(Debug, Default)]
struct RecState {
    chunks: Vec<Bytes>,
    len: u64,
    limit: u64,
    complete: bool,
    spoiled: bool,
}

impl Recording {
    /// An empty recording that keeps up to `limit` bytes.
    pub fn new(limit: u64) -> Arc<Self> {
        Arc::new(Self {
            state: Mutex::new(RecState {
                limit,
                ..RecState::default()
            }),
        })
    }

    fn note(&self, frame: Option<&Result<Frame<Bytes>, BoxError>>) {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if st.spoiled {
            return;
        }
        match frame {
            None => st.complete = true,
            Some(Ok(f)) if f.is_data() => {
                let d = f.data_ref().expect("a data frame has data");
                if st.len + d.len() as u64 > st.limit {
                    st.spoiled = true;
                    st.chunks = Vec::new();
                } else {
                    st.len += d.len() as u64;
                    st.chunks.push(d.clone());
                }
            }
            Some(_) => {
                st.spoiled = true;
                st.chunks = Vec::new();
            }
        }
    }

    /// The whole body, if it has ended within the limit.
    pub fn replay(&self) -> Option<Bytes> {
        let st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if !st.complete || st.spoiled {
            return None;
        }
        Some(match st.chunks.as_slice() {
            [] => Bytes::new(),
            [one] => one.clone(),
            many => Bytes::from(many.concat()),
        })
    }
}

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
        /// The copy a retry may resend.
        recording: Arc<Recording>,
    },
}

impl HttpBody for TryBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match &mut *self {
            TryBody::Empty => Poll::Ready(None),
            TryBody::Full(data) => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
            TryBody::Stream {
                slot,
                taken,
                progress,
                recording,
            } => {
                if taken.is_none() {
                    *taken = slot.lock().unwrap_or_else(|p| p.into_inner()).take();
                }
                let Some(body) = taken.as_mut() else {
                    return Poll::Ready(Some(Err("request body was already consumed by an earlier try".into())));
                };
                let polled = Pin::new(&mut *body).poll_frame(cx);
                progress.waiting_on_client.store(polled.is_pending(), Ordering::Relaxed);
                let frame = ready!(polled);
                recording.note(frame.as_ref());
                // An HTTP/2 sender stops polling once the body says it has ended, so
                // the end is noted with the last frame, not only on `None`.
                let ended = match &frame {
                    None => true,
                    Some(Ok(_)) => body.is_end_stream(),
                    Some(Err(_)) => false,
                };
                if ended {
                    recording.note(None);
                    progress.done();
                } else {
                    progress.moved();
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

#[cfg(test)]
mod tests {
    use super::*;

    fn data(s: &'static str) -> Result<Frame<Bytes>, BoxError> {
        Ok(Frame::data(Bytes::from_static(s.as_bytes())))
    }

    #[test]
    fn a_recording_replays_only_a_whole_body_within_its_limit() {
        let r = Recording::new(8);
        r.note(Some(&data("abc")));
        assert_eq!(r.replay(), None, "not ended yet");
        r.note(Some(&data("def")));
        r.note(None);
        assert_eq!(r.replay().as_deref(), Some(&b"abcdef"[..]));

        let over = Recording::new(4);
        over.note(Some(&data("abc")));
        over.note(Some(&data("def")));
        over.note(None);
        assert_eq!(over.replay(), None, "over the limit");

        let trailers = Recording::new(64);
        trailers.note(Some(&data("abc")));
        trailers.note(Some(&Ok(Frame::trailers(http::HeaderMap::new()))));
        trailers.note(None);
        assert_eq!(trailers.replay(), None, "trailers are not kept");

        let empty = Recording::new(0);
        empty.note(None);
        assert_eq!(empty.replay().as_deref(), Some(&b""[..]));
    }
}
