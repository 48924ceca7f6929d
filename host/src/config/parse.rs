//! YAML text -> [`RawConfig`], collecting every structural error with its key path.
//!
//! serde stops at the first error of a value, so the document is first read as a
//! generic YAML tree and each independent piece (the gateway section, each service
//! version, each published service, each node) is deserialized on its own. An error in
//! one piece does not hide errors in the others.

use std::collections::HashSet;

use serde::de::DeserializeOwned;
use serde_yaml_ng::{Mapping, Value};

use super::ConfigError;
use super::raw::{RawConfig, RawGroup, RawNode, RawPublished, RawService, RawVersion};

/// Pieces of a document that failed to parse, so that validation of the rest does
/// not report them a second time as missing.
#[derive(Debug, Clone, Default)]
pub struct Broken {
    /// The `gateway:` section failed.
    pub gateway: bool,
    /// Services (by name) that failed as a whole.
    pub services: HashSet<String>,
    /// (service, version) pairs that failed.
    pub versions: HashSet<(String, String)>,
}

/// A document read as far as it could be: the pieces that parsed, the errors of
/// those that did not, and which pieces those were.
#[derive(Debug, Clone, Default)]
pub struct Parsed {
    /// The pieces that parsed.
    pub raw: RawConfig,
    /// Structural errors.
    pub errors: Vec<ConfigError>,
    /// What failed.
    pub broken: Broken,
}

/// Parses a config document. On failure returns every error found.
pub fn parse_document(text: &str) -> Result<RawConfig, Vec<ConfigError>> {
    let parsed = parse_partial(text);
    if parsed.errors.is_empty() {
        Ok(parsed.raw)
    } else {
        Err(parsed.errors)
    }
}

/// Parses as much of a document as possible.
pub fn parse_partial(text: &str) -> Parsed {
    let doc: Value = match serde_yaml_ng::from_str(text) {
        Ok(v) => v,
        Err(e) => {
            let at = e
                .location()
                .map(|l| format!("line {} column {}", l.line(), l.column()))
                .unwrap_or_else(|| "document".to_string());
            return Parsed {
                errors: vec![ConfigError::new(at, format!("not valid YAML: {e}"))],
                broken: Broken {
                    gateway: true,
                    ..Default::default()
                },
                ..Default::default()
            };
        }
    };
    let mut p = Parser::default();
    let raw = p.document(doc);
    Parsed {
        raw,
        errors: p.errors,
        broken: p.broken,
    }
}

#[derive(Default)]
struct Parser {
    errors: Vec<ConfigError>,
    broken: Broken,
}

impl Parser {
    fn error(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.errors.push(ConfigError::new(path, message));
    }

    /// Deserializes `value` as `T`, recording an error at `path` (+ the inner path).
    fn de<T: DeserializeOwned>(&mut self, value: Value, path: &str) -> Option<T> {
        match serde_path_to_error::deserialize::<_, T>(value) {
            Ok(v) => Some(v),
            Err(e) => {
                let inner = e.path().to_string();
                let full = join_path(path, &inner);
                self.error(full, e.into_inner().to_string());
                None
            }
        }
    }

    /// Takes `value` as a mapping whose keys are all in `allowed`.
    fn mapping(&mut self, value: Value, path: &str, allowed: &[&str]) -> Option<Mapping> {
        let map = match value {
            Value::Mapping(m) => m,
            Value::Null => Mapping::new(),
            other => {
                self.error(path, format!("expected a mapping, found {}", kind_of(&other)));
                return None;
            }
        };
        for key in map.keys() {
            match key.as_str() {
                Some(k) if allowed.contains(&k) => {}
                Some(k) => self.error(
                    join_path(path, k),
                    format!("unknown field `{k}`, expected one of {}", allowed.join(", ")),
                ),
                None => self.error(path, format!("mapping keys must be strings, found {key:?}")),
            }
        }
        Some(map)
    }

