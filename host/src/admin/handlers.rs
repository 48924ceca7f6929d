//! Read endpoints: status, published services with live node state, config export.

use std::sync::atomic::Ordering;

use http::{HeaderMap, HeaderValue, Response, StatusCode, header};
use serde_json::{Value, json};

use super::AdminState;
use super::error::AdminError;
use crate::control::ControlPlane;
use crate::proxy::body::Body;
use crate::proxy::error::full;

/// `GET /admin/v1/status`: who this gateway is, which config generation it serves,
/// where that config came from and when, and the last rejected change.
pub fn status(state: &AdminState) -> Value {
    let ctl = &state.control;
    let cfg = state.proxy.snapshot.load().config.clone();
    let src = ctl.status();
    json!({
        "version": env!("CARGO_PKG_VERSION"),
        "group": cfg.gateway.group,
        "zone": cfg.gateway.zone,
        "region": cfg.gateway.region,
        "listen": cfg.gateway.listen.to_string(),
        "admin_listen": cfg.gateway.admin_listen.to_string(),
        "ready": state.ready.load(Ordering::Acquire),
        "generation": ctl.generation(),
        "source": ctl.source().map(|p| p.display().to_string()),
        "persistence": if ctl.persistent() { "file" } else { "memory" },
        "loaded_at": src.loaded_at,
        "loaded_by": src.loaded_by,
        "in_sync": src.in_sync,
        "sha256": src.sha256,
        "last_error": src.last_error,
        "allow_published_edits": src.allow_published_edits,
        "published_edits": src.published_edits,
    })
}

/// `GET /admin/v1/services`: every service published to this gateway's group, its
/// version and balancer, and each node with its labels and live state.
pub fn services(state: &AdminState) -> Value {
    let snap = state.proxy.snapshot.load_full();
    let gw = &snap.config.gateway;
    let services: Vec<Value> = snap
        .upstreams
        .iter()
        .map(|u| {
            let tiers = u.tiers.load();
            let nodes: Vec<Value> = u
                .endpoints
                .iter()
                .zip(&u.health.cells)
                .enumerate()
                .map(|(i, (e, cell))| {
                    let n = &e.node;
                    let mut node = json!({
                        "host": n.host,
                        "port": n.port,
                        "weight": n.weight,
                        "zone": if n.zone.is_empty() { &gw.zone } else { &n.zone },
                        "region": if n.region.is_empty() { &gw.region } else { &n.region },
                        "priority": n.priority,
                        "tags": n.tags,
                        "inflight": e.state.inflight(),
                        "requests": e.state.requests(),
                        "ewma_ms": f64::from(e.state.ewma_us()) / 1000.0,
                        "errors": e.state.errors(),
                        "effective_weight": crate::zone::effective_weight(e, &u.version.upstream),
                        "tier": tiers.tiers.iter().position(|t| t.contains(i)),
                    });
                    if let (Some(obj), Value::Object(health)) = (node.as_object_mut(), crate::health::report(cell)) {
                        obj.extend(health);
                    }
                    node
                })
                .collect();
            let tiers = u.tiers.load();
            let mut service = json!({
                "service": &*u.service,
                "version": u.version.version,
                "balancer": u.balancer.name(),
                "plan": tiers.note,
                "nodes": nodes,
            });
            let health = crate::health::upstream_report(&u.health, &u.endpoints, tiers.panic);
            if let (Some(obj), Value::Object(health)) = (service.as_object_mut(), health) {
                obj.extend(health);
            }
            service
        })
        .collect();
    json!({ "group": gw.group, "generation": snap.generation, "services": services })
}

/// Whether the client asked for JSON.
pub fn wants_json(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().to_ascii_lowercase().starts_with("application/json"))
}

/// `GET /admin/v1/config`: the whole served document, runtime edits included; YAML
/// unless JSON is asked for.
pub fn export(ctl: &ControlPlane, headers: &HeaderMap) -> Result<Response<Body>, AdminError> {
    let raw = ctl.served_raw();
    let (text, kind) = if wants_json(headers) {
        let mut s = serde_json::to_string_pretty(&raw).map_err(|e| AdminError::Internal(e.to_string()))?;
        s.push('\n');
        (s, "application/json")
    } else {
        (crate::config::to_yaml(&raw), "application/yaml")
    };
    let mut resp = Response::new(full(text));
    *resp.status_mut() = StatusCode::OK;
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(kind));
    resp.headers_mut()
        .insert("x-gatehouse-generation", HeaderValue::from(ctl.generation()));
    Ok(resp)
}
