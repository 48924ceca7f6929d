//! Shared counters behind the `host.counter-add` import: fixed windows aligned to
//! wall-clock time, namespaced per plugin, shared by every instance of a plugin in this
//! process (all worker threads, all routes).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// Counter storage the plugin host calls into. The local implementation serves one
/// gateway process; a cluster-wide one (Redis) can replace it.
pub trait HostCounters: Send + Sync + 'static {
    /// Adds `delta` to `(namespace, key)` in the current window of `window_ms` and
    /// returns the new value and the milliseconds left in the window.
    fn add(&self, namespace: u64, key: u64, delta: i64, window_ms: u32) -> (i64, u32);
}

/// Microseconds on a process-wide monotonic clock.
pub fn monotonic_us() -> u64 {
    static ORIGIN: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    ORIGIN.get_or_init(Instant::now).elapsed().as_micros() as u64
}

fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

const SHARDS: usize = 16;
/// A shard sweeps expired windows once it holds this many counters.
const SWEEP_AT: usize = 4096;

type Key = (u64, u64, u32);

/// In-process counters: sharded maps of `(namespace, key, window) -> (window index, value)`.
#[derive(Debug)]
pub struct LocalCounters {
    shards: [Mutex<HashMap<Key, (u64, i64)>>; SHARDS],
    clock: fn() -> u64,
}

impl Default for LocalCounters {
    fn default() -> Self {
        Self::new()
    }
}

impl LocalCounters {
    /// Empty counters on the wall clock.
    pub fn new() -> Self {
        Self::with_clock(wall_ms)
    }

    /// Empty counters on a given millisecond clock (tests).
    pub fn with_clock(clock: fn() -> u64) -> Self {
        Self {
            shards: std::array::from_fn(|_| Mutex::new(HashMap::new())),
            clock,
        }
    }
}

impl HostCounters for LocalCounters {
    fn add(&self, namespace: u64, key: u64, delta: i64, window_ms: u32) -> (i64, u32) {
        let window = u64::from(window_ms.max(1));
        let now = (self.clock)();
        let index = now / window;
        let reset_ms = (window - now % window) as u32;
        let shard = &self.shards[(namespace ^ key.rotate_left(17)) as usize % SHARDS];
        let mut map = shard.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= SWEEP_AT {
            map.retain(|(_, _, w), (i, _)| *i == now / u64::from((*w).max(1)));
        }
        let entry = map.entry((namespace, key, window_ms)).or_insert((index, 0));
        if entry.0 != index {
            *entry = (index, 0);
        }
        entry.1 = entry.1.saturating_add(delta);
        (entry.1, reset_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};

    static NOW: AtomicU64 = AtomicU64::new(10_000);
    static LATER: AtomicU64 = AtomicU64::new(50_000);

    fn clock() -> u64 {
        NOW.load(Ordering::Relaxed)
    }

    fn later() -> u64 {
        LATER.load(Ordering::Relaxed)
    }

    #[test]
    fn windows_namespaces_and_keys_are_separate() {
        let c = LocalCounters::with_clock(clock);
        NOW.store(10_000, Ordering::Relaxed);
        assert_eq!(c.add(1, 7, 1, 1000), (1, 1000));
        assert_eq!(c.add(1, 7, 2, 1000), (3, 1000));
        assert_eq!(c.add(2, 7, 1, 1000).0, 1, "another plugin");
        assert_eq!(c.add(1, 8, 1, 1000).0, 1, "another key");
        assert_eq!(c.add(1, 7, 1, 5000).0, 1, "another window length");
        NOW.store(10_999, Ordering::Relaxed);
        assert_eq!(c.add(1, 7, 0, 1000), (3, 1));
        NOW.store(11_000, Ordering::Relaxed);
        assert_eq!(c.add(1, 7, 1, 1000), (1, 1000), "a new window starts from zero");
    }

    #[test]
    fn expired_windows_are_swept() {
        let c = LocalCounters::with_clock(later);
        for k in 0..SWEEP_AT as u64 * 2 {
            c.add(3, k, 1, 1000);
        }
        LATER.store(60_000, Ordering::Relaxed);
        c.add(3, 0, 1, 1000);
        let total: usize = c.shards.iter().map(|s| s.lock().unwrap().len()).sum();
        assert!(total < SWEEP_AT * 2, "{total}");
    }
}
