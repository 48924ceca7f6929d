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
//! [`super::scripts`]). A unit admits without a reservation only when it has no
//! current grant for a key — its first request for the key, the first of a new
//! window or period, the first after the key went idle — and then at most
//! `remaining ÷ live units` by its view; such a request wakes the sync task at once,
//! so this lasts about one Redis round trip. A unit whose grant ran out while its
//! view still shows room admits one more request and asks again at once.
//!
//! While Redis is unreachable the rule follows `on_store_failure`: `degrade`
//! enforces the limit divided by the last known number of live units locally
//! (counts are pushed when Redis is back), `fail_open` admits, `fail_closed` answers
//! 503.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::Value;

use super::algo::Window;
use super::local::{LocalAlgo, LocalState};
use super::quota::Periods;
use super::store::{Store, StoreError, rows};
use super::table::KeyTable;
use super::time::{Now, calendar_period, rolling_len_ms};
use super::{Admission, RuleStep};
use crate::config::model::{LimitAlgorithm, StoreFailure};

/// Keys one shared rule keeps at most.
pub const MAX_KEYS: usize = 100_000;
/// Keys per script call.
const BATCH: usize = 64;
/// Keys waiting for an early sync, at most (more wait for the periodic sync).
const MAX_URGENT: usize = 10_000;
/// Epoch of a rolling quota period not yet opened in Redis.
const UNKNOWN: u64 = u64::MAX;

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
struct View {
    known: bool,
    /// Window index, 0 (bucket) or period start.
    epoch: u64,
    /// Window: current count. Bucket: tokens. Quota: count.
    a: f64,
    /// Window: previous count. Bucket: time of `a` (ms). Quota: period end.
    b: f64,
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

    fn limit(&self) -> u64 {
        match *self {
            SharedAlgo::Window { count, .. } => count,
            SharedAlgo::Bucket { burst, .. } => burst.floor().max(1.0) as u64,
            SharedAlgo::Quota { calls, .. } => calls,
        }
    }

    fn rolling(&self) -> bool {
        matches!(self, SharedAlgo::Quota { periods, .. } if !periods.calendar)
    }

