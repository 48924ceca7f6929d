//! Checking plugins before they serve: `gatehouse validate` loads every plugin a config
//! names and runs `init` with each use's config plus the smoke calls the gateway runs at
//! load; `gatehouse plugin check FILE.wasm` does the same for one file. Each problem
//! names the config key it comes from.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use super::counters::HostCounters;
use super::loader::Kind;
use super::registry::{Host, Registry};
use super::{PluginEngine, PluginLimits};
use crate::config::model::{Config, PluginRef};

/// One problem with a plugin a config names.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {message}")]
pub struct PluginProblem {
    /// The config key (`services[web].versions[1.0.0].plugins.balancer`).
    pub path: String,
    /// What is wrong.
    pub message: String,
}

/// Why the checks could not run at all.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    /// No engine.
    #[error("{0}")]
    Engine(String),
    /// The file cannot be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
}

/// A registry on its own (no watcher, no cache) for checks.
fn scratch_registry(dir: &Path) -> Result<Registry, CheckError> {
    let engine = PluginEngine::shared().map_err(CheckError::Engine)?;
    let host = Arc::new(Host {
        engine,
        limits: PluginLimits::default(),
        counters: Arc::new(HostCounters::new()),
        events: Arc::default(),
        placement: Default::default(),
    });
    Ok(Registry::new(host, dir.to_path_buf(), None))
}

/// Every use of a plugin in `config`: (key path, kind, reference).
fn uses(config: &Config) -> Vec<(String, Kind, &PluginRef)> {
    let mut out = Vec::new();
    for service in config.services.values() {
        for v in &service.versions {
            let path = format!("services[{}].versions[{}].plugins", v.service, v.version);
            let p = &v.plugins;
            let all = [
                (&p.balancer, Kind::Balancer, "balancer"),
                (&p.health, Kind::HealthEvaluator, "health"),
                (&p.retry, Kind::RetryPolicy, "retry"),
                (&p.rate_limit, Kind::RateLimiter, "rate_limit"),
            ];
            for (r, kind, key) in all {
                if let Some(r) = r {
                    out.push((format!("{path}.{key}"), kind, r));
                }
            }
        }
    }
    out
}

/// Loads every plugin `config` names from its plugins directory and checks each use:
/// the file exists and loads, implements the configured kind in a supported version,
/// and `init` accepts the use's config and the smoke calls pass.
pub fn check_config(config: &Config) -> Result<Vec<PluginProblem>, CheckError> {
    let uses = uses(config);
    if uses.is_empty() {
        return Ok(Vec::new());
    }
    let dir = &config.gateway.plugins_dir;
    let registry = scratch_registry(dir)?;
    let mut loaded: BTreeMap<&str, Result<(), String>> = BTreeMap::new();
    let mut problems = Vec::new();
    for (path, kind, r) in uses {
        let file = dir.join(format!("{}.wasm", r.name));
        let status = loaded.entry(&r.name).or_insert_with(|| match std::fs::read(&file) {
            Ok(bytes) => registry.load_checked(&r.name, &bytes),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(format!(
                "unknown plugin {:?}: there is no {} (the gateway would use the built-in policy)",
                r.name,
                file.display()
            )),
            Err(e) => Err(format!("cannot read {}: {e}", file.display())),
        });
        let result = match status {
            Err(message) => Err(message.clone()),
            Ok(()) => registry.verify(&r.name, kind, &r.config),
        };
        if let Err(message) = result {
            let key = if message.starts_with("unknown plugin") {
                format!("{path}.name")
            } else {
                path
            };
            problems.push(PluginProblem { path: key, message });
        }
    }
    Ok(problems)
}

/// What one plugin file is, for `gatehouse plugin check`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileReport {
    /// The worlds it implements, with their versions (`balancer@0.2.0`).
    pub worlds: Vec<String>,
    /// Problems: a refused load, or a kind whose `init` or smoke call failed with the
    /// given config.
    pub problems: Vec<String>,
}

/// Loads `file` and checks every kind it implements with `config` (JSON text).
pub fn check_file(file: &Path, config: &str) -> Result<FileReport, CheckError> {
    let bytes = std::fs::read(file).map_err(|source| CheckError::Read {
        path: file.display().to_string(),
        source,
    })?;
    let dir = file.parent().unwrap_or(Path::new("."));
    let registry = scratch_registry(dir)?;
    let name = file.file_stem().and_then(|s| s.to_str()).unwrap_or("plugin");
    if let Err(message) = registry.load_checked(name, &bytes) {
        return Ok(FileReport {
            worlds: Vec::new(),
            problems: vec![message],
        });
    }
    let worlds = registry.worlds(name);
    let problems = registry
        .slot(name)
        .current()
        .as_ref()
        .map(|g| g.kinds())
        .unwrap_or_default()
        .into_iter()
        .filter_map(|kind| registry.verify(name, kind, config).err())
        .map(|m| m.to_string())
        .collect();
    Ok(FileReport { worlds, problems })
}
