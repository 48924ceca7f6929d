//! Rules and quotas with `policy: redis`: counters shared by every unit of a
//! gateway group, with a local fast path.
//!
//! The request path never waits for Redis. Each unit keeps, per key:
//! - a **grant**: slots reserved for it in Redis, which it admits locally;
//! - **unsynced** admissions made without a reservation, pushed at the next sync;
//! - a **view**: the global state as of its last sync.
//!
//! Every `sync_interval` the background task sends, per rule, one batched script
//! call that pushes unsynced counts, gives back grants of keys that went idle, and
//! hands every key that saw traffic a fair share of what is left (see
//! [`super::scripts`]). A key whose grant is half used asks for more at once
//! (prefetch), so busy keys rarely run dry. Grants never exceed what is left, so
//! reserved admissions never overshoot.
//!
//! A unit admits without a reservation only when it has no current grant for a
//! key — its first request for the key, the first of a new window or period, the
//! first after the key went idle — and then at most its share of what its view
//! shows is left, capped at [`COLD_SHARE`] of the limit ÷ live units (at least one
//! request); such a request wakes the sync task at once, so this lasts about one
//! Redis round trip, and the grant that comes back pays for these admissions first.
//! A unit whose grant ran out while its view still shows room admits one more
//! request and asks again. Beyond these, a request is refused with
//! [`RuleStep::Busy`] until the grant arrives.
//!
//! While Redis is unreachable the rule follows `on_store_failure`: `degrade`
//! enforces the limit divided by the last known number of live units locally
//! (counts are pushed when Redis is back), `fail_open` admits, `fail_closed` answers
//! 503.

mod sync;
mod view;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::local::{LocalAlgo, LocalState};
use super::store::Store;
use super::table::KeyTable;
use super::time::Now;
use super::{Admission, RuleStep};
use crate::config::model::{LimitAlgorithm, StoreFailure};
pub use view::SharedAlgo;
use view::View;

/// Keys one shared rule keeps at most.
pub const MAX_KEYS: usize = 100_000;
/// Keys per script call.
const BATCH: usize = 64;
/// Keys waiting for an early sync, at most (more wait for the periodic sync).
const MAX_URGENT: usize = 10_000;
/// Epoch of a rolling quota period not yet opened in Redis.
const UNKNOWN: u64 = u64::MAX;
/// Share of a limit all units together may admit for a key before holding a
/// grant for it (each unit: this ÷ live units, at least one request).
pub const COLD_SHARE: f64 = 0.05;

/// What one unit may admit for a key without a grant: its share of what its view
/// shows is left, at most [`COLD_SHARE`] of the limit ÷ units, at least 1.
fn cold_allowance(remaining: f64, limit: u64, units: u32) -> u64 {
    let n = f64::from(units.max(1));
    let cap = (COLD_SHARE * limit as f64 / n).ceil().max(1.0);
    (remaining / n).ceil().clamp(0.0, cap) as u64
}

/// One key's state on this unit.
#[derive(Debug, Default)]
struct Entry {
    epoch: u64,
    grant: u64,
    /// Ask for more when the grant falls to this (half of the last one).
    low: u64,
    unsynced: u64,
    old_grant: u64,
    old_unsynced: u64,
    inflight: u64,
    demand: u64,
    registered: bool,
    synced: bool,
    urgent: bool,
    generation: u64,
    view: View,
    local: Option<LocalState>,
}

impl Entry {
    fn settled(&self) -> bool {
        self.grant == 0
            && self.unsynced == 0
            && self.old_grant == 0
            && self.old_unsynced == 0
            && self.inflight == 0
            && self.demand == 0
            && !self.registered
    }

    /// Moves to a new window or period: a grant of the window just left goes back,
    /// older ones are lost with their window.
    fn roll(&mut self, algo: &SharedAlgo, epoch: u64) {
        let next = matches!(algo, SharedAlgo::Window { .. }) && epoch == self.epoch.wrapping_add(1);
        self.old_grant = if next { self.grant } else { 0 };
        self.old_unsynced = if next { self.unsynced } else { 0 };
        self.grant = 0;
        self.unsynced = 0;
        self.synced = false;
        self.epoch = epoch;
    }

    /// After Redis came back, grants held before are not trusted.
    fn renew(&mut self, generation: u64) {
        self.generation = generation;
        self.grant = 0;
        self.old_grant = 0;
        self.synced = false;
        self.registered = false;
    }
}

