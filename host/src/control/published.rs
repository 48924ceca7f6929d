//! The seed's rule, kept by the control plane for every source: a published version
//! never changes in place. A reload, SIGHUP or import that edits one is refused like
//! an invalid config, unless the gateway was started with `--allow-published-edits`,
//! which accepts the edit and records it (log, status, metric).
//!
//! For a unit that starts fresh, the rule is checked against the config it last
//! applied, cached in `state_dir/applied-config.json` (written atomically on every
//! applied change): a file that changed a published version while the unit was down
//! is reported, and the unit starts from its cache.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::{Cause, ControlEvent, ControlPlane, Served};
use crate::config::immutable::{PublishedEdit, published_edits};
use crate::config::{self, ConfigError, Loaded, Overrides, RawConfig, store};

/// File in `state_dir` that holds the last applied config.
pub const CACHE_FILE: &str = "applied-config.json";

/// How the control plane treats its source.
#[derive(Debug, Clone, Default)]
pub struct ControlOptions {
    /// The config file (none: the config lives in memory, edited by the admin API).
    pub path: Option<PathBuf>,
    /// Flags applied to every load.
    pub overrides: Overrides,
    /// Accept in-place edits of published versions, recording each (emergencies only).
    pub allow_published_edits: bool,
}

impl ControlPlane {
    /// A control plane that serves `loaded` — or, when the file changes a version
    /// published in the config this unit last applied, that cached config (the
    /// change is then reported by the first reload, like any refused change).
    pub fn start(served: Arc<dyn Served>, loaded: Loaded, options: ControlOptions) -> Arc<ControlPlane> {
        let cached = match &options.path {
            Some(_) if !options.allow_published_edits => {
                let base_dir = options.path.as_deref().map(config::base_dir_of).unwrap_or_default();
                read_cache(&loaded.config.gateway.state_dir, &options.overrides, &base_dir)
            }
            _ => None,
        };
        let start_from = match cached {
            Some(cache) if !published_edits(&cache.raw, &loaded.raw).is_empty() => {
                tracing::warn!(
                    cache = %loaded.config.gateway.state_dir.join(CACHE_FILE).display(),
                    "the config file changes published versions since this unit last ran; starting from the cached config"
                );
                cache
            }
            _ => loaded,
        };
        let ctl = ControlPlane::new(served, start_from.raw.clone(), options);
        ctl.serve(start_from);
        ctl.write_cache();
        ctl
    }

    /// The edits `next` makes to published versions of the served document: refused
    /// (as config errors) unless the gateway allows them.
    pub(super) fn guard_published(&self, next: &RawConfig) -> Result<Vec<PublishedEdit>, Vec<ConfigError>> {
        let edits = published_edits(&self.served_raw(), next);
        if edits.is_empty() || self.allow_published_edits {
            Ok(edits)
        } else {
            Err(edits.iter().map(PublishedEdit::to_error).collect())
        }
    }

    /// Logs, counts and keeps in the status each allowed edit of a published version.
    pub(super) fn record_published_edits(&self, edits: &[PublishedEdit], cause: Cause) {
        for e in edits {
            tracing::warn!(
                version = %e.version,
                path = %e.path,
                was = %e.was,
                now = %e.now,
                cause = cause.as_str(),
                "published version changed in place (--allow-published-edits)"
            );
            self.served.record(ControlEvent::PublishedEdit);
        }
        if !edits.is_empty() {
            let mut status = self.status.lock().unwrap_or_else(|p| p.into_inner());
            status.published_edited(edits, cause);
        }
    }

    /// Caches what is served, for a restart (only for file-backed gateways: an
    /// in-memory config has no file that could change behind the unit's back). Called
    /// after the status shows the change, so the write's fsync never delays it.
    pub(super) fn write_cache(&self) {
        if self.path.is_none() {
            return;
        }
        let raw = self.served_raw();
        let dir = self.served.config().gateway.state_dir.clone();
        let path = dir.join(CACHE_FILE);
        let text = serde_json::to_vec_pretty(&raw).expect("raw config always serializes");
        let written = std::fs::create_dir_all(&dir).and_then(|()| store::write_atomic(&path, &text));
        if let Err(e) = written {
            tracing::warn!(path = %path.display(), error = %e, "cannot cache the applied config");
        }
    }
}

/// The cached config, if there is one that still validates.
fn read_cache(state_dir: &Path, overrides: &Overrides, base_dir: &Path) -> Option<Loaded> {
    let path = state_dir.join(CACHE_FILE);
    let text = std::fs::read(&path).ok()?;
    let raw: RawConfig = match serde_json::from_slice(&text) {
        Ok(raw) => raw,
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "ignoring an unreadable config cache");
            return None;
        }
    };
    match config::load_raw(raw, overrides, base_dir) {
        Ok(loaded) => Some(loaded),
        Err(errors) => {
            tracing::warn!(path = %path.display(), errors = errors.len(), "ignoring a config cache that no longer validates");
            None
        }
    }
}
