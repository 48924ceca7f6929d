//! The control plane of one gateway: keeps the served config in step with its
//! source (the config file) and applies admin edits.
//!
//! Every change, whether it comes from the file (watcher, SIGHUP) or from the admin
//! API, goes through [`ControlPlane`] under one lock, so changes are serialized and
//! a reload never reads the file half-way through one of our own writes. Admin
//! writes also take an advisory lock on the file ([`crate::config::store::WriteLock`])
//! and start from the file's current content, so units sharing the file never lose
//! each other's updates. Nothing here runs on the request path: a change ends in
//! one [`Served::apply`], an atomic snapshot swap.
//!
//! The control plane knows the gateway only through the narrow [`Served`] trait
//! (apply a validated config, read the served one), and keeps the raw document it
//! edits itself; so it is tested against a fake in `tests.rs`.

mod published;
mod status;
pub mod watch;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::config::edit::{self, EditError, Edited};
use crate::config::{self, Config, ConfigError, Loaded, Overrides, RawConfig, store};

pub use published::{CACHE_FILE, ControlOptions};
pub use status::{Cause, EditRecord, SourceStatus};

/// Why an admin write was refused. Nothing changed when one of these is returned.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// The edit does not fit the document (unknown name, immutable version).
    #[error(transparent)]
    Edit(#[from] EditError),
    /// The edited document does not validate.
    #[error("the change does not validate ({} error(s))", .0.len())]
    Invalid(Vec<ConfigError>),
    /// The config file holds a change that does not validate; fix it (or import a
    /// whole config) before editing.
    #[error("the config file has a change that does not validate ({} error(s)); fix it or import a whole config", .0.len())]
    SourceInvalid(Vec<ConfigError>),
    /// The change edits a published version in place (an import does that).
    #[error("the change edits published versions in place ({} field(s)); create new versions and publish them", .0.len())]
    Immutable(Vec<ConfigError>),
    /// The config file could not be written.
    #[error("cannot write the config file {path}: {source}")]
    Persist {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
}

/// What a successful admin write did.
#[derive(Debug, Clone)]
pub struct Written {
    /// Where in the document the edit happened, and whether it changed anything.
    pub edited: Edited,
    /// The generation now served.
    pub generation: u64,
    /// Whether the change is in the config file (false for a gateway without one).
    pub persisted: bool,
    /// Things the caller should know (published versions changed in place, settings
    /// that only take effect at restart).
    pub warnings: Vec<String>,
}

/// What a reload from the source did.
#[derive(Debug, Clone, PartialEq)]
pub enum ReloadOutcome {
    /// A new config is served.
    Applied {
        /// Its generation.
        generation: u64,
    },
    /// The source holds what is already served.
    Unchanged,
    /// The source is invalid or unreadable; the last good config keeps serving.
    Rejected(Vec<ConfigError>),
    /// The gateway has no config file.
    NoSource,
}

/// What the control plane needs of the gateway it keeps in step with its source.
pub trait Served: Send + Sync {
    /// Serves `config` (one atomic snapshot swap); returns its generation.
    fn apply(&self, config: Config) -> u64;
    /// The config being served.
    fn config(&self) -> Arc<Config>;
    /// The generation being served.
    fn generation(&self) -> u64;
    /// Counts what the control plane did.
    fn record(&self, event: ControlEvent);
    /// Records a config change from `source`, applied (`error` is `None`) or
    /// refused, in the gateway's event journal. Does nothing by default.
    fn config_event(&self, _generation: u64, _source: &str, _error: Option<String>) {}
}

/// What the control plane counts (metrics).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ControlEvent {
    /// A changed source was loaded (`true`) or rejected (`false`).
    Reload(bool),
    /// A published version's template field was changed in place, allowed by
    /// `--allow-published-edits`.
    PublishedEdit,
}

/// Serializes and applies every config change of one gateway.
pub struct ControlPlane {
    served: Arc<dyn Served>,
    /// The raw document being served (what admin edits start from).
    raw: Mutex<RawConfig>,
    path: Option<PathBuf>,
    base_dir: PathBuf,
    overrides: Overrides,
    allow_published_edits: bool,
    /// Serializes changes; held while one is read, validated, written and applied.
    inner: Mutex<Inner>,
    /// What the status endpoint shows; locked only briefly, never across I/O.
    status: Mutex<SourceStatus>,
}

