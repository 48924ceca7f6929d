//! Rules with `policy: local`: per-key state in this process only, on the
//! monotonic clock.

use std::time::Duration;

use super::algo::{Bucket, Step, Window, WindowState};
use super::table::KeyTable;
use super::{Admission, RuleStep};
use crate::config::model::LimitAlgorithm;

/// Keys one local rule keeps at most (older idle ones are dropped first).
pub const MAX_KEYS: usize = 100_000;

/// A local algorithm with its parameters in nanoseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LocalAlgo {
    /// Token bucket.
    Bucket(Bucket),
    /// Sliding window.
    Window(Window),
}

/// The state of one key under a [`LocalAlgo`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LocalState {
    /// GCRA theoretical arrival time.
    Bucket(u64),
    /// Window counts.
    Window(WindowState),
}

impl LocalAlgo {
    /// The algorithm of a rule with its limits divided by `share` (1 = whole).
    pub fn new(alg: &LimitAlgorithm, share: u32) -> Self {
        let n = f64::from(share.max(1));
        match *alg {
            LimitAlgorithm::TokenBucket { rate, burst } => {
                LocalAlgo::Bucket(Bucket::new(rate / n, (burst / n).max(1.0), 1e9))
            }
            LimitAlgorithm::SlidingWindow { count, window } => LocalAlgo::Window(Window {
                count: (count / u64::from(share.max(1))).max(1),
                len: u64::try_from(window.as_nanos()).unwrap_or(u64::MAX).max(1),
            }),
        }
    }

    /// The limit reported in `RateLimit-Limit`.
    pub fn limit(&self) -> u64 {
        match self {
            LocalAlgo::Bucket(b) => b.burst,
            LocalAlgo::Window(w) => w.count,
        }
    }

    /// State of a key never seen.
    pub fn fresh(&self) -> LocalState {
        match self {
            LocalAlgo::Bucket(_) => LocalState::Bucket(0),
            LocalAlgo::Window(_) => LocalState::Window(WindowState::default()),
        }
    }

    /// Decides one request at `now_ns`.
    pub fn acquire(&self, s: &mut LocalState, now_ns: u64) -> RuleStep {
        let step = match (self, s) {
            (LocalAlgo::Bucket(b), LocalState::Bucket(tat)) => b.acquire(tat, now_ns),
            (LocalAlgo::Window(w), LocalState::Window(ws)) => w.acquire(ws, now_ns),
            (algo, s) => {
                // The algorithm of a key never changes; a mismatch means fresh state.
                *s = algo.fresh();
                return self.acquire(s, now_ns);
            }
        };
        from_step(step, self.limit(), Admission::Counted)
    }

    /// Gives back one admitted request.
    pub fn refund(&self, s: &mut LocalState, now_ns: u64) {
        match (self, s) {
            (LocalAlgo::Bucket(b), LocalState::Bucket(tat)) => b.refund(tat),
            (LocalAlgo::Window(w), LocalState::Window(ws)) => w.refund(ws, now_ns),
            _ => {}
        }
    }

    /// Time after which an untouched key's state equals a fresh one.
    pub fn idle_ns(&self) -> u64 {
        match self {
            LocalAlgo::Bucket(b) => b.full_after(),
            LocalAlgo::Window(w) => w.forgotten_after(),
        }
    }
}

/// Maps an algorithm step (nanoseconds) to a rule step.
pub fn from_step(step: Step, limit: u64, how: Admission) -> RuleStep {
    match step {
        Step::Admit { remaining, reset } => RuleStep::Admit {
            limit,
            remaining,
            reset: Duration::from_nanos(reset),
            how,
        },
        Step::Deny { retry, reset } => RuleStep::Deny {
            limit,
            retry: Duration::from_nanos(retry),
            reset: Duration::from_nanos(reset),
        },
    }
}

/// A rule counted in this process only.
#[derive(Debug)]
pub struct LocalRule {
    algo: LocalAlgo,
    table: KeyTable<LocalState>,
}

