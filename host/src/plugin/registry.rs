//! The plugins the gateway knows: one [`Slot`] per name, holding the generation that
//! serves (swapped atomically on reload), the uses configs make of it, and what went
//! wrong last. Loading, validating, swapping, rejecting, removing and disabling happen
//! here; the adapters only read the current generation.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Instant, SystemTime};

use arc_swap::{ArcSwapOption, Guard};

use super::counters::{CounterScope, HostCounters};
use super::engine::{Owner, PluginCtx, PluginEngine};
use super::instance::Fault;
use super::loader::{self, Kind, RejectReason, Rejection, WorldTemplates};
use super::stats::Stats;
use super::{PluginLimits, balancer, health, ratelimit, retry};
use crate::fswatch::Fingerprint;

/// What every adapter and validation needs: the engine, the limits, the counters.
pub struct Host {
    /// The engine.
    pub engine: Arc<PluginEngine>,
    /// Per-call limits.
    pub limits: PluginLimits,
    /// The counters behind `host.counter-add`.
    pub counters: Arc<HostCounters>,
    /// The operator-visible journal (loads, rejections, removals, disablings).
    pub events: Arc<crate::events::Events>,
    /// The gateway's zone and region, for 0.2 balancers.
    pub placement: super::v2::Placement,
}

impl std::fmt::Debug for Host {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Host")
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

static GENERATION_IDS: AtomicU64 = AtomicU64::new(1);
static USE_IDS: AtomicU64 = AtomicU64::new(1);

/// One loaded plugin file: compiled, validated and serving (or disabled).
pub struct Generation {
    /// Unique in the process (never 0).
    pub id: u64,
    /// Hex SHA-256 of the file.
    pub sha256: String,
    /// Instantiation templates.
    pub pres: WorldTemplates,
    /// When it was swapped in.
    pub loaded_at: SystemTime,
    /// Whether its compiled code came from the cache.
    pub from_cache: bool,
    /// Calls, faults, durations.
    pub stats: Stats,
    /// Name and log budget shared by its stores.
    pub ctx: Arc<PluginCtx>,
    disabled: AtomicBool,
    faults: Mutex<VecDeque<Instant>>,
    checked: Mutex<HashMap<(Kind, String), Result<(), Rejection>>>,
}

impl std::fmt::Debug for Generation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Generation")
            .field("id", &self.id)
            .field("name", &self.ctx.name)
            .field("sha256", &self.sha256)
            .finish_non_exhaustive()
    }
}

impl Generation {
    /// Whether repeated faults disabled it.
    pub fn is_disabled(&self) -> bool {
        self.disabled.load(Ordering::Relaxed)
    }

    /// The kinds it implements.
    pub fn kinds(&self) -> Vec<Kind> {
        self.pres.kinds()
    }
}

/// A file that was refused.
#[derive(Debug, Clone)]
pub struct Refused {
    /// Its hash.
    pub sha256: String,
    /// Why.
    pub rejection: Rejection,
    /// When.
    pub at: SystemTime,
}

#[derive(Debug, Default)]
struct SlotStatus {
    rejected: Option<Refused>,
    last_error: Option<(SystemTime, String)>,
}

/// Everything about one plugin name.
pub struct Slot {
    /// The plugin's name (the file stem).
    pub name: String,
    current: ArcSwapOption<Generation>,
    uses: Mutex<Vec<Weak<PluginUse>>>,
    status: Mutex<SlotStatus>,
    /// Counts of generations that were replaced or removed (for monotonic metrics).
    pub retired: Stats,
    /// Files loaded.
    pub loads: AtomicU64,
    /// Files rejected.
    pub rejects: AtomicU64,
}

impl std::fmt::Debug for Slot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Slot").field("name", &self.name).finish_non_exhaustive()
    }
}

impl Slot {
    fn new(name: &str) -> Self {
        Self {
            name: name.to_string(),
            current: ArcSwapOption::empty(),
            uses: Mutex::new(Vec::new()),
            status: Mutex::new(SlotStatus::default()),
            retired: Stats::default(),
            loads: AtomicU64::new(0),
            rejects: AtomicU64::new(0),
        }
    }

