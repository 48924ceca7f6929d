//! WebAssembly plugins: policies users write in Rust against `wit/` and drop into the
//! plugins directory (DESIGN.md §5, `docs/plugins.md`).
//!
//! - [`engine`]: the process's one wasmtime engine (pooling allocator, epoch ticker) and
//!   the per-store state with its memory limiter; plugins get no filesystem, network or
//!   environment.
//! - [`loader`]: content hash, compiled-artifact cache, compilation, world check.
//! - [`registry`]: one slot per plugin name; validation before swap, atomic swap,
//!   rejection, removal, fault accounting and disabling.
//! - [`watcher`]: reloads when the directory changes, off the request path.
//! - [`instance`]: guarded calls (deadline, trap and panic containment) and the warm
//!   instances kept per worker thread.
//! - adapters: [`balancer`], [`retry`] (policy traits, each carrying the built-in as its
//!   fallback), [`health`] and [`ratelimit`] (plugin callers for those traits).
//! - [`admin`] and [`metrics`]: what operators see.
//!
//! [`PluginRuntime`] ties them together and implements [`PolicyHooks`], so a snapshot
//! build swaps a service's built-in policy for its plugin adapter.

pub mod admin;
pub mod balancer;
mod bindings;
pub mod counters;
pub mod engine;
pub mod health;
pub mod instance;
pub mod keys;
pub mod loader;
pub mod metrics;
pub mod ratelimit;
pub mod registry;
pub mod retry;
pub mod stats;
#[cfg(test)]
mod tests;
pub mod watcher;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

pub use engine::{EngineSettings, PluginEngine};
pub use loader::Kind;
pub use registry::{Generation, Registry, Slot};
pub use stats::FaultKind;

use crate::balance::Balancer;
use crate::config::model::{GatewaySettings, ServiceVersion};
use crate::retry::RetryPolicy;
use crate::upstream::PolicyHooks;
use counters::{HostCounters, LocalCounters};
use registry::Host;

/// What a plugin may spend per call and per instance, and when it is disabled.
#[derive(Debug, Clone)]
pub struct PluginLimits {
    /// Linear memory cap per instance.
    pub memory: usize,
    /// Deadline of hot-path calls (`pick`, `update`, `check`, `evaluate`).
    pub call_deadline: Duration,
    /// Deadline of cold-path calls (`decide`).
    pub cold_deadline: Duration,
    /// Deadline of instantiation, `init` and `keys`.
    pub init_deadline: Duration,
    /// Faults within [`fault_window`](Self::fault_window) that disable a plugin file.
    pub fault_limit: u32,
    /// See [`fault_limit`](Self::fault_limit).
    pub fault_window: Duration,
    /// Calls after which a warm instance is replaced by a fresh one (bounds leaks).
    pub recycle_after: u64,
}

impl Default for PluginLimits {
    fn default() -> Self {
        Self {
            memory: 32 << 20,
            call_deadline: Duration::from_millis(25),
            cold_deadline: Duration::from_millis(100),
            init_deadline: Duration::from_millis(500),
            fault_limit: 5,
            fault_window: Duration::from_secs(60),
            recycle_after: 100_000,
        }
    }
}

/// Where plugins come from and how they are run.
#[derive(Debug, Clone)]
pub struct PluginSettings {
    /// The watched directory (`gateway.plugins_dir`).
    pub dir: PathBuf,
    /// Where compiled artifacts are cached (`<state_dir>/plugin-cache`); `None`: no cache.
    pub cache_dir: Option<PathBuf>,
    /// Per-call limits.
    pub limits: PluginLimits,
    /// Period of the backup directory scan (file events trigger scans sooner).
    pub rescan: Duration,
}

impl PluginSettings {
    /// Settings from the gateway config.
    pub fn from_gateway(gw: &GatewaySettings) -> Self {
        Self {
            dir: gw.plugins_dir.clone(),
            cache_dir: Some(gw.state_dir.join("plugin-cache")),
            limits: PluginLimits::default(),
            rescan: Duration::from_secs(5),
        }
    }
}

