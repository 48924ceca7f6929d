//! The pooled keep-alive HTTP/1.1 client used to reach upstream nodes.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

/// Boxed error used by bodies.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// The body type sent upstream and back to clients.
pub type Body = UnsyncBoxBody<Bytes, BoxError>;

/// Idle upstream connections are closed after this long.
pub const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(90);
/// Idle connections kept per upstream node.
pub const POOL_MAX_IDLE_PER_HOST: usize = 512;

/// A cheap-to-clone pooled client with one connect timeout.
#[derive(Clone, Debug)]
pub struct UpstreamClient {
    inner: Client<HttpConnector, Body>,
}

impl UpstreamClient {
    /// A client whose new connections time out after `connect_timeout`.
    pub fn new(connect_timeout: Duration) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(connect_timeout));
        connector.set_nodelay(true);
        connector.enforce_http(true);
        connector.set_keepalive(Some(Duration::from_secs(60)));
        let inner = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
            .pool_max_idle_per_host(POOL_MAX_IDLE_PER_HOST)
            .pool_timer(hyper_util::rt::TokioTimer::new())
            .build(connector);
        Self { inner }
    }

    /// The underlying hyper client.
    pub fn inner(&self) -> &Client<HttpConnector, Body> {
        &self.inner
    }
}
