//! The vocabulary every policy shares: which endpoint, what became of a try, and the
//! process clock. A leaf: it imports nothing of the crate.

use std::fmt;
use std::sync::Arc;
use std::time::Instant;

/// Identity of an endpoint: the service it belongs to and its `host:port`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EndpointKey {
    /// Service name.
    pub service: Arc<str>,
    /// `host:port`.
    pub authority: Arc<str>,
}

impl fmt::Debug for EndpointKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.service, self.authority)
    }
}

impl fmt::Display for EndpointKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.service, self.authority)
    }
}

/// Process-wide monotonic origin for compact timestamps.
fn origin() -> Instant {
    static ORIGIN: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    *ORIGIN.get_or_init(Instant::now)
}

/// Milliseconds since the process origin (wraps after 49 days; only differences are used).
pub fn now_ms() -> u32 {
    origin().elapsed().as_millis() as u32
}

/// Metric labels of [`Outcome`]s, by [`Outcome::metric_index`] (the last, `reset`, is
/// [`RESET`]).
pub const OUTCOMES: [&str; 7] = ["1xx", "2xx", "3xx", "4xx", "5xx", "connect_failure", "timeout"];
/// Metric label index of [`Outcome::Reset`].
pub const RESET: usize = 7;

/// What became of one try, as seen by health, breakers, metrics and retries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The upstream answered with this status.
    Status(u16),
    /// No connection could be made.
    ConnectFailure,
    /// The upstream did not answer in time.
    Timeout,
    /// The connection broke.
    Reset,
}

impl Outcome {
    /// Metric label index (see [`OUTCOMES`]).
    pub fn metric_index(self) -> usize {
        match self {
            Outcome::Status(s) => usize::from(s / 100).clamp(1, 5) - 1,
            Outcome::ConnectFailure => 5,
            Outcome::Timeout => 6,
            Outcome::Reset => RESET,
        }
    }
}
