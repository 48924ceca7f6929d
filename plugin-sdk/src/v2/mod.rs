//! Plugin API 0.2 (`gatehouse:plugin@0.2.0`): balancers that see what the gateway sees.
//!
//! The shape is 0.1's — one trait, one macro — with more to look at:
//!
//! - every [`Node`] has one identity across plugin kinds ([`Node::key`], the
//!   [`key_hash`](crate::key_hash) of its `host:port`, which is what a health evaluator
//!   receives as `Observation::node`) and its [`address`](Node::address);
//! - [`stats`] reads the nodes' live statistics (latency EWMA, in-flight, recent
//!   successes and failures, health state) from the gateway when called;
//! - [`update`](Balancer::update) tells where the gateway runs ([`Placement`]);
//! - [`Wants`] opts into request attributes by value and into [`observe`](Balancer::observe),
//!   which receives the outcome and latency of every try.
//!
//! ```ignore
//! use gatehouse_plugin_sdk::v2::{Balancer, Node, PickRequest, stats};
//! use gatehouse_plugin_sdk::{NoConfig, export_plugin};
//!
//! /// Always the node with the lowest latency.
//! struct Fastest;
//!
//! impl Balancer for Fastest {
//!     type Config = NoConfig;
//!     fn new(_: NoConfig) -> Result<Self, String> { Ok(Fastest) }
//!     fn pick(&mut self, nodes: &[Node], req: &PickRequest) -> Option<u32> {
//!         let open: Vec<u32> = nodes.iter().map(|n| n.id).filter(|id| !req.is_excluded(*id)).collect();
//!         stats(&open).into_iter().min_by_key(|s| s.ewma_us).map(|s| s.id)
//!     }
//! }
//!
//! export_plugin!(balancer_v2: Fastest);
//! ```
//!
//! Natively, [`testing::BalancerHarness`] runs the same code with scripted statistics.

#[cfg(not(target_arch = "wasm32"))]
pub mod testing;
#[cfg(target_arch = "wasm32")]
#[doc(hidden)]
pub mod wasm;

use serde::de::DeserializeOwned;

pub use crate::types::{Outcome, RequestKey};

/// Most request keys, and most request attributes, a plugin may ask for.
pub const MAX_WANTS: usize = 16;

/// One node a balancer may choose.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Node {
    /// The id to return from `pick` (unique in the set, stable while the node stays).
    pub id: u32,
    /// The node's identity across plugin kinds and config changes:
    /// `key_hash(address)`.
    pub key: u64,
    /// `host:port`.
    pub address: String,
    /// Effective weight now (slow start and tier share applied), > 0.
    pub weight: u32,
    /// The configured weight.
    pub configured_weight: u32,
    /// How far slow start has ramped the node, 0.0 to 1.0.
    pub slow_start: f32,
    /// Priority from the config (higher is preferred).
    pub priority: i32,
    /// Zone label ("" when unknown).
    pub zone: String,
    /// Region label ("" when unknown).
    pub region: String,
    /// Free-form tags from the config.
    pub tags: Vec<String>,
}

/// Where the gateway runs.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Placement {
    /// The gateway's zone ("" when not set).
    pub zone: String,
    /// The gateway's region ("" when not set).
    pub region: String,
}

/// A node's health as the gateway sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum NodeHealth {
    /// Takes traffic.
    #[default]
    Healthy,
    /// Failed its checks.
    Unhealthy,
    /// Ejected by outlier detection for a while.
    Ejected,
    /// Taking trial requests.
    HalfOpen,
}

/// A node's live statistics, as [`stats`] reads them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct NodeStats {
    /// The node.
    pub id: u32,
    /// Peak-EWMA latency (time to the response head) in microseconds.
    pub ewma_us: u32,
    /// Requests in flight now.
    pub in_flight: u32,
    /// Successes in a row by passive observation.
    pub successes: u32,
    /// Failures since the last success by passive observation.
    pub failures: u32,
    /// Health state.
    pub health: NodeHealth,
}

/// A part of the request delivered by value (costs a copy per pick: ask only for what
/// you match; hashed [`RequestKey`]s are cheaper for equality tests).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequestAttribute {
    /// The method in upper case.
    Method,
    /// The path without the query.
    Path,
    /// A query parameter by name (raw).
    Query(String),
    /// A header by name (case-insensitive, first value).
    Header(String),
    /// A cookie by name.
    Cookie(String),
    /// The client's `ip:port`.
    ClientAddress,
}

/// What a balancer wants of each request.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Wants {
    /// Hashed keys, in [`PickRequest::keys`].
    pub keys: Vec<RequestKey>,
    /// Values, in [`PickRequest::attributes`].
    pub attributes: Vec<RequestAttribute>,
    /// Whether [`Balancer::observe`] is called after each try.
    pub observe: bool,
}

