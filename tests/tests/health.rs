//! Upstream health against real servers and real failures: active probes, passive
//! ejection with half-open trials, timeouts, breakers, panic, and health that
//! survives node edits and version publishes.
//!
//! Intervals are short; bounds are generous and only ever say "not before the
//! timer" or "within the documented time plus slack".

use gatehouse::control::Served;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use gatehouse::config::{self, Overrides};
use gatehouse::health;
use gatehouse_tests::{Behavior, Client, TestGateway, TestUpstream};
use serde_json::Value;

/// A config with one service `api` on `/*` and these nodes.
fn yaml(upstream: &str, nodes: &[&TestUpstream]) -> String {
    yaml_version("1", upstream, nodes)
}

fn yaml_version(version: &str, upstream: &str, nodes: &[&TestUpstream]) -> String {
    let nodes: String = nodes
        .iter()
        .map(|n| format!("          - {{ host: 127.0.0.1, port: {}, weight: 100 }}\n", n.port()))
        .collect();
    format!(
        r#"
gateway:
  access_log: false
services:
  - name: api
    versions:
      - version: "{version}"
        routes: [{{ uri: "/*" }}]
        upstream:
          type: roundrobin
{upstream}
gateway_groups:
  - name: default
    services:
      - service: api
        version: "{version}"
        nodes:
{nodes}"#
    )
}

/// The health report of the node on `port`.
fn node(gw: &TestGateway, port: u16) -> Value {
    let snap = gw.gateway.state.snapshot();
    let up = &snap.upstreams[0];
    let idx = up
        .endpoints
        .iter()
        .position(|e| e.node.port == port)
        .expect("node is served");
    health::report(&up.health.cells[idx])
}

fn upstream(gw: &TestGateway) -> Value {
    let snap = gw.gateway.state.snapshot();
    let up = &snap.upstreams[0];
    health::upstream_report(&up.health, &up.endpoints, up.tiers.load().panic)
}

/// Polls `cond` every 10 ms; returns the time it took, or panics after `limit`.
async fn wait_for(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < limit, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    start.elapsed()
}

/// GETs `/` `n` times; returns the statuses.
async fn get_n(client: &Client, gw: &TestGateway, n: usize) -> Vec<u16> {
    let mut statuses = Vec::with_capacity(n);
    for _ in 0..n {
        statuses.push(client.get(&gw.url("/")).await.map(|r| r.status).unwrap_or(0));
    }
    statuses
}

/// Client loops in the background until stopped; counts non-200 answers.
struct Load {
    stop: Arc<AtomicBool>,
    failures: Arc<AtomicU64>,
    total: Arc<AtomicU64>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    fn start(url: String, loops: usize, pause: Duration) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let failures = Arc::new(AtomicU64::new(0));
        let total = Arc::new(AtomicU64::new(0));
        let tasks = (0..loops)
            .map(|_| {
                let (url, stop, failures, total) = (url.clone(), stop.clone(), failures.clone(), total.clone());
                tokio::spawn(async move {
                    let client = Client::new().with_timeout(Duration::from_secs(5));
                    while !stop.load(Ordering::Relaxed) {
                        let ok = matches!(client.get(&url).await, Ok(r) if r.status == 200);
                        total.fetch_add(1, Ordering::Relaxed);
                        if !ok {
                            failures.fetch_add(1, Ordering::Relaxed);
                        }
                        tokio::time::sleep(pause).await;
                    }
                })
            })
            .collect();
        Load {
            stop,
            failures,
            total,
            tasks,
        }
    }

    /// Stops the loops; returns (requests, failures).
    async fn finish(self) -> (u64, u64) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            t.await.unwrap();
        }
        (
            self.total.load(Ordering::Relaxed),
            self.failures.load(Ordering::Relaxed),
        )
    }
}

