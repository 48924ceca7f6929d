//! The rule that a published service version never changes: which template fields of
//! a version published in one document differ in the next, each named by its key path.
//!
//! Pure: it compares two raw documents and says what changed. The control plane
//! decides what to do with the answer (refuse the change, or record it when the
//! operator started the gateway with `--allow-published-edits`).

use serde_json::Value;

use super::ConfigError;
use super::edit::publishing_groups;
use super::raw::{RawConfig, RawVersion};

/// One template field of a published version that a document changes.
#[derive(Debug, Clone, PartialEq)]
pub struct PublishedEdit {
    /// `service@version`.
    pub version: String,
    /// Key path in the new document (`services[0].versions[1].upstream.type`).
    pub path: String,
    /// The field's value as published (JSON; `null` when it was not set).
    pub was: Value,
    /// Its value in the new document.
    pub now: Value,
    /// What to do instead, e.g. `create version 1.0.1 and publish it`.
    pub advice: String,
}

impl PublishedEdit {
    /// The edit as a config error at its key path.
    pub fn to_error(&self) -> ConfigError {
        ConfigError::new(
            self.path.clone(),
            format!(
                "published version {} cannot change in place (was {}, now {}); {}",
                self.version,
                short(&self.was),
                short(&self.now),
                self.advice
            ),
        )
    }
}

/// Every template field of a version published (to any group) in `served` that
/// `next` changes. A version that `next` removes is not an edit (validation refuses a
/// group that still publishes it); versions published only in `next` are new.
pub fn published_edits(served: &RawConfig, next: &RawConfig) -> Vec<PublishedEdit> {
    let mut out = Vec::new();
    for old_service in &served.services {
        for old in &old_service.versions {
            if publishing_groups(served, &old_service.name, &old.version).is_empty() {
                continue;
            }
            let Some((si, new_service)) = next
                .services
                .iter()
                .enumerate()
                .find(|(_, s)| s.name == old_service.name)
            else {
                continue;
            };
            let Some((vi, new)) = new_service
                .versions
                .iter()
                .enumerate()
                .find(|(_, v)| v.version == old.version)
            else {
                continue;
            };
            if new == old {
                continue;
            }
            let label = format!("{}@{}", old_service.name, old.version);
            let advice = format!(
                "create version {} and publish it",
                next_version(&old.version, new_service.versions.iter().map(|v| v.version.as_str()))
            );
            let mut fields = Vec::new();
            diff(
                &as_json(old),
                &as_json(new),
                format!("services[{si}].versions[{vi}]"),
                &mut fields,
            );
            out.extend(fields.into_iter().map(|(path, was, now)| PublishedEdit {
                version: label.clone(),
                path,
                was,
                now,
                advice: advice.clone(),
            }));
        }
    }
    out
}

fn as_json(v: &RawVersion) -> Value {
    serde_json::to_value(v).expect("a raw version always serializes")
}

/// The leaves (or smallest differing subtrees) where `a` and `b` differ.
fn diff(a: &Value, b: &Value, path: String, out: &mut Vec<(String, Value, Value)>) {
    match (a, b) {
        _ if a == b => {}
        (Value::Object(x), Value::Object(y)) => {
            let mut keys: Vec<&String> = x.keys().chain(y.keys()).collect();
            keys.sort();
            keys.dedup();
            for k in keys {
                let (va, vb) = (x.get(k).unwrap_or(&Value::Null), y.get(k).unwrap_or(&Value::Null));
                diff(va, vb, format!("{path}.{k}"), out);
            }
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => {
            for (i, (va, vb)) in x.iter().zip(y).enumerate() {
                diff(va, vb, format!("{path}[{i}]"), out);
            }
        }
        _ => out.push((path, a.clone(), b.clone())),
    }
}

/// A version label not yet taken: the patch number after `current`'s (`1.0.0` ->
/// `1.0.1`), skipping labels that exist; for labels that are not dotted numbers,
/// `<label>-2`, `<label>-3` ...
pub fn next_version<'a>(current: &str, taken: impl Iterator<Item = &'a str> + Clone) -> String {
    let exists = |v: &str| taken.clone().any(|t| t == v);
    let parts: Vec<&str> = current.split('.').collect();
    let numeric = parts
        .iter()
        .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
    for n in 1u64.. {
        let candidate = match parts.split_last() {
            Some((last, head)) if numeric => {
                let last: u64 = last.parse().unwrap_or(0);
                let mut v: Vec<String> = head.iter().map(|s| s.to_string()).collect();
                v.push((last + n).to_string());
                v.join(".")
            }
            _ => format!("{current}-{}", n + 1),
        };
        if !exists(&candidate) {
            return candidate;
        }
    }
    unreachable!("some version label is free")
}

