//! Wiring: the only place that puts concrete types together. Starts the listeners
//! and background tasks, applies configs, and owns the shutdown tree.
//!
//! Shutdown is one tree: a root [`CancellationToken`] with a child for the proxy
//! listener, and one [`TaskTracker`] for every task (listeners, probes, the health
//! sweeper, the tier refresher, the config watcher, the rate-limit sync; the plugins
//! watcher hangs off the same root). Stopping
//! cancels the proxy child first, so in-flight requests drain while the admin API
//! still answers `/readyz` with 503 and rate limits keep counting; then it cancels
//! the root and waits for the tracker.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::admin::{self, AdminState};
use crate::config::model::{GatewaySettings, WorkerModel};
use crate::config::{Config, Loaded, Overrides};
use crate::control::{Cause, ControlEvent, ControlOptions, ControlPlane, ReloadOutcome, Served};
use crate::events::Events;
use crate::metrics::Metrics;
use crate::plugin::{PluginRuntime, PluginSettings};
use crate::proxy::ProxyContext;
use crate::proxy::server::{ServeOptions, serve};
use crate::snapshot::{self, BuiltinPolicies, LiveRegistry, PolicyHooks, ProbeScheduler, Snapshot};
use crate::tls::TlsRuntime;

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
    /// A TLS listener's certificate, key or CA file cannot be used.
    #[error("TLS files are unusable:\n{}", .0.iter().map(|e| format!("  - {e}")).collect::<Vec<_>>().join("\n"))]
    Tls(Vec<crate::config::ConfigError>),
    /// A proxy worker thread (the per-worker model) could not be started.
    #[error("cannot start proxy worker {id}: {source}")]
    Worker {
        /// The worker's number, from 1.
        id: u16,
        /// The cause.
        source: std::io::Error,
    },
}

/// How the gateway was started, for the admin API and reloads.
#[derive(Debug, Clone, Default)]
pub struct StartOptions {
    /// The config file, if the config came from one.
    pub config_path: Option<PathBuf>,
    /// Flag overrides.
    pub overrides: Overrides,
    /// Accept in-place edits of published versions, recording each
    /// (`--allow-published-edits`; emergencies only).
    pub allow_published_edits: bool,
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
    /// Listener bound and config loaded, not shutting down.
    pub ready: Arc<AtomicBool>,
    /// Wakes the tier refresher (health changed).
    pub tiers_changed: Notify,
    /// Active health probes, one task per endpoint with a check.
    pub probes: ProbeScheduler,
    /// Certificates of the TLS listeners.
    pub tls: Arc<TlsRuntime>,
    /// The operator-visible event journal (dashboard, `GET /admin/v1/events`).
    pub events: Arc<Events>,
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
}

impl Served for AppState {
    /// Builds the config's snapshot (keeping live state of endpoints that stay),
    /// swaps it in atomically, and forgets state of endpoints that left.
    fn apply(&self, config: Config) -> u64 {
        let generation = self.generation.fetch_add(1, Ordering::AcqRel) + 1;
        if let Err(errors) = self.tls.update(&config.gateway.listeners) {
            // Checked before apply; files that changed since keep the old certificates.
            for e in errors {
                tracing::error!(path = %e.path, "TLS files not replaced: {}", e.message);
            }
        }
        let snapshot = Snapshot::build(
            Arc::new(config),
            generation,
            &self.live,
            &self.proxy.metrics,
            self.hooks.as_ref(),
        );
        let keys = snapshot.endpoint_keys();
        let services = snapshot.service_names();
        let snapshot = Arc::new(snapshot);
        self.proxy.snapshot.store(snapshot.clone());
        self.live.retain(&keys, &services);
        self.probes.reconcile(&snapshot);
        self.proxy.metrics.config_generation.set(generation as i64);
        self.tiers_changed.notify_one();
        generation
    }

    fn config(&self) -> Arc<Config> {
        self.snapshot().config.clone()
    }

    fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    fn record(&self, event: ControlEvent) {
        match event {
            ControlEvent::Reload(ok) => self.proxy.metrics.config_reload(ok),
            ControlEvent::PublishedEdit => {
                self.proxy.metrics.published_edits.inc();
            }
        }
    }

    fn config_event(&self, generation: u64, source: &str, error: Option<String>) {
        self.events.config(generation, source, error);
    }
}

