//! Read endpoints the dashboard needs besides status and services: every version
//! of every service with the groups publishing it, rate-limit rules with their
//! busiest keys, and the gateway's uptime and token rule.

use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

use super::AdminState;

/// How many of the busiest keys of a rule are shown.
const BUSIEST: usize = 10;

/// `GET /admin/v1/versions`: each service with every version as written in the
/// config (routes, upstream policy, limits, plugins) and, per version, the groups
/// that publish it. The `gateway:` section is not included (it can hold secrets).
pub fn versions(state: &AdminState) -> Value {
    let raw = state.control.served_raw();
    let group = state.proxy.snapshot.load().config.gateway.group.clone();
    let services: Vec<Value> = raw
        .services
        .iter()
        .map(|s| {
            let versions: Vec<Value> = s
                .versions
                .iter()
                .map(|v| {
                    let groups: Vec<&str> = raw
                        .gateway_groups
                        .iter()
                        .filter(|g| g.services.iter().any(|p| p.service == s.name && p.version == v.version))
                        .map(|g| g.name.as_str())
                        .collect();
                    json!({
                        "version": v.version,
                        "published_in": groups,
                        "published_here": groups.contains(&group.as_str()),
                        "config": serde_json::to_value(v).unwrap_or(Value::Null),
                    })
                })
                .collect();
            json!({ "service": s.name, "versions": versions })
        })
        .collect();
    json!({ "group": group, "services": services })
}

/// `GET /admin/v1/ratelimits`: for each service served here, its rules (as
/// configured) with the keys this process tracks and the busiest ones, its quota,
/// and the state of the Redis link when one is configured.
pub fn ratelimits(state: &AdminState) -> Value {
    let snap = state.proxy.snapshot.load_full();
    let limits = &state.limits;
    let raw = state.control.served_raw();
    let services: Vec<Value> = snap
        .upstreams
        .iter()
        .map(|u| {
            let version = raw
                .services
                .iter()
                .find(|s| *s.name == *u.service)
                .and_then(|s| s.versions.iter().find(|v| v.version == u.version.version));
            let usage = limits.usage(&u.service, BUSIEST);
            let rules: Vec<Value> = version
                .map(|v| v.limits.as_slice())
                .unwrap_or_default()
                .iter()
                .enumerate()
                .map(|(i, rule)| {
                    let mut value = serde_json::to_value(rule).unwrap_or(Value::Null);
                    let name = u.version.limits.get(i).map(|r| r.name.clone()).unwrap_or_default();
                    value["name"] = json!(name);
                    if let Some(u) = usage.iter().find(|u| u.name == name) {
                        value["usage"] = json!({
                            "shared": u.shared,
                            "keys": u.keys,
                            "busiest": u.busiest.iter().map(|(k, used, limit)| json!({
                                "key": k, "used": used, "limit": limit,
                            })).collect::<Vec<_>>(),
                        });
                    }
                    value
                })
                .collect();
            json!({
                "service": &*u.service,
                "version": u.version.version,
                "rules": rules,
                "quota": version.and_then(|v| v.quota.as_ref()).map(|q| serde_json::to_value(q).unwrap_or(Value::Null)),
            })
        })
        .collect();
    let redis = limits.store().map(|s| {
        json!({
            "configured": true,
            "state": if s.degraded() { "degraded" } else { "connected" },
            "live_units": s.live_units(),
            "prefix": s.prefix(),
        })
    });
    json!({
        "redis": redis.unwrap_or_else(|| json!({ "configured": false })),
        "services": services,
    })
}

/// Fields added to `GET /admin/v1/status` for the dashboard: start time, uptime,
/// whether writes need a token, and whether this is `gatehouse demo`.
pub fn status_extra(state: &AdminState) -> Value {
    let config = state.proxy.snapshot.load().config.clone();
    let started_ms = state
        .started
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    let uptime = SystemTime::now()
        .duration_since(state.started)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    json!({
        "started_at_ms": started_ms,
        "uptime_s": uptime,
        "token_required": state.token.is_some(),
        "demo": state.demo.get().is_some(),
        "listeners": [
            { "name": "proxy", "address": config.gateway.listen.to_string() },
            { "name": "admin", "address": config.gateway.admin_listen.to_string() },
        ],
    })
}
