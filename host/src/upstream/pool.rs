//! Keep-alive HTTP/1.1 connections to one endpoint.
//!
//! Each endpoint keeps a LIFO stack of idle connections (hyper `SendRequest`
//! handles whose connection task runs on its own). A try takes the most recently
//! used one that is still open, or connects anew; the response body hands the
//! connection back when it ends. The pool lives in the endpoint's live state, so
//! connections survive config reloads for every endpoint that stays. Each idle
//! connection carries the kind of connection it is (plain, or TLS under given
//! settings): a try only takes one of its own kind.

use std::cell::Cell;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::tls::client::UpstreamConnector;

/// Idle connections are dropped after this long (below common upstream keep-alive
/// timeouts, e.g. nginx's 75 s, so the gateway closes first).
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Idle connections kept per endpoint; more are closed when they come back.
pub const MAX_IDLE: usize = 512;

/// Why a connection could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The host name did not resolve.
    #[error("cannot resolve {0}")]
    Resolve(String),
    /// Connecting took longer than the connect timeout.
    #[error("connect timed out after {0:?}")]
    Timeout(Duration),
    /// The connection was refused or failed.
    #[error("connect failed: {0}")]
    Io(#[from] std::io::Error),
    /// The HTTP/1.1 handshake failed.
    #[error("HTTP handshake failed: {0}")]
    Handshake(#[from] hyper::Error),
    /// The TLS handshake failed (untrusted or wrong certificate, no shared protocol).
    #[error("TLS handshake with {server} failed: {source}")]
    Tls {
        /// The server name sent and verified.
        server: String,
        /// The cause.
        source: std::io::Error,
    },
}

/// Kind of a plain connection (TLS kinds come from the connector's settings).
pub const PLAIN: u64 = 0;

/// The connection a try used, given back when its response body ends.
#[derive(Debug)]
pub enum Checkout<B> {
    /// An HTTP/1.1 connection of this kind: back on the idle stack after a clean end.
    Http1(SendRequest<B>, u64),
    /// A stream on a shared HTTP/2 connection: released when dropped.
    Http2(super::h2::Lease),
}

impl<B> Checkout<B> {
    /// Gives the connection back to `pool` (HTTP/1.1) or releases the stream (HTTP/2).
    pub fn give_back(self, pool: &ConnPool<B>) {
        match self {
            Checkout::Http1(tx, kind) => pool.put(tx, kind),
            Checkout::Http2(lease) => drop(lease),
        }
    }
}

struct Idle<B> {
    tx: SendRequest<B>,
    since: Instant,
    kind: u64,
    worker: u16,
}

thread_local! {
    static WORKER: Cell<u16> = const { Cell::new(0) };
}

/// Marks the calling thread as proxy worker `id` (the per-worker model; 0, the
/// default, is the shared runtime). A worker reuses only the upstream connections
/// it opened: their connection tasks run on its own runtime, so a request never
/// wakes another worker's thread.
pub fn set_worker(id: u16) {
    WORKER.with(|w| w.set(id));
}

/// The proxy worker the calling thread is (0: the shared runtime).
pub fn worker() -> u16 {
    WORKER.with(Cell::get)
}

/// Idle connections of one endpoint.
pub struct ConnPool<B> {
    idle: Mutex<Vec<Idle<B>>>,
}

impl<B> std::fmt::Debug for ConnPool<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnPool").field("idle", &self.idle_count()).finish()
    }
}

impl<B> Default for ConnPool<B> {
    fn default() -> Self {
        Self {
            idle: Mutex::new(Vec::new()),
        }
    }
}

impl<B> ConnPool<B> {
    /// The most recently returned connection of `kind` that is still open, if any.
    /// Connections of another kind (made under settings no longer served) are
    /// dropped.
    /// Connections other workers put back are left to them.
    pub fn take(&self, kind: u64) -> Option<SendRequest<B>> {
        let me = worker();
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        let mut i = idle.len();
        while i > 0 {
            i -= 1;
            if idle[i].worker != me {
                continue;
            }
            let c = idle.remove(i);
            if c.kind == kind && !c.tx.is_closed() && c.since.elapsed() < IDLE_TIMEOUT {
                return Some(c.tx);
            }
        }
        None
    }

    /// Returns a connection of `kind` after its response ended.
    pub fn put(&self, tx: SendRequest<B>, kind: u64) {
        if tx.is_closed() {
            return;
        }
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        if idle.len() >= MAX_IDLE {
            // Drop the oldest: the stack is used from the top.
            idle.remove(0);
        }
        idle.push(Idle {
            tx,
            since: Instant::now(),
            kind,
            worker: worker(),
        });
    }

