//! The admin listener: health, readiness, metrics and status.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use hyper::body::Incoming;

use crate::app::AppState;
use crate::proxy::error::{full, json_error};
use crate::upstream::client::Body;

/// Handles one admin request.
pub async fn handle(state: Arc<AppState>, req: Request<Incoming>) -> Response<Body> {
    let path = req.uri().path().to_string();
    match (req.method(), path.as_str()) {
        (&Method::GET, "/healthz") => text(StatusCode::OK, "ok\n"),
        (&Method::GET, "/readyz") => {
            if state.ready.load(Ordering::Acquire) {
                text(StatusCode::OK, "ready\n")
            } else {
                text(StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
            }
        }
        (&Method::GET, "/metrics") => {
            let mut resp = text(StatusCode::OK, state.proxy.metrics.render());
            resp.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
            );
            resp
        }
        (&Method::GET, "/admin/v1/status") => {
            let cfg = state.config();
            let body = serde_json::json!({
                "group": cfg.gateway.group,
                "zone": cfg.gateway.zone,
                "region": cfg.gateway.region,
                "generation": state.generation(),
                "source": state.options.config_path.as_ref().map(|p| p.display().to_string()),
                "ready": state.ready.load(Ordering::Acquire),
            });
            json(StatusCode::OK, &body)
        }
        (&Method::GET, "/admin/v1/plugins") => crate::plugin::admin::handle(&state),
        _ => json_error(StatusCode::NOT_FOUND, "not_found", &format!("no admin endpoint {path}")),
    }
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
