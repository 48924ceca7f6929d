//! The balancer adapter: a [`Balancer`] that asks a Wasm plugin and falls back to the
//! built-in balancer it carries whenever the plugin is absent, disabled, declines, or
//! fails.
//!
//! Each worker thread keeps a warm instance per use; the node set is handed over with
//! `update` only when the candidate set differs from the last one delivered to that
//! instance, so a pick passes only a few numbers.

use std::cell::RefCell;
use std::sync::Arc;
use std::time::{Duration, Instant};

use wasmtime::Store;

use super::bindings::balancer::{Balancer as World, BalancerPre};
use super::bindings::types::{Node, PickRequest};
use super::engine::{Owner, StoreData};
use super::instance::{Asked, Fault, WarmMap, ask_plugin, guarded, on_warm, refused, smoke_failed, start_keyed};
use super::keys::{self, KeySource};
use super::loader::{RejectReason, Rejection};
use super::registry::{Generation, Host, PluginUse};
use super::stats::FaultKind;
use crate::balance::{Balancer, Candidate, PickContext};
use crate::health::EndpointHealth;
use crate::outcome::Outcome;

/// A balancer plugin with the built-in balancer as its fallback.
pub struct PluginBalancer {
    use_: Arc<PluginUse>,
    builtin: Arc<dyn Balancer>,
    /// The endpoints' health cells, for 0.2's `host.stats` (empty: all healthy).
    health: Vec<Arc<EndpointHealth>>,
}

impl std::fmt::Debug for PluginBalancer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginBalancer")
            .field("plugin", &self.use_.slot.name)
            .field("builtin", &self.builtin.name())
            .finish()
    }
}

/// A warm balancer instance.
struct Instance {
    store: Store<StoreData>,
    world: World,
    keys: Vec<KeySource>,
    /// The candidate set the plugin last received (`None`: nothing yet).
    delivered: Option<Vec<Candidate>>,
    request: PickRequest,
}

thread_local! {
    static WARM: RefCell<WarmMap<Instance>> = const { RefCell::new(WarmMap::new()) };
}

impl PluginBalancer {
    /// Wraps `builtin` with the plugin of `use_`.
    pub fn new(use_: Arc<PluginUse>, builtin: Arc<dyn Balancer>) -> Self {
        Self {
            use_,
            builtin,
            health: Vec::new(),
        }
    }

    /// With the endpoints' health cells (indexed like the snapshot's endpoints).
    pub fn with_health(mut self, health: Vec<Arc<EndpointHealth>>) -> Self {
        self.health = health;
        self
    }

    /// The plugin's pick, or why there is none.
    fn plugin_pick(&self, ctx: &PickContext<'_>) -> Asked<usize> {
        let use_ = &self.use_;
        ask_plugin(
            use_,
            |pres| (pres.balancer.is_some() || pres.balancer2.is_some()).then_some(pres),
            |generation, pres| {
                let Some(pre) = pres.balancer.as_ref() else {
                    let pre = pres.balancer2.as_ref().expect("a balancer world");
                    return super::v2::pick_warm(use_, generation, pre, ctx, &self.health);
                };
                let make = || instantiate(&use_.host, pre, use_.owner(generation), &use_.config);
                on_warm(&WARM, use_, generation, make, |inst| {
                    pick(&use_.host, generation, inst, ctx)
                })
                .map(Option::flatten)
            },
        )
    }
}

impl Balancer for PluginBalancer {
    fn name(&self) -> &str {
        &self.use_.slot.name
    }

    fn pick(&self, ctx: &PickContext<'_>) -> Option<usize> {
        self.pick_explained(ctx).0
    }

    fn pick_explained(&self, ctx: &PickContext<'_>) -> (Option<usize>, Option<&'static str>) {
        match self.plugin_pick(ctx) {
            Asked::Answer(idx) => (Some(idx), None),
            other => (self.builtin.pick(ctx), other.why_builtin()),
        }
    }

    fn fallback_name(&self) -> Option<&str> {
        Some(self.builtin.name())
    }

    /// Hands the try to a 0.2 plugin that asked to `observe` (and to the built-in).
    fn observe(&self, idx: usize, outcome: Outcome, latency: Duration) {
        self.builtin.observe(idx, outcome, latency);
        let guard = self.use_.slot.current();
        let Some(generation) = guard.as_ref() else { return };
        if generation.pres.balancer2.is_none() || generation.is_disabled() {
            return;
        }
        if let Err(fault) = super::v2::observe_warm(&self.use_, generation, idx, outcome, latency) {
            self.use_.fault(generation, fault);
        }
    }
}

/// A fresh instance: instantiate, `init(config)`, `keys()`.
fn instantiate(host: &Host, pre: &BalancerPre<StoreData>, owner: Owner, config: &str) -> Result<Instance, Fault> {
    let (store, world, keys) = start_keyed(
        host,
        owner,
        |s| pre.instantiate(s),
        |w: &World, s| w.gatehouse_plugin_balance().call_init(s, config),
        |w: &World, s| w.gatehouse_plugin_balance().call_keys(s),
    )?;
    Ok(Instance {
        store,
        world,
        keys,
        delivered: None,
        request: PickRequest {
            request_id: 0,
            attempt: 1,
            excluded: Vec::new(),
            keys: Vec::new(),
        },
    })
}

