//! The one file-watching mechanism of the gateway: a thread that waits for debounced file
//! events (notify) on a set of directories, compares the fingerprints of a set of files on
//! every wake, and calls its [`Handler`]. The config watcher (`control::watch`), the
//! plugins watcher (`plugin::watcher`) and certificate files use it.
//!
//! Directories are watched rather than files, so atomic replacements (write a temporary
//! file, rename it over the old one, as editors, `kubectl` and config-management tools
//! do) are seen. A periodic wake (the poll period) backs the events up on file systems
//! that deliver none (network volumes) and finds directories created after the watcher
//! started; a directory that cannot be watched is tried again on every wake.
//!
//! The set of watched files and directories may change while the watcher runs
//! ([`Watcher::update`]). The watcher stops when its [`CancellationToken`] (a child of
//! the one given at start) is cancelled, when the [`Watcher`] is dropped or stopped, or
//! when the handler says so. This module imports nothing of the crate.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime};

use notify::{EventKind, RecursiveMode};
use notify_debouncer_full::{DebounceEventResult, Debouncer, RecommendedCache, new_debouncer};
use tokio_util::sync::CancellationToken;

pub use notify_debouncer_full::DebouncedEvent;

/// Default quiet time after the last file event before the handler runs.
pub const DEBOUNCE: Duration = Duration::from_millis(100);
/// How often a debouncer thread looks for settled events. It wakes this often for as
/// long as the gateway runs, so it is the debounce time itself (notify's default is a
/// quarter of it): a change is handled 100-200 ms after the last write.
pub const DEBOUNCE_TICK: Duration = DEBOUNCE;

/// What identifies one version of a file without reading it: size, modification time
/// and inode (an atomic replacement changes the inode even when size and time match).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fingerprint {
    len: u64,
    modified: Option<SystemTime>,
    inode: u64,
}

impl Fingerprint {
    /// The fingerprint of the file at `path` (following symlinks); `None` when it
    /// cannot be read.
    pub fn of(path: &Path) -> Option<Fingerprint> {
        std::fs::metadata(path).ok().map(|m| Self::from_metadata(&m))
    }

    /// The fingerprint of a file whose metadata is already at hand.
    pub fn from_metadata(meta: &std::fs::Metadata) -> Fingerprint {
        #[cfg(unix)]
        let inode = std::os::unix::fs::MetadataExt::ino(meta);
        #[cfg(not(unix))]
        let inode = 0;
        Fingerprint {
            len: meta.len(),
            modified: meta.modified().ok(),
            inode,
        }
    }
}

/// The directory a file lives in (`.` for a bare file name).
pub fn dir_of(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Whether a file event may have changed content. Access events (open, read, close
/// without writing) are not changes: a watcher's own reads cause them.
pub fn is_change(event: &DebouncedEvent) -> bool {
    !matches!(event.event.kind, EventKind::Access(_))
}

/// What a watcher watches.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WatchSet {
    /// Files whose fingerprints are compared on every wake; their directories are
    /// watched for events.
    pub files: Vec<PathBuf>,
    /// Further directories watched for events (not recursively).
    pub dirs: Vec<PathBuf>,
}

impl WatchSet {
    /// Every directory to watch: [`dirs`](Self::dirs) and those of the files.
    fn all_dirs(&self) -> BTreeSet<PathBuf> {
        self.dirs
            .iter()
            .cloned()
            .chain(self.files.iter().map(|f| dir_of(f)))
            .collect()
    }
}

/// Why the handler runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wake {
    /// Once, when the watches are first in place: anything may have changed since the
    /// caller last looked.
    Started,
    /// A wake after events or a poll period; `changed` tells whether an event concerned
    /// the handler or a watched file's fingerprint changed.
    Poll {
        /// Whether something the handler watches changed.
        changed: bool,
    },
}

/// Whether the watcher goes on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    /// Keep watching.
    Continue,
    /// Stop the watcher thread.
    Stop,
}

/// What a watcher does with what it sees. Runs on the watcher's thread.
pub trait Handler: Send + 'static {
    /// Whether `event` concerns what is watched (`set` is the current set).
    fn concerns(&self, event: &DebouncedEvent, set: &WatchSet) -> bool;
    /// Reacts to a wake.
    fn wake(&mut self, wake: Wake) -> Flow;
}

/// How a watcher runs.
#[derive(Debug, Clone)]
pub struct Options {
    /// The thread's name.
    pub name: String,
    /// What it is (`config`, `plugins`), for its log lines.
    pub what: &'static str,
    /// Quiet time after the last event.
    pub debounce: Duration,
    /// How often the debouncer looks for settled events.
    pub tick: Duration,
    /// The longest wait without events before a wake.
    pub poll: Duration,
}

enum Msg {
    Events(DebounceEventResult),
    /// Stop, or the set changed: look again.
    Nudge,
}

