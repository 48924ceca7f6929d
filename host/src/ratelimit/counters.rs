//! Counters for plugins: the host side of the plugin interface's
//! `counter-incr(key, delta, window) -> value`.
//!
//! [`SharedCounters::incr`] is synchronous and never waits, so a Wasm host function
//! can call it. A counter lives for one fixed window (aligned to Unix time; a zero
//! window never resets) and is local to this unit, or — when `gateway.redis` is
//! configured — shared: local deltas are added to Redis every 100 ms and the value
//! returned is the last global value seen plus what this unit added since, so it
//! lags other units by at most one sync.

use std::cell::RefCell;
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwapOption;

use super::store::{Store, StoreError, number};
use super::table::KeyTable;
use super::time::Clock;
use redis::Value;

/// Counters kept at most (idle ones are dropped first).
pub const MAX_COUNTERS: usize = 100_000;
/// Lifetime of an idle counter with a zero window.
const UNWINDOWED_IDLE_MS: u64 = 3_600_000;
const BATCH: usize = 128;

#[derive(Debug, Default, Clone, Copy)]
struct Counter {
    window_ms: u64,
    epoch: u64,
    local: i64,
    inflight: i64,
    global: i64,
}

impl Counter {
    fn settled(&self, last_seen: u64, now: u64) -> bool {
        let over = match now.checked_div(self.window_ms) {
            Some(idx) => idx > self.epoch,
            None => now.saturating_sub(last_seen) >= UNWINDOWED_IDLE_MS,
        };
        over && self.local == 0 && self.inflight == 0
    }
}

/// Windowed counters, optionally shared through Redis.
pub struct SharedCounters {
    table: KeyTable<Counter>,
    store: ArcSwapOption<Store>,
    clock: Arc<Clock>,
}

impl std::fmt::Debug for SharedCounters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedCounters")
            .field("counters", &self.table.len())
            .field("shared", &self.store.load().is_some())
            .finish()
    }
}

thread_local! {
    static BUF: RefCell<String> = RefCell::new(String::with_capacity(96));
}

fn window_ms(window: Duration) -> u64 {
    u64::try_from(window.as_millis()).unwrap_or(u64::MAX)
}

impl SharedCounters {
    /// Local counters on `clock`.
    pub fn new(clock: Arc<Clock>) -> Self {
        Self {
            table: KeyTable::new(MAX_COUNTERS, Box::new(|c: &Counter, last, now| c.settled(last, now))),
            store: ArcSwapOption::empty(),
            clock,
        }
    }

    /// Shares the counters through `store` from now on (None: local only).
    pub fn set_store(&self, store: Option<Arc<Store>>) {
        self.store.store(store);
    }

    fn with_counter<R>(
        &self,
        namespace: &str,
        key: &str,
        window: Duration,
        f: impl FnOnce(&mut Counter, u64) -> R,
    ) -> R {
        let w = window_ms(window);
        let now = self.clock.now().wall_ms;
        let epoch = now.checked_div(w).unwrap_or(0);
        BUF.with(|cell| {
            let mut buf = cell.borrow_mut();
            buf.clear();
            let _ = write!(buf, "{namespace}\x1f{key}\x1f{w}");
            let fresh = || Counter {
                window_ms: w,
                epoch,
                ..Counter::default()
            };
            self.table.update(&buf, now, fresh, |c| {
                if c.epoch != epoch {
                    *c = fresh();
                }
                f(c, now)
            })
        })
    }

    /// Adds `delta` to the counter `key` of `namespace` (a plugin's name) in the
    /// current `window`, and returns its value across all units as far as known.
    pub fn incr(&self, namespace: &str, key: &str, delta: i64, window: Duration) -> i64 {
        self.incr_window(namespace, key, delta, window).0
    }

    /// As [`incr`](Self::incr), also returning the time left in the counter's window
    /// (`None` for a zero window, which never ends): what the plugins' `counter-add`
    /// reports as `reset-ms`.
    pub fn incr_window(&self, namespace: &str, key: &str, delta: i64, window: Duration) -> (i64, Option<Duration>) {
        self.with_counter(namespace, key, window, |c, now| {
            c.local = c.local.saturating_add(delta);
            let left = now
                .checked_rem(c.window_ms)
                .map(|into| Duration::from_millis(c.window_ms - into));
            (c.global + c.inflight + c.local, left)
        })
    }

