//! The shared algorithms: how a unit reads its view of a key's global state
//! (remaining capacity, retry and reset times) and which window or period it is in.

use super::UNKNOWN;
use crate::config::model::LimitAlgorithm;
use crate::ratelimit::algo::Window;
use crate::ratelimit::quota::Periods;
use crate::ratelimit::time::{calendar_period, rolling_len_ms};

/// A shared algorithm, in milliseconds of wall time.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum SharedAlgo {
    /// Sliding window.
    Window {
        /// Requests per window.
        count: u64,
        /// Window length in ms.
        len: u64,
    },
    /// Token bucket.
    Bucket {
        /// Tokens per second.
        rate: f64,
        /// Bucket size.
        burst: f64,
    },
    /// Long-period quota.
    Quota {
        /// Calls per period.
        calls: u64,
        /// Period layout.
        periods: Periods,
    },
}

/// The global state of a key as of a unit's last sync.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct View {
    pub(super) known: bool,
    /// Window index, 0 (bucket) or period start.
    pub(super) epoch: u64,
    /// Window: current count. Bucket: tokens. Quota: count.
    pub(super) a: f64,
    /// Window: previous count. Bucket: time of `a` (ms). Quota: period end.
    pub(super) b: f64,
    /// Grants every live unit held at the sync (taken from the limit, not yet used).
    pub(super) reserved: f64,
    /// This unit's grant right after the sync.
    pub(super) held: u64,
}

impl SharedAlgo {
    /// The shared form of a limit algorithm.
    pub fn from_limit(alg: &LimitAlgorithm) -> Self {
        match *alg {
            LimitAlgorithm::TokenBucket { rate, burst } => SharedAlgo::Bucket { rate, burst },
            LimitAlgorithm::SlidingWindow { count, window } => SharedAlgo::Window {
                count,
                len: u64::try_from(window.as_millis()).unwrap_or(u64::MAX).max(1),
            },
        }
    }

    pub(super) fn limit(&self) -> u64 {
        match *self {
            SharedAlgo::Window { count, .. } => count,
            SharedAlgo::Bucket { burst, .. } => burst.floor().max(1.0) as u64,
            SharedAlgo::Quota { calls, .. } => calls,
        }
    }

    pub(super) fn rolling(&self) -> bool {
        matches!(self, SharedAlgo::Quota { periods, .. } if !periods.calendar)
    }

    pub(super) fn epoch(&self, view: &View, now: u64) -> u64 {
        match *self {
            SharedAlgo::Window { len, .. } => now / len,
            SharedAlgo::Bucket { .. } => 0,
            SharedAlgo::Quota { periods, .. } if periods.calendar => calendar_period(periods.period, now).0,
            SharedAlgo::Quota { .. } => {
                if view.known && (now as f64) < view.b {
                    view.epoch
                } else {
                    UNKNOWN
                }
            }
        }
    }

    /// Window counts `(prev, cur)` the view implies for `epoch`.
    pub(super) fn window_counts(view: &View, epoch: u64) -> (f64, f64) {
        if !view.known {
            (0.0, 0.0)
        } else if view.epoch == epoch {
            (view.b, view.a)
        } else if view.epoch + 1 == epoch {
            (view.a, 0.0)
        } else {
            (0.0, 0.0)
        }
    }

    /// Capacity left by the view at `now` (may be fractional or negative).
    pub(super) fn remaining(&self, view: &View, epoch: u64, now: u64) -> f64 {
        match *self {
            SharedAlgo::Window { count, len } => {
                let (prev, cur) = Self::window_counts(view, epoch);
                let e = now.saturating_sub(epoch * len).min(len) as f64;
                count as f64 - prev * (1.0 - e / len as f64) - cur
            }
            SharedAlgo::Bucket { rate, burst } => {
                if view.known {
                    (view.a + rate * now.saturating_sub(view.b as u64) as f64 / 1000.0).min(burst)
                } else {
                    burst
                }
            }
            SharedAlgo::Quota { calls, .. } => {
                if view.known && view.epoch == epoch && (now as f64) < view.b {
                    calls as f64 - view.a
                } else {
                    calls as f64
                }
            }
        }
    }

    pub(super) fn period_end(&self, view: &View, epoch: u64, now: u64) -> u64 {
        match *self {
            SharedAlgo::Quota { periods, .. } if periods.calendar => calendar_period(periods.period, now).1,
            SharedAlgo::Quota { .. } if view.known && view.epoch == epoch => view.b as u64,
            SharedAlgo::Quota { periods, .. } => now + rolling_len_ms(periods.period),
            _ => now,
        }
    }

    /// Time until one more request fits by the view, when `remaining < 1`.
    pub(super) fn retry_ms(&self, view: &View, epoch: u64, now: u64) -> u64 {
        match *self {
            SharedAlgo::Window { count, len } => {
                let (prev, cur) = Self::window_counts(view, epoch);
                let e = now.saturating_sub(epoch * len).min(len);
                Window { count, len }.retry(prev.ceil() as u64, cur.ceil() as u64, e)
            }
            SharedAlgo::Bucket { rate, .. } => {
                let missing = 1.0 - self.remaining(view, epoch, now);
                (missing.max(0.0) * 1000.0 / rate).ceil() as u64
            }
            SharedAlgo::Quota { .. } => self.period_end(view, epoch, now).saturating_sub(now),
        }
    }

    /// Time until the full allowance is back.
    pub(super) fn reset_ms(&self, view: &View, epoch: u64, now: u64) -> u64 {
        match *self {
            SharedAlgo::Window { len, .. } => len - now.saturating_sub(epoch * len).min(len),
            SharedAlgo::Bucket { rate, burst } => {
                let missing = burst - self.remaining(view, epoch, now);
                (missing.max(0.0) * 1000.0 / rate).ceil() as u64
            }
            SharedAlgo::Quota { .. } => self.period_end(view, epoch, now).saturating_sub(now),
        }
    }

    /// How long an idle, settled key is kept (its view avoids a cold start).
    pub(super) fn idle_ms(&self) -> u64 {
        match *self {
            SharedAlgo::Window { len, .. } => 2 * len,
            SharedAlgo::Bucket { rate, burst } => ((burst / rate * 1000.0) as u64).max(1000),
            SharedAlgo::Quota { .. } => 3_600_000,
        }
    }
}
