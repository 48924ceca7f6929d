//! Consecutive counters of one source (active or passive), packed into one atomic
//! so an observation updates them with a single compare-and-swap.
//!
//! APISIX semantics: a success increments `successes` and clears every failure
//! counter; a failure increments its own counter and clears `successes` (failures
//! of other kinds are kept, as in lua-resty-healthcheck).

use std::sync::atomic::{AtomicU64, Ordering};

use super::evaluator::{FailureKind, Verdict};

/// The four counters, each saturating at `u16::MAX`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Consecutive successes.
    pub successes: u16,
    /// Consecutive failure statuses.
    pub http_failures: u16,
    /// Consecutive connect failures and resets.
    pub tcp_failures: u16,
    /// Consecutive timeouts.
    pub timeouts: u16,
}

impl Counts {
    fn pack(self) -> u64 {
        u64::from(self.successes)
            | u64::from(self.http_failures) << 16
            | u64::from(self.tcp_failures) << 32
            | u64::from(self.timeouts) << 48
    }

    fn unpack(x: u64) -> Self {
        Counts {
            successes: x as u16,
            http_failures: (x >> 16) as u16,
            tcp_failures: (x >> 32) as u16,
            timeouts: (x >> 48) as u16,
        }
    }

    /// The counts after `verdict`.
    pub fn after(self, verdict: Verdict) -> Counts {
        let inc = |n: u16| n.saturating_add(1);
        match verdict {
            Verdict::Ignore => self,
            Verdict::Success => Counts {
                successes: inc(self.successes),
                ..Counts::default()
            },
            Verdict::Failure(kind) => {
                let mut c = Counts { successes: 0, ..self };
                match kind {
                    FailureKind::Http => c.http_failures = inc(c.http_failures),
                    FailureKind::Tcp => c.tcp_failures = inc(c.tcp_failures),
                    FailureKind::Timeout => c.timeouts = inc(c.timeouts),
                }
                c
            }
        }
    }

    /// The counter a failure of `kind` feeds.
    pub fn failures(&self, kind: FailureKind) -> u16 {
        match kind {
            FailureKind::Http => self.http_failures,
            FailureKind::Tcp => self.tcp_failures,
            FailureKind::Timeout => self.timeouts,
        }
    }

    /// For the admin API.
    pub fn to_json(self) -> serde_json::Value {
        serde_json::json!({
            "successes": self.successes,
            "http_failures": self.http_failures,
            "tcp_failures": self.tcp_failures,
            "timeouts": self.timeouts,
        })
    }
}

/// [`Counts`] in one atomic word.
#[derive(Debug, Default)]
pub struct AtomicCounts(AtomicU64);

impl AtomicCounts {
    /// Applies `verdict`; returns the counts after it.
    pub fn apply(&self, verdict: Verdict) -> Counts {
        if verdict == Verdict::Ignore {
            return self.load();
        }
        let prev = self
            .0
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |x| {
                Some(Counts::unpack(x).after(verdict).pack())
            })
            .unwrap_or_else(|x| x);
        Counts::unpack(prev).after(verdict)
    }

    /// Current counts.
    pub fn load(&self) -> Counts {
        Counts::unpack(self.0.load(Ordering::Acquire))
    }

    /// Zeroes every counter (after a transition).
    pub fn clear(&self) {
        self.0.store(0, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn success_clears_failures_and_failure_clears_successes() {
        let c = AtomicCounts::default();
        c.apply(Verdict::Failure(FailureKind::Http));
        c.apply(Verdict::Failure(FailureKind::Timeout));
        let after = c.apply(Verdict::Failure(FailureKind::Http));
        assert_eq!((after.http_failures, after.timeouts, after.successes), (2, 1, 0));
        let after = c.apply(Verdict::Success);
        assert_eq!(
            after,
            Counts {
                successes: 1,
                ..Counts::default()
            }
        );
        c.apply(Verdict::Success);
        let after = c.apply(Verdict::Failure(FailureKind::Tcp));
        assert_eq!((after.successes, after.tcp_failures), (0, 1));
        assert_eq!(c.apply(Verdict::Ignore), after);
        c.clear();
        assert_eq!(c.load(), Counts::default());
    }

    #[test]
    fn counters_saturate() {
        let mut c = Counts {
            timeouts: u16::MAX,
            ..Counts::default()
        };
        c = c.after(Verdict::Failure(FailureKind::Timeout));
        assert_eq!(c.timeouts, u16::MAX);
        assert_eq!(Counts::unpack(c.pack()), c);
    }
}
