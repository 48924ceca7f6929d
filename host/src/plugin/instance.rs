//! Calling into a plugin safely, and the warm instances kept per worker thread.
//!
//! Every call gets a fresh epoch deadline, runs under `catch_unwind` (a host panic while
//! the plugin runs, such as blocking WASI I/O on a tokio worker, becomes a fault instead
//! of taking the worker down) and is classified when it fails. A store whose call failed
//! is never used again: wasmtime poisons an instance after a trap, so the caller drops it.

use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Weak};
use std::time::Duration;

use wasmtime::{Store, Trap};

use super::engine::{St, ticks};
use super::registry::PluginUse;
use super::stats::FaultKind;

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
    store: &mut Store<St>,
    deadline: Duration,
    what: &str,
    call: impl FnOnce(&mut Store<St>) -> wasmtime::Result<R>,
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

fn classify(e: &wasmtime::Error, st: &St, what: &str, deadline: Duration) -> Fault {
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
