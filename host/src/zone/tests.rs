use proptest::prelude::*;

use super::plan::*;
use crate::config::model::{OnPanic, PriorityFailover, ZoneRouting};

fn policy(routing: ZoneRouting, min_local_share: f64) -> TierPolicy {
    TierPolicy {
        zone_routing: routing,
        min_local_share,
        priority_failover: PriorityFailover::Graceful,
        panic_threshold: 0.0,
        on_panic: OnPanic::FailOpen,
    }
}

/// zone: 0 local, 1 same region, 2 other region.
fn node(zone: u8, healthy: bool) -> NodeView {
    NodeView {
        weight: 100,
        local_zone: zone == 0,
        local_region: zone <= 1,
        priority: 0,
        healthy,
        trial: false,
    }
}

fn shares(p: &Plan, n: usize) -> Vec<f64> {
    let mut out = vec![0.0; n];
    for &(i, s) in &p.primary {
        out[i] = s;
    }
    out
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-9
}

#[test]
fn all_healthy_stays_local() {
    // a a b b c c (b and c in the same region)
    let nodes = [
        node(0, true),
        node(0, true),
        node(1, true),
        node(1, true),
        node(1, true),
        node(1, true),
    ];
    let p = plan(&nodes, &policy(ZoneRouting::PreferLocal, 0.5));
    assert_eq!(shares(&p, 6), vec![0.5, 0.5, 0.0, 0.0, 0.0, 0.0]);
    assert_eq!(p.fallback, vec![vec![2, 3, 4, 5]]);
    assert!(!p.panic);
}

#[test]
fn half_the_zone_down_spills_only_below_the_min_share() {
    let nodes = [
        node(0, true),
        node(0, false),
        node(1, true),
        node(1, true),
        node(1, true),
        node(1, true),
    ];
    let p = plan(&nodes, &policy(ZoneRouting::PreferLocal, 0.5));
    assert_eq!(shares(&p, 6), vec![1.0, 0.0, 0.0, 0.0, 0.0, 0.0]);
    let p = plan(&nodes, &policy(ZoneRouting::PreferLocal, 0.75));
    let s = shares(&p, 6);
    assert!(close(s[0], 2.0 / 3.0), "{s:?}");
    for spill in &s[2..] {
        assert!(close(*spill, 1.0 / 12.0), "{s:?}");
    }
}

#[test]
fn zone_outage_moves_everything_by_weight_and_fails_back() {
    let mut nodes = [
        node(0, false),
        node(0, false),
        node(1, true),
        node(1, true),
        node(1, true),
        node(1, true),
    ];
    nodes[2].weight = 300;
    let p = plan(&nodes, &policy(ZoneRouting::PreferLocal, 0.5));
    let s = shares(&p, 6);
    assert!(close(s[2], 0.5) && close(s[3], 0.5 / 3.0), "{s:?}");
    nodes[0].healthy = true;
    nodes[1].healthy = true;
    let p = plan(&nodes, &policy(ZoneRouting::PreferLocal, 0.5));
    assert_eq!(shares(&p, 6)[..2], [0.5, 0.5]);
}

#[test]
fn region_failover_and_failback() {
    let mut nodes = [node(0, false), node(1, false), node(2, true), node(2, true)];
    let p = plan(&nodes, &policy(ZoneRouting::PreferLocal, 0.5));
    assert_eq!(shares(&p, 4), vec![0.0, 0.0, 0.5, 0.5]);
    nodes[1].healthy = true;
    let p = plan(&nodes, &policy(ZoneRouting::PreferLocal, 0.5));
    assert_eq!(
        shares(&p, 4),
        vec![0.0, 1.0, 0.0, 0.0],
        "same region is preferred over other regions"
    );
    nodes[0].healthy = true;
    let p = plan(&nodes, &policy(ZoneRouting::PreferLocal, 0.5));
    assert_eq!(shares(&p, 4), vec![1.0, 0.0, 0.0, 0.0]);
}

#[test]
fn unequal_zone_counts_work() {
    // One local node, five remote ones; the local one is down.
    let nodes = [
        node(0, false),
        node(1, true),
        node(1, true),
        node(1, true),
        node(1, true),
        node(1, true),
    ];
    let p = plan(&nodes, &policy(ZoneRouting::PreferLocal, 0.5));
    let s = shares(&p, 6);
    assert!(s[1..].iter().all(|x| close(*x, 0.2)), "{s:?}");
}

