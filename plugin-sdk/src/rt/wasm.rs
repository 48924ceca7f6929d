//! Component bindings (wit-bindgen) and the conversions between them and the SDK's
//! plain types. Compiled only for `wasm32`.

#![allow(missing_docs)]

use std::cell::RefCell;
use std::thread::LocalKey;

use super::{BalancerRt, PluginRt};
use crate::types as sdk;
use crate::{Balancer, HealthEvaluator, RateLimiter, RetryPolicy};

/// One bindings module per world; the shared `types` and `host` interfaces are generated
/// once (in `balancer`) and reused by the others.
pub mod bindings {
    pub mod balancer {
        wit_bindgen::generate!({
            world: "balancer",
            path: "../wit",
            pub_export_macro: true,
            export_macro_name: "__export_balancer",
            default_bindings_module: "gatehouse_plugin_sdk::__rt::wasm::bindings::balancer",
        });
    }
    pub mod health_evaluator {
        wit_bindgen::generate!({
            world: "health-evaluator",
            path: "../wit",
            pub_export_macro: true,
            export_macro_name: "__export_health_evaluator",
            default_bindings_module: "gatehouse_plugin_sdk::__rt::wasm::bindings::health_evaluator",
            with: {
                "gatehouse:plugin/types@0.1.0": super::balancer::gatehouse::plugin::types,
                "gatehouse:plugin/host@0.1.0": super::balancer::gatehouse::plugin::host,
            },
        });
    }
    pub mod retry_policy {
        wit_bindgen::generate!({
            world: "retry-policy",
            path: "../wit",
            pub_export_macro: true,
            export_macro_name: "__export_retry_policy",
            default_bindings_module: "gatehouse_plugin_sdk::__rt::wasm::bindings::retry_policy",
            with: {
                "gatehouse:plugin/types@0.1.0": super::balancer::gatehouse::plugin::types,
                "gatehouse:plugin/host@0.1.0": super::balancer::gatehouse::plugin::host,
            },
        });
    }
    pub mod rate_limiter {
        wit_bindgen::generate!({
            world: "rate-limiter",
            path: "../wit",
            pub_export_macro: true,
            export_macro_name: "__export_rate_limiter",
            default_bindings_module: "gatehouse_plugin_sdk::__rt::wasm::bindings::rate_limiter",
            with: {
                "gatehouse:plugin/types@0.1.0": super::balancer::gatehouse::plugin::types,
                "gatehouse:plugin/host@0.1.0": super::balancer::gatehouse::plugin::host,
            },
        });
    }
}

pub use bindings::balancer::gatehouse::plugin::host;
use bindings::balancer::gatehouse::plugin::types as wit;

pub use bindings::balancer::exports::gatehouse::plugin::balance;
pub use bindings::health_evaluator::exports::gatehouse::plugin::health;
pub use bindings::rate_limiter::exports::gatehouse::plugin::rate_limit;
pub use bindings::retry_policy::exports::gatehouse::plugin::retry;

impl From<sdk::Level> for wit::Level {
    fn from(l: sdk::Level) -> Self {
        match l {
            sdk::Level::Trace => wit::Level::Trace,
            sdk::Level::Debug => wit::Level::Debug,
            sdk::Level::Info => wit::Level::Info,
            sdk::Level::Warn => wit::Level::Warn,
            sdk::Level::Error => wit::Level::Error,
        }
    }
}

impl From<sdk::RequestKey> for wit::RequestKey {
    fn from(k: sdk::RequestKey) -> Self {
        match k {
            sdk::RequestKey::Header(h) => wit::RequestKey::Header(h),
            sdk::RequestKey::Query(q) => wit::RequestKey::Query(q),
            sdk::RequestKey::Cookie(c) => wit::RequestKey::Cookie(c),
            sdk::RequestKey::ClientIp => wit::RequestKey::ClientIp,
            sdk::RequestKey::Path => wit::RequestKey::Path,
            sdk::RequestKey::Method => wit::RequestKey::Method,
        }
    }
}

fn node(n: wit::Node) -> sdk::Node {
    sdk::Node {
        id: n.id,
        weight: n.weight,
        priority: n.priority,
        zone: n.zone,
        region: n.region,
        tags: n.tags,
    }
}

fn outcome(o: wit::Outcome) -> sdk::Outcome {
    match o {
        wit::Outcome::Status(s) => sdk::Outcome::Status(s),
        wit::Outcome::ConnectFailure => sdk::Outcome::ConnectFailure,
        wit::Outcome::Timeout => sdk::Outcome::Timeout,
        wit::Outcome::Reset => sdk::Outcome::Reset,
    }
}

fn limit_state(s: sdk::LimitState) -> wit::LimitState {
    wit::LimitState {
        limit: s.limit,
        remaining: s.remaining,
        reset_ms: s.reset_ms,
    }
}

/// The per-instance state of a plugin, as declared by `export_plugin!`.
pub type Slot<R> = LocalKey<RefCell<R>>;

