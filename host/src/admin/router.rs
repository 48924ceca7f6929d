//! Admin request paths -> endpoints (docs/admin-api.md).

use http::Method;

use super::error::AdminError;

/// One admin endpoint, with the names taken from its path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// `GET /healthz`: the process is up.
    Healthz,
    /// `GET /readyz`: config loaded, listeners bound, not shutting down.
    Readyz,
    /// `GET /metrics`: Prometheus text.
    Metrics,
    /// `GET /admin/v1/status`: identity, config generation and source, last error.
    Status,
    /// `GET /admin/v1/services`: published services with live node state.
    Services,
    /// `PUT /admin/v1/groups/{group}/services/{service}/nodes`: replace runtime nodes.
    Nodes {
        /// Gateway group.
        group: String,
        /// Service.
        service: String,
    },
    /// `POST /admin/v1/groups/{group}/publish`: publish a version to the group.
    Publish {
        /// Gateway group.
        group: String,
    },
    /// `PUT /admin/v1/services/{service}/versions/{version}`: create a version.
    Version {
        /// Service.
        service: String,
        /// Version label.
        version: String,
    },
    /// `GET|PUT /admin/v1/config`: export / import.
    Config,
    /// `GET /admin/v1/plugins`: loaded plugins, their state and fault counts.
    Plugins,
    /// `GET /admin/v1/events`: the event journal (server-sent events or JSON).
    Events,
    /// `GET /admin/v1/versions`: every service's versions, their policy and groups.
    Versions,
    /// `GET /admin/v1/ratelimits`: rules per service, busiest keys, Redis link.
    RateLimits,
    /// `GET /admin/v1/demo/nodes`: the demo's nodes (only under `gatehouse demo`).
    DemoNodes,
    /// `POST /admin/v1/demo/nodes/{name}/{stop|start}` (only under `gatehouse demo`).
    DemoNode {
        /// Node name.
        name: String,
        /// Start (true) or stop.
        up: bool,
    },
    /// `GET /` and `GET /ui/{file}`: the dashboard.
    Ui {
        /// The asset's file name (`index.html` for `/`).
        file: String,
    },
    /// `GET /admin/v1/certificates`: served TLS certificates and their expiry.
    Certificates,
}

impl Endpoint {
    /// Whether a configured admin token is required: every write, and the config
    /// export (it can hold credentials, e.g. a Redis URL).
    pub fn needs_token(&self, method: &Method) -> bool {
        *method != Method::GET || *self == Endpoint::Config
    }
}