    /// The value of a counter without changing it.
    pub fn get(&self, namespace: &str, key: &str, window: Duration) -> i64 {
        self.with_counter(namespace, key, window, |c, _| c.global + c.inflight + c.local)
    }

    /// Drops counters whose window is over.
    pub fn sweep(&self) {
        self.table.sweep(self.clock.now().wall_ms);
    }

    /// Adds local deltas to Redis and refreshes the global values.
    pub async fn sync(&self) -> Result<usize, StoreError> {
        let Some(store) = self.store.load_full() else {
            return Ok(0);
        };
        if store.degraded() {
            return Ok(0);
        }
        let mut items: Vec<(Box<str>, u64, i64, u64)> = Vec::new();
        self.table.scan(|k, c| {
            if c.local != 0 {
                items.push((k.into(), c.epoch, c.local, c.window_ms));
                c.inflight += c.local;
                c.local = 0;
            }
            true
        });
        let total = items.len();
        for chunk in items.chunks(BATCH) {
            let mut inv = store.scripts.counters.prepare_invoke();
            for (key, epoch, delta, w) in chunk {
                let ttl = if *w == 0 { UNWINDOWED_IDLE_MS } else { 2 * w + 1000 };
                inv.key(format!("{}:ctr:{key}:{epoch}", store.prefix()))
                    .arg(*delta)
                    .arg(ttl);
            }
            let values = match store.run(&inv).await {
                Ok(Value::Array(v)) if v.len() == chunk.len() => v,
                other => {
                    self.release(chunk);
                    return Err(match other {
                        Err(e) => e,
                        Ok(v) => StoreError::Reply(format!("{v:?}")),
                    });
                }
            };
            for ((key, epoch, delta, _), v) in chunk.iter().zip(values) {
                let global = number(&v).unwrap_or(0.0) as i64;
                self.table.get(key, |c| {
                    if c.epoch == *epoch {
                        c.inflight -= delta;
                        c.global = global;
                    }
                });
            }
        }
        Ok(total)
    }

    fn release(&self, items: &[(Box<str>, u64, i64, u64)]) {
        for (key, epoch, delta, _) in items {
            self.table.get(key, |c| {
                if c.epoch == *epoch {
                    c.inflight -= delta;
                }
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn local_counters_count_per_key() {
        let c = SharedCounters::new(Arc::new(Clock::new()));
        let w = Duration::ZERO;
        assert_eq!(c.incr("p", "a", 2, w), 2);
        assert_eq!(c.incr("p", "a", 3, w), 5);
        assert_eq!(c.incr("p", "b", 1, w), 1);
        assert_eq!(c.incr("q", "a", 1, w), 1, "namespaces are separate");
        assert_eq!(c.get("p", "a", w), 5);
        assert_eq!(c.incr("p", "a", -5, w), 0);
        assert_eq!(c.sync().await.unwrap(), 0, "nothing to share without Redis");
    }

    #[test]
    fn windows_report_the_time_left() {
        let c = SharedCounters::new(Arc::new(Clock::new()));
        let (v, left) = c.incr_window("p", "a", 1, Duration::from_millis(1000));
        let left = left.expect("a windowed counter ends");
        assert_eq!(v, 1);
        assert!(left > Duration::ZERO && left <= Duration::from_millis(1000), "{left:?}");
        assert_eq!(
            c.incr_window("p", "a", 1, Duration::ZERO),
            (1, None),
            "a zero window never ends"
        );
    }

    #[test]
    fn windows_start_from_zero() {
        let mut ctr = Counter {
            window_ms: 1000,
            epoch: 5,
            ..Counter::default()
        };
        assert!(!ctr.settled(5000, 5999));
        assert!(ctr.settled(5000, 6000));
        ctr.inflight = 1;
        assert!(!ctr.settled(5000, 6000), "a pending sync keeps it");
    }
}
