//! Write endpoints: node edits, publishes, new versions and config import. Each
//! decodes its body, then hands one edit to the control plane, which validates the
//! whole result, persists it and serves it — or changes nothing.

use std::sync::Arc;

use serde::Deserialize;
use serde_json::{Value, json};

use super::error::AdminError;
use crate::config::edit;
use crate::config::parse::parse_document;
use crate::config::raw::{RawNode, RawVersion};
use crate::control::{ControlPlane, Written};

/// `PUT /admin/v1/groups/{g}/services/{s}/nodes` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodesBody {
    /// The complete new node list.
    pub nodes: Vec<RawNode>,
}

/// `POST /admin/v1/groups/{g}/publish` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PublishBody {
    /// Service to publish.
    pub service: String,
    /// Version to serve.
    pub version: String,
    /// Nodes to start with when the service is new to the group (optional; when
    /// given for a service already published, they replace its nodes).
    #[serde(default)]
    pub nodes: Option<Vec<RawNode>>,
}

fn written(w: &Written) -> Value {
    json!({
        "changed": w.edited.changed,
        "generation": w.generation,
        "persisted": w.persisted,
        "warnings": w.warnings,
    })
}

fn merge(mut a: Value, b: Value) -> Value {
    if let (Some(a), Value::Object(b)) = (a.as_object_mut(), b) {
        a.extend(b);
    }
    a
}

/// Replaces the runtime nodes of a (group, service).
pub async fn put_nodes(
    ctl: &Arc<ControlPlane>,
    group: String,
    service: String,
    body: &[u8],
) -> Result<Value, AdminError> {
    let NodesBody { nodes } = super::body::json(body)?;
    let (g, s, n) = (group.clone(), service.clone(), nodes.clone());
    let w = ctl
        .write_async(true, false, move |raw| edit::set_nodes(raw, &g, &s, n))
        .await?;
    Ok(merge(
        json!({ "group": group, "service": service, "nodes": nodes }),
        written(&w),
    ))
}

/// Publishes a version to a group.
pub async fn publish(ctl: &Arc<ControlPlane>, group: String, body: &[u8]) -> Result<Value, AdminError> {
    let PublishBody {
        service,
        version,
        nodes,
    } = super::body::json(body)?;
    let (g, s, v) = (group.clone(), service.clone(), version.clone());
    let w = ctl
        .write_async(false, false, move |raw| edit::publish(raw, &g, &s, &v, nodes))
        .await?;
    Ok(merge(
        json!({ "group": group, "service": service, "version": version, "previous": w.edited.previous }),
        written(&w),
    ))
}

/// Creates (or replaces, while unpublished) a version of a service.
pub async fn put_version(
    ctl: &Arc<ControlPlane>,
    service: String,
    version: String,
    body: &[u8],
) -> Result<Value, AdminError> {
    let mut value: Value = super::body::json(body)?;
    let Some(obj) = value.as_object_mut() else {
        return Err(AdminError::bad_request(
            "invalid_body",
            "expected a version object as it appears under `versions:` in the config",
            None,
        ));
    };
    match obj.get("version") {
        None => {
            obj.insert("version".into(), Value::String(version.clone()));
        }
        Some(Value::String(v)) if *v == version => {}
        Some(other) => {
            return Err(AdminError::bad_request(
                "version_mismatch",
                format!("the body's version {other} differs from {version:?} in the path"),
                Some("version".into()),
            ));
        }
    }
    let parsed: RawVersion = super::body::json(value.to_string().as_bytes())?;
    let s = service.clone();
    let w = ctl
        .write_async(true, false, move |raw| edit::put_version(raw, &s, parsed))
        .await?;
    Ok(merge(json!({ "service": service, "version": version }), written(&w)))
}

/// Replaces the whole config (restore from a backup): YAML or JSON text, validated
/// as a whole, persisted, then served. Allowed even while the file holds an invalid
/// change, since an import is how one repairs it.
pub async fn import(ctl: &Arc<ControlPlane>, body: &[u8]) -> Result<Value, AdminError> {
    let text = std::str::from_utf8(body)
        .map_err(|_| AdminError::bad_request("invalid_body", "the config is not UTF-8 text", None))?;
    let next = parse_document(text).map_err(|errors| {
        let first = errors.first().cloned();
        AdminError::BadRequest {
            code: "invalid_document",
            message: errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "),
            path: first.map(|e| e.path),
        }
    })?;
    let w = ctl
        .write_async(false, true, move |raw| {
            let changed = *raw != next;
            *raw = next;
            Ok(edit::Edited {
                changed,
                path: String::new(),
                previous: None,
            })
        })
        .await?;
    Ok(written(&w))
}
