//! TLS for tests: a CA that issues server and client certificates (ECDSA P-256,
//! Ed25519 or RSA keys, chosen validity), and a TLS client (HTTP/1.1 or HTTP/2 by
//! ALPN) that reports what the handshake negotiated and which certificate it saw.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use http::{Request, Version};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use rustls::ClientConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

/// Key algorithm of an issued certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    /// ECDSA P-256.
    Ecdsa,
    /// Ed25519.
    Ed25519,
    /// RSA 2048 (generated with the `openssl` CLI; ring cannot generate RSA keys).
    Rsa,
}

/// A certificate and its key, as PEM.
#[derive(Debug, Clone)]
pub struct Issued {
    /// Certificate PEM (leaf, then the chain when there is one).
    pub cert_pem: String,
    /// Private key PEM.
    pub key_pem: String,
    /// DER of the leaf (to compare with what a client saw).
    pub der: Vec<u8>,
}

impl Issued {
    /// Writes `name.pem` and `name.key` into `dir`; returns both paths.
    pub fn write(&self, dir: &Path, name: &str) -> (PathBuf, PathBuf) {
        let cert = dir.join(format!("{name}.pem"));
        let key = dir.join(format!("{name}.key"));
        std::fs::write(&cert, &self.cert_pem).unwrap();
        std::fs::write(&key, &self.key_pem).unwrap();
        (cert, key)
    }
}

/// A test certificate authority.
pub struct Ca {
    issuer: Issuer<'static, KeyPair>,
    /// The CA certificate, PEM.
    pub pem: String,
}

impl std::fmt::Debug for Ca {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ca").finish_non_exhaustive()
    }
}

fn key_pair(kind: KeyKind) -> KeyPair {
    match kind {
        KeyKind::Ecdsa => KeyPair::generate().unwrap(),
        KeyKind::Ed25519 => KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap(),
        KeyKind::Rsa => {
            let out = std::process::Command::new("openssl")
                .args(["genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"])
                .output()
                .expect("openssl runs");
            assert!(out.status.success(), "openssl genpkey failed");
            let pem = String::from_utf8(out.stdout).unwrap();
            KeyPair::from_pem_and_sign_algo(&pem, &rcgen::PKCS_RSA_SHA256).unwrap()
        }
    }
}

impl Ca {
    /// A new self-signed CA named `name`.
    pub fn new(name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        Self {
            issuer: Issuer::new(params, key),
            pem: cert.pem(),
        }
    }

    /// A server certificate for `names` (SAN DNS names), valid now.
    pub fn server(&self, names: &[&str], kind: KeyKind) -> Issued {
        self.issue(names, kind, names.first().copied().unwrap_or("server"), false, |_| {})
    }

    /// A server certificate that expired in 2021.
    pub fn expired_server(&self, names: &[&str]) -> Issued {
        self.issue(names, KeyKind::Ecdsa, names[0], false, |p| {
            p.not_before = rcgen::date_time_ymd(2020, 1, 1);
            p.not_after = rcgen::date_time_ymd(2021, 1, 1);
        })
    }

    /// A server certificate valid from yesterday for `days` days.
    pub fn server_valid_for(&self, names: &[&str], days: i64) -> Issued {
        let now = time_now();
        let at = |s: i64| rcgen::date_time_ymd(1970, 1, 1) + std::time::Duration::from_secs(s as u64);
        self.issue(names, KeyKind::Ecdsa, names[0], false, |p| {
            p.not_before = at(now - 86_400);
            p.not_after = at(now + days * 86_400);
        })
    }

    /// A client certificate with common name `cn`.
    pub fn client(&self, cn: &str) -> Issued {
        self.issue(&[], KeyKind::Ecdsa, cn, true, |_| {})
    }

    fn issue(
        &self,
        names: &[&str],
        kind: KeyKind,
        cn: &str,
        client: bool,
        customize: impl FnOnce(&mut CertificateParams),
    ) -> Issued {
        let mut params = CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap();
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, cn);
        params
            .distinguished_name
            .push(DnType::OrganizationName, "Gatehouse Tests");
        params.extended_key_usages = vec![if client {
            ExtendedKeyUsagePurpose::ClientAuth
        } else {
            ExtendedKeyUsagePurpose::ServerAuth
        }];
        params.use_authority_key_identifier_extension = true;
        customize(&mut params);
        let key = key_pair(kind);
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        Issued {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            der: cert.der().to_vec(),
        }
    }
}

