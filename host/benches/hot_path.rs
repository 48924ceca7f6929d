//! Criterion benchmarks of the decisions on the request path: route match, each
//! balancer's pick at 3, 30 and 300 nodes, the zone/priority plan, and a rate-limit
//! check. (The Wasm balancer call is in `plugin_pick`.)
//!
//! `cargo bench -p gatehouse --bench hot_path`

#![allow(missing_docs)] // criterion's macros generate undocumented items

use std::hint::black_box;
use std::sync::Arc;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use gatehouse::balance::{self, Candidate, CandidateSet, NodeSet, PickContext, RequestView};
use gatehouse::config::model::{
    BalancerKind, HashKey, HostPattern, Node, OnPanic, PriorityFailover, Route, UriPattern, ZoneRouting,
};
use gatehouse::router::Router;
use gatehouse::upstream::{Endpoint, EndpointState};
use gatehouse::zone::{NodeView, TierPolicy, plan};

fn endpoints(n: usize) -> Vec<Arc<Endpoint>> {
    (0..n)
        .map(|i| {
            let node = Node {
                host: "10.0.0.1".into(),
                port: 10_000 + i as u16,
                weight: 100 + (i as u32 % 3) * 50,
                zone: format!("zone-{}", i % 3),
                region: String::new(),
                priority: 0,
                tags: vec![],
            };
            Arc::new(Endpoint::new(
                "bench".into(),
                node,
                Arc::new(EndpointState::new(1000.0)),
            ))
        })
        .collect()
}

fn bench_route(c: &mut Criterion) {
    let mut routes = Vec::new();
    for i in 0..100 {
        routes.push(Route {
            name: format!("r{i}"),
            uri: if i % 2 == 0 {
                UriPattern::Prefix(format!("/api/v{i}/"))
            } else {
                UriPattern::Exact(format!("/api/v{i}/items"))
            },
            methods: vec![http::Method::GET],
            hosts: if i % 3 == 0 {
                vec![HostPattern::Exact(format!("h{i}.example.com"))]
            } else {
                vec![]
            },
            debug: false,
        });
    }
    routes.push(Route {
        name: "all".into(),
        uri: UriPattern::Prefix("/".into()),
        methods: vec![],
        hosts: vec![],
        debug: false,
    });
    let router = Router::new(routes.iter().enumerate());
    let mut g = c.benchmark_group("route");
    g.bench_function("exact_of_101", |b| {
        b.iter(|| {
            router.find(
                &http::Method::GET,
                black_box("x.example.com"),
                black_box("/api/v51/items"),
            )
        })
    });
    g.bench_function("prefix_of_101", |b| {
        b.iter(|| {
            router.find(
                &http::Method::GET,
                black_box("h42.example.com"),
                black_box("/api/v42/things/1"),
            )
        })
    });
    g.bench_function("fallback_of_101", |b| {
        b.iter(|| router.find(&http::Method::GET, black_box("x"), black_box("/other")))
    });
    g.finish();
}

fn bench_pick(c: &mut Criterion) {
    let parts = http::Request::builder()
        .uri("/x")
        .header("x-user", "user-42")
        .body(())
        .unwrap()
        .into_parts()
        .0;
    let remote = "10.1.2.3:4567".parse().unwrap();
    let mut g = c.benchmark_group("pick");
    for n in [3usize, 30, 300] {
        let eps = endpoints(n);
        let set = CandidateSet::new(eps.iter().enumerate().map(|(i, e)| Candidate {
            idx: i as u32,
            weight: e.node.weight,
        }));
        let excluded = NodeSet::new();
        for kind in [
            BalancerKind::RoundRobin,
            BalancerKind::Chash,
            BalancerKind::Ewma,
            BalancerKind::LeastConn,
        ] {
            let b = balance::build(kind, &eps, &HashKey::Header(http::HeaderName::from_static("x-user")));
            g.bench_with_input(BenchmarkId::new(kind.as_str(), n), &n, |bench, _| {
                bench.iter(|| {
                    b.pick(&PickContext {
                        endpoints: &eps,
                        candidates: &set,
                        excluded: &excluded,
                        request: RequestView { parts: &parts, remote },
                    })
                })
            });
        }
    }
    g.finish();
}

fn bench_plan(c: &mut Criterion) {
    let policy = TierPolicy {
        zone_routing: ZoneRouting::PreferLocal,
        min_local_share: 0.5,
        priority_failover: PriorityFailover::Graceful,
        panic_threshold: 0.0,
        on_panic: OnPanic::FailOpen,
    };
    let mut g = c.benchmark_group("zone_plan");
    for n in [6usize, 60, 300] {
        let nodes: Vec<NodeView> = (0..n)
            .map(|i| NodeView {
                weight: 100,
                local_zone: i % 3 == 0,
                local_region: i % 3 != 2,
                priority: (i % 2) as i32,
                healthy: i % 7 != 0,
                trial: false,
            })
            .collect();
        g.bench_with_input(BenchmarkId::from_parameter(n), &nodes, |b, nodes| {
            b.iter(|| plan(nodes, &policy))
        });
    }
    g.finish();
}

fn bench_limit(c: &mut Criterion) {
    let text = r#"
services:
  - name: bench
    versions:
      - version: "1"
        routes: [ { uri: "/*" } ]
        limits:
          - { key: remote_addr, algorithm: token_bucket, rate: 1000000000, burst: 1000000000 }
          - { key: "header:x-api-key", algorithm: sliding_window, count: 1000000000, window: 60 }
gateway_groups: [ { name: default, services: [] } ]
"#;
    let loaded = gatehouse::config::load_str(text, "bench", &Default::default(), std::path::Path::new(".")).unwrap();
    let version = loaded.config.services["bench"].versions[0].clone();
    let registry = gatehouse::ratelimit::LimitRegistry::new();
    let limiter = registry.limiter(&"bench".into(), &version, &loaded.config.gateway);
    let parts = http::Request::builder()
        .uri("/x")
        .header("x-api-key", "key-42")
        .body(())
        .unwrap()
        .into_parts()
        .0;
    let remote = "10.1.2.3:4567".parse().unwrap();
    c.bench_function("ratelimit/two_rules_allow", |b| {
        b.iter(|| gatehouse::ratelimit::enforce(limiter.as_ref(), "r", &parts, remote).is_ok())
    });
}

criterion_group!(benches, bench_route, bench_pick, bench_plan, bench_limit);
criterion_main!(benches);
