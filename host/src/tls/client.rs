//! TLS to upstream nodes (`upstream.scheme: https`): one `rustls::ClientConfig`
//! per upstream policy, shared by its endpoints; the server name is the `sni`
//! setting or the node's host.

use std::hash::{Hash, Hasher};
use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, SignatureScheme};

use super::pem;
use crate::config::ConfigError;
use crate::config::model::UpstreamTls;

/// What connections to one upstream's nodes use.
#[derive(Debug)]
pub struct UpstreamConnector {
    /// The client config (roots, verification, client certificate, ALPN http/1.1).
    pub config: Arc<ClientConfig>,
    sni: Option<ServerName<'static>>,
    /// Identifies these settings, so pooled connections made under other settings
    /// are never reused for them.
    pub kind: u64,
}

impl UpstreamConnector {
    /// Reads the files of `settings` and builds the connector.
    pub fn build(settings: &UpstreamTls) -> Result<Self, Vec<ConfigError>> {
        let provider = super::provider();
        let at = |field: &str| format!("{}.{field}", settings.key_path);
        let mut errors = Vec::new();
        let roots = match &settings.ca_file {
            Some(f) => pem::load_roots(f)
                .map_err(|e| errors.push(ConfigError::new(at("ca_file"), e.to_string())))
                .ok(),
            None => Some(rustls::RootCertStore {
                roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
            }),
        };
        let identity = settings.client_identity.as_ref().and_then(|(cert, key)| {
            let chain =
                pem::read_certs(cert).map_err(|e| errors.push(ConfigError::new(at("client_cert"), e.to_string())));
            let key = pem::read_key(key).map_err(|e| errors.push(ConfigError::new(at("client_key"), e.to_string())));
            Some((chain.ok()?, key.ok()?))
        });
        let (Some(roots), true) = (roots, errors.is_empty()) else {
            return Err(errors);
        };
        let verifier: Arc<dyn ServerCertVerifier> = if settings.verify {
            WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                .build()
                .map_err(|e| vec![ConfigError::new(at("ca_file"), e.to_string())])?
        } else {
            Arc::new(NoVerification(provider.clone()))
        };
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| vec![ConfigError::new(&settings.key_path, e.to_string())])?
            .dangerous()
            .with_custom_certificate_verifier(verifier);
        let mut config = match identity {
            Some((chain, key)) => builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| vec![ConfigError::new(at("client_key"), e.to_string())])?,
            None => builder.with_no_client_auth(),
        };
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        let sni = match &settings.sni {
            Some(name) => {
                Some(ServerName::try_from(name.clone()).map_err(|e| vec![ConfigError::new(at("sni"), e.to_string())])?)
            }
            None => None,
        };
        let mut h = std::collections::hash_map::DefaultHasher::new();
        settings.hash(&mut h);
        Ok(Self {
            config: Arc::new(config),
            sni,
            kind: h.finish().max(1),
        })
    }

    /// The same settings offering ALPN `h2` only (`scheme: grpcs`, `grpc` probes),
    /// under a kind of their own.
    pub fn alpn_h2(&self) -> Arc<Self> {
        let mut config = (*self.config).clone();
        config.alpn_protocols = vec![b"h2".to_vec()];
        Arc::new(Self {
            config: Arc::new(config),
            sni: self.sni.clone(),
            kind: self.kind ^ 0x6832,
        })
    }

    /// The server name for a node whose host is `host` (a DNS name or an IP).
    pub fn server_name(&self, host: &str) -> Option<ServerName<'static>> {
        self.sni
            .clone()
            .or_else(|| ServerName::try_from(host.trim_matches(['[', ']']).to_string()).ok())
    }
}

/// The connector for an upstream's TLS settings (`None` for plain HTTP). Files
/// were checked before the config was accepted; if they broke since, the error is
/// logged and a connector that trusts nothing makes every handshake fail (502,
/// counted as a connect failure) instead of speaking plain HTTP.
pub fn connector_for(settings: Option<&UpstreamTls>) -> Option<Arc<UpstreamConnector>> {
    let settings = settings?;
    match UpstreamConnector::build(settings) {
        Ok(c) => Some(Arc::new(c)),
        Err(errors) => {
            for e in &errors {
                tracing::error!(path = %e.path, "upstream TLS unusable: {}", e.message);
            }
            let trusting_nothing = UpstreamTls {
                verify: true,
                ca_file: None,
                sni: settings.sni.clone(),
                client_identity: None,
                key_path: settings.key_path.clone(),
            };
            let mut c = UpstreamConnector::build(&trusting_nothing).ok()?;
            let config = ClientConfig::builder_with_provider(super::provider().clone())
                .with_safe_default_protocol_versions()
                .ok()?
                .with_root_certificates(rustls::RootCertStore::empty())
                .with_no_client_auth();
            c.config = Arc::new(config);
            Some(Arc::new(c))
        }
    }
}

/// `verify: false`: any certificate is accepted (the handshake signatures are still
/// checked, so the peer holds the key of the certificate it sent).
#[derive(Debug)]
struct NoVerification(Arc<CryptoProvider>);

impl ServerCertVerifier for NoVerification {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
