//! The real `gatehouse` binary: streaming large bodies in bounded memory, graceful
//! shutdown on SIGTERM, and `gatehouse validate`.

use std::time::{Duration, Instant};

use bytes::Bytes;
use gatehouse_tests::gateway::binary;
use gatehouse_tests::upstream::pattern_byte;
use gatehouse_tests::{Behavior, BinaryGateway, TestUpstream, write_config};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use hyper_util::client::legacy::Client as Hyper;
use hyper_util::rt::TokioExecutor;
use sha2::{Digest, Sha256};

fn config(port: u16) -> String {
    format!(
        r#"
gateway: {{ group: g, access_log: false, shutdown_grace: 10 }}
services:
  - name: api
    versions:
      - version: "1"
        routes: [ {{ uri: "/*" }} ]
        upstream: {{ timeout: {{ connect: 2, send: 10, read: 10 }} }}
gateway_groups:
  - name: g
    services:
      - service: api
        version: "1"
        nodes: [ {{ host: 127.0.0.1, port: {port} }} ]
"#
    )
}

const SIZE: u64 = 50 * 1024 * 1024;

#[tokio::test]
async fn fifty_megabytes_stream_both_ways_in_bounded_memory() {
    let up = TestUpstream::start("n").await;
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path(), "gw.yaml", &config(up.port()));
    let gw = BinaryGateway::start(&path, &[]).await;
    let client = Hyper::builder(TokioExecutor::new())
        .build_http::<http_body_util::combinators::BoxBody<Bytes, std::convert::Infallible>>();

    // Upload: 50 MB in 64 KiB chunks, generated on the fly.
    let mut expected = Sha256::new();
    let chunks: Vec<Bytes> = (0..SIZE.div_ceil(65536))
        .map(|c| {
            let start = c * 65536;
            let end = (start + 65536).min(SIZE);
            Bytes::from((start..end).map(pattern_byte).collect::<Vec<u8>>())
        })
        .collect();
    for c in &chunks {
        expected.update(c);
    }
    let stream = futures_util::stream::iter(
        chunks
            .into_iter()
            .map(|c| Ok::<_, std::convert::Infallible>(Frame::data(c))),
    );
    let req = http::Request::post(gw.url("/echo"))
        .body(BodyExt::boxed(StreamBody::new(stream)))
        .unwrap();
    let mut peak_rss = 0;
    let resp = client.request(req).await.unwrap();
    peak_rss = peak_rss.max(gw.rss_kib());
    assert_eq!(resp.status(), 200);
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    let text = String::from_utf8_lossy(&body).to_string();
    assert_eq!(text, format!("{SIZE} {}", hex::encode(expected.finalize())));

    // Download: 50 MB, hashed as it arrives, sampling the gateway's RSS on the way.
    let req = http::Request::get(gw.url(&format!("/bytes/{SIZE}")))
        .body(http_body_util::Empty::new().map_err(|n| match n {}).boxed())
        .unwrap();
    let resp = client.request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    let mut body = resp.into_body();
    let mut got = Sha256::new();
    let mut want = Sha256::new();
    let mut offset = 0u64;
    let mut frames = 0u64;
    while let Some(frame) = body.frame().await {
        if let Some(d) = frame.unwrap().data_ref() {
            got.update(d);
            want.update((offset..offset + d.len() as u64).map(pattern_byte).collect::<Vec<u8>>());
            offset += d.len() as u64;
        }
        frames += 1;
        if frames.is_multiple_of(64) {
            peak_rss = peak_rss.max(gw.rss_kib());
        }
    }
    assert_eq!(offset, SIZE);
    assert_eq!(got.finalize(), want.finalize());
    peak_rss = peak_rss.max(gw.rss_kib());
    assert!(peak_rss < 100 * 1024, "gateway RSS reached {peak_rss} KiB");
    eprintln!("peak gateway RSS while streaming 2 x 50 MB: {peak_rss} KiB");
}

