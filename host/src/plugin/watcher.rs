//! Watches the plugins directory and reloads on change, on a thread of its own (loading
//! compiles, which must stay off the request path).
//!
//! File events (debounced) trigger a scan of the directory; a slow periodic scan backs
//! the watcher up where events are lost (network file systems, watcher errors). Scans
//! only read files whose size, mtime or inode changed, and only load contents whose hash
//! differs from what serves. Drop the [`Watcher`] to stop.

use std::path::Path;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Weak};
use std::time::Duration;

use notify::RecursiveMode;
use notify_debouncer_full::{Debouncer, RecommendedCache, new_debouncer};

use super::registry::Registry;

/// Quiet period after the last file event before a scan.
const DEBOUNCE: Duration = Duration::from_millis(100);

/// Keeps the reload thread alive; dropping it stops watching.
pub struct Watcher {
    _debouncer: Option<Debouncer<notify::RecommendedWatcher, RecommendedCache>>,
    _stop: mpsc::Sender<()>,
}

impl std::fmt::Debug for Watcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watcher")
            .field("events", &self._debouncer.is_some())
            .finish()
    }
}

/// Starts watching `registry`'s directory; `rescan` is the period of the backup scan.
pub fn start(registry: &Arc<Registry>, rescan: Duration) -> std::io::Result<Watcher> {
    let (tx, rx) = mpsc::channel::<()>();
    let events = tx.clone();
    let debouncer = watch(registry.dir(), move || {
        let _ = events.send(());
    });
    let weak: Weak<Registry> = Arc::downgrade(registry);
    std::thread::Builder::new()
        .name("gatehouse-plugins".into())
        .spawn(move || run(weak, rx, rescan))?;
    Ok(Watcher {
        _debouncer: debouncer,
        _stop: tx,
    })
}

fn watch(
    dir: &Path,
    on_event: impl Fn() + Send + 'static,
) -> Option<Debouncer<notify::RecommendedWatcher, RecommendedCache>> {
    let mut debouncer = match new_debouncer(DEBOUNCE, None, move |_| on_event()) {
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

fn run(registry: Weak<Registry>, rx: mpsc::Receiver<()>, rescan: Duration) {
    loop {
        match rx.recv_timeout(rescan) {
            Ok(()) | Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return,
        }
        // Coalesce a burst of events into one scan.
        while rx.try_recv().is_ok() {}
        let Some(registry) = registry.upgrade() else { return };
        registry.sync_dir();
    }
}
