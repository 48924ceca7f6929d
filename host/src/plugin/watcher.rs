//! Watches the plugins directory and reloads on change, on a thread of its own (loading
//! compiles, which must stay off the request path).
//!
//! File events (debounced) trigger a scan of the directory; a slow periodic scan backs
//! the watcher up where events are lost (network file systems, watcher errors) and finds
//! the directory if it is created after the gateway started. Scans only read files whose
//! size, mtime or inode changed, and only load contents whose hash differs from what
//! serves. Dropping the [`Watcher`] stops the thread.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError, Sender};
use std::sync::{Arc, Weak};
use std::time::Duration;

use notify::RecursiveMode;
use notify_debouncer_full::{DebounceEventResult, Debouncer, RecommendedCache, new_debouncer};

use super::registry::Registry;

/// Quiet period after the last file event before a scan.
const DEBOUNCE: Duration = Duration::from_millis(100);

type FileWatcher = Debouncer<notify::RecommendedWatcher, RecommendedCache>;

/// Keeps the reload thread running; dropping it stops the thread.
#[derive(Debug)]
pub struct Watcher {
    stop: Arc<AtomicBool>,
    wake: Sender<()>,
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        let _ = self.wake.send(());
    }
}

/// Starts watching `registry`'s directory; `rescan` is the period of the backup scan.
pub fn start(registry: &Arc<Registry>, rescan: Duration) -> std::io::Result<Watcher> {
    let (tx, rx) = mpsc::channel::<()>();
    let stop = Arc::new(AtomicBool::new(false));
    let weak: Weak<Registry> = Arc::downgrade(registry);
    let dir = registry.dir().to_path_buf();
    let (events, flag) = (tx.clone(), stop.clone());
    std::thread::Builder::new()
        .name("gatehouse-plugins".into())
        .spawn(move || run(weak, dir, rx, events, flag, rescan))?;
    Ok(Watcher { stop, wake: tx })
}

fn watch(dir: &Path, events: Sender<()>) -> Option<FileWatcher> {
    if !dir.is_dir() {
        return None;
    }
    let mut debouncer = match new_debouncer(
        DEBOUNCE,
        Some(crate::control::watch::DEBOUNCE_TICK),
        move |_: DebounceEventResult| {
            // Any event means "scan": the scan reads the directory itself and settles
            // what changed, so no event kind needs to be trusted.
            let _ = events.send(());
        },
    ) {
        Ok(d) => d,
        Err(e) => {
            tracing::warn!(error = %e, "cannot watch the plugins directory; relying on periodic scans");
            return None;
        }
    };
    if let Err(e) = debouncer.watch(dir, RecursiveMode::NonRecursive) {
        tracing::warn!(dir = %dir.display(), error = %e, "cannot watch the plugins directory; relying on periodic scans");
        return None;
    }
    Some(debouncer)
}

fn run(
    registry: Weak<Registry>,
    dir: PathBuf,
    rx: mpsc::Receiver<()>,
    events: Sender<()>,
    stop: Arc<AtomicBool>,
    rescan: Duration,
) {
    let mut watcher = watch(&dir, events.clone());
    loop {
        match rx.recv_timeout(rescan) {
            Ok(()) | Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return,
        }
        // Coalesce a burst of events into one scan.
        while rx.try_recv().is_ok() {}
        if stop.load(Ordering::Acquire) {
            return;
        }
        let Some(registry) = registry.upgrade() else { return };
        if watcher.is_none() {
            watcher = watch(&dir, events.clone());
        }
        registry.sync_dir();
    }
}
