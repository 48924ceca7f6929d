//! The 0.2 balancer (`gatehouse:plugin@0.2.0`): instances, `update` with node identity
//! and placement, `pick` with hashed keys and attributes by value, `observe`, and
//! validation. [`super::balancer::PluginBalancer`] calls it when the serving file
//! exports the 0.2 world.

use super::balancer::tried_candidates;
use std::cell::RefCell;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use wasmtime::Store;

use super::bindings2::balancer::{BalancerV2 as World, BalancerV2Pre as BalancerPre};
use super::bindings2::types::{
    Node, Outcome as WitOutcome, PickRequest, Placement as WitPlacement, RequestAttribute, TryReport,
};
use super::engine::{Owner, StoreData};
use super::instance::{Fault, WarmMap, guarded, on_warm, refused, smoke_failed, start};
use super::keys::{self, KeyInput, KeySource, MAX_KEYS};
use super::loader::{RejectReason, Rejection};
use super::registry::{Generation, Host, PluginUse};
use super::stats::FaultKind;
use crate::balance::{Candidate, PickContext};
use crate::health::EndpointHealth;
use crate::outcome::Outcome;
use crate::upstream::Endpoint;

/// Where the gateway runs, as 0.2 balancers see it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Placement {
    /// `gateway.zone`.
    pub zone: String,
    /// `gateway.region`.
    pub region: String,
}

/// A request attribute a plugin wants by value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AttrSource {
    /// A part of the request head (header, query, cookie, path, method).
    Head(KeySource),
    /// The client's `ip:port`.
    ClientAddress,
}

/// Compiles what `wants().attributes` returned; an error is a contract violation.
pub fn compile_attributes(attrs: Vec<RequestAttribute>) -> Result<Vec<AttrSource>, String> {
    if attrs.len() > MAX_KEYS {
        return Err(format!(
            "asked for {} request attributes; at most {MAX_KEYS} are allowed",
            attrs.len()
        ));
    }
    attrs
        .into_iter()
        .map(|a| {
            Ok(AttrSource::Head(match a {
                RequestAttribute::Method => KeySource::Method,
                RequestAttribute::Path => KeySource::Path,
                RequestAttribute::Query(q) => KeySource::Query(q),
                RequestAttribute::Cookie(c) => KeySource::Cookie(c),
                RequestAttribute::Header(h) => KeySource::Header(
                    http::HeaderName::from_bytes(h.as_bytes()).map_err(|_| format!("invalid header name {h:?}"))?,
                ),
                RequestAttribute::ClientAddress => return Ok(AttrSource::ClientAddress),
            }))
        })
        .collect()
}

/// An attribute's value in one request (`None`: absent, or not UTF-8).
pub fn attribute(attr: &AttrSource, req: &KeyInput<'_>) -> Option<String> {
    match attr {
        AttrSource::ClientAddress => Some(req.remote.to_string()),
        AttrSource::Head(key) => std::str::from_utf8(keys::raw(key, req)?).ok().map(str::to_string),
    }
}

/// A warm 0.2 balancer instance.
pub struct Instance {
    store: Store<StoreData>,
    world: World,
    keys: Vec<KeySource>,
    attributes: Vec<AttrSource>,
    /// Whether the plugin wants `observe`.
    pub observe: bool,
    /// The candidate set the plugin last received (`None`: nothing yet).
    delivered: Option<Vec<Candidate>>,
    request: PickRequest,
}

thread_local! {
    static WARM: RefCell<WarmMap<Instance>> = const { RefCell::new(WarmMap::new()) };
}

