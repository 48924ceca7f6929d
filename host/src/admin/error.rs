//! Admin API errors and their JSON form:
//! `{"error": {"code": ..., "message": ..., "path": ..., "errors": [...]}}`.
//!
//! `path` is the key path of the offending value (in the request body, or in the
//! config document) or `null`; `errors` lists every problem when a config does not
//! validate.

use http::{HeaderValue, Response, StatusCode, header};

use crate::config::ConfigError;
use crate::config::edit::EditError;
use crate::control::WriteError;
use crate::proxy::body::Body;

/// Why an admin request failed.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// No such endpoint.
    #[error("no admin endpoint {0}")]
    NoEndpoint(String),
    /// The endpoint exists but not with this method.
    #[error("method {method} is not allowed here; allowed: {allow}")]
    MethodNotAllowed {
        /// The method used.
        method: String,
        /// Allowed methods, comma separated.
        allow: &'static str,
    },
    /// A group, service or version named by the request does not exist.
    #[error("{0}")]
    NotFound(String),
    /// No bearer token was sent.
    #[error("this call needs an `Authorization: Bearer <token>` header")]
    Unauthorized,
    /// The bearer token is wrong.
    #[error("the bearer token is not valid")]
    Forbidden,
    /// The request body is larger than allowed.
    #[error("the request body is larger than {limit} bytes")]
    BodyTooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// The request is malformed.
    #[error("{message}")]
    BadRequest {
        /// Machine-readable code.
        code: &'static str,
        /// What is wrong.
        message: String,
        /// Key path in the body, if known.
        path: Option<String>,
    },
    /// A published version cannot change.
    #[error("{0}")]
    Immutable(String),
    /// The config file holds an invalid change that blocks edits.
    #[error("the config file has a change that does not validate; fix it or import a whole config")]
    SourceInvalid(Vec<ConfigError>),
    /// The result would not be a valid config.
    #[error("the change does not validate")]
    Invalid(Vec<ConfigError>),
    /// Something failed on the gateway's side.
    #[error("{0}")]
    Internal(String),
}

impl AdminError {
    /// A 400 with a code, message and optional key path.
    pub fn bad_request(code: &'static str, message: impl Into<String>, path: Option<String>) -> Self {
        AdminError::BadRequest {
            code,
            message: message.into(),
            path,
        }
    }

    /// HTTP status.
    pub fn status(&self) -> StatusCode {
        match self {
            AdminError::NoEndpoint(_) | AdminError::NotFound(_) => StatusCode::NOT_FOUND,
            AdminError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            AdminError::Unauthorized => StatusCode::UNAUTHORIZED,
            AdminError::Forbidden => StatusCode::FORBIDDEN,
            AdminError::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            AdminError::BadRequest { .. } => StatusCode::BAD_REQUEST,
            AdminError::Immutable(_) | AdminError::SourceInvalid(_) => StatusCode::CONFLICT,
            AdminError::Invalid(_) => StatusCode::UNPROCESSABLE_ENTITY,
            AdminError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// Machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            AdminError::NoEndpoint(_) | AdminError::NotFound(_) => "not_found",
            AdminError::MethodNotAllowed { .. } => "method_not_allowed",
            AdminError::Unauthorized => "unauthorized",
            AdminError::Forbidden => "forbidden",
            AdminError::BodyTooLarge { .. } => "body_too_large",
            AdminError::BadRequest { code, .. } => code,
            AdminError::Immutable(_) => "immutable",
            AdminError::SourceInvalid(_) => "source_invalid",
            AdminError::Invalid(_) => "invalid_config",
            AdminError::Internal(_) => "internal",
        }
    }

    fn errors(&self) -> Option<&[ConfigError]> {
        match self {
            AdminError::SourceInvalid(e) | AdminError::Invalid(e) => Some(e),
            _ => None,
        }
    }

    /// The JSON body.
    pub fn body(&self) -> serde_json::Value {
        let (message, path) = match (self, self.errors().and_then(<[_]>::first)) {
            (AdminError::BadRequest { message, path, .. }, _) => (message.clone(), path.clone()),
            (AdminError::Invalid(errs), Some(first)) => (
                if errs.len() == 1 {
                    first.message.clone()
                } else {
                    format!("{} (and {} more)", first.message, errs.len() - 1)
                },
                Some(first.path.clone()),
            ),
            (_, first) => (self.to_string(), first.map(|e| e.path.clone())),
        };
        let mut error = serde_json::json!({ "code": self.code(), "message": message, "path": path });
        if let Some(errs) = self.errors() {
            error["errors"] = serde_json::to_value(errs).unwrap_or_default();
        }
        serde_json::json!({ "error": error })
    }

    /// The response.
    pub fn into_response(self) -> Response<Body> {
        let mut resp = super::json(self.status(), &self.body());
        match &self {
            AdminError::Unauthorized => {
                resp.headers_mut()
                    .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            AdminError::MethodNotAllowed { allow, .. } => {
                resp.headers_mut()
                    .insert(header::ALLOW, HeaderValue::from_static(allow));
            }
            _ => {}
        }
        resp
    }
}

impl From<EditError> for AdminError {
    fn from(e: EditError) -> Self {
        match e {
            EditError::NotFound { message } => AdminError::NotFound(message),
            e @ EditError::Immutable { .. } => AdminError::Immutable(e.to_string()),
        }
    }
}

impl From<WriteError> for AdminError {
    fn from(e: WriteError) -> Self {
        match e {
            WriteError::Edit(e) => e.into(),
            WriteError::Invalid(errs) => AdminError::Invalid(errs),
            WriteError::Immutable(errs) => AdminError::Immutable(
                errs.iter()
                    .map(|e| format!("{}: {}", e.path, e.message))
                    .collect::<Vec<_>>()
                    .join("; "),
            ),
            WriteError::SourceInvalid(errs) => AdminError::SourceInvalid(errs),
            e @ WriteError::Persist { .. } => {
                tracing::error!(error = %e, "admin write failed");
                AdminError::Internal(e.to_string())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_config_names_the_first_path_and_lists_all() {
        let e = AdminError::Invalid(vec![
            ConfigError::new("nodes[0].port", "port 0 is not in 1..=65535"),
            ConfigError::new("nodes[1].weight", "weight 70000 is above 65535"),
        ]);
        assert_eq!(e.status(), StatusCode::UNPROCESSABLE_ENTITY);
        let b = e.body();
        assert_eq!(b["error"]["code"], "invalid_config");
        assert_eq!(b["error"]["path"], "nodes[0].port");
        assert_eq!(b["error"]["errors"].as_array().unwrap().len(), 2);
    }

    #[test]
    fn every_error_has_code_message_and_path() {
        for e in [
            AdminError::Unauthorized,
            AdminError::Forbidden,
            AdminError::NotFound("x".into()),
            AdminError::BodyTooLarge { limit: 1 },
            AdminError::bad_request("malformed_json", "bad", Some("nodes".into())),
        ] {
            let b = e.body();
            assert!(b["error"]["code"].is_string(), "{b}");
            assert!(b["error"]["message"].is_string(), "{b}");
            assert!(b["error"].get("path").is_some(), "{b}");
        }
    }
}