/// One pick on a warm instance; `Ok(None)` when the plugin declines.
fn pick(
    host: &Host,
    generation: &Generation,
    inst: &mut Instance,
    ctx: &PickContext<'_>,
) -> Result<Option<usize>, Fault> {
    let deadline = host.limits.call_deadline;
    let api = inst.world.gatehouse_plugin_balance();
    if inst.delivered.as_deref() != Some(&ctx.candidates.list[..]) {
        let nodes: Vec<Node> = ctx
            .candidates
            .list
            .iter()
            .map(|c| {
                let node = &ctx.endpoints[c.idx as usize].node;
                Node {
                    id: c.idx,
                    weight: c.weight,
                    priority: node.priority,
                    zone: node.zone.clone(),
                    region: node.region.clone(),
                    tags: node.tags.clone(),
                }
            })
            .collect();
        guarded(&mut inst.store, deadline, "update", |s| api.call_update(s, &nodes))?;
        inst.delivered = Some(ctx.candidates.list.clone());
    }
    let req = &mut inst.request;
    req.request_id = fastrand::u64(..);
    req.attempt = ctx.excluded.len() as u32 + 1;
    req.excluded.clear();
    req.excluded.extend(tried_candidates(ctx));
    req.keys.clear();
    let input = keys::KeyInput::from_parts(ctx.request.parts, ctx.request.remote);
    req.keys.extend(inst.keys.iter().map(|k| keys::resolve(k, &input)));
    let started = Instant::now();
    let choice = guarded(&mut inst.store, deadline, "pick", |s| api.call_pick(s, &inst.request))?;
    generation.stats.call(started.elapsed());
    checked_choice(choice, ctx)
}

/// A plugin's answer checked against the contract: an offered node not yet tried.
pub(super) fn checked_choice(choice: Option<u32>, ctx: &PickContext<'_>) -> Result<Option<usize>, Fault> {
    let Some(id) = choice else { return Ok(None) };
    let idx = id as usize;
    if !ctx.candidates.contains(idx) {
        return Err(Fault::new(
            FaultKind::Contract,
            format!("`pick` returned node {id}, which was not offered"),
        ));
    }
    if ctx.excluded.contains(idx) {
        return Err(Fault::new(
            FaultKind::Contract,
            format!("`pick` returned node {id}, which this request already tried"),
        ));
    }
    Ok(Some(idx))
}

/// Validation of a new file or config: `init` accepts `config`, then a smoke call
/// (`keys`, `update` with three nodes, `pick` with every key absent and then present)
/// returns in time with valid answers.
pub(super) fn validate(host: &Host, generation: &Generation, owner: Owner, config: &str) -> Result<(), Rejection> {
    let Some(pre) = generation.pres.balancer.as_ref() else {
        return match generation.pres.balancer2.as_ref() {
            Some(pre) => super::v2::validate(host, pre, owner, config),
            None => Err(Rejection::new(RejectReason::WrongWorld, "not a balancer")),
        };
    };
    let mut inst = instantiate(host, pre, owner, config).map_err(refused)?;
    let deadline = host.limits.call_deadline;
    let smoke = |inst: &mut Instance| -> Result<Option<u32>, Fault> {
        let api = inst.world.gatehouse_plugin_balance();
        let nodes: Vec<Node> = (0..3)
            .map(|id| Node {
                id,
                weight: 1,
                priority: 0,
                zone: String::new(),
                region: String::new(),
                tags: Vec::new(),
            })
            .collect();
        guarded(&mut inst.store, deadline, "update", |s| api.call_update(s, &nodes))?;
        // Once with every key absent, once with every key present: a plugin that fails
        // only when a header is there must fail here, not under traffic.
        let mut last = None;
        for value in [0, keys::hash(b"smoke")] {
            let request = PickRequest {
                request_id: 0,
                attempt: 1,
                excluded: Vec::new(),
                keys: vec![value; inst.keys.len()],
            };
            match guarded(&mut inst.store, deadline, "pick", |s| api.call_pick(s, &request))? {
                Some(id) if id >= 3 => return Ok(Some(id)),
                choice => last = choice,
            }
        }
        Ok(last)
    };
    match smoke(&mut inst) {
        Ok(None) => Ok(()),
        Ok(Some(id)) if id < 3 => Ok(()),
        Ok(Some(id)) => Err(Rejection::new(
            RejectReason::Smoke,
            format!("smoke call: `pick` returned node {id}, which was not offered"),
        )),
        Err(f) => Err(smoke_failed(f)),
    }
}

/// Candidates of this pick that earlier tries of the request already used (what a
/// plugin sees as `excluded`).
pub(super) fn tried_candidates<'a>(ctx: &'a PickContext<'_>) -> impl Iterator<Item = u32> + 'a {
    ctx.candidates
        .list
        .iter()
        .map(|c| c.idx)
        .filter(|i| ctx.excluded.contains(*i as usize))
}
