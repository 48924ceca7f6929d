//! The TLS step of a proxy connection: the handshake (bounded by the listener's
//! handshake timeout), the verified client identity, and the per-request service
//! that carries that identity as a header.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;

use http::header::HeaderValue;
use http::{HeaderName, Request, Response};
use hyper::body::Incoming;
use hyper::service::{Service, service_fn};
use tokio::net::TcpStream;
use tokio_rustls::server::TlsStream;

use crate::config::model::CLIENT_CERT_HEADER;
use crate::proxy::body::Body;
use crate::tls::{ListenerTls, pem};

/// Completes the TLS handshake of an accepted connection. Returns the stream and
/// the verified client certificate's subject (mTLS listeners), or `None` when the
/// handshake failed or took longer than the listener's handshake timeout (counted
/// in `gatehouse_tls_handshake_failures_total`).
pub async fn accept(
    tls: &ListenerTls,
    stream: TcpStream,
    remote: SocketAddr,
) -> Option<(TlsStream<TcpStream>, Option<HeaderValue>)> {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls.config());
    let stream = match tokio::time::timeout(tls.handshake_timeout(), acceptor.accept(stream)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            tracing::debug!(client = %remote, error = %e, "TLS handshake failed");
            tls.handshake_failed();
            return None;
        }
        Err(_) => {
            tracing::debug!(client = %remote, "TLS handshake timed out");
            tls.handshake_failed();
            return None;
        }
    };
    let identity = stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|chain| chain.first())
        .and_then(pem::subject_of)
        .and_then(|subject| HeaderValue::from_str(&subject).ok());
    Some((stream, identity))
}

/// The hyper service of one connection: removes any client-sent
/// `x-client-cert-subject` (it cannot be forged) and sets it to the verified
/// subject when there is one, then calls `handler`.
pub fn service<F, Fut>(
    handler: F,
    remote: SocketAddr,
    identity: Option<HeaderValue>,
) -> impl Service<Request<Incoming>, Response = Response<Body>, Error = Infallible, Future: Send + 'static>
+ Clone
+ Send
+ 'static
where
    F: Fn(Request<Incoming>, SocketAddr) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<Body>> + Send + 'static,
{
    service_fn(move |mut req: Request<Incoming>| {
        let headers = req.headers_mut();
        match &identity {
            Some(id) => {
                headers.insert(IDENTITY, id.clone());
            }
            None => {
                headers.remove(IDENTITY);
            }
        }
        let fut = handler(req, remote);
        async move { Ok::<_, Infallible>(fut.await) }
    })
}

const IDENTITY: HeaderName = HeaderName::from_static(CLIENT_CERT_HEADER);
