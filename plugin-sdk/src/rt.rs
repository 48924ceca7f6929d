//! Glue between the exported component functions and a plugin's trait impl. Not part of
//! the public API: the [`export_plugin!`](crate::export_plugin) macro and the
//! [`testing`](crate::testing) harnesses use it, so native tests exercise exactly the code
//! path the gateway calls.

use serde::de::DeserializeOwned;

use crate::types::{
    HealthVerdict, LimitRequest, LimitVerdict, Node, Observation, PickRequest, RequestKey, RetryDecision, RetryRequest,
};
use crate::{Balancer, HealthEvaluator, RateLimiter, RetryPolicy};

/// Most request keys a plugin may ask for (the host enforces the same bound).
pub const MAX_KEYS: usize = 16;

/// Parses a plugin config the way `init` does.
pub fn parse_config<C: DeserializeOwned>(config: &str) -> Result<C, String> {
    let text = if config.trim().is_empty() { "{}" } else { config };
    serde_json::from_str(text).map_err(|e| format!("invalid plugin config: {e}"))
}

/// Stops a call that came before a successful `init`.
pub fn not_initialised() -> ! {
    panic!("the gateway called the plugin before `init` succeeded")
}

fn checked_keys(keys: Vec<RequestKey>) -> Vec<RequestKey> {
    assert!(
        keys.len() <= MAX_KEYS,
        "a plugin may ask for at most {MAX_KEYS} request keys, this one asked for {}",
        keys.len()
    );
    keys
}

/// State of a balancer plugin instance: the plugin and the current node set.
pub struct BalancerRt<T> {
    plugin: Option<T>,
    nodes: Vec<Node>,
}

impl<T: Balancer> Default for BalancerRt<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T: Balancer> BalancerRt<T> {
    /// Nothing initialised yet.
    pub const fn new() -> Self {
        Self {
            plugin: None,
            nodes: Vec::new(),
        }
    }

    /// `init`: parses the config and builds the plugin.
    pub fn init(&mut self, config: &str) -> Result<(), String> {
        install_panic_hook();
        self.plugin = Some(T::new(parse_config(config)?)?);
        Ok(())
    }

    /// `keys`.
    pub fn keys(&self) -> Vec<RequestKey> {
        checked_keys(self.plugin().keys())
    }

    /// `update`: stores the node set and tells the plugin.
    pub fn update(&mut self, nodes: Vec<Node>) {
        self.nodes = nodes;
        let Some(p) = self.plugin.as_mut() else {
            not_initialised()
        };
        p.update(&self.nodes);
    }

    /// `pick`.
    pub fn pick(&mut self, request: &PickRequest) -> Option<u32> {
        let Some(p) = self.plugin.as_mut() else {
            not_initialised()
        };
        p.pick(&self.nodes, request)
    }

    /// The current node set.
    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    /// The plugin.
    pub fn plugin(&self) -> &T {
        self.plugin.as_ref().unwrap_or_else(|| not_initialised())
    }

    /// The plugin, mutably.
    pub fn plugin_mut(&mut self) -> &mut T {
        self.plugin.as_mut().unwrap_or_else(|| not_initialised())
    }
}

/// State of a single-call plugin instance (health evaluator, retry policy, rate limiter).
pub struct PluginRt<T> {
    plugin: Option<T>,
}

impl<T> Default for PluginRt<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> PluginRt<T> {
    /// Nothing initialised yet.
    pub const fn new() -> Self {
        Self { plugin: None }
    }

    /// Builds the plugin from its config text with `build`.
    pub fn init_with<C: DeserializeOwned>(
        &mut self,
        config: &str,
        build: impl FnOnce(C) -> Result<T, String>,
    ) -> Result<(), String> {
        install_panic_hook();
        self.plugin = Some(build(parse_config(config)?)?);
        Ok(())
    }

    /// The plugin.
    pub fn plugin(&self) -> &T {
        self.plugin.as_ref().unwrap_or_else(|| not_initialised())
    }

    /// The plugin, mutably.
    pub fn plugin_mut(&mut self) -> &mut T {
        self.plugin.as_mut().unwrap_or_else(|| not_initialised())
    }
}

impl<T: HealthEvaluator> PluginRt<T> {
    /// `init` of a health evaluator.
    pub fn init_health(&mut self, config: &str) -> Result<(), String> {
        self.init_with(config, T::new)
    }

    /// `evaluate`.
    pub fn evaluate(&mut self, observation: &Observation) -> HealthVerdict {
        self.plugin_mut().evaluate(observation)
    }
}

impl<T: RetryPolicy> PluginRt<T> {
    /// `init` of a retry policy.
    pub fn init_retry(&mut self, config: &str) -> Result<(), String> {
        self.init_with(config, T::new)
    }

    /// `decide`.
    pub fn decide(&mut self, request: &RetryRequest) -> RetryDecision {
        self.plugin_mut().decide(request)
    }
}

impl<T: RateLimiter> PluginRt<T> {
    /// `init` of a rate limiter.
    pub fn init_limiter(&mut self, config: &str) -> Result<(), String> {
        self.init_with(config, T::new)
    }

    /// `keys` of a rate limiter.
    pub fn limiter_keys(&self) -> Vec<RequestKey> {
        checked_keys(self.plugin().keys())
    }

    /// `check`.
    pub fn check(&mut self, request: &LimitRequest) -> LimitVerdict {
        self.plugin_mut().check(request)
    }
}

/// Routes panic messages to the host log (a plugin has no stderr). Native builds keep the
/// test harness's own hook.
pub fn install_panic_hook() {
    #[cfg(target_arch = "wasm32")]
    {
        static ONCE: std::sync::Once = std::sync::Once::new();
        ONCE.call_once(|| {
            std::panic::set_hook(Box::new(|info| {
                crate::host::log(crate::types::Level::Error, &format!("plugin panicked: {info}"));
            }));
        });
    }
}

#[cfg(target_arch = "wasm32")]
#[path = "rt/wasm.rs"]
pub mod wasm;
