//! Validated listeners and their TLS settings. The files named here are read and
//! checked by the `tls` module (existence, parse, key match, expiry).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// Header the gateway sets to the verified client certificate's subject on mTLS
/// listeners (and removes from every client request, so it cannot be forged).
pub const CLIENT_CERT_HEADER: &str = "x-client-cert-subject";

/// One proxy listener.
#[derive(Debug, Clone, PartialEq)]
pub struct Listener {
    /// Address to bind.
    pub addr: SocketAddr,
    /// TLS settings; `None` for plain HTTP (HTTP/1.1 and h2c).
    pub tls: Option<Arc<TlsSettings>>,
    /// Key path of this listener in the file (`gateway` or `gateway.listeners[1]`).
    pub key_path: String,
}

/// TLS settings of one listener.
#[derive(Debug, Clone, PartialEq)]
pub struct TlsSettings {
    /// Certificates in file order; the first is the default.
    pub certificates: Vec<CertificateFiles>,
    /// Lowest protocol version accepted.
    pub min_version: TlsVersion,
    /// Client certificate verification, if on.
    pub client_auth: Option<ClientAuth>,
    /// Stateless session tickets (TLS 1.3 tickets and TLS 1.2 resumption).
    pub session_tickets: bool,
    /// Time a client may take to complete the handshake.
    pub handshake_timeout: Duration,
    /// Key path of this `tls:` section (`gateway.tls`, `gateway.listeners[1].tls`).
    pub key_path: String,
}

impl TlsSettings {
    /// Every file these settings read (certificates, keys, client CA).
    pub fn files(&self) -> Vec<PathBuf> {
        let mut out: Vec<PathBuf> = self
            .certificates
            .iter()
            .flat_map(|c| [c.cert.clone(), c.key.clone()])
            .collect();
        if let Some(c) = &self.client_auth {
            out.push(c.ca_file.clone());
        }
        out
    }
}

/// One certificate with its key.
#[derive(Debug, Clone, PartialEq)]
pub struct CertificateFiles {
    /// PEM certificate chain (leaf first).
    pub cert: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
    /// Names given in the file (lower case); empty: take them from the SAN.
    pub snis: Vec<String>,
    /// Key path of this entry (`gateway.tls.certificates[0]`).
    pub key_path: String,
}

/// A TLS protocol version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum TlsVersion {
    /// TLS 1.2
    Tls12,
    /// TLS 1.3
    Tls13,
}

/// Client certificate verification.
#[derive(Debug, Clone, PartialEq)]
pub struct ClientAuth {
    /// PEM file of the accepted client CAs.
    pub ca_file: PathBuf,
    /// Whether a client without a certificate is refused.
    pub required: bool,
}

/// The protocol spoken to an upstream's nodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Scheme {
    /// HTTP/1.1 over TCP.
    #[default]
    Http,
    /// HTTP/1.1 over TLS.
    Https,
    /// HTTP/2 over TCP with prior knowledge (h2c): gRPC and other HTTP/2 nodes.
    Grpc,
    /// HTTP/2 over TLS (ALPN `h2`).
    Grpcs,
}

impl Scheme {
    /// Whether connections to the nodes use TLS.
    pub fn tls(self) -> bool {
        matches!(self, Scheme::Https | Scheme::Grpcs)
    }

    /// Whether the nodes speak HTTP/2.
    pub fn http2(self) -> bool {
        matches!(self, Scheme::Grpc | Scheme::Grpcs)
    }
}

/// TLS to an upstream's nodes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct UpstreamTls {
    /// Verify the node's certificate chain and name.
    pub verify: bool,
    /// Trusted CAs (`None`: the Mozilla roots).
    pub ca_file: Option<PathBuf>,
    /// Server name to send and verify (`None`: the node's host).
    pub sni: Option<String>,
    /// Client certificate and key presented to the nodes.
    pub client_identity: Option<(PathBuf, PathBuf)>,
    /// Key path of this section (`services[0].versions[0].upstream.tls`).
    pub key_path: String,
}

impl UpstreamTls {
    /// Every file these settings read.
    pub fn files(&self) -> Vec<PathBuf> {
        let mut out: Vec<PathBuf> = self.ca_file.iter().cloned().collect();
        if let Some((c, k)) = &self.client_identity {
            out.push(c.clone());
            out.push(k.clone());
        }
        out
    }
}
