//! Write Gatehouse policy plugins in Rust.
//!
//! A plugin implements one trait — [`Balancer`], [`HealthEvaluator`], [`RetryPolicy`] or
//! [`RateLimiter`] — and exports it with [`export_plugin!`]. Built with
//! `cargo build --release --target wasm32-wasip2`, the crate becomes a WebAssembly component
//! that the gateway loads from its plugins directory (the file stem is the plugin's name).
//!
//! ```ignore
//! use gatehouse_plugin_sdk::{Balancer, NoConfig, Node, PickRequest, export_plugin};
//!
//! /// Sends each request to the next node in turn.
//! #[derive(Default)]
//! struct Rotate { next: usize }
//!
//! impl Balancer for Rotate {
//!     type Config = NoConfig;
//!
//!     fn new(_: NoConfig) -> Result<Self, String> {
//!         Ok(Self::default())
//!     }
//!
//!     fn pick(&mut self, nodes: &[Node], req: &PickRequest) -> Option<u32> {
//!         let open: Vec<&Node> = nodes.iter().filter(|n| !req.is_excluded(n.id)).collect();
//!         self.next = self.next.wrapping_add(1);
//!         open.get(self.next % open.len().max(1)).map(|n| n.id)
//!     }
//! }
//!
//! export_plugin!(balancer: Rotate);
//! ```
//!
//! The traits are plain Rust: the same code runs natively, so plugins are unit-tested with
//! `cargo test` through the harnesses and the fake host in [`testing`].
//!
//! Rules the gateway enforces (see `docs/plugins.md`): every call has a deadline and a
//! memory cap; a trap, a timeout, running out of memory, or breaking the contract (say,
//! returning a node that was not offered) makes the gateway use its built-in policy for that
//! request and start a fresh instance; repeated failures disable the plugin until a new file
//! arrives. Instances are per worker thread and may be replaced at any time: keep only
//! caches in plugin memory and share state through [`host::counter_add`].

pub mod host;
#[cfg(not(target_arch = "wasm32"))]
pub mod testing;
mod types;
pub mod v2;

#[doc(hidden)]
#[path = "rt.rs"]
pub mod __rt;

pub use serde;
pub use types::{
    FailureKind, HealthVerdict, Level, LimitRequest, LimitState, LimitVerdict, Node, Observation, ObservationSource,
    Observed, Outcome, PickRequest, RequestKey, RetryDecision, RetryRequest, Window,
};

use serde::de::DeserializeOwned;

/// A load balancer: picks the node for each try of a request.
///
/// Instances are per gateway worker thread; the node set arrives through [`update`](Self::update)
/// when it changes, and [`pick`](Self::pick) is called for every try.
pub trait Balancer: Sized + 'static {
    /// The plugin's config, parsed from the JSON under `plugins.balancer.config`.
    type Config: DeserializeOwned;

    /// Builds the plugin from its config; an error rejects the config.
    fn new(config: Self::Config) -> Result<Self, String>;

    /// The request keys [`pick`](Self::pick) wants to see (hashes in `PickRequest::keys`).
    fn keys(&self) -> Vec<RequestKey> {
        Vec::new()
    }

    /// The node set changed; `nodes` is what [`pick`](Self::pick) will be offered from now on.
    fn update(&mut self, nodes: &[Node]) {
        let _ = nodes;
    }

    /// Picks one of `nodes` that is not in `request.excluded`, or `None` to let the
    /// built-in balancer decide.
    fn pick(&mut self, nodes: &[Node], request: &PickRequest) -> Option<u32>;
}

/// A health evaluator: classifies observations of nodes. The gateway keeps the counters,
/// thresholds and node states; a verdict says what one observation counts as.
pub trait HealthEvaluator: Sized + 'static {
    /// The plugin's config, parsed from the JSON under `plugins.health.config`.
    type Config: DeserializeOwned;

    /// Builds the plugin from its config; an error rejects the config.
    fn new(config: Self::Config) -> Result<Self, String>;

    /// Classifies one observation ([`HealthVerdict::Builtin`] defers to the built-in
    /// classification). Runs on the request path: keep it cheap.
    fn evaluate(&mut self, observation: &Observation) -> HealthVerdict;
}

