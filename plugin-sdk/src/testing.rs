//! Native testing: a fake host and harnesses that drive a plugin the way the gateway does.
//!
//! The fake host is per test thread: [`host::log`](crate::host::log) lines are captured
//! ([`logs`]), the clock only moves when a test moves it ([`advance_ms`]), and counters
//! live in memory with the same fixed windows as the gateway's. The harnesses parse the
//! config from JSON text like `init` does and check every answer against the contract the
//! gateway enforces (a picked node must be offered and not excluded), so a test fails
//! where the gateway would count a contract violation.
//!
//! ```ignore
//! use gatehouse_plugin_sdk::testing::{BalancerHarness, requests};
//! use gatehouse_plugin_sdk::Node;
//!
//! let mut h = BalancerHarness::<MyBalancer>::new(r#"{"percent": 10}"#).unwrap();
//! h.update(vec![Node::new(0, 1), Node::new(1, 1).with_tags(["canary"])]);
//! let canary = requests(1000).filter(|r| h.pick(r) == Some(1)).count();
//! ```

use std::cell::RefCell;
use std::collections::HashMap;

use crate::__rt::{BalancerRt, PluginRt};
use crate::types::{
    HealthVerdict, Level, LimitRequest, LimitVerdict, Node, Observation, PickRequest, RequestKey, RetryDecision,
    RetryRequest,
};
use crate::{Balancer, HealthEvaluator, RateLimiter, RetryPolicy};

#[derive(Debug, Default)]
struct FakeHost {
    now_us: u64,
    logs: Vec<(Level, String)>,
    counters: HashMap<(u64, u32), (u64, i64)>,
}

thread_local! {
    static HOST: RefCell<FakeHost> = RefCell::new(FakeHost {
        // Not 0, so code that treats 0 as "never" still works in tests.
        now_us: 1_000_000_000,
        ..FakeHost::default()
    });
}

/// The fake host behind [`crate::host`] in native builds.
pub(crate) mod host {
    use super::HOST;
    use crate::types::{Level, Window};

    pub fn log(level: Level, message: &str) {
        HOST.with(|h| h.borrow_mut().logs.push((level, message.to_string())));
    }

    pub fn now_us() -> u64 {
        HOST.with(|h| h.borrow().now_us)
    }

    pub fn counter_add(key: u64, delta: i64, window_ms: u32) -> Window {
        HOST.with(|h| {
            let mut h = h.borrow_mut();
            let window = u64::from(window_ms.max(1));
            let now_ms = h.now_us / 1000;
            let index = now_ms / window;
            let entry = h.counters.entry((key, window_ms)).or_insert((index, 0));
            if entry.0 != index {
                *entry = (index, 0);
            }
            entry.1 += delta;
            Window {
                count: entry.1,
                reset_ms: (window - now_ms % window) as u32,
            }
        })
    }
}

/// Resets the fake host of this thread: clock, logs and counters.
pub fn reset() {
    HOST.with(|h| {
        *h.borrow_mut() = FakeHost {
            now_us: 1_000_000_000,
            ..FakeHost::default()
        }
    });
}

/// Moves the fake clock forward.
pub fn advance_ms(ms: u64) {
    HOST.with(|h| h.borrow_mut().now_us += ms * 1000);
}

/// Log lines written so far on this thread (and clears them).
pub fn take_logs() -> Vec<(Level, String)> {
    HOST.with(|h| std::mem::take(&mut h.borrow_mut().logs))
}

/// `n` first-try pick requests with well-spread pseudo-random request ids (deterministic).
pub fn requests(n: usize) -> impl Iterator<Item = PickRequest> {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..n).map(move |_| {
        // splitmix64
        x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = x;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        PickRequest::new(z ^ (z >> 31))
    })
}

/// Drives a [`Balancer`] like the gateway: config from JSON text, nodes through
/// `update`, and the pick contract checked on every call.
pub struct BalancerHarness<T: Balancer> {
    rt: BalancerRt<T>,
}

impl<T: Balancer> std::fmt::Debug for BalancerHarness<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BalancerHarness")
            .field("plugin", &std::any::type_name::<T>())
            .finish()
    }
}