/// A running gateway.
#[derive(Debug)]
pub struct Gateway {
    /// Where the proxy listens.
    pub proxy_addr: SocketAddr,
    /// Every proxy listener's address, in `gateway.listeners` order.
    pub listener_addrs: Vec<SocketAddr>,
    /// Where the admin API listens.
    pub admin_addr: SocketAddr,
    /// Shared state.
    pub state: Arc<AppState>,
    /// Config reloads and admin edits.
    pub control: Arc<ControlPlane>,
    /// What the admin API reads (`gatehouse demo` installs its node switch here).
    pub admin: Arc<AdminState>,
    tree: ShutdownTree,
}

/// The root token, the proxy listener's child, and the tracker of every task.
#[derive(Debug)]
struct ShutdownTree {
    root: CancellationToken,
    proxy: CancellationToken,
    tracker: TaskTracker,
    proxy_task: JoinHandle<bool>,
}

/// How often tiers are recomputed even without a health change (slow start ramps).
const TIER_REFRESH: Duration = Duration::from_millis(250);
/// How long stopping waits for background tasks after the proxy drained.
const STOP_DEADLINE: Duration = Duration::from_secs(10);

impl Gateway {
    /// Binds the listeners and starts serving `loaded`, with the plugin runtime watching
    /// `gateway.plugins_dir` (if the plugin engine cannot start, the built-in policies
    /// serve and the error is logged).
    pub async fn start(loaded: Loaded, options: StartOptions) -> Result<Gateway, StartError> {
        let root = CancellationToken::new();
        let events = Arc::new(Events::default());
        let settings = PluginSettings {
            cancel: root.child_token(),
            events: events.clone(),
            ..PluginSettings::from_gateway(&loaded.config.gateway)
        };
        let plugins = match PluginRuntime::start(settings) {
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
        Self::start_inner(loaded, options, hooks, plugins, root, events).await
    }

    /// As [`Gateway::start`], with given policy hooks and no plugin runtime.
    pub async fn start_with(
        loaded: Loaded,
        options: StartOptions,
        hooks: Arc<dyn PolicyHooks>,
    ) -> Result<Gateway, StartError> {
        Self::start_inner(loaded, options, hooks, None, CancellationToken::new(), Arc::default()).await
    }

    async fn start_inner(
        loaded: Loaded,
        options: StartOptions,
        hooks: Arc<dyn PolicyHooks>,
        plugins: Option<Arc<PluginRuntime>>,
        root: CancellationToken,
        events: Arc<Events>,
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
        let tls = Arc::new(TlsRuntime::start(&gw.listeners).map_err(StartError::Tls)?);
        let workers = match gw.worker_model {
            WorkerModel::PerWorker => crate::proxy::workers::count(),
            WorkerModel::Shared => 1,
        };
        let mut proxy_listeners = Vec::with_capacity(gw.listeners.len());
        for l in &gw.listeners {
            proxy_listeners.push(bind_proxy(l.addr, workers).await?);
        }
        let listener_addrs: Vec<SocketAddr> = proxy_listeners.iter().map(|(_, a)| *a).collect();
        let proxy_addr = listener_addrs[0];
        let (admin_listener, admin_addr) = bind("admin", gw.admin_listen).await?;

        let tracker = TaskTracker::new();
        let state = build_state(&loaded.config, hooks, plugins, events, tls.clone(), &root, &tracker);
        let options = ControlOptions {
            path: options.config_path,
            overrides: options.overrides,
            allow_published_edits: options.allow_published_edits,
        };
        let control = start_control(&state, loaded, options, &root, &tracker).await;
        let proxy = root.child_token();
        let listeners = proxy_listeners.into_iter().map(|(l, _)| l).collect();
        let proxy_task = match spawn_proxies(&state, &gw, listeners, &tls, &proxy, &tracker) {
            Ok(task) => task,
            Err(e) => {
                root.cancel();
                return Err(e);
            }
        };
        let admin = Arc::new(AdminState {
            control: control.clone(),
            proxy: state.proxy.clone(),
            ready: state.ready.clone(),
            token: admin_token,
            plugins: state.plugins.clone(),
            events: state.events.clone(),
            limits: state.live.limits.clone(),
            started: std::time::SystemTime::now(),
            demo: std::sync::OnceLock::new(),
            tls: tls.clone(),
            stop: root.child_token(),
            tasks: tracker.clone(),
        });
        spawn_background(&state, admin.clone(), admin_listener, &root, &tracker);
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
            listener_addrs,
            admin_addr,
            state,
            control,
            admin,
            tree: ShutdownTree {
                root,
                proxy,
                tracker,
                proxy_task,
            },
        })
    }

    /// Begins a graceful shutdown: not ready, stop accepting, finish in-flight requests.
    pub fn begin_shutdown(&self) {
        self.state.ready.store(false, Ordering::Release);
        self.tree.proxy.cancel();
    }

    /// Re-reads the config file now (SIGHUP) and serves it if it is valid, even when
    /// its content looks unchanged.
    pub async fn reload(&self) -> ReloadOutcome {
        self.control.reload_async(Cause::Signal, true).await
    }

    /// Shuts down and waits; returns whether in-flight requests finished within the
    /// grace period.
    pub async fn shutdown(self) -> bool {
        self.begin_shutdown();
        let ShutdownTree {
            root,
            tracker,
            proxy_task,
            ..
        } = self.tree;
        let finished = proxy_task.await.unwrap_or(false);
        root.cancel();
        self.state.probes.stop();
        tracker.close();
        if tokio::time::timeout(STOP_DEADLINE, tracker.wait()).await.is_err() {
            tracing::warn!(
                tasks = tracker.len(),
                "background tasks still running at the stop deadline"
            );
        }
        tracing::info!(clean = finished, "gatehouse stopped");
        finished
    }
}

