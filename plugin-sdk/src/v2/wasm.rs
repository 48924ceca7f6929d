//! Component bindings of `gatehouse:plugin@0.2.0` (wit-bindgen) and the conversions
//! between them and the SDK's 0.2 types. Compiled only for `wasm32`.

#![allow(missing_docs)]

use std::cell::RefCell;
use std::thread::LocalKey;

use super::{Balancer, BalancerRt, NodeHealth, NodeStats, Outcome, RequestAttribute, RequestKey, TryReport};

pub mod bindings {
    wit_bindgen::generate!({
        world: "balancer-v2",
        path: "../wit/v0.2",
        pub_export_macro: true,
        export_macro_name: "__export_balancer_v2",
        default_bindings_module: "gatehouse_plugin_sdk::v2::wasm::bindings",
    });
}

pub use bindings::exports::gatehouse::plugin::balance;
use bindings::gatehouse::plugin::host;
use bindings::gatehouse::plugin::types as wit;

/// The per-instance state, as declared by `export_plugin!(balancer_v2: ..)`.
pub type Slot<T> = LocalKey<RefCell<BalancerRt<T>>>;

pub fn stats(ids: &[u32]) -> Vec<NodeStats> {
    host::stats(ids)
        .into_iter()
        .map(|s| NodeStats {
            id: s.id,
            ewma_us: s.ewma_us,
            in_flight: s.in_flight,
            successes: s.successes,
            failures: s.failures,
            health: match s.health {
                wit::NodeHealth::Healthy => NodeHealth::Healthy,
                wit::NodeHealth::Unhealthy => NodeHealth::Unhealthy,
                wit::NodeHealth::Ejected => NodeHealth::Ejected,
                wit::NodeHealth::HalfOpen => NodeHealth::HalfOpen,
            },
        })
        .collect()
}

fn key(k: RequestKey) -> wit::RequestKey {
    match k {
        RequestKey::Header(h) => wit::RequestKey::Header(h),
        RequestKey::Query(q) => wit::RequestKey::Query(q),
        RequestKey::Cookie(c) => wit::RequestKey::Cookie(c),
        RequestKey::ClientIp => wit::RequestKey::ClientIp,
        RequestKey::Path => wit::RequestKey::Path,
        RequestKey::Method => wit::RequestKey::Method,
    }
}

fn attribute(a: RequestAttribute) -> wit::RequestAttribute {
    match a {
        RequestAttribute::Method => wit::RequestAttribute::Method,
        RequestAttribute::Path => wit::RequestAttribute::Path,
        RequestAttribute::Query(q) => wit::RequestAttribute::Query(q),
        RequestAttribute::Header(h) => wit::RequestAttribute::Header(h),
        RequestAttribute::Cookie(c) => wit::RequestAttribute::Cookie(c),
        RequestAttribute::ClientAddress => wit::RequestAttribute::ClientAddress,
    }
}

pub fn init<T: Balancer>(rt: &'static Slot<T>, config: String) -> Result<(), String> {
    rt.with(|rt| rt.borrow_mut().init(&config))
}

pub fn wants<T: Balancer>(rt: &'static Slot<T>) -> wit::Interests {
    let w = rt.with(|rt| rt.borrow().wants());
    wit::Interests {
        keys: w.keys.into_iter().map(key).collect(),
        attributes: w.attributes.into_iter().map(attribute).collect(),
        observe: w.observe,
    }
}

pub fn update<T: Balancer>(rt: &'static Slot<T>, gateway: wit::Placement, nodes: Vec<wit::Node>) {
    let placement = super::Placement {
        zone: gateway.zone,
        region: gateway.region,
    };
    let nodes = nodes
        .into_iter()
        .map(|n| super::Node {
            id: n.id,
            key: n.key,
            address: n.address,
            weight: n.weight,
            configured_weight: n.configured_weight,
            slow_start: n.slow_start,
            priority: n.priority,
            zone: n.zone,
            region: n.region,
            tags: n.tags,
        })
        .collect();
    rt.with(|rt| rt.borrow_mut().update(placement, nodes));
}

pub fn pick<T: Balancer>(rt: &'static Slot<T>, r: wit::PickRequest) -> Option<u32> {
    let req = super::PickRequest {
        request_id: r.request_id,
        attempt: r.attempt,
        excluded: r.excluded,
        keys: r.keys,
        attributes: r.attributes,
    };
    rt.with(|rt| rt.borrow_mut().pick(&req))
}

pub fn observe<T: Balancer>(rt: &'static Slot<T>, r: wit::TryReport) {
    let report = TryReport {
        node: r.node,
        outcome: match r.outcome {
            wit::Outcome::Status(s) => Outcome::Status(s),
            wit::Outcome::ConnectFailure => Outcome::ConnectFailure,
            wit::Outcome::Timeout => Outcome::Timeout,
            wit::Outcome::Reset => Outcome::Reset,
        },
        latency_us: r.latency_us,
    };
    rt.with(|rt| rt.borrow_mut().observe(&report));
}
