//! Watches the config file and reloads it when it changes.
//!
//! The file's directory is watched, not the file itself, so atomic replacements
//! (write temp + rename, as editors, `kubectl` and other units do) are seen; events
//! are debounced so an editor that writes twice causes one reload. A cheap metadata
//! poll backs the watcher up for file systems that deliver no events (network
//! volumes) and for symlinks swapped elsewhere. A reload whose text hashes to what
//! is already served (our own writes) changes nothing.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

use notify::event::ModifyKind;
use notify::{EventKind, RecursiveMode};
use notify_debouncer_full::{DebounceEventResult, DebouncedEvent, new_debouncer};

use super::{Cause, ControlPlane};
use crate::config::store;

/// Quiet time after the last file event before a reload.
pub const DEBOUNCE: Duration = Duration::from_millis(100);
/// How often a debouncer thread looks for settled events. It wakes this often for as
/// long as the gateway runs, so it is the debounce time itself (notify's default is a
/// quarter of it): a change applies 100-200 ms after the last write.
pub const DEBOUNCE_TICK: Duration = DEBOUNCE;
/// How often the file's metadata is compared when no event arrives.
pub const POLL: Duration = Duration::from_millis(500);

/// Whether a file event may have changed content. Access events (open, read,
/// close without writing) are not changes: the watcher's own reads cause them, and
/// reacting to them would re-read the watched files in a loop.
fn is_change(event: &DebouncedEvent) -> bool {
    !matches!(event.event.kind, EventKind::Access(_))
}

/// Whether `event` may have changed the config at `path` (whose writes land in
/// `target`, the file behind a symlink): any change to either file, or an entry
/// created, renamed or removed next to them (a symlink swap, as Kubernetes does
/// for mounted config maps). Content changes of unrelated files in the same
/// directory (logs) and our own helper files are not.
fn concerns(event: &DebouncedEvent, path: &Path, target: &Path) -> bool {
    if !is_change(event) {
        return false;
    }
    let entry_changed = matches!(
        event.event.kind,
        EventKind::Create(_) | EventKind::Remove(_) | EventKind::Modify(ModifyKind::Name(_))
    );
    event.event.paths.iter().any(|p| {
        p.file_name().is_some_and(|n| {
            let ours = Some(n) == path.file_name() || Some(n) == target.file_name();
            ours || (entry_changed && !store::is_helper_file(path, n))
        })
    })
}

/// A running watcher; stops when dropped.
pub struct Watcher {
    stop: Arc<AtomicBool>,
    /// Wakes the thread so it sees `stop` at once.
    wake: mpsc::Sender<DebounceEventResult>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Watcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watcher").finish_non_exhaustive()
    }
}

impl Watcher {
    /// Stops the watcher and waits for its thread (at most one poll interval).
    pub fn stop(mut self) {
        self.stop.store(true, Ordering::Release);
        let _ = self.wake.send(Ok(Vec::new()));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        let _ = self.wake.send(Ok(Vec::new()));
    }
}

/// What identifies one version of a file without reading it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Fingerprint {
    len: u64,
    modified: Option<SystemTime>,
    inode: u64,
}

fn fingerprint(path: &Path) -> Option<Fingerprint> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path).ok()?;
    Some(Fingerprint {
        len: m.len(),
        modified: m.modified().ok(),
        inode: m.ino(),
    })
}

/// Starts watching `control`'s config file (None when it has none). Reloads run on
/// the watcher's own thread inside `runtime`'s context.
pub fn spawn(control: Arc<ControlPlane>, runtime: tokio::runtime::Handle) -> Option<Watcher> {
    let path = control.source()?.to_path_buf();
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let (tx, rx) = mpsc::channel::<DebounceEventResult>();
    let wake = tx.clone();
    let thread = std::thread::Builder::new()
        .name("gatehouse-config-watch".into())
        .spawn(move || {
            let _rt = runtime.enter();
            run(&control, &path, &flag, tx, &rx);
        })
        .ok()?;
    Some(Watcher {
        stop,
        wake,
        thread: Some(thread),
    })
}

fn run(
    control: &ControlPlane,
    path: &Path,
    stop: &AtomicBool,
    tx: mpsc::Sender<DebounceEventResult>,
    rx: &mpsc::Receiver<DebounceEventResult>,
) {
    let mut dirs: Vec<PathBuf> = vec![crate::config::base_dir_of(path)];
    let target = store::write_target(path);
    let target_dir = crate::config::base_dir_of(&target);
    if !dirs.contains(&target_dir) {
        dirs.push(target_dir);
    }
    let debouncer = new_debouncer(DEBOUNCE, Some(DEBOUNCE_TICK), tx).and_then(|mut d| {
        for dir in &dirs {
            d.watch(dir, RecursiveMode::NonRecursive)?;
        }
        Ok(d)
    });
    // Kept alive (and watching) for as long as this thread runs.
    let _debouncer = match debouncer {
        Ok(d) => Some(d),
        Err(e) => {
            tracing::warn!(config = %path.display(), error = %e, "cannot watch the config directory; polling only");
            None
        }
    };
    // Whatever changed between the gateway's load and the watch being in place.
    let mut seen = fingerprint(path);
    control.reload(Cause::FileChange, false);
    while !stop.load(Ordering::Acquire) {
        let relevant = match rx.recv_timeout(POLL) {
            Ok(Ok(batch)) => batch.iter().any(|e| concerns(e, path, &target)),
            Ok(Err(errors)) => {
                for e in errors {
                    tracing::warn!(config = %path.display(), error = %e, "config watcher error");
                }
                false
            }
            // The Watcher holds a sender, so the channel only closes when it is gone.
            Err(mpsc::RecvTimeoutError::Timeout) => false,
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        };
        if stop.load(Ordering::Acquire) {
            break;
        }
        let now = fingerprint(path);
        if relevant || now != seen {
            seen = now;
            control.reload(Cause::FileChange, false);
        }
    }
}
