//! Quotas with `policy: local`: calls per hour, day or month per key, counted in
//! this process and persisted under `state_dir` so they survive a restart.
//!
//! Durability: every `sync_interval` (default 1 s) a changed quota is written to
//! `state_dir/quotas/<service>.<id>.json` — a temporary file, `fsync`, `rename`,
//! `fsync` of the directory — so a crash loses at most one interval of counts and
//! never leaves a torn file. A clean shutdown writes once more.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::table::KeyTable;
use super::time::{calendar_period, rolling_len_ms};
use super::{Admission, RuleStep};
use crate::config::model::QuotaPeriod;

/// Keys one quota keeps at most (keys whose period ended are dropped first).
pub const MAX_KEYS: usize = 1_000_000;

/// Why quota state could not be written.
#[derive(Debug, thiserror::Error)]
pub enum PersistError {
    /// A file operation failed.
    #[error("cannot write quota state {path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The state could not be encoded.
    #[error("cannot encode quota state: {0}")]
    Encode(#[from] serde_json::Error),
}

/// One key's count in its current period.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cell {
    /// Period start, Unix ms.
    pub start: u64,
    /// Period end (exclusive), Unix ms.
    pub end: u64,
    /// Calls counted in the period.
    pub count: u64,
}

/// How a quota's periods are laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Periods {
    /// Hour, day or month.
    pub period: QuotaPeriod,
    /// UTC calendar-aligned (true) or starting at a key's first call.
    pub calendar: bool,
}

impl Periods {
    /// The period a call at `now_ms` opens.
    pub fn open(&self, now_ms: u64) -> Cell {
        let (start, end) = if self.calendar {
            calendar_period(self.period, now_ms)
        } else {
            (now_ms, now_ms + rolling_len_ms(self.period))
        };
        Cell { start, end, count: 0 }
    }

    /// Counts one call against `limit`. A clock behind the period start keeps the
    /// period (counts never reset because time went back).
    pub fn acquire(&self, cell: &mut Cell, limit: u64, now_ms: u64) -> RuleStep {
        if now_ms >= cell.end {
            *cell = self.open(now_ms);
        }
        let left = Duration::from_millis(cell.end.saturating_sub(now_ms));
        if cell.count >= limit {
            RuleStep::Deny {
                limit,
                retry: left,
                reset: left,
            }
        } else {
            cell.count += 1;
            RuleStep::Admit {
                limit,
                remaining: limit - cell.count,
                reset: left,
                how: Admission::Counted,
            }
        }
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct File {
    format: u32,
    rule: String,
    entries: Vec<(String, Cell)>,
}

/// A durable local quota.
#[derive(Debug)]
pub struct LocalQuota {
    periods: Periods,
    calls: AtomicU64,
    sync_interval_ms: AtomicU64,
    table: KeyTable<Cell>,
    dirty: AtomicBool,
    path: PathBuf,
    describe: String,
    write: Mutex<()>,
}

impl LocalQuota {
    /// A quota persisted at `path`, loading what an earlier run left there.
    pub fn open(path: PathBuf, describe: String, periods: Periods, calls: u64, now_ms: u64) -> Self {
        let q = Self {
            periods,
            calls: AtomicU64::new(calls),
            sync_interval_ms: AtomicU64::new(1000),
            table: KeyTable::new(MAX_KEYS, Box::new(|c: &Cell, _, now| now >= c.end)),
            dirty: AtomicBool::new(false),
            path,
            describe,
            write: Mutex::new(()),
        };
        match load(&q.path) {
            Ok(Some(file)) => {
                let mut kept = 0;
                for (key, cell) in file.entries {
                    if cell.end > now_ms {
                        q.table.insert(&key, cell, now_ms);
                        kept += 1;
                    }
                }
                tracing::info!(path = %q.path.display(), keys = kept, "quota state loaded");
            }
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(path = %q.path.display(), error = %e, "quota state unreadable; starting from zero")
            }
        }
        q
    }

    /// Updates the values a new config may change without resetting counts.
    pub fn configure(&self, calls: u64, sync_interval: Duration) {
        self.calls.store(calls, Ordering::Relaxed);
        let ms = u64::try_from(sync_interval.as_millis()).unwrap_or(u64::MAX).max(1);
        self.sync_interval_ms.store(ms, Ordering::Relaxed);
    }

    /// How often the state is written.
    pub fn sync_interval(&self) -> Duration {
        Duration::from_millis(self.sync_interval_ms.load(Ordering::Relaxed))
    }

    /// Counts one call of `key`.
    pub fn acquire(&self, key: &str, now_ms: u64) -> RuleStep {
        let limit = self.calls.load(Ordering::Relaxed);
        let periods = self.periods;
        let step = self.table.update(
            key,
            now_ms,
            || periods.open(now_ms),
            |c| periods.acquire(c, limit, now_ms),
        );
        if matches!(step, RuleStep::Admit { .. }) && !self.dirty.load(Ordering::Relaxed) {
            self.dirty.store(true, Ordering::Relaxed);
        }
        step
    }

    /// Writes the state if it changed since the last write; returns whether it wrote.
    pub fn persist(&self, now_ms: u64) -> Result<bool, PersistError> {
        let _one_writer = self.write.lock().unwrap_or_else(|p| p.into_inner());
        if !self.dirty.swap(false, Ordering::AcqRel) {
            return Ok(false);
        }
        let mut entries = Vec::new();
        self.table.scan(|k, c| {
            let live = c.end > now_ms;
            if live {
                entries.push((k.to_string(), *c));
            }
            live
        });
        let file = File {
            format: 1,
            rule: self.describe.clone(),
            entries,
        };
        let result = serde_json::to_vec(&file)
            .map_err(PersistError::from)
            .and_then(|bytes| write_atomically(&self.path, &bytes));
        if result.is_err() {
            self.dirty.store(true, Ordering::Release);
        }
        result.map(|()| true)
    }

    /// The count of `key` in its current period (0 if unknown).
    pub fn count(&self, key: &str, now_ms: u64) -> u64 {
        self.table
            .get(key, |c| if now_ms < c.end { c.count } else { 0 })
            .unwrap_or(0)
    }
}

fn load(path: &Path) -> Result<Option<File>, String> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| e.to_string()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e.to_string()),
    }
}