/// A running watcher. Dropping it stops the thread (without waiting for it).
pub struct Watcher {
    cancel: CancellationToken,
    set: Arc<Mutex<WatchSet>>,
    nudge: Sender<Msg>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Watcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watcher")
            .field("cancelled", &self.cancel.is_cancelled())
            .finish_non_exhaustive()
    }
}

impl Watcher {
    /// Starts a watcher thread for `set`, stopped when `cancel` is cancelled. Inside a
    /// tokio runtime the cancellation wakes the thread at once; elsewhere it is seen
    /// within one poll period.
    pub fn start(
        options: Options,
        set: WatchSet,
        handler: impl Handler,
        cancel: &CancellationToken,
    ) -> std::io::Result<Watcher> {
        let cancel = cancel.child_token();
        let set = Arc::new(Mutex::new(set));
        let (tx, rx) = mpsc::channel::<Msg>();
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            let (token, nudge) = (cancel.clone(), tx.clone());
            rt.spawn(async move {
                token.cancelled().await;
                let _ = nudge.send(Msg::Nudge);
            });
        }
        let state = Thread {
            options: options.clone(),
            set: set.clone(),
            cancel: cancel.clone(),
            events: tx.clone(),
        };
        let thread = std::thread::Builder::new()
            .name(options.name)
            .spawn(move || state.run(handler, &rx))?;
        Ok(Watcher {
            cancel,
            set,
            nudge: tx,
            thread: Some(thread),
        })
    }

    /// Changes what is watched; the thread applies it at once. A file added is not a
    /// change by itself: its fingerprint is taken as the base for the next ones.
    pub fn update(&self, edit: impl FnOnce(&mut WatchSet)) {
        edit(&mut self.set.lock().unwrap_or_else(|p| p.into_inner()));
        let _ = self.nudge.send(Msg::Nudge);
    }

    /// What is watched now.
    pub fn watched(&self) -> WatchSet {
        self.set.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The token that stops this watcher (a child of the one it was started with).
    pub fn token(&self) -> &CancellationToken {
        &self.cancel
    }

    /// Stops the watcher and waits for its thread (at most one handler run).
    pub fn stop(mut self) {
        self.cancel.cancel();
        let _ = self.nudge.send(Msg::Nudge);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.cancel.cancel();
        let _ = self.nudge.send(Msg::Nudge);
    }
}

type FileWatcher = Debouncer<notify::RecommendedWatcher, RecommendedCache>;

/// The watcher thread's state.
struct Thread {
    options: Options,
    set: Arc<Mutex<WatchSet>>,
    cancel: CancellationToken,
    events: Sender<Msg>,
}

/// The directories being watched, and those that could not be (tried again).
#[derive(Default)]
struct Watches {
    debouncer: Option<FileWatcher>,
    /// Directory -> whether it is watched.
    dirs: BTreeMap<PathBuf, bool>,
    /// The debouncer could not be created (logged once).
    broken: bool,
}

