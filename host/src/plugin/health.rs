//! Health-evaluator plugins: the [`HealthEvaluator`] adapter, validation (init + a smoke
//! `evaluate`) and the caller the adapter uses for each observation. The plugin only
//! classifies; the host keeps counters, thresholds and node states. A `builtin` verdict,
//! an absent or disabled plugin, and any fault (trap, deadline, memory cap, a fresh
//! instance that fails to start) mean the built-in evaluator the adapter carries
//! classifies that observation.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use wasmtime::Store;

use super::bindings::health_evaluator::{HealthEvaluator as World, HealthEvaluatorPre};
use super::bindings::types::{FailureKind as WitKind, HealthVerdict, Observation, ObservationSource, Observed};
use super::engine::{Owner, StoreData};
use super::instance::{Fault, call_plugin, guarded, refused, smoke_failed, start};
use super::keys;
use super::loader::{RejectReason, Rejection};
use super::registry::{Generation, Host, PluginUse};
use crate::health::{self, FailureKind, HealthEvaluator, NodeInfo, Source, Verdict};

/// A health-evaluator plugin with the built-in evaluator (the version's `checks` lists)
/// as its fallback.
pub struct PluginEvaluator {
    plugin: PluginHealth,
    builtin: Arc<dyn HealthEvaluator>,
}

impl std::fmt::Debug for PluginEvaluator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginEvaluator")
            .field("plugin", &self.plugin.use_.slot.name)
            .field("builtin", &self.builtin.name())
            .finish()
    }
}

impl PluginEvaluator {
    /// Wraps `builtin` with the plugin of `use_`.
    pub fn new(use_: Arc<PluginUse>, builtin: Arc<dyn HealthEvaluator>) -> Self {
        Self {
            plugin: PluginHealth::new(use_),
            builtin,
        }
    }
}

impl HealthEvaluator for PluginEvaluator {
    fn name(&self) -> &str {
        &self.plugin.use_.slot.name
    }

    fn evaluate(&self, node: &NodeInfo<'_>, obs: &health::Observation) -> Verdict {
        self.plugin
            .evaluate(&observation(node, obs))
            .and_then(verdict)
            .unwrap_or_else(|| self.builtin.evaluate(node, obs))
    }
}

/// What the plugin sees of an observation: the node as `key_hash("host:port")`, and the
/// latency in microseconds (saturating at about 71 minutes).
pub fn observation(node: &NodeInfo<'_>, obs: &health::Observation) -> Observation {
    Observation {
        node: keys::hash(node.key.authority.as_bytes()),
        source: match obs.source {
            Source::Active => ObservationSource::Probe,
            Source::Passive => ObservationSource::Traffic,
        },
        observed: match obs.observed {
            health::Observed::Status(s) => Observed::Status(s),
            health::Observed::Connected => Observed::Connected,
            health::Observed::ConnectFailure => Observed::ConnectFailure,
            health::Observed::Timeout => Observed::Timeout,
            health::Observed::Reset => Observed::Reset,
            // The plugin ABI knows HTTP statuses: a gRPC code goes as its equivalent.
            health::Observed::Grpc(code) => Observed::Status(crate::outcome::grpc_http_status(code)),
        },
        latency_us: u32::try_from(obs.latency.as_micros()).unwrap_or(u32::MAX),
    }
}

/// The host's verdict for a plugin's; `None` for `builtin` (the built-in classifies).
pub fn verdict(v: HealthVerdict) -> Option<Verdict> {
    Some(match v {
        HealthVerdict::Success => Verdict::Success,
        HealthVerdict::Failure(WitKind::Http) => Verdict::Failure(FailureKind::Http),
        HealthVerdict::Failure(WitKind::Tcp) => Verdict::Failure(FailureKind::Tcp),
        HealthVerdict::Failure(WitKind::Timeout) => Verdict::Failure(FailureKind::Timeout),
        HealthVerdict::Ignore => Verdict::Ignore,
        HealthVerdict::Builtin => return None,
    })
}

struct Instance {
    generation: u64,
    store: Store<StoreData>,
    world: World,
}

/// Evaluates observations with a health-evaluator plugin. One instance serves every
/// observation of a use (behind a mutex), so a plugin that keeps per-node history sees
/// all of it; a fault is counted, drops the instance and answers `None` (classify with
/// the built-in).
pub struct PluginHealth {
    use_: Arc<PluginUse>,
    inst: Mutex<Option<Instance>>,
}

impl std::fmt::Debug for PluginHealth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginHealth")
            .field("plugin", &self.use_.slot.name)
            .finish_non_exhaustive()
    }
}

impl PluginHealth {
    /// An evaluator for `use_`.
    pub fn new(use_: Arc<PluginUse>) -> Self {
        Self {
            use_,
            inst: Mutex::new(None),
        }
    }

    /// The plugin's verdict on one observation; `None` when there is no usable plugin
    /// or the call failed.
    pub fn evaluate(&self, observation: &Observation) -> Option<HealthVerdict> {
        let use_ = &self.use_;
        call_plugin(
            use_,
            |pres| pres.health.as_ref(),
            |generation, pre| {
                let mut slot = self.inst.lock().unwrap_or_else(|p| p.into_inner());
                if slot.as_ref().is_none_or(|i| i.generation != generation.id) {
                    // Dropped first, so a failed start leaves no stale instance behind.
                    *slot = None;
                    *slot = Some(fresh(
                        &use_.host,
                        generation.id,
                        pre,
                        use_.owner(generation),
                        &use_.config,
                    )?);
                    generation.stats.instantiated();
                }
                let Some(inst) = slot.as_mut() else { return Ok(None) };
                let started = Instant::now();
                let api = inst.world.gatehouse_plugin_health();
                let result = guarded(&mut inst.store, use_.host.limits.call_deadline, "evaluate", |s| {
                    api.call_evaluate(s, *observation)
                });
                match &result {
                    Err(_) => *slot = None,
                    Ok(v) => {
                        generation.stats.call(started.elapsed());
                        if *v == HealthVerdict::Builtin {
                            generation.stats.decline();
                        }
                    }
                }
                result.map(Some)
            },
        )
    }
}

fn fresh(
    host: &Host,
    generation: u64,
    pre: &HealthEvaluatorPre<StoreData>,
    owner: Owner,
    config: &str,
) -> Result<Instance, Fault> {
    let (store, world) = start(
        host,
        owner,
        |s| pre.instantiate(s),
        |w: &World, s| w.gatehouse_plugin_health().call_init(s, config),
    )?;
    Ok(Instance {
        generation,
        store,
        world,
    })
}

/// Validation: `init` accepts `config` and `evaluate` answers a fast 200 in time.
pub(super) fn validate(host: &Host, generation: &Generation, owner: Owner, config: &str) -> Result<(), Rejection> {
    let Some(pre) = generation.pres.health.as_ref() else {
        return Err(Rejection::new(RejectReason::WrongWorld, "not a health evaluator"));
    };
    let mut inst = fresh(host, generation.id, pre, owner, config).map_err(refused)?;
    let observation = Observation {
        node: 0,
        source: ObservationSource::Traffic,
        observed: Observed::Status(200),
        latency_us: 1000,
    };
    let api = inst.world.gatehouse_plugin_health();
    guarded(&mut inst.store, host.limits.call_deadline, "evaluate", |s| {
        api.call_evaluate(s, observation)
    })
    .map(|_| ())
    .map_err(smoke_failed)
}
