//! Reading certificate and key files: PEM chains, RSA/ECDSA/Ed25519 keys, the
//! check that a key belongs to its certificate, and what a certificate says about
//! itself (names, subject, validity).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::RootCertStore;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;

use crate::config::model::CertificateFiles;

/// Why a certificate, key or CA file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum PemError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The file is not PEM of the expected kind.
    #[error("{path} holds no usable {what}: {detail}")]
    Pem {
        /// The file.
        path: PathBuf,
        /// `certificate` or `private key`.
        what: &'static str,
        /// The parser's complaint.
        detail: String,
    },
    /// The leaf certificate is not valid X.509.
    #[error("{path}: the certificate cannot be parsed: {detail}")]
    X509 {
        /// The file.
        path: PathBuf,
        /// The parser's complaint.
        detail: String,
    },
    /// The key is not a key rustls can sign with (RSA, ECDSA P-256/P-384, Ed25519).
    #[error("{path}: unsupported private key: {source}")]
    Key {
        /// The key file.
        path: PathBuf,
        /// The cause.
        source: rustls::Error,
    },
    /// The key does not belong to the certificate.
    #[error("the key in {key} does not match the certificate in {cert}")]
    Mismatch {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
    },
    /// The certificate's validity ended.
    #[error("{path}: the certificate expired at {not_after}")]
    Expired {
        /// The file.
        path: PathBuf,
        /// When it expired (HTTP date).
        not_after: String,
    },
    /// A CA file holds a certificate that cannot be a trust anchor.
    #[error("{path}: not a usable CA certificate: {source}")]
    Anchor {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: rustls::Error,
    },
}

/// A [`PemError`] with the field of a `certificates[]` entry it belongs to.
#[derive(Debug, thiserror::Error)]
#[error("{error}")]
pub struct PairError {
    /// `cert` or `key`.
    pub field: &'static str,
    /// What is wrong.
    pub error: PemError,
}

fn at(field: &'static str) -> impl FnOnce(PemError) -> PairError {
    move |error| PairError { field, error }
}

/// What a leaf certificate says about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertDetails {
    /// Subject distinguished name (`CN=api.example.com, O=...`).
    pub subject: String,
    /// Issuer distinguished name.
    pub issuer: String,
    /// DNS names of the subject alternative names, lower case.
    pub dns_names: Vec<String>,
    /// Start of validity, seconds since the Unix epoch.
    pub not_before: i64,
    /// End of validity, seconds since the Unix epoch.
    pub not_after: i64,
}

/// A certificate with its key, checked, ready to serve.
#[derive(Debug, Clone)]
pub struct LoadedCert {
    /// What rustls serves.
    pub key: Arc<CertifiedKey>,
    /// The leaf's details.
    pub details: CertDetails,
}

/// Reads every certificate of a PEM file (a leaf and its chain, or CAs).
pub fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, PemError> {
    let bytes = read(path)?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| PemError::Pem {
            path: path.to_path_buf(),
            what: "certificate",
            detail: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(PemError::Pem {
            path: path.to_path_buf(),
            what: "certificate",
            detail: "no CERTIFICATE block".to_string(),
        });
    }
    Ok(certs)
}

fn read(path: &Path) -> Result<Vec<u8>, PemError> {
    std::fs::read(path).map_err(|source| PemError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// Reads the private key of a PEM file (PKCS#8, PKCS#1 RSA or SEC1 EC).
pub fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, PemError> {
    let bytes = read(path)?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| PemError::Pem {
        path: path.to_path_buf(),
        what: "private key",
        detail: e.to_string(),
    })
}

/// Parses a DER certificate's details.
pub fn details(der: &CertificateDer<'_>, path: &Path) -> Result<CertDetails, PemError> {
    use x509_parser::prelude::*;
    let (_, cert) = X509Certificate::from_der(der.as_ref()).map_err(|e| PemError::X509 {
        path: path.to_path_buf(),
        detail: e.to_string(),
    })?;
    let dns_names = match cert.subject_alternative_name() {
        Ok(Some(san)) => san
            .value
            .general_names
            .iter()
            .filter_map(|n| match n {
                GeneralName::DNSName(d) => Some(d.to_ascii_lowercase()),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    };
    Ok(CertDetails {
        subject: cert.subject().to_string(),
        issuer: cert.issuer().to_string(),
        dns_names,
        not_before: cert.validity().not_before.timestamp(),
        not_after: cert.validity().not_after.timestamp(),
    })
}

/// The subject of a DER certificate (a verified client certificate), if it parses.
pub fn subject_of(der: &CertificateDer<'_>) -> Option<String> {
    use x509_parser::prelude::*;
    let (_, cert) = X509Certificate::from_der(der.as_ref()).ok()?;
    Some(cert.subject().to_string())
}

/// Loads one `certificates[]` entry: reads both files, checks that the key belongs
/// to the leaf and that the leaf has not expired at `now` (Unix seconds).
pub fn load_pair(files: &CertificateFiles, provider: &CryptoProvider, now: i64) -> Result<LoadedCert, PairError> {
    let chain = read_certs(&files.cert).map_err(at("cert"))?;
    let details = details(&chain[0], &files.cert).map_err(at("cert"))?;
    let key_der = read_key(&files.key).map_err(at("key"))?;
    let signing = provider
        .key_provider
        .load_private_key(key_der)
        .map_err(|source| PemError::Key {
            path: files.key.clone(),
            source,
        })
        .map_err(at("key"))?;
    let key = CertifiedKey::new(chain, signing);
    let mismatch = || PairError {
        field: "key",
        error: PemError::Mismatch {
            cert: files.cert.clone(),
            key: files.key.clone(),
        },
    };
    // ring's keys all know their public half, so `Unknown` cannot prove a match either.
    key.keys_match().map_err(|_| mismatch())?;
    if details.not_after < now {
        return Err(at("cert")(PemError::Expired {
            path: files.cert.clone(),
            not_after: http_date(details.not_after),
        }));
    }
    Ok(LoadedCert {
        key: Arc::new(key),
        details,
    })
}

/// Reads a CA file into a root store.
pub fn load_roots(path: &Path) -> Result<RootCertStore, PemError> {
    let mut roots = RootCertStore::empty();
    for cert in read_certs(path)? {
        roots.add(cert).map_err(|source| PemError::Anchor {
            path: path.to_path_buf(),
            source,
        })?;
    }
    Ok(roots)
}

/// Seconds since the Unix epoch as an HTTP date (`Sun, 06 Dec 2026 01:00:00 GMT`).
pub fn http_date(secs: i64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs.max(0) as u64);
    httpdate::fmt_http_date(t)
}