fn time_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// A client config trusting `ca_pem`, offering `alpn`, with an optional client
/// certificate. Resumption is off, so every connection sees the server's current
/// certificate (a resumed session shows the certificate of the first one).
pub fn client_config(ca_pem: &str, alpn: &[&[u8]], identity: Option<&Issued>) -> Arc<ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let builder = ClientConfig::builder_with_provider(gatehouse::tls::provider().clone())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots);
    let mut config = match identity {
        Some(id) => {
            let chain = CertificateDer::pem_slice_iter(id.cert_pem.as_bytes())
                .collect::<Result<Vec<_>, _>>()
                .unwrap();
            let key = PrivateKeyDer::from_pem_slice(id.key_pem.as_bytes()).unwrap();
            builder.with_client_auth_cert(chain, key).unwrap()
        }
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    config.resumption = rustls::client::Resumption::disabled();
    Arc::new(config)
}

/// `config` with rustls's default client resumption (an in-memory session store).
pub fn resuming(config: &ClientConfig) -> Arc<ClientConfig> {
    let mut config = config.clone();
    config.resumption = rustls::client::Resumption::default();
    Arc::new(config)
}

/// What one TLS request saw.
#[derive(Debug, Clone)]
pub struct TlsReply {
    /// Response status.
    pub status: u16,
    /// Response body.
    pub body: String,
    /// HTTP version of the response.
    pub version: Version,
    /// Negotiated ALPN protocol.
    pub alpn: Option<Vec<u8>>,
    /// DER of the certificate the server presented.
    pub peer_cert: Vec<u8>,
    /// Whether the session was resumed (no full handshake).
    pub resumed: bool,
}

/// Connects to `addr` with SNI `sni`, completes the handshake, and sends
/// `GET path` over HTTP/2 when ALPN chose `h2`, else HTTP/1.1. A new connection
/// per call (so each call is a fresh handshake).
pub async fn get(addr: SocketAddr, sni: &str, config: &Arc<ClientConfig>, path: &str) -> Result<TlsReply, String> {
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let connector = tokio_rustls::TlsConnector::from(config.clone());
    let name = ServerName::try_from(sni.to_string()).map_err(|e| e.to_string())?;
    let tls = connector
        .connect(name, tcp)
        .await
        .map_err(|e| format!("handshake: {e}"))?;
    let (_, session) = tls.get_ref();
    let alpn = session.alpn_protocol().map(<[u8]>::to_vec);
    let resumed = session.handshake_kind() == Some(rustls::HandshakeKind::Resumed);
    let peer_cert = session
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|c| c.to_vec())
        .unwrap_or_default();
    let req = Request::get(format!("https://{sni}{path}"))
        .header("host", sni)
        .body(Empty::<Bytes>::new())
        .unwrap();
    let io = TokioIo::new(tls);
    let resp = if alpn.as_deref() == Some(b"h2") {
        let (mut send, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
            .await
            .map_err(|e| format!("h2 handshake: {e}"))?;
        tokio::spawn(conn);
        let mut req = req;
        req.headers_mut().remove("host");
        send.send_request(req).await.map_err(|e| format!("h2 request: {e}"))?
    } else {
        let (mut send, conn) = hyper::client::conn::http1::handshake(io)
            .await
            .map_err(|e| format!("h1 handshake: {e}"))?;
        tokio::spawn(conn);
        let mut req = req;
        *req.uri_mut() = path.parse().unwrap();
        send.send_request(req).await.map_err(|e| format!("h1 request: {e}"))?
    };
    let status = resp.status().as_u16();
    let version = resp.version();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| format!("body: {e}"))?
        .to_bytes();
    Ok(TlsReply {
        status,
        body: String::from_utf8_lossy(&body).into_owned(),
        version,
        alpn,
        peer_cert,
        resumed,
    })
}

/// A real HTTPS upstream (HTTP/1.1 over TLS) answering `secure <name>` and, on
/// request, asking for a client certificate signed by `client_ca`.
#[derive(Debug)]
pub struct HttpsUpstream {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Handshakes that completed.
    pub handshakes: Arc<std::sync::atomic::AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl HttpsUpstream {
    /// Serves with `identity` on an ephemeral loopback port.
    pub async fn start(name: &str, identity: &Issued) -> Self {
        let chain = CertificateDer::pem_slice_iter(identity.cert_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .unwrap();
        let key = PrivateKeyDer::from_pem_slice(identity.key_pem.as_bytes()).unwrap();
        let config = rustls::ServerConfig::builder_with_provider(gatehouse::tls::provider().clone())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .unwrap();
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let handshakes = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let (count, body) = (handshakes.clone(), format!("secure {name}"));
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else { return };
                let (acceptor, count, body) = (acceptor.clone(), count.clone(), body.clone());
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else { return };
                    count.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let service = hyper::service::service_fn(move |_req| {
                        let body = body.clone();
                        async move {
                            Ok::<_, std::convert::Infallible>(http::Response::new(http_body_util::Full::new(
                                Bytes::from(body),
                            )))
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tls), service)
                        .await;
                });
            }
        });
        Self { addr, handshakes, task }
    }
}

impl Drop for HttpsUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}
