//! The control plane against a fake gateway: reloads and admin writes, their
//! serialization and what they leave behind when they fail.

use std::sync::Mutex as StdMutex;

use super::*;
use crate::config::raw::RawNode;

/// A gateway that records what it was asked to serve.
#[derive(Default)]
struct FakeServed {
    served: StdMutex<Vec<Arc<Config>>>,
    reloads: StdMutex<Vec<bool>>,
}

impl Served for FakeServed {
    fn apply(&self, config: Config) -> u64 {
        let mut served = self.served.lock().unwrap();
        served.push(Arc::new(config));
        served.len() as u64
    }

    fn config(&self) -> Arc<Config> {
        self.served
            .lock()
            .unwrap()
            .last()
            .cloned()
            .expect("a config was applied")
    }

    fn generation(&self) -> u64 {
        self.served.lock().unwrap().len() as u64
    }

    fn record(&self, event: ControlEvent) {
        if let ControlEvent::Reload(ok) = event {
            self.reloads.lock().unwrap().push(ok);
        }
    }
}

/// A control plane over `text` written to a file in `dir`, already serving it.
fn plane(dir: &Path, text: &str) -> (Arc<ControlPlane>, Arc<FakeServed>, PathBuf) {
    let path = dir.join("gw.yaml");
    std::fs::write(&path, text).unwrap();
    let loaded = load(text);
    let fake = Arc::new(FakeServed::default());
    fake.apply(loaded.config);
    let ctl = ControlPlane::new(
        fake.clone(),
        loaded.raw,
        ControlOptions {
            path: Some(path.clone()),
            ..ControlOptions::default()
        },
    );
    (ctl, fake, path)
}

fn node(port: u32) -> RawNode {
    RawNode {
        host: "h".into(),
        port,
        weight: None,
        zone: None,
        region: None,
        priority: None,
        tags: vec![],
    }
}

fn ports(cfg: &Config) -> Vec<u16> {
    cfg.own_group().unwrap().services[0]
        .nodes
        .iter()
        .map(|n| n.port)
        .collect()
}

#[test]
fn examine_applies_a_changed_file_once_and_reports_an_unchanged_one() {
    let dir = tempfile::tempdir().unwrap();
    let (ctl, fake, path) = plane(dir.path(), DOC);
    assert_eq!(ctl.reload(Cause::FileChange, false), ReloadOutcome::Unchanged);
    assert_eq!(fake.generation(), 1, "nothing new was served");
    std::fs::write(&path, DOC.replace("port: 1", "port: 2")).unwrap();
    assert_eq!(
        ctl.reload(Cause::FileChange, false),
        ReloadOutcome::Applied { generation: 2 }
    );
    assert_eq!(ports(&fake.config()), [2]);
    assert_eq!(ctl.served_raw().gateway_groups[0].services[0].nodes, [node(2)]);
    assert_eq!(ctl.reload(Cause::FileChange, false), ReloadOutcome::Unchanged);
    assert_eq!(*fake.reloads.lock().unwrap(), [true]);
    assert!(ctl.status().in_sync);
}

#[test]
fn examine_rejects_an_invalid_file_and_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let (ctl, fake, path) = plane(dir.path(), DOC);
    std::fs::write(&path, DOC.replace("port: 1", "port: 0")).unwrap();
    let ReloadOutcome::Rejected(errors) = ctl.reload(Cause::FileChange, false) else {
        panic!("an invalid file is rejected");
    };
    assert!(errors.iter().any(|e| e.path.contains("port")), "{errors:?}");
    assert_eq!(fake.generation(), 1, "the last good config keeps serving");
    assert_eq!(ports(&fake.config()), [1]);
    let status = ctl.status();
    assert!(!status.in_sync);
    assert!(status.last_error.is_some());
    assert_eq!(*fake.reloads.lock().unwrap(), [false]);
    // The same broken text again is not reported twice.
    assert!(matches!(
        ctl.reload(Cause::FileChange, false),
        ReloadOutcome::Rejected(_)
    ));
    assert_eq!(fake.reloads.lock().unwrap().len(), 1);
}