pub fn balance_init<T: Balancer>(rt: &'static Slot<BalancerRt<T>>, config: String) -> Result<(), String> {
    rt.with(|rt| rt.borrow_mut().init(&config))
}

pub fn balance_keys<T: Balancer>(rt: &'static Slot<BalancerRt<T>>) -> Vec<wit::RequestKey> {
    rt.with(|rt| rt.borrow().keys()).into_iter().map(Into::into).collect()
}

pub fn balance_update<T: Balancer>(rt: &'static Slot<BalancerRt<T>>, nodes: Vec<wit::Node>) {
    let nodes = nodes.into_iter().map(node).collect();
    rt.with(|rt| rt.borrow_mut().update(nodes));
}

pub fn balance_pick<T: Balancer>(rt: &'static Slot<BalancerRt<T>>, r: wit::PickRequest) -> Option<u32> {
    let req = sdk::PickRequest {
        request_id: r.request_id,
        attempt: r.attempt,
        excluded: r.excluded,
        keys: r.keys,
    };
    rt.with(|rt| rt.borrow_mut().pick(&req))
}

pub fn health_init<T: HealthEvaluator>(rt: &'static Slot<PluginRt<T>>, config: String) -> Result<(), String> {
    rt.with(|rt| rt.borrow_mut().init_health(&config))
}

pub fn health_evaluate<T: HealthEvaluator>(rt: &'static Slot<PluginRt<T>>, o: wit::Observation) -> wit::HealthVerdict {
    let obs = sdk::Observation {
        node: o.node,
        source: match o.source {
            wit::ObservationSource::Probe => sdk::ObservationSource::Probe,
            wit::ObservationSource::Traffic => sdk::ObservationSource::Traffic,
        },
        observed: match o.observed {
            wit::Observed::Status(s) => sdk::Observed::Status(s),
            wit::Observed::Connected => sdk::Observed::Connected,
            wit::Observed::ConnectFailure => sdk::Observed::ConnectFailure,
            wit::Observed::Timeout => sdk::Observed::Timeout,
            wit::Observed::Reset => sdk::Observed::Reset,
        },
        latency_us: o.latency_us,
    };
    let kind = |k| match k {
        sdk::FailureKind::Http => wit::FailureKind::Http,
        sdk::FailureKind::Tcp => wit::FailureKind::Tcp,
        sdk::FailureKind::Timeout => wit::FailureKind::Timeout,
    };
    match rt.with(|rt| rt.borrow_mut().evaluate(&obs)) {
        sdk::HealthVerdict::Success => wit::HealthVerdict::Success,
        sdk::HealthVerdict::Failure(k) => wit::HealthVerdict::Failure(kind(k)),
        sdk::HealthVerdict::Ignore => wit::HealthVerdict::Ignore,
        sdk::HealthVerdict::Builtin => wit::HealthVerdict::Builtin,
    }
}

pub fn retry_init<T: RetryPolicy>(rt: &'static Slot<PluginRt<T>>, config: String) -> Result<(), String> {
    rt.with(|rt| rt.borrow_mut().init_retry(&config))
}

pub fn retry_decide<T: RetryPolicy>(rt: &'static Slot<PluginRt<T>>, r: wit::RetryRequest) -> wit::RetryDecision {
    let req = sdk::RetryRequest {
        route: r.route,
        method: r.method,
        tries: r.tries,
        outcome: outcome(r.outcome),
        retry_after_ms: r.retry_after_ms,
        elapsed_ms: r.elapsed_ms,
    };
    match rt.with(|rt| rt.borrow_mut().decide(&req)) {
        sdk::RetryDecision::Stop => wit::RetryDecision::Stop,
        sdk::RetryDecision::Retry { backoff_ms } => wit::RetryDecision::Retry(backoff_ms),
    }
}

pub fn limit_init<T: RateLimiter>(rt: &'static Slot<PluginRt<T>>, config: String) -> Result<(), String> {
    rt.with(|rt| rt.borrow_mut().init_limiter(&config))
}

pub fn limit_keys<T: RateLimiter>(rt: &'static Slot<PluginRt<T>>) -> Vec<wit::RequestKey> {
    rt.with(|rt| rt.borrow().limiter_keys())
        .into_iter()
        .map(Into::into)
        .collect()
}

pub fn limit_check<T: RateLimiter>(rt: &'static Slot<PluginRt<T>>, r: wit::LimitRequest) -> wit::LimitVerdict {
    let req = sdk::LimitRequest {
        request_id: r.request_id,
        keys: r.keys,
    };
    match rt.with(|rt| rt.borrow_mut().check(&req)) {
        sdk::LimitVerdict::Allow(s) => wit::LimitVerdict::Allow(s.map(limit_state)),
        sdk::LimitVerdict::Deny(s) => wit::LimitVerdict::Deny(limit_state(s)),
    }
}