/// A fresh instance: instantiate, `init(config)`, `wants()`.
fn instantiate(host: &Host, pre: &BalancerPre<StoreData>, owner: Owner, config: &str) -> Result<Instance, Fault> {
    let (mut store, world) = start(
        host,
        owner,
        |s| pre.instantiate(s),
        |w: &World, s| w.gatehouse_plugin_balance().call_init(s, config),
    )?;
    let api = world.gatehouse_plugin_balance();
    let wants = guarded(&mut store, host.limits.init_deadline, "wants", |s| api.call_wants(s))?;
    let contract = |e: String| Fault::new(FaultKind::Contract, format!("`wants` {e}"));
    let keys = keys::compile(wants.keys.into_iter().map(v1_key).collect()).map_err(contract)?;
    let attributes = compile_attributes(wants.attributes).map_err(contract)?;
    Ok(Instance {
        store,
        world,
        keys,
        attributes,
        observe: wants.observe,
        delivered: None,
        request: PickRequest {
            request_id: 0,
            attempt: 1,
            excluded: Vec::new(),
            keys: Vec::new(),
            attributes: Vec::new(),
        },
    })
}

/// The same request key in 0.1's terms (the host compiles both alike).
fn v1_key(k: super::bindings2::types::RequestKey) -> super::bindings::types::RequestKey {
    use super::bindings::types::RequestKey as V1;
    use super::bindings2::types::RequestKey as V2;
    match k {
        V2::Header(h) => V1::Header(h),
        V2::Query(q) => V1::Query(q),
        V2::Cookie(c) => V1::Cookie(c),
        V2::ClientIp => V1::ClientIp,
        V2::Path => V1::Path,
        V2::Method => V1::Method,
    }
}

/// The 0.2 node of candidate `c`.
fn node(c: &Candidate, ep: &Endpoint) -> Node {
    let n = &ep.node;
    Node {
        id: c.idx,
        key: keys::hash(ep.key.authority.as_bytes()),
        address: ep.key.authority.to_string(),
        weight: c.weight,
        configured_weight: n.weight,
        slow_start: if n.weight == 0 {
            1.0
        } else {
            (c.weight as f32 / n.weight as f32).min(1.0)
        },
        priority: n.priority,
        zone: n.zone.clone(),
        region: n.region.clone(),
        tags: n.tags.clone(),
    }
}

/// Delivers the candidate set (and the node table behind `host.stats`) if it changed.
fn update(
    host: &Host,
    inst: &mut Instance,
    ctx: &PickContext<'_>,
    health: &[Arc<EndpointHealth>],
) -> Result<(), Fault> {
    if inst.delivered.as_deref() == Some(&ctx.candidates.list[..]) {
        return Ok(());
    }
    let list = &ctx.candidates.list;
    let nodes: Vec<Node> = list.iter().map(|c| node(c, &ctx.endpoints[c.idx as usize])).collect();
    let table = &mut inst.store.data_mut().nodes;
    table.clear();
    table.resize(ctx.endpoints.len(), None);
    for c in list {
        let i = c.idx as usize;
        table[i] = Some((ctx.endpoints[i].clone(), health.get(i).cloned()));
    }
    let placement = WitPlacement {
        zone: host.placement.zone.clone(),
        region: host.placement.region.clone(),
    };
    let api = inst.world.gatehouse_plugin_balance();
    guarded(&mut inst.store, host.limits.call_deadline, "update", |s| {
        api.call_update(s, &placement, &nodes)
    })?;
    inst.delivered = Some(list.clone());
    Ok(())
}

/// One pick on a warm instance; `Ok(None)` when the plugin declines.
fn pick(
    host: &Host,
    generation: &Generation,
    inst: &mut Instance,
    ctx: &PickContext<'_>,
    health: &[Arc<EndpointHealth>],
) -> Result<Option<usize>, Fault> {
    update(host, inst, ctx, health)?;
    let req = &mut inst.request;
    req.request_id = fastrand::u64(..);
    req.attempt = ctx.excluded.len() as u32 + 1;
    req.excluded.clear();
    req.excluded.extend(tried_candidates(ctx));
    let input = KeyInput::from_parts(ctx.request.parts, ctx.request.remote);
    req.keys.clear();
    req.keys.extend(inst.keys.iter().map(|k| keys::resolve(k, &input)));
    req.attributes.clear();
    req.attributes
        .extend(inst.attributes.iter().map(|a| attribute(a, &input)));
    let started = Instant::now();
    let api = inst.world.gatehouse_plugin_balance();
    let choice = guarded(&mut inst.store, host.limits.call_deadline, "pick", |s| {
        api.call_pick(s, &inst.request)
    })?;
    generation.stats.call(started.elapsed());
    super::balancer::checked_choice(choice, ctx)
}

