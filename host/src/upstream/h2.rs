//! Multiplexed HTTP/2 connections to one endpoint (`scheme: grpc` / `grpcs`).
//!
//! Unlike HTTP/1.1, one HTTP/2 connection carries many requests at once, so an
//! endpoint keeps a small set of shared connections instead of a stack of idle
//! ones: a try takes the first open connection of its kind with room for another
//! stream, and opens a new one only when every connection is full (at
//! [`MAX_STREAMS`] leased streams) or closed. A [`Lease`] counts the try's stream
//! until its response body ends. Closed connections (GOAWAY, a broken socket, a
//! failed keep-alive ping) are dropped at the next look, so the next try
//! reconnects.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyper::client::conn::http2::{self, SendRequest};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};

use super::pool::{ConnectError, Target, connect_tcp, worker};
use crate::tls::client::UpstreamConnector;

/// Streams leased on one connection before another is opened (below the common
/// `SETTINGS_MAX_CONCURRENT_STREAMS` of 100, so requests rarely queue inside one
/// connection).
pub const MAX_STREAMS: u32 = 100;
/// Keep-alive ping interval: a connection whose peer stops answering pings is
/// closed and replaced.
pub const PING_INTERVAL: Duration = Duration::from_secs(30);
/// How long a ping may go unanswered.
pub const PING_TIMEOUT: Duration = Duration::from_secs(10);

struct Shared<B> {
    tx: SendRequest<B>,
    kind: u64,
    /// The proxy worker whose runtime drives the connection (see
    /// [`super::pool::set_worker`]): only it uses the connection.
    worker: u16,
    streams: Arc<AtomicU32>,
}

/// The shared HTTP/2 connections of one endpoint.
pub struct H2Pool<B> {
    conns: Mutex<Vec<Shared<B>>>,
}

impl<B> std::fmt::Debug for H2Pool<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("H2Pool").field("connections", &self.len()).finish()
    }
}

impl<B> Default for H2Pool<B> {
    fn default() -> Self {
        Self {
            conns: Mutex::new(Vec::new()),
        }
    }
}

/// One stream's claim on a shared connection; released when dropped.
#[derive(Debug)]
pub struct Lease {
    streams: Arc<AtomicU32>,
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.streams.fetch_sub(1, Ordering::Relaxed);
    }
}

impl<B> H2Pool<B> {
    /// An open connection of `kind`, opened by the calling proxy worker, with room
    /// for another stream, leased. Closed connections and connections of another
    /// kind are dropped; other workers' connections are left to them.
    pub fn take(&self, kind: u64) -> Option<(SendRequest<B>, Lease)> {
        let me = worker();
        let mut conns = self.conns.lock().unwrap_or_else(|p| p.into_inner());
        conns.retain(|c| c.kind == kind && !c.tx.is_closed());
        let c = conns
            .iter()
            .find(|c| c.worker == me && c.streams.load(Ordering::Relaxed) < MAX_STREAMS)?;
        c.streams.fetch_add(1, Ordering::Relaxed);
        Some((
            c.tx.clone(),
            Lease {
                streams: c.streams.clone(),
            },
        ))
    }

    /// Adds a new connection of `kind` and leases its first stream.
    pub fn insert(&self, tx: SendRequest<B>, kind: u64) -> (SendRequest<B>, Lease) {
        let streams = Arc::new(AtomicU32::new(1));
        let lease = Lease {
            streams: streams.clone(),
        };
        let mut conns = self.conns.lock().unwrap_or_else(|p| p.into_inner());
        conns.push(Shared {
            tx: tx.clone(),
            kind,
            worker: worker(),
            streams,
        });
        (tx, lease)
    }

