//! gRPC through the gateway: a real tonic client over h2c to the gateway, real
//! tonic servers behind it (`scheme: grpc`, and `grpcs` with a test CA). Unary,
//! server-streaming and bidirectional calls; statuses in headers and trailers;
//! retries of `UNAVAILABLE`; the `grpc` active probe.

use std::time::Duration;

use gatehouse_tests::TestGateway;
use gatehouse_tests::grpc::{EchoClient, EchoRequest, GrpcUpstream};
use tonic::Code;

fn config(scheme: &str, extra: &str, ports: &[u16]) -> String {
    let nodes: Vec<String> = ports
        .iter()
        .map(|p| format!("{{ host: 127.0.0.1, port: {p} }}"))
        .collect();
    format!(
        r#"
gateway: {{ group: g, access_log: false }}
services:
  - name: echo
    versions:
      - version: "1"
        routes: [ {{ uri: "/*" }} ]
        upstream:
          type: roundrobin
          scheme: {scheme}
{extra}
gateway_groups:
  - name: g
    services:
      - service: echo
        version: "1"
        nodes: [ {} ]
"#,
        nodes.join(", ")
    )
}

async fn client(gw: &TestGateway) -> EchoClient<tonic::transport::Channel> {
    EchoClient::connect(gw.url.clone()).await.expect("h2c to the gateway")
}

fn req(message: &str, count: u32, fail_with: Code) -> EchoRequest {
    EchoRequest {
        message: message.to_string(),
        count,
        fail_with: fail_with as u32,
    }
}

#[tokio::test]
async fn unary_calls_and_their_statuses_pass_through_intact() {
    let node = GrpcUpstream::start("a").await;
    let gw = TestGateway::start(&config("grpc", "          retries: 0", &[node.addr.port()])).await;
    let mut c = client(&gw).await;
    for i in 0..3 {
        let reply = c.unary(req(&format!("hi {i}"), 0, Code::Ok)).await.expect("OK");
        let reply = reply.into_inner();
        assert_eq!(
            (reply.message.as_str(), reply.node.as_str()),
            (format!("hi {i}").as_str(), "a")
        );
    }
    let err = c.unary(req("ghost", 0, Code::NotFound)).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    assert_eq!(err.message(), "failed on purpose: ghost");
    assert_eq!(node.calls(), 4);
    gw.stop().await;
}

#[tokio::test]
async fn concurrent_calls_share_one_connection_to_the_node() {
    let node = GrpcUpstream::start("a").await;
    let gw = TestGateway::start(&config("grpc", "          retries: 0", &[node.addr.port()])).await;
    let c = client(&gw).await;
    let calls = (0..24).map(|i| {
        let mut c = c.clone();
        async move { c.unary(req(&format!("c{i}"), 0, Code::Ok)).await }
    });
    let mut streams = Vec::new();
    // Open streams held across the unary calls keep several requests in flight at once.
    for _ in 0..4 {
        let mut c = c.clone();
        streams.push(c.server_stream(req("held", 1, Code::Ok)).await.unwrap().into_inner());
    }
    for r in futures_util::future::join_all(calls).await {
        assert_eq!(r.expect("served").into_inner().node, "a");
    }
    for mut s in streams {
        assert_eq!(s.message().await.unwrap().unwrap().message, "held #0");
    }
    assert_eq!(node.calls(), 28);
    assert_eq!(
        node.connections(),
        1,
        "every call was a stream on one shared HTTP/2 connection"
    );
    gw.stop().await;
}

#[tokio::test]
async fn an_http1_client_reaches_an_http2_node() {
    let node = GrpcUpstream::start("a").await;
    let gw = TestGateway::start(&config("grpc", "          retries: 0", &[node.addr.port()])).await;
    // A raw gRPC health check over HTTP/1.1: an empty HealthCheckRequest in, the
    // node's HealthCheckResponse { status: SERVING } out, over HTTP/2 in between.
    let headers = [("content-type", "application/grpc"), ("te", "trailers")];
    let r = gatehouse_tests::Client::new()
        .request(
            http::Method::POST,
            &gw.url("/grpc.health.v1.Health/Check"),
            &headers,
            vec![0u8, 0, 0, 0, 0],
        )
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type").as_deref(), Some("application/grpc"));
    assert_eq!(r.body.as_ref(), &[0u8, 0, 0, 0, 2, 0x08, 1][..]);
    assert_eq!(r.header("via").as_deref(), Some("1.1 gatehouse"));
    gw.stop().await;
}

#[tokio::test]
async fn a_closed_connection_is_replaced_by_the_next_call() {
    let node = GrpcUpstream::start("one").await;
    let gw = TestGateway::start(&config("grpc", "          retries: 0", &[node.addr.port()])).await;
    let mut c = client(&gw).await;
    assert_eq!(c.unary(req("x", 0, Code::Ok)).await.unwrap().into_inner().node, "one");
    // The node goes away (GOAWAY, then the connection closes) and comes back.
    let node = node.restart("two").await;
    for _ in 0..3 {
        let reply = c.unary(req("y", 0, Code::Ok)).await.expect("a new connection");
        assert_eq!(reply.into_inner().node, "two");
    }
    assert_eq!(node.connections(), 1, "one new connection, shared again");
    gw.stop().await;
}