/// A proxy listener: one socket on the shared runtime, or one `SO_REUSEPORT`
/// socket per worker (the per-worker model).
enum ProxySockets {
    Shared(TcpListener),
    PerWorker(Vec<std::net::TcpListener>),
}

/// Binds a proxy listener for `workers` workers (1: the shared runtime).
async fn bind_proxy(addr: SocketAddr, workers: usize) -> Result<(ProxySockets, SocketAddr), StartError> {
    if workers <= 1 {
        let (l, local) = bind("proxy", addr).await?;
        return Ok((ProxySockets::Shared(l), local));
    }
    let (sockets, local) = crate::proxy::workers::bind_reuseport(addr, workers).map_err(|source| StartError::Bind {
        what: "proxy",
        addr,
        source,
    })?;
    Ok((ProxySockets::PerWorker(sockets), local))
}

/// Binds one listener; returns it with the address it got (port 0 picks one).
async fn bind(what: &'static str, addr: SocketAddr) -> Result<(TcpListener, SocketAddr), StartError> {
    let fail = |source| StartError::Bind { what, addr, source };
    let listener = TcpListener::bind(addr).await.map_err(fail)?;
    let local = listener.local_addr().map_err(fail)?;
    Ok((listener, local))
}

/// The shared state, serving a placeholder snapshot until the first apply.
fn build_state(
    config: &Config,
    hooks: Arc<dyn PolicyHooks>,
    plugins: Option<Arc<PluginRuntime>>,
    events: Arc<Events>,
    tls: Arc<TlsRuntime>,
    root: &CancellationToken,
    tracker: &TaskTracker,
) -> Arc<AppState> {
    let metrics = Arc::new(Metrics::new());
    if let Some(rt) = &plugins {
        let collector = crate::plugin::metrics::PluginCollector::new(Arc::downgrade(rt.registry()));
        metrics.register(|r| r.register_collector(Box::new(collector)));
    }
    let tls_collector = crate::tls::metrics::TlsCollector::new(Arc::downgrade(&tls));
    metrics.register(|r| r.register_collector(Box::new(tls_collector)));
    let placeholder = Snapshot::build(
        Arc::new(config.clone()),
        0,
        &LiveRegistry::new(),
        &metrics,
        &BuiltinPolicies,
    );
    let live = LiveRegistry::with_events(events.clone());
    live.health_hub().register(&metrics);
    live.limits.register_metrics(&metrics);
    Arc::new(AppState {
        proxy: Arc::new(ProxyContext {
            snapshot: Arc::new(ArcSwap::from_pointee(placeholder)),
            metrics,
        }),
        live,
        hooks,
        plugins,
        ready: Arc::new(AtomicBool::new(false)),
        tiers_changed: Notify::new(),
        probes: ProbeScheduler::new(tokio::runtime::Handle::current(), tracker.clone(), root.clone()),
        tls,
        events,
        generation: AtomicU64::new(0),
    })
}

