//! `gateway.listen` + `gateway.tls`, or `gateway.listeners`: addresses and the shape
//! of TLS settings. The certificate files themselves are checked by `crate::tls`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use super::{Overrides, Validator, defaults, dur};
use crate::config::model::{CertificateFiles, ClientAuth, Listener, Scheme, TlsSettings, TlsVersion, UpstreamTls};
use crate::config::raw::{RawGateway, RawTls, RawUpstream};

/// Default time a client may take to complete a TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

impl Validator {
    /// The proxy listeners: `listeners` when given, else `listen` with `tls`.
    /// Returns the first listener's address (what `gateway.listen` means) and all.
    pub(super) fn listeners(&mut self, g: &RawGateway, o: &Overrides, base: &Path) -> (SocketAddr, Vec<Listener>) {
        let Some(list) = &g.listeners else {
            let addr = o
                .listen
                .unwrap_or_else(|| self.socket_addr(g.listen.as_deref(), defaults::LISTEN, "gateway.listen"));
            let tls = g.tls.as_ref().map(|t| self.tls(t, "gateway.tls", base));
            let one = Listener {
                addr,
                tls,
                key_path: "gateway".to_string(),
            };
            return (addr, vec![one]);
        };
        if g.listen.is_some() || g.tls.is_some() {
            self.error(
                "gateway.listeners",
                "give either `listen` (with `tls`) or `listeners`, not both",
            );
        }
        if list.is_empty() {
            self.error("gateway.listeners", "at least one listener is needed");
        }
        let mut out = Vec::with_capacity(list.len());
        let mut seen: HashMap<SocketAddr, usize> = HashMap::new();
        for (i, l) in list.iter().enumerate() {
            let path = format!("gateway.listeners[{i}]");
            let addr = match (i, o.listen) {
                (0, Some(a)) => a,
                _ => self.socket_addr(Some(&l.addr), defaults::LISTEN, &format!("{path}.addr")),
            };
            if addr.port() != 0
                && let Some(j) = seen.insert(addr, i)
            {
                self.error(
                    format!("{path}.addr"),
                    format!("address {addr} is already used by gateway.listeners[{j}]"),
                );
            }
            let tls = l.tls.as_ref().map(|t| self.tls(t, &format!("{path}.tls"), base));
            out.push(Listener {
                addr,
                tls,
                key_path: path,
            });
        }
        let first = out
            .first()
            .map(|l| l.addr)
            .unwrap_or_else(|| defaults::LISTEN.parse().expect("default address parses"));
        (first, out)
    }

