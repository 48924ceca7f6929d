//! Certificate selection by SNI: exact names, then `*.` wildcards (one label, as
//! RFC 6125 says), then the default certificate (the first one configured), which
//! also answers clients that send no SNI or a name no certificate claims.

use std::collections::HashMap;
use std::sync::Arc;

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

/// Picks a certificate per handshake. Immutable: a reload builds a new one (and a
/// new `ServerConfig` around it), so a swap affects only new handshakes.
#[derive(Debug)]
pub struct SniResolver {
    exact: HashMap<String, Arc<CertifiedKey>>,
    /// Keyed by the part after `*.`.
    wildcard: HashMap<String, Arc<CertifiedKey>>,
    default: Arc<CertifiedKey>,
}

impl SniResolver {
    /// A resolver answering `default` when no name matches.
    pub fn new(default: Arc<CertifiedKey>) -> Self {
        Self {
            exact: HashMap::new(),
            wildcard: HashMap::new(),
            default,
        }
    }

    /// Serves `key` for `name` (lower case; `*.suffix` for a wildcard). The first
    /// certificate to claim a name keeps it; returns false for a later claim.
    pub fn add(&mut self, name: &str, key: &Arc<CertifiedKey>) -> bool {
        let (map, name) = match name.strip_prefix("*.") {
            Some(suffix) => (&mut self.wildcard, suffix),
            None => (&mut self.exact, name),
        };
        if map.contains_key(name) {
            return false;
        }
        map.insert(name.to_string(), key.clone());
        true
    }

    /// The certificate for a server name (`None`: no SNI sent).
    pub fn pick(&self, server_name: Option<&str>) -> &Arc<CertifiedKey> {
        let Some(name) = server_name else {
            return &self.default;
        };
        let lower;
        let name = if name.bytes().any(|b| b.is_ascii_uppercase()) {
            lower = name.to_ascii_lowercase();
            lower.as_str()
        } else {
            name
        };
        if let Some(k) = self.exact.get(name) {
            return k;
        }
        name.split_once('.')
            .and_then(|(_, parent)| self.wildcard.get(parent))
            .unwrap_or(&self.default)
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, client_hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.pick(client_hello.server_name()).clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::pki_types::CertificateDer;

    fn key(tag: u8) -> Arc<CertifiedKey> {
        #[derive(Debug)]
        struct NoKey;
        impl rustls::sign::SigningKey for NoKey {
            fn choose_scheme(&self, _: &[rustls::SignatureScheme]) -> Option<Box<dyn rustls::sign::Signer>> {
                None
            }
            fn algorithm(&self) -> rustls::SignatureAlgorithm {
                rustls::SignatureAlgorithm::ED25519
            }
        }
        Arc::new(CertifiedKey::new(
            vec![CertificateDer::from(vec![tag])],
            Arc::new(NoKey),
        ))
    }

    fn tag(k: &Arc<CertifiedKey>) -> u8 {
        k.cert[0].as_ref()[0]
    }

    #[test]
    fn exact_then_wildcard_then_default() {
        let mut r = SniResolver::new(key(0));
        assert!(r.add("api.example.com", &key(1)));
        assert!(r.add("*.example.com", &key(2)));
        assert!(!r.add("api.example.com", &key(3)), "the first claim keeps a name");
        assert_eq!(tag(r.pick(Some("api.example.com"))), 1);
        assert_eq!(tag(r.pick(Some("API.Example.COM"))), 1);
        assert_eq!(tag(r.pick(Some("web.example.com"))), 2);
        // A wildcard covers one label only, and not the bare parent.
        assert_eq!(tag(r.pick(Some("a.b.example.com"))), 0);
        assert_eq!(tag(r.pick(Some("example.com"))), 0);
        assert_eq!(tag(r.pick(Some("other.test"))), 0);
        assert_eq!(tag(r.pick(None)), 0);
    }
}
