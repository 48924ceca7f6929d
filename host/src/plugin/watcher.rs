//! Watches the plugins directory and reloads on change, on a thread of its own (loading
//! compiles, which must stay off the request path), on [`crate::fswatch`].
//!
//! File events (debounced) trigger a scan of the directory; a slow periodic scan backs
//! the watcher up where events are lost (network file systems, watcher errors) and finds
//! the directory if it is created after the gateway started. Scans only read files whose
//! size, mtime or inode changed, and only load contents whose hash differs from what
//! serves. Dropping the [`Watcher`] or cancelling its token stops the thread.

use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::registry::Registry;
use crate::fswatch::{self, DebouncedEvent, Flow, Handler, Wake, WatchSet};

/// Keeps the reload thread running; dropping it stops the thread.
pub type Watcher = fswatch::Watcher;

/// Scans the registry's directory on every wake.
struct Scanner {
    registry: Weak<Registry>,
}

impl Handler for Scanner {
    /// Any event means "scan": the scan reads the directory itself and settles what
    /// changed, so no event kind needs to be trusted.
    fn concerns(&self, _: &DebouncedEvent, _: &WatchSet) -> bool {
        true
    }

    fn wake(&mut self, wake: Wake) -> Flow {
        // The runtime scanned before starting the watcher.
        if wake == Wake::Started {
            return Flow::Continue;
        }
        let Some(registry) = self.registry.upgrade() else {
            return Flow::Stop;
        };
        registry.sync_dir();
        Flow::Continue
    }
}

/// Starts watching `registry`'s directory until `cancel` is cancelled; `rescan` is the
/// period of the backup scan.
pub fn start(registry: &Arc<Registry>, rescan: Duration, cancel: &CancellationToken) -> std::io::Result<Watcher> {
    let options = fswatch::Options {
        name: "gatehouse-plugins".into(),
        what: "plugins",
        debounce: fswatch::DEBOUNCE,
        tick: fswatch::DEBOUNCE_TICK,
        poll: rescan,
    };
    let set = WatchSet {
        files: Vec::new(),
        dirs: vec![registry.dir().to_path_buf()],
    };
    let scanner = Scanner {
        registry: Arc::downgrade(registry),
    };
    fswatch::Watcher::start(options, set, scanner, cancel)
}
