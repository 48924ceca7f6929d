//! The TLS parts of the config file as written: `gateway.tls` and
//! `gateway.listeners` (see `docs/tls.md`). Kept apart from [`super::raw`] so the
//! listener shape reads in one place; re-exported from there.

use serde::{Deserialize, Serialize};

use super::duration::RawDuration;

/// One entry of `gateway.listeners:`.
#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawListener {
    /// Listen address, `host:port`.
    pub addr: String,
    /// Makes this listener a TLS listener.
    pub tls: Option<RawTls>,
}

/// `tls:` of a listener (or `gateway.tls`, which applies to `gateway.listen`).
#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawTls {
    /// Certificates with their keys; the first is the default (no or unknown SNI).
    pub certificates: Vec<RawCertificate>,
    /// Lowest protocol version accepted: `"1.2"` (default) or `"1.3"`.
    pub min_version: Option<String>,
    /// PEM file of the CAs that sign client certificates (turns on mTLS).
    pub client_ca: Option<String>,
    /// `required` (default when `client_ca` is set) | `optional`.
    pub client_auth: Option<String>,
    /// Session resumption by tickets (default true; always off with `client_ca`).
    pub session_tickets: Option<bool>,
    /// Time a client may take to complete the handshake.
    pub handshake_timeout: Option<RawDuration>,
}

/// One entry of `tls.certificates:`.
#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCertificate {
    /// PEM file: the certificate, then its chain.
    pub cert: String,
    /// PEM file: the private key (PKCS#8, PKCS#1 RSA or SEC1 EC).
    pub key: String,
    /// Server names this certificate answers (`*.example.com` allowed); default:
    /// the DNS names of the certificate's subject alternative names.
    pub snis: Option<Vec<String>>,
}

/// `upstream.tls:` — how the gateway speaks TLS to the nodes (`scheme: https`).
#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawUpstreamTls {
    /// Verify the node's certificate (default true).
    pub verify: Option<bool>,
    /// PEM file of the CAs trusted for the nodes (default: the Mozilla roots).
    pub ca_file: Option<String>,
    /// Server name sent and verified (default: the node's host).
    pub sni: Option<String>,
    /// PEM client certificate presented to the nodes.
    pub client_cert: Option<String>,
    /// PEM key of `client_cert`.
    pub client_key: Option<String>,
}