/// A retry policy: whether and when a failed try is retried. The gateway keeps its safety
/// rules (idempotency, retry budget, deadline, a node not tried yet) whatever it answers.
pub trait RetryPolicy: Sized + 'static {
    /// The plugin's config, parsed from the JSON under `plugins.retry.config`.
    type Config: DeserializeOwned;

    /// Builds the plugin from its config; an error rejects the config.
    fn new(config: Self::Config) -> Result<Self, String>;

    /// Decides for one failed try (no response, or a status of 400 or more).
    fn decide(&mut self, request: &RetryRequest) -> RetryDecision;
}

/// A rate limiter: admits or refuses each request.
pub trait RateLimiter: Sized + 'static {
    /// The plugin's config, parsed from the JSON under `plugins.rate_limit.config`.
    type Config: DeserializeOwned;

    /// Builds the plugin from its config; an error rejects the config.
    fn new(config: Self::Config) -> Result<Self, String>;

    /// The request keys [`check`](Self::check) wants to see.
    fn keys(&self) -> Vec<RequestKey> {
        Vec::new()
    }

    /// Decides for one request.
    fn check(&mut self, request: &LimitRequest) -> LimitVerdict;
}

/// A config type for plugins that take no config: accepts any JSON value.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NoConfig;

impl<'de> serde::Deserialize<'de> for NoConfig {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        serde::de::IgnoredAny::deserialize(d)?;
        Ok(NoConfig)
    }
}

/// The hash the gateway uses for request keys: xxh3-64 of the bytes, never 0 (0 means
/// "absent"). Use it to compare a key against values from the plugin's config.
pub fn key_hash(value: impl AsRef<[u8]>) -> u64 {
    xxhash_rust::xxh3::xxh3_64(value.as_ref()).max(1)
}

