//! The sync of a shared rule with Redis: collect what each key has to report,
//! send it in batched script calls, apply the grants and views that come back.

use redis::Value;

use super::view::{SharedAlgo, View};
use super::{BATCH, Entry, SharedRule, UNKNOWN};
use crate::ratelimit::store::{StoreError, rows};
use crate::ratelimit::time::{calendar_period, rolling_len_ms};

/// What one key sends in a sync.
#[derive(Debug)]
pub(super) struct Item {
    pub(super) key: Box<str>,
    pub(super) epoch: u64,
    pub(super) push: u64,
    pub(super) push_old: u64,
    pub(super) ret: u64,
    pub(super) ret_old: u64,
    pub(super) keep: u64,
    pub(super) want: bool,
    pub(super) first: bool,
}

impl SharedRule {
    /// Syncs keys with Redis: only those waiting for a grant if `urgent_only`,
    /// else every key with something to report. Returns how many keys were synced.
    pub async fn sync(&self, now_ms: u64, urgent_only: bool) -> Result<usize, StoreError> {
        let items = self.collect(now_ms, urgent_only);
        let total = items.len();
        tracing::trace!(prefix = %self.prefix, keys = total, urgent_only, "sync");
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

    pub(super) fn collect(&self, now_ms: u64, urgent_only: bool) -> Vec<Item> {
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
            SharedAlgo::Window { .. } => (&store.scripts.window, 4),
            SharedAlgo::Bucket { .. } => (&store.scripts.bucket, 4),
            SharedAlgo::Quota { .. } => (&store.scripts.quota, 5),
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

    pub(super) fn apply(&self, items: &[Item], replies: &[Vec<f64>]) {
        let algo = &self.algo;
        for (it, r) in items.iter().zip(replies) {
            let grant = r[0].max(0.0) as u64;
            let (epoch, a, b, reserved) = match algo {
                SharedAlgo::Window { .. } => (it.epoch, r[1], r[2], r[3]),
                SharedAlgo::Bucket { .. } => (0, r[1], r[2], r[3]),
                SharedAlgo::Quota { .. } => (r[2] as u64, r[1], r[3], r[4]),
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
                        // Requests admitted without a reservation during the round
                        // trip are paid for by the grant first (not pushed later).
                        let covered = grant.min(e.unsynced);
                        e.unsynced -= covered;
                        e.grant += grant - covered;
                        e.low = e.grant / 2;
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
                        reserved,
                        held: e.grant,
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
