//! Request keys: the parts of a request a plugin asked to see (`keys()`), compiled once
//! per instance and delivered per call as hashes (xxh3-64 of the value, 0 = absent).

use std::io::Write;
use std::net::SocketAddr;

use http::request::Parts;
use http::{HeaderMap, Method, Uri};

use super::bindings::types::RequestKey;

/// Most keys a plugin may ask for.
pub const MAX_KEYS: usize = 16;

/// A compiled request key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    /// A header.
    Header(http::HeaderName),
    /// A query parameter.
    Query(String),
    /// A cookie.
    Cookie(String),
    /// The client address.
    ClientIp,
    /// The path.
    Path,
    /// The method.
    Method,
}

/// Compiles what `keys()` returned; an error is a contract violation.
pub fn compile(keys: Vec<RequestKey>) -> Result<Vec<KeySource>, String> {
    if keys.len() > MAX_KEYS {
        return Err(format!(
            "asked for {} request keys; at most {MAX_KEYS} are allowed",
            keys.len()
        ));
    }
    keys.into_iter()
        .map(|k| {
            Ok(match k {
                RequestKey::Header(h) => KeySource::Header(
                    http::HeaderName::from_bytes(h.as_bytes()).map_err(|_| format!("invalid header name {h:?}"))?,
                ),
                RequestKey::Query(q) => KeySource::Query(q),
                RequestKey::Cookie(c) => KeySource::Cookie(c),
                RequestKey::ClientIp => KeySource::ClientIp,
                RequestKey::Path => KeySource::Path,
                RequestKey::Method => KeySource::Method,
            })
        })
        .collect()
}

/// The hash the SDK's `key_hash` computes: never 0.
pub fn hash(value: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64(value).max(1)
}

/// What request keys are taken from: the request head and the client address.
#[derive(Debug, Clone, Copy)]
pub struct KeyInput<'a> {
    /// The method.
    pub method: &'a Method,
    /// The URI (path and query).
    pub uri: &'a Uri,
    /// The headers (and cookies).
    pub headers: &'a HeaderMap,
    /// The client address.
    pub remote: SocketAddr,
}

impl<'a> KeyInput<'a> {
    /// The input of a request head.
    pub fn from_parts(parts: &'a Parts, remote: SocketAddr) -> Self {
        Self {
            method: &parts.method,
            uri: &parts.uri,
            headers: &parts.headers,
            remote,
        }
    }
}

/// The key's hash for one request (0 when the request does not carry it).
pub fn resolve(key: &KeySource, req: &KeyInput<'_>) -> u64 {
    if *key == KeySource::ClientIp {
        let mut buf = [0u8; 64];
        let mut w = std::io::Cursor::new(&mut buf[..]);
        let _ = write!(w, "{}", req.remote.ip());
        let n = w.position() as usize;
        return hash(&buf[..n]);
    }
    raw(key, req).map_or(0, hash)
}

/// The bytes of a key's value in one request (`None`: the request does not carry it;
/// also for [`KeySource::ClientIp`], which is not in the request head).
pub fn raw<'a>(key: &KeySource, req: &KeyInput<'a>) -> Option<&'a [u8]> {
    match key {
        KeySource::Header(name) => req.headers.get(name).map(|v| v.as_bytes()),
        KeySource::Query(name) => req.uri.query().and_then(|q| {
            q.split('&').find_map(|pair| {
                let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                (k == name).then_some(v.as_bytes())
            })
        }),
        KeySource::Cookie(name) => req
            .headers
            .get_all(http::header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .find_map(|c| {
                let (k, v) = c.trim().split_once('=')?;
                (k == name).then_some(v.as_bytes())
            }),
        KeySource::ClientIp => None,
        KeySource::Path => Some(req.uri.path().as_bytes()),
        KeySource::Method => Some(req.method.as_str().as_bytes()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(uri: &str, headers: &[(&str, &str)]) -> Parts {
        let mut b = http::Request::builder().uri(uri);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(()).unwrap().into_parts().0
    }

    #[test]
    fn resolves_every_kind_of_key() {
        let remote: SocketAddr = "10.1.2.3:999".parse().unwrap();
        let p = parts(
            "/a/b?x=1&flag&y=two",
            &[("x-tenant", "acme"), ("cookie", "a=1; session=s3"), ("cookie", "z=9")],
        );
        let keys = compile(vec![
            RequestKey::Header("X-Tenant".into()),
            RequestKey::Header("x-missing".into()),
            RequestKey::Query("y".into()),
            RequestKey::Query("flag".into()),
            RequestKey::Query("nope".into()),
            RequestKey::Cookie("session".into()),
            RequestKey::Cookie("z".into()),
            RequestKey::ClientIp,
            RequestKey::Path,
            RequestKey::Method,
        ])
        .unwrap();
        let input = KeyInput::from_parts(&p, remote);
        let got: Vec<u64> = keys.iter().map(|k| resolve(k, &input)).collect();
        assert_eq!(
            got,
            vec![
                hash(b"acme"),
                0,
                hash(b"two"),
                hash(b""),
                0,
                hash(b"s3"),
                hash(b"9"),
                hash(b"10.1.2.3"),
                hash(b"/a/b"),
                hash(b"GET"),
            ]
        );
    }

    #[test]
    fn bad_keys_are_contract_violations() {
        assert!(compile(vec![RequestKey::Header("bad header".into())]).is_err());
        assert!(compile(vec![RequestKey::Path; MAX_KEYS + 1]).is_err());
        assert!(compile(vec![RequestKey::Path; MAX_KEYS]).is_ok());
    }
}
