//! One listener's `rustls::ServerConfig`: certificates by SNI, ALPN `h2` and
//! `http/1.1`, protocol versions, resumption, optional client certificates.

use std::sync::Arc;

use rustls::ServerConfig;
use rustls::crypto::CryptoProvider;
use rustls::server::{NoServerSessionStorage, ProducesTickets, StoresServerSessions, WebPkiClientVerifier};

use super::pem::{self, LoadedCert};
use super::resolver::SniResolver;
use crate::config::ConfigError;
use crate::config::model::{TlsSettings, TlsVersion};

/// Resumption state of one listener, created once per process and kept across
/// reloads (a new ticketer per reload would void every ticket handed out).
#[derive(Debug, Clone)]
pub struct Resumption {
    /// Stateless tickets (rotating keys, 12 h).
    pub ticketer: Arc<dyn ProducesTickets>,
    /// Stateful session cache (TLS 1.2 session IDs; TLS 1.3 without tickets).
    pub cache: Arc<dyn StoresServerSessions>,
}

impl Resumption {
    /// Fresh ticket keys and an empty cache.
    pub fn new() -> Result<Self, rustls::Error> {
        Ok(Self {
            ticketer: rustls::crypto::ring::Ticketer::new()?,
            cache: rustls::server::ServerSessionMemoryCache::new(4096),
        })
    }
}

/// A server config with what was loaded for it.
#[derive(Debug)]
pub struct Built {
    /// What new handshakes use.
    pub config: Arc<ServerConfig>,
    /// The certificates in file order.
    pub certs: Vec<LoadedCert>,
}

/// Loads every file of `settings` and builds the config. Every problem is reported
/// with the key path of its field (`gateway.tls.certificates[1].key`).
pub fn build(
    settings: &TlsSettings,
    provider: &Arc<CryptoProvider>,
    resumption: &Resumption,
    now: i64,
) -> Result<Built, Vec<ConfigError>> {
    let mut errors = Vec::new();
    let mut certs = Vec::new();
    for c in &settings.certificates {
        match pem::load_pair(c, provider, now) {
            Ok(l) => certs.push(l),
            Err(e) => errors.push(ConfigError::new(format!("{}.{}", c.key_path, e.field), e.to_string())),
        }
    }
    let verifier = match &settings.client_auth {
        None => None,
        Some(auth) => {
            let path = format!("{}.client_ca", settings.key_path);
            let built = pem::load_roots(&auth.ca_file)
                .map_err(|e| e.to_string())
                .and_then(|roots| {
                    let b = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone());
                    let b = if auth.required { b } else { b.allow_unauthenticated() };
                    b.build().map_err(|e| format!("{}: {e}", auth.ca_file.display()))
                });
            match built {
                Ok(v) => Some(v),
                Err(e) => {
                    errors.push(ConfigError::new(path, e));
                    None
                }
            }
        }
    };
    if !errors.is_empty() {
        return Err(errors);
    }
    let Some(first) = certs.first() else {
        return Err(vec![ConfigError::new(
            format!("{}.certificates", settings.key_path),
            "at least one certificate is needed",
        )]);
    };
    let mut resolver = SniResolver::new(first.key.clone());
    for (c, loaded) in settings.certificates.iter().zip(&certs) {
        let names = if c.snis.is_empty() {
            &loaded.details.dns_names
        } else {
            &c.snis
        };
        for name in names {
            resolver.add(name, &loaded.key);
        }
    }
    let versions: &[&rustls::SupportedProtocolVersion] = match settings.min_version {
        TlsVersion::Tls12 => &[&rustls::version::TLS13, &rustls::version::TLS12],
        TlsVersion::Tls13 => &[&rustls::version::TLS13],
    };
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(versions)
        .map_err(|e| {
            vec![ConfigError::new(
                format!("{}.min_version", settings.key_path),
                e.to_string(),
            )]
        })?;
    let mutual = verifier.is_some();
    let builder = match verifier {
        Some(v) => builder.with_client_cert_verifier(v),
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_cert_resolver(Arc::new(resolver));
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    if mutual {
        // Every connection proves its certificate again (no resumption past a
        // revocation or a CA change).
        config.session_storage = Arc::new(NoServerSessionStorage {});
        config.send_tls13_tickets = 0;
    } else {
        config.session_storage = resumption.cache.clone();
        if settings.session_tickets {
            config.ticketer = resumption.ticketer.clone();
        }
    }
    Ok(Built {
        config: Arc::new(config),
        certs,
    })
}

/// Checks the files of `settings` without serving them: the errors, and a warning
/// for each certificate that expires within `warn_within` seconds of `now`.
pub fn check(
    settings: &TlsSettings,
    provider: &Arc<CryptoProvider>,
    now: i64,
    warn_within: i64,
) -> Result<Vec<String>, Vec<ConfigError>> {
    let resumption = Resumption::new().map_err(|e| vec![ConfigError::new(&settings.key_path, e.to_string())])?;
    let built = build(settings, provider, &resumption, now)?;
    Ok(settings
        .certificates
        .iter()
        .zip(&built.certs)
        .filter(|(_, l)| l.details.not_after - now < warn_within)
        .map(|(c, l)| {
            format!(
                "{}.cert: {} expires in {} days ({})",
                c.key_path,
                c.cert.display(),
                (l.details.not_after - now) / 86_400,
                pem::http_date(l.details.not_after)
            )
        })
        .collect())
}
