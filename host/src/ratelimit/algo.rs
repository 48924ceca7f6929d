//! The counting algorithms, as pure functions of a small state and `now`.
//!
//! - Token bucket as GCRA (the "generic cell rate algorithm"): one number per key,
//!   the theoretical arrival time. A bucket of `burst` tokens refilling at `rate`
//!   per second admits exactly what GCRA with emission interval `1/rate` and
//!   tolerance `burst/rate` admits.
//! - Sliding window as APISIX's and Cloudflare's weighted previous window: the
//!   estimate is `prev * (1 - elapsed/window) + cur`; a request is admitted while
//!   the estimate plus one stays within `count`.
//!
//! Times are plain `u64` in any unit (nanoseconds for local limiters,
//! milliseconds for windows shared through Redis); every parameter of one call uses
//! the same unit. Time that goes backwards never grants extra capacity.

/// What one rule says about one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Admitted.
    Admit {
        /// Requests that would still be admitted right after this one.
        remaining: u64,
        /// Time until the rule is back at its full allowance.
        reset: u64,
    },
    /// Refused.
    Deny {
        /// Time until a request would be admitted (if nothing else is admitted first).
        retry: u64,
        /// Time until the rule is back at its full allowance.
        reset: u64,
    },
}

/// Token bucket parameters in one time unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bucket {
    /// Time per token (`1/rate`).
    pub interval: u64,
    /// `burst` tokens worth of time (`burst/rate`).
    pub tolerance: u64,
    /// Bucket size in whole tokens (for headers).
    pub burst: u64,
}

impl Bucket {
    /// A bucket refilling `rate` tokens per second with room for `burst`, in
    /// `units_per_sec` time units (1e9 for nanoseconds).
    pub fn new(rate: f64, burst: f64, units_per_sec: f64) -> Self {
        let interval = (units_per_sec / rate).round().max(1.0);
        Self {
            interval: interval as u64,
            tolerance: (burst * interval).round().max(interval) as u64,
            burst: burst.floor().max(1.0) as u64,
        }
    }

    /// Admits one request if a token is left; `tat` is the key's state (0 = full).
    pub fn acquire(&self, tat: &mut u64, now: u64) -> Step {
        let base = (*tat).max(now);
        let next = base.saturating_add(self.interval);
        let allow_at = next.saturating_sub(self.tolerance);
        if allow_at <= now {
            *tat = next;
            Step::Admit {
                remaining: (now + self.tolerance - next) / self.interval,
                reset: next - now,
            }
        } else {
            Step::Deny {
                retry: allow_at - now,
                reset: base - now,
            }
        }
    }

    /// Gives back the token of an admitted request.
    pub fn refund(&self, tat: &mut u64) {
        *tat = tat.saturating_sub(self.interval);
    }

    /// Time after the last admission at which the bucket is full again (an entry
    /// idle for that long is the same as a missing one).
    pub fn full_after(&self) -> u64 {
        self.tolerance
    }
}

/// Sliding window parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// Requests per window.
    pub count: u64,
    /// Window length.
    pub len: u64,
}

/// A key's sliding-window state: the window it counts in and two counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WindowState {
    /// Index of the current window (`now / len`).
    pub idx: u64,
    /// Requests counted in the previous window.
    pub prev: u64,
    /// Requests counted in the current window.
    pub cur: u64,
}

impl WindowState {
    /// Moves to the window containing `now`. A clock that went back keeps the
    /// later window.
    pub fn roll(&mut self, len: u64, now: u64) {
        let idx = now / len;
        if idx > self.idx {
            self.prev = if idx == self.idx + 1 { self.cur } else { 0 };
            self.cur = 0;
            self.idx = idx;
        }
    }

    /// Time since the current window started (0 if the clock is behind it).
    pub fn elapsed(&self, len: u64, now: u64) -> u64 {
        now.saturating_sub(self.idx * len).min(len)
    }
}