/// A rule or quota counted in Redis.
pub struct SharedRule {
    algo: SharedAlgo,
    /// Local algorithm used under `degrade` (limits; quotas use a share of the view).
    degrade: Option<LimitAlgorithm>,
    on_failure: StoreFailure,
    sync_interval: Duration,
    prefix: String,
    store: Arc<Store>,
    table: KeyTable<Entry>,
    urgent: Mutex<Vec<Box<str>>>,
}

impl std::fmt::Debug for SharedRule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedRule")
            .field("algo", &self.algo)
            .field("prefix", &self.prefix)
            .field("keys", &self.table.len())
            .finish()
    }
}

impl SharedRule {
    /// A shared rule whose Redis keys start with `prefix`.
    pub fn new(
        algo: SharedAlgo,
        degrade: Option<LimitAlgorithm>,
        on_failure: StoreFailure,
        sync_interval: Duration,
        prefix: String,
        store: Arc<Store>,
    ) -> Self {
        let idle = algo.idle_ms();
        Self {
            algo,
            degrade,
            on_failure,
            sync_interval,
            prefix,
            store,
            table: KeyTable::new(
                MAX_KEYS,
                Box::new(move |e: &Entry, last, now| e.settled() && now.saturating_sub(last) >= idle),
            ),
            urgent: Mutex::new(Vec::new()),
        }
    }

    /// How often this rule syncs.
    pub fn sync_interval(&self) -> Duration {
        self.sync_interval
    }

    /// The store this rule syncs with.
    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// Decides one request for `key`. Never waits.
    pub fn acquire(&self, key: &str, now: Now) -> RuleStep {
        let store = &*self.store;
        let (degraded, generation, n) = (store.degraded(), store.generation(), store.live_units());
        let algo = &self.algo;
        let t = now.wall_ms;
        let limit = algo.limit();
        let mut wake = false;
        let step = self.table.update(key, t, Entry::default, |e| {
            if e.generation != generation {
                e.renew(generation);
            }
            let epoch = algo.epoch(&e.view, t);
            if epoch != e.epoch {
                e.roll(algo, epoch);
            }
            e.demand += 1;
            if degraded {
                return self.degraded_acquire(e, now, n);
            }
            let rem = algo.remaining(&e.view, e.epoch, t);
            let reset = Duration::from_millis(algo.reset_ms(&e.view, e.epoch, t));
            if e.grant > 0 {
                e.grant -= 1;
                if e.grant <= e.low && rem >= 1.0 && !e.urgent {
                    // Top up before it runs out, so requests never wait for a refill.
                    e.urgent = true;
                    wake = true;
                }
                return RuleStep::Admit {
                    limit,
                    remaining: e.grant + rem.max(0.0) as u64,
                    reset,
                    how: Admission::Grant,
                };
            }
            if rem < 1.0 {
                return RuleStep::Deny {
                    limit,
                    retry: Duration::from_millis(algo.retry_ms(&e.view, e.epoch, t)),
                    reset,
                };
            }
            if !e.urgent {
                e.urgent = true;
                wake = true;
            }
            // A unit that holds a current grant and used it up takes one more while
            // it asks again.
            let allowance = if e.synced && e.registered {
                1
            } else {
                cold_allowance(rem, limit, n)
            };
            if e.unsynced + e.inflight < allowance {
                e.unsynced += 1;
                RuleStep::Admit {
                    limit,
                    remaining: (rem - 1.0).max(0.0) as u64,
                    reset,
                    how: Admission::Provisional,
                }
            } else {
                // Room is left but not ours yet: a grant is on its way.
                RuleStep::Busy {
                    limit,
                    retry: self.sync_interval,
                    reset,
                }
            }
        });
        if wake {
            tracing::trace!(key, "early sync requested");
            let mut q = self.urgent.lock().unwrap_or_else(|p| p.into_inner());
            if q.len() < MAX_URGENT {
                q.push(key.into());
            }
            drop(q);
            store.wake.notify_one();
        }
        step
    }

