//! The one wasmtime `Engine` of the process, its epoch ticker, the linker every plugin is
//! instantiated with, and the per-store state (`StoreData`): memory limiter, WASI context without
//! any capability, and the `host` imports' context.

use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use wasmtime::component::{HasSelf, Linker, ResourceTable};
use wasmtime::{Config, Enabled, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, ResourceLimiter, Store};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::bindings::{self, types::Level};
use super::counters::CounterScope;

pub use super::ticker::EPOCH_TICK;
use super::ticker::Ticker;

/// Sizing of the engine's instance pool.
#[derive(Debug, Clone)]
pub struct EngineSettings {
    /// Plugin instances that may exist at once (warm instances per worker thread, fresh
    /// instances of cold hooks, validation scratch instances).
    pub pool_instances: u32,
    /// Hard ceiling on one instance's linear memory (the per-instance cap of
    /// [`super::PluginLimits::memory`] is enforced below it).
    pub max_memory: usize,
}

impl Default for EngineSettings {
    fn default() -> Self {
        Self {
            pool_instances: 512,
            max_memory: 256 << 20,
        }
    }
}

/// Why the engine could not be built.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// wasmtime refused the configuration, even without pooling.
    #[error("cannot create the WebAssembly engine: {0:#}")]
    Engine(wasmtime::Error),
    /// The WASI or host imports could not be linked.
    #[error("cannot link the plugin imports: {0:#}")]
    Link(wasmtime::Error),
    /// The epoch ticker thread could not start.
    #[error("cannot start the epoch ticker: {0}")]
    Ticker(std::io::Error),
}

/// The engine, its linker and how instances are allocated.
pub struct PluginEngine {
    engine: Engine,
    linker: Linker<StoreData>,
    pooling: bool,
    compat: String,
    ticker: Arc<Ticker>,
}

impl std::fmt::Debug for PluginEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginEngine")
            .field("pooling", &self.pooling)
            .field("compat", &self.compat)
            .finish_non_exhaustive()
    }
}

fn base_config() -> Config {
    let mut c = Config::new();
    c.epoch_interruption(true)
        .concurrency_support(false)
        .max_wasm_stack(512 << 10)
        .cranelift_opt_level(wasmtime::OptLevel::Speed)
        .parallel_compilation(true)
        // Rust plugins need none of the GC proposals (and the build has no collector).
        .wasm_gc(false)
        .wasm_function_references(false)
        .wasm_exceptions(false)
        .gc_support(false);
    c
}

impl PluginEngine {
    /// The process-wide engine (one `Engine` per process, docs/plugins.md), created on first use with the
    /// default settings. Every gateway in the process shares it and its ticker.
    pub fn shared() -> Result<Arc<PluginEngine>, String> {
        static SHARED: OnceLock<Result<Arc<PluginEngine>, String>> = OnceLock::new();
        SHARED
            .get_or_init(|| PluginEngine::new(&EngineSettings::default()).map_err(|e| e.to_string()))
            .clone()
    }

    /// Builds an engine with the pooling allocator, or with on-demand allocation if the
    /// pool cannot be reserved (small address spaces, `ulimit -v`), and starts its epoch
    /// ticker, which runs as long as the engine.
    pub fn new(settings: &EngineSettings) -> Result<Arc<PluginEngine>, EngineError> {
        Self::new_until(settings, CancellationToken::new())
    }

    /// As [`new`](Self::new), with an epoch ticker that stops when `cancel` is
    /// cancelled (after which plugin deadlines no longer fire: cancel it only when no
    /// plugin call can start any more).
    pub fn new_until(settings: &EngineSettings, cancel: CancellationToken) -> Result<Arc<PluginEngine>, EngineError> {
        let n = settings.pool_instances.max(1);
        let mut pool = PoolingAllocationConfig::default();
        pool.total_component_instances(n)
            .total_core_instances(4 * n)
            .total_memories(n)
            .total_tables(4 * n)
            .total_stacks(n.min(64))
            .max_memory_size(settings.max_memory)
            .linear_memory_keep_resident(64 << 10)
            .table_keep_resident(64 << 10)
            .pagemap_scan(Enabled::Auto);
        let mut pooled = base_config();
        pooled.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        let (engine, pooling) = match Engine::new(&pooled) {
            Ok(e) => (e, true),
            Err(e) => {
                tracing::warn!(
                    error = %format!("{e:#}"),
                    "cannot reserve the plugin instance pool; falling back to on-demand allocation"
                );
                (Engine::new(&base_config()).map_err(EngineError::Engine)?, false)
            }
        };
        let mut linker = Linker::<StoreData>::new(&engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker).map_err(EngineError::Link)?;
        deny_blocking_wasi(&mut linker).map_err(EngineError::Link)?;
        bindings::balancer::Balancer::add_to_linker::<StoreData, HasSelf<StoreData>>(&mut linker, |s| s)
            .map_err(EngineError::Link)?;
        super::bindings2::balancer::BalancerV2::add_to_linker::<StoreData, HasSelf<StoreData>>(&mut linker, |s| s)
            .map_err(EngineError::Link)?;
        let compat = compatibility(&engine);
        let ticker = Ticker::start(&engine, cancel).map_err(EngineError::Ticker)?;
        Ok(Arc::new(PluginEngine {
            engine,
            linker,
            pooling,
            compat,
            ticker,
        }))
    }

