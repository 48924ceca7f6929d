//! The admin listener (docs/admin-api.md): health, readiness, metrics, status, the
//! services this gateway serves, node edits, publishes, new versions, and config
//! export/import. JSON in and out; errors are `{"error": {"code", "message", "path"}}`.
//!
//! Writes (and the config export) need the bearer token when one is configured.
//! Every write goes through [`crate::control::ControlPlane`], which validates the
//! whole resulting config, persists it, and only then serves it.

mod auth;
mod body;
pub mod demo;
pub mod error;
mod handlers;
mod live;
pub mod plugins;
pub mod router;
mod ui;
mod views;
mod writes;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::SystemTime;

use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use hyper::body::Incoming;

use crate::control::ControlPlane;
use crate::events::Events;
use crate::plugin::PluginRuntime;
use crate::proxy::ProxyContext;
use crate::proxy::body::Body;
use crate::proxy::error::full;
use crate::ratelimit::LimitRegistry;
pub use error::AdminError;
use router::Endpoint;

/// What the admin API reads and acts on.
#[derive(Debug)]
pub struct AdminState {
    /// Config changes: reloads, edits, import and export.
    pub control: Arc<ControlPlane>,
    /// The served snapshot and the metrics.
    pub proxy: Arc<ProxyContext>,
    /// Whether the gateway is ready (false while it starts and drains).
    pub ready: Arc<AtomicBool>,
    /// The bearer token writes need, if one is configured.
    pub token: Option<String>,
    /// The plugin runtime, when the gateway runs one.
    pub plugins: Option<Arc<PluginRuntime>>,
    /// The event journal (`GET /admin/v1/events`).
    pub events: Arc<Events>,
    /// Rate-limit state (`GET /admin/v1/ratelimits`).
    pub limits: Arc<LimitRegistry>,
    /// When the gateway started.
    pub started: SystemTime,
    /// The demo's node switch (`gatehouse demo` only).
    pub demo: OnceLock<Arc<dyn demo::DemoControl>>,
    /// The TLS listeners' certificates.
    pub tls: Arc<crate::tls::TlsRuntime>,
    /// Cancelled when the gateway stops: long-lived answers (the event stream) end.
    pub stop: tokio_util::sync::CancellationToken,
    /// The gateway's task tracker: tasks an admin answer starts run on it.
    pub tasks: tokio_util::task::TaskTracker,
}

/// Handles one admin request.
pub async fn handle(state: Arc<AdminState>, req: Request<Incoming>) -> Response<Body> {
    match dispatch(&state, req).await {
        Ok(resp) => resp,
        Err(e) => e.into_response(),
    }
}

async fn dispatch(state: &AdminState, req: Request<Incoming>) -> Result<Response<Body>, AdminError> {
    let endpoint = router::route(req.method(), req.uri().path())?;
    if endpoint.needs_token(req.method()) {
        auth::check(state.token.as_deref(), req.headers())?;
    }
    let ctl = &state.control;
    let (parts, incoming) = req.into_parts();
    let read = |limit| body::read(&parts.headers, incoming, limit);
    let value = match endpoint {
        Endpoint::Healthz => return Ok(text(StatusCode::OK, "ok\n")),
        Endpoint::Readyz => {
            return Ok(if state.ready.load(Ordering::Acquire) {
                text(StatusCode::OK, "ready\n")
            } else {
                text(StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
            });
        }
        Endpoint::Metrics => {
            let mut resp = text(StatusCode::OK, state.proxy.metrics.render());
            resp.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
            );
            return Ok(resp);
        }
        Endpoint::Status => merge(handlers::status(state), views::status_extra(state)),
        Endpoint::Events => return Ok(live::events(state, &parts.headers)),
        Endpoint::Versions => views::versions(state),
        Endpoint::RateLimits => views::ratelimits(state),
        Endpoint::DemoNodes => demo::nodes(state)?,
        Endpoint::DemoNode { name, up } => demo::set(state, &name, up)?,
        Endpoint::Ui { file } => return ui::asset(&file),
        Endpoint::Services => handlers::services(state),
        Endpoint::Plugins => return Ok(plugins::handle(state.plugins.as_deref())),
        Endpoint::Certificates => serde_json::json!({ "certificates": state.tls.certificates() }),
        Endpoint::Config if parts.method == Method::GET => return handlers::export(ctl, &parts.headers),
        Endpoint::Config => {
            let body = read(body::MAX_CONFIG_BODY).await?;
            writes::import(ctl, &body).await?
        }
        Endpoint::Nodes { group, service } => {
            let body = read(body::MAX_JSON_BODY).await?;
            writes::put_nodes(ctl, group, service, &body).await?
        }
        Endpoint::Publish { group } => {
            let body = read(body::MAX_JSON_BODY).await?;
            writes::publish(ctl, group, &body).await?
        }
        Endpoint::Version { service, version } => {
            let body = read(body::MAX_JSON_BODY).await?;
            writes::put_version(ctl, service, version, &body).await?
        }
    };
    Ok(json(StatusCode::OK, &value))
}

fn merge(mut a: serde_json::Value, b: serde_json::Value) -> serde_json::Value {
    if let (Some(a), serde_json::Value::Object(b)) = (a.as_object_mut(), b) {
        a.extend(b);
    }
    a
}

/// A JSON response.
pub fn json(status: StatusCode, value: &serde_json::Value) -> Response<Body> {
    let mut resp = Response::new(full(value.to_string()));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

fn text(status: StatusCode, body: impl Into<bytes::Bytes>) -> Response<Body> {
    let mut resp = Response::new(full(body));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}
