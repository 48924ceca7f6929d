//! Accept loop shared by the proxy and admin listeners: HTTP/1.1 and h2c (prior
//! knowledge) on one port, or TLS with ALPN `h2`/`http/1.1` (the handshake is
//! [`super::tls::accept`]), a client header timeout, and graceful shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::proxy::body::Body;
use crate::tls::ListenerTls;

/// Connection settings of a listener.
#[derive(Debug, Clone, Copy)]
pub struct ServeOptions {
    /// Time a client may take to send a request head.
    pub header_timeout: Duration,
    /// Time in-flight requests get after shutdown begins.
    pub grace: Duration,
}

/// Serves `handler` on `listener` (through TLS when `tls` is given) until
/// `shutdown` is cancelled, then stops accepting and waits up to `grace` for open
/// connections to finish their in-flight requests. Returns whether every
/// connection finished in time.
pub async fn serve<F, Fut>(
    listener: TcpListener,
    tls: Option<Arc<ListenerTls>>,
    handler: F,
    shutdown: CancellationToken,
    opts: ServeOptions,
) -> bool
where
    F: Fn(Request<Incoming>, SocketAddr) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<Body>> + Send + 'static,
{
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(opts.header_timeout)
        .keep_alive(true)
        // One flattened write per response: fewer instructions than the vectored
        // queue for the small messages an API gateway mostly carries (measured with
        // callgrind, docs/performance.md); large bodies pay one extra copy.
        .writev(false);
    builder.http2().timer(TokioTimer::new());
    let builder = Arc::new(builder);
    let graceful = GracefulShutdown::new();
    loop {
        let accepted = tokio::select! {
            biased;
            _ = shutdown.cancelled() => break,
            a = listener.accept() => a,
        };
        let (stream, remote) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let handler = handler.clone();
        let Some(tls) = &tls else {
            let service = super::tls::service(handler, remote, None);
            let conn = builder.serve_connection(TokioIo::new(stream), service).into_owned();
            spawn_connection(graceful.watch(conn), remote);
            continue;
        };
        let (tls, builder, watcher) = (tls.clone(), builder.clone(), graceful.watcher());
        tokio::spawn(async move {
            let Some((stream, identity)) = super::tls::accept(&tls, stream, remote).await else {
                return;
            };
            let service = super::tls::service(handler, remote, identity);
            let conn = builder.serve_connection(TokioIo::new(stream), service).into_owned();
            if let Err(e) = watcher.watch(conn).await {
                tracing::debug!(client = %remote, error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    tokio::select! {
        _ = graceful.shutdown() => true,
        _ = tokio::time::sleep(opts.grace) => {
            tracing::warn!(grace = ?opts.grace, "grace period over; closing connections with requests in flight");
            false
        }
    }
}

fn spawn_connection<C, E>(conn: C, remote: SocketAddr)
where
    C: Future<Output = Result<(), E>> + Send + 'static,
    E: std::fmt::Display,
{
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(client = %remote, error = %e, "connection ended with an error");
        }
    });
}