/// Writes `bytes` to `path` so that a crash leaves either the old or the new file:
/// temporary file, `fsync`, `rename`, `fsync` of the directory.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), PersistError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| PersistError::Io { path, source }
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let tmp = path.with_extension("json.tmp");
    let mut f = std::fs::File::create(&tmp).map_err(io(&tmp))?;
    f.write_all(bytes).map_err(io(&tmp))?;
    f.sync_all().map_err(io(&tmp))?;
    drop(f);
    std::fs::rename(&tmp, path).map_err(io(path))?;
    std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(io(dir))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ratelimit::time::{DAY_MS, HOUR_MS, days_from_civil};

    fn day(y: i64, m: u32, d: u32) -> u64 {
        days_from_civil(y, m, d) as u64 * DAY_MS
    }

    fn admitted(s: RuleStep) -> bool {
        matches!(s, RuleStep::Admit { .. })
    }

    #[test]
    fn calendar_day_resets_at_utc_midnight() {
        let p = Periods {
            period: QuotaPeriod::Day,
            calendar: true,
        };
        let t = day(2024, 5, 10) + 23 * HOUR_MS;
        let mut c = p.open(t);
        for _ in 0..3 {
            assert!(admitted(p.acquire(&mut c, 3, t)));
        }
        let RuleStep::Deny { retry, .. } = p.acquire(&mut c, 3, t) else {
            panic!()
        };
        assert_eq!(retry, Duration::from_millis(HOUR_MS));
        assert!(!admitted(p.acquire(&mut c, 3, day(2024, 5, 11) - 1)));
        assert!(admitted(p.acquire(&mut c, 3, day(2024, 5, 11))));
        assert_eq!(c.count, 1);
    }

    #[test]
    fn calendar_month_edges_and_clock_jumps() {
        let p = Periods {
            period: QuotaPeriod::Month,
            calendar: true,
        };
        let t = day(2024, 1, 31) + 12 * HOUR_MS;
        let mut c = p.open(t);
        assert!(admitted(p.acquire(&mut c, 1, t)));
        let RuleStep::Deny { retry, .. } = p.acquire(&mut c, 1, t) else {
            panic!()
        };
        assert_eq!(retry, Duration::from_millis(12 * HOUR_MS));
        // Clock stepped back a week: still the same spent period.
        assert!(!admitted(p.acquire(&mut c, 1, t - 7 * DAY_MS)));
        // Clock jumped a year ahead: a fresh period.
        assert!(admitted(p.acquire(&mut c, 1, t + 366 * DAY_MS)));
        assert_eq!(c.start, day(2025, 1, 1));
    }

    #[test]
    fn rolling_periods_start_at_the_first_call() {
        let p = Periods {
            period: QuotaPeriod::Hour,
            calendar: false,
        };
        let t = 1_000_000 + 17;
        let mut c = p.open(t);
        assert!(admitted(p.acquire(&mut c, 1, t)));
        assert!(!admitted(p.acquire(&mut c, 1, t + HOUR_MS - 1)));
        assert!(admitted(p.acquire(&mut c, 1, t + HOUR_MS)));
        assert_eq!(c.start, t + HOUR_MS);
    }

    #[test]
    fn counts_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("quotas").join("svc.1.json");
        let periods = Periods {
            period: QuotaPeriod::Day,
            calendar: true,
        };
        let t = day(2024, 6, 1) + HOUR_MS;
        let q = LocalQuota::open(path.clone(), "q".into(), periods, 5, t);
        for _ in 0..5 {
            assert!(admitted(q.acquire("k", t)));
        }
        assert!(q.persist(t).unwrap());
        assert!(!q.persist(t).unwrap(), "nothing changed");
        drop(q);
        let q = LocalQuota::open(path.clone(), "q".into(), periods, 5, t + 10);
        assert_eq!(q.count("k", t + 10), 5);
        assert!(!admitted(q.acquire("k", t + 10)));
        // The next day the persisted period has ended and is not loaded.
        let q = LocalQuota::open(path, "q".into(), periods, 5, day(2024, 6, 2));
        assert!(q.table.is_empty());
    }

    #[test]
    fn a_corrupt_file_starts_from_zero() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("q.json");
        std::fs::write(&path, b"{not json").unwrap();
        let periods = Periods {
            period: QuotaPeriod::Hour,
            calendar: true,
        };
        let q = LocalQuota::open(path, "q".into(), periods, 1, 5);
        assert!(admitted(q.acquire("k", 5)));
        assert!(q.persist(5).unwrap());
    }
}
