//! The compiled route table: host, path and method -> the published service.
//!
//! Exact paths are looked up in a hash map; prefixes (`/pet/*`) are tried longest
//! first. Among routes for the same path, a route naming hosts beats one that does
//! not (an exact host beats a wildcard), and one naming methods beats one that does
//! not. The first route that matches in that order wins.

use std::collections::HashMap;
use std::sync::Arc;

use crate::config::model::{HostPattern, Route, UriPattern};

/// Where a matched request goes.
#[derive(Debug, Clone)]
pub struct RouteTarget {
    /// Index of the upstream in the snapshot.
    pub upstream: usize,
    /// Route name.
    pub name: Arc<str>,
    /// Always emit the debug header.
    pub debug: bool,
}

#[derive(Debug, Clone)]
struct Entry {
    hosts: Vec<HostPattern>,
    methods: Vec<http::Method>,
    target: RouteTarget,
}

impl Entry {
    /// Sort key: more specific first.
    fn rank(&self) -> (u8, u8) {
        let host_rank = if self.hosts.is_empty() {
            2
        } else if self.hosts.iter().all(|h| matches!(h, HostPattern::Exact(_))) {
            0
        } else {
            1
        };
        (host_rank, u8::from(self.methods.is_empty()))
    }

    fn matches(&self, method: &http::Method, host: &str) -> bool {
        (self.methods.is_empty() || self.methods.contains(method))
            && (self.hosts.is_empty() || self.hosts.iter().any(|h| host_matches(h, host)))
    }
}

fn host_matches(pattern: &HostPattern, host: &str) -> bool {
    match pattern {
        HostPattern::Exact(h) => h.eq_ignore_ascii_case(host),
        HostPattern::Suffix(s) => {
            host.len() > s.len()
                && host.is_char_boundary(host.len() - s.len())
                && host[host.len() - s.len()..].eq_ignore_ascii_case(s)
        }
    }
}

/// Compiled routes of one snapshot.
#[derive(Debug, Default)]
pub struct Router {
    exact: HashMap<String, Vec<Entry>>,
    prefixes: Vec<(String, Vec<Entry>)>,
}

impl Router {
    /// Compiles `(upstream index, routes)` pairs.
    pub fn new<'a>(routes: impl IntoIterator<Item = (usize, &'a Route)>) -> Self {
        let mut exact: HashMap<String, Vec<Entry>> = HashMap::new();
        let mut prefixes: HashMap<String, Vec<Entry>> = HashMap::new();
        for (upstream, r) in routes {
            let entry = Entry {
                hosts: r.hosts.clone(),
                methods: r.methods.clone(),
                target: RouteTarget {
                    upstream,
                    name: r.name.as_str().into(),
                    debug: r.debug,
                },
            };
            match &r.uri {
                UriPattern::Exact(p) => exact.entry(p.clone()).or_default().push(entry),
                UriPattern::Prefix(p) => prefixes.entry(p.clone()).or_default().push(entry),
            }
        }
        let mut prefixes: Vec<_> = prefixes.into_iter().collect();
        prefixes.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then_with(|| a.0.cmp(&b.0)));
        for list in exact.values_mut().chain(prefixes.iter_mut().map(|(_, l)| l)) {
            list.sort_by_key(Entry::rank);
        }
        Self { exact, prefixes }
    }

    /// Finds the route for a request. `host` is the Host without its port.
    pub fn find(&self, method: &http::Method, host: &str, path: &str) -> Option<&RouteTarget> {
        fn first<'r>(list: &'r [Entry], method: &http::Method, host: &str) -> Option<&'r RouteTarget> {
            list.iter().find(|e| e.matches(method, host)).map(|e| &e.target)
        }
        if let Some(t) = self.exact.get(path).and_then(|l| first(l, method, host)) {
            return Some(t);
        }
        self.prefixes
            .iter()
            .filter(|(p, _)| path.starts_with(p.as_str()))
            .find_map(|(_, l)| first(l, method, host))
    }
}

/// The request's host without port: the `Host` header, else the URI authority (HTTP/2).
pub fn request_host(parts: &http::request::Parts) -> &str {
    let raw = parts
        .headers
        .get(http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| parts.uri.authority().map(|a| a.as_str()))
        .unwrap_or("");
    strip_port(raw)
}

fn strip_port(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        // [v6]:port
        return rest.split(']').next().unwrap_or(rest);
    }
    match host.rsplit_once(':') {
        Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => host,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(name: &str, uri: &str, methods: &[&str], hosts: &[&str]) -> Route {
        Route {
            name: name.into(),
            uri: match uri.strip_suffix('*') {
                Some(p) => UriPattern::Prefix(p.into()),
                None => UriPattern::Exact(uri.into()),
            },
            methods: methods.iter().map(|m| m.parse().unwrap()).collect(),
            hosts: hosts
                .iter()
                .map(|h| match h.strip_prefix("*.") {
                    Some(rest) => HostPattern::Suffix(format!(".{rest}")),
                    None => HostPattern::Exact(h.to_string()),
                })
                .collect(),
            debug: false,
        }
    }

    fn router(routes: &[Route]) -> Router {
        Router::new(routes.iter().enumerate())
    }

    fn name<'a>(r: &'a Router, m: &str, host: &str, path: &str) -> Option<&'a str> {
        r.find(&m.parse().unwrap(), host, path).map(|t| &*t.name)
    }

    #[test]
    fn most_specific_wins() {
        let r = router(&[
            route("all", "/*", &[], &[]),
            route("pets", "/pet/*", &[], &[]),
            route("pet-get", "/pet/*", &["GET"], &[]),
            route("pet-host", "/pet/*", &[], &["petstore.local"]),
            route("wild-host", "/pet/*", &[], &["*.local"]),
            route("exact", "/pet/1", &[], &[]),
        ]);
        assert_eq!(name(&r, "GET", "x", "/pet/1"), Some("exact"));
        assert_eq!(name(&r, "GET", "petstore.local", "/pet/2"), Some("pet-host"));
        assert_eq!(name(&r, "GET", "PetStore.Local", "/pet/2"), Some("pet-host"));
        assert_eq!(name(&r, "GET", "a.local", "/pet/2"), Some("wild-host"));
        assert_eq!(name(&r, "GET", "x", "/pet/2"), Some("pet-get"));
        assert_eq!(name(&r, "POST", "x", "/pet/2"), Some("pets"));
        assert_eq!(name(&r, "POST", "x", "/store"), Some("all"));
    }

    #[test]
    fn no_match() {
        let r = router(&[route("a", "/a", &["GET"], &[]), route("b", "/b/*", &[], &["b.com"])]);
        assert_eq!(name(&r, "POST", "x", "/a"), None);
        assert_eq!(name(&r, "GET", "x", "/a/"), None);
        assert_eq!(name(&r, "GET", "c.com", "/b/1"), None);
        assert_eq!(name(&r, "GET", "x", "/b"), None);
    }

    #[test]
    fn host_ports_are_stripped() {
        assert_eq!(strip_port("a.com:8080"), "a.com");
        assert_eq!(strip_port("a.com"), "a.com");
        assert_eq!(strip_port("[::1]:80"), "::1");
    }
}