    fn degraded_acquire(&self, e: &mut Entry, now: Now, n: u32) -> RuleStep {
        let limit = self.algo.limit();
        match (self.on_failure, &self.degrade) {
            (StoreFailure::FailOpen, _) => RuleStep::Admit {
                limit,
                remaining: u64::MAX,
                reset: Duration::ZERO,
                how: Admission::Uncounted,
            },
            (StoreFailure::FailClosed, _) => RuleStep::Unavailable,
            (StoreFailure::Degrade, Some(alg)) => {
                let local = LocalAlgo::new(alg, n);
                let state = e.local.get_or_insert_with(|| local.fresh());
                match local.acquire(state, now.mono_ns) {
                    RuleStep::Admit {
                        limit,
                        remaining,
                        reset,
                        ..
                    } => {
                        e.unsynced += 1;
                        RuleStep::Admit {
                            limit,
                            remaining,
                            reset,
                            how: Admission::Degraded,
                        }
                    }
                    other => other,
                }
            }
            (StoreFailure::Degrade, None) => {
                let t = now.wall_ms;
                let rem = self.algo.remaining(&e.view, e.epoch, t).max(0.0);
                let allowance = (rem / f64::from(n)).ceil() as u64;
                let left = Duration::from_millis(self.algo.reset_ms(&e.view, e.epoch, t));
                if e.unsynced + e.inflight < allowance {
                    e.unsynced += 1;
                    RuleStep::Admit {
                        limit,
                        remaining: allowance - e.unsynced - e.inflight,
                        reset: left,
                        how: Admission::Degraded,
                    }
                } else {
                    RuleStep::Deny {
                        limit,
                        retry: left,
                        reset: left,
                    }
                }
            }
        }
    }

    /// Gives back a request admitted for `key`.
    pub fn refund(&self, key: &str, how: Admission, now: Now) {
        let n = self.store.live_units();
        self.table.get(key, |e| match how {
            Admission::Grant => e.grant += 1,
            Admission::Provisional => e.unsynced = e.unsynced.saturating_sub(1),
            Admission::Degraded => {
                e.unsynced = e.unsynced.saturating_sub(1);
                if let (Some(alg), Some(state)) = (&self.degrade, e.local.as_mut()) {
                    LocalAlgo::new(alg, n).refund(state, now.mono_ns);
                }
            }
            Admission::Counted | Admission::Uncounted => {}
        });
    }

    /// The `top` keys that used the most at `now`, as (key, used, limit): the group's
    /// use as of this unit's last sync (taken from the limit, less the grants units
    /// held unused), plus what this unit admitted since. Reading changes nothing.
    pub fn busiest(&self, now: Now, top: usize) -> (usize, Vec<(String, u64, u64)>) {
        let algo = &self.algo;
        let limit = algo.limit();
        let t = now.wall_ms;
        let mut keys = Vec::new();
        self.table.scan(|key, e| {
            keys.push((key.to_string(), self.used(e, t), limit));
            true
        });
        let total = keys.len();
        keys.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        keys.truncate(top);
        (total, keys)
    }

    /// A key's use: see [`SharedRule::busiest`].
    fn used(&self, e: &Entry, t: u64) -> u64 {
        let algo = &self.algo;
        let limit = algo.limit();
        let epoch = algo.epoch(&e.view, t);
        let taken = limit as f64 - algo.remaining(&e.view, epoch, t);
        let (reserved, since) = if e.view.known && epoch == e.view.epoch && epoch == e.epoch {
            (e.view.reserved, e.view.held.saturating_sub(e.grant))
        } else {
            (0.0, 0)
        };
        let group = (taken - reserved).max(0.0) as u64;
        group.saturating_add(since).saturating_add(e.unsynced).min(limit)
    }

