//! The per-worker model (`gateway.worker_model: per_worker`, nginx's): each worker
//! is an OS thread with its own single-threaded tokio runtime and its own
//! `SO_REUSEPORT` socket on every proxy listener. The kernel spreads new
//! connections over the sockets; a connection, its requests and the upstream
//! connections they open stay on one thread, so nothing crosses threads on the
//! request path. Snapshots, live state and metrics are shared as before.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use http::{Request, Response};
use hyper::body::Incoming;
use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::oneshot;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::body::Body;
use super::server::{ServeOptions, serve};
use crate::tls::ListenerTls;

/// Backlog of each worker's socket (the kernel keeps one queue per socket).
const BACKLOG: u32 = 1024;

/// How many proxy workers the per-worker model starts: `TOKIO_WORKER_THREADS`,
/// or one per core.
pub fn count() -> usize {
    std::env::var("TOKIO_WORKER_THREADS")
        .ok()
        .and_then(|v| v.trim().parse::<usize>().ok())
        .filter(|n| *n > 0)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// Binds `count` listening sockets on `addr` with `SO_REUSEPORT`. The first one
/// decides the port (port 0 picks one); the others join it. Returns the sockets,
/// detached from the calling runtime so each worker can adopt its own, and the
/// address they listen on.
pub fn bind_reuseport(addr: SocketAddr, count: usize) -> io::Result<(Vec<std::net::TcpListener>, SocketAddr)> {
    let mut local = addr;
    let mut out = Vec::with_capacity(count);
    for _ in 0..count.max(1) {
        let socket = if local.is_ipv4() {
            TcpSocket::new_v4()?
        } else {
            TcpSocket::new_v6()?
        };
        socket.set_reuseaddr(true)?;
        socket.set_reuseport(true)?;
        socket.bind(local)?;
        let listener = socket.listen(BACKLOG)?;
        local = listener.local_addr()?;
        out.push(listener.into_std()?);
    }
    Ok((out, local))
}

/// Starts worker `id` (from 1): a thread running its own runtime that serves
/// `handler` on each of `sockets` (with the listener's TLS, if any) until
/// `shutdown` is cancelled. The receiver yields whether every connection finished
/// within the grace period once the worker has stopped.
pub fn spawn<F, Fut>(
    id: u16,
    sockets: Vec<(std::net::TcpListener, Option<Arc<ListenerTls>>)>,
    handler: F,
    shutdown: CancellationToken,
    opts: ServeOptions,
) -> io::Result<oneshot::Receiver<bool>>
where
    F: Fn(Request<Incoming>, SocketAddr) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<Body>> + Send + 'static,
{
    let (done, rx) = oneshot::channel();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    std::thread::Builder::new()
        .name(format!("gatehouse-worker-{id}"))
        .spawn(move || {
            crate::upstream::pool::set_worker(id);
            let clean = runtime.block_on(async move {
                let mut servers = JoinSet::new();
                for (socket, tls) in sockets {
                    match TcpListener::from_std(socket) {
                        Ok(l) => {
                            servers.spawn(serve(l, tls, handler.clone(), shutdown.clone(), opts));
                        }
                        Err(e) => tracing::error!(worker = id, error = %e, "worker cannot adopt its socket"),
                    }
                }
                let mut clean = true;
                while let Some(r) = servers.join_next().await {
                    clean &= r.unwrap_or(false);
                }
                clean
            });
            // The runtime (and any upstream connection task left on it) ends here.
            let _ = done.send(clean);
        })?;
    Ok(rx)
}
