//! Wiring: the only place that puts concrete types together. Starts the listeners
//! and background tasks, applies configs, and shuts everything down.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::net::TcpListener;
use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;

use crate::admin;
use crate::config::{Config, Loaded, Overrides};
use crate::control::{Cause, ControlPlane, ReloadOutcome, watch::Watcher};
use crate::health::{self, HealthManager};
use crate::metrics::Metrics;
use crate::plugin::{PluginRuntime, PluginSettings};
use crate::proxy::ProxyContext;
use crate::proxy::server::{ServeOptions, serve};
use crate::upstream::{BuiltinPolicies, LiveRegistry, PolicyHooks, Snapshot};

/// Why the gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A listener could not be bound.
    #[error("cannot listen on {addr} ({what}): {source}")]
    Bind {
        /// `proxy` or `admin`.
        what: &'static str,
        /// The address.
        addr: SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
    /// The admin API would be reachable from other hosts without a token.
    #[error(
        "refusing to serve the admin API on non-loopback {addr} without a token: set gateway.admin.token_env and that variable"
    )]
    AdminNotLoopback {
        /// The address.
        addr: SocketAddr,
    },
}

/// How the gateway was started, for the admin API and reloads.
#[derive(Debug, Clone, Default)]
pub struct StartOptions {
    /// The config file, if the config came from one.
    pub config_path: Option<PathBuf>,
    /// Flag overrides.
    pub overrides: Overrides,
}

/// State shared by the listeners and background tasks.
pub struct AppState {
    /// What the request path reads.
    pub proxy: Arc<ProxyContext>,
    /// Live state that outlives snapshots.
    pub live: LiveRegistry,
    /// Policy replacements (plugins).
    pub hooks: Arc<dyn PolicyHooks>,
    /// The plugin runtime, when the gateway runs one (for the admin API).
    pub plugins: Option<Arc<PluginRuntime>>,
    /// The raw document being served (what admin edits change).
    pub raw: std::sync::Mutex<crate::config::RawConfig>,
    /// How the gateway was started.
    pub options: StartOptions,
    /// Listener bound and config loaded, not shutting down.
    pub ready: AtomicBool,
    /// Wakes the tier refresher (health changed).
    pub tiers_changed: Notify,
    /// Admin bearer token, if configured.
    pub admin_token: Option<String>,
    /// Active health probes, one task per endpoint with a check.
    pub health: HealthManager,
    generation: AtomicU64,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("generation", &self.generation.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl AppState {
    /// The snapshot being served.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.proxy.snapshot.load_full()
    }

    /// The config being served.
    pub fn config(&self) -> Arc<Config> {
        self.snapshot().config.clone()
    }

    /// Serves a new validated config: builds its snapshot (keeping live state of
    /// endpoints that stay), swaps it in atomically, and forgets state of endpoints
    /// that left. Returns the new generation.
    pub fn apply(&self, loaded: Loaded) -> u64 {
        let generation = self.generation.fetch_add(1, Ordering::AcqRel) + 1;
        let config = Arc::new(loaded.config);
        let snapshot = Snapshot::build(config, generation, &self.live, &self.proxy.metrics, self.hooks.as_ref());
        let keys = snapshot.endpoint_keys();
        let services = snapshot.service_names();
        *self.raw.lock().unwrap_or_else(|p| p.into_inner()) = loaded.raw;
        let snapshot = Arc::new(snapshot);
        self.proxy.snapshot.store(snapshot.clone());
        self.live.retain(&keys, &services);
        self.health.reconcile(&snapshot);
        self.proxy.metrics.config_generation.set(generation as i64);
        self.tiers_changed.notify_one();
        generation
    }

    /// Current config generation.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }
}

/// A running gateway.
#[derive(Debug)]
pub struct Gateway {
    /// Where the proxy listens.
    pub proxy_addr: SocketAddr,
    /// Where the admin API listens.
    pub admin_addr: SocketAddr,
    /// Shared state.
    pub state: Arc<AppState>,
    /// Config reloads and admin edits.
    pub control: Arc<ControlPlane>,
    shutdown: watch::Sender<bool>,
    admin_shutdown: watch::Sender<bool>,
    watcher: Option<Watcher>,
    proxy_task: JoinHandle<bool>,
    tasks: Vec<JoinHandle<()>>,
}

/// How often tiers are recomputed even without a health change (slow start ramps).
const TIER_REFRESH: Duration = Duration::from_millis(250);

impl Gateway {
    /// Binds the listeners and starts serving `loaded`, with the plugin runtime watching
    /// `gateway.plugins_dir` (if the plugin engine cannot start, the built-in policies
    /// serve and the error is logged).
    pub async fn start(loaded: Loaded, options: StartOptions) -> Result<Gateway, StartError> {
        let plugins = match PluginRuntime::start(PluginSettings::from_gateway(&loaded.config.gateway)) {
            Ok(rt) => Some(rt),
            Err(e) => {
                tracing::error!(error = %e, "plugins are unavailable; built-in policies serve");
                None
            }
        };
        let hooks: Arc<dyn PolicyHooks> = match &plugins {
            Some(rt) => rt.clone(),
            None => Arc::new(BuiltinPolicies),
        };
        Self::start_inner(loaded, options, hooks, plugins).await
    }

