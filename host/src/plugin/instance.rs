//! Calling into a plugin safely, and the warm instances kept per worker thread.
//!
//! Every call gets a fresh epoch deadline, runs under `catch_unwind` (a host panic while
//! the plugin runs, such as blocking WASI I/O on a tokio worker, becomes a fault instead
//! of taking the worker down) and is classified when it fails. A store whose call failed
//! is never used again: wasmtime poisons an instance after a trap, so the caller drops it.
//!
//! The adapters share one preamble ([`call_plugin`]: the serving generation, whether it
//! may serve this use, fault accounting), one way to start an instance ([`start`]), one
//! warm-instance cycle ([`on_warm`]) and one mapping of validation failures
//! ([`refused`], [`smoke_failed`]).

use std::cell::RefCell;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Weak};
use std::thread::LocalKey;
use std::time::Duration;

use wasmtime::{Store, Trap};

use super::bindings::types::RequestKey;
use super::engine::{Owner, StoreData, ticks};
use super::keys::{self, KeySource};
use super::loader::{RejectReason, Rejection, WorldTemplates};
use super::registry::{Generation, Host, PluginUse};
use super::stats::FaultKind;

/// What asking a plugin gave: its answer, or why the built-in decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Asked<R> {
    /// The plugin answered.
    Answer(R),
    /// No plugin for the use: no file serves, or it implements another world.
    Absent,
    /// The plugin declined (left the decision to the built-in on purpose).
    Declined,
    /// The call failed (counted; may disable the generation).
    Fault,
    /// The generation may not serve the use (`disabled`, `refused its config`).
    Unusable(&'static str),
}

impl<R> Asked<R> {
    /// The answer, if there is one.
    pub fn answer(self) -> Option<R> {
        match self {
            Asked::Answer(r) => Some(r),
            _ => None,
        }
    }

    /// Why the built-in decides (`None` when the plugin answered), for the debug header.
    pub fn why_builtin(&self) -> Option<&'static str> {
        match self {
            Asked::Answer(_) => None,
            Asked::Absent => Some("absent"),
            Asked::Declined => Some("declined"),
            Asked::Fault => Some("faulted"),
            Asked::Unusable(why) => Some(why),
        }
    }
}

/// Asks the plugin of `use_`, if a generation serves it with the world `pre` selects
/// and may serve this use (not disabled, config accepted): `call` gets the generation
/// and its pre-instantiated world, and answers `Ok(None)` to decline. Declines, faults
/// (which may disable the generation), fallbacks and refusals are counted apart.
pub fn ask_plugin<P, R>(
    use_: &PluginUse,
    pre: impl FnOnce(&WorldTemplates) -> Option<&P>,
    call: impl FnOnce(&Generation, &P) -> Result<Option<R>, Fault>,
) -> Asked<R> {
    let guard = use_.slot.current();
    let Some(generation) = guard.as_ref() else {
        return Asked::Absent;
    };
    let Some(pre) = pre(&generation.pres) else {
        return Asked::Absent;
    };
    if let Err(why) = use_.usable(generation) {
        return Asked::Unusable(why);
    }
    match call(generation, pre) {
        Ok(Some(r)) => Asked::Answer(r),
        Ok(None) => {
            generation.stats.decline();
            Asked::Declined
        }
        Err(fault) => {
            use_.fault(generation, fault);
            Asked::Fault
        }
    }
}

/// [`ask_plugin`], answering only the plugin's answer (`None`: the built-in decides).
pub fn call_plugin<P, R>(
    use_: &PluginUse,
    pre: impl FnOnce(&WorldTemplates) -> Option<&P>,
    call: impl FnOnce(&Generation, &P) -> Result<Option<R>, Fault>,
) -> Option<R> {
    ask_plugin(use_, pre, call).answer()
}