#[test]
fn local_only_never_leaves_the_zone() {
    let nodes = [node(0, false), node(1, true)];
    let p = plan(&nodes, &policy(ZoneRouting::LocalOnly, 0.5));
    assert!(p.primary.is_empty() && p.fallback.is_empty());
    let nodes = [node(0, true), node(1, true)];
    let p = plan(&nodes, &policy(ZoneRouting::LocalOnly, 0.5));
    assert_eq!(shares(&p, 2), vec![1.0, 0.0]);
    assert!(p.fallback.is_empty());
}

#[test]
fn priorities_graceful_and_backup() {
    let mk = |prio: i32, healthy: bool| NodeView {
        priority: prio,
        ..node(0, healthy)
    };
    // Two nodes at priority 1 (preferred), two at 0.
    let mut nodes = [mk(1, true), mk(1, true), mk(0, true), mk(0, true)];
    let mut pol = policy(ZoneRouting::Off, 0.5);
    assert_eq!(shares(&plan(&nodes, &pol), 4), vec![0.5, 0.5, 0.0, 0.0]);
    nodes[0].healthy = false;
    // Half of priority 1 healthy: it keeps 0.5 × 1.4 = 70 %.
    let s = shares(&plan(&nodes, &pol), 4);
    assert!(close(s[1], 0.7) && close(s[2], 0.15) && close(s[3], 0.15), "{s:?}");
    pol.priority_failover = PriorityFailover::Backup;
    assert_eq!(shares(&plan(&nodes, &pol), 4), vec![0.0, 1.0, 0.0, 0.0]);
    nodes[1].healthy = false;
    assert_eq!(shares(&plan(&nodes, &pol), 4), vec![0.0, 0.0, 0.5, 0.5]);
    nodes[0].healthy = true;
    nodes[1].healthy = true;
    assert_eq!(shares(&plan(&nodes, &pol), 4), vec![0.5, 0.5, 0.0, 0.0], "fails back");
}

#[test]
fn panic_fails_open_or_refuses() {
    let nodes = [node(0, false), node(1, false)];
    let p = plan(&nodes, &policy(ZoneRouting::PreferLocal, 0.5));
    assert!(p.panic);
    assert_eq!(shares(&p, 2), vec![1.0, 0.0], "fail open keeps zone preference");
    let mut pol = policy(ZoneRouting::PreferLocal, 0.5);
    pol.on_panic = OnPanic::Fail;
    let p = plan(&nodes, &pol);
    assert!(p.panic && p.primary.is_empty());
    // Threshold: 1 of 4 healthy = 25 % < 50 % -> panic.
    let nodes = [node(0, true), node(0, false), node(1, false), node(1, false)];
    let mut pol = policy(ZoneRouting::Off, 0.5);
    pol.panic_threshold = 50.0;
    let p = plan(&nodes, &pol);
    assert!(p.panic);
    assert_eq!(p.primary.len(), 4);
}

fn arb_node() -> impl Strategy<Value = NodeView> {
    // state: 0 down, 1 healthy, 2 half-open
    (0u32..5, 0u8..3, -1i32..2, 0u8..3).prop_map(|(w, zone, priority, state)| NodeView {
        weight: w * 50,
        local_zone: zone == 0,
        local_region: zone <= 1,
        priority,
        healthy: state == 1,
        trial: state == 2,
    })
}

fn arb_policy() -> impl Strategy<Value = TierPolicy> {
    (
        prop_oneof![
            Just(ZoneRouting::PreferLocal),
            Just(ZoneRouting::LocalOnly),
            Just(ZoneRouting::Off)
        ],
        0.0f64..=1.0,
        prop_oneof![Just(PriorityFailover::Graceful), Just(PriorityFailover::Backup)],
        prop_oneof![Just(0.0), 0.0f64..=100.0],
        prop_oneof![Just(OnPanic::FailOpen), Just(OnPanic::Fail)],
    )
        .prop_map(
            |(zone_routing, min_local_share, priority_failover, panic_threshold, on_panic)| TierPolicy {
                zone_routing,
                min_local_share,
                priority_failover,
                panic_threshold,
                on_panic,
            },
        )
}

