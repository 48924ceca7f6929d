//! Edits of the raw document that the admin API makes: replace the runtime nodes of
//! a (group, service), publish a version to a group, create a version.
//!
//! These only reshape the document and enforce the version model (a version that
//! any group publishes is immutable); whether the result is a valid config is left
//! to [`super::validate`], which sees the whole edited document.

use super::ConfigError;
use super::raw::{RawConfig, RawNode, RawPublished, RawService, RawVersion};

/// Why an edit was refused before validation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EditError {
    /// The group, service or version named by the request does not exist.
    #[error("{message}")]
    NotFound {
        /// What is missing, for people.
        message: String,
    },
    /// The version is published and so cannot change.
    #[error(
        "version {version:?} of service {service:?} is published (group{} {}) and cannot change; create a new version and publish it",
        if groups.len() == 1 { "" } else { "s" },
        groups.join(", ")
    )]
    Immutable {
        /// Service name.
        service: String,
        /// Version label.
        version: String,
        /// Groups that publish it.
        groups: Vec<String>,
    },
}

/// What an edit did, and where in the document it did it (for error paths).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Edited {
    /// Whether the document changed at all.
    pub changed: bool,
    /// Key path of the edited object, e.g. `gateway_groups[0].services[1]`.
    pub path: String,
    /// The version that was published before (publish only).
    pub previous: Option<String>,
}

/// Groups that publish `service` at `version`.
pub fn publishing_groups(raw: &RawConfig, service: &str, version: &str) -> Vec<String> {
    raw.gateway_groups
        .iter()
        .filter(|g| g.services.iter().any(|p| p.service == service && p.version == version))
        .map(|g| g.name.clone())
        .collect()
}

fn group_index(raw: &RawConfig, group: &str) -> Result<usize, EditError> {
    raw.gateway_groups
        .iter()
        .position(|g| g.name == group)
        .ok_or_else(|| EditError::NotFound {
            message: format!("no gateway group {group:?}"),
        })
}

/// Replaces the runtime nodes of `service` in `group`. The service must already be
/// published to the group; other groups are not touched.
pub fn set_nodes(raw: &mut RawConfig, group: &str, service: &str, nodes: Vec<RawNode>) -> Result<Edited, EditError> {
    let gi = group_index(raw, group)?;
    let g = &mut raw.gateway_groups[gi];
    let Some(si) = g.services.iter().position(|p| p.service == service) else {
        return Err(EditError::NotFound {
            message: format!("service {service:?} is not published to group {group:?}; publish a version first"),
        });
    };
    let published = &mut g.services[si];
    let changed = published.nodes != nodes;
    published.nodes = nodes;
    Ok(Edited {
        changed,
        path: format!("gateway_groups[{gi}].services[{si}]"),
        previous: None,
    })
}

/// Publishes `version` of `service` to `group`. A service already published there
/// switches version and keeps its nodes (unless `nodes` replaces them); a service
/// new to the group starts with `nodes` (or none).
pub fn publish(
    raw: &mut RawConfig,
    group: &str,
    service: &str,
    version: &str,
    nodes: Option<Vec<RawNode>>,
) -> Result<Edited, EditError> {
    let gi = group_index(raw, group)?;
    let Some(svc) = raw.services.iter().find(|s| s.name == service) else {
        return Err(EditError::NotFound {
            message: format!("no service {service:?}"),
        });
    };
    if !svc.versions.iter().any(|v| v.version == version) {
        return Err(EditError::NotFound {
            message: format!("service {service:?} has no version {version:?}"),
        });
    }
    let g = &mut raw.gateway_groups[gi];
    let (si, previous, changed) = match g.services.iter().position(|p| p.service == service) {
        Some(si) => {
            let p = &mut g.services[si];
            let previous = std::mem::replace(&mut p.version, version.to_string());
            let mut changed = previous != version;
            if let Some(nodes) = nodes {
                changed |= p.nodes != nodes;
                p.nodes = nodes;
            }
            (si, Some(previous), changed)
        }
        None => {
            g.services.push(RawPublished {
                service: service.to_string(),
                version: version.to_string(),
                nodes: nodes.unwrap_or_default(),
            });
            (g.services.len() - 1, None, true)
        }
    };
    Ok(Edited {
        changed,
        path: format!("gateway_groups[{gi}].services[{si}]"),
        previous,
    })
}

/// Creates `version` of `service` (creating the service if it is new), or replaces
/// it if it exists and no group publishes it. Putting a published version again
/// unchanged is accepted and changes nothing.
pub fn put_version(raw: &mut RawConfig, service: &str, version: RawVersion) -> Result<Edited, EditError> {
    let groups = publishing_groups(raw, service, &version.version);
    let si = match raw.services.iter().position(|s| s.name == service) {
        Some(si) => si,
        None => {
            raw.services.push(RawService {
                name: service.to_string(),
                versions: Vec::new(),
            });
            raw.services.len() - 1
        }
    };
    let versions = &mut raw.services[si].versions;
    let (vi, changed) = match versions.iter().position(|v| v.version == version.version) {
        Some(vi) if versions[vi] == version => (vi, false),
        Some(_) if !groups.is_empty() => {
            return Err(EditError::Immutable {
                service: service.to_string(),
                version: version.version,
                groups,
            });
        }
        Some(vi) => {
            versions[vi] = version;
            (vi, true)
        }
        None => {
            versions.push(version);
            (versions.len() - 1, true)
        }
    };
    Ok(Edited {
        changed,
        path: format!("services[{si}].versions[{vi}]"),
        previous: None,
    })
}

