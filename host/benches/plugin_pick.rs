//! Built-in balancer pick vs the same policy as a Wasm plugin (`plugins/round_robin`,
//! smooth weighted round robin like the built-in `roundrobin`), over the same candidate
//! set of 8 endpoints. Needs `scripts/build-plugins.sh` first.
//!
//! `cargo bench -p gatehouse --bench plugin_pick`

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
                weight: 1 + u32::from(i % 3),
                zone: String::new(),
                region: String::new(),
                priority: 0,
                tags: vec![],
            };
            Arc::new(Endpoint::new("bench".into(), node, Arc::new(EndpointState::new(0.0))))
        })
        .collect()
}

fn plugin_balancer() -> (Registry, PluginBalancer) {
    let wasm = Path::new(env!("CARGO_MANIFEST_DIR")).join("../plugins/target/wasm32-wasip2/release/round_robin.wasm");
    let bytes =
        std::fs::read(&wasm).unwrap_or_else(|_| panic!("{} not found: run scripts/build-plugins.sh", wasm.display()));
    let host = Arc::new(Host {
        engine: PluginEngine::shared().expect("plugin engine"),
        limits: PluginLimits::default(),
        counters: Arc::new(HostCounters::new()),
        events: Arc::default(),
        placement: Default::default(),
    });
    let dir = std::env::temp_dir();
    let registry = Registry::new(host, dir, None);
    registry.load("round_robin", &bytes);
    assert_eq!(registry.slot("round_robin").state(), "active");
    let use_ = registry.register_use("round_robin", Kind::Balancer, "{}", "bench", "1");
    let balancer = PluginBalancer::new(use_, Arc::new(RoundRobin::new()));
    (registry, balancer)
}

fn bench(c: &mut Criterion) {
    let eps = endpoints(8);
    let set = CandidateSet::new(eps.iter().enumerate().map(|(i, e)| Candidate {
        idx: i as u32,
        weight: e.node.weight,
    }));
    let parts = http::Request::builder().uri("/").body(()).unwrap().into_parts().0;
    let excluded = NodeSet::new();
    let ctx = PickContext {
        endpoints: &eps,
        candidates: &set,
        excluded: &excluded,
        request: RequestView {
            parts: &parts,
            remote: "10.0.0.1:5555".parse().unwrap(),
        },
    };
    let builtin = RoundRobin::new();
    let (registry, plugin) = plugin_balancer();
    assert!(builtin.pick(&ctx).is_some() && plugin.pick(&ctx).is_some());

    let mut g = c.benchmark_group("pick_8_nodes");
    g.bench_function("builtin_roundrobin", |b| {
        b.iter(|| black_box(builtin.pick(black_box(&ctx))))
    });
    g.bench_function("wasm_round_robin", |b| {
        b.iter(|| black_box(plugin.pick(black_box(&ctx))))
    });
    g.finish();

    // The plugin really answered every pick: no fault, no fallback to the built-in.
    let stats = registry
        .slot("round_robin")
        .current()
        .as_ref()
        .unwrap()
        .stats
        .snapshot();
    assert!(stats.calls > 1000, "{stats:?}");
    assert_eq!((stats.faults.iter().sum::<u64>(), stats.fallbacks), (0, 0), "{stats:?}");
}

criterion_group! {
    name = benches;
    config = Criterion::default();
    targets = bench
}
criterion_main!(benches);