    /// The wasmtime engine.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// The linker (WASI without capabilities + the `host` imports).
    pub fn linker(&self) -> &Linker<StoreData> {
        &self.linker
    }

    /// Whether instances come from the pre-reserved pool.
    pub fn pooling(&self) -> bool {
        self.pooling
    }

    /// The epoch ticker (it sleeps while no plugin runs).
    pub fn ticker(&self) -> &Ticker {
        &self.ticker
    }

    /// Hex digest of everything that makes a compiled artifact loadable by this engine.
    pub fn compatibility(&self) -> &str {
        &self.compat
    }

    /// A store for one instance of a plugin working for `owner`, with its limiter
    /// installed and a deadline of `deadline` set (an epoch store without one traps at
    /// once).
    pub fn store(&self, owner: Owner, memory_cap: usize, deadline: Duration) -> Store<StoreData> {
        let mut store = Store::new(&self.engine, StoreData::new(owner, memory_cap, self.ticker.clone()));
        store.limiter(|s| &mut s.limiter);
        store.set_epoch_deadline(ticks(deadline));
        store
    }
}

/// WASI functions a plugin may not use, replaced by ones that fail the call.
///
/// Plugins have no stdio (they log through `host.log`) and must not block. The sync WASI
/// bindings run blocking operations with `Handle::block_on`, which panics on a tokio
/// worker; without a stdio stream or a blocking wait no such operation is reachable, so
/// a `println!` or a `sleep` in a plugin becomes an ordinary failed call.
const DENIED_WASI: [(&str, &str); 5] = [
    ("wasi:cli/stdin@0.2.12", "get-stdin"),
    ("wasi:cli/stdout@0.2.12", "get-stdout"),
    ("wasi:cli/stderr@0.2.12", "get-stderr"),
    ("wasi:io/poll@0.2.12", "poll"),
    ("wasi:io/poll@0.2.12", "[method]pollable.block"),
];

fn deny_blocking_wasi(linker: &mut Linker<StoreData>) -> wasmtime::Result<()> {
    linker.allow_shadowing(true);
    for (interface, func) in DENIED_WASI {
        linker.instance(interface)?.func_new(func, move |_, _, _, _| {
            Err(wasmtime::format_err!(
                "{interface}.{func} is not available to plugins (no stdio, no blocking); log with the host `log` import"
            ))
        })?;
    }
    linker.allow_shadowing(false);
    Ok(())
}

/// Epoch ticks for a deadline (rounded up, plus the tick in progress).
pub fn ticks(deadline: Duration) -> u64 {
    deadline.as_micros().div_ceil(EPOCH_TICK.as_micros()) as u64 + 1
}

fn compatibility(engine: &Engine) -> String {
    let mut h = std::hash::DefaultHasher::new();
    engine.precompile_compatibility_hash().hash(&mut h);
    env!("CARGO_PKG_VERSION").hash(&mut h);
    format!("{:016x}", h.finish())
}

/// Memory cap of one instance; remembers whether it refused growth, so a trap that
/// follows can be classified as running out of memory.
#[derive(Debug)]
pub struct Limiter {
    cap: usize,
    /// Growth was refused since the last reset.
    pub denied: bool,
}

impl ResourceLimiter for Limiter {
    fn memory_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        if desired > self.cap {
            self.denied = true;
            return Ok(false);
        }
        Ok(true)
    }

    fn table_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        if desired > MAX_TABLE_ELEMENTS {
            self.denied = true;
            return Ok(false);
        }
        Ok(true)
    }
}