#[tokio::test]
async fn sigterm_lets_a_slow_request_finish_then_exits_zero() {
    let up = TestUpstream::start("n").await;
    up.set(Behavior::Delay(Duration::from_millis(1500)));
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path(), "gw.yaml", &config(up.port()));
    let mut gw = BinaryGateway::start(&path, &[]).await;
    let url = gw.url("/slow");
    let inflight = tokio::spawn(async move { gatehouse_tests::Client::new().get(&url).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let signalled = Instant::now();
    gw.signal("TERM");
    // New connections are refused soon after the signal.
    let mut refused = false;
    for _ in 0..50 {
        if tokio::net::TcpStream::connect(gw.url.trim_start_matches("http://"))
            .await
            .is_err()
        {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(refused, "still accepting after SIGTERM");
    let reply = inflight.await.unwrap().unwrap();
    assert_eq!(reply.status, 200);
    assert_eq!(reply.text(), "n");
    let code = gw.wait(Duration::from_secs(10)).await;
    assert_eq!(code, Some(0));
    assert!(signalled.elapsed() < Duration::from_secs(10));
}

#[tokio::test]
async fn validate_lists_every_error_and_fails() {
    let dir = tempfile::tempdir().unwrap();
    let good = write_config(dir.path(), "good.yaml", &config(8080));
    let out = std::process::Command::new(binary())
        .arg("validate")
        .arg(&good)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    let bad = write_config(
        dir.path(),
        "bad.yaml",
        &config(8080)
            .replace("upstream: {", "upstream: { type: rr,")
            .replace("port: 8080", "port: 0"),
    );
    let out = std::process::Command::new(binary())
        .arg("validate")
        .arg(&bad)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(r#"services[0].versions[0].upstream.type: unknown balancer "rr"; expected one of roundrobin, chash, ewma, least_conn"#),
        "{err}"
    );
    assert!(err.contains("gateway_groups[0].services[0].nodes[0].port"), "{err}");
}

#[tokio::test]
async fn a_bad_config_at_startup_exits_non_zero_before_binding() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path(), "gw.yaml", "services: [ { name: x, versions: [ { version: 1");
    let port = gatehouse_tests::gateway::free_port();
    let out = std::process::Command::new(binary())
        .args(["run", "--config"])
        .arg(&path)
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not valid YAML"));
}

#[tokio::test]
async fn one_worker_runs_single_threaded_and_serves_concurrent_requests() {
    // TOKIO_WORKER_THREADS=1 selects the current-thread scheduler: a stalled upstream
    // must not hold up other requests, and SIGTERM still drains and exits 0.
    let up = TestUpstream::start("n").await;
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path(), "gw.yaml", &config(up.port()));
    let gw = BinaryGateway::start_with_env(&path, &[], &[("TOKIO_WORKER_THREADS", "1")]).await;
    up.set(Behavior::Delay(Duration::from_secs(3)));
    let slow_url = gw.url("/slow");
    let slow = tokio::spawn(async move { gatehouse_tests::Client::new().get(&slow_url).await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    up.set(Behavior::Ok);
    let fast: Vec<_> = (0..20)
        .map(|i| {
            let url = gw.url(&format!("/fast/{i}"));
            tokio::spawn(async move { gatehouse_tests::Client::new().get(&url).await })
        })
        .collect();
    for f in fast {
        let r = f.await.unwrap().unwrap();
        assert_eq!(r.status, 200);
    }
    // The fast requests all finished while the slow one was still waiting on its upstream.
    assert!(!slow.is_finished(), "the fast requests waited for the slow one");
    let slow = slow.await.unwrap().unwrap();
    assert_eq!(slow.status, 200);
    gw.signal("TERM");
    let mut gw = gw;
    assert_eq!(gw.wait(Duration::from_secs(10)).await, Some(0));
}

/// Bytes the process has read so far through `read` and friends (`/proc/<pid>/io`).
fn bytes_read(pid: u32) -> u64 {
    let io = std::fs::read_to_string(format!("/proc/{pid}/io")).unwrap();
    io.lines()
        .find_map(|l| l.strip_prefix("rchar: "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap()
}

#[tokio::test]
async fn the_config_watcher_ignores_unrelated_files_next_to_the_config() {
    let up = TestUpstream::start("n").await;
    let dir = tempfile::tempdir().unwrap();
    let padding: String = (0..64)
        .map(|i| format!("# padding line {i:02} to make every read of this file visible\n"))
        .collect();
    let text = config(up.port()) + &padding;
    let path = write_config(dir.path(), "gw.yaml", &text);
    let gw = BinaryGateway::start(&path, &[]).await;
    tokio::time::sleep(Duration::from_millis(500)).await;

    // A log written next to the config file is not a reason to re-read the config.
    let before = bytes_read(gw.pid());
    for i in 0..20 {
        std::fs::write(dir.path().join("other.log"), format!("line {i}\n")).unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let read = bytes_read(gw.pid()) - before;
    assert!(
        read < 2 * text.len() as u64,
        "the gateway read {read} bytes while an unrelated file changed (config: {} bytes)",
        text.len()
    );

    // A real change is still picked up.
    let other = TestUpstream::start("m").await;
    let changed = text.replace(&format!("port: {}", up.port()), &format!("port: {}", other.port()));
    std::fs::write(&path, changed).unwrap();
    let client = gatehouse_tests::Client::new();
    let mut served_by_new = false;
    for _ in 0..100 {
        if client.get(&gw.url("/")).await.unwrap().text() == "m" {
            served_by_new = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(served_by_new, "the edited config was not applied");
}

/// Voluntary context switches of each thread named `gatehouse-worker-*` (the name
/// is cut to 15 characters in `comm`).
fn worker_switches(pid: u32) -> Vec<u64> {
    let mut out = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap().flatten() {
        let comm = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
        if !comm.starts_with("gatehouse-worke") {
            continue;
        }
        let status = std::fs::read_to_string(task.path().join("status")).unwrap_or_default();
        let switches = status
            .lines()
            .find_map(|l| l.strip_prefix("voluntary_ctxt_switches:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        out.push(switches);
    }
    out
}

#[tokio::test]
async fn per_worker_model_spreads_connections_and_drains_on_sigterm() {
    // `worker_model: per_worker` with 3 workers: three threads, each with its own
    // SO_REUSEPORT socket; new connections reach more than one of them; SIGTERM
    // lets a slow request on one of them finish and the process exits 0.
    let up = TestUpstream::start("n").await;
    let dir = tempfile::tempdir().unwrap();
    let yaml = config(up.port()).replace("shutdown_grace: 10 }", "shutdown_grace: 10, worker_model: per_worker }");
    let path = write_config(dir.path(), "gw.yaml", &yaml);
    let mut gw = BinaryGateway::start_with_env(&path, &[], &[("TOKIO_WORKER_THREADS", "3")]).await;
    let idle = worker_switches(gw.pid());
    assert_eq!(idle.len(), 3, "one thread per worker");
    for i in 0..60 {
        // A new client each time: a new connection, placed by the kernel.
        let r = gatehouse_tests::Client::new()
            .get(&gw.url(&format!("/c/{i}")))
            .await
            .unwrap();
        assert_eq!((r.status, r.text()), (200, "n".to_string()));
    }
    let busy = worker_switches(gw.pid());
    let served = idle
        .iter()
        .zip(&busy)
        .filter(|(before, after)| **after > **before + 5)
        .count();
    assert!(
        served >= 2,
        "60 connections all went to one worker: {idle:?} -> {busy:?}"
    );

    up.set(Behavior::Delay(Duration::from_millis(1500)));
    let url = gw.url("/slow");
    let inflight = tokio::spawn(async move { gatehouse_tests::Client::new().get(&url).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    gw.signal("TERM");
    let reply = inflight.await.unwrap().unwrap();
    assert_eq!((reply.status, reply.text()), (200, "n".to_string()));
    assert_eq!(gw.wait(Duration::from_secs(10)).await, Some(0));
}
