//! Responses the gateway makes itself: a JSON body
//! `{"error": {"code": ..., "message": ...}}` with the right status.

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};

use super::body::Body;

/// Why the gateway answered instead of an upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyError {
    /// No route matched.
    RouteNotFound,
    /// No node could be picked.
    NoHealthyUpstream,
    /// Connecting to the node failed.
    ConnectFailed,
    /// The node did not answer in time.
    UpstreamTimeout,
    /// The connection broke or the response was malformed.
    UpstreamReset,
    /// The request body is larger than allowed.
    BodyTooLarge,
    /// The request could not be forwarded as received.
    BadRequest,
    /// The client stopped sending its request body.
    RequestTimeout,
}

impl ProxyError {
    /// HTTP status.
    pub fn status(self) -> StatusCode {
        match self {
            ProxyError::RouteNotFound => StatusCode::NOT_FOUND,
            ProxyError::NoHealthyUpstream => StatusCode::SERVICE_UNAVAILABLE,
            ProxyError::ConnectFailed | ProxyError::UpstreamReset => StatusCode::BAD_GATEWAY,
            ProxyError::UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
            ProxyError::BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ProxyError::BadRequest => StatusCode::BAD_REQUEST,
            ProxyError::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
        }
    }

    /// Machine-readable code.
    pub fn code(self) -> &'static str {
        match self {
            ProxyError::RouteNotFound => "route_not_found",
            ProxyError::NoHealthyUpstream => "no_healthy_upstream",
            ProxyError::ConnectFailed => "upstream_connect_failed",
            ProxyError::UpstreamTimeout => "upstream_timeout",
            ProxyError::UpstreamReset => "upstream_reset",
            ProxyError::BodyTooLarge => "body_too_large",
            ProxyError::BadRequest => "bad_request",
            ProxyError::RequestTimeout => "request_timeout",
        }
    }
}

/// A JSON error response.
pub fn json_error(status: StatusCode, code: &str, message: &str) -> Response<Body> {
    let body = serde_json::json!({ "error": { "code": code, "message": message } }).to_string();
    let mut resp = Response::new(full(body));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

/// The gateway's answer for `err`.
pub fn error_response(err: ProxyError, message: &str) -> Response<Body> {
    json_error(err.status(), err.code(), message)
}

/// A complete in-memory body.
pub fn full(data: impl Into<Bytes>) -> Body {
    Body::full(data)
}
