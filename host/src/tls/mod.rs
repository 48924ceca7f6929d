//! TLS: certificates by SNI with hot reload, client-certificate verification, and
//! the status and metrics of what is served (`docs/tls.md`).
//!
//! The crypto provider is *ring* (the smaller C build; no cmake, no clang). Every
//! TLS listener keeps its current `rustls::ServerConfig` in an [`ArcSwap`]: a
//! reload builds the next one from the files (all or nothing; a broken or
//! mismatched pair is a config error with its key path and the old config keeps
//! serving) and swaps it in, so only new handshakes see it. Resumption state is
//! made once per listener and survives reloads.

pub mod client;
pub mod metrics;
pub mod pem;
pub mod resolver;
pub mod server;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use arc_swap::ArcSwap;
use rustls::ServerConfig;
use rustls::crypto::CryptoProvider;
use serde::Serialize;

use crate::config::model::{Listener, TlsSettings, UpstreamTls};
use crate::config::{Config, ConfigError};
use server::Resumption;

/// Certificates expiring within this many seconds draw a warning from `validate`.
pub const EXPIRY_WARNING: i64 = 14 * 86_400;

/// The process's crypto provider (ring). rustls 0.23.48 marks ring's provider
/// deprecated because it has no post-quantum key exchange; we keep it for its
/// build (a C compiler only) until a PQ or FIPS requirement moves us to aws-lc-rs.
#[allow(deprecated)]
pub fn provider() -> &'static Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    PROVIDER.get_or_init(|| Arc::new(rustls::crypto::ring::default_provider()))
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Checks the TLS files of a config: every listener's (exist, parse, key matches,
/// not expired) and every upstream's (CA, client certificate). Returns warnings
/// for certificates that expire within 14 days.
pub fn check(config: &Config) -> Result<Vec<String>, Vec<ConfigError>> {
    let now = unix_now();
    let mut warnings = Vec::new();
    let mut errors = Vec::new();
    for tls in config.gateway.listeners.iter().filter_map(|l| l.tls.as_deref()) {
        match server::check(tls, provider(), now, EXPIRY_WARNING) {
            Ok(w) => warnings.extend(w),
            Err(e) => errors.extend(e),
        }
    }
    for tls in upstream_tls(config) {
        if let Err(e) = client::UpstreamConnector::build(tls) {
            errors.extend(e);
        }
    }
    if errors.is_empty() { Ok(warnings) } else { Err(errors) }
}

/// The upstream TLS settings of every service version.
pub fn upstream_tls(config: &Config) -> impl Iterator<Item = &UpstreamTls> {
    config
        .services
        .values()
        .flat_map(|s| s.versions.iter())
        .filter_map(|v| v.upstream.tls.as_deref())
}

/// Every file a config's TLS settings read (listeners and upstreams), for watching.
pub fn files(config: &Config) -> Vec<std::path::PathBuf> {
    let mut files: Vec<_> = config
        .gateway
        .listeners
        .iter()
        .filter_map(|l| l.tls.as_ref())
        .flat_map(|t| t.files())
        .chain(upstream_tls(config).flat_map(UpstreamTls::files))
        .collect();
    files.sort();
    files.dedup();
    files
}

/// One served certificate, for `/admin/v1/certificates`.
#[derive(Debug, Clone, Serialize)]
pub struct CertificateStatus {
    /// Listener address.
    pub listener: SocketAddr,
    /// Key path of the entry (`gateway.tls.certificates[0]`).
    pub key_path: String,
    /// Certificate file.
    pub cert: String,
    /// Key file.
    pub key: String,
    /// Names it is selected for (`snis`, else the SAN's DNS names).
    pub names: Vec<String>,
    /// Whether it answers clients without (or with an unknown) SNI.
    pub default: bool,
    /// Subject of the leaf.
    pub subject: String,
    /// Issuer of the leaf.
    pub issuer: String,
    /// End of validity (HTTP date).
    pub not_after: String,
    /// End of validity, Unix seconds.
    pub not_after_unix: i64,
    /// Seconds until it expires (negative once expired).
    pub expires_in_seconds: i64,
}

/// What one TLS listener serves now.
#[derive(Debug)]
struct Served {
    config: Arc<ServerConfig>,
    certs: Vec<(crate::config::model::CertificateFiles, pem::CertDetails)>,
    handshake_timeout: Duration,
}

/// The TLS side of one listener.
#[derive(Debug)]
pub struct ListenerTls {
    addr: SocketAddr,
    served: ArcSwap<Served>,
    resumption: Resumption,
    /// Handshakes that failed or timed out.
    pub handshake_failures: AtomicU64,
}

impl ListenerTls {
    /// The config for the next handshake.
    pub fn config(&self) -> Arc<ServerConfig> {
        self.served.load().config.clone()
    }

