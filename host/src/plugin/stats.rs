//! Per-plugin call statistics: atomics bumped on the request path, read by the admin API
//! and the Prometheus collector.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// How a plugin call failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FaultKind {
    /// The plugin trapped (panic, abort, out-of-bounds access, stack overflow, ...).
    Trap,
    /// The call ran past its deadline and was interrupted.
    Timeout,
    /// The plugin hit its memory cap (growth refused, then it trapped).
    Memory,
    /// The answer broke the contract (a node not offered, an invalid key, ...).
    Contract,
    /// A fresh instance could not be created or its `init` failed.
    Init,
}

impl FaultKind {
    /// Every kind, in report order.
    pub const ALL: [FaultKind; 5] = [
        FaultKind::Trap,
        FaultKind::Timeout,
        FaultKind::Memory,
        FaultKind::Contract,
        FaultKind::Init,
    ];

    /// Name in reports and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            FaultKind::Trap => "trap",
            FaultKind::Timeout => "timeout",
            FaultKind::Memory => "memory",
            FaultKind::Contract => "contract",
            FaultKind::Init => "init",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Buckets of the call-duration histogram: bucket `i` holds calls shorter than
/// `2^(i+8)` ns (256 ns up to ~8.6 s; longer calls land in the last one).
pub const BUCKETS: usize = 26;

/// Upper bound of bucket `i` in nanoseconds.
pub fn bucket_bound_ns(i: usize) -> u64 {
    1u64 << (i + 8)
}

fn bucket_of(ns: u64) -> usize {
    let bits = 64 - ns.leading_zeros() as usize;
    bits.saturating_sub(8).min(BUCKETS - 1)
}

/// Live counters of one plugin generation.
#[derive(Debug, Default)]
pub struct Stats {
    calls: AtomicU64,
    faults: [AtomicU64; 5],
    fallbacks: AtomicU64,
    declines: AtomicU64,
    refusals: AtomicU64,
    instances: AtomicU64,
    buckets: [AtomicU64; BUCKETS],
    sum_ns: AtomicU64,
}

impl Stats {
    /// Records one completed call.
    pub fn call(&self, took: Duration) {
        let ns = took.as_nanos().min(u128::from(u64::MAX)) as u64;
        self.calls.fetch_add(1, Ordering::Relaxed);
        self.buckets[bucket_of(ns)].fetch_add(1, Ordering::Relaxed);
        self.sum_ns.fetch_add(ns, Ordering::Relaxed);
    }

    /// Records a fault.
    pub fn fault(&self, kind: FaultKind) {
        self.faults[kind.index()].fetch_add(1, Ordering::Relaxed);
    }

    /// Records a decision the built-in policy made because the plugin failed (a fault)
    /// or is disabled (after faults).
    pub fn fallback(&self) {
        self.fallbacks.fetch_add(1, Ordering::Relaxed);
    }

    /// Records a decision the plugin left to the built-in on purpose (`None`, `builtin`).
    pub fn decline(&self) {
        self.declines.fetch_add(1, Ordering::Relaxed);
    }

    /// Records a decision the built-in made because the plugin refused this use's config.
    pub fn refusal(&self) {
        self.refusals.fetch_add(1, Ordering::Relaxed);
    }

    /// Records a new instance.
    pub fn instantiated(&self) {
        self.instances.fetch_add(1, Ordering::Relaxed);
    }

    /// A consistent-enough copy for reports.
    pub fn snapshot(&self) -> StatsSnapshot {
        StatsSnapshot {
            calls: self.calls.load(Ordering::Relaxed),
            faults: std::array::from_fn(|i| self.faults[i].load(Ordering::Relaxed)),
            fallbacks: self.fallbacks.load(Ordering::Relaxed),
            declines: self.declines.load(Ordering::Relaxed),
            refusals: self.refusals.load(Ordering::Relaxed),
            instances: self.instances.load(Ordering::Relaxed),
            buckets: std::array::from_fn(|i| self.buckets[i].load(Ordering::Relaxed)),
            sum_ns: self.sum_ns.load(Ordering::Relaxed),
        }
    }

