//! The epoch ticker: advances the engine's epoch every [`EPOCH_TICK`] while plugin code
//! may run, so every call's deadline can fire, and sleeps when no plugin has run for a
//! while, so a gateway without plugin traffic does not wake a thousand times a second.
//!
//! Every entry into plugin code holds an [`Awake`] guard. The guard counts the call in
//! and wakes a sleeping ticker; the ticker goes to sleep only when no call is running
//! and none has started for [`IDLE_TICKS`] ticks. The two sides use sequentially
//! consistent operations on `running` and `parked`, so either the ticker sees the call
//! and keeps ticking, or the call sees the ticker parked and unparks it (an unpark
//! before the park makes the park return at once).
//!
//! The ticker thread ends when its engine is dropped or its [`CancellationToken`] is
//! cancelled (the gateway's shutdown tree); plugin deadlines no longer fire after that.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread::Thread;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use wasmtime::Engine;

/// How often the epoch advances while plugins run: the resolution of every plugin
/// deadline.
pub const EPOCH_TICK: Duration = Duration::from_millis(1);

/// Ticks without any plugin call after which the ticker sleeps.
pub const IDLE_TICKS: u32 = 200;

/// How long a sleeping ticker waits before checking whether its engine is gone or its
/// token cancelled (outside a tokio runtime, where a cancellation cannot wake it).
const PARK_CHECK: Duration = Duration::from_secs(1);

/// Shared between the ticker thread and the guards of plugin calls.
#[derive(Debug, Default)]
pub struct Ticker {
    /// Plugin calls in progress.
    running: AtomicUsize,
    /// A call started since the ticker last looked.
    used: AtomicBool,
    /// The ticker is asleep (or about to be).
    parked: AtomicBool,
    /// The ticker thread, to unpark it.
    thread: OnceLock<Thread>,
    /// Times the ticker went to sleep (for tests and diagnostics).
    sleeps: AtomicUsize,
    /// Stops the ticker thread.
    cancel: CancellationToken,
    /// The ticker thread has ended.
    ended: AtomicBool,
}

/// Keeps the ticker ticking while a plugin call runs.
#[derive(Debug)]
pub struct Awake(Arc<Ticker>);

impl Drop for Awake {
    fn drop(&mut self) {
        self.0.running.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Ticker {
    /// Starts the ticker thread for `engine`; it ends soon after the engine is dropped
    /// or `cancel` is cancelled.
    pub fn start(engine: &Engine, cancel: CancellationToken) -> std::io::Result<Arc<Ticker>> {
        let ticker = Arc::new(Ticker {
            cancel,
            ..Ticker::default()
        });
        let weak = engine.weak();
        let t = ticker.clone();
        let handle = std::thread::Builder::new()
            .name("gatehouse-epoch".into())
            .spawn(move || {
                t.run(&weak);
                t.ended.store(true, Ordering::Release);
            })?;
        let _ = ticker.thread.set(handle.thread().clone());
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            // Wake a sleeping ticker at once when cancelled.
            let t = Arc::downgrade(&ticker);
            let token = ticker.cancel.clone();
            rt.spawn(async move {
                token.cancelled().await;
                if let Some(thread) = t.upgrade().and_then(|t| t.thread.get().cloned()) {
                    thread.unpark();
                }
            });
        }
        Ok(ticker)
    }

    /// Whether the ticker thread has ended (engine dropped or token cancelled).
    pub fn ended(&self) -> bool {
        self.ended.load(Ordering::Acquire)
    }

    /// Marks a plugin call as running until the guard is dropped; wakes the ticker.
    pub fn enter(self: &Arc<Self>) -> Awake {
        self.running.fetch_add(1, Ordering::SeqCst);
        self.used.store(true, Ordering::SeqCst);
        if self.parked.load(Ordering::SeqCst)
            && let Some(t) = self.thread.get()
        {
            t.unpark();
        }
        Awake(self.clone())
    }

    /// How many times the ticker has gone to sleep.
    pub fn sleeps(&self) -> usize {
        self.sleeps.load(Ordering::Relaxed)
    }

    fn run(&self, engine: &wasmtime::EngineWeak) {
        let mut idle = 0u32;
        loop {
            std::thread::sleep(EPOCH_TICK);
            if self.cancel.is_cancelled() {
                return;
            }
            match engine.upgrade() {
                Some(e) => e.increment_epoch(),
                None => return,
            }
            if self.running.load(Ordering::SeqCst) > 0 || self.used.swap(false, Ordering::Relaxed) {
                idle = 0;
                continue;
            }
            idle += 1;
            if idle < IDLE_TICKS {
                continue;
            }
            self.parked.store(true, Ordering::SeqCst);
            if self.running.load(Ordering::SeqCst) == 0 {
                self.sleeps.fetch_add(1, Ordering::Relaxed);
                // Asleep until a call unparks us; the timeout only checks that the
                // engine still exists.
                while !self.used.load(Ordering::SeqCst) && self.running.load(Ordering::SeqCst) == 0 {
                    std::thread::park_timeout(PARK_CHECK);
                    if engine.upgrade().is_none() || self.cancel.is_cancelled() {
                        return;
                    }
                }
            }
            self.parked.store(false, Ordering::SeqCst);
            idle = 0;
        }
    }
}