impl Window {
    /// Admits one request if the weighted estimate leaves room.
    pub fn acquire(&self, s: &mut WindowState, now: u64) -> Step {
        s.roll(self.len, now);
        let e = s.elapsed(self.len, now);
        match self.check(s.prev, s.cur, e) {
            Some(remaining) => {
                s.cur += 1;
                Step::Admit {
                    remaining,
                    reset: self.len - e,
                }
            }
            None => Step::Deny {
                retry: self.retry(s.prev, s.cur, e),
                reset: self.len - e,
            },
        }
    }

    /// Whether one more request fits with counts `prev`/`cur` at `e` into the
    /// window; if so, how many more would fit after it.
    pub fn check(&self, prev: u64, cur: u64, e: u64) -> Option<u64> {
        let (w, c) = (u128::from(self.len), u128::from(self.count));
        let used = u128::from(prev) * (w - u128::from(e)) + u128::from(cur + 1) * w;
        let cap = c * w;
        (used <= cap).then(|| ((cap - used) / w) as u64)
    }

    /// Time from `e` until one more request fits, given counts `prev`/`cur`.
    pub fn retry(&self, prev: u64, cur: u64, e: u64) -> u64 {
        let (w, c) = (u128::from(self.len), u128::from(self.count));
        let (prev, cur, e) = (u128::from(prev), u128::from(cur), u128::from(e));
        if cur < c && prev > 0 {
            // Later in this window, once the previous window's weight has shrunk:
            // prev * (w - t) <= (c - 1 - cur) * w.
            let t = w - ((c - 1 - cur) * w / prev);
            t.saturating_sub(e).max(1) as u64
        } else {
            // In the next window, where `cur` becomes the previous count:
            // cur * (w - t) <= (c - 1) * w.
            let t = ((c - 1) * w).checked_div(cur).map_or(0, |q| w - q.min(w));
            (w - e + t) as u64
        }
    }

    /// Gives back an admitted request if the window has not moved on.
    pub fn refund(&self, s: &mut WindowState, now: u64) {
        if now / self.len == s.idx {
            s.cur = s.cur.saturating_sub(1);
        }
    }

