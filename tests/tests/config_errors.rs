//! Every kind of bad config is rejected with the key path where the problem is,
//! and all problems of a document are reported together.

use std::path::Path;

use gatehouse::config::{self, LoadError, Overrides};

const GOOD: &str = r#"
gateway:
  listen: 127.0.0.1:8080
  group: default
services:
  - name: petstore
    versions:
      - version: 1.0.0
        routes:
          - { uri: "/pet/*", methods: [GET, POST], hosts: [petstore.local] }
        upstream:
          type: roundrobin
          timeout: { connect: 1, send: 5, read: "500ms" }
          retries: 2
  - name: users
    versions:
      - version: 1.0.0
        routes: [ { uri: "/users" } ]
gateway_groups:
  - name: default
    services:
      - service: petstore
        version: 1.0.0
        nodes:
          - { host: 127.0.0.1, port: 9001, weight: 100, zone: zone-a, priority: 0 }
          - { host: 127.0.0.1, port: 9002, weight: 100, zone: zone-b }
"#;

fn errors(text: &str) -> Vec<(String, String)> {
    match config::load_str(text, "test", &Overrides::default(), Path::new(".")) {
        Ok(_) => vec![],
        Err(LoadError::Invalid { errors, .. }) => errors.into_iter().map(|e| (e.path, e.message)).collect(),
        Err(e) => panic!("unexpected {e}"),
    }
}

/// Asserts that `text` is rejected with an error at `path` whose message contains `needle`.
fn rejected(text: &str, path: &str, needle: &str) {
    let errs = errors(text);
    assert!(
        errs.iter().any(|(p, m)| p == path && m.contains(needle)),
        "expected {path}: ...{needle}...; got {errs:#?}"
    );
}

#[test]
fn the_good_config_is_accepted() {
    assert_eq!(errors(GOOD), vec![]);
}

#[test]
fn unknown_field() {
    rejected(
        &GOOD.replace("retries: 2", "retries: 2\n          retires: 3"),
        "services[0].versions[0].upstream.retires",
        "unknown field `retires`",
    );
}

#[test]
fn bad_type() {
    rejected(
        &GOOD.replace("port: 9002", "port: abc"),
        "gateway_groups[0].services[0].nodes[1].port",
        "invalid type",
    );
}

#[test]
fn unknown_balancer() {
    rejected(
        &GOOD.replace("type: roundrobin", "type: rr"),
        "services[0].versions[0].upstream.type",
        r#"unknown balancer "rr"; expected one of roundrobin, chash, ewma, least_conn"#,
    );
}

#[test]
fn duplicate_service() {
    rejected(
        &GOOD.replace("name: users", "name: petstore"),
        "services[1].name",
        "duplicate service",
    );
}

#[test]
fn version_published_twice() {
    let text = GOOD.replace(
        "      - service: petstore\n",
        "      - { service: petstore, version: 1.0.0, nodes: [] }\n      - service: petstore\n",
    );
    rejected(&text, "gateway_groups[0].services[1].service", "published twice");
}

#[test]
fn node_port_zero() {
    rejected(
        &GOOD.replace("port: 9001", "port: 0"),
        "gateway_groups[0].services[0].nodes[0].port",
        "port 0",
    );
}

#[test]
fn route_to_a_missing_service() {
    rejected(
        &GOOD.replace("service: petstore", "service: pets"),
        "gateway_groups[0].services[0].service",
        "unknown service",
    );
}

#[test]
fn missing_version() {
    rejected(
        &GOOD.replace(
            "        version: 1.0.0\n        nodes:",
            "        version: 9.9.9\n        nodes:",
        ),
        "gateway_groups[0].services[0].version",
        "has no version",
    );
}

#[test]
fn bad_duration() {
    rejected(
        &GOOD.replace("\"500ms\"", "\"5x\""),
        "services[0].versions[0].upstream.timeout.read",
        "invalid duration",
    );
}

#[test]
fn bad_route_uri() {
    rejected(
        &GOOD.replace("/pet/*", "/pet*/x"),
        "services[0].versions[0].routes[0].uri",
        "wildcard",
    );
    rejected(
        &GOOD.replace("uri: \"/users\"", "uri: \"users\""),
        "services[1].versions[0].routes[0].uri",
        "must start with '/'",
    );
}

#[test]
fn bad_method() {
    rejected(
        &GOOD.replace("[GET, POST]", "[GET, \"PO ST\"]"),
        "services[0].versions[0].routes[0].methods[1]",
        "invalid HTTP method",
    );
}

#[test]
fn chash_needs_a_key() {
    rejected(
        &GOOD.replace("type: roundrobin", "type: chash\n          hash_on: header"),
        "services[0].versions[0].upstream.key",
        "required",
    );
}

#[test]
fn duplicate_node() {
    rejected(
        &GOOD.replace("port: 9002", "port: 9001"),
        "gateway_groups[0].services[0].nodes[1]",
        "duplicate node",
    );
}