    fn epoch(&self, view: &View, now: u64) -> u64 {
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
    fn window_counts(view: &View, epoch: u64) -> (f64, f64) {
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
    fn remaining(&self, view: &View, epoch: u64, now: u64) -> f64 {
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

    fn period_end(&self, view: &View, epoch: u64, now: u64) -> u64 {
        match *self {
            SharedAlgo::Quota { periods, .. } if periods.calendar => calendar_period(periods.period, now).1,
            SharedAlgo::Quota { .. } if view.known && view.epoch == epoch => view.b as u64,
            SharedAlgo::Quota { periods, .. } => now + rolling_len_ms(periods.period),
            _ => now,
        }
    }

    /// Time until one more request fits by the view, when `remaining < 1`.
    fn retry_ms(&self, view: &View, epoch: u64, now: u64) -> u64 {
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
    fn reset_ms(&self, view: &View, epoch: u64, now: u64) -> u64 {
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
    fn idle_ms(&self) -> u64 {
        match *self {
            SharedAlgo::Window { len, .. } => 2 * len,
            SharedAlgo::Bucket { rate, burst } => ((burst / rate * 1000.0) as u64).max(1000),
            SharedAlgo::Quota { .. } => 3_600_000,
        }
    }
}

/// One key's state on this unit.
#[derive(Debug, Default)]
struct Entry {
    epoch: u64,
    grant: u64,
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

/// What one key sends in a sync.
#[derive(Debug)]
struct Item {
    key: Box<str>,
    epoch: u64,
    push: u64,
    push_old: u64,
    ret: u64,
    ret_old: u64,
    keep: u64,
    want: bool,
    first: bool,
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
            let allowance = if e.synced && e.registered {
                1
            } else {
                (rem / f64::from(n)).ceil() as u64
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
                RuleStep::Deny {
                    limit,
                    retry: self.sync_interval,
                    reset,
                }
            }
        });
        if wake {
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

    /// Drops settled keys; returns live keys evicted for room so far.
    pub fn sweep(&self, now_ms: u64) -> u64 {
        self.table.sweep(now_ms);
        self.table.evicted_live()
    }

    /// Syncs keys with Redis: only those waiting for a grant if `urgent_only`,
    /// else every key with something to report. Returns how many keys were synced.
    pub async fn sync(&self, now_ms: u64, urgent_only: bool) -> Result<usize, StoreError> {
        let items = self.collect(now_ms, urgent_only);
        let total = items.len();
        let mut chunks = items.chunks(BATCH);
        while let Some(chunk) = chunks.next() {
            let t0 = std::time::Instant::now();
            let result = self.send(chunk, now_ms).await;
            self.store.metrics.sync_duration.observe(t0.elapsed().as_secs_f64());
            match result {
                Ok(replies) => self.apply(chunk, &replies),
                Err(e) => {
                    // The reply is lost: the pushes may or may not have been counted.
                    // They are not sent again, so nothing is counted twice.
                    self.release(chunk);
                    for rest in chunks {
                        self.release(rest);
                    }
                    return Err(e);
                }
            }
        }
        Ok(total)
    }

    fn collect(&self, now_ms: u64, urgent_only: bool) -> Vec<Item> {
        let generation = self.store.generation();
        let mut items = Vec::new();
        let mut take = |key: &str, e: &mut Entry| {
            if e.generation != generation {
                e.renew(generation);
            }
            let epoch = self.algo.epoch(&e.view, now_ms);
            if epoch != e.epoch {
                e.roll(&self.algo, epoch);
            }
            let active = e.demand > 0 || e.urgent;
            let work = active || e.unsynced > 0 || e.old_unsynced > 0 || e.old_grant > 0 || e.grant > 0 || e.registered;
            if !work {
                return;
            }
            let keep = if active { e.grant } else { 0 };
            items.push(Item {
                key: key.into(),
                epoch: e.epoch,
                push: e.unsynced,
                push_old: e.old_unsynced,
                ret: e.grant - keep,
                ret_old: e.old_grant,
                keep,
                want: active,
                first: !e.synced,
            });
            e.grant = keep;
            e.inflight += e.unsynced + e.old_unsynced;
            e.unsynced = 0;
            e.old_unsynced = 0;
            e.old_grant = 0;
            e.demand = 0;
            e.urgent = false;
            e.registered &= active;
        };
        if urgent_only {
            let keys = std::mem::take(&mut *self.urgent.lock().unwrap_or_else(|p| p.into_inner()));
            for k in keys {
                self.table.get(&k, |e| {
                    if e.urgent {
                        take(&k, e)
                    }
                });
            }
        } else {
            self.urgent.lock().unwrap_or_else(|p| p.into_inner()).clear();
            self.table.scan(|k, e| {
                take(k, e);
                true
            });
        }
        items
    }

    async fn send(&self, items: &[Item], now_ms: u64) -> Result<Vec<Vec<f64>>, StoreError> {
        let store = &*self.store;
        let n_live = store.live_units();
        let stale = (3 * self.sync_interval.as_millis() as u64).max(1000);
        let flag = |b: bool| if b { "1" } else { "0" };
        let (script, width) = match self.algo {
            SharedAlgo::Window { .. } => (&store.scripts.window, 3),
            SharedAlgo::Bucket { .. } => (&store.scripts.bucket, 3),
            SharedAlgo::Quota { .. } => (&store.scripts.quota, 4),
        };
        let mut inv = script.prepare_invoke();
        inv.arg(store.unit()).arg(now_ms).arg(n_live).arg(stale);
        match self.algo {
            SharedAlgo::Window { count, len } => {
                let e = now_ms % len;
                let ttl = 2 * len + 1000;
                inv.arg(count).arg(1.0 - e as f64 / len as f64).arg(ttl);
                for it in items {
                    inv.key(format!("{}:{}:{}", self.prefix, it.key, it.epoch))
                        .key(format!("{}:{}:{}", self.prefix, it.key, it.epoch.wrapping_sub(1)))
                        .key(format!("{}:{}:u", self.prefix, it.key));
                    inv.arg(it.push)
                        .arg(it.push_old)
                        .arg(it.ret)
                        .arg(it.ret_old)
                        .arg(it.keep);
                    inv.arg(flag(it.want)).arg(flag(it.first));
                }
            }
            SharedAlgo::Bucket { rate, burst } => {
                let ttl = ((2.0 * burst / rate * 1000.0) as u64 + 1000).max(4 * stale);
                inv.arg(rate / 1000.0).arg(burst).arg(ttl);
                for it in items {
                    inv.key(format!("{}:{}", self.prefix, it.key))
                        .key(format!("{}:{}:u", self.prefix, it.key));
                    inv.arg(it.push)
                        .arg(it.ret)
                        .arg(it.keep)
                        .arg(flag(it.want))
                        .arg(flag(it.first));
                }
            }
            SharedAlgo::Quota { calls, periods } => {
                let (start, end) = calendar_period(periods.period, now_ms);
                inv.arg(calls)
                    .arg(flag(periods.calendar))
                    .arg(rolling_len_ms(periods.period))
                    .arg(start)
                    .arg(end);
                for it in items {
                    inv.key(format!("{}:{}", self.prefix, it.key))
                        .key(format!("{}:{}:u", self.prefix, it.key));
                    inv.arg(it.push)
                        .arg(it.ret)
                        .arg(it.keep)
                        .arg(flag(it.want))
                        .arg(flag(it.first));
                    inv.arg(if it.epoch == UNKNOWN { 0 } else { it.epoch });
                }
            }
        }
        let reply: Value = store.run(&inv).await?;
        let rows = rows(reply, width)?;
        if rows.len() != items.len() {
            return Err(StoreError::Reply(format!(
                "{} rows for {} keys",
                rows.len(),
                items.len()
            )));
        }
        Ok(rows)
    }

    fn apply(&self, items: &[Item], replies: &[Vec<f64>]) {
        let algo = &self.algo;
        for (it, r) in items.iter().zip(replies) {
            let grant = r[0].max(0.0) as u64;
            let (epoch, a, b) = match algo {
                SharedAlgo::Window { .. } => (it.epoch, r[1], r[2]),
                SharedAlgo::Bucket { .. } => (0, r[1], r[2]),
                SharedAlgo::Quota { .. } => (r[2] as u64, r[1], r[3]),
            };
            self.table.get(&it.key, |e| {
                e.inflight = e.inflight.saturating_sub(it.push + it.push_old);
                if algo.rolling() && e.epoch != epoch && (e.epoch == UNKNOWN || e.epoch == it.epoch) {
                    // Redis opened (or had already opened) a new rolling period.
                    e.grant = 0;
                    e.epoch = epoch;
                }
                if e.epoch == epoch {
                    if it.want {
                        e.grant += grant;
                        e.registered = true;
                    }
                    e.synced = true;
                } else if matches!(algo, SharedAlgo::Window { .. }) && epoch.wrapping_add(1) == e.epoch {
                    // The window moved on during the round trip: give the grant back.
                    e.old_grant += grant;
                }
                if !e.view.known || epoch >= e.view.epoch || algo.rolling() {
                    e.view = View {
                        known: true,
                        epoch,
                        a,
                        b,
                    };
                }
            });
        }
    }

    fn release(&self, items: &[Item]) {
        for it in items {
            self.table.get(&it.key, |e| {
                e.inflight = e.inflight.saturating_sub(it.push + it.push_old);
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::model::{QuotaPeriod, RedisSettings};
    use crate::ratelimit::metrics::LimitMetrics;

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
        let alg = LimitAlgorithm::SlidingWindow {
            count: 10,
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
        assert_eq!(n, 5, "10 / 2 live units before the first sync");
        assert_eq!(rule.urgent.lock().unwrap().len(), 1, "one early sync requested");
        let items = rule.collect(t, true);
        assert_eq!(items.len(), 1);
        let it = &items[0];
        assert_eq!((it.push, it.want, it.first, it.epoch), (5, true, true, t / 10_000));
        // The reply grants 3; they are admitted locally, then the unit is warm and
        // admits one more while it asks again.
        rule.apply(&items, &[vec![3.0, 8.0, 0.0]]);
        let n = (0..10).filter(|_| admitted(rule.acquire("k", now(t)))).count();
        assert_eq!(n, 3 + 1);
    }

    #[test]
    fn a_new_window_voids_grants_and_returns_them() {
        let rule = window_rule(StoreFailure::Degrade);
        let t = 1_000_000;
        assert!(admitted(rule.acquire("k", now(t))));
        let items = rule.collect(t, true);
        rule.apply(&items, &[vec![4.0, 5.0, 0.0]]);
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
        rule.apply(&items, &[vec![4.0, 5.0, 0.0]]);
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
        rule.apply(&items, &[vec![0.0, 10.0, 0.0]]);
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
        rule.apply(&items, &[vec![0.0, 80.0, start as f64, end as f64]]);
        rule.store.set_state(true, 2);
        let n = (0..50).filter(|_| admitted(rule.acquire("k", now(t)))).count();
        assert_eq!(n, 10, "(100 - 80) / 2");
    }

    #[test]
    fn bucket_view_refills_over_time() {
        let algo = SharedAlgo::Bucket { rate: 2.0, burst: 10.0 };
        let view = View {
            known: true,
            epoch: 0,
            a: 0.5,
            b: 1000.0,
        };
        assert_eq!(algo.remaining(&view, 0, 1000), 0.5);
        assert_eq!(algo.retry_ms(&view, 0, 1000), 250);
        assert_eq!(algo.remaining(&view, 0, 100_000), 10.0);
        assert_eq!(algo.reset_ms(&view, 0, 1000), 4750);
    }
}