#[test]
fn write_validates_persists_then_serves() {
    let dir = tempfile::tempdir().unwrap();
    let (ctl, fake, path) = plane(dir.path(), DOC);
    let w = ctl
        .write(false, false, |raw| {
            edit::set_nodes(raw, "g", "s", vec![node(7), node(8)])
        })
        .unwrap();
    assert!(w.edited.changed && w.persisted);
    assert_eq!(w.generation, 2);
    assert_eq!(ports(&fake.config()), [7, 8]);
    let on_disk = load(&std::fs::read_to_string(&path).unwrap());
    assert_eq!(on_disk.raw, ctl.served_raw(), "the file holds what is served");
    // The same edit again changes nothing and serves nothing new.
    let again = ctl
        .write(false, false, |raw| {
            edit::set_nodes(raw, "g", "s", vec![node(7), node(8)])
        })
        .unwrap();
    assert!(!again.edited.changed);
    assert_eq!(fake.generation(), 2);
}

#[test]
fn a_failed_write_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (ctl, fake, path) = plane(dir.path(), DOC);
    let before = std::fs::read_to_string(&path).unwrap();
    let err = ctl
        .write(true, false, |raw| edit::set_nodes(raw, "g", "s", vec![node(0)]))
        .unwrap_err();
    let WriteError::Invalid(errors) = err else {
        panic!("an invalid edit is refused as invalid: {err}");
    };
    assert!(
        errors[0].path.starts_with("nodes"),
        "paths relative to the edit: {errors:?}"
    );
    let err = ctl
        .write(false, false, |raw| edit::set_nodes(raw, "nope", "s", vec![node(3)]))
        .unwrap_err();
    assert!(matches!(err, WriteError::Edit(_)), "{err}");
    assert_eq!(std::fs::read_to_string(&path).unwrap(), before);
    assert_eq!(fake.generation(), 1);
    assert_eq!(ports(&fake.config()), [1]);
}

#[test]
fn a_write_over_an_invalid_file_is_refused_unless_it_replaces_it() {
    let dir = tempfile::tempdir().unwrap();
    let (ctl, fake, path) = plane(dir.path(), DOC);
    std::fs::write(&path, "services: [ {").unwrap();
    let err = ctl
        .write(false, false, |raw| edit::set_nodes(raw, "g", "s", vec![node(3)]))
        .unwrap_err();
    assert!(matches!(err, WriteError::SourceInvalid(_)), "{err}");
    assert_eq!(fake.generation(), 1);
    // An import (allowed over an invalid source) replaces the broken file.
    let w = ctl
        .write(false, true, |raw| edit::set_nodes(raw, "g", "s", vec![node(3)]))
        .unwrap();
    assert_eq!(w.generation, 2);
    assert_eq!(ports(&load(&std::fs::read_to_string(&path).unwrap()).config), [3]);
}

#[test]
fn without_a_file_writes_serve_from_memory() {
    let loaded = load(DOC);
    let fake = Arc::new(FakeServed::default());
    fake.apply(loaded.config);
    let ctl = ControlPlane::new(fake.clone(), loaded.raw, ControlOptions::default());
    assert_eq!(ctl.reload(Cause::Signal, true), ReloadOutcome::NoSource);
    let w = ctl
        .write(false, false, |raw| edit::set_nodes(raw, "g", "s", vec![node(4)]))
        .unwrap();
    assert!(!w.persisted);
    assert_eq!(ports(&fake.config()), [4]);
}

const DOC: &str = r#"
gateway: { group: g }
services:
  - name: s
    versions:
      - version: "1"
        routes: [ { uri: "/" } ]
gateway_groups:
  - name: g
    services: [ { service: s, version: "1", nodes: [ { host: h, port: 1 } ] } ]
"#;

fn load(text: &str) -> Loaded {
    config::load_str(text, "t", &Overrides::default(), Path::new(".")).unwrap()
}

#[test]
fn a_change_may_not_drop_the_served_group() {
    let full = load(DOC);
    let no_groups = load("gateway: { group: g }\nservices: []\n");
    let err = keeps_own_group(&full.config, &no_groups.config).unwrap_err();
    assert_eq!(err[0].path, "gateway_groups");
    // An empty gateway may receive a group, and a full one may keep it.
    assert!(keeps_own_group(&no_groups.config, &full.config).is_ok());
    assert!(keeps_own_group(&full.config, &full.config).is_ok());
}

#[test]
fn json_files_stay_json_and_both_forms_load_back() {
    let raw = load(DOC).raw;
    let json = render(Path::new("gw.json"), &raw);
    assert!(json.trim_start().starts_with('{'));
    let yaml = render(Path::new("gw.yaml"), &raw);
    assert!(!yaml.trim_start().starts_with('{'));
    assert_eq!(load(&json).raw, raw);
    assert_eq!(load(&yaml).raw, raw);
}