/// The admin listener and the background tasks, all under `root` and `tracker`.
fn spawn_background(
    state: &Arc<AppState>,
    admin: Arc<AdminState>,
    admin_listener: TcpListener,
    root: &CancellationToken,
    tracker: &TaskTracker,
) {
    let admin_stop = root.child_token();
    tracker.spawn(async move {
        serve(
            admin_listener,
            None,
            move |req, _remote| admin::handle(admin.clone(), req),
            admin_stop,
            ServeOptions {
                header_timeout: Duration::from_secs(10),
                grace: Duration::from_secs(5),
            },
        )
        .await;
    });
    tracker.spawn(refresh_tiers(state.clone(), root.clone()));
    tracker.spawn(snapshot::sweep(
        state.proxy.snapshot.clone(),
        state.live.health_hub().clone(),
        root.clone(),
    ));
    let limits = state.live.limits.clone();
    let stop = root.clone();
    tracker.spawn(async move {
        limits.clone().run(stop).await;
        limits.close().await;
    });
}

/// Recomputes tiers when health changes and periodically (slow start).
async fn refresh_tiers(state: Arc<AppState>, shutdown: CancellationToken) {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = state.tiers_changed.notified() => {}
            _ = tokio::time::sleep(TIER_REFRESH) => {}
        }
        state.snapshot().refresh_tiers();
    }
}

/// The control plane: serves the loaded config (or the cache, see
/// `control::published`), catches a change made to the file since it was loaded,
/// then watches the file under the shutdown tree.
async fn start_control(
    state: &Arc<AppState>,
    loaded: Loaded,
    options: ControlOptions,
    root: &CancellationToken,
    tracker: &TaskTracker,
) -> Arc<ControlPlane> {
    let control = ControlPlane::start(state.clone(), loaded, options);
    state.events.config(state.generation(), "startup", None);
    state.proxy.metrics.config_reload(true);
    control.reload_async(Cause::FileChange, false).await;
    let runtime = tokio::runtime::Handle::current();
    if let Some(watcher) = crate::control::watch::spawn_until(control.clone(), runtime, root) {
        // Cancelling stops the watcher thread; joining it is blocking work.
        let root = root.clone();
        tracker.spawn(async move {
            root.cancelled().await;
            let _ = tokio::task::spawn_blocking(move || watcher.stop()).await;
        });
    }
    control
}

/// Serves every proxy listener under the `proxy` token: on the shared runtime, or
/// on one thread per worker (the per-worker model). The task ends when they all
/// stopped, with whether every connection finished within the grace period.
fn spawn_proxies(
    state: &Arc<AppState>,
    gw: &GatewaySettings,
    listeners: Vec<ProxySockets>,
    tls: &Arc<TlsRuntime>,
    proxy: &CancellationToken,
    tracker: &TaskTracker,
) -> Result<JoinHandle<bool>, StartError> {
    let opts = ServeOptions {
        header_timeout: gw.client_header_timeout,
        grace: gw.shutdown_grace,
    };
    let ctx = state.proxy.clone();
    let handler = move |req, remote| {
        let ctx = ctx.clone();
        async move { crate::proxy::pipeline::handle(&ctx, req, remote).await }
    };
    let mut proxies = tokio::task::JoinSet::new();
    let mut per_worker: Vec<Vec<_>> = Vec::new();
    for (i, listener) in listeners.into_iter().enumerate() {
        match listener {
            ProxySockets::Shared(l) => {
                proxies.spawn(serve(l, tls.listener(i), handler.clone(), proxy.clone(), opts));
            }
            ProxySockets::PerWorker(sockets) => {
                per_worker.resize_with(per_worker.len().max(sockets.len()), Vec::new);
                for (w, socket) in sockets.into_iter().enumerate() {
                    per_worker[w].push((socket, tls.listener(i)));
                }
            }
        }
    }
    for (w, sockets) in per_worker.into_iter().enumerate() {
        let id = u16::try_from(w + 1).unwrap_or(u16::MAX);
        let done = crate::proxy::workers::spawn(id, sockets, handler.clone(), proxy.clone(), opts)
            .map_err(|source| StartError::Worker { id, source })?;
        proxies.spawn(async move { done.await.unwrap_or(false) });
    }
    Ok(tracker.spawn(async move {
        let mut clean = true;
        while let Some(done) = proxies.join_next().await {
            clean &= done.unwrap_or(false);
        }
        clean
    }))
}
