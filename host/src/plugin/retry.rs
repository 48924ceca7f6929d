//! The retry-policy adapter: a [`RetryPolicy`] that asks a Wasm plugin and falls back to
//! the built-in policy it carries. Retry decisions are rare (only after a failed try), so
//! every decision runs on a fresh instance: no state can leak between requests, and a
//! failure never poisons anything that outlives the call.
//!
//! The plugin only decides "retry, after how long" or "stop"; the pipeline keeps the
//! safety rules (idempotency, budget, deadline, a node not yet tried).

use std::sync::Arc;
use std::time::{Duration, Instant};

use wasmtime::Store;

use super::bindings::retry_policy::{RetryPolicy as World, RetryPolicyPre};
use super::bindings::types;
use super::engine::{Owner, StoreData};
use super::instance::{Fault, call_plugin, guarded, refused, smoke_failed, start};
use super::loader::{RejectReason, Rejection};
use super::registry::{Generation, Host, PluginUse};
use crate::outcome::Outcome;
use crate::retry::{RetryContext, RetryDecision, RetryPolicy};

/// A retry-policy plugin with the built-in policy as its fallback.
pub struct PluginRetry {
    use_: Arc<PluginUse>,
    builtin: Arc<dyn RetryPolicy>,
}

impl std::fmt::Debug for PluginRetry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginRetry")
            .field("plugin", &self.use_.slot.name)
            .finish_non_exhaustive()
    }
}

impl PluginRetry {
    /// Wraps `builtin` with the plugin of `use_`.
    pub fn new(use_: Arc<PluginUse>, builtin: Arc<dyn RetryPolicy>) -> Self {
        Self { use_, builtin }
    }

    fn plugin_decide(&self, ctx: &RetryContext<'_>) -> Option<RetryDecision> {
        let use_ = &self.use_;
        call_plugin(
            use_,
            |pres| pres.retry.as_ref(),
            |generation, pre| {
                let request = request(ctx);
                let (mut store, world) = fresh(&use_.host, pre, use_.owner(generation), &use_.config)?;
                generation.stats.instantiated();
                let started = Instant::now();
                let api = world.gatehouse_plugin_retry();
                let d = guarded(&mut store, use_.host.limits.cold_deadline, "decide", |s| {
                    api.call_decide(s, &request)
                })?;
                generation.stats.call(started.elapsed());
                Ok(Some(match d {
                    types::RetryDecision::Stop => RetryDecision::Stop,
                    types::RetryDecision::Retry(ms) => RetryDecision::Retry {
                        backoff: Duration::from_millis(u64::from(ms)),
                    },
                }))
            },
        )
    }
}

impl RetryPolicy for PluginRetry {
    fn name(&self) -> &str {
        &self.use_.slot.name
    }

    fn decide(&self, ctx: &RetryContext<'_>) -> RetryDecision {
        // Successful tries (a response below 400) are not the plugin's business: keeping
        // them away keeps the plugin off the path of every healthy request.
        if matches!(ctx.outcome, Outcome::Status(s) if s < 400) {
            return self.builtin.decide(ctx);
        }
        self.plugin_decide(ctx).unwrap_or_else(|| self.builtin.decide(ctx))
    }
}

fn millis(d: Duration) -> u32 {
    d.as_millis().min(u128::from(u32::MAX)) as u32
}

fn request(ctx: &RetryContext<'_>) -> types::RetryRequest {
    types::RetryRequest {
        route: ctx.route.to_string(),
        method: ctx.method.as_str().to_string(),
        tries: ctx.tries,
        outcome: match ctx.outcome {
            Outcome::Status(s) => types::Outcome::Status(s),
            Outcome::ConnectFailure => types::Outcome::ConnectFailure,
            Outcome::Timeout => types::Outcome::Timeout,
            Outcome::Reset => types::Outcome::Reset,
            // The plugin ABI knows HTTP statuses: a gRPC code goes as its equivalent.
            Outcome::Grpc(code) => types::Outcome::Status(crate::outcome::grpc_http_status(code)),
        },
        retry_after_ms: ctx.retry_after.map(millis),
        elapsed_ms: millis(ctx.elapsed),
    }
}

/// A fresh, initialised instance.
fn fresh(
    host: &Host,
    pre: &RetryPolicyPre<StoreData>,
    owner: Owner,
    config: &str,
) -> Result<(Store<StoreData>, World), Fault> {
    start(
        host,
        owner,
        |s| pre.instantiate(s),
        |w: &World, s| w.gatehouse_plugin_retry().call_init(s, config),
    )
}

/// Validation: `init` accepts `config` and `decide` answers a 503 in time.
pub(super) fn validate(host: &Host, generation: &Generation, owner: Owner, config: &str) -> Result<(), Rejection> {
    let Some(pre) = generation.pres.retry.as_ref() else {
        return Err(Rejection::new(RejectReason::WrongWorld, "not a retry policy"));
    };
    let (mut store, world) = fresh(host, pre, owner, config).map_err(refused)?;
    let request = types::RetryRequest {
        route: "smoke".into(),
        method: "GET".into(),
        tries: 1,
        outcome: types::Outcome::Status(503),
        retry_after_ms: None,
        elapsed_ms: 0,
    };
    guarded(&mut store, host.limits.cold_deadline, "decide", |s| {
        world.gatehouse_plugin_retry().call_decide(s, &request)
    })
    .map(|_| ())
    .map_err(smoke_failed)
}
