//! `GET /admin/v1/plugins`: every plugin the gateway knows, its state and its numbers,
//! rendered from [`crate::plugin::report`]'s plain view.

use std::time::{SystemTime, UNIX_EPOCH};

use http::{Response, StatusCode};
use serde_json::{Value, json};

use crate::plugin::PluginRuntime;
use crate::plugin::report::{PluginsView, SlotView};
use crate::proxy::body::Body;

/// Answers `GET /admin/v1/plugins`.
pub fn handle(plugins: Option<&PluginRuntime>) -> Response<Body> {
    let body = match plugins {
        Some(runtime) => report(&PluginsView::of(runtime)),
        None => json!({ "enabled": false, "plugins": [] }),
    };
    super::json(StatusCode::OK, &body)
}

/// The report: `{"enabled": true, "dir": ..., "pooling": ..., "plugins": [...]}`.
pub fn report(view: &PluginsView) -> Value {
    let plugins: Vec<Value> = view.plugins.iter().map(slot_report).collect();
    json!({
        "enabled": true,
        "dir": view.dir,
        "pooling": view.pooling,
        "plugins": plugins,
    })
}

/// One plugin's entry (see [`SlotView`] for what each number counts).
pub fn slot_report(slot: &SlotView) -> Value {
    let serving = slot.serving.as_ref();
    let faults: serde_json::Map<String, Value> = slot
        .faults
        .iter()
        .map(|(kind, n)| ((*kind).to_string(), json!(n)))
        .collect();
    let used_by: Vec<Value> = slot
        .used_by
        .iter()
        .map(|(label, kind)| json!({ "service": label, "as": kind }))
        .collect();
    json!({
        "name": slot.name,
        "kind": serving.map(|s| s.kind.clone()),
        "sha256": serving.map(|s| s.sha256.clone()),
        "state": slot.state,
        "loaded_at": serving.map(|s| rfc3339(s.loaded_at)),
        "from_cache": serving.map(|s| s.from_cache),
        "calls": slot.calls,
        "faults": faults,
        "fallbacks": slot.fallbacks,
        "declines": slot.declines,
        "refusals": slot.refusals,
        "instances": slot.instances,
        "p99_us": slot.p99_us,
        "logs_dropped": serving.map(|s| s.logs_dropped),
        "last_error": slot.last_error.as_ref().map(|(at, message)| json!({ "at": rfc3339(*at), "message": message })),
        "rejected": slot.rejected.as_ref().map(|r| json!({
            "sha256": r.sha256,
            "reason": r.reason,
            "message": r.message,
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