/// One balancing decision.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PickRequest {
    /// Uniformly random per decision.
    pub request_id: u64,
    /// 1 for the first try, 2 for the first retry, ...
    pub attempt: u32,
    /// Node ids this request already tried: never return one of them.
    pub excluded: Vec<u32>,
    /// Hashes of [`Wants::keys`], in order; 0 = absent.
    pub keys: Vec<u64>,
    /// Values of [`Wants::attributes`], in order.
    pub attributes: Vec<Option<String>>,
}

impl PickRequest {
    /// A first try with this request id and these attribute values.
    pub fn new(request_id: u64, attributes: &[Option<&str>]) -> Self {
        Self {
            request_id,
            attempt: 1,
            attributes: attributes.iter().map(|a| a.map(str::to_string)).collect(),
            ..Self::default()
        }
    }

    /// The same request as retry number `attempt - 1`, having tried `excluded`.
    pub fn retrying(mut self, excluded: &[u32]) -> Self {
        self.excluded = excluded.to_vec();
        self.attempt = excluded.len() as u32 + 1;
        self
    }

    /// Whether this request already tried node `id`.
    pub fn is_excluded(&self, id: u32) -> bool {
        self.excluded.contains(&id)
    }

    /// The value of attribute number `i` of [`Wants::attributes`].
    pub fn attribute(&self, i: usize) -> Option<&str> {
        self.attributes.get(i)?.as_deref()
    }
}

/// One try the gateway made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TryReport {
    /// The node.
    pub node: u32,
    /// How it ended.
    pub outcome: Outcome,
    /// Time to the response head (or the failure), in microseconds.
    pub latency_us: u32,
}

/// A 0.2 load balancer.
pub trait Balancer: Sized + 'static {
    /// The plugin's config, parsed from the JSON under `plugins.balancer.config`.
    type Config: DeserializeOwned;
    /// Builds the plugin from its config; an error rejects the config.
    fn new(config: Self::Config) -> Result<Self, String>;
    /// What [`pick`](Self::pick) wants of each request, and whether to observe tries.
    fn wants(&self) -> Wants {
        Wants::default()
    }
    /// The node set changed (or first arrives), with where the gateway runs.
    fn update(&mut self, gateway: &Placement, nodes: &[Node]) {
        let _ = (gateway, nodes);
    }
    /// Picks one of `nodes` not in `request.excluded`, or `None` to let the built-in
    /// balancer decide.
    fn pick(&mut self, nodes: &[Node], request: &PickRequest) -> Option<u32>;
    /// The outcome of one try (only with [`Wants::observe`]).
    fn observe(&mut self, report: &TryReport) {
        let _ = report;
    }
}

/// The live statistics of nodes `ids` (of the last update), in that order; unknown ids
/// are left out. Read from the gateway when called: call it only when a decision uses it.
pub fn stats(ids: &[u32]) -> Vec<NodeStats> {
    #[cfg(target_arch = "wasm32")]
    {
        wasm::stats(ids)
    }
    #[cfg(not(target_arch = "wasm32"))]
    {
        testing::stats(ids)
    }
}

/// State of a 0.2 balancer instance: the plugin, the placement and the node set.
#[doc(hidden)]
pub struct BalancerRt<T> {
    plugin: Option<T>,
    placement: Placement,
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
            placement: Placement {
                zone: String::new(),
                region: String::new(),
            },
            nodes: Vec::new(),
        }
    }

    /// `init`.
    pub fn init(&mut self, config: &str) -> Result<(), String> {
        crate::__rt::install_panic_hook();
        self.plugin = Some(T::new(crate::__rt::parse_config(config)?)?);
        Ok(())
    }

    /// `wants`, checked against the bounds.
    pub fn wants(&self) -> Wants {
        let w = self.plugin().wants();
        assert!(
            w.keys.len() <= MAX_WANTS && w.attributes.len() <= MAX_WANTS,
            "a plugin may ask for at most {MAX_WANTS} request keys and {MAX_WANTS} attributes"
        );
        w
    }

    /// `update`.
    pub fn update(&mut self, placement: Placement, nodes: Vec<Node>) {
        self.placement = placement;
        self.nodes = nodes;
        let plugin = self.plugin.as_mut().unwrap_or_else(|| crate::__rt::not_initialised());
        plugin.update(&self.placement, &self.nodes);
    }

    /// `pick`.
    pub fn pick(&mut self, request: &PickRequest) -> Option<u32> {
        let plugin = self.plugin.as_mut().unwrap_or_else(|| crate::__rt::not_initialised());
        plugin.pick(&self.nodes, request)
    }

    /// `observe`.
    pub fn observe(&mut self, report: &TryReport) {
        self.plugin_mut().observe(report);
    }

    /// The current node set.
    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    /// The plugin.
    pub fn plugin(&self) -> &T {
        self.plugin.as_ref().unwrap_or_else(|| crate::__rt::not_initialised())
    }

    /// The plugin, mutably.
    pub fn plugin_mut(&mut self) -> &mut T {
        self.plugin.as_mut().unwrap_or_else(|| crate::__rt::not_initialised())
    }
}