/// Finds the endpoint for `method` and `path`: 404 for an unknown path, 405 for a
/// known path with another method.
pub fn route(method: &Method, path: &str) -> Result<Endpoint, AdminError> {
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let name = |s: &str| !s.is_empty();
    let (endpoint, allow) = match segments.as_slice() {
        ["healthz"] => (Endpoint::Healthz, "GET"),
        ["readyz"] => (Endpoint::Readyz, "GET"),
        ["metrics"] => (Endpoint::Metrics, "GET"),
        ["admin", "v1", "status"] => (Endpoint::Status, "GET"),
        ["admin", "v1", "services"] => (Endpoint::Services, "GET"),
        ["admin", "v1", "plugins"] => (Endpoint::Plugins, "GET"),
        ["admin", "v1", "events"] => (Endpoint::Events, "GET"),
        ["admin", "v1", "versions"] => (Endpoint::Versions, "GET"),
        ["admin", "v1", "ratelimits"] => (Endpoint::RateLimits, "GET"),
        ["admin", "v1", "demo", "nodes"] => (Endpoint::DemoNodes, "GET"),
        ["admin", "v1", "demo", "nodes", n, action @ ("stop" | "start")] if name(n) => (
            Endpoint::DemoNode {
                name: n.to_string(),
                up: *action == "start",
            },
            "POST",
        ),
        [""] | ["ui"] | ["ui", ""] => (
            Endpoint::Ui {
                file: "index.html".into(),
            },
            "GET",
        ),
        ["ui", f] if name(f) => (Endpoint::Ui { file: f.to_string() }, "GET"),
        ["admin", "v1", "certificates"] => (Endpoint::Certificates, "GET"),
        ["admin", "v1", "config"] => (Endpoint::Config, "GET, PUT"),
        ["admin", "v1", "groups", g, "services", s, "nodes"] if name(g) && name(s) => (
            Endpoint::Nodes {
                group: g.to_string(),
                service: s.to_string(),
            },
            "PUT",
        ),
        ["admin", "v1", "groups", g, "publish"] if name(g) => (Endpoint::Publish { group: g.to_string() }, "POST"),
        ["admin", "v1", "services", s, "versions", v] if name(s) && name(v) => (
            Endpoint::Version {
                service: s.to_string(),
                version: v.to_string(),
            },
            "PUT",
        ),
        _ => return Err(AdminError::NoEndpoint(path.to_string())),
    };
    let allowed = allow.split(", ").any(|m| m == method.as_str());
    if allowed {
        Ok(endpoint)
    } else {
        Err(AdminError::MethodNotAllowed {
            method: method.to_string(),
            allow,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_every_endpoint() {
        assert_eq!(route(&Method::GET, "/readyz").unwrap(), Endpoint::Readyz);
        assert_eq!(
            route(&Method::PUT, "/admin/v1/groups/test/services/petstore/nodes").unwrap(),
            Endpoint::Nodes {
                group: "test".into(),
                service: "petstore".into()
            }
        );
        assert_eq!(
            route(&Method::POST, "/admin/v1/groups/test/publish").unwrap(),
            Endpoint::Publish { group: "test".into() }
        );
        assert_eq!(
            route(&Method::PUT, "/admin/v1/services/petstore/versions/1.0.1").unwrap(),
            Endpoint::Version {
                service: "petstore".into(),
                version: "1.0.1".into()
            }
        );
        assert_eq!(route(&Method::PUT, "/admin/v1/config").unwrap(), Endpoint::Config);
        assert_eq!(route(&Method::GET, "/admin/v1/events").unwrap(), Endpoint::Events);
        assert_eq!(route(&Method::GET, "/admin/v1/versions").unwrap(), Endpoint::Versions);
        assert_eq!(
            route(&Method::GET, "/admin/v1/ratelimits").unwrap(),
            Endpoint::RateLimits
        );
        assert_eq!(
            route(&Method::POST, "/admin/v1/demo/nodes/a-1/stop").unwrap(),
            Endpoint::DemoNode {
                name: "a-1".into(),
                up: false
            }
        );
        let index = Endpoint::Ui {
            file: "index.html".into(),
        };
        assert_eq!(route(&Method::GET, "/").unwrap(), index);
        assert_eq!(route(&Method::GET, "/ui/").unwrap(), index);
        assert_eq!(
            route(&Method::GET, "/ui/app.js").unwrap(),
            Endpoint::Ui { file: "app.js".into() }
        );
        assert_eq!(route(&Method::POST, "/").unwrap_err().status(), 405);
        assert_eq!(
            route(&Method::GET, "/admin/v1/demo/nodes/a-1/reboot")
                .unwrap_err()
                .status(),
            404
        );
    }

    #[test]
    fn unknown_paths_and_wrong_methods() {
        assert_eq!(route(&Method::GET, "/admin/v1/plugin").unwrap_err().status(), 404);
        assert_eq!(route(&Method::PUT, "/admin/v1/plugins").unwrap_err().status(), 405);
        assert_eq!(
            route(&Method::GET, "/admin/v1/groups//publish").unwrap_err().status(),
            404
        );
        let e = route(&Method::GET, "/admin/v1/groups/test/publish").unwrap_err();
        assert_eq!(e.status(), 405);
        assert_eq!(route(&Method::DELETE, "/admin/v1/config").unwrap_err().status(), 405);
    }

    #[test]
    fn token_needed_for_writes_and_export() {
        assert!(Endpoint::Config.needs_token(&Method::GET));
        assert!(Endpoint::Publish { group: "g".into() }.needs_token(&Method::POST));
        assert!(!Endpoint::Status.needs_token(&Method::GET));
        assert!(!Endpoint::Services.needs_token(&Method::GET));
        assert!(!Endpoint::Events.needs_token(&Method::GET));
        assert!(
            Endpoint::DemoNode {
                name: "a-1".into(),
                up: true
            }
            .needs_token(&Method::POST)
        );
    }
}