const ACTIVE: &str = r#"          checks:
            active:
              type: http
              http_path: /health
              timeout: 0.5
              healthy: { interval: 0.5, successes: 2 }
              unhealthy: { interval: 0.5, http_failures: 3, tcp_failures: 2, timeouts: 2 }"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn active_probes_take_a_failing_node_out_and_bring_it_back() {
    let (a, b) = (TestUpstream::start("a").await, TestUpstream::start("b").await);
    let gw = TestGateway::start(&yaml(ACTIVE, &[&a, &b])).await;
    // Probes start at config load, before any request.
    wait_for("first probes", Duration::from_secs(3), || {
        a.health_hits() > 0 && b.health_hits() > 0
    })
    .await;
    let client = Client::new();

    a.set_health(Behavior::Status(500));
    let took = wait_for("a marked down", Duration::from_secs(5), || {
        node(&gw, a.port())["state"] == "unhealthy"
    })
    .await;
    // interval × http_failures + 1 s
    assert!(took <= Duration::from_millis(500 * 3 + 1000), "took {took:?}");
    assert_eq!(node(&gw, a.port())["last_transition"]["cause"], "active_http_failures");

    a.reset_hits();
    let statuses = get_n(&client, &gw, 20).await;
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    assert_eq!(a.hits(), 0, "no traffic while out");
    assert_eq!(b.hits(), 20);

    a.set_health(Behavior::Ok);
    let took = wait_for("a back", Duration::from_secs(5), || {
        node(&gw, a.port())["state"] == "healthy"
    })
    .await;
    // interval × successes + 1 s
    assert!(took <= Duration::from_millis(500 * 2 + 1000), "took {took:?}");
    assert_eq!(node(&gw, a.port())["last_transition"]["cause"], "active_successes");
    wait_for("tiers republished", Duration::from_secs(2), || {
        let snap = gw.gateway.state.snapshot();
        snap.upstreams[0].tiers.load().tiers[0].list.len() == 2
    })
    .await;
    get_n(&client, &gw, 20).await;
    assert!(a.hits() >= 5, "a serves again: {} hits", a.hits());
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_port_closed_mid_run_fails_no_request_and_is_marked_down_by_tcp_failures() {
    let (a, b) = (TestUpstream::start("a").await, TestUpstream::start("b").await);
    let gw = TestGateway::start(&yaml(ACTIVE, &[&a, &b])).await;
    let load = Load::start(gw.url("/"), 2, Duration::from_millis(5));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(a.hits() > 0 && b.hits() > 0);

    a.stop();
    wait_for("a marked down", Duration::from_secs(5), || {
        node(&gw, a.port())["state"] == "unhealthy"
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (total, failures) = load.finish().await;
    assert!(total > 50, "the loop ran: {total}");
    assert_eq!(failures, 0, "retries at default hide the closed port");
    let cause = node(&gw, a.port())["last_transition"]["cause"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(cause.ends_with("tcp_failures"), "{cause}");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn passive_alone_ejects_then_one_trial_after_the_ejection_time_and_twice_as_long_after_a_failed_trial() {
    let (a, b) = (TestUpstream::start("a").await, TestUpstream::start("b").await);
    let upstream = r#"          retries: 0
          checks:
            passive:
              unhealthy: { http_statuses: [500], http_failures: 3 }
              base_ejection_time: 1
              max_ejection_time: 10"#;
    let gw = TestGateway::start(&yaml(upstream, &[&a, &b])).await;
    a.set(Behavior::Status(500));
    // Four concurrent client loops: a half-open node must still see one trial at a time.
    let load = Load::start(gw.url("/"), 4, Duration::from_millis(5));
    wait_for("a ejected", Duration::from_secs(5), || {
        node(&gw, a.port())["state"] == "ejected"
    })
    .await;
    let ejected_at = Instant::now();
    let report = node(&gw, a.port());
    assert_eq!(report["last_transition"]["cause"], "passive_http_failures");
    assert_eq!(report["last_transition"]["out_for_ms"], 1000);
    let hits = a.hits();
    // The threshold, plus requests that were already in flight to a.
    assert!((3..=6).contains(&hits), "{hits}");

    wait_for("trial", Duration::from_secs(3), || a.hits() > hits).await;
    let first_gap = ejected_at.elapsed();
    wait_for("ejected again", Duration::from_secs(1), || {
        node(&gw, a.port())["state"] == "ejected"
    })
    .await;
    let ejected_again_at = Instant::now();
    let report = node(&gw, a.port());
    assert_eq!(report["last_transition"]["cause"], "trial_failed");
    assert_eq!(report["ejections"], 2);
    assert_eq!(report["last_transition"]["out_for_ms"], 2000);
    assert_eq!(a.hits(), hits + 1, "exactly one trial request");

    wait_for("second trial", Duration::from_secs(4), || a.hits() > hits + 1).await;
    let second_gap = ejected_again_at.elapsed();
    assert!(
        first_gap >= Duration::from_millis(900) && first_gap < Duration::from_millis(1800),
        "{first_gap:?}"
    );
    assert!(
        second_gap >= Duration::from_millis(1900) && second_gap < Duration::from_millis(3000),
        "{second_gap:?}"
    );
    wait_for("ejected a third time", Duration::from_secs(1), || {
        node(&gw, a.port())["state"] == "ejected"
    })
    .await;
    assert_eq!(a.hits(), hits + 2);

    // Recovered: the next trial succeeds and a serves again.
    a.set(Behavior::Ok);
    wait_for("a healthy", Duration::from_secs(5), || {
        node(&gw, a.port())["state"] == "healthy"
    })
    .await;
    assert_eq!(node(&gw, a.port())["last_transition"]["cause"], "trial_succeeded");
    let before = a.hits();
    tokio::time::sleep(Duration::from_millis(300)).await;
    load.finish().await;
    assert!(a.hits() > before + 5, "a serves again");
    assert!(
        gw.gateway
            .state
            .proxy
            .metrics
            .render()
            .contains(r#"gatehouse_health_transitions_total{service="api",cause="trial_failed"} 2"#)
    );
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_node_is_marked_down_by_timeouts_and_never_holds_a_client_past_the_read_timeout() {
    let (a, b) = (TestUpstream::start("a").await, TestUpstream::start("b").await);
    let upstream = r#"          timeout: { connect: 1, send: 1, read: 0.5 }
          checks:
            passive:
              unhealthy: { timeouts: 2 }"#;
    let gw = TestGateway::start(&yaml(upstream, &[&a, &b])).await;
    a.set(Behavior::Stall);
    let client = Client::new();
    let mut slowest = Duration::ZERO;
    for _ in 0..10 {
        let start = Instant::now();
        let r = client.get(&gw.url("/")).await.unwrap();
        assert_eq!(r.status, 200, "retried on b");
        assert_eq!(r.node(), "b");
        slowest = slowest.max(start.elapsed());
    }
    // One read timeout on a, then b answers.
    assert!(slowest < Duration::from_millis(500 + 700), "{slowest:?}");
    let report = node(&gw, a.port());
    assert_eq!(report["state"], "ejected");
    assert_eq!(report["last_transition"]["cause"], "passive_timeouts");
    assert_eq!(a.hits(), 2, "out after two timeouts");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn breaker_percentage_rule_trips_stays_open_half_opens_and_closes() {
    let (a, b) = (TestUpstream::start("a").await, TestUpstream::start("b").await);
    let upstream = r#"          retries: 0
          circuit_breaker:
            rules:
              - { name: five-hundreds, percentage: 50, min_requests: 4, interval: 10, trip_duration: 1, status_codes: ["500-599"] }"#;
    let gw = TestGateway::start(&yaml(upstream, &[&a, &b])).await;
    let client = Client::new();
    a.set(Behavior::Status(503));
    let statuses = get_n(&client, &gw, 8).await;
    assert_eq!(statuses.iter().filter(|s| **s == 503).count(), 4, "{statuses:?}");
    let report = node(&gw, a.port());
    assert_eq!(report["state"], "breaker_open");
    assert_eq!(report["breaker_rule"], "five-hundreds");
    assert_eq!(report["last_transition"]["count"], 4);
    let opened = Instant::now();

    // Open: no traffic until the trip duration ends; then one trial, which fails.
    let load = Load::start(gw.url("/"), 2, Duration::from_millis(5));
    wait_for("trial", Duration::from_secs(3), || a.hits() > 4).await;
    assert!(opened.elapsed() >= Duration::from_millis(950), "{:?}", opened.elapsed());
    wait_for("open again", Duration::from_secs(1), || {
        node(&gw, a.port())["state"] == "breaker_open"
    })
    .await;
    assert_eq!(node(&gw, a.port())["last_transition"]["cause"], "breaker_trial_failed");
    assert_eq!(a.hits(), 5);

    a.set(Behavior::Ok);
    wait_for("closed", Duration::from_secs(3), || {
        node(&gw, a.port())["state"] == "healthy"
    })
    .await;
    assert_eq!(
        node(&gw, a.port())["last_transition"]["cause"],
        "breaker_trial_succeeded"
    );
    let before = a.hits();
    tokio::time::sleep(Duration::from_millis(300)).await;
    load.finish().await;
    assert!(a.hits() > before + 5, "a serves again");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn breaker_stays_open_for_the_nodes_retry_after() {
    let (a, b) = (TestUpstream::start("a").await, TestUpstream::start("b").await);
    let upstream = r#"          retries: 0
          circuit_breaker:
            rules:
              - { count: 1, interval: 10, trip_duration: 0.2, status_codes: [429], accept_retry_after: true }"#;
    let gw = TestGateway::start(&yaml(upstream, &[&a, &b])).await;
    a.set(Behavior::RetryAfter(429, 2));
    let client = Client::new();
    get_n(&client, &gw, 2).await;
    let opened = Instant::now();
    let report = node(&gw, a.port());
    assert_eq!(report["state"], "breaker_open");
    assert_eq!(report["last_transition"]["out_for_ms"], 2000);
    a.set(Behavior::Ok);
    let load = Load::start(gw.url("/"), 1, Duration::from_millis(5));
    wait_for("trial", Duration::from_secs(4), || a.hits() > 1).await;
    assert!(
        opened.elapsed() >= Duration::from_millis(1900),
        "{:?}",
        opened.elapsed()
    );
    wait_for("closed", Duration::from_secs(1), || {
        node(&gw, a.port())["state"] == "healthy"
    })
    .await;
    load.finish().await;
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_nodes_failing_health_fail_open_by_default_and_503_json_with_on_panic_fail() {
    let (a, b) = (TestUpstream::start("a").await, TestUpstream::start("b").await);
    a.set_health(Behavior::Status(500));
    b.set_health(Behavior::Status(500));
    let gw = TestGateway::start(&yaml(ACTIVE, &[&a, &b])).await;
    wait_for("panic", Duration::from_secs(5), || upstream(&gw)["panic"] == true).await;
    assert_eq!(node(&gw, a.port())["state"], "unhealthy");
    let client = Client::new();
    let statuses = get_n(&client, &gw, 10).await;
    assert!(statuses.iter().all(|s| *s == 200), "fail open: {statuses:?}");
    assert!(a.hits() > 0 && b.hits() > 0);
    wait_for("panic gauge", Duration::from_secs(3), || {
        gw.gateway
            .state
            .proxy
            .metrics
            .render()
            .contains(r#"gatehouse_upstream_panic{service="api"} 1"#)
    })
    .await;
    let text = gw.gateway.state.proxy.metrics.render();
    assert!(
        text.contains(r#"gatehouse_health_nodes{service="api",state="unhealthy"} 2"#),
        "{text}"
    );
    gw.stop().await;

    let failing = format!("{ACTIVE}\n          on_panic: fail");
    let gw = TestGateway::start(&yaml(&failing, &[&a, &b])).await;
    wait_for("panic", Duration::from_secs(5), || upstream(&gw)["panic"] == true).await;
    let (ha, hb) = (a.hits(), b.hits());
    let r = client.get(&gw.url("/")).await.unwrap();
    assert_eq!(r.status, 503);
    assert_eq!(r.header("content-type").as_deref(), Some("application/json"));
    assert_eq!(r.json()["error"]["code"], "no_healthy_upstream");
    assert_eq!((a.hits(), b.hits()), (ha, hb), "no request reached a node");
    // Recovery ends the panic.
    a.set_health(Behavior::Ok);
    wait_for("out of panic", Duration::from_secs(5), || {
        upstream(&gw)["panic"] == false
    })
    .await;
    assert_eq!(client.get(&gw.url("/")).await.unwrap().node(), "a");
    gw.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_edits_and_version_publishes_keep_the_health_of_nodes_that_stay() {
    let nodes = [
        TestUpstream::start("a").await,
        TestUpstream::start("b").await,
        TestUpstream::start("c").await,
        TestUpstream::start("d").await,
    ];
    let [a, b, c, d] = &nodes;
    a.set_health(Behavior::Status(500));
    let gw = TestGateway::start(&yaml(ACTIVE, &[a, b, c])).await;
    wait_for("a down", Duration::from_secs(5), || {
        node(&gw, a.port())["state"] == "unhealthy"
    })
    .await;
    let transitions = node(&gw, a.port())["transitions"].clone();
    let client = Client::new();
    let apply = |text: String| {
        let loaded = config::load_str(&text, "test", &Overrides::default(), gw.dir.path()).unwrap();
        gw.gateway.state.apply(loaded.config);
    };

    // Node edit: c leaves, d joins.
    apply(yaml(ACTIVE, &[a, b, d]));
    a.reset_hits();
    get_n(&client, &gw, 30).await;
    assert_eq!(a.hits(), 0, "no traffic to a known bad node after a node edit");
    assert_eq!(node(&gw, a.port())["state"], "unhealthy");
    assert_eq!(
        node(&gw, a.port())["transitions"],
        transitions,
        "state kept, not rebuilt"
    );
    assert!(d.hits() > 0);
    // c's probes stopped (allow one that was in flight).
    let c_probes = c.health_hits();
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert!(c.health_hits() <= c_probes + 1, "{} -> {}", c_probes, c.health_hits());
    assert_eq!(gw.gateway.state.probes.probe_count(), 3);

    // Version publish with the same nodes.
    apply(yaml_version("2", ACTIVE, &[a, b, d]));
    assert_eq!(gw.gateway.state.snapshot().upstreams[0].version.version, "2");
    get_n(&client, &gw, 30).await;
    assert_eq!(a.hits(), 0, "no traffic to a known bad node after a publish");
    assert_eq!(node(&gw, a.port())["transitions"], transitions);

    // The probes of staying nodes go on: a recovers under the new version.
    a.set_health(Behavior::Ok);
    wait_for("a back", Duration::from_secs(5), || {
        node(&gw, a.port())["state"] == "healthy"
    })
    .await;
    gw.stop().await;
}

/// A node whose every connection answers `/health` with 200 after `pause`, counting
/// probes waiting for their answer at once across all such nodes.
async fn slow_health_node(pause: Duration, open: Arc<AtomicU64>, max: Arc<AtomicU64>, seen: Arc<AtomicU64>) -> u16 {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            let (open, max, seen) = (open.clone(), max.clone(), seen.clone());
            tokio::spawn(async move {
                let now = open.fetch_add(1, Ordering::SeqCst) + 1;
                max.fetch_max(now, Ordering::SeqCst);
                seen.fetch_add(1, Ordering::SeqCst);
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf).await;
                tokio::time::sleep(pause).await;
                // Before answering: the prober frees its slot only after the answer.
                open.fetch_sub(1, Ordering::SeqCst);
                let _ = s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n").await;
            });
        }
    });
    port
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probes_of_one_upstream_respect_its_concurrency() {
    let (open, max, seen) = (
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
    );
    let mut ports = Vec::new();
    for _ in 0..4 {
        ports.push(slow_health_node(Duration::from_millis(150), open.clone(), max.clone(), seen.clone()).await);
    }
    let nodes: String = ports
        .iter()
        .map(|p| format!("          - {{ host: 127.0.0.1, port: {p} }}\n"))
        .collect();
    let config = format!(
        r#"
gateway:
  access_log: false
services:
  - name: api
    versions:
      - version: "1"
        routes: [{{ uri: "/*" }}]
        upstream:
          checks:
            active:
              concurrency: 2
              http_path: /health
              healthy: {{ interval: 0.05 }}
gateway_groups:
  - name: default
    services:
      - service: api
        version: "1"
        nodes:
{nodes}"#
    );
    let gw = TestGateway::start(&config).await;
    wait_for("probes", Duration::from_secs(5), || seen.load(Ordering::SeqCst) >= 12).await;
    assert_eq!(
        max.load(Ordering::SeqCst),
        2,
        "at most `concurrency` probes at once, and it is reached"
    );
    gw.stop().await;
}