const MAX_TABLE_ELEMENTS: usize = 100_000;

/// Most log lines one plugin may write per second; the rest are dropped and counted.
const LOG_LINES_PER_SEC: u32 = 50;

/// Who a store belongs to: the plugin's name and its log budget, shared by the stores of
/// one loaded file.
pub struct PluginCtx {
    /// Plugin name.
    pub name: Arc<str>,
    log_second: AtomicU64,
    log_lines: AtomicU32,
    /// Log lines dropped by the volume cap.
    pub logs_dropped: AtomicU64,
}

impl std::fmt::Debug for PluginCtx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginCtx")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl PluginCtx {
    /// A context for plugin `name`.
    pub fn new(name: &str) -> Arc<Self> {
        Arc::new(Self {
            name: name.into(),
            log_second: AtomicU64::new(0),
            log_lines: AtomicU32::new(0),
            logs_dropped: AtomicU64::new(0),
        })
    }

    fn admit_log(&self) -> bool {
        let second = super::counters::monotonic_us() / 1_000_000;
        if self.log_second.swap(second, Ordering::Relaxed) != second {
            self.log_lines.store(0, Ordering::Relaxed);
        }
        if self.log_lines.fetch_add(1, Ordering::Relaxed) < LOG_LINES_PER_SEC {
            return true;
        }
        self.logs_dropped.fetch_add(1, Ordering::Relaxed);
        false
    }
}

/// Whom a store works for: the plugin (name, log budget) and the counters its
/// `counter-add` reaches (the use's scope, or scratch counters during validation).
#[derive(Debug, Clone)]
pub struct Owner {
    /// The loaded file's context.
    pub ctx: Arc<PluginCtx>,
    /// The counters.
    pub counters: CounterScope,
}

/// What one plugin store holds next to the instance: the (empty) WASI context, the
/// memory limiter, the call context and counters, and the last error line logged.
pub struct StoreData {
    wasi: WasiCtx,
    table: ResourceTable,
    /// The memory cap.
    pub limiter: Limiter,
    ctx: Arc<PluginCtx>,
    counters: CounterScope,
    /// The last error-level line the plugin logged during the current call (its panic
    /// message, when the SDK's hook ran), for fault reports.
    pub last_error: Option<String>,
    /// Keeps the epoch advancing while this store runs plugin code.
    ticker: Arc<Ticker>,
    /// A 0.2 balancer's node set of its last `update`, by node id (endpoint index), for
    /// `host.node-stats`.
    pub nodes: Vec<Option<super::bindings2::NodeSource>>,
}

impl StoreData {
    fn new(Owner { ctx, counters }: Owner, memory_cap: usize, ticker: Arc<Ticker>) -> Self {
        Self {
            // No args, env, preopened directories, sockets or stdio.
            wasi: WasiCtx::builder().build(),
            table: ResourceTable::new(),
            limiter: Limiter {
                cap: memory_cap,
                denied: false,
            },
            ctx,
            counters,
            last_error: None,
            ticker,
            nodes: Vec::new(),
        }
    }

    /// Readies the state for a new call; the epoch advances until the returned guard
    /// is dropped.
    pub fn begin_call(&mut self) -> super::ticker::Awake {
        self.limiter.denied = false;
        self.last_error = None;
        self.ticker.enter()
    }

    pub(super) fn log(&mut self, level: Level, message: String) {
        let message: String = message.chars().take(2000).collect();
        if matches!(level, Level::Error) {
            self.last_error = Some(message.chars().take(300).collect());
        }
        if !self.ctx.admit_log() {
            return;
        }
        let plugin = &*self.ctx.name;
        match level {
            Level::Trace => tracing::trace!(target: "gatehouse::plugin", plugin, "{message}"),
            Level::Debug => tracing::debug!(target: "gatehouse::plugin", plugin, "{message}"),
            Level::Info => tracing::info!(target: "gatehouse::plugin", plugin, "{message}"),
            Level::Warn => tracing::warn!(target: "gatehouse::plugin", plugin, "{message}"),
            Level::Error => tracing::error!(target: "gatehouse::plugin", plugin, "{message}"),
        }
    }

    pub(super) fn counter_add(&mut self, key: u64, delta: i64, window_ms: u32) -> (i64, u32) {
        self.counters.add(key, delta, window_ms)
    }
}

impl WasiView for StoreData {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}
