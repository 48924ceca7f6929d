//! Watches the config file and reloads it when it changes, on [`crate::fswatch`].
//!
//! The file's directory is watched, not the file itself, so atomic replacements
//! (write temp + rename, as editors, `kubectl` and other units do) are seen; events
//! are debounced so an editor that writes twice causes one reload. A cheap metadata
//! poll backs the watcher up for file systems that deliver no events (network
//! volumes) and for symlinks swapped elsewhere. A reload whose text hashes to what
//! is already served (our own writes) changes nothing. Further files whose change
//! should reload the config (certificates) can be added with
//! [`fswatch::Watcher::update`].

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use notify::EventKind;
use notify::event::ModifyKind;
use tokio_util::sync::CancellationToken;

use super::{Cause, ControlPlane};
use crate::config::store;
use crate::fswatch::{self, DebouncedEvent, Flow, Handler, Wake, WatchSet};

pub use crate::fswatch::{DEBOUNCE, DEBOUNCE_TICK};

/// How often the file's metadata is compared when no event arrives.
pub const POLL: Duration = Duration::from_millis(500);

/// A running config watcher; stops when dropped, stopped, or its token is cancelled.
pub type Watcher = fswatch::Watcher;

/// Whether `event` may have changed the config at `path`: any change to a watched
/// file (the config, the file behind its symlink, added files), or an entry created,
/// renamed or removed next to them (a symlink swap, as Kubernetes does for mounted
/// config maps). Content changes of unrelated files in the same directory (logs) and
/// our own helper files are not.
fn concerns(event: &DebouncedEvent, path: &Path, set: &WatchSet) -> bool {
    if !fswatch::is_change(event) {
        return false;
    }
    let entry_changed = matches!(
        event.event.kind,
        EventKind::Create(_) | EventKind::Remove(_) | EventKind::Modify(ModifyKind::Name(_))
    );
    event.event.paths.iter().any(|p| {
        p.file_name().is_some_and(|n| {
            let ours = set.files.iter().any(|f| f.file_name() == Some(n));
            ours || (entry_changed && !store::is_helper_file(path, n))
        })
    })
}

/// Reloads the config of a control plane.
struct Reloader {
    control: Arc<ControlPlane>,
    path: PathBuf,
    runtime: tokio::runtime::Handle,
    /// The files the served config reads (certificates, keys, CAs).
    extra: ExtraFiles,
}

impl Handler for Reloader {
    fn concerns(&self, event: &DebouncedEvent, set: &WatchSet) -> bool {
        concerns(event, &self.path, set)
    }

    fn wake(&mut self, wake: Wake) -> Flow {
        // `Started`: whatever changed between the gateway's load and the watch.
        let certs_changed = self.extra.changed();
        if matches!(wake, Wake::Started | Wake::Poll { changed: true }) || certs_changed {
            let _rt = self.runtime.enter();
            // Fingerprints taken before the reload reads the files, so a write that
            // lands during the reload (the key after the certificate) is seen.
            let before = self.extra.refreshed();
            // A certificate, key or CA changed: reload even if the config did not.
            self.control.reload(Cause::FileChange, certs_changed);
            self.extra = before.or_list_of(&self.control);
        }
        Flow::Continue
    }
}

/// Starts watching `control`'s config file (None when it has none). Reloads run on
/// the watcher's own thread inside `runtime`'s context.
pub fn spawn(control: Arc<ControlPlane>, runtime: tokio::runtime::Handle) -> Option<Watcher> {
    spawn_until(control, runtime, &CancellationToken::new())
}

/// As [`spawn`], stopped when `cancel` is cancelled.
pub fn spawn_until(
    control: Arc<ControlPlane>,
    runtime: tokio::runtime::Handle,
    cancel: &CancellationToken,
) -> Option<Watcher> {
    let path = control.source()?.to_path_buf();
    let target = store::write_target(&path);
    let mut files = vec![path.clone()];
    if target != path {
        files.push(target);
    }
    // Certificate files wake the watcher too (their directories get watched); the
    // handler compares them on every wake, so files a later config names are
    // seen within a poll period.
    let extra = ExtraFiles::of(&control);
    files.extend(extra.files.iter().map(|(f, _)| f.clone()));
    let options = fswatch::Options {
        name: "gatehouse-config-watch".into(),
        what: "config",
        debounce: DEBOUNCE,
        tick: DEBOUNCE_TICK,
        poll: POLL,
    };
    let set = WatchSet {
        files,
        dirs: Vec::new(),
    };
    let handler = Reloader {
        control,
        path: path.clone(),
        runtime,
        extra,
    };
    match fswatch::Watcher::start(options, set, handler, cancel) {
        Ok(w) => Some(w),
        Err(e) => {
            tracing::warn!(config = %path.display(), error = %e, "cannot start the config watcher");
            None
        }
    }
}

/// The files the served config reads (certificates, keys, CAs) with their
/// fingerprints.
struct ExtraFiles {
    files: Vec<(PathBuf, Option<fswatch::Fingerprint>)>,
}

impl ExtraFiles {
    fn of(control: &ControlPlane) -> Self {
        let files = control
            .watched_files()
            .into_iter()
            .map(|f| {
                let fp = fswatch::Fingerprint::of(&f);
                (f, fp)
            })
            .collect();
        Self { files }
    }

    /// The same files with their fingerprints now.
    fn refreshed(&self) -> Self {
        let files = self
            .files
            .iter()
            .map(|(f, _)| (f.clone(), fswatch::Fingerprint::of(f)))
            .collect();
        Self { files }
    }

    /// These fingerprints if the served config still reads the same files, else
    /// the fingerprints of the files it reads now.
    fn or_list_of(self, control: &ControlPlane) -> Self {
        let now = control.watched_files();
        if now.len() == self.files.len() && now.iter().zip(&self.files).all(|(a, (b, _))| a == b) {
            self
        } else {
            Self::of(control)
        }
    }

    fn changed(&self) -> bool {
        self.files.iter().any(|(f, fp)| fswatch::Fingerprint::of(f) != *fp)
    }
}
