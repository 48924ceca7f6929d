//! Rate-limiter plugins: validation (init + a smoke `check`) and a warm-instance limiter
//! that a `RateLimiter` adapter calls for each request. Counters live in the host
//! (`host.counter-add`), so every worker thread's instance sees the same counts.

use std::cell::RefCell;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use http::request::Parts;
use wasmtime::Store;

use super::bindings::rate_limiter::{RateLimiter as World, RateLimiterPre};
use super::bindings::types::{LimitRequest, LimitVerdict};
use super::engine::{PluginCtx, St};
use super::instance::{Fault, WarmMap, guarded};
use super::keys::{self, KeySource};
use super::loader::{RejectReason, Rejection};
use super::registry::{Generation, Host, PluginUse};
use super::stats::FaultKind;

struct Instance {
    store: Store<St>,
    world: World,
    keys: Vec<KeySource>,
    request: LimitRequest,
}

thread_local! {
    static WARM: RefCell<WarmMap<Instance>> = const { RefCell::new(WarmMap::new()) };
}

/// Asks a rate-limiter plugin about requests. `None` means "no usable plugin or the call
/// failed": the caller applies its built-in limits.
pub struct PluginLimiter {
    use_: Arc<PluginUse>,
}

impl std::fmt::Debug for PluginLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginLimiter")
            .field("plugin", &self.use_.slot.name)
            .finish_non_exhaustive()
    }
}

impl PluginLimiter {
    /// A limiter for `use_`.
    pub fn new(use_: Arc<PluginUse>) -> Self {
        Self { use_ }
    }

    /// The plugin's name.
    pub fn name(&self) -> &str {
        &self.use_.slot.name
    }

    /// The plugin's verdict for one request.
    pub fn check(&self, parts: &Parts, remote: SocketAddr) -> Option<LimitVerdict> {
        let guard = self.use_.slot.current();
        let generation = guard.as_ref()?;
        let pre = generation.pres.rate_limit.as_ref()?;
        if !self.use_.usable(generation) {
            return None;
        }
        let outcome = WARM.try_with(|warm| {
            let Ok(mut warm) = warm.try_borrow_mut() else {
                return Ok(None);
            };
            let i = match warm.find(self.use_.id, generation.id) {
                Some(i) => i,
                None => {
                    let inst = fresh(&self.use_.host, pre, generation.ctx.clone(), &self.use_.config)?;
                    generation.stats.instantiated();
                    warm.insert(&self.use_, generation.id, inst)
                }
            };
            let entry = warm.get(i);
            entry.calls += 1;
            let recycle = entry.calls >= self.use_.host.limits.recycle_after;
            let inst = &mut entry.inst;
            inst.request.request_id = fastrand::u64(..);
            inst.request.keys.clear();
            inst.request
                .keys
                .extend(inst.keys.iter().map(|k| keys::resolve(k, parts, remote)));
            let started = Instant::now();
            let api = inst.world.gatehouse_plugin_rate_limit();
            let result = guarded(&mut inst.store, self.use_.host.limits.call_deadline, "check", |s| {
                api.call_check(s, &inst.request)
            });
            if result.is_ok() {
                generation.stats.call(started.elapsed());
            }
            if result.is_err() || recycle {
                warm.remove(i);
            }
            result.map(Some)
        });
        match outcome {
            Ok(Ok(v)) => v,
            Ok(Err(f)) => {
                self.use_.fault(generation, f);
                None
            }
            Err(_) => None,
        }
    }
}

fn fresh(host: &Host, pre: &RateLimiterPre<St>, ctx: Arc<PluginCtx>, config: &str) -> Result<Instance, Fault> {
    let limits = &host.limits;
    let mut store = host.engine.store(ctx, limits.memory, limits.init_deadline);
    let init_fault = |f: Fault| Fault::new(FaultKind::Init, f.message);
    let world = guarded(&mut store, limits.init_deadline, "instantiate", |s| pre.instantiate(s)).map_err(init_fault)?;
    let api = world.gatehouse_plugin_rate_limit();
    guarded(&mut store, limits.init_deadline, "init", |s| api.call_init(s, config))
        .map_err(init_fault)?
        .map_err(|e| Fault::new(FaultKind::Init, format!("`init` refused the config: {e}")))?;
    let wanted = guarded(&mut store, limits.init_deadline, "keys", |s| api.call_keys(s))?;
    let keys = keys::compile(wanted).map_err(|e| Fault::new(FaultKind::Contract, format!("`keys` {e}")))?;
    Ok(Instance {
        store,
        world,
        keys,
        request: LimitRequest {
            request_id: 0,
            keys: Vec::new(),
        },
    })
}

/// Validation: `init` accepts `config` and `check` answers a request without keys in time.
pub(super) fn validate(
    host: &Host,
    generation: &Generation,
    ctx: Arc<PluginCtx>,
    config: &str,
) -> Result<(), Rejection> {
    let Some(pre) = generation.pres.rate_limit.as_ref() else {
        return Err(Rejection::new(RejectReason::WrongWorld, "not a rate limiter"));
    };
    let mut inst = fresh(host, pre, ctx, config).map_err(|f| match f.kind {
        FaultKind::Init => Rejection::new(RejectReason::Init, f.message),
        _ => Rejection::new(RejectReason::Smoke, f.to_string()),
    })?;
    inst.request.keys = vec![0; inst.keys.len()];
    let api = inst.world.gatehouse_plugin_rate_limit();
    guarded(&mut inst.store, host.limits.call_deadline, "check", |s| {
        api.call_check(s, &inst.request)
    })
    .map(|_| ())
    .map_err(|f| Rejection::new(RejectReason::Smoke, format!("smoke call: {f}")))
}
