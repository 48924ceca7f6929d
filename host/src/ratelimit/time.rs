//! Time for limiters: a monotonic clock for local algorithms, a wall clock that
//! never goes backwards for windows shared between units and for quota periods,
//! and UTC calendar arithmetic for quota periods.
//!
//! Algorithms never read a clock themselves; they take `now` as an argument, so
//! tests drive them with any time they like.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::config::model::QuotaPeriod;

/// Milliseconds in an hour.
pub const HOUR_MS: u64 = 3_600_000;
/// Milliseconds in a day.
pub const DAY_MS: u64 = 24 * HOUR_MS;
/// Length of a rolling month (calendar months vary; rolling ones are 30 days).
pub const ROLLING_MONTH_MS: u64 = 30 * DAY_MS;

/// One reading of both clocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Now {
    /// Nanoseconds on the monotonic clock since the [`Clock`] was made.
    pub mono_ns: u64,
    /// Unix time in milliseconds, never smaller than an earlier reading.
    pub wall_ms: u64,
}

/// The time source of a limiter registry.
///
/// The monotonic side follows `tokio::time`, so tests with paused time move it
/// with `tokio::time::advance`.
#[derive(Debug)]
pub struct Clock {
    base: tokio::time::Instant,
    last_wall: AtomicU64,
}

impl Default for Clock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock {
    /// A clock whose monotonic side starts at zero now.
    pub fn new() -> Self {
        Self {
            base: tokio::time::Instant::now(),
            last_wall: AtomicU64::new(0),
        }
    }

    /// Reads both clocks. A wall clock stepped backwards holds at its highest
    /// reading until it catches up, so periods and shared windows never go back.
    pub fn now(&self) -> Now {
        let mono_ns = u64::try_from(self.base.elapsed().as_nanos()).unwrap_or(u64::MAX);
        let wall = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
            .unwrap_or(0);
        let last = self.last_wall.load(Ordering::Relaxed);
        let wall_ms = if wall > last {
            self.last_wall.fetch_max(wall, Ordering::Relaxed).max(wall)
        } else {
            last
        };
        Now { mono_ns, wall_ms }
    }
}

/// `[start, end)` in Unix milliseconds of the UTC calendar period containing `now_ms`.
pub fn calendar_period(period: QuotaPeriod, now_ms: u64) -> (u64, u64) {
    match period {
        QuotaPeriod::Hour => {
            let start = now_ms - now_ms % HOUR_MS;
            (start, start + HOUR_MS)
        }
        QuotaPeriod::Day => {
            let start = now_ms - now_ms % DAY_MS;
            (start, start + DAY_MS)
        }
        QuotaPeriod::Month => {
            let days = (now_ms / DAY_MS) as i64;
            let (y, m, _) = civil_from_days(days);
            let (ny, nm) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
            let start = days_from_civil(y, m, 1) as u64 * DAY_MS;
            let end = days_from_civil(ny, nm, 1) as u64 * DAY_MS;
            (start, end)
        }
    }
}

/// Length of a rolling period that starts at a key's first call.
pub fn rolling_len_ms(period: QuotaPeriod) -> u64 {
    match period {
        QuotaPeriod::Hour => HOUR_MS,
        QuotaPeriod::Day => DAY_MS,
        QuotaPeriod::Month => ROLLING_MONTH_MS,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
pub fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date `(year, month, day)` of a day count since 1970-01-01.
pub fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = if z >= 0 { z } else { z - 146_096 } / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(y: i64, m: u32, d: u32, h: u64) -> u64 {
        days_from_civil(y, m, d) as u64 * DAY_MS + h * HOUR_MS
    }

    #[test]
    fn civil_round_trip() {
        for z in [-1000, 0, 1, 59, 365, 11_016, 19_782, 20_000, 30_000] {
            let (y, m, d) = civil_from_days(z);
            assert_eq!(days_from_civil(y, m, d), z);
        }
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(days_from_civil(2024, 2, 29), 19_782);
    }

    #[test]
    fn calendar_periods_are_utc_aligned() {
        let t = ms(2024, 2, 29, 13) + 1234;
        assert_eq!(
            calendar_period(QuotaPeriod::Hour, t),
            (ms(2024, 2, 29, 13), ms(2024, 2, 29, 14))
        );
        assert_eq!(
            calendar_period(QuotaPeriod::Day, t),
            (ms(2024, 2, 29, 0), ms(2024, 3, 1, 0))
        );
        assert_eq!(
            calendar_period(QuotaPeriod::Month, t),
            (ms(2024, 2, 1, 0), ms(2024, 3, 1, 0))
        );
        // December rolls into the next year; the last millisecond stays in the month.
        let dec = ms(2023, 12, 31, 23) + HOUR_MS - 1;
        assert_eq!(
            calendar_period(QuotaPeriod::Month, dec),
            (ms(2023, 12, 1, 0), ms(2024, 1, 1, 0))
        );
        assert_eq!(calendar_period(QuotaPeriod::Month, dec + 1).0, ms(2024, 1, 1, 0));
    }

    #[tokio::test(start_paused = true)]
    async fn monotonic_side_follows_tokio_time() {
        let clock = Clock::new();
        let a = clock.now();
        tokio::time::advance(std::time::Duration::from_millis(1500)).await;
        let b = clock.now();
        assert_eq!(b.mono_ns - a.mono_ns, 1_500_000_000);
        assert!(b.wall_ms >= a.wall_ms);
    }

    #[test]
    fn wall_side_never_goes_back() {
        let clock = Clock::new();
        let future = clock.now().wall_ms + 10 * HOUR_MS;
        clock.last_wall.store(future, Ordering::Relaxed);
        assert_eq!(
            clock.now().wall_ms,
            future,
            "a wall clock behind the last reading holds"
        );
    }
}
