//! Configuration: the file format ([`raw`]), its validated form ([`model`]), and
//! the two steps between them ([`parse`], [`validate`]).
//!
//! Every error names the key path where it was found, and all errors of a document
//! are reported together.

pub mod duration;
pub mod edit;
pub mod immutable;
pub mod model;
pub mod parse;
pub mod raw;
pub mod raw_tls;
pub mod store;
pub mod validate;

use std::fmt;
use std::path::{Path, PathBuf};

use serde::Serialize;

pub use model::Config;
pub use raw::RawConfig;
pub use validate::Overrides;

/// One problem in a config document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ConfigError {
    /// Key path, e.g. `services[0].versions[1].upstream.type`.
    pub path: String,
    /// What is wrong.
    pub message: String,
}

impl ConfigError {
    /// An error at `path`.
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// Why a config could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The file could not be read.
    #[error("cannot read config {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The document is invalid.
    #[error("config {source_name} is invalid ({} error{}):\n{}", .errors.len(), if .errors.len() == 1 { "" } else { "s" }, render(.errors))]
    Invalid {
        /// File name or other origin.
        source_name: String,
        /// Every problem found.
        errors: Vec<ConfigError>,
    },
}

impl LoadError {
    /// The list of problems (empty for read errors).
    pub fn errors(&self) -> Vec<ConfigError> {
        match self {
            LoadError::Read { path, source } => vec![ConfigError::new(path.display().to_string(), source.to_string())],
            LoadError::Invalid { errors, .. } => errors.clone(),
        }
    }
}

fn render(errors: &[ConfigError]) -> String {
    errors.iter().map(|e| format!("  - {e}")).collect::<Vec<_>>().join("\n")
}

/// A document that parsed and validated, in both its raw and its validated form.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// As written (what admin edits change and what gets persisted).
    pub raw: RawConfig,
    /// Validated.
    pub config: Config,
}

/// Parses and validates config text.
pub fn load_str(text: &str, source_name: &str, overrides: &Overrides, base_dir: &Path) -> Result<Loaded, LoadError> {
    let invalid = |errors| LoadError::Invalid {
        source_name: source_name.to_string(),
        errors,
    };
    let parsed = parse::parse_partial(text);
    let mut errors = parsed.errors;
    match validate::validate_partial(&parsed.raw, overrides, base_dir, &parsed.broken) {
        Ok(config) if errors.is_empty() => Ok(Loaded {
            raw: parsed.raw,
            config,
        }),
        Ok(_) => Err(invalid(errors)),
        Err(more) => {
            errors.extend(more);
            Err(invalid(errors))
        }
    }
}

/// Validates an in-memory raw document (admin edits and imports).
pub fn load_raw(raw: RawConfig, overrides: &Overrides, base_dir: &Path) -> Result<Loaded, Vec<ConfigError>> {
    let config = validate::validate(&raw, overrides, base_dir)?;
    Ok(Loaded { raw, config })
}

/// Reads, parses and validates a config file. Relative directories in it are
/// resolved against the file's directory.
pub fn load_file(path: &Path, overrides: &Overrides) -> Result<Loaded, LoadError> {
    let text = std::fs::read_to_string(path).map_err(|source| LoadError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    load_str(&text, &path.display().to_string(), overrides, &base_dir_of(path))
}

/// The directory relative paths in a config file are resolved against.
pub fn base_dir_of(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Renders a raw config as YAML.
pub fn to_yaml(raw: &RawConfig) -> String {
    serde_yaml_ng::to_string(raw).expect("raw config always serializes")
}