/// A value for a one-line message.
fn short(v: &Value) -> String {
    let s = match v {
        Value::Null => "unset".to_string(),
        other => other.to_string(),
    };
    if s.len() > 80 {
        format!("{}…", &s[..s.floor_char_boundary(77)])
    } else {
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::raw::RawConfig;

    fn raw(upstream: &str, published: &str) -> RawConfig {
        let text = format!(
            r#"
services:
  - name: probe
    versions:
      - version: 1.0.0
        routes: [ {{ uri: "/" }} ]
        upstream: {upstream}
      - version: 2.0.0
        routes: [ {{ uri: "/" }} ]
gateway_groups:
  - name: g
    services: [ {{ service: probe, version: {published}, nodes: [ {{ host: h, port: 1 }} ] }} ]
"#
        );
        serde_yaml_ng::from_str(&text).unwrap()
    }

    #[test]
    fn each_changed_field_of_a_published_version_is_named_by_its_path() {
        let served = raw("{ type: roundrobin, retries: 2 }", "1.0.0");
        let next = raw("{ type: least_conn, retries: 3 }", "1.0.0");
        let edits = published_edits(&served, &next);
        let paths: Vec<&str> = edits.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "services[0].versions[0].upstream.retries",
                "services[0].versions[0].upstream.type"
            ]
        );
        let msg = edits[1].to_error().message;
        assert!(
            msg.contains("probe@1.0.0") && msg.contains("\"roundrobin\"") && msg.contains("\"least_conn\""),
            "{msg}"
        );
        assert!(msg.ends_with("create version 1.0.1 and publish it"), "{msg}");
    }

    #[test]
    fn unpublished_versions_nodes_and_new_fields_elsewhere_are_free() {
        // 1.0.0 is not published: it may change.
        let served = raw("{ type: roundrobin }", "2.0.0");
        let next = raw("{ type: least_conn }", "2.0.0");
        assert!(published_edits(&served, &next).is_empty());
        // Nodes are runtime config.
        let served = raw("{ type: roundrobin }", "1.0.0");
        let mut next = served.clone();
        next.gateway_groups[0].services[0].nodes[0].port = 2;
        assert!(published_edits(&served, &next).is_empty());
        // A field set where it was unset is a change too.
        let next = raw("{ type: roundrobin, retries: 1 }", "1.0.0");
        let edits = published_edits(&served, &next);
        assert_eq!(edits.len(), 1);
        assert_eq!(edits[0].was, Value::Null);
    }

    #[test]
    fn next_version_skips_taken_labels() {
        let taken = ["1.0.0", "1.0.1", "2.0.0"];
        assert_eq!(next_version("1.0.0", taken.iter().copied()), "1.0.2");
        assert_eq!(next_version("2.0.0", taken.iter().copied()), "2.0.1");
        assert_eq!(next_version("7", [].iter().copied()), "8");
        assert_eq!(next_version("blue", ["blue"].iter().copied()), "blue-2");
        assert_eq!(next_version("v1", ["v1", "v1-2"].iter().copied()), "v1-3");
    }
}