impl LocalRule {
    /// A rule for `alg`.
    pub fn new(alg: &LimitAlgorithm) -> Self {
        let algo = LocalAlgo::new(alg, 1);
        let idle = algo.idle_ns();
        Self {
            algo,
            table: KeyTable::new(MAX_KEYS, Box::new(move |_, last, now| now.saturating_sub(last) >= idle)),
        }
    }

    /// Decides one request for `key`.
    pub fn acquire(&self, key: &str, now_ns: u64) -> RuleStep {
        let algo = &self.algo;
        self.table
            .update(key, now_ns, || algo.fresh(), |s| algo.acquire(s, now_ns))
    }

    /// Gives back a request admitted for `key`.
    pub fn refund(&self, key: &str, now_ns: u64) {
        self.table.get(key, |s| self.algo.refund(s, now_ns));
    }

    /// The `top` keys with the least left at `now_ns`, as (key, used, limit): each
    /// key's next decision is computed on a copy of its state, so nothing changes.
    pub fn busiest(&self, now_ns: u64, top: usize) -> (usize, Vec<(String, u64, u64)>) {
        let limit = self.algo.limit();
        let mut keys = Vec::new();
        self.table.scan(|key, state| {
            let mut copy = *state;
            let used = match self.algo.acquire(&mut copy, now_ns) {
                RuleStep::Admit { remaining, .. } => limit.saturating_sub(remaining + 1),
                _ => limit,
            };
            keys.push((key.to_string(), used, limit));
            true
        });
        let total = keys.len();
        keys.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        keys.truncate(top);
        (total, keys)
    }

    /// Drops keys whose state has fully recovered; returns how many live keys
    /// were evicted for room since the table was made.
    pub fn sweep(&self, now_ns: u64) -> u64 {
        self.table.sweep(now_ns);
        self.table.evicted_live()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

    #[test]
    fn keys_are_independent_and_idle_keys_are_swept() {
        let rule = LocalRule::new(&LimitAlgorithm::TokenBucket { rate: 1.0, burst: 2.0 });
        let t = 10 * S;
        assert!(matches!(rule.acquire("a", t), RuleStep::Admit { remaining: 1, .. }));
        assert!(matches!(rule.acquire("a", t), RuleStep::Admit { remaining: 0, .. }));
        assert!(matches!(rule.acquire("a", t), RuleStep::Deny { .. }));
        assert!(matches!(rule.acquire("b", t), RuleStep::Admit { .. }));
        rule.sweep(t + S);
        assert_eq!(rule.table.len(), 2, "a is not full yet");
        rule.sweep(t + 3 * S);
        assert!(rule.table.is_empty());
    }

    #[test]
    fn busiest_keys_are_read_without_counting() {
        let rule = LocalRule::new(&LimitAlgorithm::SlidingWindow {
            count: 10,
            window: Duration::from_secs(60),
        });
        let t = 10 * S;
        for _ in 0..3 {
            rule.acquire("a", t);
        }
        rule.acquire("b", t);
        let (keys, top) = rule.busiest(t, 1);
        assert_eq!(keys, 2);
        assert_eq!(top, vec![("a".to_string(), 3, 10)]);
        assert_eq!(rule.busiest(t, 5).1[0].1, 3, "reading did not count a request");
    }

    #[test]
    fn shares_divide_the_limit() {
        let w = LocalAlgo::new(
            &LimitAlgorithm::SlidingWindow {
                count: 100,
                window: Duration::from_secs(10),
            },
            3,
        );
        assert_eq!(w.limit(), 33);
        let b = LocalAlgo::new(
            &LimitAlgorithm::TokenBucket {
                rate: 10.0,
                burst: 10.0,
            },
            4,
        );
        assert_eq!(b.limit(), 2);
        let LocalAlgo::Bucket(b) = b else { panic!() };
        assert_eq!(b.interval, 400_000_000);
    }
}