impl<T: Balancer> BalancerHarness<T> {
    /// Calls `init` with `config` (JSON text, as written under `config:` in the gateway
    /// config); `Err` is what the gateway would report.
    pub fn new(config: &str) -> Result<Self, String> {
        let mut rt = BalancerRt::new();
        rt.init(config)?;
        Ok(Self { rt })
    }

    /// The request keys the plugin asks for.
    pub fn keys(&self) -> Vec<RequestKey> {
        self.rt.keys()
    }

    /// Hands over a new node set.
    pub fn update(&mut self, nodes: Vec<Node>) {
        self.rt.update(nodes);
    }

    /// One pick. Panics if the answer breaks the contract (an id not offered, or excluded).
    pub fn pick(&mut self, request: &PickRequest) -> Option<u32> {
        let id = self.rt.pick(request)?;
        assert!(
            self.rt.nodes().iter().any(|n| n.id == id),
            "contract violation: picked node {id}, which was not offered"
        );
        assert!(
            !request.is_excluded(id),
            "contract violation: picked node {id}, which this request already tried"
        );
        Some(id)
    }

    /// The plugin itself.
    pub fn plugin(&mut self) -> &mut T {
        self.rt.plugin_mut()
    }
}

/// Drives a [`HealthEvaluator`] like the gateway.
pub struct HealthHarness<T: HealthEvaluator> {
    rt: PluginRt<T>,
}

impl<T: HealthEvaluator> std::fmt::Debug for HealthHarness<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HealthHarness")
            .field("plugin", &std::any::type_name::<T>())
            .finish()
    }
}

impl<T: HealthEvaluator> HealthHarness<T> {
    /// Calls `init` with `config` (JSON text).
    pub fn new(config: &str) -> Result<Self, String> {
        let mut rt = PluginRt::new();
        rt.init_health(config)?;
        Ok(Self { rt })
    }

    /// Judges one observation.
    pub fn evaluate(&mut self, observation: &Observation) -> HealthVerdict {
        self.rt.evaluate(observation)
    }

    /// The plugin itself.
    pub fn plugin(&mut self) -> &mut T {
        self.rt.plugin_mut()
    }
}

/// Drives a [`RetryPolicy`] like the gateway.
pub struct RetryHarness<T: RetryPolicy> {
    rt: PluginRt<T>,
}

impl<T: RetryPolicy> std::fmt::Debug for RetryHarness<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RetryHarness")
            .field("plugin", &std::any::type_name::<T>())
            .finish()
    }
}

impl<T: RetryPolicy> RetryHarness<T> {
    /// Calls `init` with `config` (JSON text).
    pub fn new(config: &str) -> Result<Self, String> {
        let mut rt = PluginRt::new();
        rt.init_retry(config)?;
        Ok(Self { rt })
    }

    /// Decides for one failed try.
    pub fn decide(&mut self, request: &RetryRequest) -> RetryDecision {
        self.rt.decide(request)
    }

    /// The plugin itself.
    pub fn plugin(&mut self) -> &mut T {
        self.rt.plugin_mut()
    }
}

/// Drives a [`RateLimiter`] like the gateway.
pub struct LimiterHarness<T: RateLimiter> {
    rt: PluginRt<T>,
}

impl<T: RateLimiter> std::fmt::Debug for LimiterHarness<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LimiterHarness")
            .field("plugin", &std::any::type_name::<T>())
            .finish()
    }
}

impl<T: RateLimiter> LimiterHarness<T> {
    /// Calls `init` with `config` (JSON text).
    pub fn new(config: &str) -> Result<Self, String> {
        let mut rt = PluginRt::new();
        rt.init_limiter(config)?;
        Ok(Self { rt })
    }

    /// The request keys the plugin asks for.
    pub fn keys(&self) -> Vec<RequestKey> {
        self.rt.limiter_keys()
    }

    /// Decides for one request.
    pub fn check(&mut self, request: &LimitRequest) -> LimitVerdict {
        self.rt.check(request)
    }