/// Why the plugin runtime could not start.
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    /// No engine.
    #[error("{0}")]
    Engine(String),
    /// The reload thread could not start.
    #[error("cannot start the plugin watcher: {0}")]
    Watcher(std::io::Error),
}

/// The plugin subsystem of one gateway: registry, reload watcher, and the
/// [`PolicyHooks`] that put plugin adapters in place of built-in policies.
pub struct PluginRuntime {
    registry: Arc<Registry>,
    _watcher: watcher::Watcher,
}

impl std::fmt::Debug for PluginRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginRuntime")
            .field("dir", &self.registry.dir())
            .finish_non_exhaustive()
    }
}

impl PluginRuntime {
    /// Starts on the process's shared engine with local counters: loads what the
    /// directory holds now (before returning, so the first request can use it), then
    /// watches it.
    pub fn start(settings: PluginSettings) -> Result<Arc<Self>, PluginError> {
        let engine = PluginEngine::shared().map_err(PluginError::Engine)?;
        Self::start_with(engine, Arc::new(LocalCounters::new()), settings)
    }

    /// As [`start`](Self::start) with a given engine and counter store.
    pub fn start_with(
        engine: Arc<PluginEngine>,
        counters: Arc<dyn HostCounters>,
        settings: PluginSettings,
    ) -> Result<Arc<Self>, PluginError> {
        if !settings.dir.is_dir() {
            tracing::info!(
                dir = %settings.dir.display(),
                "the plugins directory does not exist; it is checked every {:?}",
                settings.rescan
            );
        }
        let host = Arc::new(Host {
            engine,
            limits: settings.limits.clone(),
            counters,
        });
        let registry = Arc::new(Registry::new(host, settings.dir.clone(), settings.cache_dir.clone()));
        registry.sync_dir();
        let watcher = watcher::start(&registry, settings.rescan).map_err(PluginError::Watcher)?;
        tracing::info!(
            dir = %settings.dir.display(),
            pooling = registry.host.engine.pooling(),
            "plugin runtime started"
        );
        Ok(Arc::new(Self {
            registry,
            _watcher: watcher,
        }))
    }

    /// The registry (slots, generations, stats).
    pub fn registry(&self) -> &Arc<Registry> {
        &self.registry
    }

    /// Scans the directory now (the watcher does this on its own; for tools and tests).
    pub fn rescan(&self) {
        self.registry.sync_dir();
    }

    /// A health-evaluator caller for `version`'s `plugins.health`, if it names one.
    pub fn health_evaluator(&self, version: &ServiceVersion) -> Option<health::PluginHealth> {
        let r = version.plugins.health.as_ref()?;
        let use_ = self
            .registry
            .register_use(&r.name, Kind::HealthEvaluator, &r.config, label(version));
        Some(health::PluginHealth::new(use_))
    }

    /// A rate-limiter caller for `version`'s `plugins.rate_limit`, if it names one.
    pub fn rate_limiter(&self, version: &ServiceVersion) -> Option<ratelimit::PluginLimiter> {
        let r = version.plugins.rate_limit.as_ref()?;
        let use_ = self
            .registry
            .register_use(&r.name, Kind::RateLimiter, &r.config, label(version));
        Some(ratelimit::PluginLimiter::new(use_))
    }
}

fn label(version: &ServiceVersion) -> String {
    format!("{}@{}", version.service, version.version)
}

impl PolicyHooks for PluginRuntime {
    fn balancer(&self, version: &ServiceVersion, builtin: Arc<dyn Balancer>) -> Arc<dyn Balancer> {
        let Some(r) = &version.plugins.balancer else {
            return builtin;
        };
        let use_ = self
            .registry
            .register_use(&r.name, Kind::Balancer, &r.config, label(version));
        Arc::new(balancer::PluginBalancer::new(use_, builtin))
    }

    fn retry(&self, version: &ServiceVersion, builtin: Arc<dyn RetryPolicy>) -> Arc<dyn RetryPolicy> {
        let Some(r) = &version.plugins.retry else {
            return builtin;
        };
        let use_ = self
            .registry
            .register_use(&r.name, Kind::RetryPolicy, &r.config, label(version));
        Arc::new(retry::PluginRetry::new(use_, builtin))
    }
}