    /// Idle connections held.
    pub fn idle_count(&self) -> usize {
        self.idle.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

/// Where an endpoint is: a resolved address, or a name resolved per connection.
#[derive(Debug, Clone)]
pub enum Target {
    /// An IP literal.
    Addr(SocketAddr),
    /// `host:port` to resolve when connecting.
    Name(String),
}

impl Target {
    /// The target for `host` and `port`.
    pub fn new(host: &str, port: u16) -> Self {
        match host.parse::<std::net::IpAddr>() {
            Ok(ip) => Target::Addr(SocketAddr::new(ip, port)),
            Err(_) => Target::Name(format!("{host}:{port}")),
        }
    }
}

/// Opens a new HTTP/1.1 connection to `target` within `timeout` (resolution and
/// the TLS handshake included), through TLS when `tls` is given (`host` names the
/// node for SNI and verification), and starts its connection task.
pub async fn connect<B>(
    target: &Target,
    host: &str,
    tls: Option<&UpstreamConnector>,
    timeout: Duration,
) -> Result<SendRequest<B>, ConnectError>
where
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    let stream = connect_tcp(target, timeout).await?;
    let Some(tls) = tls else {
        return handshake(stream).await;
    };
    let server = tls
        .server_name(host)
        .ok_or_else(|| ConnectError::Resolve(format!("{host} is not a TLS server name")))?;
    let name = server.to_str().into_owned();
    let connector = tokio_rustls::TlsConnector::from(tls.config.clone());
    let stream = tokio::time::timeout_at(deadline, connector.connect(server, stream))
        .await
        .map_err(|_| ConnectError::Timeout(timeout))?
        .map_err(|source| ConnectError::Tls { server: name, source })?;
    handshake(stream).await
}

/// Opens a TCP connection to `target` within `timeout` (resolution included), with
/// `TCP_NODELAY` set.
pub async fn connect_tcp(target: &Target, timeout: Duration) -> Result<TcpStream, ConnectError> {
    let stream = tokio::time::timeout(timeout, async {
        let addr = match target {
            Target::Addr(a) => *a,
            Target::Name(name) => tokio::net::lookup_host(name.as_str())
                .await?
                .next()
                .ok_or_else(|| ConnectError::Resolve(name.clone()))?,
        };
        Ok::<_, ConnectError>(TcpStream::connect(addr).await?)
    })
    .await
    .map_err(|_| ConnectError::Timeout(timeout))??;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// Starts HTTP/1.1 on `stream` (TCP or TLS) and spawns its connection task.
pub async fn handshake<B, S>(stream: S) -> Result<SendRequest<B>, ConnectError>
where
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    // Flattened writes, as on the client side (see `proxy::server`).
    let (tx, conn) = http1::Builder::new()
        .writev(false)
        .handshake(TokioIo::new(stream))
        .await?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "upstream connection ended with an error");
        }
    });
    Ok(tx)
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use http_body_util::Empty;

    use super::*;

    #[tokio::test]
    async fn connections_are_reused_until_closed() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = tokio::spawn(async move { listener.accept().await.map(|(s, _)| s) });
        let pool = ConnPool::<Empty<Bytes>>::default();
        assert!(pool.take(PLAIN).is_none());
        let tx = connect::<Empty<Bytes>>(&Target::Addr(addr), "127.0.0.1", None, Duration::from_secs(1))
            .await
            .unwrap();
        pool.put(tx, PLAIN);
        assert_eq!(pool.idle_count(), 1);
        let tx = pool.take(PLAIN).expect("an open connection is reused");
        pool.put(tx, PLAIN);
        assert!(pool.take(7).is_none(), "a connection of another kind is not reused");
        assert_eq!(pool.idle_count(), 0, "and is dropped");
        let server_side = accepted.await.unwrap().unwrap();
        drop(server_side);
        assert_eq!(pool.idle_count(), 0);
    }

    #[tokio::test]
    async fn a_worker_reuses_only_its_own_connections() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let _accepted = tokio::spawn(async move { listener.accept().await.map(|(s, _)| s) });
        let pool = ConnPool::<Empty<Bytes>>::default();
        let tx = connect::<Empty<Bytes>>(&Target::Addr(addr), "127.0.0.1", None, Duration::from_secs(1))
            .await
            .unwrap();
        set_worker(1);
        pool.put(tx, PLAIN);
        set_worker(2);
        assert!(
            pool.take(PLAIN).is_none(),
            "worker 2 does not take worker 1's connection"
        );
        assert_eq!(pool.idle_count(), 1, "and leaves it in place");
        set_worker(1);
        assert!(pool.take(PLAIN).is_some(), "worker 1 reuses it");
        set_worker(0);
    }

    #[tokio::test]
    async fn refused_and_unresolvable_targets_fail_fast() {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let err = connect::<Empty<Bytes>>(
            &Target::new("127.0.0.1", port),
            "127.0.0.1",
            None,
            Duration::from_secs(1),
        )
        .await
        .unwrap_err();
        assert!(matches!(err, ConnectError::Io(_)), "{err:?}");
        let err = connect::<Empty<Bytes>>(
            &Target::new("no-such-host.invalid", 80),
            "x",
            None,
            Duration::from_secs(2),
        )
        .await
        .unwrap_err();
        assert!(matches!(
            err,
            ConnectError::Io(_) | ConnectError::Resolve(_) | ConnectError::Timeout(_)
        ));
    }
}