    /// The plugin itself.
    pub fn plugin(&mut self) -> &mut T {
        self.rt.plugin_mut()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{NoConfig, key_hash};

    /// Always the first open node; asks for one header.
    struct First;

    impl Balancer for First {
        type Config = NoConfig;
        fn new(_: NoConfig) -> Result<Self, String> {
            Ok(First)
        }
        fn keys(&self) -> Vec<RequestKey> {
            vec![RequestKey::Header("x-user".into())]
        }
        fn pick(&mut self, nodes: &[Node], req: &PickRequest) -> Option<u32> {
            crate::host::log(Level::Debug, "pick");
            nodes.iter().find(|n| !req.is_excluded(n.id)).map(|n| n.id)
        }
    }

    /// Returns a node that was never offered.
    struct Liar;

    impl Balancer for Liar {
        type Config = NoConfig;
        fn new(_: NoConfig) -> Result<Self, String> {
            Ok(Liar)
        }
        fn pick(&mut self, _: &[Node], _: &PickRequest) -> Option<u32> {
            Some(99)
        }
    }

    #[test]
    fn balancer_harness_runs_init_update_pick() {
        take_logs();
        let mut h = BalancerHarness::<First>::new("").unwrap();
        assert_eq!(h.keys(), vec![RequestKey::Header("x-user".into())]);
        h.update(vec![Node::new(3, 1), Node::new(5, 1)]);
        assert_eq!(h.pick(&PickRequest::new(1)), Some(3));
        assert_eq!(h.pick(&PickRequest::new(1).retrying(&[3])), Some(5));
        assert_eq!(h.pick(&PickRequest::new(1).retrying(&[3, 5])), None);
        assert_eq!(take_logs().len(), 3);
    }

    #[test]
    #[should_panic(expected = "contract violation")]
    fn balancer_harness_catches_contract_violations() {
        let mut h = BalancerHarness::<Liar>::new("{}").unwrap();
        h.update(vec![Node::new(0, 1)]);
        h.pick(&PickRequest::new(1));
    }

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Strict {
        #[allow(dead_code)]
        limit: u32,
    }

    struct Limited;

    impl RateLimiter for Limited {
        type Config = Strict;
        fn new(_: Strict) -> Result<Self, String> {
            Ok(Limited)
        }
        fn check(&mut self, _: &LimitRequest) -> LimitVerdict {
            LimitVerdict::Allow(None)
        }
    }

    #[test]
    fn config_errors_are_reported_like_init() {
        let err = LimiterHarness::<Limited>::new(r#"{"limit": "ten"}"#).unwrap_err();
        assert!(err.starts_with("invalid plugin config"), "{err}");
        assert!(LimiterHarness::<Limited>::new(r#"{"limit": 10}"#).is_ok());
    }

    #[test]
    fn counters_use_fixed_windows_on_the_fake_clock() {
        reset();
        let start_in_window = (crate::host::now_us() / 1000) % 1000;
        advance_ms(1000 - start_in_window);
        assert_eq!(crate::host::counter_add(7, 1, 1000).count, 1);
        assert_eq!(crate::host::counter_add(7, 2, 1000).count, 3);
        let w = crate::host::counter_add(7, 0, 1000);
        assert_eq!((w.count, w.reset_ms), (3, 1000));
        advance_ms(999);
        assert_eq!(crate::host::counter_add(7, 1, 1000).count, 4);
        advance_ms(1);
        assert_eq!(crate::host::counter_add(7, 1, 1000).count, 1);
        assert_eq!(crate::host::counter_add(8, 1, 1000).count, 1, "keys are separate");
    }

    #[test]
    fn key_hash_is_never_zero_and_stable() {
        assert_ne!(key_hash(""), 0);
        assert_eq!(key_hash("acme"), key_hash(String::from("acme")));
        assert_ne!(key_hash("acme"), key_hash("acme2"));
    }

    #[test]
    fn requests_spread_ids() {
        let ids: Vec<u64> = requests(1000).map(|r| r.request_id % 100).collect();
        let low = ids.iter().filter(|i| **i < 10).count();
        assert!((60..=140).contains(&low), "{low}");
    }
}