    /// As [`Gateway::start`], with given policy hooks and no plugin runtime.
    pub async fn start_with(
        loaded: Loaded,
        options: StartOptions,
        hooks: Arc<dyn PolicyHooks>,
    ) -> Result<Gateway, StartError> {
        Self::start_inner(loaded, options, hooks, None).await
    }

    async fn start_inner(
        loaded: Loaded,
        options: StartOptions,
        hooks: Arc<dyn PolicyHooks>,
        plugins: Option<Arc<PluginRuntime>>,
    ) -> Result<Gateway, StartError> {
        let gw = loaded.config.gateway.clone();
        let admin_token = gw
            .admin_token_env
            .as_ref()
            .and_then(|name| std::env::var(name).ok())
            .filter(|t| !t.is_empty());
        if !gw.admin_listen.ip().is_loopback() && admin_token.is_none() {
            return Err(StartError::AdminNotLoopback { addr: gw.admin_listen });
        }
        let proxy_listener = TcpListener::bind(gw.listen).await.map_err(|source| StartError::Bind {
            what: "proxy",
            addr: gw.listen,
            source,
        })?;
        let admin_listener = TcpListener::bind(gw.admin_listen)
            .await
            .map_err(|source| StartError::Bind {
                what: "admin",
                addr: gw.admin_listen,
                source,
            })?;
        let proxy_addr = proxy_listener.local_addr().map_err(|source| StartError::Bind {
            what: "proxy",
            addr: gw.listen,
            source,
        })?;
        let admin_addr = admin_listener.local_addr().map_err(|source| StartError::Bind {
            what: "admin",
            addr: gw.admin_listen,
            source,
        })?;

        let metrics = Arc::new(Metrics::new());
        if let Some(rt) = &plugins {
            let collector = crate::plugin::metrics::PluginCollector::new(Arc::downgrade(rt.registry()));
            metrics.register(|r| r.register_collector(Box::new(collector)));
        }
        let placeholder = Snapshot::build(
            Arc::new(loaded.config.clone()),
            0,
            &LiveRegistry::new(),
            &metrics,
            &BuiltinPolicies,
        );
        let state = Arc::new(AppState {
            proxy: Arc::new(ProxyContext {
                snapshot: Arc::new(ArcSwap::from_pointee(placeholder)),
                metrics,
            }),
            live: LiveRegistry::new(),
            hooks,
            plugins,
            raw: std::sync::Mutex::new(loaded.raw.clone()),
            options,
            ready: AtomicBool::new(false),
            tiers_changed: Notify::new(),
            admin_token,
            health: HealthManager::new(tokio::runtime::Handle::current()),
            generation: AtomicU64::new(0),
        });
        state.live.health_hub().register(&state.proxy.metrics);
        state.apply(loaded);
        state.proxy.metrics.config_reload(true);
        let (control, watcher) = start_control(&state).await;

        let (shutdown, rx) = watch::channel(false);
        let serve_opts = ServeOptions {
            header_timeout: gw.client_header_timeout,
            grace: gw.shutdown_grace,
        };
        let ctx = state.proxy.clone();
        let proxy_task = tokio::spawn(serve(
            proxy_listener,
            move |req, remote| {
                let ctx = ctx.clone();
                async move { crate::proxy::pipeline::handle(&ctx, req, remote).await }
            },
            rx.clone(),
            serve_opts,
        ));
        // The admin listener outlives the proxy's drain, so `/readyz` answers 503 then.
        let (admin_shutdown, admin_rx) = watch::channel(false);
        let admin_control = control.clone();
        let admin_task = tokio::spawn(async move {
            serve(
                admin_listener,
                move |req, _remote| admin::handle(admin_control.clone(), req),
                admin_rx,
                ServeOptions {
                    header_timeout: Duration::from_secs(10),
                    grace: Duration::from_secs(5),
                },
            )
            .await;
        });
        let refresher = tokio::spawn(refresh_tiers(state.clone(), shutdown.subscribe()));
        let sweeper = tokio::spawn(health::sweep(
            state.proxy.snapshot.clone(),
            state.live.health_hub().clone(),
            shutdown.subscribe(),
        ));
        let limits = tokio::spawn(state.live.limits.clone().run(shutdown.subscribe()));
        state.ready.store(true, Ordering::Release);
        tracing::info!(
            proxy = %proxy_addr,
            admin = %admin_addr,
            group = %gw.group,
            zone = %gw.zone,
            region = %gw.region,
            "gatehouse is serving"
        );
        Ok(Gateway {
            proxy_addr,
            admin_addr,
            state,
            control,
            shutdown,
            admin_shutdown,
            watcher,
            proxy_task,
            tasks: vec![admin_task, refresher, sweeper, limits],
        })
    }