/// The 0.2 pick of `use_` on this thread's warm instance.
pub fn pick_warm(
    use_: &Arc<PluginUse>,
    generation: &Generation,
    pre: &BalancerPre<StoreData>,
    ctx: &PickContext<'_>,
    health: &[Arc<EndpointHealth>],
) -> Result<Option<usize>, Fault> {
    let make = || instantiate(&use_.host, pre, use_.owner(generation), &use_.config);
    on_warm(&WARM, use_, generation, make, |inst| {
        pick(&use_.host, generation, inst, ctx, health)
    })
    .map(Option::flatten)
}

/// Hands one try's outcome to this thread's warm instance of `use_`, if it has one that
/// wants it and has been given the node set (an instance never asked to pick has no
/// nodes to learn about).
pub fn observe_warm(
    use_: &Arc<PluginUse>,
    generation: &Generation,
    idx: usize,
    outcome: Outcome,
    latency: Duration,
) -> Result<(), Fault> {
    let report = TryReport {
        node: idx as u32,
        outcome: match outcome {
            Outcome::Status(s) => WitOutcome::Status(s),
            Outcome::ConnectFailure => WitOutcome::ConnectFailure,
            Outcome::Timeout => WitOutcome::Timeout,
            Outcome::Reset => WitOutcome::Reset,
            // The plugin ABI knows HTTP statuses: a gRPC code goes as its equivalent.
            Outcome::Grpc(code) => WitOutcome::Status(crate::outcome::grpc_http_status(code)),
        },
        latency_us: u32::try_from(latency.as_micros()).unwrap_or(u32::MAX),
    };
    WARM.try_with(|warm| {
        let Ok(mut warm) = warm.try_borrow_mut() else {
            return Ok(());
        };
        let Some(i) = warm.find(use_.id, generation.id) else {
            return Ok(());
        };
        let inst = &mut warm.get(i).inst;
        if !inst.observe || inst.delivered.is_none() {
            return Ok(());
        }
        let api = inst.world.gatehouse_plugin_balance();
        let result = guarded(&mut inst.store, use_.host.limits.call_deadline, "observe", |s| {
            api.call_observe(s, report)
        });
        if result.is_err() {
            warm.remove(i);
        }
        result
    })
    .unwrap_or(Ok(()))
}

