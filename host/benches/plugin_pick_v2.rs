//! A 0.2 balancer pick with live node stats (`plugins/premium_latency`, a gold request:
//! one `host.stats` call over every open node, then the fastest) against the 0.1 pick
//! (`plugins/round_robin`), for 8 and 64 nodes, on warm instances. Needs
//! `scripts/build-plugins.sh` first.
//!
//! `cargo bench -p gatehouse --bench plugin_pick_v2`

#![allow(missing_docs)] // criterion_group! generates an undocumented pub fn

use std::hint::black_box;
use std::path::Path;
use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use gatehouse::balance::roundrobin::RoundRobin;
use gatehouse::balance::{Balancer, Candidate, CandidateSet, NodeSet, PickContext, RequestView};
use gatehouse::config::model::Node;
use gatehouse::plugin::balancer::PluginBalancer;
use gatehouse::plugin::counters::HostCounters;
use gatehouse::plugin::registry::{Host, Registry};
use gatehouse::plugin::{Kind, PluginEngine, PluginLimits};
use gatehouse::upstream::{Endpoint, EndpointState};

fn endpoints(n: u16) -> Vec<Arc<Endpoint>> {
    (0..n)
        .map(|i| {
            let node = Node {
                host: "127.0.0.1".into(),
                port: 9000 + i,
                weight: 1,
                zone: String::new(),
                region: String::new(),
                priority: 0,
                tags: vec![],
            };
            let state = Arc::new(EndpointState::new(1000.0 + f32::from(i) * 37.0));
            Arc::new(Endpoint::new("bench".into(), node, state))
        })
        .collect()
}

fn registry() -> Registry {
    let host = Arc::new(Host {
        engine: PluginEngine::shared().expect("plugin engine"),
        limits: PluginLimits::default(),
        counters: Arc::new(HostCounters::new()),
        events: Arc::default(),
        placement: Default::default(),
    });
    let registry = Registry::new(host, std::env::temp_dir(), None);
    for name in ["round_robin", "premium_latency"] {
        let wasm =
            Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("../plugins/target/wasm32-wasip2/release/{name}.wasm"));
        let bytes = std::fs::read(&wasm)
            .unwrap_or_else(|_| panic!("{} not found: run scripts/build-plugins.sh", wasm.display()));
        registry.load(name, &bytes);
        assert_eq!(registry.slot(name).state(), "active");
    }
    registry
}

fn bench(c: &mut Criterion) {
    let registry = registry();
    let v1 = PluginBalancer::new(
        registry.register_use("round_robin", Kind::Balancer, "{}", "bench", "1"),
        Arc::new(RoundRobin::new()),
    );
    let v2 = PluginBalancer::new(
        registry.register_use("premium_latency", Kind::Balancer, "{}", "bench", "1"),
        Arc::new(RoundRobin::new()),
    );
    let gold = http::Request::builder()
        .uri("/")
        .header("x-tier", "gold")
        .body(())
        .unwrap()
        .into_parts()
        .0;
    let excluded = NodeSet::new();
    for n in [8u16, 64] {
        let eps = endpoints(n);
        let set = CandidateSet::new((0..n).map(|i| Candidate {
            idx: u32::from(i),
            weight: 1,
        }));
        let ctx = PickContext {
            endpoints: &eps,
            candidates: &set,
            excluded: &excluded,
            request: RequestView {
                parts: &gold,
                remote: "10.0.0.1:5555".parse().unwrap(),
            },
        };
        assert_eq!(v2.pick(&ctx), Some(0), "gold goes to the lowest EWMA");
        let mut g = c.benchmark_group(format!("pick_{n}_nodes"));
        g.bench_function("v0.1_round_robin", |b| b.iter(|| black_box(v1.pick(black_box(&ctx)))));
        g.bench_function("v0.2_live_stats", |b| b.iter(|| black_box(v2.pick(black_box(&ctx)))));
        g.finish();
    }
    for name in ["round_robin", "premium_latency"] {
        let stats = registry.slot(name).current().as_ref().unwrap().stats.snapshot();
        assert_eq!(
            (stats.faults.iter().sum::<u64>(), stats.fallbacks),
            (0, 0),
            "{name}: {stats:?}"
        );
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default();
    targets = bench
}
criterion_main!(benches);