#[test]
fn weight_out_of_range() {
    rejected(
        &GOOD.replace("weight: 100, zone: zone-b", "weight: 70000, zone: zone-b"),
        "gateway_groups[0].services[0].nodes[1].weight",
        "above 65535",
    );
}

#[test]
fn bad_listen_address() {
    rejected(
        &GOOD.replace("listen: 127.0.0.1:8080", "listen: localhost"),
        "gateway.listen",
        "invalid address",
    );
}

#[test]
fn unknown_group() {
    rejected(
        &GOOD.replace("group: default", "group: prod"),
        "gateway.group",
        "not defined",
    );
}

#[test]
fn conflicting_routes_in_one_group() {
    let text = GOOD
        .replace(
            "uri: \"/users\"",
            "uri: \"/pet/*\", methods: [GET], hosts: [petstore.local]",
        )
        .replace(
            "      - service: petstore\n",
            "      - { service: users, version: 1.0.0, nodes: [] }\n      - service: petstore\n",
        );
    rejected(&text, "gateway_groups[0].services[1].service", "conflicts");
}

#[test]
fn yaml_syntax_error_names_the_line() {
    let errs = errors("gateway:\n  listen: [\n");
    assert_eq!(errs.len(), 1);
    assert!(errs[0].0.starts_with("line "), "{errs:?}");
}

#[test]
fn all_errors_are_reported_at_once() {
    let text = GOOD
        .replace("type: roundrobin", "type: rr")
        .replace("port: 9001", "port: 0")
        .replace("uri: \"/users\"", "uri: \"users\"")
        .replace("hosts: [petstore.local]", "hosts: [\"bad host\"]");
    let errs = errors(&text);
    assert!(errs.len() >= 4, "{errs:#?}");
}

#[test]
fn json_is_valid_yaml() {
    let json = r#"{"gateway": {"group": "g"}, "services": [{"name": "a", "versions": [{"version": "1", "routes": [{"uri": "/"}]}]}],
                  "gateway_groups": [{"name": "g", "services": [{"service": "a", "version": "1", "nodes": [{"host": "127.0.0.1", "port": 1}]}]}]}"#;
    assert_eq!(errors(json), vec![]);
}

#[test]
fn export_round_trips() {
    let loaded = config::load_str(GOOD, "test", &Overrides::default(), Path::new(".")).unwrap();
    let yaml = config::to_yaml(&loaded.raw);
    let again = config::load_str(&yaml, "export", &Overrides::default(), Path::new(".")).unwrap();
    assert_eq!(again.raw, loaded.raw);
}

#[test]
fn passive_check_type_is_apisix_s() {
    for kind in ["http", "https", "tcp"] {
        let text = GOOD.replace(
            "retries: 2",
            &format!("retries: 2\n          checks: {{ passive: {{ type: {kind} }} }}"),
        );
        assert_eq!(errors(&text), vec![], "type {kind}");
    }
    rejected(
        &GOOD.replace("retries: 2", "retries: 2\n          checks: { passive: { type: udp } }"),
        "services[0].versions[0].upstream.checks.passive.type",
        r#"unknown passive check type "udp"; expected one of http, https, tcp"#,
    );
}

#[test]
fn grpc_schemes_statuses_and_probe_type_are_accepted_and_bad_names_refused() {
    let grpc = GOOD.replace(
        "retries: 2",
        "retries: 2\n          scheme: grpc\n          retry: { retry_on: [unavailable, resource-exhausted, 503] }\n          checks:\n            active: { type: grpc, grpc_service: pets.v1.Pets }\n            passive: { unhealthy: { grpc_statuses: [unavailable, internal] } }",
    );
    assert_eq!(errors(&grpc), vec![]);
    assert_eq!(
        errors(&GOOD.replace("retries: 2", "retries: 2\n          scheme: grpcs")),
        vec![]
    );
    let base = "services[0].versions[0].upstream";
    rejected(
        &grpc.replace("resource-exhausted", "not_found"),
        &format!("{base}.retry.retry_on[1]"),
        "unknown retry condition \"not_found\"",
    );
    rejected(
        &grpc.replace("[unavailable, internal]", "[unavailable, sleepy]"),
        &format!("{base}.checks.passive.unhealthy.grpc_statuses[1]"),
        "unknown gRPC status \"sleepy\"",
    );
    rejected(
        &GOOD.replace("retries: 2", "retries: 2\n          scheme: h3"),
        &format!("{base}.scheme"),
        "expected http, https, grpc or grpcs",
    );
    rejected(
        &GOOD.replace(
            "retries: 2",
            "retries: 2\n          scheme: grpc\n          tls: { verify: false }",
        ),
        &format!("{base}.tls"),
        "only allowed with scheme: https or grpcs",
    );
}