/// A fresh store with `world` instantiated and `init(config)` accepted, all within the
/// init deadline. Every failure is a [`FaultKind::Init`] fault.
pub fn start<W>(
    host: &Host,
    owner: Owner,
    instantiate: impl FnOnce(&mut Store<StoreData>) -> wasmtime::Result<W>,
    init: impl FnOnce(&W, &mut Store<StoreData>) -> wasmtime::Result<Result<(), String>>,
) -> Result<(Store<StoreData>, W), Fault> {
    let deadline = host.limits.init_deadline;
    let mut store = host.engine.store(owner, host.limits.memory, deadline);
    let init_fault = |f: Fault| Fault::new(FaultKind::Init, f.message);
    let world = guarded(&mut store, deadline, "instantiate", instantiate).map_err(init_fault)?;
    guarded(&mut store, deadline, "init", |s| init(&world, s))
        .map_err(init_fault)?
        .map_err(|e| Fault::new(FaultKind::Init, format!("`init` refused the config: {e}")))?;
    Ok((store, world))
}

/// As [`start`], then asks the instance which request keys it wants (`keys`) and
/// compiles them; a bad list breaks the contract.
pub fn start_keyed<W>(
    host: &Host,
    owner: Owner,
    instantiate: impl FnOnce(&mut Store<StoreData>) -> wasmtime::Result<W>,
    init: impl FnOnce(&W, &mut Store<StoreData>) -> wasmtime::Result<Result<(), String>>,
    wanted: impl FnOnce(&W, &mut Store<StoreData>) -> wasmtime::Result<Vec<RequestKey>>,
) -> Result<(Store<StoreData>, W, Vec<KeySource>), Fault> {
    let (mut store, world) = start(host, owner, instantiate, init)?;
    let wanted = guarded(&mut store, host.limits.init_deadline, "keys", |s| wanted(&world, s))?;
    let keys = keys::compile(wanted).map_err(|e| Fault::new(FaultKind::Contract, format!("`keys` {e}")))?;
    Ok((store, world, keys))
}

/// Runs `call` on this thread's warm instance of `use_` for `generation`, made with
/// `make` (and counted) when there is none. An instance whose call failed, or that
/// reached the recycle count, is dropped. `Ok(None)` when this thread cannot hold one
/// (it is shutting down, or the call re-entered).
pub fn on_warm<I: 'static, R>(
    warm: &'static LocalKey<RefCell<WarmMap<I>>>,
    use_: &Arc<PluginUse>,
    generation: &Generation,
    make: impl FnOnce() -> Result<I, Fault>,
    call: impl FnOnce(&mut I) -> Result<R, Fault>,
) -> Result<Option<R>, Fault> {
    let outcome = warm.try_with(|warm| {
        let Ok(mut warm) = warm.try_borrow_mut() else {
            return Ok(None);
        };
        let i = match warm.find(use_.id, generation.id) {
            Some(i) => i,
            None => {
                let inst = make()?;
                generation.stats.instantiated();
                warm.insert(use_, generation.id, inst)
            }
        };
        let entry = warm.get(i);
        entry.calls += 1;
        let recycle = entry.calls >= use_.host.limits.recycle_after;
        let result = call(&mut entry.inst);
        if result.is_err() || recycle {
            warm.remove(i);
        }
        result.map(Some)
    });
    outcome.unwrap_or(Ok(None))
}

/// The rejection of a file or config whose instance could not start: `init` (refused
/// the config, trapped in it) or anything else (a smoke failure).
pub fn refused(f: Fault) -> Rejection {
    match f.kind {
        FaultKind::Init => Rejection::new(RejectReason::Init, f.message),
        _ => Rejection::new(RejectReason::Smoke, f.to_string()),
    }
}

/// The rejection of a file or config whose smoke call failed.
pub fn smoke_failed(f: Fault) -> Rejection {
    Rejection::new(RejectReason::Smoke, format!("smoke call: {f}"))
}

/// A failed plugin call.
#[derive(Debug, Clone)]
pub struct Fault {
    /// The class of failure.
    pub kind: FaultKind,
    /// What happened, for people.
    pub message: String,
}

impl Fault {
    /// A fault of `kind`.
    pub fn new(kind: FaultKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }
}

impl std::fmt::Display for Fault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.kind.as_str(), self.message)
    }
}

