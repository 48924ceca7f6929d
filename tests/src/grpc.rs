//! gRPC for tests: the generated `Echo` service (`proto/echo.proto`), a real tonic
//! server of it beside the standard health service (`grpc.health.v1.Health`), over
//! h2c or TLS, whose behaviour a test can change while it runs.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};

use crate::tls::Issued;

/// The generated messages, client and server of `gatehouse.test.Echo`.
#[allow(missing_docs, clippy::all)]
pub mod pb {
    tonic::include_proto!("gatehouse.test");
}

pub use pb::echo_client::EchoClient;
pub use pb::{EchoReply, EchoRequest};
pub use tonic_health::ServingStatus;

/// What one node does; shared with the test that started it.
#[derive(Debug, Default)]
struct NodeState {
    name: String,
    calls: AtomicU64,
    connections: AtomicU64,
    unavailable: AtomicBool,
}

#[derive(Debug, Clone)]
struct Node(Arc<NodeState>);

type ReplyStream = Pin<Box<dyn Stream<Item = Result<EchoReply, Status>> + Send>>;

impl Node {
    fn reply(&self, message: String) -> EchoReply {
        EchoReply {
            message,
            node: self.0.name.clone(),
        }
    }

    /// The status a request asks to end with, if any.
    fn chosen_status(req: &EchoRequest) -> Option<Status> {
        (req.fail_with != 0).then(|| {
            Status::new(
                tonic::Code::from_i32(req.fail_with as i32),
                format!("failed on purpose: {}", req.message),
            )
        })
    }
}

#[tonic::async_trait]
impl pb::echo_server::Echo for Node {
    async fn unary(&self, req: Request<EchoRequest>) -> Result<Response<EchoReply>, Status> {
        self.0.calls.fetch_add(1, Ordering::Relaxed);
        if self.0.unavailable.load(Ordering::Relaxed) {
            return Err(Status::unavailable(format!("{} is unavailable", self.0.name)));
        }
        let req = req.into_inner();
        match Self::chosen_status(&req) {
            Some(status) => Err(status),
            None => Ok(Response::new(self.reply(req.message))),
        }
    }

    type ServerStreamStream = ReplyStream;

    async fn server_stream(&self, req: Request<EchoRequest>) -> Result<Response<ReplyStream>, Status> {
        self.0.calls.fetch_add(1, Ordering::Relaxed);
        let req = req.into_inner();
        let mut items: Vec<Result<EchoReply, Status>> = (0..req.count)
            .map(|i| Ok(self.reply(format!("{} #{i}", req.message))))
            .collect();
        if let Some(status) = Self::chosen_status(&req) {
            items.push(Err(status));
        }
        let stream = tokio_stream::iter(items);
        Ok(Response::new(Box::pin(stream) as ReplyStream))
    }

    type BidiStream = ReplyStream;

    async fn bidi(&self, req: Request<Streaming<EchoRequest>>) -> Result<Response<ReplyStream>, Status> {
        self.0.calls.fetch_add(1, Ordering::Relaxed);
        let node = self.clone();
        let out = req
            .into_inner()
            .map(move |r| r.map(|req| node.reply(format!("echo {}", req.message))));
        Ok(Response::new(Box::pin(out) as ReplyStream))
    }
}

/// A real gRPC server: `Echo` and the health service.
pub struct GrpcUpstream {
    /// Where it listens.
    pub addr: SocketAddr,
    state: Arc<NodeState>,
    health: tonic_health::server::HealthReporter,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for GrpcUpstream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GrpcUpstream").field("addr", &self.addr).finish()
    }
}

impl GrpcUpstream {
    /// Serves h2c on an ephemeral loopback port; replies name the node `name`.
    pub async fn start(name: &str) -> Self {
        Self::start_inner(name, None, 0).await
    }

    /// Serves over TLS (ALPN h2) with `identity`.
    pub async fn start_tls(name: &str, identity: &Issued) -> Self {
        Self::start_inner(name, Some(identity), 0).await
    }

    /// Shuts this server down (its connections get GOAWAY and close) and starts a
    /// fresh h2c one named `name` on the same port.
    pub async fn restart(mut self, name: &str) -> Self {
        let port = self.addr.port();
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let task = std::mem::replace(&mut self.task, tokio::spawn(async {}));
        let _ = tokio::time::timeout(std::time::Duration::from_secs(5), task).await;
        drop(self);
        Self::start_inner(name, None, port).await
    }

    async fn start_inner(name: &str, identity: Option<&Issued>, port: u16) -> Self {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(NodeState {
            name: name.to_string(),
            ..NodeState::default()
        });
        let (health, health_service) = tonic_health::server::health_reporter();
        let mut builder = tonic::transport::Server::builder();
        if let Some(id) = identity {
            let tls = tonic::transport::ServerTlsConfig::new()
                .identity(tonic::transport::Identity::from_pem(&id.cert_pem, &id.key_pem));
            builder = builder.tls_config(tls).unwrap();
        }
        let router = builder
            .add_service(health_service)
            .add_service(pb::echo_server::EchoServer::new(Node(state.clone())));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let counted = state.clone();
        let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener).map(move |conn| {
            counted.connections.fetch_add(1, Ordering::Relaxed);
            conn
        });
        let task = tokio::spawn(async move {
            let _ = router
                .serve_with_incoming_shutdown(incoming, async {
                    let _ = stopped.await;
                })
                .await;
        });
        Self {
            addr,
            state,
            health,
            stop: Some(stop),
            task,
        }
    }

    /// Calls this node has received (every method).
    pub fn calls(&self) -> u64 {
        self.state.calls.load(Ordering::Relaxed)
    }

    /// TCP connections this node has accepted.
    pub fn connections(&self) -> u64 {
        self.state.connections.load(Ordering::Relaxed)
    }

    /// Makes every unary call fail with `UNAVAILABLE` (or serve again).
    pub fn set_unavailable(&self, on: bool) {
        self.state.unavailable.store(on, Ordering::Relaxed);
    }

    /// Sets what the health service says for `service` (`""`: the whole server).
    pub async fn set_health(&self, service: &str, status: ServingStatus) {
        self.health.set_service_status(service, status).await;
    }
}

impl Drop for GrpcUpstream {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.task.abort();
    }
}
