//! `GET /admin/v1/plugins`: every plugin the gateway knows, its state and its numbers.

use std::time::{SystemTime, UNIX_EPOCH};

use http::{Response, StatusCode};
use serde_json::{Value, json};

use super::PluginRuntime;
use super::registry::Slot;
use super::stats::FaultKind;
use crate::proxy::body::Body;

/// Answers `GET /admin/v1/plugins`.
pub fn handle(plugins: Option<&PluginRuntime>) -> Response<Body> {
    let body = match plugins {
        Some(runtime) => report(runtime),
        None => json!({ "enabled": false, "plugins": [] }),
    };
    crate::admin::json(StatusCode::OK, &body)
}

/// The report: `{"enabled": true, "dir": ..., "pooling": ..., "plugins": [...]}`.
pub fn report(runtime: &PluginRuntime) -> Value {
    let registry = runtime.registry();
    let plugins: Vec<Value> = registry.slots().iter().map(|s| slot_report(s)).collect();
    json!({
        "enabled": true,
        "dir": registry.dir().display().to_string(),
        "pooling": registry.host.engine.pooling(),
        "plugins": plugins,
    })
}

/// One plugin's entry.
///
/// `state` is `active` (a file serves), `disabled` (its file faulted too often; the
/// built-in policy serves until a new file arrives), `rejected` (the newest file failed
/// validation and no older one serves) or `absent` (no file: the built-in policy serves).
/// `calls`, `faults`, `fallbacks` and `p99_us` count since the serving file was loaded.
pub fn slot_report(slot: &Slot) -> Value {
    let current = slot.current();
    let rejected = slot.rejected();
    let state = slot.state();
    let stats = current.as_ref().map(|g| g.stats.snapshot()).unwrap_or_default();
    let faults: serde_json::Map<String, Value> = FaultKind::ALL
        .iter()
        .map(|k| (k.as_str().to_string(), json!(stats.faults_of(*k))))
        .collect();
    let used_by: Vec<Value> = slot
        .uses()
        .iter()
        .map(|u| json!({ "service": u.label, "as": u.kind.as_str() }))
        .collect();
    json!({
        "name": slot.name,
        "kind": current.as_ref().map(|g| g.kinds().iter().map(|k| k.as_str()).collect::<Vec<_>>().join("+")),
        "sha256": current.as_ref().map(|g| g.sha256.clone()),
        "state": state,
        "loaded_at": current.as_ref().map(|g| rfc3339(g.loaded_at)),
        "from_cache": current.as_ref().map(|g| g.from_cache),
        "calls": stats.calls,
        "faults": faults,
        "fallbacks": stats.fallbacks,
        "instances": stats.instances,
        "p99_us": stats.p99().map(|d| d.as_secs_f64() * 1e6),
        "logs_dropped": current.as_ref().map(|g| g.ctx.logs_dropped.load(std::sync::atomic::Ordering::Relaxed)),
        "last_error": slot.last_error().map(|(at, message)| json!({ "at": rfc3339(at), "message": message })),
        "rejected": rejected.map(|r| json!({
            "sha256": r.sha256,
            "reason": r.rejection.reason.as_str(),
            "message": r.rejection.message,
            "at": rfc3339(r.at),
        })),
        "used_by": used_by,
    })
}

/// `2024-05-01T12:34:56Z` (UTC, second precision).
pub fn rfc3339(t: SystemTime) -> String {
    let secs = t.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn formats_rfc3339() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00Z");
        assert_eq!(
            rfc3339(UNIX_EPOCH + Duration::from_secs(951_782_400)),
            "2000-02-29T00:00:00Z"
        );
        assert_eq!(
            rfc3339(UNIX_EPOCH + Duration::from_secs(1_714_566_896)),
            "2024-05-01T12:34:56Z"
        );
    }
}