    /// Takes `value` (absent = empty) as a sequence.
    fn sequence(&mut self, value: Option<Value>, path: &str) -> Vec<Value> {
        match value {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Sequence(s)) => s,
            Some(other) => {
                self.error(path, format!("expected a list, found {}", kind_of(&other)));
                Vec::new()
            }
        }
    }

    fn document(&mut self, doc: Value) -> RawConfig {
        let mut raw = RawConfig::default();
        if doc.is_null() {
            self.error("document", "config is empty");
            return raw;
        }
        let Some(mut map) = self.mapping(doc, "", &["gateway", "services", "gateway_groups"]) else {
            return raw;
        };
        if let Some(g) = map.remove("gateway") {
            raw.gateway = self.de(g, "gateway");
            self.broken.gateway = raw.gateway.is_none();
        }
        let services = self.sequence(map.remove("services"), "services");
        for (i, s) in services.into_iter().enumerate() {
            if let Some(s) = self.service(s, &format!("services[{i}]")) {
                raw.services.push(s);
            }
        }
        let groups = self.sequence(map.remove("gateway_groups"), "gateway_groups");
        for (i, g) in groups.into_iter().enumerate() {
            if let Some(g) = self.group(g, &format!("gateway_groups[{i}]")) {
                raw.gateway_groups.push(g);
            }
        }
        raw
    }

    fn service(&mut self, value: Value, path: &str) -> Option<RawService> {
        let name_hint = value.get("name").and_then(scalar_text);
        let Some(mut map) = self.mapping(value, path, &["name", "versions"]) else {
            self.broken.services.extend(name_hint);
            return None;
        };
        let name = self.required_string(&mut map, "name", path);
        let versions_path = join_path(path, "versions");
        let versions = self.sequence(map.remove("versions"), &versions_path);
        let mut out = Vec::new();
        for (i, v) in versions.into_iter().enumerate() {
            let label = v.get("version").and_then(scalar_text);
            match self.de::<RawVersion>(v, &format!("{versions_path}[{i}]")) {
                Some(v) => out.push(v),
                None => {
                    if let (Some(service), Some(version)) = (&name, label) {
                        self.broken.versions.insert((service.clone(), version));
                    }
                }
            }
        }
        Some(RawService {
            name: name?,
            versions: out,
        })
    }

    fn group(&mut self, value: Value, path: &str) -> Option<RawGroup> {
        let mut map = self.mapping(value, path, &["name", "services"])?;
        let name = self.required_string(&mut map, "name", path);
        let services_path = join_path(path, "services");
        let published = self.sequence(map.remove("services"), &services_path);
        let mut out = Vec::new();
        for (i, p) in published.into_iter().enumerate() {
            if let Some(p) = self.published(p, &format!("{services_path}[{i}]")) {
                out.push(p);
            }
        }
        Some(RawGroup {
            name: name?,
            services: out,
        })
    }

    fn published(&mut self, value: Value, path: &str) -> Option<RawPublished> {
        let mut map = self.mapping(value, path, &["service", "version", "nodes"])?;
        let service = self.required_string(&mut map, "service", path);
        let version = self.required_string(&mut map, "version", path);
        let nodes_path = join_path(path, "nodes");
        let nodes = self.sequence(map.remove("nodes"), &nodes_path);
        let mut out = Vec::new();
        for (i, n) in nodes.into_iter().enumerate() {
            if let Some(n) = self.de::<RawNode>(n, &format!("{nodes_path}[{i}]")) {
                out.push(n);
            }
        }
        Some(RawPublished {
            service: service?,
            version: version?,
            nodes: out,
        })
    }

    fn required_string(&mut self, map: &mut Mapping, key: &str, path: &str) -> Option<String> {
        let field = join_path(path, key);
        match map.remove(key) {
            None | Some(Value::Null) => {
                self.error(field, "missing required field");
                None
            }
            Some(v) => self.de::<String>(v, &field),
        }
    }
}

/// Joins a prefix path and a serde_path_to_error path (`.` = root).
fn join_path(prefix: &str, inner: &str) -> String {
    match (prefix.is_empty(), inner == "." || inner.is_empty()) {
        (_, true) => prefix.to_string(),
        (true, false) => inner.to_string(),
        (false, false) if inner.starts_with('[') => format!("{prefix}{inner}"),
        (false, false) => format!("{prefix}.{inner}"),
    }
}

/// A scalar as text (`1.0` and `"1.0"` both give "1.0").
fn scalar_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Sequence(_) => "a list",
        Value::Mapping(_) => "a mapping",
        Value::Tagged(_) => "a tagged value",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn collects_errors_from_independent_pieces() {
        let text = r#"
gateway: { listen: 1 , bogus: 2 }
services:
  - name: a
    versions:
      - { version: "1", upstream: { type: roundrobin, wat: 1 } }
      - { version: "2", routes: [ { uri: "/", methods: GET } ] }
gateway_groups:
  - name: g
    services:
      - service: a
        version: "1"
        nodes: [ { host: h, port: "x" }, { host: h, port: 1, colour: red } ]
"#;
        let errs = parse_document(text).unwrap_err();
        let paths: Vec<_> = errs.iter().map(|e| e.path.as_str()).collect();
        assert!(paths.iter().any(|p| p.starts_with("gateway")), "{errs:?}");
        assert!(
            paths.iter().any(|p| p.starts_with("services[0].versions[0]")),
            "{errs:?}"
        );
        assert!(
            paths.iter().any(|p| p.starts_with("services[0].versions[1]")),
            "{errs:?}"
        );
        assert!(
            paths
                .iter()
                .any(|p| p.starts_with("gateway_groups[0].services[0].nodes[0]")),
            "{errs:?}"
        );
        assert!(
            paths
                .iter()
                .any(|p| p.starts_with("gateway_groups[0].services[0].nodes[1]")),
            "{errs:?}"
        );
    }

    #[test]
    fn reports_yaml_syntax_with_location() {
        let errs = parse_document("services: [ {").unwrap_err();
        assert_eq!(errs.len(), 1);
        assert!(errs[0].path.starts_with("line"), "{errs:?}");
    }

    #[test]
    fn empty_document_is_an_error() {
        assert!(parse_document("").is_err());
    }
}