#[tokio::test]
async fn server_streams_end_with_the_status_in_their_trailers() {
    let node = GrpcUpstream::start("a").await;
    let gw = TestGateway::start(&config("grpc", "          retries: 0", &[node.addr.port()])).await;
    let mut c = client(&gw).await;
    // OK in the trailers after five messages.
    let mut stream = c.server_stream(req("tick", 5, Code::Ok)).await.unwrap().into_inner();
    let mut got = Vec::new();
    while let Some(reply) = stream.message().await.expect("a clean end") {
        got.push(reply.message);
    }
    assert_eq!(got, (0..5).map(|i| format!("tick #{i}")).collect::<Vec<_>>());
    // A status after messages can only travel in the trailers.
    let mut stream = c
        .server_stream(req("late", 2, Code::ResourceExhausted))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(stream.message().await.unwrap().unwrap().message, "late #0");
    assert_eq!(stream.message().await.unwrap().unwrap().message, "late #1");
    let err = stream.message().await.unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted);
    assert_eq!(err.message(), "failed on purpose: late");
    gw.stop().await;
}

#[tokio::test]
async fn bidi_streams_flow_both_ways_message_by_message() {
    let node = GrpcUpstream::start("a").await;
    let gw = TestGateway::start(&config("grpc", "          retries: 0", &[node.addr.port()])).await;
    let mut c = client(&gw).await;
    let (tx, rx) = tokio::sync::mpsc::channel::<EchoRequest>(4);
    let mut replies = c
        .bidi(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
        .unwrap()
        .into_inner();
    // Each reply arrives before the next request is sent: nothing is buffered
    // until the end of either stream.
    for i in 0..4 {
        tx.send(req(&format!("m{i}"), 0, Code::Ok)).await.unwrap();
        let reply = tokio::time::timeout(Duration::from_secs(5), replies.message())
            .await
            .expect("the reply comes while the request stream is open")
            .unwrap()
            .unwrap();
        assert_eq!(reply.message, format!("echo m{i}"));
    }
    drop(tx);
    assert!(
        replies.message().await.unwrap().is_none(),
        "closed cleanly after the client's end"
    );
    gw.stop().await;
}

#[tokio::test]
async fn an_unavailable_node_is_retried_on_another_when_retry_on_names_it() {
    let (a, b) = (GrpcUpstream::start("a").await, GrpcUpstream::start("b").await);
    a.set_unavailable(true);
    let ports = [a.addr.port(), b.addr.port()];
    let extra = "          retries: 1\n          retry: { retry_on: [unavailable] }";
    let gw = TestGateway::start(&config("grpc", extra, &ports)).await;
    let mut c = client(&gw).await;
    for i in 0..4 {
        let reply = c.unary(req(&format!("r{i}"), 0, Code::Ok)).await.expect("retried to b");
        assert_eq!(reply.into_inner().node, "b");
    }
    assert!(a.calls() >= 1, "round robin sent some first tries to a");
    assert_eq!(b.calls(), 4, "b served every call once");
    // A status the client chose is not retried: NOT_FOUND is not in retry_on.
    a.set_unavailable(false);
    let before = a.calls() + b.calls();
    let err = c.unary(req("missing", 0, Code::NotFound)).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    assert_eq!(a.calls() + b.calls(), before + 1);
    gw.stop().await;

    // Without `unavailable` in retry_on the status reaches the client.
    a.set_unavailable(true);
    let gw = TestGateway::start(&config("grpc", "          retries: 1", &ports)).await;
    let mut c = client(&gw).await;
    let mut unavailable = 0;
    for i in 0..4 {
        if let Err(e) = c.unary(req(&format!("s{i}"), 0, Code::Ok)).await {
            assert_eq!((e.code(), e.message()), (Code::Unavailable, "a is unavailable"));
            unavailable += 1;
        }
    }
    assert!(unavailable >= 1, "a's answers were passed on, not retried");
    gw.stop().await;
}

/// Calls until `want` answers (or 10 s pass); returns whether it did.
async fn until_served_by(c: &mut EchoClient<tonic::transport::Channel>, want: &str) -> bool {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while tokio::time::Instant::now() < deadline {
        if let Ok(r) = c.unary(req("probe?", 0, Code::Ok)).await
            && r.into_inner().node == want
        {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

#[tokio::test]
async fn the_grpc_probe_ejects_a_not_serving_node_and_brings_it_back() {
    let (a, b) = (GrpcUpstream::start("a").await, GrpcUpstream::start("b").await);
    let extra = r#"          retries: 0
          checks:
            active:
              type: grpc
              timeout: 1
              healthy: { interval: "100ms", successes: 1 }
              unhealthy: { interval: "100ms", http_failures: 1 }"#;
    let gw = TestGateway::start(&config("grpc", extra, &[a.addr.port(), b.addr.port()])).await;
    let mut c = client(&gw).await;
    assert!(until_served_by(&mut c, "a").await, "a serves while SERVING");

    a.set_health("", gatehouse_tests::grpc::ServingStatus::NotServing).await;
    // Once the probe has seen NOT_SERVING, every call goes to b.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut run_on_b = 0;
    while run_on_b < 6 && tokio::time::Instant::now() < deadline {
        let node = c.unary(req("x", 0, Code::Ok)).await.unwrap().into_inner().node;
        run_on_b = if node == "b" { run_on_b + 1 } else { 0 };
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    assert_eq!(run_on_b, 6, "a was ejected: six calls in a row went to b");
    let a_calls = a.calls();
    for _ in 0..4 {
        assert_eq!(c.unary(req("y", 0, Code::Ok)).await.unwrap().into_inner().node, "b");
    }
    assert_eq!(a.calls(), a_calls, "an ejected node gets no calls");

    a.set_health("", gatehouse_tests::grpc::ServingStatus::Serving).await;
    assert!(until_served_by(&mut c, "a").await, "a is back once it says SERVING");
    gw.stop().await;
}

#[tokio::test]
async fn unavailable_in_the_trailers_of_a_stream_counts_for_passive_health() {
    let (a, b) = (GrpcUpstream::start("a").await, GrpcUpstream::start("b").await);
    let extra = r#"          retries: 0
          checks:
            passive:
              unhealthy: { http_failures: 1 }
              base_ejection_time: 30"#;
    let gw = TestGateway::start(&config("grpc", extra, &[a.addr.port(), b.addr.port()])).await;
    let mut c = client(&gw).await;
    // OK streams and application errors in the trailers keep both nodes in.
    for code in [Code::Ok, Code::NotFound, Code::Ok, Code::NotFound] {
        let mut s = c.server_stream(req("fine", 2, code)).await.unwrap().into_inner();
        while let Ok(Some(_)) = s.message().await {}
    }
    assert_eq!((a.calls(), b.calls()), (2, 2), "round robin kept both nodes");
    // A stream that ends UNAVAILABLE after its messages ejects the node that sent it.
    let mut s = c
        .server_stream(req("bad", 2, Code::Unavailable))
        .await
        .unwrap()
        .into_inner();
    let failed = s.message().await.unwrap().unwrap().node;
    assert!(s.message().await.unwrap().is_some());
    assert_eq!(s.message().await.unwrap_err().code(), Code::Unavailable);
    let (bad, good) = if failed == "a" { (&a, "b") } else { (&b, "a") };
    let served = bad.calls();
    for _ in 0..4 {
        let reply = c.unary(req("after", 0, Code::Ok)).await.unwrap().into_inner();
        assert_eq!(reply.node, good, "the ejected node is skipped");
    }
    assert_eq!(bad.calls(), served, "the ejected node got no call");
    gw.stop().await;
}

#[tokio::test]
async fn grpcs_reaches_a_node_over_tls_with_its_own_ca() {
    let scratch = tempfile::tempdir().unwrap();
    let ca = gatehouse_tests::tls::Ca::new("gRPC CA");
    let ca_file = scratch.path().join("ca.pem");
    std::fs::write(&ca_file, &ca.pem).unwrap();
    let identity = ca.server(&["127.0.0.1"], gatehouse_tests::tls::KeyKind::Ecdsa);
    let node = GrpcUpstream::start_tls("tls", &identity).await;
    let extra = format!(
        "          retries: 0\n          tls: {{ ca_file: {} }}",
        ca_file.display()
    );
    let gw = TestGateway::start(&config("grpcs", &extra, &[node.addr.port()])).await;
    let mut c = client(&gw).await;
    let reply = c.unary(req("secret", 0, Code::Ok)).await.unwrap().into_inner();
    assert_eq!((reply.message.as_str(), reply.node.as_str()), ("secret", "tls"));
    let mut s = c
        .server_stream(req("s", 3, Code::PermissionDenied))
        .await
        .unwrap()
        .into_inner();
    for i in 0..3 {
        assert_eq!(s.message().await.unwrap().unwrap().message, format!("s #{i}"));
    }
    assert_eq!(s.message().await.unwrap_err().code(), Code::PermissionDenied);
    gw.stop().await;

    // A CA that did not sign the node's certificate: no call reaches it.
    let other = gatehouse_tests::tls::Ca::new("Other CA");
    let wrong = scratch.path().join("other.pem");
    std::fs::write(&wrong, &other.pem).unwrap();
    let extra = format!(
        "          retries: 0\n          tls: {{ ca_file: {} }}",
        wrong.display()
    );
    let gw = TestGateway::start(&config("grpcs", &extra, &[node.addr.port()])).await;
    let mut c = client(&gw).await;
    let before = node.calls();
    assert!(c.unary(req("nope", 0, Code::Ok)).await.is_err());
    assert_eq!(node.calls(), before);
    gw.stop().await;
}
