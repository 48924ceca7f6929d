//! A real upstream HTTP server whose behaviour a test changes while it runs.
//!
//! Paths: `/health` answers with the health behaviour; `/echo` reads the whole
//! request body and answers with its length and SHA-256; `/bytes/N` streams N
//! deterministic bytes; everything else answers with the main behaviour. Every
//! response names the node in its body and in `x-node`.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, StreamBody, combinators::BoxBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;
use tokio::sync::watch;

type Body = BoxBody<Bytes, Infallible>;

/// How the server answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Behavior {
    /// 200 with the node name.
    Ok,
    /// This status with the node name.
    Status(u16),
    /// 200 after a pause.
    Delay(Duration),
    /// Accept the request and never answer.
    Stall,
    /// Close the connection without answering.
    Reset,
    /// This status with `Retry-After: secs`.
    RetryAfter(u16, u64),
}

#[derive(Debug)]
struct State {
    name: String,
    behavior: Mutex<Behavior>,
    health: Mutex<Behavior>,
    hits: AtomicU64,
    health_hits: AtomicU64,
    last_headers: Mutex<Option<HeaderMap>>,
}

/// A running test upstream.
#[derive(Debug)]
pub struct TestUpstream {
    /// Node name (in bodies and `x-node`).
    pub name: String,
    /// Where it listens.
    pub addr: SocketAddr,
    state: Arc<State>,
    stop: watch::Sender<bool>,
}

impl TestUpstream {
    /// Starts a server on an ephemeral loopback port.
    pub async fn start(name: &str) -> Self {
        Self::start_on(name, "127.0.0.1:0".parse().unwrap()).await
    }

    /// Starts a server on `addr` (to bring a stopped node back on its old port).
    pub async fn start_on(name: &str, addr: SocketAddr) -> Self {
        let listener = bind_retry(addr).await;
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(State {
            name: name.to_string(),
            behavior: Mutex::new(Behavior::Ok),
            health: Mutex::new(Behavior::Ok),
            hits: AtomicU64::new(0),
            health_hits: AtomicU64::new(0),
            last_headers: Mutex::new(None),
        });
        let (stop, stop_rx) = watch::channel(false);
        tokio::spawn(accept_loop(listener, state.clone(), stop_rx));
        Self {
            name: name.to_string(),
            addr,
            state,
            stop,
        }
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Changes how requests (other than `/health`) are answered.
    pub fn set(&self, b: Behavior) {
        *self.state.behavior.lock().unwrap() = b;
    }

    /// Changes how `/health` is answered.
    pub fn set_health(&self, b: Behavior) {
        *self.state.health.lock().unwrap() = b;
    }

    /// Requests answered (other than `/health`).
    pub fn hits(&self) -> u64 {
        self.state.hits.load(Ordering::SeqCst)
    }

    /// `/health` requests seen.
    pub fn health_hits(&self) -> u64 {
        self.state.health_hits.load(Ordering::SeqCst)
    }

    /// Zeroes the counters.
    pub fn reset_hits(&self) {
        self.state.hits.store(0, Ordering::SeqCst);
        self.state.health_hits.store(0, Ordering::SeqCst);
    }

    /// Headers of the last non-health request.
    pub fn last_headers(&self) -> Option<HeaderMap> {
        self.state.last_headers.lock().unwrap().clone()
    }

    /// Kills the server: closes the listener and every open connection.
    pub fn stop(&self) {
        let _ = self.stop.send(true);
    }
}

impl Drop for TestUpstream {
    fn drop(&mut self) {
        self.stop();
    }
}

async fn bind_retry(addr: SocketAddr) -> TcpListener {
    // A port just released by a stopped server can take a moment to be free again.
    for _ in 0..100 {
        match TcpListener::bind(addr).await {
            Ok(l) => return l,
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
    TcpListener::bind(addr).await.expect("bind test upstream")
}

async fn accept_loop(listener: TcpListener, state: Arc<State>, mut stop: watch::Receiver<bool>) {
    loop {
        let (stream, _) = tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            a = listener.accept() => match a { Ok(a) => a, Err(_) => continue },
        };
        let state = state.clone();
        let mut stop = stop.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let state = state.clone();
                async move { answer(&state, req).await }
            });
            let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            let conn = builder.serve_connection(TokioIo::new(stream), service);
            tokio::select! {
                _ = conn => {}
                _ = stop.wait_for(|s| *s) => {}
            }
        });
    }
}

fn named(state: &State, status: u16) -> Response<Body> {
    let mut r = Response::new(full(state.name.clone()));
    *r.status_mut() = StatusCode::from_u16(status).unwrap();
    r.headers_mut().insert("x-node", state.name.parse().unwrap());
    r
}

fn full(s: impl Into<Bytes>) -> Body {
    http_body_util::Full::new(s.into()).boxed()
}

/// The deterministic byte at offset `i` of `/bytes/N`.
pub fn pattern_byte(i: u64) -> u8 {
    (i.wrapping_mul(31) % 251) as u8
}

async fn answer(state: &State, req: Request<Incoming>) -> Result<Response<Body>, std::io::Error> {
    let path = req.uri().path().to_string();
    let behavior = if path == "/health" {
        state.health_hits.fetch_add(1, Ordering::SeqCst);
        state.health.lock().unwrap().clone()
    } else {
        state.hits.fetch_add(1, Ordering::SeqCst);
        *state.last_headers.lock().unwrap() = Some(req.headers().clone());
        state.behavior.lock().unwrap().clone()
    };
    match behavior {
        Behavior::Ok => {}
        Behavior::Status(s) => return Ok(named(state, s)),
        Behavior::Delay(d) => tokio::time::sleep(d).await,
        Behavior::Stall => std::future::pending::<()>().await,
        Behavior::Reset => return Err(std::io::Error::other("test upstream resets this connection")),
        Behavior::RetryAfter(s, secs) => {
            let mut r = named(state, s);
            r.headers_mut().insert("retry-after", secs.to_string().parse().unwrap());
            return Ok(r);
        }
    }
    if path == "/echo" {
        let mut hasher = Sha256::new();
        let mut len = 0u64;
        let mut body = req.into_body();
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(std::io::Error::other)?;
            if let Some(d) = frame.data_ref() {
                len += d.len() as u64;
                hasher.update(d);
            }
        }
        let mut r = Response::new(full(format!("{len} {}", hex::encode(hasher.finalize()))));
        r.headers_mut().insert("x-node", state.name.parse().unwrap());
        return Ok(r);
    }
    if let Some(n) = path.strip_prefix("/bytes/").and_then(|n| n.parse::<u64>().ok()) {
        const CHUNK: u64 = 64 * 1024;
        let chunks = (0..n.div_ceil(CHUNK)).map(move |c| {
            let start = c * CHUNK;
            let end = (start + CHUNK).min(n);
            let data: Vec<u8> = (start..end).map(pattern_byte).collect();
            Ok::<_, Infallible>(Frame::data(Bytes::from(data)))
        });
        let body = StreamBody::new(futures_util::stream::iter(chunks));
        let mut r = Response::new(BodyExt::boxed(body));
        r.headers_mut().insert("x-node", state.name.parse().unwrap());
        r.headers_mut().insert("content-length", n.to_string().parse().unwrap());
        return Ok(r);
    }
    Ok(named(state, 200))
}