/// Exports a plugin type as the component's world. One line per plugin crate:
///
/// ```ignore
/// export_plugin!(balancer: MyBalancer);
/// export_plugin!(health_evaluator: MyEvaluator);
/// export_plugin!(retry_policy: MyPolicy);
/// export_plugin!(rate_limiter: MyLimiter);
/// ```
///
/// In native builds it only adds a hidden `init` entry point (so the plugin type counts as
/// used), and `cargo test` works on the same crate.
#[macro_export]
macro_rules! export_plugin {
    (balancer: $t:ty) => {
        $crate::__native_init!(|config| $crate::__rt::BalancerRt::<$t>::new().init(config));
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            use $crate::__rt::wasm as __w;
            ::std::thread_local! {
                static __GATEHOUSE_RT: ::std::cell::RefCell<$crate::__rt::BalancerRt<$t>> =
                    const { ::std::cell::RefCell::new($crate::__rt::BalancerRt::new()) };
            }
            struct __GatehousePlugin;
            impl __w::balance::Guest for __GatehousePlugin {
                fn init(config: ::std::string::String) -> ::std::result::Result<(), ::std::string::String> {
                    __w::balance_init(&__GATEHOUSE_RT, config)
                }
                fn keys() -> ::std::vec::Vec<__w::balance::RequestKey> {
                    __w::balance_keys(&__GATEHOUSE_RT)
                }
                fn update(nodes: ::std::vec::Vec<__w::balance::Node>) {
                    __w::balance_update(&__GATEHOUSE_RT, nodes)
                }
                fn pick(request: __w::balance::PickRequest) -> ::std::option::Option<u32> {
                    __w::balance_pick(&__GATEHOUSE_RT, request)
                }
            }
            $crate::__rt::wasm::bindings::balancer::__export_balancer!(__GatehousePlugin);
        };
    };
    (balancer_v2: $t:ty) => {
        $crate::__native_init!(|config| $crate::v2::BalancerRt::<$t>::new().init(config));
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            use $crate::v2::wasm as __w;
            ::std::thread_local! {
                static __GATEHOUSE_RT: ::std::cell::RefCell<$crate::v2::BalancerRt<$t>> =
                    const { ::std::cell::RefCell::new($crate::v2::BalancerRt::new()) };
            }
            struct __GatehousePlugin;
            impl __w::balance::Guest for __GatehousePlugin {
                fn init(config: ::std::string::String) -> ::std::result::Result<(), ::std::string::String> {
                    __w::init(&__GATEHOUSE_RT, config)
                }
                fn wants() -> __w::balance::Interests {
                    __w::wants(&__GATEHOUSE_RT)
                }
                fn update(gateway: __w::balance::Placement, nodes: ::std::vec::Vec<__w::balance::Node>) {
                    __w::update(&__GATEHOUSE_RT, gateway, nodes)
                }
                fn pick(request: __w::balance::PickRequest) -> ::std::option::Option<u32> {
                    __w::pick(&__GATEHOUSE_RT, request)
                }
                fn observe(report: __w::balance::TryReport) {
                    __w::observe(&__GATEHOUSE_RT, report)
                }
            }
            $crate::v2::wasm::bindings::__export_balancer_v2!(__GatehousePlugin);
        };
    };
    (health_evaluator: $t:ty) => {
        $crate::__native_init!(|config| $crate::__rt::PluginRt::<$t>::new().init_health(config));
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            use $crate::__rt::wasm as __w;
            ::std::thread_local! {
                static __GATEHOUSE_RT: ::std::cell::RefCell<$crate::__rt::PluginRt<$t>> =
                    const { ::std::cell::RefCell::new($crate::__rt::PluginRt::new()) };
            }
            struct __GatehousePlugin;
            impl __w::health::Guest for __GatehousePlugin {
                fn init(config: ::std::string::String) -> ::std::result::Result<(), ::std::string::String> {
                    __w::health_init(&__GATEHOUSE_RT, config)
                }
                fn evaluate(observation: __w::health::Observation) -> __w::health::HealthVerdict {
                    __w::health_evaluate(&__GATEHOUSE_RT, observation)
                }
            }
            $crate::__rt::wasm::bindings::health_evaluator::__export_health_evaluator!(__GatehousePlugin);
        };
    };
    (retry_policy: $t:ty) => {
        $crate::__native_init!(|config| $crate::__rt::PluginRt::<$t>::new().init_retry(config));
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            use $crate::__rt::wasm as __w;
            ::std::thread_local! {
                static __GATEHOUSE_RT: ::std::cell::RefCell<$crate::__rt::PluginRt<$t>> =
                    const { ::std::cell::RefCell::new($crate::__rt::PluginRt::new()) };
            }
            struct __GatehousePlugin;
            impl __w::retry::Guest for __GatehousePlugin {
                fn init(config: ::std::string::String) -> ::std::result::Result<(), ::std::string::String> {
                    __w::retry_init(&__GATEHOUSE_RT, config)
                }
                fn decide(request: __w::retry::RetryRequest) -> __w::retry::RetryDecision {
                    __w::retry_decide(&__GATEHOUSE_RT, request)
                }
            }
            $crate::__rt::wasm::bindings::retry_policy::__export_retry_policy!(__GatehousePlugin);
        };
    };
    (rate_limiter: $t:ty) => {
        $crate::__native_init!(|config| $crate::__rt::PluginRt::<$t>::new().init_limiter(config));
        #[cfg(target_arch = "wasm32")]
        const _: () = {
            use $crate::__rt::wasm as __w;
            ::std::thread_local! {
                static __GATEHOUSE_RT: ::std::cell::RefCell<$crate::__rt::PluginRt<$t>> =
                    const { ::std::cell::RefCell::new($crate::__rt::PluginRt::new()) };
            }
            struct __GatehousePlugin;
            impl __w::rate_limit::Guest for __GatehousePlugin {
                fn init(config: ::std::string::String) -> ::std::result::Result<(), ::std::string::String> {
                    __w::limit_init(&__GATEHOUSE_RT, config)
                }
                fn keys() -> ::std::vec::Vec<__w::rate_limit::RequestKey> {
                    __w::limit_keys(&__GATEHOUSE_RT)
                }
                fn check(request: __w::rate_limit::LimitRequest) -> __w::rate_limit::LimitVerdict {
                    __w::limit_check(&__GATEHOUSE_RT, request)
                }
            }
            $crate::__rt::wasm::bindings::rate_limiter::__export_rate_limiter!(__GatehousePlugin);
        };
    };
}

/// Native builds of a plugin crate: a public `init` that builds the plugin from config
/// text, which keeps the plugin type reachable (no dead-code warnings outside tests).
#[doc(hidden)]
#[macro_export]
macro_rules! __native_init {
    (|$config:ident| $init:expr) => {
        /// Builds the plugin from its config text, as the gateway's `init` does.
        #[cfg(not(target_arch = "wasm32"))]
        #[doc(hidden)]
        pub fn __gatehouse_native_init($config: &str) -> ::std::result::Result<(), ::std::string::String> {
            $init
        }
    };
}
