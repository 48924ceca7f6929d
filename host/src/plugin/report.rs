//! What operators see of the plugins, as plain data: the admin API renders it
//! (`admin::plugins`), so this module knows nothing of HTTP or JSON.

use std::sync::atomic::Ordering;
use std::time::SystemTime;

use super::PluginRuntime;
use super::registry::Slot;
use super::stats::FaultKind;

/// The plugin subsystem of one gateway.
#[derive(Debug, Clone)]
pub struct PluginsView {
    /// The watched directory.
    pub dir: String,
    /// Whether instances come from the pre-reserved pool.
    pub pooling: bool,
    /// Every plugin slot, by name.
    pub plugins: Vec<SlotView>,
}

/// One plugin: its serving file, state and numbers.
#[derive(Debug, Clone)]
pub struct SlotView {
    /// The plugin's name (its file stem).
    pub name: String,
    /// `active` (a file serves), `disabled` (its file faulted too often; the built-in
    /// policy serves until a new file arrives), `rejected` (the newest file failed
    /// validation and no older one serves) or `absent` (no file: the built-in serves).
    pub state: &'static str,
    /// The serving file, if any.
    pub serving: Option<ServingView>,
    /// Completed calls since the serving file was loaded.
    pub calls: u64,
    /// Faults by kind (every [`FaultKind`], in [`FaultKind::ALL`] order).
    pub faults: Vec<(&'static str, u64)>,
    /// Decisions left to the built-in policy after a fault, or while disabled by faults.
    pub fallbacks: u64,
    /// Decisions the plugin declined (`None` from `pick`, `builtin` from `evaluate`).
    pub declines: u64,
    /// Decisions the built-in made because the plugin refused the use's config.
    pub refusals: u64,
    /// Instances created.
    pub instances: u64,
    /// 99th percentile of call durations, in microseconds.
    pub p99_us: Option<f64>,
    /// The last error, and when.
    pub last_error: Option<(SystemTime, String)>,
    /// The newest refused file, if the newest file was refused.
    pub rejected: Option<RejectedView>,
    /// Who uses the plugin: (`service@version`, kind).
    pub used_by: Vec<(String, &'static str)>,
}

/// The file that serves a slot.
#[derive(Debug, Clone)]
pub struct ServingView {
    /// The worlds it implements, joined by `+`.
    pub kind: String,
    /// Content hash.
    pub sha256: String,
    /// When it was loaded.
    pub loaded_at: SystemTime,
    /// Whether its compiled code came from the cache.
    pub from_cache: bool,
    /// Log lines dropped by the rate limit of `host.log`.
    pub logs_dropped: u64,
}

/// A refused file.
#[derive(Debug, Clone)]
pub struct RejectedView {
    /// Its hash.
    pub sha256: String,
    /// The reason's stable name.
    pub reason: &'static str,
    /// What was wrong, for people.
    pub message: String,
    /// When.
    pub at: SystemTime,
}

impl PluginsView {
    /// The view of `runtime` now.
    pub fn of(runtime: &PluginRuntime) -> PluginsView {
        let registry = runtime.registry();
        PluginsView {
            dir: registry.dir().display().to_string(),
            pooling: registry.host.engine.pooling(),
            plugins: registry.slots().iter().map(|s| SlotView::of(s)).collect(),
        }
    }
}

impl SlotView {
    /// The view of `slot` now; numbers count since the serving file was loaded.
    pub fn of(slot: &Slot) -> SlotView {
        let current = slot.current();
        let stats = current.as_ref().map(|g| g.stats.snapshot()).unwrap_or_default();
        SlotView {
            name: slot.name.clone(),
            state: slot.state(),
            serving: current.as_ref().map(|g| ServingView {
                kind: g.kinds().iter().map(|k| k.as_str()).collect::<Vec<_>>().join("+"),
                sha256: g.sha256.clone(),
                loaded_at: g.loaded_at,
                from_cache: g.from_cache,
                logs_dropped: g.ctx.logs_dropped.load(Ordering::Relaxed),
            }),
            calls: stats.calls,
            faults: FaultKind::ALL
                .iter()
                .map(|k| (k.as_str(), stats.faults_of(*k)))
                .collect(),
            fallbacks: stats.fallbacks,
            declines: stats.declines,
            refusals: stats.refusals,
            instances: stats.instances,
            p99_us: stats.p99().map(|d| d.as_secs_f64() * 1e6),
            last_error: slot.last_error(),
            rejected: slot.rejected().map(|r| RejectedView {
                sha256: r.sha256,
                reason: r.rejection.reason.as_str(),
                message: r.rejection.message,
                at: r.at,
            }),
            used_by: slot.uses().iter().map(|u| (u.label.clone(), u.kind.as_str())).collect(),
        }
    }
}
