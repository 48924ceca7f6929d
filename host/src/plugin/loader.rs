//! Turning a `.wasm` file into something instantiable: content hash, compiled-artifact
//! cache, compilation, and the world check (which plugin kinds the component implements).

use std::io::Write;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use wasmtime::component::Component;

use super::bindings::{balancer, health_evaluator, rate_limiter, retry_policy};
use super::engine::{PluginEngine, StoreData};

/// A plugin kind: one world of `wit/`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// `balancer`
    Balancer,
    /// `health-evaluator`
    HealthEvaluator,
    /// `retry-policy`
    RetryPolicy,
    /// `rate-limiter`
    RateLimiter,
}

impl Kind {
    /// The world's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Balancer => "balancer",
            Kind::HealthEvaluator => "health-evaluator",
            Kind::RetryPolicy => "retry-policy",
            Kind::RateLimiter => "rate-limiter",
        }
    }
}

/// Why a file was not loaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RejectReason {
    /// Not a WebAssembly component, or it does not compile.
    Invalid,
    /// It implements none of the plugin worlds, imports something the gateway does not
    /// provide, or is not the kind a config uses it as.
    WrongWorld,
    /// `init` failed (or trapped) for a config that names the plugin.
    Init,
    /// The smoke call trapped, timed out or broke the contract.
    Smoke,
    /// The file could not be read.
    Unreadable,
}

impl RejectReason {
    /// Name in reports.
    pub fn as_str(self) -> &'static str {
        match self {
            RejectReason::Invalid => "invalid",
            RejectReason::WrongWorld => "wrong_world",
            RejectReason::Init => "init",
            RejectReason::Smoke => "smoke",
            RejectReason::Unreadable => "unreadable",
        }
    }
}

/// A file that failed to load or validate.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct Rejection {
    /// The class of failure.
    pub reason: RejectReason,
    /// What went wrong, for people.
    pub message: String,
}

impl Rejection {
    /// A rejection of `reason` with `message`.
    pub fn new(reason: RejectReason, message: impl Into<String>) -> Self {
        Self {
            reason,
            message: message.into(),
        }
    }
}

/// Instantiation templates for each world the component implements.
#[derive(Clone, Default)]
pub struct WorldTemplates {
    /// `balancer` (0.1)
    pub balancer: Option<balancer::BalancerPre<StoreData>>,
    /// `balancer` (0.2)
    pub balancer2: Option<super::bindings2::balancer::BalancerV2Pre<StoreData>>,
    /// `health-evaluator`
    pub health: Option<health_evaluator::HealthEvaluatorPre<StoreData>>,
    /// `retry-policy`
    pub retry: Option<retry_policy::RetryPolicyPre<StoreData>>,
    /// `rate-limiter`
    pub rate_limit: Option<rate_limiter::RateLimiterPre<StoreData>>,
}

impl WorldTemplates {
    /// The kinds present.
    pub fn kinds(&self) -> Vec<Kind> {
        let mut k = Vec::new();
        if self.balancer.is_some() || self.balancer2.is_some() {
            k.push(Kind::Balancer);
        }
        if self.health.is_some() {
            k.push(Kind::HealthEvaluator);
        }
        if self.retry.is_some() {
            k.push(Kind::RetryPolicy);
        }
        if self.rate_limit.is_some() {
            k.push(Kind::RateLimiter);
        }
        k
    }

    /// The worlds present with their versions (`balancer@0.1.0`, `balancer-v2@0.2.0`).
    pub fn worlds(&self) -> Vec<String> {
        let present = [
            (self.balancer.is_some(), "balancer@0.1.0"),
            (self.balancer2.is_some(), "balancer-v2@0.2.0"),
            (self.health.is_some(), "health-evaluator@0.1.0"),
            (self.retry.is_some(), "retry-policy@0.1.0"),
            (self.rate_limit.is_some(), "rate-limiter@0.1.0"),
        ];
        present
            .into_iter()
            .filter(|(p, _)| *p)
            .map(|(_, w)| w.to_string())
            .collect()
    }

    /// Whether the component implements `kind`.
    pub fn has(&self, kind: Kind) -> bool {
        self.kinds().contains(&kind)
    }
}

/// A compiled, world-checked plugin file.
pub struct Artifact {
    /// Templates per world.
    pub pres: WorldTemplates,
    /// Whether the compiled code came from the artifact cache.
    pub from_cache: bool,
}