    /// The serving generation (cheap: no reference count on the fast path).
    pub fn current(&self) -> Guard<Option<Arc<Generation>>> {
        self.current.load()
    }

    /// Id of the serving generation.
    pub fn current_generation(&self) -> Option<u64> {
        self.current.load().as_ref().map(|g| g.id)
    }

    /// The last refused file, if it is still the newest one.
    pub fn rejected(&self) -> Option<Refused> {
        lock(&self.status).rejected.clone()
    }

    /// The last error (fault, rejection, config refused), with when it happened.
    pub fn last_error(&self) -> Option<(SystemTime, String)> {
        lock(&self.status).last_error.clone()
    }

    /// `active` (a file serves), `disabled` (its file faulted too often), `rejected`
    /// (the newest file failed validation and none serves) or `absent` (no file).
    pub fn state(&self) -> &'static str {
        match (self.current().as_ref(), lock(&self.status).rejected.is_some()) {
            (Some(g), _) if g.is_disabled() => "disabled",
            (Some(_), _) => "active",
            (None, true) => "rejected",
            (None, false) => "absent",
        }
    }

    /// The live uses.
    pub fn uses(&self) -> Vec<Arc<PluginUse>> {
        let mut uses = lock(&self.uses);
        uses.retain(|u| u.strong_count() > 0);
        uses.iter().filter_map(Weak::upgrade).collect()
    }

    fn set_error(&self, message: String) {
        lock(&self.status).last_error = Some((SystemTime::now(), message));
    }

    fn swap(&self, next: Option<Arc<Generation>>) {
        if let Some(old) = self.current.swap(next) {
            self.retired.absorb(&old.stats.snapshot());
        }
    }
}

/// One config's use of a plugin: the kind it is used as and the config text given to
/// `init`. Each adapter owns one; the slot keeps a weak list for validating new files.
pub struct PluginUse {
    /// Unique in the process.
    pub id: u64,
    /// What the config uses the plugin as.
    pub kind: Kind,
    /// JSON text for `init`.
    pub config: String,
    /// Who uses it (`service@version`).
    pub label: String,
    /// Where its instances count (`<plugin>/<service>`).
    pub counters: CounterScope,
    /// The plugin.
    pub slot: Arc<Slot>,
    /// Engine, limits, counters.
    pub host: Arc<Host>,
    /// Generation for which this config was refused (0: none).
    refused_for: AtomicU64,
}

impl std::fmt::Debug for PluginUse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginUse")
            .field("plugin", &self.slot.name)
            .field("kind", &self.kind)
            .field("label", &self.label)
            .finish_non_exhaustive()
    }
}

impl PluginUse {
    /// Whether `generation` may serve this use: `Ok` when it may, else why not
    /// (`disabled` after faults, counted as a fallback; `config refused`, counted as a
    /// refusal). When it may not, the built-in policy decides.
    pub fn usable(&self, generation: &Generation) -> Result<(), &'static str> {
        if generation.is_disabled() {
            generation.stats.fallback();
            return Err("disabled");
        }
        if self.refused_for.load(Ordering::Relaxed) == generation.id {
            generation.stats.refusal();
            return Err("refused its config");
        }
        Ok(())
    }

    /// Whom the stores of this use work for, on `generation`.
    pub fn owner(&self, generation: &Generation) -> Owner {
        Owner {
            ctx: generation.ctx.clone(),
            counters: self.counters.clone(),
        }
    }

    /// Records a failed call: counts it, keeps the message, and disables the generation
    /// after repeated faults. The caller has already dropped the instance.
    pub fn fault(&self, generation: &Generation, fault: Fault) {
        generation.stats.fault(fault.kind);
        generation.stats.fallback();
        let limits = &self.host.limits;
        let message = format!("{fault} (for {})", self.label);
        self.slot.set_error(message.clone());
        let now = Instant::now();
        let count = {
            let mut faults = lock(&generation.faults);
            faults.push_back(now);
            while faults
                .front()
                .is_some_and(|t| now.duration_since(*t) > limits.fault_window)
            {
                faults.pop_front();
            }
            faults.len() as u32
        };
        tracing::warn!(plugin = %self.slot.name, fault = fault.kind.as_str(), use_ = %self.label, "plugin call failed; the built-in policy decided: {}", fault.message);
        if count >= limits.fault_limit && !generation.disabled.swap(true, Ordering::Relaxed) {
            let message = format!(
                "disabled after {count} faults within {:?}; the built-in policy serves until a new file arrives (last: {fault})",
                limits.fault_window
            );
            tracing::error!(plugin = %self.slot.name, sha256 = %generation.sha256, "plugin {message}");
            self.host
                .events
                .plugin(&self.slot.name, "disabled", Some(message.clone()));
            self.slot.set_error(message);
        }
    }
}