    /// Connections held (open or not yet found closed).
    pub fn len(&self) -> usize {
        self.conns.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Whether no connection is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Opens a new HTTP/2 connection to `target` within `timeout`: h2c with prior
/// knowledge, or through TLS when `tls` is given (its connector must offer ALPN
/// `h2`, see [`UpstreamConnector::alpn_h2`]; a server that picks another protocol
/// is refused).
pub async fn connect<B>(
    target: &Target,
    host: &str,
    tls: Option<&UpstreamConnector>,
    timeout: Duration,
) -> Result<SendRequest<B>, ConnectError>
where
    B: http_body::Body + Unpin + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    let stream = connect_tcp(target, timeout).await?;
    let Some(tls) = tls else {
        return tokio::time::timeout_at(deadline, handshake(stream))
            .await
            .map_err(|_| ConnectError::Timeout(timeout))?;
    };
    let server = tls
        .server_name(host)
        .ok_or_else(|| ConnectError::Resolve(format!("{host} is not a TLS server name")))?;
    let name = server.to_str().into_owned();
    let connector = tokio_rustls::TlsConnector::from(tls.config.clone());
    let stream = tokio::time::timeout_at(deadline, connector.connect(server, stream))
        .await
        .map_err(|_| ConnectError::Timeout(timeout))?
        .map_err(|source| ConnectError::Tls {
            server: name.clone(),
            source,
        })?;
    if let Some(alpn) = stream.get_ref().1.alpn_protocol()
        && alpn != b"h2"
    {
        return Err(ConnectError::Tls {
            server: name,
            source: std::io::Error::other(format!(
                "the server chose ALPN {:?}, not h2",
                String::from_utf8_lossy(alpn)
            )),
        });
    }
    tokio::time::timeout_at(deadline, handshake(stream))
        .await
        .map_err(|_| ConnectError::Timeout(timeout))?
}

/// Starts HTTP/2 on `stream` (TCP or TLS), with keep-alive pings, and spawns its
/// connection task.
pub async fn handshake<B, S>(stream: S) -> Result<SendRequest<B>, ConnectError>
where
    B: http_body::Body + Unpin + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (tx, conn) = http2::Builder::new(TokioExecutor::new())
        .timer(TokioTimer::new())
        .keep_alive_interval(PING_INTERVAL)
        .keep_alive_timeout(PING_TIMEOUT)
        .keep_alive_while_idle(true)
        .handshake(TokioIo::new(stream))
        .await?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "upstream HTTP/2 connection ended with an error");
        }
    });
    Ok(tx)
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use http_body_util::Empty;

    use super::*;

    /// An h2c server that answers every request with 200 and counts connections.
    async fn h2c_server() -> (std::net::SocketAddr, Arc<AtomicU32>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicU32::new(0));
        let count = accepted.clone();
        tokio::spawn(async move {
            while let Ok((s, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::Relaxed);
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(|_req| async {
                        Ok::<_, std::convert::Infallible>(http::Response::new(Empty::<Bytes>::new()))
                    });
                    let _ = hyper::server::conn::http2::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(s), svc)
                        .await;
                });
            }
        });
        (addr, accepted)
    }

    #[tokio::test]
    async fn one_connection_carries_concurrent_requests_and_is_replaced_when_closed() {
        let (addr, accepted) = h2c_server().await;
        let pool = H2Pool::<Empty<Bytes>>::default();
        let target = Target::Addr(addr);
        assert!(pool.take(7).is_none());
        let tx = connect::<Empty<Bytes>>(&target, "127.0.0.1", None, Duration::from_secs(1))
            .await
            .unwrap();
        let (mut a, lease_a) = pool.insert(tx, 7);
        let (mut b, lease_b) = pool.take(7).expect("the connection is shared");
        assert!(pool.take(8).is_none(), "another kind is not shared");
        assert!(pool.is_empty(), "and the connection of the other kind is dropped");
        let (mut a2, _lease) = {
            let tx = connect::<Empty<Bytes>>(&target, "127.0.0.1", None, Duration::from_secs(1))
                .await
                .unwrap();
            pool.insert(tx, 7)
        };
        let req = || {
            http::Request::builder()
                .uri(format!("http://{addr}/"))
                .body(Empty::new())
                .unwrap()
        };
        let (ra, rb, rc) = tokio::join!(a.send_request(req()), b.send_request(req()), a2.send_request(req()));
        assert_eq!(ra.unwrap().status(), 200);
        assert_eq!(rb.unwrap().status(), 200);
        assert_eq!(rc.unwrap().status(), 200);
        drop((lease_a, lease_b));
        assert_eq!(accepted.load(Ordering::Relaxed), 2);
        drop((a, b, a2));
        drop(pool);
    }

    #[tokio::test]
    async fn a_full_connection_is_not_leased() {
        let (addr, _) = h2c_server().await;
        let pool = H2Pool::<Empty<Bytes>>::default();
        let tx = connect::<Empty<Bytes>>(&Target::Addr(addr), "127.0.0.1", None, Duration::from_secs(1))
            .await
            .unwrap();
        let mut leases = vec![pool.insert(tx, 1).1];
        for _ in 1..MAX_STREAMS {
            leases.push(pool.take(1).expect("room left").1);
        }
        assert!(pool.take(1).is_none(), "full at MAX_STREAMS");
        leases.pop();
        assert!(pool.take(1).is_some(), "a released stream makes room");
    }

    #[tokio::test]
    async fn a_worker_uses_only_the_connections_it_opened() {
        let (addr, _) = h2c_server().await;
        let pool = H2Pool::<Empty<Bytes>>::default();
        let tx = connect::<Empty<Bytes>>(&Target::Addr(addr), "127.0.0.1", None, Duration::from_secs(1))
            .await
            .unwrap();
        crate::upstream::pool::set_worker(1);
        let _first = pool.insert(tx, 1);
        crate::upstream::pool::set_worker(2);
        assert!(pool.take(1).is_none(), "worker 2 opens its own");
        assert_eq!(pool.len(), 1, "and leaves worker 1's in place");
        crate::upstream::pool::set_worker(1);
        assert!(pool.take(1).is_some());
        crate::upstream::pool::set_worker(0);
    }
}
