//! Rate-limiter plugins: the [`RateLimiter`] adapter, validation (init + a smoke
//! `check`) and the warm-instance caller the adapter asks for each request. Counters live
//! in the host (`host.counter-add`, the gateway's shared counters), so every worker
//! thread's instance sees the same counts, and with `gateway.redis` so does every unit.
//!
//! The adapter applies the plugin's decision and the built-in rules together; the
//! strictest wins:
//!
//! 1. The plugin decides first. `deny` answers 429 at once; the built-in rules and quota
//!    are not consulted, so a request the plugin refuses spends none of them.
//! 2. Otherwise the built-in limiter decides. A refusal of it (429, 403 quota, 503) is
//!    the answer; the plugin has counted that request (a plugin counts in `check` and
//!    cannot know what came after).
//! 3. Both admitted: the `RateLimit-*` headers are those of whichever limit has fewer
//!    requests left.
//!
//! An absent or disabled plugin, a refused config, and every fault (trap, deadline,
//! memory cap, a broken `keys` contract) leave the request to the built-in alone.

use std::cell::RefCell;
use std::sync::Arc;
use std::time::{Duration, Instant};

use wasmtime::Store;

use super::bindings::rate_limiter::{RateLimiter as World, RateLimiterPre};
use super::bindings::types::{LimitRequest, LimitState, LimitVerdict};
use super::engine::{Owner, StoreData};
use super::instance::{Fault, WarmMap, call_plugin, guarded, on_warm, refused, smoke_failed, start_keyed};
use super::keys::{self, KeyInput, KeySource};
use super::loader::{RejectReason, Rejection};
use super::registry::{Generation, Host, PluginUse};
use crate::ratelimit::{self, Decision, RateHeaders, RateLimiter, SharedCounters};

/// A rate-limiter plugin combined with the built-in limiter of the version (its
/// `limits:` and `quota:`), which is also its fallback.
pub struct PluginRateLimiter {
    plugin: PluginLimiter,
    builtin: Arc<dyn RateLimiter>,
    /// The rule name of the plugin's refusals (the plugin's name).
    rule: Arc<str>,
}

impl std::fmt::Debug for PluginRateLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginRateLimiter")
            .field("plugin", &self.rule)
            .field("builtin", &self.builtin.name())
            .finish()
    }
}

impl PluginRateLimiter {
    /// Combines the plugin of `use_` with `builtin`.
    pub fn new(use_: Arc<PluginUse>, builtin: Arc<dyn RateLimiter>) -> Self {
        let rule = use_.slot.name.as_str().into();
        Self {
            plugin: PluginLimiter::new(use_),
            builtin,
            rule,
        }
    }
}

impl RateLimiter for PluginRateLimiter {
    fn name(&self) -> &str {
        &self.rule
    }

    fn check(&self, req: &ratelimit::LimitRequest<'_>) -> Decision {
        let input = KeyInput {
            method: req.method,
            uri: req.uri,
            headers: req.headers,
            remote: req.remote,
        };
        combine(&self.rule, self.plugin.check(&input), || self.builtin.check(req))
    }

    fn counters(&self) -> Option<Arc<SharedCounters>> {
        self.builtin.counters()
    }
}

/// The combined decision: the plugin's verdict (`None`: no usable plugin or a fault)
/// and, unless the plugin refused, the built-in's.
pub fn combine(rule: &Arc<str>, plugin: Option<LimitVerdict>, builtin: impl FnOnce() -> Decision) -> Decision {
    match plugin {
        Some(LimitVerdict::Deny(s)) => {
            let reset = Duration::from_millis(u64::from(s.reset_ms));
            Decision::Limited {
                rule: rule.clone(),
                retry_after: reset,
                headers: RateHeaders {
                    limit: u64::from(s.limit),
                    remaining: 0,
                    reset,
                },
            }
        }
        Some(LimitVerdict::Allow(state)) => match builtin() {
            Decision::Allow { headers } => Decision::Allow {
                headers: tighter(headers, state.map(rate_headers)),
            },
            refused => refused,
        },
        None => builtin(),
    }
}

fn rate_headers(s: LimitState) -> RateHeaders {
    RateHeaders {
        limit: u64::from(s.limit),
        remaining: u64::from(s.remaining),
        reset: Duration::from_millis(u64::from(s.reset_ms)),
    }
}

/// The headers of the limit with fewer requests left (the built-in's on a tie).
fn tighter(builtin: Option<RateHeaders>, plugin: Option<RateHeaders>) -> Option<RateHeaders> {
    match (builtin, plugin) {
        (Some(b), Some(p)) if p.remaining < b.remaining => Some(p),
        (Some(b), _) => Some(b),
        (None, p) => p,
    }
}

struct Instance {
    store: Store<StoreData>,
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

    /// The plugin's verdict for one request; a fault is counted and answers `None`.
    pub fn check(&self, input: &KeyInput<'_>) -> Option<LimitVerdict> {
        let use_ = &self.use_;
        call_plugin(
            use_,
            |pres| pres.rate_limit.as_ref(),
            |generation, pre| {
                let make = || fresh(&use_.host, pre, use_.owner(generation), &use_.config);
                on_warm(&WARM, use_, generation, make, |inst| {
                    inst.request.request_id = fastrand::u64(..);
                    inst.request.keys.clear();
                    inst.request
                        .keys
                        .extend(inst.keys.iter().map(|k| keys::resolve(k, input)));
                    let started = Instant::now();
                    let api = inst.world.gatehouse_plugin_rate_limit();
                    let verdict = guarded(&mut inst.store, use_.host.limits.call_deadline, "check", |s| {
                        api.call_check(s, &inst.request)
                    })?;
                    generation.stats.call(started.elapsed());
                    Ok(verdict)
                })
            },
        )
    }
}

fn fresh(host: &Host, pre: &RateLimiterPre<StoreData>, owner: Owner, config: &str) -> Result<Instance, Fault> {
    let (store, world, keys) = start_keyed(
        host,
        owner,
        |s| pre.instantiate(s),
        |w: &World, s| w.gatehouse_plugin_rate_limit().call_init(s, config),
        |w: &World, s| w.gatehouse_plugin_rate_limit().call_keys(s),
    )?;
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

/// Validation: `init` accepts `config` and `check` answers in time, with every key
/// absent and with every key present.
pub(super) fn validate(host: &Host, generation: &Generation, owner: Owner, config: &str) -> Result<(), Rejection> {
    let Some(pre) = generation.pres.rate_limit.as_ref() else {
        return Err(Rejection::new(RejectReason::WrongWorld, "not a rate limiter"));
    };
    let mut inst = fresh(host, pre, owner, config).map_err(refused)?;
    let api = inst.world.gatehouse_plugin_rate_limit();
    // Every key absent, then every key present (a plugin that fails only when a header
    // is there must fail here, not under traffic).
    for value in [0, keys::hash(b"smoke")] {
        inst.request.keys = vec![value; inst.keys.len()];
        guarded(&mut inst.store, host.limits.call_deadline, "check", |s| {
            api.call_check(s, &inst.request)
        })
        .map_err(smoke_failed)?;
    }
    Ok(())
}
