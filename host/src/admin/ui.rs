//! The dashboard's assets, embedded in the binary (no CDN, no network at run
//! time): plain HTML, CSS and JavaScript modules from `admin/ui/`, served at `/`
//! and `/ui/{file}` with their content types and a strict Content-Security-Policy.

use http::{HeaderValue, Response, StatusCode, header};

use super::error::AdminError;
use crate::proxy::body::Body;
use crate::proxy::error::full;

/// Scripts, styles and connections from this origin only; no inline code, no
/// framing, no forms posted elsewhere.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// (file name, content type, content).
const ASSETS: &[(&str, &str, &str)] = &[
    ("index.html", "text/html; charset=utf-8", include_str!("ui/index.html")),
    ("style.css", "text/css; charset=utf-8", include_str!("ui/style.css")),
    (
        "errors.js",
        "text/javascript; charset=utf-8",
        include_str!("ui/errors.js"),
    ),
    ("app.js", "text/javascript; charset=utf-8", include_str!("ui/app.js")),
    ("api.js", "text/javascript; charset=utf-8", include_str!("ui/api.js")),
    (
        "views.js",
        "text/javascript; charset=utf-8",
        include_str!("ui/views.js"),
    ),
    (
        "services.js",
        "text/javascript; charset=utf-8",
        include_str!("ui/services.js"),
    ),
    (
        "actions.js",
        "text/javascript; charset=utf-8",
        include_str!("ui/actions.js"),
    ),
    ("favicon.svg", "image/svg+xml", include_str!("ui/favicon.svg")),
];

/// Serves one asset; 404 for any other name.
pub fn asset(file: &str) -> Result<Response<Body>, AdminError> {
    let Some((_, kind, text)) = ASSETS.iter().find(|(name, _, _)| *name == file) else {
        return Err(AdminError::NoEndpoint(format!("/ui/{file}")));
    };
    let mut resp = Response::new(full(*text));
    *resp.status_mut() = StatusCode::OK;
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(kind));
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn assets_have_types_and_csp() {
        let r = asset("index.html").unwrap();
        assert_eq!(r.headers()[header::CONTENT_TYPE], "text/html; charset=utf-8");
        assert!(
            r.headers()[header::CONTENT_SECURITY_POLICY]
                .to_str()
                .unwrap()
                .contains("script-src 'self'")
        );
        assert_eq!(
            asset("app.js").unwrap().headers()[header::CONTENT_TYPE],
            "text/javascript; charset=utf-8"
        );
        assert_eq!(asset("../Cargo.toml").unwrap_err().status(), 404);
    }
}
