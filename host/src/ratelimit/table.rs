//! Per-key state of one rule: a sharded hash map with bounded size.
//!
//! Looking up a key that exists allocates nothing; only a new key allocates its
//! boxed name. Each shard has its own lock, held only for the few arithmetic steps
//! of one decision (never across `.await`). Memory is bounded: entries that no
//! longer carry information (the table's `forget` predicate, e.g. a bucket that has
//! refilled) are dropped by [`KeyTable::sweep`] and whenever a full shard needs
//! room; if a shard is full of live entries, its least recently used eighth goes.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

const SHARDS: usize = 32;

/// Whether an entry can be dropped: `(state, last_seen, now) -> bool`.
pub type Forget<S> = Box<dyn Fn(&S, u64, u64) -> bool + Send + Sync>;

type Shard<S> = Mutex<HashMap<Box<str>, Slot<S>>>;

struct Slot<S> {
    state: S,
    last_seen: u64,
}

/// Keyed state with bounded memory.
pub struct KeyTable<S> {
    shards: Box<[Shard<S>]>,
    hasher: RandomState,
    shard_cap: usize,
    forget: Forget<S>,
    evicted_live: AtomicU64,
}

impl<S> std::fmt::Debug for KeyTable<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyTable")
            .field("len", &self.len())
            .field("cap", &(self.shard_cap * SHARDS))
            .finish()
    }
}

impl<S> KeyTable<S> {
    /// A table for about `max_keys` keys (hash maps use a randomly keyed hash, so
    /// clients cannot aim keys at one shard or bucket).
    pub fn new(max_keys: usize, forget: Forget<S>) -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            hasher: RandomState::new(),
            shard_cap: max_keys.div_ceil(SHARDS).max(1),
            forget,
            evicted_live: AtomicU64::new(0),
        }
    }

    fn shard(&self, key: &str) -> std::sync::MutexGuard<'_, HashMap<Box<str>, Slot<S>>> {
        let i = (self.hasher.hash_one(key) as usize) % SHARDS;
        self.shards[i].lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs `f` on the state of `key`, creating it with `init` if missing; `now`
    /// (in the table's own unit) marks the entry as used.
    pub fn update<R>(&self, key: &str, now: u64, init: impl FnOnce() -> S, f: impl FnOnce(&mut S) -> R) -> R {
        let mut map = self.shard(key);
        if let Some(slot) = map.get_mut(key) {
            slot.last_seen = slot.last_seen.max(now);
            return f(&mut slot.state);
        }
        if map.len() >= self.shard_cap {
            self.make_room(&mut map, now);
        }
        let slot = map.entry(key.into()).or_insert(Slot {
            state: init(),
            last_seen: now,
        });
        f(&mut slot.state)
    }

    /// Runs `f` on the state of `key` if it exists (does not mark it used).
    pub fn get<R>(&self, key: &str, f: impl FnOnce(&mut S) -> R) -> Option<R> {
        self.shard(key).get_mut(key).map(|slot| f(&mut slot.state))
    }

    /// Inserts or replaces an entry (used when loading persisted state).
    pub fn insert(&self, key: &str, state: S, now: u64) {
        let mut map = self.shard(key);
        if map.len() >= self.shard_cap && !map.contains_key(key) {
            self.make_room(&mut map, now);
        }
        map.insert(key.into(), Slot { state, last_seen: now });
    }

    /// Visits every entry, one shard locked at a time; `f` returns whether to keep it.
    pub fn scan(&self, mut f: impl FnMut(&str, &mut S) -> bool) {
        for shard in self.shards.iter() {
            let mut map = shard.lock().unwrap_or_else(|p| p.into_inner());
            map.retain(|k, slot| f(k, &mut slot.state));
        }
    }

    /// Drops every entry the `forget` predicate allows; returns how many.
    pub fn sweep(&self, now: u64) -> usize {
        let mut dropped = 0;
        for shard in self.shards.iter() {
            let mut map = shard.lock().unwrap_or_else(|p| p.into_inner());
            let before = map.len();
            map.retain(|_, slot| !(self.forget)(&slot.state, slot.last_seen, now));
            dropped += before - map.len();
        }
        dropped
    }

    /// Entries held.
    pub fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|p| p.into_inner()).len())
            .sum()
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Entries that still mattered but were dropped because the table was full.
    pub fn evicted_live(&self) -> u64 {
        self.evicted_live.load(Ordering::Relaxed)
    }

    fn make_room(&self, map: &mut HashMap<Box<str>, Slot<S>>, now: u64) {
        map.retain(|_, slot| !(self.forget)(&slot.state, slot.last_seen, now));
        if map.len() < self.shard_cap {
            return;
        }
        // Full of live entries: drop the least recently used eighth at once, so
        // this O(n) step runs at most once per n/8 new keys.
        let mut seen: Vec<u64> = map.values().map(|s| s.last_seen).collect();
        let cut = (seen.len() / 8).max(1);
        let (_, threshold, _) = seen.select_nth_unstable(cut - 1);
        let threshold = *threshold;
        let mut budget = cut;
        map.retain(|_, slot| {
            if budget > 0 && slot.last_seen <= threshold {
                budget -= 1;
                false
            } else {
                true
            }
        });
        self.evicted_live.fetch_add((cut - budget) as u64, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn idle_after_10(_: &u32, last_seen: u64, now: u64) -> bool {
        now >= last_seen + 10
    }

    #[test]
    fn existing_keys_are_updated_in_place() {
        let t: KeyTable<u32> = KeyTable::new(100, Box::new(idle_after_10));
        for i in 0..5 {
            let v = t.update(
                "a",
                i,
                || 0,
                |v| {
                    *v += 1;
                    *v
                },
            );
            assert_eq!(v, i as u32 + 1);
        }
        assert_eq!(t.len(), 1);
        assert_eq!(t.get("a", |v| *v), Some(5));
        assert_eq!(t.get("b", |v| *v), None);
    }

    #[test]
    fn sweep_drops_forgettable_entries() {
        let t: KeyTable<u32> = KeyTable::new(100, Box::new(idle_after_10));
        t.update("old", 0, || 0, |_| ());
        t.update("new", 8, || 0, |_| ());
        assert_eq!(t.sweep(12), 1);
        assert_eq!(t.get("old", |_| ()), None);
        assert!(t.get("new", |_| ()).is_some());
    }

    #[test]
    fn memory_is_bounded_under_a_flood_of_keys() {
        let t: KeyTable<u32> = KeyTable::new(320, Box::new(|_, _, _| false));
        for i in 0..10_000u64 {
            t.update(&format!("k{i}"), i, || 0, |_| ());
        }
        assert!(t.len() <= 320, "{}", t.len());
        assert!(t.evicted_live() > 0);
        // The most recent key survives.
        assert!(t.get("k9999", |_| ()).is_some());
    }

    #[test]
    fn full_shards_first_drop_what_can_be_forgotten() {
        let t: KeyTable<u32> = KeyTable::new(32, Box::new(idle_after_10));
        for i in 0..200u64 {
            t.update(&format!("k{i}"), i * 100, || 0, |_| ());
        }
        assert_eq!(t.evicted_live(), 0, "idle entries made room");
    }
}
