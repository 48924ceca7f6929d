//! Validation of `gateway_groups:`: published versions, route conflicts and nodes.

use std::collections::{BTreeMap, HashMap};

use super::{Validator, defaults, valid_name};
use crate::config::model::*;
use crate::config::raw::*;

/// (host pattern, method, uri) -> the service that first published it in a group.
type RouteOwners = HashMap<(Option<HostPattern>, Option<http::Method>, UriPattern), String>;

impl Validator {
    pub(super) fn groups(&mut self, raw: &[RawGroup], services: &BTreeMap<String, Service>) -> BTreeMap<String, Group> {
        let mut out = BTreeMap::new();
        for (i, g) in raw.iter().enumerate() {
            let path = format!("gateway_groups[{i}]");
            if !valid_name(&g.name) {
                self.error(format!("{path}.name"), format!("invalid group name {:?}", g.name));
            }
            if out.contains_key(&g.name) {
                self.error(format!("{path}.name"), format!("duplicate group {:?}", g.name));
                continue;
            }
            let mut published = Vec::new();
            let mut seen: HashMap<&str, usize> = HashMap::new();
            // (host pattern, method, uri) -> where it was first published, to catch conflicts.
            let mut route_owner = RouteOwners::new();
            for (k, p) in g.services.iter().enumerate() {
                let pp = format!("{path}.services[{k}]");
                if let Some(j) = seen.insert(&p.service, k) {
                    self.error(
                        format!("{pp}.service"),
                        format!(
                            "service {:?} is published twice in group {:?} (first at services[{j}]); a group serves one version of a service",
                            p.service, g.name
                        ),
                    );
                    continue;
                }
                let broken = self.broken.services.contains(&p.service)
                    || self.broken.versions.contains(&(p.service.clone(), p.version.clone()));
                match services.get(&p.service) {
                    _ if broken => {}
                    None => {
                        let known: Vec<_> = services.keys().map(String::as_str).collect();
                        self.error(
                            format!("{pp}.service"),
                            format!(
                                "unknown service {:?}; defined services: {}",
                                p.service,
                                known.join(", ")
                            ),
                        );
                    }
                    Some(s) => match s.versions.iter().find(|v| v.version == p.version) {
                        None => {
                            let known: Vec<_> = s.versions.iter().map(|v| v.version.as_str()).collect();
                            self.error(
                                format!("{pp}.version"),
                                format!(
                                    "service {:?} has no version {:?}; versions: {}",
                                    p.service,
                                    p.version,
                                    known.join(", ")
                                ),
                            );
                        }
                        Some(v) => {
                            self.route_conflicts(v, &p.service, &g.name, &pp, &mut route_owner);
                        }
                    },
                }
                let nodes = self.nodes(&p.nodes, &format!("{pp}.nodes"));
                published.push(Published {
                    service: p.service.clone(),
                    version: p.version.clone(),
                    nodes,
                });
            }
            out.insert(
                g.name.clone(),
                Group {
                    name: g.name.clone(),
                    services: published,
                },
            );
        }
        out
    }

    /// Records the routes of `v` (published as `service` at `pp`) in `owners`; a
    /// route another service of `group` already has is an error.
    fn route_conflicts(&mut self, v: &ServiceVersion, service: &str, group: &str, pp: &str, owners: &mut RouteOwners) {
        for r in &v.routes {
            let hosts: Vec<Option<HostPattern>> = if r.hosts.is_empty() {
                vec![None]
            } else {
                r.hosts.iter().cloned().map(Some).collect()
            };
            let methods: Vec<Option<http::Method>> = if r.methods.is_empty() {
                vec![None]
            } else {
                r.methods.iter().cloned().map(Some).collect()
            };
            for h in &hosts {
                for m in &methods {
                    let key = (h.clone(), m.clone(), r.uri.clone());
                    if let Some(owner) = owners.get(&key) {
                        if owner != service {
                            self.error(
                                format!("{pp}.service"),
                                format!(
                                    "route {} of {:?} conflicts with the same route of {owner:?} in group {:?}",
                                    r.name, service, group
                                ),
                            );
                        }
                    } else {
                        owners.insert(key, service.to_string());
                    }
                }
            }
        }
    }

    pub(super) fn nodes(&mut self, raw: &[RawNode], path: &str) -> Vec<Node> {
        let mut out = Vec::new();
        let mut seen: HashMap<String, usize> = HashMap::new();
        for (i, n) in raw.iter().enumerate() {
            let np = format!("{path}[{i}]");
            let host = n.host.trim().trim_start_matches('[').trim_end_matches(']').to_string();
            let valid_host = !host.is_empty()
                && host
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b':'));
            if !valid_host {
                self.error(format!("{np}.host"), format!("invalid host {:?}", n.host));
            }
            if n.port == 0 || n.port > 65535 {
                self.error(format!("{np}.port"), format!("port {} is not in 1..=65535", n.port));
            }
            let weight = n.weight.unwrap_or(defaults::WEIGHT);
            if weight > defaults::MAX_WEIGHT {
                self.error(
                    format!("{np}.weight"),
                    format!("weight {weight} is above {}", defaults::MAX_WEIGHT),
                );
            }
            let node = Node {
                host,
                port: n.port.clamp(1, 65535) as u16,
                weight: weight.min(defaults::MAX_WEIGHT),
                zone: n.zone.clone().unwrap_or_default(),
                region: n.region.clone().unwrap_or_default(),
                priority: n.priority.unwrap_or(0),
                tags: n.tags.clone(),
            };
            if let Some(j) = seen.insert(node.authority(), i) {
                self.error(
                    np.clone(),
                    format!("duplicate node {} (first at nodes[{j}])", node.authority()),
                );
                continue;
            }
            out.push(node);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::config::{Overrides, load_str};

    fn errors(text: &str) -> Vec<(String, String)> {
        match load_str(text, "t", &Overrides::default(), Path::new(".")) {
            Ok(_) => Vec::new(),
            Err(e) => e.errors().into_iter().map(|e| (e.path, e.message)).collect(),
        }
    }

    const TWO: &str = r#"
gateway: { group: g }
services:
  - name: a
    versions: [ { version: "1", routes: [ { uri: "/x/*", methods: [GET] } ] } ]
  - name: b
    versions: [ { version: "1", routes: [ { uri: "/x/*", methods: [@M@] } ] } ]
gateway_groups:
  - name: g
    services:
      - { service: a, version: "1", nodes: [ { host: h, port: 1 } ] }
      - { service: b, version: "1", nodes: [ { host: h, port: 2 } ] }
"#;

    #[test]
    fn two_services_with_the_same_route_in_one_group_conflict() {
        let errs = errors(&TWO.replace("@M@", "GET"));
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert_eq!(errs[0].0, "gateway_groups[0].services[1].service");
        assert!(errs[0].1.contains("conflicts with the same route of \"a\""), "{errs:?}");
        // Another method is another route.
        assert!(errors(&TWO.replace("@M@", "POST")).is_empty());
    }
}