impl Thread {
    fn current(&self) -> WatchSet {
        self.set.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn run(self, mut handler: impl Handler, rx: &mpsc::Receiver<Msg>) {
        let mut watches = Watches::default();
        let mut set = self.current();
        self.sync(&mut watches, &set);
        let mut seen = fingerprints(&set);
        if handler.wake(Wake::Started) == Flow::Stop {
            return;
        }
        while !self.cancel.is_cancelled() {
            let mut relevant = match rx.recv_timeout(self.options.poll) {
                Ok(msg) => self.relevant(msg, &set, &handler),
                Err(RecvTimeoutError::Timeout) => false,
                // The Watcher and this thread hold senders: only when both are gone.
                Err(RecvTimeoutError::Disconnected) => return,
            };
            // Coalesce a burst into one wake.
            while let Ok(msg) = rx.try_recv() {
                relevant |= self.relevant(msg, &set, &handler);
            }
            if self.cancel.is_cancelled() {
                return;
            }
            let next = self.current();
            if next != set {
                // New files start from their present fingerprint.
                for f in &next.files {
                    if !set.files.contains(f) {
                        seen.insert(f.clone(), Fingerprint::of(f));
                    }
                }
                seen.retain(|f, _| next.files.contains(f));
                set = next;
            }
            self.sync(&mut watches, &set);
            let now = fingerprints(&set);
            let changed = relevant || now != seen;
            seen = now;
            if handler.wake(Wake::Poll { changed }) == Flow::Stop {
                return;
            }
        }
    }

    fn relevant(&self, msg: Msg, set: &WatchSet, handler: &impl Handler) -> bool {
        match msg {
            Msg::Events(Ok(batch)) => batch.iter().any(|e| handler.concerns(e, set)),
            Msg::Events(Err(errors)) => {
                for e in errors {
                    tracing::warn!(watcher = self.options.what, error = %e, "file watcher error");
                }
                false
            }
            Msg::Nudge => false,
        }
    }

    /// Brings the watched directories in line with `set`: watches new ones, retries
    /// those that failed, unwatches those no longer wanted.
    fn sync(&self, watches: &mut Watches, set: &WatchSet) {
        let wanted = set.all_dirs();
        if watches.debouncer.is_none() && !watches.broken {
            let events = self.events.clone();
            match new_debouncer(self.options.debounce, Some(self.options.tick), move |r| {
                let _ = events.send(Msg::Events(r));
            }) {
                Ok(d) => watches.debouncer = Some(d),
                Err(e) => {
                    watches.broken = true;
                    tracing::warn!(watcher = self.options.what, error = %e, "cannot watch files; polling only");
                }
            }
        }
        let Some(debouncer) = watches.debouncer.as_mut() else {
            return;
        };
        watches.dirs.retain(|dir, ok| {
            let keep = wanted.contains(dir);
            if !keep && *ok {
                let _ = debouncer.unwatch(dir);
            }
            keep
        });
        for dir in wanted {
            let ok = watches.dirs.entry(dir.clone()).or_insert(false);
            if *ok || !dir.is_dir() {
                continue;
            }
            match debouncer.watch(&dir, RecursiveMode::NonRecursive) {
                Ok(()) => *ok = true,
                Err(e) => tracing::warn!(
                    watcher = self.options.what,
                    dir = %dir.display(),
                    error = %e,
                    "cannot watch a directory; relying on periodic checks"
                ),
            }
        }
    }
}

fn fingerprints(set: &WatchSet) -> BTreeMap<PathBuf, Option<Fingerprint>> {
    set.files.iter().map(|f| (f.clone(), Fingerprint::of(f))).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    struct Count {
        changes: Arc<AtomicUsize>,
    }

    impl Handler for Count {
        fn concerns(&self, event: &DebouncedEvent, set: &WatchSet) -> bool {
            is_change(event)
                && event
                    .event
                    .paths
                    .iter()
                    .any(|p| set.files.iter().any(|f| f.file_name() == p.file_name()))
        }

        fn wake(&mut self, wake: Wake) -> Flow {
            if wake == (Wake::Poll { changed: true }) {
                self.changes.fetch_add(1, Ordering::SeqCst);
            }
            Flow::Continue
        }
    }

    fn options(poll: Duration) -> Options {
        Options {
            name: "fswatch-test".into(),
            what: "test",
            debounce: Duration::from_millis(20),
            tick: Duration::from_millis(20),
            poll,
        }
    }

    fn wait_for(what: impl Fn() -> bool) -> bool {
        let until = std::time::Instant::now() + Duration::from_secs(10);
        while std::time::Instant::now() < until {
            if what() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        false
    }

    #[test]
    fn a_file_added_to_the_set_is_watched_and_a_token_stops_the_thread() {
        let dir = tempfile::tempdir().unwrap();
        let first = dir.path().join("a.txt");
        let other_dir = tempfile::tempdir().unwrap();
        let second = other_dir.path().join("b.pem");
        std::fs::write(&first, "1").unwrap();
        std::fs::write(&second, "1").unwrap();
        let changes = Arc::new(AtomicUsize::new(0));
        let root = CancellationToken::new();
        let set = WatchSet {
            files: vec![first.clone()],
            dirs: vec![],
        };
        let handler = Count {
            changes: changes.clone(),
        };
        let w = Watcher::start(options(Duration::from_millis(50)), set, handler, &root).unwrap();
        std::fs::write(&second, "22").unwrap();
        std::thread::sleep(Duration::from_millis(200));
        assert_eq!(changes.load(Ordering::SeqCst), 0, "a file outside the set is no change");
        std::fs::write(&first, "22").unwrap();
        assert!(wait_for(|| changes.load(Ordering::SeqCst) >= 1));

        w.update(|s| s.files.push(second.clone()));
        assert!(wait_for(|| w.watched().files.len() == 2));
        std::thread::sleep(Duration::from_millis(200));
        let before = changes.load(Ordering::SeqCst);
        std::fs::write(&second, "333").unwrap();
        assert!(wait_for(|| changes.load(Ordering::SeqCst) > before));

        root.cancel();
        assert!(w.token().is_cancelled());
        let thread = std::thread::spawn(move || w.stop());
        assert!(wait_for(|| thread.is_finished()));
    }

    #[test]
    fn fingerprints_tell_a_replacement_from_the_same_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, "abc").unwrap();
        let a = Fingerprint::of(&path);
        assert_eq!(a, Fingerprint::of(&path));
        let tmp = dir.path().join("f.tmp");
        std::fs::write(&tmp, "abc").unwrap();
        std::fs::rename(&tmp, &path).unwrap();
        assert_ne!(a, Fingerprint::of(&path), "a rename over the file is a new inode");
        assert_eq!(Fingerprint::of(&dir.path().join("missing")), None);
        assert_eq!(dir_of(Path::new("x.yaml")), PathBuf::from("."));
    }
}