    /// Begins a graceful shutdown: not ready, stop accepting, finish in-flight requests.
    pub fn begin_shutdown(&self) {
        self.state.ready.store(false, Ordering::Release);
        let _ = self.shutdown.send(true);
    }

    /// Re-reads the config file now (SIGHUP) and serves it if it is valid, even when
    /// its content looks unchanged.
    pub async fn reload(&self) -> ReloadOutcome {
        self.control.reload_async(Cause::Signal, true).await
    }

    /// Shuts down and waits; returns whether in-flight requests finished within the grace period.
    pub async fn shutdown(mut self) -> bool {
        self.begin_shutdown();
        if let Some(w) = self.watcher.take() {
            let _ = tokio::task::spawn_blocking(move || w.stop()).await;
        }
        self.state.health.stop();
        let finished = self.proxy_task.await.unwrap_or(false);
        let _ = self.admin_shutdown.send(true);
        self.state.live.limits.close().await;
        for t in self.tasks {
            t.abort();
            let _ = t.await;
        }
        tracing::info!(clean = finished, "gatehouse stopped");
        finished
    }
}

/// Starts the control plane: records the config file's current content as the
/// source of what is served (catching a change made since it was loaded) and
/// starts watching it.
async fn start_control(state: &Arc<AppState>) -> (Arc<ControlPlane>, Option<Watcher>) {
    let control = ControlPlane::new(state.clone());
    control.reload_async(Cause::FileChange, false).await;
    let watcher = crate::control::watch::spawn(control.clone(), tokio::runtime::Handle::current());
    (control, watcher)
}

/// Recomputes tiers when health changes and periodically (slow start).
async fn refresh_tiers(state: Arc<AppState>, mut shutdown: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = shutdown.wait_for(|s| *s) => return,
            _ = state.tiers_changed.notified() => {}
            _ = tokio::time::sleep(TIER_REFRESH) => {}
        }
        state.snapshot().refresh_tiers();
    }
}