    /// Adds a retired generation's counts (so totals stay monotonic across reloads).
    pub fn absorb(&self, s: &StatsSnapshot) {
        self.calls.fetch_add(s.calls, Ordering::Relaxed);
        for (a, b) in self.faults.iter().zip(s.faults) {
            a.fetch_add(b, Ordering::Relaxed);
        }
        self.fallbacks.fetch_add(s.fallbacks, Ordering::Relaxed);
        self.declines.fetch_add(s.declines, Ordering::Relaxed);
        self.refusals.fetch_add(s.refusals, Ordering::Relaxed);
        self.instances.fetch_add(s.instances, Ordering::Relaxed);
        for (a, b) in self.buckets.iter().zip(s.buckets) {
            a.fetch_add(b, Ordering::Relaxed);
        }
        self.sum_ns.fetch_add(s.sum_ns, Ordering::Relaxed);
    }
}

/// A copy of [`Stats`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StatsSnapshot {
    /// Completed calls.
    pub calls: u64,
    /// Faults by [`FaultKind`] index.
    pub faults: [u64; 5],
    /// Decisions left to the built-in policy after a fault, or while disabled by faults.
    pub fallbacks: u64,
    /// Decisions the plugin declined (left to the built-in on purpose).
    pub declines: u64,
    /// Decisions the built-in made because the plugin refused the use's config.
    pub refusals: u64,
    /// Instances created.
    pub instances: u64,
    /// Call-duration histogram (see [`BUCKETS`]).
    pub buckets: [u64; BUCKETS],
    /// Sum of call durations in nanoseconds.
    pub sum_ns: u64,
}

impl StatsSnapshot {
    /// Faults of one kind.
    pub fn faults_of(&self, kind: FaultKind) -> u64 {
        self.faults[kind.index()]
    }

    /// Sum of two snapshots.
    pub fn plus(&self, other: &StatsSnapshot) -> StatsSnapshot {
        StatsSnapshot {
            calls: self.calls + other.calls,
            faults: std::array::from_fn(|i| self.faults[i] + other.faults[i]),
            fallbacks: self.fallbacks + other.fallbacks,
            declines: self.declines + other.declines,
            refusals: self.refusals + other.refusals,
            instances: self.instances + other.instances,
            buckets: std::array::from_fn(|i| self.buckets[i] + other.buckets[i]),
            sum_ns: self.sum_ns + other.sum_ns,
        }
    }

    /// The 99th-percentile call duration (the upper bound of its bucket), if any call
    /// was made.
    pub fn p99(&self) -> Option<Duration> {
        let total: u64 = self.buckets.iter().sum();
        if total == 0 {
            return None;
        }
        let rank = total - total / 100; // the smallest count covering 99 %
        let mut seen = 0;
        for (i, n) in self.buckets.iter().enumerate() {
            seen += n;
            if seen >= rank {
                return Some(Duration::from_nanos(bucket_bound_ns(i)));
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_powers_of_two() {
        assert_eq!(bucket_of(0), 0);
        assert_eq!(bucket_of(255), 0);
        assert_eq!(bucket_of(256), 1);
        assert_eq!(bucket_of(511), 1);
        assert_eq!(bucket_of(1_000), 2);
        assert_eq!(bucket_of(u64::MAX), BUCKETS - 1);
        for ns in [1u64, 300, 5_000, 1_000_000, 3_000_000_000] {
            assert!(ns < bucket_bound_ns(bucket_of(ns)));
        }
    }

    #[test]
    fn p99_ignores_the_slowest_percent() {
        let s = Stats::default();
        assert_eq!(s.snapshot().p99(), None);
        for _ in 0..990 {
            s.call(Duration::from_nanos(900));
        }
        for _ in 0..10 {
            s.call(Duration::from_millis(50));
        }
        assert_eq!(s.snapshot().p99(), Some(Duration::from_nanos(1024)));
        s.call(Duration::from_millis(50));
        assert!(s.snapshot().p99().unwrap() > Duration::from_millis(50));
    }

    #[test]
    fn absorb_keeps_totals() {
        let a = Stats::default();
        a.call(Duration::from_micros(1));
        a.fault(FaultKind::Timeout);
        let total = Stats::default();
        total.absorb(&a.snapshot());
        total.absorb(&a.snapshot());
        let t = total.snapshot();
        assert_eq!((t.calls, t.faults_of(FaultKind::Timeout)), (2, 2));
        assert_eq!(t.plus(&a.snapshot()).calls, 3);
    }
}
