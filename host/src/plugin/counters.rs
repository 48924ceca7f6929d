//! The counters behind the `host.counter-add` import: the gateway's rate-limit
//! [`SharedCounters`] (fixed windows aligned to wall-clock time; local to this unit, or
//! shared by every unit of the group through Redis when `gateway.redis` is set),
//! namespaced per plugin and service so that no plugin reads another's counters and no
//! service spends another's limits.

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;

use crate::ratelimit::SharedCounters;
use crate::ratelimit::time::Clock;

/// Microseconds on a process-wide monotonic clock.
pub fn monotonic_us() -> u64 {
    static ORIGIN: OnceLock<Instant> = OnceLock::new();
    ORIGIN.get_or_init(Instant::now).elapsed().as_micros() as u64
}

/// The counter store every plugin of one gateway reaches through its [`CounterScope`].
///
/// It starts with counters of its own (enough for validation and tools) and is bound to
/// the gateway's [`SharedCounters`] when the first snapshot is built: the built-in rate
/// limiter hands them over (`RateLimiter::counters`), so plugin counters follow
/// `gateway.redis` like the built-in rules do.
#[derive(Debug)]
pub struct HostCounters {
    current: ArcSwap<SharedCounters>,
}

impl Default for HostCounters {
    fn default() -> Self {
        Self::new()
    }
}

impl HostCounters {
    /// A store with private, unit-local counters until [`bind`](Self::bind) is called.
    pub fn new() -> Self {
        Self::with(Arc::new(SharedCounters::new(Arc::new(Clock::new()))))
    }

    /// A store on `counters`.
    pub fn with(counters: Arc<SharedCounters>) -> Self {
        Self {
            current: ArcSwap::new(counters),
        }
    }

    /// Uses `counters` from now on (a no-op when they already are the ones in use).
    pub fn bind(&self, counters: Arc<SharedCounters>) {
        if !Arc::ptr_eq(&self.current.load(), &counters) {
            self.current.store(counters);
        }
    }

    /// The counters in use.
    pub fn current(&self) -> Arc<SharedCounters> {
        self.current.load_full()
    }
}

/// What one plugin use may count in: the host's counters under the namespace
/// `<plugin>/<service>`. Plugin and service names cannot contain `/`, so namespaces of
/// different plugins or services never meet.
#[derive(Debug, Clone)]
pub struct CounterScope {
    host: Arc<HostCounters>,
    namespace: Arc<str>,
}

impl CounterScope {
    /// The scope of plugin `plugin` used by service `service`.
    pub fn new(host: Arc<HostCounters>, plugin: &str, service: &str) -> Self {
        Self {
            host,
            namespace: format!("{plugin}/{service}").into(),
        }
    }

    /// A scope on counters of its own (validation: smoke calls must not spend the real
    /// counts).
    pub fn scratch(plugin: &str) -> Self {
        Self::new(Arc::new(HostCounters::new()), plugin, "validation")
    }

    /// The namespace (`<plugin>/<service>`).
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// `host.counter-add`: adds `delta` to counter `key` in the current window of
    /// `window_ms` (0 counts as 1 ms, as in the SDK's test host) and returns the value
    /// and the milliseconds left in the window.
    pub fn add(&self, key: u64, delta: i64, window_ms: u32) -> (i64, u32) {
        let window = Duration::from_millis(u64::from(window_ms.max(1)));
        let mut buf = [0u8; 16];
        let (value, left) = self
            .host
            .current()
            .incr_window(&self.namespace, hex(key, &mut buf), delta, window);
        let left = left.map_or(0, |d| u32::try_from(d.as_millis()).unwrap_or(u32::MAX));
        (value, left)
    }
}

/// `key` as 16 lower-case hex digits, without allocating.
fn hex(key: u64, buf: &mut [u8; 16]) -> &str {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for (i, b) in buf.iter_mut().enumerate() {
        *b = DIGITS[((key >> (60 - 4 * i)) & 0xf) as usize];
    }
    std::str::from_utf8(buf).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_hex() {
        let mut buf = [0u8; 16];
        assert_eq!(hex(0xdead_beef, &mut buf), "00000000deadbeef");
        assert_eq!(hex(u64::MAX, &mut buf), "ffffffffffffffff");
    }

    #[test]
    fn scopes_are_separate_per_plugin_and_service() {
        let host = Arc::new(HostCounters::new());
        let a_web = CounterScope::new(host.clone(), "a", "web");
        let a_api = CounterScope::new(host.clone(), "a", "api");
        let b_web = CounterScope::new(host.clone(), "b", "web");
        assert_eq!(a_web.namespace(), "a/web");
        assert_eq!(a_web.add(7, 2, 60_000).0, 2);
        assert_eq!(a_web.add(7, 1, 60_000).0, 3);
        assert_eq!(a_api.add(7, 1, 60_000).0, 1, "another service");
        assert_eq!(b_web.add(7, 1, 60_000).0, 1, "another plugin");
        assert_eq!(a_web.add(8, 1, 60_000).0, 1, "another key");
        assert_eq!(a_web.add(7, 1, 30_000).0, 1, "another window length");
        let (value, left) = a_web.add(7, 0, 60_000);
        assert_eq!(value, 3, "delta 0 reads");
        assert!((1..=60_000).contains(&left), "{left}");
        // The counts live in the host's SharedCounters, under the namespace.
        let window = Duration::from_millis(60_000);
        assert_eq!(host.current().get("a/web", "0000000000000007", window), 3);
    }

    #[test]
    fn binding_moves_every_scope_to_the_gateway_counters() {
        let host = Arc::new(HostCounters::new());
        let scope = CounterScope::new(host.clone(), "p", "s");
        assert_eq!(scope.add(1, 5, 60_000).0, 5);
        let gateway = Arc::new(SharedCounters::new(Arc::new(Clock::new())));
        gateway.incr("p/s", "0000000000000001", 10, Duration::from_millis(60_000));
        host.bind(gateway.clone());
        assert!(Arc::ptr_eq(&host.current(), &gateway));
        assert_eq!(scope.add(1, 1, 60_000).0, 11, "counts go to the bound counters");
        host.bind(gateway.clone());
        assert_eq!(
            scope.add(1, 0, 60_000).0,
            11,
            "binding the same counters again keeps them"
        );
    }

    #[test]
    fn a_zero_window_is_one_millisecond() {
        let scope = CounterScope::scratch("p");
        let (value, left) = scope.add(1, 1, 0);
        assert_eq!((value, left), (1, 1));
    }
}
