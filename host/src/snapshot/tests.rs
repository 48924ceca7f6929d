//! The snapshot as the request path and the health tasks use it: panic thresholds,
//! half-open trials and admission across the zone plan and the health cells.

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio::time::{Instant, advance};

use super::*;
use crate::health::tests::obs;
use crate::health::{Admission, Cause, NodeState, Observed, Source, upstream_report};

/// The upstream's health report, as the admin API shows it.
fn report(up: &Upstream) -> Value {
    upstream_report(&up.health, &up.endpoints, up.tiers.load().panic)
}

/// A snapshot of service `s` with nodes of these weights on ports 1.., and `upstream` settings.
fn snapshot(upstream: &str, weights: &[u32]) -> Snapshot {
    let nodes: String = weights
        .iter()
        .enumerate()
        .map(|(i, w)| format!("{{ host: 127.0.0.1, port: {}, weight: {w} }},", i + 1))
        .collect();
    let yaml = format!(
        r#"
services:
  - name: s
    versions:
      - version: "1"
        routes: [{{ uri: "/*" }}]
        upstream:
{upstream}
gateway_groups:
  - name: default
    services:
      - {{ service: s, version: "1", nodes: [{nodes}] }}
"#
    );
    let loaded = crate::config::load_str(&yaml, "test", &Default::default(), std::path::Path::new("."))
        .unwrap_or_else(|e| panic!("{e}"));
    Snapshot::build(
        Arc::new(loaded.config),
        1,
        &LiveRegistry::new(),
        &crate::metrics::Metrics::new(),
        &BuiltinPolicies,
    )
}

/// Ejects endpoint `i` of the snapshot's upstream by three 500s.
fn eject(snap: &Snapshot, i: usize) {
    let up = &snap.upstreams[0];
    for _ in 0..3 {
        up.health.observe_at(
            &up.endpoints[i],
            i,
            &obs(Source::Passive, Observed::Status(500)),
            Instant::now(),
        );
    }
    assert_eq!(up.health.cells[i].state(), NodeState::Ejected);
}

fn primary(snap: &Snapshot) -> Vec<u32> {
    let up = &snap.upstreams[0];
    up.refresh_tiers();
    let tiers = up.tiers.load();
    tiers
        .tiers
        .first()
        .map(|t| t.list.iter().map(|c| c.idx).collect())
        .unwrap_or_default()
}

const PASSIVE: &str = r#"          checks:
            passive:
              unhealthy: { http_statuses: [500], http_failures: 3 }"#;

#[tokio::test(start_paused = true)]
async fn panic_threshold_is_a_share_of_configured_weight() {
    // Default threshold 0: panic only when nothing is healthy.
    let snap = snapshot(PASSIVE, &[100, 100, 100, 100]);
    eject(&snap, 0);
    eject(&snap, 1);
    assert_eq!(primary(&snap), [2, 3]);
    assert!(!snap.upstreams[0].tiers.load().panic);
    eject(&snap, 2);
    eject(&snap, 3);
    assert_eq!(primary(&snap), [0, 1, 2, 3], "fail open to every node");
    assert!(snap.upstreams[0].tiers.load().panic);
    assert_eq!(report(&snap.upstreams[0])["panic"], true);

    // 60 %: half the weight healthy is panic; fail open sends to all four.
    let snap = snapshot(
        &format!("{PASSIVE}\n          panic_threshold: 60"),
        &[100, 100, 100, 100],
    );
    eject(&snap, 0);
    assert_eq!(primary(&snap), [1, 2, 3], "75 % healthy");
    eject(&snap, 1);
    assert_eq!(primary(&snap), [0, 1, 2, 3]);
    assert_eq!(report(&snap.upstreams[0])["healthy_weight_percent"], 50.0);

    // Weight, not node count: the heavy node alone is 80 %.
    let snap = snapshot(&format!("{PASSIVE}\n          panic_threshold: 60"), &[400, 50, 50]);
    eject(&snap, 1);
    eject(&snap, 2);
    assert_eq!(primary(&snap), [0]);
}

#[tokio::test(start_paused = true)]
async fn on_panic_fail_serves_nothing_but_half_open_trials() {
    let snap = snapshot(
        &format!("{PASSIVE}\n              base_ejection_time: 1\n          on_panic: fail"),
        &[100, 100],
    );
    eject(&snap, 0);
    eject(&snap, 1);
    assert!(primary(&snap).is_empty());
    assert!(snap.upstreams[0].tiers.load().panic);
    advance(Duration::from_secs(1)).await;
    let up = &snap.upstreams[0];
    up.health.cells[0].tick(&up.version.upstream, Instant::now());
    // Still panic (nothing healthy), but node 0's trial may pass so it can come back.
    assert_eq!(primary(&snap), [0]);
    let tiers = up.tiers.load();
    assert!(tiers.panic);
    let trial = up.health.admit(0, tiers.panic).expect("the trial is admitted");
    assert!(trial.is_trial());
    assert!(
        up.health.admit(0, tiers.panic).is_none(),
        "one trial at a time, even in panic"
    );
}

#[tokio::test(start_paused = true)]
async fn an_ejected_node_serving_in_panic_returns_after_healthy_successes() {
    let snap = snapshot(&format!("{PASSIVE}\n              healthy: {{ successes: 3 }}"), &[100]);
    eject(&snap, 0);
    let up = &snap.upstreams[0];
    let ok = obs(Source::Passive, Observed::Status(200));
    for _ in 0..2 {
        up.health.observe_at(&up.endpoints[0], 0, &ok, Instant::now());
    }
    assert_eq!(up.health.cells[0].state(), NodeState::Ejected);
    up.health.observe_at(&up.endpoints[0], 0, &ok, Instant::now());
    let h = &up.health.cells[0];
    assert_eq!(h.state(), NodeState::Healthy);
    assert_eq!(h.last_transition().unwrap().0.cause, Cause::PassiveSuccesses);
}

#[tokio::test(start_paused = true)]
async fn fail_open_panic_admits_without_trials() {
    let snap = snapshot(&format!("{PASSIVE}\n              base_ejection_time: 1"), &[100]);
    eject(&snap, 0);
    primary(&snap);
    let up = &snap.upstreams[0];
    let tiers = up.tiers.load();
    assert!(tiers.panic);
    assert!(matches!(up.health.admit(0, tiers.panic), Some(Admission::Normal)));
}
