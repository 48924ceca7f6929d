//! The hook `gatehouse demo` installs so the dashboard can stop and start its
//! demo nodes (to watch a failover). Absent on a normal gateway: the endpoints
//! then answer 404.

use serde_json::Value;

use super::AdminState;
use super::error::AdminError;

/// Stops and starts the demo's upstream nodes.
pub trait DemoControl: Send + Sync + std::fmt::Debug {
    /// Every demo node: `{"name", "zone", "address", "up"}`.
    fn nodes(&self) -> Value;
    /// Stops (`up == false`) or starts a node; `Err` names an unknown node or a
    /// port that could not be bound again.
    fn set(&self, name: &str, up: bool) -> Result<Value, String>;
}

fn control(state: &AdminState) -> Result<&dyn DemoControl, AdminError> {
    state
        .demo
        .get()
        .map(|d| d.as_ref())
        .ok_or_else(|| AdminError::NoEndpoint("/admin/v1/demo (only under `gatehouse demo`)".into()))
}

/// `GET /admin/v1/demo/nodes`.
pub fn nodes(state: &AdminState) -> Result<Value, AdminError> {
    Ok(serde_json::json!({ "nodes": control(state)?.nodes() }))
}

/// `POST /admin/v1/demo/nodes/{name}/{stop|start}`.
pub fn set(state: &AdminState, name: &str, up: bool) -> Result<Value, AdminError> {
    control(state)?
        .set(name, up)
        .map_err(|message| AdminError::bad_request("demo_node", message, Some("name".into())))
}
