//! Circuit-breaker rules of one endpoint: which observations are failures, the
//! windows they are counted in, and when a rule trips.
//!
//! Each rule counts real requests in a bucketed sliding window: [`BUCKETS`] buckets
//! of `interval / BUCKETS` each, so the window always covers between 90 % and 100 %
//! of `interval` of history. Buckets are atomics (a sequence number and two
//! counters in one word): recording is one compare-and-swap, never a lock.
//! The open/half-open/closed state itself lives in
//! [`EndpointHealth`](super::EndpointHealth) and outlives rule changes.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use super::evaluator::{Observed, StatusSet};
use crate::config::model::{BreakerRule, ErrorClass, TripCondition};

/// Buckets per window.
pub const BUCKETS: u64 = 10;

/// Longest `Retry-After` a breaker honours: a node that asks for more is retried
/// after an hour anyway (it may have recovered, and an operator can trip it again).
pub const RETRY_AFTER_CAP: Duration = Duration::from_secs(3600);

const SEQ_BITS: u32 = 24;
const COUNT_BITS: u32 = 20;
const COUNT_MAX: u64 = (1 << COUNT_BITS) - 1;
const SEQ_MASK: u64 = (1 << SEQ_BITS) - 1;

fn pack(seq: u64, total: u64, failures: u64) -> u64 {
    (seq & SEQ_MASK) << (2 * COUNT_BITS) | (total.min(COUNT_MAX)) << COUNT_BITS | failures.min(COUNT_MAX)
}

fn unpack(x: u64) -> (u64, u64, u64) {
    (x >> (2 * COUNT_BITS), (x >> COUNT_BITS) & COUNT_MAX, x & COUNT_MAX)
}

/// Requests and failures of one rule over its window.
#[derive(Debug)]
pub struct Window {
    bucket_ms: u64,
    buckets: [AtomicU64; BUCKETS as usize],
}

impl Window {
    /// A window covering `interval`.
    pub fn new(interval: Duration) -> Self {
        Window {
            bucket_ms: (interval.as_millis() as u64 / BUCKETS).max(1),
            buckets: Default::default(),
        }
    }

    /// Counts one request at `now_ms`.
    pub fn record(&self, now_ms: u64, failed: bool) {
        let seq = now_ms / self.bucket_ms;
        let slot = &self.buckets[(seq % BUCKETS) as usize];
        let _ = slot.fetch_update(Ordering::AcqRel, Ordering::Acquire, |x| {
            let (s, total, failures) = unpack(x);
            Some(if s == seq & SEQ_MASK && total > 0 {
                pack(seq, total + 1, failures + u64::from(failed))
            } else {
                pack(seq, 1, u64::from(failed))
            })
        });
    }

    /// (requests, failures) within the window ending at `now_ms`.
    pub fn sums(&self, now_ms: u64) -> (u64, u64) {
        let current = (now_ms / self.bucket_ms) & SEQ_MASK;
        self.buckets.iter().fold((0, 0), |(t, f), slot| {
            let (s, total, failures) = unpack(slot.load(Ordering::Acquire));
            if current.wrapping_sub(s) & SEQ_MASK < BUCKETS {
                (t + total, f + failures)
            } else {
                (t, f)
            }
        })
    }

    /// Forgets everything.
    pub fn clear(&self) {
        for slot in &self.buckets {
            slot.store(0, Ordering::Release);
        }
    }
}

/// Why and for how long a breaker opens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Trip {
    /// Index of the rule.
    pub rule: usize,
    /// Failures in the window (the failing observation itself for a trial).
    pub failures: u64,
    /// Requests in the window.
    pub requests: u64,
    /// How long to stay open.
    pub open_for: Duration,
    /// Whether `open_for` comes from the node's `Retry-After`.
    pub retry_after: bool,
}

#[derive(Debug)]
struct CompiledRule {
    rule: BreakerRule,
    statuses: StatusSet,
    connect_failure: bool,
    timeout: bool,
    reset: bool,
    window: Window,
}

