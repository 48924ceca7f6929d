//! What the gateway provides to a plugin: logging, a monotonic clock and shared
//! counters. In a `wasm32` build these call the host; natively they run against the
//! in-process test host of [`crate::testing`], so the same plugin code is unit-tested
//! with `cargo test`.

use crate::types::{Level, Window};

/// Writes a line to the gateway's log, labelled with the plugin's name.
pub fn log(level: Level, message: &str) {
    imp::log(level, message)
}

/// Monotonic clock in microseconds (arbitrary origin; use differences).
pub fn now_us() -> u64 {
    imp::now_us()
}

/// Adds `delta` to counter `key` in the current fixed window of `window_ms` and returns
/// the new value and the time left in the window. Counters are namespaced by plugin and
/// service: shared by every instance of the plugin serving the same service in the
/// gateway (and by every unit of the group when `gateway.redis` is set); `delta` 0 reads.
pub fn counter_add(key: u64, delta: i64, window_ms: u32) -> Window {
    imp::counter_add(key, delta, window_ms)
}

#[cfg(target_arch = "wasm32")]
mod imp {
    use crate::__rt::wasm::host;
    use crate::types::{Level, Window};

    pub fn log(level: Level, message: &str) {
        host::log(level.into(), message);
    }

    pub fn now_us() -> u64 {
        host::now_us()
    }

    pub fn counter_add(key: u64, delta: i64, window_ms: u32) -> Window {
        let w = host::counter_add(key, delta, window_ms);
        Window {
            count: w.count,
            reset_ms: w.reset_ms,
        }
    }
}

#[cfg(not(target_arch = "wasm32"))]
mod imp {
    use crate::testing::host;
    use crate::types::{Level, Window};

    pub fn log(level: Level, message: &str) {
        host::log(level, message);
    }

    pub fn now_us() -> u64 {
        host::now_us()
    }

    pub fn counter_add(key: u64, delta: i64, window_ms: u32) -> Window {
        host::counter_add(key, delta, window_ms)
    }
}
