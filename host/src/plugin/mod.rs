//! WebAssembly plugins: policies users write in Rust against `wit/` and drop into the
//! plugins directory (`docs/plugins.md`).
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
//! - adapters, one per policy trait, each carrying the built-in as its fallback:
//!   [`balancer`], [`retry`], [`health`] and [`ratelimit`] (which also applies the
//!   built-in rules alongside the plugin).
//! - [`counters`]: the `host.counter-add` import on the gateway's shared counters,
//!   namespaced per plugin and service.
//! - [`report`] and [`metrics`]: what operators see (the admin API renders the report).
//!
//! [`PluginRuntime`] ties them together and implements [`PolicyHooks`], so a snapshot
//! build swaps a service's built-in policy for its plugin adapter.

pub mod balancer;
mod bindings;
pub mod bindings2;
pub mod check;
pub mod counters;
pub mod engine;
pub mod health;
pub mod instance;
pub mod keys;
pub mod loader;
pub mod metrics;
#[cfg(test)]
mod policy_tests;
pub mod ratelimit;
pub mod registry;
pub mod report;
pub mod retry;
pub mod stats;
#[cfg(test)]
mod tests;
pub mod ticker;
pub mod v2;
pub mod watcher;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

pub use engine::{EngineSettings, PluginEngine};
pub use loader::Kind;
pub use registry::{Generation, Registry, Slot};
pub use stats::FaultKind;

use crate::balance::Balancer;
use crate::config::model::{GatewaySettings, PluginRef, ServiceVersion};
use crate::health::{EndpointHealth, HealthEvaluator};
use crate::ratelimit::RateLimiter;
use crate::retry::RetryPolicy;
use crate::snapshot::PolicyHooks;
use counters::HostCounters;
use registry::{Host, PluginUse};

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
    /// Stops the plugins watcher when cancelled (a child of the gateway's shutdown tree).
    pub cancel: CancellationToken,
    /// The operator-visible journal that loads and faults are recorded in.
    pub events: Arc<crate::events::Events>,
    /// The gateway's zone and region, for 0.2 balancers.
    pub placement: v2::Placement,
}

impl PluginSettings {
    /// Settings from the gateway config.
    pub fn from_gateway(gw: &GatewaySettings) -> Self {
        Self {
            dir: gw.plugins_dir.clone(),
            cache_dir: Some(gw.state_dir.join("plugin-cache")),
            limits: PluginLimits::default(),
            rescan: Duration::from_secs(5),
            cancel: CancellationToken::new(),
            events: Arc::default(),
            placement: v2::Placement {
                zone: gw.zone.clone(),
                region: gw.region.clone(),
            },
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
    /// Starts on the process's shared engine: loads what the directory holds now (before
    /// returning, so the first request can use it), then watches it. Plugin counters are
    /// unit-local until the first snapshot hands over the gateway's (see
    /// [`HostCounters`]).
    pub fn start(settings: PluginSettings) -> Result<Arc<Self>, PluginError> {
        let engine = PluginEngine::shared().map_err(PluginError::Engine)?;
        Self::start_with(engine, settings)
    }

    /// As [`start`](Self::start) with a given engine.
    pub fn start_with(engine: Arc<PluginEngine>, settings: PluginSettings) -> Result<Arc<Self>, PluginError> {
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
            counters: Arc::new(HostCounters::new()),
            events: settings.events.clone(),
            placement: settings.placement.clone(),
        });
        let registry = Arc::new(Registry::new(host, settings.dir.clone(), settings.cache_dir.clone()));
        registry.sync_dir();
        let watcher = watcher::start(&registry, settings.rescan, &settings.cancel).map_err(PluginError::Watcher)?;
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

    /// The counters behind `host.counter-add`.
    pub fn counters(&self) -> &Arc<HostCounters> {
        &self.registry.host.counters
    }

    /// Registers `version`'s use of the plugin `r` names as a `kind`.
    fn register(&self, r: &PluginRef, kind: Kind, version: &ServiceVersion) -> Arc<PluginUse> {
        self.registry
            .register_use(&r.name, kind, &r.config, &version.service, &version.version)
    }
}

impl PolicyHooks for PluginRuntime {
    fn balancer(&self, version: &ServiceVersion, builtin: Arc<dyn Balancer>) -> Arc<dyn Balancer> {
        self.balancer_with_health(version, builtin, &[])
    }

    fn balancer_with_health(
        &self,
        version: &ServiceVersion,
        builtin: Arc<dyn Balancer>,
        health: &[Arc<EndpointHealth>],
    ) -> Arc<dyn Balancer> {
        let Some(r) = &version.plugins.balancer else {
            return builtin;
        };
        Arc::new(
            balancer::PluginBalancer::new(self.register(r, Kind::Balancer, version), builtin)
                .with_health(health.to_vec()),
        )
    }

    fn retry(&self, version: &ServiceVersion, builtin: Arc<dyn RetryPolicy>) -> Arc<dyn RetryPolicy> {
        let Some(r) = &version.plugins.retry else {
            return builtin;
        };
        Arc::new(retry::PluginRetry::new(
            self.register(r, Kind::RetryPolicy, version),
            builtin,
        ))
    }

    fn health_evaluator(
        &self,
        version: &ServiceVersion,
        builtin: Arc<dyn HealthEvaluator>,
    ) -> Arc<dyn HealthEvaluator> {
        let Some(r) = &version.plugins.health else {
            return builtin;
        };
        Arc::new(health::PluginEvaluator::new(
            self.register(r, Kind::HealthEvaluator, version),
            builtin,
        ))
    }

    /// Also hands the gateway's counters (`builtin.counters()`) to the plugin host, so
    /// every plugin's `counter-add` counts where the built-in limiter does: in this
    /// unit, or shared through Redis when `gateway.redis` is set.
    fn rate_limiter(&self, version: &ServiceVersion, builtin: Arc<dyn RateLimiter>) -> Arc<dyn RateLimiter> {
        if let Some(counters) = builtin.counters() {
            self.counters().bind(counters);
        }
        let Some(r) = &version.plugins.rate_limit else {
            return builtin;
        };
        Arc::new(ratelimit::PluginRateLimiter::new(
            self.register(r, Kind::RateLimiter, version),
            builtin,
        ))
    }
}