impl CompiledRule {
    fn is_failure(&self, observed: Observed) -> bool {
        match observed {
            Observed::Status(s) => self.statuses.contains(s),
            Observed::Connected => false,
            Observed::ConnectFailure => self.connect_failure,
            Observed::Timeout => self.timeout,
            Observed::Reset => self.reset,
            // A gRPC code counts as its HTTP equivalent (`unavailable` as 503, ...).
            Observed::Grpc(code) => self.statuses.contains(crate::outcome::grpc_http_status(code)),
        }
    }

    fn open_for(&self, observed: Observed, retry_after: Option<Duration>) -> (Duration, bool) {
        let base = self.rule.trip_duration;
        match (observed, retry_after) {
            (Observed::Status(429 | 503), Some(after)) if self.rule.accept_retry_after => {
                let after = after.min(RETRY_AFTER_CAP);
                if after > base { (after, true) } else { (base, false) }
            }
            _ => (base, false),
        }
    }
}

/// The breaker rules of one upstream, with one endpoint's windows.
#[derive(Debug)]
pub struct BreakerSet {
    rules: Vec<CompiledRule>,
}

impl BreakerSet {
    /// Compiles `rules` with empty windows.
    pub fn new(rules: &[BreakerRule]) -> Self {
        let rules = rules
            .iter()
            .map(|r| {
                let codes: Vec<u16> = r.status_ranges.iter().flat_map(|&(lo, hi)| lo..=hi).collect();
                CompiledRule {
                    statuses: StatusSet::new(&codes),
                    connect_failure: r.errors.contains(&ErrorClass::ConnectFailure),
                    timeout: r.errors.contains(&ErrorClass::Timeout),
                    reset: r.errors.contains(&ErrorClass::Reset),
                    window: Window::new(r.interval),
                    rule: r.clone(),
                }
            })
            .collect();
        BreakerSet { rules }
    }

    /// Whether this set was compiled from exactly `rules`.
    pub fn same_rules(&self, rules: &[BreakerRule]) -> bool {
        self.rules.len() == rules.len() && self.rules.iter().zip(rules).all(|(c, r)| c.rule == *r)
    }

    /// Whether there is any rule.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Name of rule `i`.
    pub fn rule_name(&self, i: usize) -> &str {
        self.rules.get(i).map(|r| r.rule.name.as_str()).unwrap_or("?")
    }

    /// Counts one request of a closed breaker; returns the first rule it trips.
    pub fn record(&self, observed: Observed, retry_after: Option<Duration>, now_ms: u64) -> Option<Trip> {
        let mut trip = None;
        for (i, r) in self.rules.iter().enumerate() {
            let failed = r.is_failure(observed);
            r.window.record(now_ms, failed);
            if !failed || trip.is_some() {
                continue;
            }
            let (requests, failures) = r.window.sums(now_ms);
            let tripped = match r.rule.condition {
                TripCondition::Count(n) => failures >= u64::from(n),
                TripCondition::Percentage { percent, min_requests } => {
                    requests >= u64::from(min_requests) && failures as f64 * 100.0 >= percent * requests as f64
                }
            };
            if tripped {
                let (open_for, from_header) = r.open_for(observed, retry_after);
                trip = Some(Trip {
                    rule: i,
                    failures,
                    requests,
                    open_for,
                    retry_after: from_header,
                });
            }
        }
        trip
    }

    /// The verdict on a half-open breaker's trial: `Some` reopens it.
    pub fn trial_failure(&self, observed: Observed, retry_after: Option<Duration>) -> Option<Trip> {
        self.rules
            .iter()
            .enumerate()
            .find(|(_, r)| r.is_failure(observed))
            .map(|(i, r)| {
                let (open_for, from_header) = r.open_for(observed, retry_after);
                Trip {
                    rule: i,
                    failures: 1,
                    requests: 1,
                    open_for,
                    retry_after: from_header,
                }
            })
    }