    /// Drops settled keys; returns live keys evicted for room so far.
    pub fn sweep(&self, now_ms: u64) -> u64 {
        self.table.sweep(now_ms);
        self.table.evicted_live()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::model::{QuotaPeriod, RedisSettings};
    use crate::ratelimit::metrics::LimitMetrics;
    use crate::ratelimit::quota::Periods;
    use crate::ratelimit::time::calendar_period;

    fn store() -> Arc<Store> {
        let settings = RedisSettings {
            url: "redis://127.0.0.1:1".into(),
            timeout: Duration::from_millis(50),
        };
        Arc::new(Store::new(&settings, "g", LimitMetrics::detached()))
    }

    fn now(ms: u64) -> Now {
        Now {
            mono_ns: ms * 1_000_000,
            wall_ms: ms,
        }
    }

    fn admitted(s: RuleStep) -> bool {
        matches!(s, RuleStep::Admit { .. })
    }

    fn window_rule(on_failure: StoreFailure) -> SharedRule {
        window_rule_of(10, on_failure)
    }

    fn window_rule_of(count: u64, on_failure: StoreFailure) -> SharedRule {
        let alg = LimitAlgorithm::SlidingWindow {
            count,
            window: Duration::from_secs(10),
        };
        SharedRule::new(
            SharedAlgo::from_limit(&alg),
            Some(alg),
            on_failure,
            Duration::from_millis(100),
            "p".into(),
            store(),
        )
    }

    #[test]
    fn a_cold_key_admits_its_share_and_asks_for_a_grant() {
        let rule = window_rule(StoreFailure::Degrade);
        rule.store.set_state(false, 2);
        let t = 1_000_000;
        let n = (0..10).filter(|_| admitted(rule.acquire("k", now(t)))).count();
        assert_eq!(n, 1, "5 % of 10 / 2 live units, at least one, before the first sync");
        assert_eq!(rule.urgent.lock().unwrap().len(), 1, "one early sync requested");
        let items = rule.collect(t, true);
        assert_eq!(items.len(), 1);
        let it = &items[0];
        assert_eq!((it.push, it.want, it.first, it.epoch), (1, true, true, t / 10_000));
        // The reply grants 3; they are admitted locally, then the unit is warm and
        // admits one more while it asks again.
        rule.apply(&items, &[vec![3.0, 8.0, 0.0, 3.0]]);
        assert!(admitted(rule.acquire("k", now(t))));
        assert!(rule.urgent.lock().unwrap().is_empty());
        assert!(admitted(rule.acquire("k", now(t))));
        assert_eq!(
            rule.urgent.lock().unwrap().len(),
            1,
            "half the grant used: top up early"
        );
        let n = (0..10).filter(|_| admitted(rule.acquire("k", now(t)))).count();
        assert_eq!(n, 1 + 1);
    }

    #[test]
    fn cold_allowance_is_a_small_share() {
        assert_eq!(cold_allowance(100.0, 100, 2), 3);
        assert_eq!(cold_allowance(2.0, 100, 2), 1);
        assert_eq!(cold_allowance(0.5, 100, 2), 1);
        assert_eq!(cold_allowance(-3.0, 100, 2), 0);
        assert_eq!(cold_allowance(10_000.0, 10_000, 4), 125);
        assert_eq!(cold_allowance(10.0, 10, 1), 1);
    }

    #[test]
    fn admissions_during_the_round_trip_are_paid_by_the_grant() {
        let rule = window_rule_of(100, StoreFailure::Degrade);
        let t = 1_000_000;
        assert!(admitted(rule.acquire("k", now(t))));
        let items = rule.collect(t, true);
        // Two more while the sync is in flight.
        assert!(admitted(rule.acquire("k", now(t))));
        assert!(admitted(rule.acquire("k", now(t))));
        rule.apply(&items, &[vec![3.0, 4.0, 0.0, 3.0]]);
        rule.table.get("k", |e| assert_eq!((e.grant, e.unsynced), (1, 0)));
        // The view shows 96 left: a prefetch is requested as the grant runs out.
        let n = (0..10).filter(|_| admitted(rule.acquire("k", now(t)))).count();
        assert_eq!(n, 1 + 1, "the rest of the grant, then one while asking again");
    }

    #[test]
    fn a_new_window_voids_grants_and_returns_them() {
        let rule = window_rule(StoreFailure::Degrade);
        let t = 1_000_000;
        assert!(admitted(rule.acquire("k", now(t))));
        let items = rule.collect(t, true);
        rule.apply(&items, &[vec![4.0, 5.0, 0.0, 4.0]]);
        assert!(admitted(rule.acquire("k", now(t))));
        // Next window: 3 unused granted slots go back to the old window's key.
        let t2 = t + 10_000;
        let items = rule.collect(t2, false);
        assert_eq!(items[0].ret_old, 3);
        assert_eq!(items[0].epoch, t2 / 10_000);
        assert!(items[0].first);
    }

    #[test]
    fn idle_keys_give_grants_back_and_unregister() {
        let rule = window_rule(StoreFailure::Degrade);
        let t = 1_000_000;
        assert!(admitted(rule.acquire("k", now(t))));
        let items = rule.collect(t, true);
        rule.apply(&items, &[vec![4.0, 5.0, 0.0, 4.0]]);
        let items = rule.collect(t + 100, false);
        assert!(items.is_empty() || !items[0].want, "no demand since the last sync");
        let items = rule.collect(t + 200, false);
        assert!(items.is_empty());
        rule.table.get("k", |e| assert!(e.settled()));
    }

    #[test]
    fn exhausted_view_denies_with_an_honest_retry() {
        let rule = window_rule(StoreFailure::Degrade);
        let t = 1_000_000; // start of window 100
        assert!(admitted(rule.acquire("k", now(t))));
        let items = rule.collect(t, true);
        rule.apply(&items, &[vec![0.0, 10.0, 0.0, 0.0]]);
        let RuleStep::Deny { retry, .. } = rule.acquire("k", now(t)) else {
            panic!()
        };
        // prev 10 in the next window: 10 * (1 - x/10) + 1 <= 10  =>  x >= 1 s.
        assert_eq!(retry, Duration::from_millis(11_000));
    }

    #[test]
    fn store_failure_modes() {
        let t = 1_000_000;
        let open = window_rule(StoreFailure::FailOpen);
        open.store.set_state(true, 1);
        assert!((0..50).all(|_| admitted(open.acquire("k", now(t)))));
        let closed = window_rule(StoreFailure::FailClosed);
        closed.store.set_state(true, 1);
        assert_eq!(closed.acquire("k", now(t)), RuleStep::Unavailable);
        let degrade = window_rule(StoreFailure::Degrade);
        degrade.store.set_state(true, 3);
        let n = (0..50).filter(|_| admitted(degrade.acquire("k", now(t)))).count();
        assert_eq!(n, 3, "10 / 3 live units");
        // Degraded admissions are pushed once Redis is back.
        degrade.store.set_state(false, 3);
        let items = degrade.collect(t, false);
        assert_eq!(items[0].push, 3);
    }

    #[test]
    fn quota_degrades_to_a_share_of_what_was_left() {
        let periods = Periods {
            period: QuotaPeriod::Day,
            calendar: true,
        };
        let rule = SharedRule::new(
            SharedAlgo::Quota { calls: 100, periods },
            None,
            StoreFailure::Degrade,
            Duration::from_secs(1),
            "q".into(),
            store(),
        );
        let t = 1_700_000_000_000;
        assert!(admitted(rule.acquire("k", now(t))));
        let items = rule.collect(t, true);
        let (start, end) = calendar_period(QuotaPeriod::Day, t);
        rule.apply(&items, &[vec![0.0, 80.0, start as f64, end as f64, 0.0]]);
        rule.store.set_state(true, 2);
        let n = (0..50).filter(|_| admitted(rule.acquire("k", now(t)))).count();
        assert_eq!(n, 10, "(100 - 80) / 2");
    }

    #[test]
    fn busiest_reads_the_group_use_without_unused_grants() {
        let rule = window_rule_of(100, StoreFailure::Degrade);
        rule.store.set_state(false, 2);
        let t = 1_000_000;
        assert!(admitted(rule.acquire("k", now(t))));
        let items = rule.collect(t, true);
        // Redis counts 31 for the window, 10 of them the grant this unit now holds:
        // the group used 21 (this unit's 1 among them).
        rule.apply(&items, &[vec![10.0, 31.0, 0.0, 10.0]]);
        assert_eq!(rule.busiest(now(t), 5), (1, vec![("k".to_string(), 21, 100)]));
        for _ in 0..4 {
            assert!(admitted(rule.acquire("k", now(t))));
        }
        assert_eq!(rule.busiest(now(t), 5).1[0].1, 25, "4 more admitted from the grant");
        assert_eq!(rule.busiest(now(t), 5).1[0].1, 25, "reading counted nothing");
    }

    #[test]
    fn bucket_view_refills_over_time() {
        let algo = SharedAlgo::Bucket { rate: 2.0, burst: 10.0 };
        let view = View {
            known: true,
            epoch: 0,
            a: 0.5,
            b: 1000.0,
            ..View::default()
        };
        assert_eq!(algo.remaining(&view, 0, 1000), 0.5);
        assert_eq!(algo.retry_ms(&view, 0, 1000), 250);
        assert_eq!(algo.remaining(&view, 0, 100_000), 10.0);
        assert_eq!(algo.reset_ms(&view, 0, 1000), 4750);
    }
}
