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
    /// A gRPC response whose `grpc-status` is this code, not OK (`0`): in the
    /// response head (a trailers-only response) or in its trailers.
    Grpc(u8),
}

impl Outcome {
    /// Metric label index (see [`OUTCOMES`]).
    pub fn metric_index(self) -> usize {
        match self {
            Outcome::Status(s) => usize::from(s / 100).clamp(1, 5) - 1,
            Outcome::ConnectFailure => 5,
            Outcome::Timeout => 6,
            Outcome::Reset => RESET,
            Outcome::Grpc(code) => Outcome::Status(grpc_http_status(code)).metric_index(),
        }
    }

    /// The HTTP status this outcome stands for: the status itself, or a gRPC code's
    /// HTTP equivalent ([`grpc_http_status`]); `None` when no answer came.
    pub fn http_equivalent(self) -> Option<u16> {
        match self {
            Outcome::Status(s) => Some(s),
            Outcome::Grpc(code) => Some(grpc_http_status(code)),
            Outcome::ConnectFailure | Outcome::Timeout | Outcome::Reset => None,
        }
    }
}

/// gRPC status codes by name (`grpc.status.Code`, lower snake case), index = code.
pub const GRPC_CODES: [&str; 17] = [
    "ok",
    "cancelled",
    "unknown",
    "invalid_argument",
    "deadline_exceeded",
    "not_found",
    "already_exists",
    "permission_denied",
    "resource_exhausted",
    "failed_precondition",
    "aborted",
    "out_of_range",
    "unimplemented",
    "internal",
    "unavailable",
    "data_loss",
    "unauthenticated",
];

/// The code of a gRPC status name: `unavailable`, `UNAVAILABLE` or Envoy's
/// `resource-exhausted` spelling.
pub fn grpc_code(name: &str) -> Option<u8> {
    let name = name.to_ascii_lowercase().replace('-', "_");
    GRPC_CODES.iter().position(|c| *c == name).map(|i| i as u8)
}

/// The HTTP status a gRPC code corresponds to (the mapping of Google's API
/// design guide, as Envoy uses it): `unavailable` 503, `resource_exhausted` 429,
/// `deadline_exceeded` 504, `internal`/`unknown`/`data_loss` 500, ...
pub fn grpc_http_status(code: u8) -> u16 {
    match code {
        0 => 200,
        1 => 499,
        3 | 9 | 11 => 400,
        4 => 504,
        5 => 404,
        6 | 10 => 409,
        7 => 403,
        8 => 429,
        12 => 501,
        14 => 503,
        16 => 401,
        _ => 500,
    }
}

/// A set of gRPC status codes (0..=16) as a bitmask.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct GrpcCodes(pub u32);

impl GrpcCodes {
    /// The set of `codes` (codes above 31 are dropped).
    pub fn new(codes: &[u8]) -> Self {
        GrpcCodes(codes.iter().filter(|c| **c < 32).fold(0, |m, c| m | 1 << c))
    }

    /// Whether `code` is in the set.
    pub fn contains(self, code: u8) -> bool {
        code < 32 && self.0 & (1 << code) != 0
    }
}