proptest! {
    #[test]
    fn shares_sum_to_one(nodes in prop::collection::vec(arb_node(), 0..12), pol in arb_policy()) {
        let p = plan(&nodes, &pol);
        if !p.primary.is_empty() {
            let sum: f64 = p.primary.iter().map(|(_, s)| s).sum();
            prop_assert!((sum - 1.0).abs() < 1e-9, "sum {}", sum);
        }
    }

    #[test]
    fn never_routes_to_unhealthy_or_drained_nodes_outside_panic(
        nodes in prop::collection::vec(arb_node(), 0..12),
        pol in arb_policy(),
    ) {
        let p = plan(&nodes, &pol);
        let routed = p.primary.iter().map(|(i, _)| *i).chain(p.fallback.iter().flatten().copied());
        for i in routed {
            prop_assert!(nodes[i].weight > 0);
            prop_assert!(p.panic || nodes[i].healthy || nodes[i].trial, "node {} unhealthy outside panic", i);
            if pol.zone_routing == ZoneRouting::LocalOnly {
                prop_assert!(nodes[i].local_zone);
            }
        }
    }

    #[test]
    fn serves_whenever_something_healthy_exists(nodes in prop::collection::vec(arb_node(), 0..12), pol in arb_policy()) {
        let p = plan(&nodes, &pol);
        let eligible = |n: &NodeView| n.weight > 0 && (n.healthy || n.trial)
            && (pol.zone_routing != ZoneRouting::LocalOnly || n.local_zone);
        if nodes.iter().any(eligible) && !(p.panic && pol.on_panic == OnPanic::Fail) {
            prop_assert!(!p.primary.is_empty());
        }
    }

    #[test]
    fn equal_inputs_give_equal_outputs(nodes in prop::collection::vec(arb_node(), 0..12), pol in arb_policy()) {
        prop_assert_eq!(plan(&nodes, &pol), plan(&nodes, &pol));
    }

    #[test]
    fn every_node_appears_at_most_once(nodes in prop::collection::vec(arb_node(), 0..12), pol in arb_policy()) {
        let p = plan(&nodes, &pol);
        let mut seen = std::collections::HashSet::new();
        for i in p.primary.iter().map(|(i, _)| *i).chain(p.fallback.iter().flatten().copied()) {
            prop_assert!(seen.insert(i));
        }
    }
}

#[test]
fn half_open_trials_get_traffic_but_are_not_capacity() {
    let trial = NodeView {
        healthy: false,
        trial: true,
        ..node(0, false)
    };
    // The only local node is half-open: it gets the local share (its trial), and the
    // zone still counts as 0 % healthy for the panic rule of a threshold.
    let nodes = [trial, node(1, true)];
    let p = plan(&nodes, &policy(ZoneRouting::PreferLocal, 0.5));
    assert_eq!(shares(&p, 2), vec![1.0, 0.0]);
    assert!(!p.panic);
    // Everything ejected but one half-open node, on_panic: fail -> only the trial.
    let mut pol = policy(ZoneRouting::Off, 0.5);
    pol.on_panic = OnPanic::Fail;
    let nodes = [trial, node(1, false)];
    let p = plan(&nodes, &pol);
    assert!(p.panic);
    assert_eq!(shares(&p, 2), vec![1.0, 0.0]);
}

#[test]
fn slow_start_ramps_weight_from_join() {
    use std::time::Duration;

    use crate::config::model::SlowStart;
    let eps = crate::balance::testing::endpoints(&[1000]);
    let mut policy = crate::config::validate::validate(
        &serde_yaml_ng::from_str(
            "services: [ { name: s, versions: [ { version: '1', routes: [ { uri: / } ] } ] } ]\ngateway_groups: [ { name: default, services: [] } ]",
        )
        .unwrap(),
        &Default::default(),
        std::path::Path::new("."),
    )
    .unwrap()
    .services["s"]
        .versions[0]
        .upstream
        .clone();
    assert_eq!(super::effective_weight(&eps[0], &policy), 1000, "off by default");
    policy.slow_start = SlowStart {
        window: Duration::from_secs(100),
        min_weight: 0.1,
    };
    // Just joined: the floor.
    assert_eq!(super::effective_weight(&eps[0], &policy), 100);
    policy.slow_start.window = Duration::from_millis(1);
    std::thread::sleep(Duration::from_millis(5));
    assert_eq!(
        super::effective_weight(&eps[0], &policy),
        1000,
        "after the window: full weight"
    );
}