    /// Time after the last admission at which the state no longer matters.
    pub fn forgotten_after(&self) -> u64 {
        2 * self.len
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

    fn admitted(step: Step) -> bool {
        matches!(step, Step::Admit { .. })
    }

    #[test]
    fn bucket_burst_then_rate() {
        let b = Bucket::new(10.0, 10.0, 1e9);
        let mut tat = 0;
        let t0 = 5 * S;
        let results: Vec<Step> = (0..50).map(|_| b.acquire(&mut tat, t0)).collect();
        assert_eq!(results.iter().filter(|s| admitted(**s)).count(), 10);
        assert_eq!(
            results[0],
            Step::Admit {
                remaining: 9,
                reset: S / 10
            }
        );
        assert_eq!(results[9], Step::Admit { remaining: 0, reset: S });
        let Step::Deny { retry, reset } = results[10] else {
            panic!("11th admitted")
        };
        assert_eq!(retry, S / 10, "one token after 100 ms");
        assert_eq!(reset, S, "full after 1 s");
        // Honest retry: just before it, still refused; at it, admitted.
        assert!(!admitted(b.acquire(&mut tat, t0 + retry - 1)));
        assert!(admitted(b.acquire(&mut tat, t0 + retry)));
        assert!(!admitted(b.acquire(&mut tat, t0 + retry)));
    }

    #[test]
    fn bucket_clock_jumps() {
        let b = Bucket::new(2.0, 4.0, 1e9);
        let mut tat = 0;
        let t0 = 100 * S;
        for _ in 0..4 {
            assert!(admitted(b.acquire(&mut tat, t0)));
        }
        assert!(!admitted(b.acquire(&mut tat, t0)));
        // A jump far forward refills to the burst, never beyond.
        let t1 = t0 + 3600 * S;
        let n = (0..10).filter(|_| admitted(b.acquire(&mut tat, t1))).count();
        assert_eq!(n, 4);
        // A jump backwards grants nothing and does not underflow.
        let back = t1 - 50 * S;
        let Step::Deny { retry, .. } = b.acquire(&mut tat, back) else {
            panic!("admitted after the clock went back")
        };
        assert!(retry > 50 * S);
    }

    #[test]
    fn bucket_refund_restores_the_token() {
        let b = Bucket::new(1.0, 1.0, 1e9);
        let mut tat = 0;
        assert!(admitted(b.acquire(&mut tat, S)));
        assert!(!admitted(b.acquire(&mut tat, S)));
        b.refund(&mut tat);
        assert!(admitted(b.acquire(&mut tat, S)));
    }

    #[test]
    fn bucket_fractional_rate() {
        // 0.5 per second with burst 1: one request every two seconds.
        let b = Bucket::new(0.5, 1.0, 1e9);
        let mut tat = 0;
        assert!(admitted(b.acquire(&mut tat, 10 * S)));
        let Step::Deny { retry, .. } = b.acquire(&mut tat, 10 * S) else {
            panic!()
        };
        assert_eq!(retry, 2 * S);
    }

    #[test]
    fn window_counts_within_one_window() {
        let w = Window { count: 5, len: 10 * S };
        let mut s = WindowState::default();
        let t0 = 100 * S; // start of window 10
        for i in 0..5 {
            assert_eq!(
                w.acquire(&mut s, t0 + i),
                Step::Admit {
                    remaining: 4 - i,
                    reset: 10 * S - i
                }
            );
        }
        let Step::Deny { retry, reset } = w.acquire(&mut s, t0 + 5) else {
            panic!()
        };
        assert_eq!(reset, 10 * S - 5);
        // prev = 5 in the next window: 5 * (1 - t/10) + 1 <= 5  =>  t >= 2 s.
        assert_eq!(retry, (10 * S - 5) + 2 * S);
        assert!(!admitted(w.acquire(&mut s, t0 + 5 + retry - 1)));
        assert!(admitted(w.acquire(&mut s, t0 + 5 + retry)));
    }

    #[test]
    fn window_edge_weights_the_previous_window() {
        let w = Window { count: 10, len: 10 * S };
        let mut s = WindowState::default();
        for _ in 0..10 {
            assert!(admitted(w.acquire(&mut s, 9 * S + 999)));
        }
        // Right at the edge the previous window still weighs fully.
        assert!(!admitted(w.acquire(&mut s, 10 * S)));
        // Half-way through the next window half of it is forgiven.
        let mid = 15 * S;
        let n = (0..10).filter(|_| admitted(w.acquire(&mut s, mid))).count();
        assert_eq!(n, 5);
        // Retry inside the window: prev 10, cur 5 at e = 5 s:
        // 10 * (10 - t)/10 + 6 <= 10  =>  t >= 6 s, one second from now.
        let Step::Deny { retry, .. } = w.acquire(&mut s, mid) else {
            panic!()
        };
        assert_eq!(retry, S);
        assert!(admitted(w.acquire(&mut s, mid + S)));
    }

    #[test]
    fn window_clock_jumps() {
        let w = Window { count: 3, len: S };
        let mut s = WindowState::default();
        let t0 = 50 * S;
        for _ in 0..3 {
            assert!(admitted(w.acquire(&mut s, t0)));
        }
        // Two or more windows later nothing of the past is left.
        let later = t0 + 7 * S;
        assert_eq!((0..5).filter(|_| admitted(w.acquire(&mut s, later))).count(), 3);
        // Backwards: stays in the later window, counts as its start (full weight).
        assert!(!admitted(w.acquire(&mut s, t0)));
        assert_eq!(s.idx, later / S);
    }

    #[test]
    fn window_refund_only_in_the_same_window() {
        let w = Window { count: 1, len: S };
        let mut s = WindowState::default();
        assert!(admitted(w.acquire(&mut s, 3 * S)));
        w.refund(&mut s, 3 * S);
        assert!(admitted(w.acquire(&mut s, 3 * S)));
        w.refund(&mut s, 4 * S);
        assert_eq!(s.cur, 1);
    }

    #[test]
    fn window_retry_is_never_zero() {
        let w = Window { count: 2, len: 1000 };
        // prev 2, cur 1 at e = 0: 2 * (1000 - t)/1000 + 2 <= 2 => t >= 1000: next window.
        assert_eq!(w.retry(2, 1, 0), 1000);
        assert!(w.retry(1, 0, 999) >= 1);
    }
}