/// Runs `call` (the plugin function `what`) on `store` with `deadline`.
pub fn guarded<R>(
    store: &mut Store<StoreData>,
    deadline: Duration,
    what: &str,
    call: impl FnOnce(&mut Store<StoreData>) -> wasmtime::Result<R>,
) -> Result<R, Fault> {
    let _awake = store.data_mut().begin_call();
    store.set_epoch_deadline(ticks(deadline));
    let result = std::panic::catch_unwind(AssertUnwindSafe(|| call(&mut *store)));
    match result {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(classify(&e, store.data(), what, deadline)),
        Err(panic) => {
            if store.data().limiter.denied {
                return Err(Fault::new(
                    FaultKind::Memory,
                    format!("`{what}` hit the memory cap and failed"),
                ));
            }
            let msg = panic
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| panic.downcast_ref::<&str>().copied())
                .unwrap_or("(no message)");
            Err(Fault::new(
                FaultKind::Trap,
                format!(
                    "`{what}` failed in the host (the plugin may have used blocking WASI I/O such as stdout): {msg}"
                ),
            ))
        }
    }
}

fn classify(e: &wasmtime::Error, st: &StoreData, what: &str, deadline: Duration) -> Fault {
    let trap = e.downcast_ref::<Trap>().copied();
    let detail = match &st.last_error {
        Some(logged) => format!("{} ({logged})", first_line(e)),
        None => first_line(e),
    };
    if st.limiter.denied {
        return Fault::new(
            FaultKind::Memory,
            format!("`{what}` hit the memory cap and failed: {detail}"),
        );
    }
    match trap {
        Some(Trap::Interrupt) => Fault::new(
            FaultKind::Timeout,
            format!("`{what}` ran past its deadline of {deadline:?} and was interrupted"),
        ),
        _ => Fault::new(FaultKind::Trap, format!("`{what}` trapped: {detail}")),
    }
}

/// The root cause (a trap's description, a host function's error), without the wasm
/// backtrace wasmtime wraps it in.
fn first_line(e: &wasmtime::Error) -> String {
    let text = e.root_cause().to_string();
    let line = text.lines().next().unwrap_or_default();
    line.chars().take(300).collect()
}

/// A warm instance owned by one worker thread for one plugin use.
pub struct Warm<I> {
    use_id: u64,
    generation: u64,
    owner: Weak<PluginUse>,
    /// Calls made on this instance.
    pub calls: u64,
    /// The instance.
    pub inst: I,
}

/// The warm instances of one worker thread, for one plugin kind: a handful of entries,
/// looked up by plugin use. Entries of dropped uses and replaced generations are swept
/// whenever a new one is added, which is also when a thread meets a new generation.
pub struct WarmMap<I> {
    entries: Vec<Warm<I>>,
}

impl<I> Default for WarmMap<I> {
    fn default() -> Self {
        Self::new()
    }
}

impl<I> WarmMap<I> {
    /// Empty.
    pub const fn new() -> Self {
        Self { entries: Vec::new() }
    }

    /// Index of the warm instance of `use_id` for `generation`, if there is one. An
    /// instance of another generation is dropped.
    pub fn find(&mut self, use_id: u64, generation: u64) -> Option<usize> {
        let i = self.entries.iter().position(|w| w.use_id == use_id)?;
        if self.entries[i].generation == generation {
            return Some(i);
        }
        self.entries.swap_remove(i);
        None
    }

    /// Adds an instance (after sweeping stale ones) and returns its index.
    pub fn insert(&mut self, owner: &Arc<PluginUse>, generation: u64, inst: I) -> usize {
        self.entries.retain(|w| {
            w.owner
                .upgrade()
                .is_some_and(|u| u.slot.current_generation() == Some(w.generation))
        });
        self.entries.push(Warm {
            use_id: owner.id,
            generation,
            owner: Arc::downgrade(owner),
            calls: 0,
            inst,
        });
        self.entries.len() - 1
    }

    /// The entry at `i`.
    pub fn get(&mut self, i: usize) -> &mut Warm<I> {
        &mut self.entries[i]
    }

    /// Drops the entry at `i` (its store goes with it).
    pub fn remove(&mut self, i: usize) {
        self.entries.swap_remove(i);
    }

    /// Number of warm instances on this thread.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}