    /// Time a client may take to complete the handshake.
    pub fn handshake_timeout(&self) -> Duration {
        self.served.load().handshake_timeout
    }

    /// Counts a failed handshake.
    pub fn handshake_failed(&self) {
        self.handshake_failures.fetch_add(1, Ordering::Relaxed);
    }

    fn build(&self, settings: &TlsSettings, now: i64) -> Result<Served, Vec<ConfigError>> {
        let built = server::build(settings, provider(), &self.resumption, now)?;
        Ok(Served {
            config: built.config,
            certs: settings
                .certificates
                .iter()
                .cloned()
                .zip(built.certs.into_iter().map(|c| c.details))
                .collect(),
            handshake_timeout: settings.handshake_timeout,
        })
    }
}

/// The TLS state of every proxy listener, by listener index.
#[derive(Debug, Default)]
pub struct TlsRuntime {
    listeners: Vec<Option<Arc<ListenerTls>>>,
}

impl TlsRuntime {
    /// Loads the TLS files of `listeners` (as bound: index i is listener i).
    pub fn start(listeners: &[Listener]) -> Result<Self, Vec<ConfigError>> {
        let now = unix_now();
        let mut out = Vec::with_capacity(listeners.len());
        let mut errors = Vec::new();
        for l in listeners {
            let Some(settings) = &l.tls else {
                out.push(None);
                continue;
            };
            let resumption =
                Resumption::new().map_err(|e| vec![ConfigError::new(&settings.key_path, e.to_string())])?;
            let placeholder = ListenerTls {
                addr: l.addr,
                served: ArcSwap::from_pointee(Served {
                    config: Arc::new(empty_config()),
                    certs: Vec::new(),
                    handshake_timeout: settings.handshake_timeout,
                }),
                resumption,
                handshake_failures: AtomicU64::new(0),
            };
            match placeholder.build(settings, now) {
                Ok(s) => placeholder.served.store(Arc::new(s)),
                Err(e) => errors.extend(e),
            }
            out.push(Some(Arc::new(placeholder)));
        }
        if errors.is_empty() {
            Ok(Self { listeners: out })
        } else {
            Err(errors)
        }
    }

    /// The TLS side of listener `index`, if it is a TLS listener.
    pub fn listener(&self, index: usize) -> Option<Arc<ListenerTls>> {
        self.listeners.get(index).cloned().flatten()
    }

    /// Serves the TLS settings of a new config: all listeners' files load, or none
    /// is replaced. A listener that was bound without TLS stays plain (and the
    /// reverse) until a restart.
    pub fn update(&self, listeners: &[Listener]) -> Result<(), Vec<ConfigError>> {
        let now = unix_now();
        let mut next = Vec::new();
        let mut errors = Vec::new();
        for (running, l) in self.listeners.iter().zip(listeners) {
            if let (Some(running), Some(settings)) = (running, &l.tls) {
                match running.build(settings, now) {
                    Ok(s) => next.push((running, s)),
                    Err(e) => errors.extend(e),
                }
            }
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        for (running, served) in next {
            running.served.store(Arc::new(served));
        }
        Ok(())
    }

    /// Every served certificate.
    pub fn certificates(&self) -> Vec<CertificateStatus> {
        let now = unix_now();
        let mut out = Vec::new();
        for l in self.listeners.iter().flatten() {
            let served = l.served.load();
            for (i, (files, d)) in served.certs.iter().enumerate() {
                out.push(CertificateStatus {
                    listener: l.addr,
                    key_path: files.key_path.clone(),
                    cert: files.cert.display().to_string(),
                    key: files.key.display().to_string(),
                    names: if files.snis.is_empty() {
                        d.dns_names.clone()
                    } else {
                        files.snis.clone()
                    },
                    default: i == 0,
                    subject: d.subject.clone(),
                    issuer: d.issuer.clone(),
                    not_after: pem::http_date(d.not_after),
                    not_after_unix: d.not_after,
                    expires_in_seconds: d.not_after - now,
                });
            }
        }
        out
    }

    /// Handshake failures per TLS listener.
    pub fn handshake_failures(&self) -> Vec<(SocketAddr, u64)> {
        self.listeners
            .iter()
            .flatten()
            .map(|l| (l.addr, l.handshake_failures.load(Ordering::Relaxed)))
            .collect()
    }
}

/// A config that refuses every handshake (no certificate); replaced before use.
fn empty_config() -> ServerConfig {
    #[derive(Debug)]
    struct Nothing;
    impl rustls::server::ResolvesServerCert for Nothing {
        fn resolve(&self, _: rustls::server::ClientHello<'_>) -> Option<Arc<rustls::sign::CertifiedKey>> {
            None
        }
    }
    ServerConfig::builder_with_provider(provider().clone())
        .with_safe_default_protocol_versions()
        .expect("ring supports the default versions")
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(Nothing))
}