/// Hex SHA-256 of a file's bytes.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Compiles (or loads from `cache_dir`) and world-checks a component.
pub fn load(
    engine: &PluginEngine,
    bytes: &[u8],
    sha256: &str,
    cache_dir: Option<&Path>,
) -> Result<Artifact, Rejection> {
    let cached = cache_dir.map(|d| d.join(format!("{sha256}-{}.cwasm", engine.compatibility())));
    let (component, from_cache) = match cached.as_deref().and_then(|p| from_cache(engine, p)) {
        Some(c) => (c, true),
        None => {
            let component = Component::new(engine.engine(), bytes).map_err(|e| {
                Rejection::new(
                    RejectReason::Invalid,
                    format!("not a valid WebAssembly component: {}", one_line(&e)),
                )
            })?;
            if let Some(path) = &cached {
                store_in_cache(&component, path);
            }
            (component, false)
        }
    };
    let pre = engine.linker().instantiate_pre(&component).map_err(|e| {
        Rejection::new(
            RejectReason::WrongWorld,
            format!("wrong world: the component imports something the gateway does not provide: {e:#}"),
        )
    })?;
    let pres = WorldTemplates {
        balancer: balancer::BalancerPre::new(pre.clone()).ok(),
        balancer2: super::bindings2::balancer::BalancerV2Pre::new(pre.clone()).ok(),
        health: health_evaluator::HealthEvaluatorPre::new(pre.clone()).ok(),
        retry: retry_policy::RetryPolicyPre::new(pre.clone()).ok(),
        rate_limit: rate_limiter::RateLimiterPre::new(pre).ok(),
    };
    if pres.kinds().is_empty() {
        let exports: Vec<String> = component
            .component_type()
            .exports(engine.engine())
            .map(|(name, _)| name.to_string())
            .collect();
        return Err(Rejection::new(
            RejectReason::WrongWorld,
            format!(
                "wrong world: the component exports {}; this gateway runs gatehouse:plugin@0.1.0 \
                 (balancer, health-evaluator, retry-policy, rate-limiter) and @0.2.0 (balancer-v2)",
                if exports.is_empty() {
                    "nothing".to_string()
                } else {
                    exports.join(", ")
                }
            ),
        ));
    }
    Ok(Artifact { pres, from_cache })
}

/// The whole error chain on one line (a parse error's detail spans lines: cutting at
/// the first one left messages ending in "expected=[").
fn one_line(e: &wasmtime::Error) -> String {
    let text = format!("{e:#}");
    let one: Vec<&str> = text.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
    one.join(" ").chars().take(600).collect()
}

/// Loads a compiled artifact this gateway wrote earlier, if it is there and still loadable.
#[allow(unsafe_code)]
fn from_cache(engine: &PluginEngine, path: &Path) -> Option<Component> {
    if !path.is_file() {
        return None;
    }
    // SAFETY: the cache directory is private to the gateway (created 0700, files 0600)
    // and only ever holds artifacts that `store_in_cache` serialized with an engine of
    // the same compatibility hash (part of the file name). Deserialization still checks
    // the wasmtime version and configuration and fails cleanly on a mismatch.
    match unsafe { Component::deserialize_file(engine.engine(), path) } {
        Ok(c) => Some(c),
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %format!("{e:#}"), "discarding an unusable compiled plugin");
            let _ = std::fs::remove_file(path);
            None
        }
    }
}

fn store_in_cache(component: &Component, path: &Path) {
    let result = (|| -> std::io::Result<()> {
        let dir = path.parent().unwrap_or(Path::new("."));
        create_private_dir(dir)?;
        let bytes = component.serialize().map_err(std::io::Error::other)?;
        let tmp: PathBuf = dir.join(format!(".{}.tmp", std::process::id()));
        let mut f = private_file(&tmp)?;
        f.write_all(&bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if let Err(e) = result {
        tracing::warn!(path = %path.display(), error = %e, "cannot cache the compiled plugin");
    }
}

fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    let mut b = std::fs::DirBuilder::new();
    b.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut b, 0o700);
    b.create(dir)
}

fn private_file(path: &Path) -> std::io::Result<std::fs::File> {
    let mut o = std::fs::OpenOptions::new();
    o.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut o, 0o600);
    o.open(path)
}