    fn tls(&mut self, t: &RawTls, path: &str, base: &Path) -> Arc<TlsSettings> {
        if t.certificates.is_empty() {
            self.error(
                format!("{path}.certificates"),
                "at least one certificate is needed: [{ cert: file.pem, key: file.key }]",
            );
        }
        let certificates = t
            .certificates
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let cpath = format!("{path}.certificates[{i}]");
                for (field, value) in [("cert", &c.cert), ("key", &c.key)] {
                    if value.trim().is_empty() {
                        self.error(format!("{cpath}.{field}"), "must name a PEM file");
                    }
                }
                let snis = c
                    .snis
                    .iter()
                    .flatten()
                    .enumerate()
                    .filter_map(|(k, name)| self.server_name(name, &format!("{cpath}.snis[{k}]")))
                    .collect();
                CertificateFiles {
                    cert: base.join(&c.cert),
                    key: base.join(&c.key),
                    snis,
                    key_path: cpath,
                }
            })
            .collect();
        let min_version = match t.min_version.as_deref().map(str::trim) {
            None | Some("1.2") | Some("TLSv1.2") => TlsVersion::Tls12,
            Some("1.3") | Some("TLSv1.3") => TlsVersion::Tls13,
            Some(other) => {
                self.error(
                    format!("{path}.min_version"),
                    format!("unknown TLS version {other:?}; expected \"1.2\" or \"1.3\""),
                );
                TlsVersion::Tls12
            }
        };
        let required = match t.client_auth.as_deref() {
            None | Some("required") => true,
            Some("optional") => false,
            Some(other) => {
                self.error(
                    format!("{path}.client_auth"),
                    format!("unknown client_auth {other:?}; expected required or optional"),
                );
                true
            }
        };
        if t.client_auth.is_some() && t.client_ca.is_none() {
            self.error(
                format!("{path}.client_auth"),
                "needs client_ca: the PEM file of the CAs that sign client certificates",
            );
        }
        let client_auth = t.client_ca.as_ref().map(|ca| ClientAuth {
            ca_file: base.join(ca),
            required,
        });
        let handshake_timeout = self.positive(
            dur(&t.handshake_timeout, HANDSHAKE_TIMEOUT),
            &format!("{path}.handshake_timeout"),
        );
        Arc::new(TlsSettings {
            certificates,
            min_version,
            client_auth,
            session_tickets: t.session_tickets.unwrap_or(true),
            handshake_timeout,
            key_path: path.to_string(),
        })
    }

    /// `upstream.scheme` and `upstream.tls`.
    pub(super) fn upstream_scheme(&mut self, u: &RawUpstream, path: &str) -> (Scheme, Option<Arc<UpstreamTls>>) {
        let scheme = match u.scheme.as_deref().unwrap_or("http") {
            "http" => Scheme::Http,
            "https" => Scheme::Https,
            "grpc" => Scheme::Grpc,
            "grpcs" => Scheme::Grpcs,
            other => {
                self.error(
                    format!("{path}.scheme"),
                    format!("unknown scheme {other:?}; expected http, https, grpc or grpcs"),
                );
                Scheme::Http
            }
        };
        let tpath = format!("{path}.tls");
        if !scheme.tls() {
            if u.tls.is_some() {
                self.error(tpath, "only allowed with scheme: https or grpcs");
            }
            return (scheme, None);
        }
        let raw = u.tls.clone().unwrap_or_default();
        let sni = raw
            .sni
            .as_deref()
            .and_then(|s| self.server_name(s, &format!("{tpath}.sni")));
        if sni.as_deref().is_some_and(|s| s.starts_with("*.")) {
            self.error(format!("{tpath}.sni"), "a wildcard is not a server name to send");
        }
        let client_identity = match (&raw.client_cert, &raw.client_key) {
            (Some(c), Some(k)) => Some((self.base_dir.join(c), self.base_dir.join(k))),
            (None, None) => None,
            (Some(_), None) => {
                self.error(format!("{tpath}.client_key"), "required with client_cert");
                None
            }
            (None, Some(_)) => {
                self.error(format!("{tpath}.client_cert"), "required with client_key");
                None
            }
        };
        let tls = UpstreamTls {
            verify: raw.verify.unwrap_or(true),
            ca_file: raw.ca_file.as_ref().map(|f| self.base_dir.join(f)),
            sni,
            client_identity,
            key_path: tpath,
        };
        (scheme, Some(Arc::new(tls)))
    }

    /// A server name for SNI: DNS labels, lower case, optionally `*.` in front.
    fn server_name(&mut self, name: &str, path: &str) -> Option<String> {
        let lower = name.trim().to_ascii_lowercase();
        let rest = lower.strip_prefix("*.").unwrap_or(&lower);
        let label_ok = |l: &str| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        };
        if rest.is_empty() || rest.len() > 253 || !rest.split('.').all(label_ok) {
            self.error(
                path,
                format!("invalid server name {name:?}; expected a DNS name such as api.example.com or *.example.com"),
            );
            return None;
        }
        Some(lower)
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::config::{Overrides, load_str};

    fn errors(gateway: &str) -> Vec<String> {
        match load_str(
            &format!("gateway:\n{gateway}"),
            "t",
            &Overrides::default(),
            Path::new("/etc/gh"),
        ) {
            Ok(_) => Vec::new(),
            Err(e) => e.errors().iter().map(ToString::to_string).collect(),
        }
    }

    #[test]
    fn listeners_and_tls_are_checked_with_key_paths() {
        let e = errors("  listen: 127.0.0.1:1\n  listeners: [ { addr: 127.0.0.1:2 } ]\n");
        assert!(e[0].starts_with("gateway.listeners: give either"), "{e:?}");
        let e = errors("  listeners: [ { addr: 127.0.0.1:2 }, { addr: 127.0.0.1:2 } ]\n");
        assert!(e[0].starts_with("gateway.listeners[1].addr: address"), "{e:?}");
        let e = errors("  tls: { certificates: [] }\n");
        assert!(e[0].starts_with("gateway.tls.certificates: at least one"), "{e:?}");
        let e = errors(
            "  listeners:\n    - addr: 127.0.0.1:2\n      tls: { certificates: [ { cert: a, key: b, snis: [\"a.*\"] } ], min_version: \"1.1\", client_auth: optional }\n",
        );
        let joined = e.join("\n");
        assert!(
            joined.contains("gateway.listeners[0].tls.certificates[0].snis[0]: invalid server name"),
            "{joined}"
        );
        assert!(
            joined.contains("gateway.listeners[0].tls.min_version: unknown TLS version"),
            "{joined}"
        );
        assert!(
            joined.contains("gateway.listeners[0].tls.client_auth: needs client_ca"),
            "{joined}"
        );
    }

    #[test]
    fn files_resolve_against_the_config_directory_and_defaults_fill_in() {
        let text = "gateway:\n  tls: { certificates: [ { cert: c.pem, key: k.pem, snis: [\"*.Example.com\"] } ], client_ca: ca.pem }\n";
        let loaded = load_str(text, "t", &Overrides::default(), Path::new("/etc/gh")).unwrap();
        let l = &loaded.config.gateway.listeners;
        assert_eq!(l.len(), 1);
        let tls = l[0].tls.as_ref().unwrap();
        assert_eq!(tls.certificates[0].cert, Path::new("/etc/gh/c.pem"));
        assert_eq!(tls.certificates[0].snis, vec!["*.example.com".to_string()]);
        assert_eq!(tls.min_version, crate::config::model::TlsVersion::Tls12);
        assert!(tls.client_auth.as_ref().unwrap().required);
        assert_eq!(tls.handshake_timeout, super::HANDSHAKE_TIMEOUT);
    }
}