/// Validation of a 0.2 file or config: `init` accepts `config`, then a smoke call
/// (`wants`, `update` with three nodes, `pick` with every requested key and attribute
/// present, `observe` if wanted) returns in time with a valid answer.
pub(super) fn validate(host: &Host, pre: &BalancerPre<StoreData>, owner: Owner, config: &str) -> Result<(), Rejection> {
    let mut inst = instantiate(host, pre, owner, config).map_err(refused)?;
    let deadline = host.limits.call_deadline;
    let smoke = |inst: &mut Instance| -> Result<Option<u32>, Fault> {
        let api = inst.world.gatehouse_plugin_balance();
        let nodes: Vec<Node> = (0..3u32)
            .map(|id| {
                let address = format!("127.0.0.1:{}", 8000 + id);
                Node {
                    id,
                    key: keys::hash(address.as_bytes()),
                    address,
                    weight: 1,
                    configured_weight: 1,
                    slow_start: 1.0,
                    priority: 0,
                    zone: String::new(),
                    region: String::new(),
                    tags: Vec::new(),
                }
            })
            .collect();
        guarded(&mut inst.store, deadline, "update", |s| {
            api.call_update(
                s,
                &WitPlacement {
                    zone: String::new(),
                    region: String::new(),
                },
                &nodes,
            )
        })?;
        let request = PickRequest {
            request_id: 0,
            attempt: 1,
            excluded: Vec::new(),
            keys: vec![keys::hash(b"smoke"); inst.keys.len()],
            attributes: inst.attributes.iter().map(smoke_value).collect(),
        };
        let choice = guarded(&mut inst.store, deadline, "pick", |s| api.call_pick(s, &request))?;
        if inst.observe {
            let report = TryReport {
                node: choice.unwrap_or(0),
                outcome: WitOutcome::Status(200),
                latency_us: 1000,
            };
            guarded(&mut inst.store, deadline, "observe", |s| api.call_observe(s, report))?;
        }
        Ok(choice)
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

/// A plausible value of an attribute for the smoke call (every attribute present).
fn smoke_value(attr: &AttrSource) -> Option<String> {
    Some(match attr {
        AttrSource::ClientAddress => SocketAddr::from(([127, 0, 0, 1], 40000)).to_string(),
        AttrSource::Head(KeySource::Method) => "GET".into(),
        AttrSource::Head(KeySource::Path) => "/smoke".into(),
        AttrSource::Head(_) => "smoke".into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::balance::testing::endpoints;

    #[test]
    fn attributes_are_delivered_by_value_and_absent_ones_as_none() {
        let parts = http::Request::builder()
            .uri("/api/v1/orders?plan=gold&x")
            .header("X-Tier", "Gold")
            .header("cookie", "a=1; session=s3")
            .body(())
            .unwrap()
            .into_parts()
            .0;
        let remote: SocketAddr = "127.0.0.1:5555".parse().unwrap();
        let attrs = compile_attributes(vec![
            RequestAttribute::Method,
            RequestAttribute::Path,
            RequestAttribute::Query("plan".into()),
            RequestAttribute::Query("x".into()),
            RequestAttribute::Query("nope".into()),
            RequestAttribute::Header("x-tier".into()),
            RequestAttribute::Header("x-missing".into()),
            RequestAttribute::Cookie("session".into()),
            RequestAttribute::ClientAddress,
        ])
        .unwrap();
        let input = KeyInput::from_parts(&parts, remote);
        let got: Vec<Option<String>> = attrs.iter().map(|a| attribute(a, &input)).collect();
        let want = [
            Some("GET"),
            Some("/api/v1/orders"),
            Some("gold"),
            Some(""),
            None,
            Some("Gold"),
            None,
            Some("s3"),
            Some("127.0.0.1:5555"),
        ];
        assert_eq!(got, want.map(|v| v.map(str::to_string)));
        assert!(compile_attributes(vec![RequestAttribute::Header("bad header".into())]).is_err());
        assert!(compile_attributes(vec![RequestAttribute::Path; MAX_KEYS + 1]).is_err());
    }

    #[test]
    fn a_node_has_the_identity_health_evaluators_see() {
        let eps = endpoints(&[4, 2]);
        let c = Candidate { idx: 1, weight: 1 };
        let n = node(&c, &eps[1]);
        assert_eq!(n.address, "127.0.0.1:9001");
        assert_eq!(n.key, keys::hash(b"127.0.0.1:9001"));
        let info = crate::health::NodeInfo {
            key: &eps[1].key,
            node: &eps[1].node,
        };
        let obs = crate::health::Observation {
            source: crate::health::Source::Passive,
            observed: crate::health::Observed::Status(200),
            latency: Duration::from_millis(1),
            retry_after: None,
        };
        assert_eq!(super::super::health::observation(&info, &obs).node, n.key);
        assert_eq!((n.weight, n.configured_weight, n.slow_start), (1, 2, 0.5));
    }
}