/// Rewrites error paths under `prefix` relative to it (so an error in a request
/// body names the body's own key path); other errors keep their document path.
pub fn relative_errors(errors: Vec<ConfigError>, prefix: &str) -> Vec<ConfigError> {
    errors
        .into_iter()
        .map(|mut e| {
            if let Some(rest) = e.path.strip_prefix(prefix)
                && (rest.is_empty() || rest.starts_with('.') || rest.starts_with('['))
            {
                e.path = rest.trim_start_matches('.').to_string();
            }
            e
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse::parse_document;

    const DOC: &str = r#"
services:
  - name: petstore
    versions:
      - version: 1.0.0
        routes: [ { uri: "/pet/*" } ]
      - version: 1.0.1
        routes: [ { uri: "/pet/*" } ]
        upstream: { type: least_conn }
gateway_groups:
  - name: test
    services:
      - { service: petstore, version: 1.0.0, nodes: [ { host: 127.0.0.1, port: 1 } ] }
  - name: prod
    services:
      - { service: petstore, version: 1.0.0, nodes: [ { host: 127.0.0.1, port: 2 } ] }
"#;

    fn doc() -> RawConfig {
        parse_document(DOC).unwrap()
    }

    fn node(port: u32) -> RawNode {
        RawNode {
            host: "127.0.0.1".into(),
            port,
            ..Default::default()
        }
    }

    #[test]
    fn nodes_change_in_one_group_only() {
        let mut raw = doc();
        let e = set_nodes(&mut raw, "test", "petstore", vec![node(1), node(3)]).unwrap();
        assert!(e.changed);
        assert_eq!(e.path, "gateway_groups[0].services[0]");
        assert_eq!(raw.gateway_groups[0].services[0].nodes.len(), 2);
        assert_eq!(raw.gateway_groups[1].services[0].nodes, vec![node(2)]);
        assert!(matches!(
            set_nodes(&mut raw, "nope", "petstore", vec![]),
            Err(EditError::NotFound { .. })
        ));
        assert!(matches!(
            set_nodes(&mut raw, "test", "nope", vec![]),
            Err(EditError::NotFound { .. })
        ));
    }

    #[test]
    fn published_versions_are_immutable_unpublished_ones_are_not() {
        let mut raw = doc();
        let mut changed = raw.services[0].versions[0].clone();
        changed.upstream.kind = Some("least_conn".into());
        let err = put_version(&mut raw, "petstore", changed).unwrap_err();
        assert!(matches!(&err, EditError::Immutable { groups, .. } if groups == &["test", "prod"]));
        // Same content again: accepted, nothing changes.
        let same = raw.services[0].versions[0].clone();
        assert!(!put_version(&mut raw, "petstore", same).unwrap().changed);
        // 1.0.1 is not published: it may be replaced.
        let mut v101 = raw.services[0].versions[1].clone();
        v101.upstream.kind = Some("ewma".into());
        let e = put_version(&mut raw, "petstore", v101).unwrap();
        assert!(e.changed);
        assert_eq!(e.path, "services[0].versions[1]");
        // A new service is created with its first version.
        let e = put_version(
            &mut raw,
            "shop",
            RawVersion {
                version: "1".into(),
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(e.path, "services[1].versions[0]");
    }

    #[test]
    fn publish_switches_version_and_keeps_nodes() {
        let mut raw = doc();
        let e = publish(&mut raw, "test", "petstore", "1.0.1", None).unwrap();
        assert_eq!(e.previous.as_deref(), Some("1.0.0"));
        assert!(e.changed);
        assert_eq!(raw.gateway_groups[0].services[0].version, "1.0.1");
        assert_eq!(raw.gateway_groups[0].services[0].nodes, vec![node(1)]);
        assert_eq!(raw.gateway_groups[1].services[0].version, "1.0.0");
        assert!(matches!(
            publish(&mut raw, "test", "petstore", "9", None),
            Err(EditError::NotFound { .. })
        ));
        assert!(!publish(&mut raw, "test", "petstore", "1.0.1", None).unwrap().changed);
    }

    #[test]
    fn error_paths_become_relative() {
        let errs = vec![
            ConfigError::new("gateway_groups[0].services[0].nodes[1].port", "bad"),
            ConfigError::new("gateway_groups[0].services[10].nodes", "other"),
        ];
        let rel = relative_errors(errs, "gateway_groups[0].services[0]");
        assert_eq!(rel[0].path, "nodes[1].port");
        assert_eq!(rel[1].path, "gateway_groups[0].services[10].nodes");
    }
}