/// All plugin slots, and the reload logic.
pub struct Registry {
    /// Engine, limits, counters.
    pub host: Arc<Host>,
    dir: PathBuf,
    cache_dir: Option<PathBuf>,
    slots: Mutex<BTreeMap<String, Arc<Slot>>>,
    fingerprints: Mutex<HashMap<String, Fingerprint>>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Registry {
    /// A registry for plugins in `dir`, caching compiled code in `cache_dir`.
    pub fn new(host: Arc<Host>, dir: PathBuf, cache_dir: Option<PathBuf>) -> Self {
        Self {
            host,
            dir,
            cache_dir,
            slots: Mutex::new(BTreeMap::new()),
            fingerprints: Mutex::new(HashMap::new()),
        }
    }

    /// The watched directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The slot for `name` (created empty if unknown).
    pub fn slot(&self, name: &str) -> Arc<Slot> {
        lock(&self.slots)
            .entry(name.to_string())
            .or_insert_with(|| Arc::new(Slot::new(name)))
            .clone()
    }

    /// Every slot, by name.
    pub fn slots(&self) -> Vec<Arc<Slot>> {
        lock(&self.slots).values().cloned().collect()
    }

    /// Registers the use of plugin `name` by version `version` of service `service` and
    /// checks it against the serving generation right away (init + smoke call); a refused
    /// config leaves that use on the built-in policy and is reported.
    pub fn register_use(&self, name: &str, kind: Kind, config: &str, service: &str, version: &str) -> Arc<PluginUse> {
        let slot = self.slot(name);
        let use_ = Arc::new(PluginUse {
            id: USE_IDS.fetch_add(1, Ordering::Relaxed),
            kind,
            config: config.to_string(),
            label: format!("{service}@{version}"),
            counters: CounterScope::new(self.host.counters.clone(), name, service),
            slot: slot.clone(),
            host: self.host.clone(),
            refused_for: AtomicU64::new(0),
        });
        {
            let mut uses = lock(&slot.uses);
            uses.retain(|u| u.strong_count() > 0);
            uses.push(Arc::downgrade(&use_));
        }
        if let Some(generation) = slot.current().as_ref()
            && let Err(r) = self.check(generation, kind, config)
        {
            use_.refused_for.store(generation.id, Ordering::Relaxed);
            let message = format!("config of {} refused: {}", use_.label, r.message);
            tracing::warn!(plugin = %name, "{message}; the built-in policy serves it");
            slot.set_error(message);
        }
        use_
    }

    /// Validates one (kind, config) against a generation: the right world, `init`
    /// accepts the config, and a smoke call returns in time. Cached per generation.
    fn check(&self, generation: &Generation, kind: Kind, config: &str) -> Result<(), Rejection> {
        let key = (kind, config.to_string());
        if let Some(r) = lock(&generation.checked).get(&key) {
            return r.clone();
        }
        let result = if !generation.pres.has(kind) {
            Err(Rejection::new(
                RejectReason::WrongWorld,
                format!(
                    "wrong world: configured as a {} but the plugin implements {}",
                    kind.as_str(),
                    generation.pres.worlds().join(", ")
                ),
            ))
        } else {
            let name = &generation.ctx.name;
            let scratch = Owner {
                ctx: PluginCtx::new(name),
                counters: CounterScope::scratch(name),
            };
            match kind {
                Kind::Balancer => balancer::validate(&self.host, generation, scratch, config),
                Kind::RetryPolicy => retry::validate(&self.host, generation, scratch, config),
                Kind::HealthEvaluator => health::validate(&self.host, generation, scratch, config),
                Kind::RateLimiter => ratelimit::validate(&self.host, generation, scratch, config),
            }
        };
        lock(&generation.checked).insert(key, result.clone());
        result
    }

    /// Brings the slots in line with the directory: loads new and changed files, unloads
    /// removed ones. Blocking (compiles); run it off the request path.
    pub fn sync_dir(&self) {
        let files = match self.list() {
            Ok(f) => f,
            Err(e) => {
                tracing::warn!(dir = %self.dir.display(), error = %e, "cannot read the plugins directory");
                return;
            }
        };
        let mut fingerprints = lock(&self.fingerprints);
        fingerprints.retain(|name, _| files.iter().any(|(n, _, _)| n == name));
        for slot in self.slots() {
            if !files.iter().any(|(n, _, _)| *n == slot.name) {
                self.unload(&slot);
            }
        }
        for (name, path, fp) in files {
            if fingerprints.get(&name) == Some(&fp) {
                continue;
            }
            let bytes = match std::fs::read(&path) {
                Ok(b) => b,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => {
                    let slot = self.slot(&name);
                    self.reject(
                        &slot,
                        String::new(),
                        Rejection::new(RejectReason::Unreadable, e.to_string()),
                    );
                    continue;
                }
            };
            fingerprints.insert(name.clone(), fp);
            self.load(&name, &bytes);
        }
    }

    fn list(&self) -> std::io::Result<Vec<(String, PathBuf, Fingerprint)>> {
        let mut out = Vec::new();
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(e) => e,
            // No directory, no plugins (it may be created later).
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
            Err(e) => return Err(e),
        };
        for entry in entries {
            let entry = entry?;
            let path = entry.path();
            if path.extension().and_then(|e| e.to_str()) != Some("wasm") {
                continue;
            }
            let Some(stem) = path.file_stem().and_then(|s| s.to_str()) else {
                continue;
            };
            if !valid_name(stem) {
                continue;
            }
            let Ok(meta) = std::fs::metadata(&path) else { continue };
            if meta.is_file() {
                out.push((stem.to_string(), path, Fingerprint::from_metadata(&meta)));
            }
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }

    /// As [`load`](Self::load), and says whether the file now serves: the rejection
    /// (reason and message, whole) when it was refused.
    pub fn load_checked(&self, name: &str, bytes: &[u8]) -> Result<(), String> {
        self.load(name, bytes);
        let slot = self.slot(name);
        if let Some(r) = slot.rejected() {
            return Err(format!(
                "refused ({}): {}",
                r.rejection.reason.as_str(),
                r.rejection.message
            ));
        }
        if slot.current().is_none() {
            return Err(slot.last_error().map_or_else(|| "not loaded".to_string(), |e| e.1));
        }
        Ok(())
    }

    /// Checks one use of the serving generation of `name` as the gateway does when a
    /// config names it: the right world, `init` accepts `config`, the smoke calls pass.
    pub fn verify(&self, name: &str, kind: Kind, config: &str) -> Result<(), String> {
        let slot = self.slot(name);
        let guard = slot.current();
        let Some(generation) = guard.as_ref() else {
            return Err(format!("plugin {name:?} is not loaded"));
        };
        self.check(generation, kind, config).map_err(|r| r.message)
    }

    /// The worlds the serving generation of `name` implements, with versions.
    pub fn worlds(&self, name: &str) -> Vec<String> {
        self.slot(name)
            .current()
            .as_ref()
            .map(|g| g.pres.worlds())
            .unwrap_or_default()
    }

    /// Loads `bytes` as the new version of plugin `name`: compile (or cache), world
    /// check, validation against every live use, then the swap. A failure keeps the
    /// serving generation (if any) and is reported.
    pub fn load(&self, name: &str, bytes: &[u8]) {
        let slot = self.slot(name);
        let sha256 = loader::sha256_hex(bytes);
        if slot.current().as_ref().is_some_and(|g| g.sha256 == sha256) {
            lock(&slot.status).rejected = None;
            return;
        }
        if slot.rejected().is_some_and(|r| r.sha256 == sha256) {
            return;
        }
        let started = Instant::now();
        let artifact = match loader::load(&self.host.engine, bytes, &sha256, self.cache_dir.as_deref()) {
            Ok(a) => a,
            Err(r) => return self.reject(&slot, sha256, r),
        };
        let generation = Generation {
            id: GENERATION_IDS.fetch_add(1, Ordering::Relaxed),
            sha256: sha256.clone(),
            pres: artifact.pres,
            loaded_at: SystemTime::now(),
            from_cache: artifact.from_cache,
            stats: Stats::default(),
            ctx: PluginCtx::new(name),
            disabled: AtomicBool::new(false),
            faults: Mutex::new(VecDeque::new()),
            checked: Mutex::new(HashMap::new()),
        };
        let mut seen = Vec::new();
        for u in slot.uses() {
            if seen.contains(&(u.kind, u.config.clone())) {
                continue;
            }
            seen.push((u.kind, u.config.clone()));
            if let Err(r) = self.check(&generation, u.kind, &u.config) {
                let message = format!("{} (config of {})", r.message, u.label);
                return self.reject(&slot, sha256, Rejection::new(r.reason, message));
            }
        }
        let kinds: Vec<&str> = generation.kinds().iter().map(|k| k.as_str()).collect();
        tracing::info!(
            plugin = %name,
            kind = %kinds.join(","),
            sha256 = %&sha256[..12],
            from_cache = generation.from_cache,
            ms = started.elapsed().as_secs_f64() * 1000.0,
            "plugin loaded"
        );
        lock(&slot.status).rejected = None;
        self.host.events.plugin(name, "loaded", None);
        slot.loads.fetch_add(1, Ordering::Relaxed);
        let generation = Arc::new(generation);
        slot.swap(Some(generation.clone()));
        // Uses registered while this file was being validated: check them now; a refused
        // config stays on the built-in policy (as in `register_use`).
        for u in slot.uses() {
            if seen.contains(&(u.kind, u.config.clone())) {
                continue;
            }
            if let Err(r) = self.check(&generation, u.kind, &u.config) {
                u.refused_for.store(generation.id, Ordering::Relaxed);
                slot.set_error(format!("config of {} refused: {}", u.label, r.message));
            }
        }
    }

    fn reject(&self, slot: &Slot, sha256: String, rejection: Rejection) {
        let serving = who_serves(slot);
        tracing::warn!(
            plugin = %slot.name,
            reason = rejection.reason.as_str(),
            "plugin file rejected ({serving}): {}",
            rejection.message
        );
        slot.rejects.fetch_add(1, Ordering::Relaxed);
        self.host
            .events
            .plugin(&slot.name, "rejected", Some(rejection.message.clone()));
        slot.set_error(format!(
            "rejected ({}): {}",
            rejection.reason.as_str(),
            rejection.message
        ));
        lock(&slot.status).rejected = Some(Refused {
            sha256,
            rejection,
            at: SystemTime::now(),
        });
    }

    fn unload(&self, slot: &Slot) {
        let had = slot.current().is_some();
        lock(&slot.status).rejected = None;
        if had {
            slot.swap(None);
            tracing::info!(plugin = %slot.name, "plugin file removed; the built-in policy serves");
            self.host.events.plugin(&slot.name, "removed", None);
        }
    }
}

/// Plugin names are file stems made of letters, digits, '-', '_' and '.' (not leading),
/// as the config validation requires of `plugins.*.name`.
/// What serves a slot's uses now, in words: the previous version (if it serves and is
/// not disabled) except for uses whose config it refused, or the built-in policy.
fn who_serves(slot: &Slot) -> String {
    let current = slot.current();
    let Some(generation) = current.as_ref() else {
        return "the built-in policy serves".into();
    };
    if generation.is_disabled() {
        return "the built-in policy serves: the previous version is disabled".into();
    }
    let refused: Vec<String> = slot
        .uses()
        .iter()
        .filter(|u| u.refused_for.load(Ordering::Relaxed) == generation.id)
        .map(|u| u.label.clone())
        .collect();
    if refused.is_empty() {
        "the previous version keeps serving".into()
    } else {
        format!(
            "the previous version keeps serving, except for {} (its config was refused: the built-in policy serves)",
            refused.join(", ")
        )
    }
}

fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && !s.starts_with('.')
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}