    /// Empties every window (after the breaker trips or closes).
    pub fn clear(&self) {
        for r in &self.rules {
            r.window.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(condition: TripCondition) -> BreakerRule {
        BreakerRule {
            name: "r".into(),
            condition,
            interval: Duration::from_secs(10),
            status_ranges: vec![(500, 599)],
            errors: vec![ErrorClass::ConnectFailure, ErrorClass::Timeout],
            trip_duration: Duration::from_secs(5),
            accept_retry_after: true,
        }
    }

    #[test]
    fn window_forgets_old_buckets() {
        let w = Window::new(Duration::from_secs(10));
        w.record(0, true);
        w.record(500, false);
        w.record(9_000, true);
        assert_eq!(w.sums(9_500), (3, 2));
        // At 10.5 s the bucket of [0, 1 s) has left the window.
        assert_eq!(w.sums(10_500), (1, 1));
        assert_eq!(w.sums(30_000), (0, 0));
        w.record(30_000, false);
        assert_eq!(w.sums(30_000), (1, 0));
        w.clear();
        assert_eq!(w.sums(30_000), (0, 0));
    }

    #[test]
    fn count_rule_trips_on_the_nth_failure_in_the_window() {
        let set = BreakerSet::new(&[rule(TripCondition::Count(3))]);
        assert!(set.record(Observed::Status(500), None, 0).is_none());
        assert!(set.record(Observed::Status(200), None, 100).is_none());
        assert!(
            set.record(Observed::Reset, None, 200).is_none(),
            "reset is not a failure class here"
        );
        assert!(set.record(Observed::Timeout, None, 300).is_none());
        let trip = set
            .record(Observed::ConnectFailure, None, 400)
            .expect("third failure trips");
        assert_eq!(
            (trip.failures, trip.requests, trip.open_for),
            (3, 5, Duration::from_secs(5))
        );
        // Failures spread wider than the interval do not trip.
        let set = BreakerSet::new(&[rule(TripCondition::Count(2))]);
        assert!(set.record(Observed::Status(503), None, 0).is_none());
        assert!(set.record(Observed::Status(503), None, 11_000).is_none());
    }

    #[test]
    fn percentage_rule_needs_min_requests() {
        let set = BreakerSet::new(&[rule(TripCondition::Percentage {
            percent: 50.0,
            min_requests: 4,
        })]);
        assert!(set.record(Observed::Status(500), None, 0).is_none());
        assert!(set.record(Observed::Status(500), None, 1).is_none());
        assert!(set.record(Observed::Status(200), None, 2).is_none());
        let trip = set.record(Observed::Status(500), None, 3).expect("3 of 4 failed");
        assert_eq!((trip.failures, trip.requests), (3, 4));
    }

    #[test]
    fn retry_after_extends_the_trip_on_429_and_503_only_and_is_capped() {
        let set = BreakerSet::new(&[BreakerRule {
            status_ranges: vec![(429, 429), (500, 599)],
            ..rule(TripCondition::Count(1))
        }]);
        let t = set
            .record(Observed::Status(429), Some(Duration::from_secs(60)), 0)
            .unwrap();
        assert_eq!((t.open_for, t.retry_after), (Duration::from_secs(60), true));
        set.clear();
        let t = set
            .record(Observed::Status(500), Some(Duration::from_secs(60)), 0)
            .unwrap();
        assert_eq!((t.open_for, t.retry_after), (Duration::from_secs(5), false));
        let t = set
            .trial_failure(Observed::Status(503), Some(Duration::from_secs(86_400)))
            .unwrap();
        assert_eq!(t.open_for, RETRY_AFTER_CAP);
        // Shorter than trip_duration: the trip duration wins.
        let t = set
            .trial_failure(Observed::Status(503), Some(Duration::from_secs(1)))
            .unwrap();
        assert_eq!((t.open_for, t.retry_after), (Duration::from_secs(5), false));
        assert!(set.trial_failure(Observed::Status(200), None).is_none());
    }

    #[test]
    fn same_rules_compares_config() {
        let rules = [rule(TripCondition::Count(3))];
        let set = BreakerSet::new(&rules);
        assert!(set.same_rules(&rules));
        assert!(!set.same_rules(&[rule(TripCondition::Count(4))]));
        assert!(!set.same_rules(&[]));
    }
}