impl std::fmt::Debug for ControlPlane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlPlane")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

#[derive(Debug)]
struct Inner {
    /// Hash of the source text whose config is served (None: unknown or in memory).
    served_hash: Option<String>,
    /// Hash of the last source text examined, and its errors if it was invalid.
    seen: Option<(String, Vec<ConfigError>)>,
    /// Whether the source holds the served config.
    in_sync: bool,
}

impl ControlPlane {
    /// A control plane for `served`, whose current config is `raw` (already served).
    pub fn new(served: Arc<dyn Served>, raw: RawConfig, options: ControlOptions) -> Arc<ControlPlane> {
        let ControlOptions {
            path,
            overrides,
            allow_published_edits,
        } = options;
        let base_dir = path
            .as_deref()
            .map(config::base_dir_of)
            .unwrap_or_else(|| PathBuf::from("."));
        let mut status = SourceStatus::new();
        status.allow_published_edits = allow_published_edits;
        Arc::new(ControlPlane {
            served,
            raw: Mutex::new(raw),
            path,
            base_dir,
            overrides,
            allow_published_edits,
            inner: Mutex::new(Inner {
                served_hash: None,
                seen: None,
                in_sync: true,
            }),
            status: Mutex::new(status),
        })
    }

    /// The config file, if the gateway has one.
    pub fn source(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// Files the served config reads besides itself (certificates, keys, CAs): a
    /// change to one reloads the config, so new files are checked and served.
    pub fn watched_files(&self) -> Vec<PathBuf> {
        crate::tls::files(&self.served.config())
    }

    /// Whether admin writes are persisted (the gateway has a config file).
    pub fn persistent(&self) -> bool {
        self.path.is_some()
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The state of the config source, for `/admin/v1/status`.
    pub fn status(&self) -> SourceStatus {
        self.status.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn set_status(&self, inner: &Inner, change: impl FnOnce(&mut SourceStatus)) {
        let mut s = self.status.lock().unwrap_or_else(|p| p.into_inner());
        s.in_sync = inner.in_sync;
        s.sha256 = inner.served_hash.clone();
        change(&mut s);
    }

    /// Reads the config file and serves it if it changed (or always, when `force`).
    /// An invalid file is rejected with its errors logged and kept for the status;
    /// the last good config keeps serving. Blocking: call off the async runtime.
    pub fn reload(&self, cause: Cause, force: bool) -> ReloadOutcome {
        let mut inner = self.lock();
        self.examine(&mut inner, cause, force)
    }

    fn examine(&self, inner: &mut Inner, cause: Cause, force: bool) -> ReloadOutcome {
        let Some(path) = &self.path else {
            return ReloadOutcome::NoSource;
        };
        let text = match std::fs::read(path) {
            Ok(t) => t,
            Err(e) => {
                let errors = vec![ConfigError::new(
                    path.display().to_string(),
                    format!("cannot read: {e}"),
                )];
                let seen = inner.seen.as_ref().is_some_and(|(_, errs)| errs == &errors);
                if !seen {
                    self.reject(inner, cause, None, &errors);
                    inner.seen = Some((String::new(), errors.clone()));
                }
                return ReloadOutcome::Rejected(errors);
            }
        };
        let hash = store::content_hash(&text);
        if !force {
            if inner.served_hash.as_deref() == Some(hash.as_str()) {
                inner.in_sync = true;
                self.set_status(inner, |_| {});
                return ReloadOutcome::Unchanged;
            }
            if let Some((seen, errors)) = &inner.seen
                && seen == &hash
                && !errors.is_empty()
            {
                return ReloadOutcome::Rejected(errors.clone());
            }
        }
        let name = path.display().to_string();
        let loaded = String::from_utf8(text)
            .map_err(|_| vec![ConfigError::new("document", "the file is not UTF-8 text")])
            .and_then(|text| config::load_str(&text, &name, &self.overrides, &self.base_dir).map_err(|e| e.errors()))
            .and_then(|loaded| {
                keeps_own_group(&self.served.config(), &loaded.config)?;
                crate::tls::check(&loaded.config)?;
                let edits = self.guard_published(&loaded.raw)?;
                Ok((loaded, edits))
            });
        let (loaded, edits) = match loaded {
            Ok(l) => l,
            Err(errors) => {
                self.reject(inner, cause, Some(&hash), &errors);
                inner.seen = Some((hash, errors.clone()));
                return ReloadOutcome::Rejected(errors);
            }
        };
        inner.seen = Some((hash.clone(), Vec::new()));
        inner.served_hash = Some(hash);
        inner.in_sync = true;
        if !force && loaded.raw == self.served_raw() {
            self.set_status(inner, |_| {});
            return ReloadOutcome::Unchanged;
        }
        for w in self.warnings(&loaded) {
            tracing::warn!(source = %name, "{w}");
        }
        let generation = self.serve(loaded);
        self.served.record(ControlEvent::Reload(true));
        self.record_published_edits(&edits, cause);
        self.set_status(inner, |s| s.loaded(cause));
        self.write_cache();
        tracing::info!(source = %name, generation, cause = cause.as_str(), "config reloaded");
        self.served.config_event(generation, cause.as_str(), None);
        ReloadOutcome::Applied { generation }
    }

    fn reject(&self, inner: &mut Inner, cause: Cause, hash: Option<&str>, errors: &[ConfigError]) {
        let source = self
            .path
            .as_deref()
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        for e in errors {
            tracing::error!(source = %source, path = %e.path, "config change rejected: {}", e.message);
        }
        tracing::warn!(
            source = %source,
            generation = self.served.generation(),
            "config change rejected ({} error(s)); the last good config keeps serving",
            errors.len()
        );
        self.served.record(ControlEvent::Reload(false));
        self.served
            .config_event(self.served.generation(), cause.as_str(), Some(summary(errors)));
        inner.in_sync = false;
        self.set_status(inner, |s| s.rejected(cause, hash, errors));
    }

    /// The raw document being served, runtime edits included (what export shows).
    pub fn served_raw(&self) -> RawConfig {
        self.raw.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The generation being served.
    pub fn generation(&self) -> u64 {
        self.served.generation()
    }

    /// Serves `loaded` and records its raw document as the one served.
    fn serve(&self, loaded: Loaded) -> u64 {
        let mut raw = self.raw.lock().unwrap_or_else(|p| p.into_inner());
        let generation = self.served.apply(loaded.config);
        *raw = loaded.raw;
        generation
    }

    fn warnings(&self, next: &Loaded) -> Vec<String> {
        let mut out = Vec::new();
        let (now, new) = (&self.served.config().gateway, &next.config.gateway);
        if now.listen != new.listen
            || now.admin_listen != new.admin_listen
            || now.admin_token_env != new.admin_token_env
        {
            out.push("listen addresses and the admin token take effect at the next restart".to_string());
        }
        let shape = |c: &config::model::GatewaySettings| -> Vec<_> {
            c.listeners.iter().map(|l| (l.addr, l.tls.is_some())).collect()
        };
        if shape(now) != shape(new) {
            out.push("listeners (addresses, TLS on or off) take effect at the next restart".to_string());
        }
        out
    }

    /// Applies an admin edit: under the write lock (and the file's advisory lock),
    /// catches up with the file, edits the served document, validates the whole
    /// result, writes it to the file atomically, and only then serves it. On any
    /// error nothing changes. `relative` makes error paths relative to the edited
    /// object; `over_invalid_source` allows the write when the file holds an invalid
    /// change (an import replaces it). Blocking: call off the async runtime.
    pub fn write(
        &self,
        relative: bool,
        over_invalid_source: bool,
        edit: impl FnOnce(&mut RawConfig) -> Result<Edited, EditError>,
    ) -> Result<Written, WriteError> {
        let mut inner = self.lock();
        let _file_lock = match &self.path {
            Some(p) => Some(store::WriteLock::acquire(p).map_err(|source| WriteError::Persist {
                path: p.clone(),
                source,
            })?),
            None => None,
        };
        if self.path.is_some()
            && let ReloadOutcome::Rejected(errors) = self.examine(&mut inner, Cause::FileChange, false)
        {
            // A missing file is recreated by this write; an invalid one blocks edits.
            let missing = self.path.as_deref().is_some_and(|p| !p.exists());
            if !missing && !over_invalid_source {
                return Err(WriteError::SourceInvalid(errors));
            }
        }
        let current = self.served_raw();
        let mut raw = current.clone();
        let edited = edit(&mut raw)?;
        if !edited.changed && (inner.in_sync || self.path.is_none()) {
            return Ok(Written {
                edited,
                generation: self.served.generation(),
                persisted: self.path.is_some(),
                warnings: Vec::new(),
            });
        }
        let rel = |errors: Vec<ConfigError>| {
            if relative {
                edit::relative_errors(errors, &edited.path)
            } else {
                errors
            }
        };
        let loaded = config::load_raw(raw, &self.overrides, &self.base_dir).map_err(|e| WriteError::Invalid(rel(e)))?;
        keeps_own_group(&self.served.config(), &loaded.config).map_err(WriteError::Invalid)?;
        crate::tls::check(&loaded.config).map_err(WriteError::Invalid)?;
        let edits = self.guard_published(&loaded.raw).map_err(WriteError::Immutable)?;
        if let Some(path) = &self.path {
            let text = render(path, &loaded.raw);
            store::write_atomic(path, text.as_bytes()).map_err(|source| WriteError::Persist {
                path: path.clone(),
                source,
            })?;
            let hash = store::content_hash(text.as_bytes());
            inner.seen = Some((hash.clone(), Vec::new()));
            inner.served_hash = Some(hash);
            inner.in_sync = true;
        }
        let warnings = self.warnings(&loaded);
        let generation = self.serve(loaded);
        self.record_published_edits(&edits, Cause::Admin);
        self.set_status(&inner, |s| s.loaded(Cause::Admin));
        self.write_cache();
        tracing::info!(generation, at = %edited.path, persisted = self.path.is_some(), "admin change applied");
        self.served.config_event(generation, Cause::Admin.as_str(), None);
        Ok(Written {
            edited,
            generation,
            persisted: self.path.is_some(),
            warnings,
        })
    }

    /// [`ControlPlane::write`] on the blocking pool, for async callers.
    pub async fn write_async(
        self: &Arc<Self>,
        relative: bool,
        over_invalid_source: bool,
        edit: impl FnOnce(&mut RawConfig) -> Result<Edited, EditError> + Send + 'static,
    ) -> Result<Written, WriteError> {
        let this = self.clone();
        let written = match tokio::task::spawn_blocking(move || this.write(relative, over_invalid_source, edit)).await {
            Ok(r) => r,
            Err(e) => std::panic::resume_unwind(e.into_panic()),
        };
        if let Err(WriteError::Invalid(errors) | WriteError::SourceInvalid(errors)) = &written {
            let generation = self.served.generation();
            self.served
                .config_event(generation, Cause::Admin.as_str(), Some(summary(errors)));
        }
        written
    }

    /// [`ControlPlane::reload`] on the blocking pool, for async callers.
    pub async fn reload_async(self: &Arc<Self>, cause: Cause, force: bool) -> ReloadOutcome {
        let this = self.clone();
        match tokio::task::spawn_blocking(move || this.reload(cause, force)).await {
            Ok(r) => r,
            Err(e) => std::panic::resume_unwind(e.into_panic()),
        }
    }
}

/// The errors of a refused change, in one line for the event journal.
fn summary(errors: &[ConfigError]) -> String {
    errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
}

/// A change must not take away the group this gateway serves: a file that
/// suddenly defines no such group is far more likely truncated than meant.
fn keeps_own_group(current: &Config, next: &Config) -> Result<(), Vec<ConfigError>> {
    match (current.own_group(), next.own_group()) {
        (Some(g), None) => Err(vec![ConfigError::new(
            "gateway_groups",
            format!(
                "the change removes group {:?}, which this gateway serves; refusing it (a truncated file?)",
                g.name
            ),
        )]),
        _ => Ok(()),
    }
}

/// The document as written back to `path`: JSON for `.json` files, else YAML.
pub fn render(path: &Path, raw: &RawConfig) -> String {
    if store::is_json_path(path) {
        let mut s = serde_json::to_string_pretty(raw).expect("raw config always serializes");
        s.push('\n');
        s
    } else {
        config::to_yaml(raw)
    }
}

#[cfg(test)]
mod tests;
