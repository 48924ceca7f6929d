//! Plugins checked before they serve: `gatehouse validate` loads every plugin a config
//! names, and `gatehouse plugin check FILE.wasm` checks one file, through the real binary.

use std::path::Path;
use std::process::Output;

use gatehouse_tests::gateway::binary;
use gatehouse_tests::plugin_wasm as wasm;
use gatehouse_tests::write_config;

fn run(args: &[&str]) -> (bool, String, String) {
    let out: Output = std::process::Command::new(binary()).args(args).output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A config with one service per `(name, plugins yaml)`, plugins from `dir/plugins`.
fn config(dir: &Path, services: &[(&str, &str)]) -> String {
    let mut out = format!(
        "gateway: {{ group: g, access_log: false, plugins_dir: {} }}\nservices:\n",
        dir.join("plugins").display()
    );
    for (name, plugins) in services {
        out += &format!(
            "  - name: {name}\n    versions:\n      - version: \"1\"\n        routes: [ {{ uri: \"/{name}/*\" }} ]\n        plugins: {plugins}\n"
        );
    }
    out += "gateway_groups:\n  - name: g\n    services:\n";
    for (name, _) in services {
        out += &format!(
            "      - service: {name}\n        version: \"1\"\n        nodes: [ {{ host: 127.0.0.1, port: 8080 }} ]\n"
        );
    }
    out
}

fn install(dir: &Path, plugin: &str) {
    std::fs::create_dir_all(dir.join("plugins")).unwrap();
    std::fs::copy(wasm(plugin), dir.join("plugins").join(format!("{plugin}.wasm"))).unwrap();
}

#[test]
fn validate_loads_every_named_plugin_and_names_the_key_of_each_problem() {
    let dir = tempfile::tempdir().unwrap();
    for p in ["premium_latency", "tenant_limit", "round_robin"] {
        install(dir.path(), p);
    }
    let good = write_config(
        dir.path(),
        "good.yaml",
        &config(
            dir.path(),
            &[
                (
                    "a",
                    "{ balancer: { name: premium_latency, config: { premium: [gold] } } }",
                ),
                ("b", "{ balancer: { name: round_robin } }"),
            ],
        ),
    );
    let (ok, out, err) = run(&["validate", good.to_str().unwrap()]);
    assert!(ok, "{out}{err}");
    assert!(out.contains(": ok"), "{out}");

    let bad = write_config(
        dir.path(),
        "bad.yaml",
        &config(
            dir.path(),
            &[
                ("misspelled", "{ balancer: { name: round_robbin } }"),
                ("wrongkind", "{ balancer: { name: tenant_limit } }"),
                (
                    "refused",
                    "{ balancer: { name: premium_latency, config: { premium: [] } } }",
                ),
                ("fine", "{ balancer: { name: round_robin } }"),
            ],
        ),
    );
    let (ok, _, err) = run(&["validate", bad.to_str().unwrap()]);
    assert!(!ok, "{err}");
    assert!(
        err.contains("services[misspelled].versions[1].plugins.balancer.name: unknown plugin \"round_robbin\""),
        "{err}"
    );
    assert!(
        err.contains("services[wrongkind].versions[1].plugins.balancer: wrong world: configured as a balancer but the plugin implements rate-limiter@0.1.0"),
        "{err}"
    );
    assert!(
        err.contains("services[refused].versions[1].plugins.balancer: `init` refused the config: `premium` must list at least one tier"),
        "{err}"
    );
    assert!(!err.contains("services[fine]"), "{err}");
    assert_eq!(err.lines().count(), 3, "one line per problem: {err}");
}

#[test]
fn plugin_check_runs_init_and_the_smoke_calls_of_one_file() {
    let file = wasm("premium_latency");
    let file = file.to_str().unwrap();
    let (ok, out, err) = run(&["plugin", "check", file]);
    assert!(ok, "{out}{err}");
    assert!(out.contains("ok (balancer-v2@0.2.0)"), "{out}");

    let (ok, _, err) = run(&["plugin", "check", file, "--config", r#"{"premium": []}"#]);
    assert!(!ok);
    assert!(err.contains("`premium` must list at least one tier"), "{err}");
    let (ok, _, err) = run(&["plugin", "check", file, "--config", r#"{"tier": "gold"}"#]);
    assert!(!ok);
    assert!(err.contains("unknown field `tier`"), "the whole parse error: {err}");

    let (ok, _, err) = run(&["plugin", "check", wasm("wrong_world").to_str().unwrap()]);
    assert!(!ok);
    assert!(err.contains("wrong world"), "{err}");
    assert!(
        err.contains("@0.2.0"),
        "the message names the versions this gateway runs: {err}"
    );

    let dir = tempfile::tempdir().unwrap();
    let garbage = dir.path().join("garbage.wasm");
    std::fs::write(&garbage, b"not wasm at all").unwrap();
    let (ok, _, err) = run(&["plugin", "check", garbage.to_str().unwrap()]);
    assert!(!ok);
    assert!(err.contains("not a valid WebAssembly component"), "{err}");
    assert!(err.contains("actual=["), "the parse error is whole: {err}");
}
