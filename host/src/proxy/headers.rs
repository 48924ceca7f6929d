//! Header rewriting between client and upstream: hop-by-hop headers removed, the
//! `X-Forwarded-*` family and `Via` set.

use std::io::Write;
use std::net::{IpAddr, SocketAddr};

use http::Version;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};

/// Headers that describe one connection, never forwarded (RFC 9110 §7.6.1), and
/// `Upgrade` (this proxy does not tunnel protocol upgrades).
static HOP_BY_HOP: [HeaderName; 9] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// What this gateway adds to `Via`.
pub const VIA_H1: HeaderValue = HeaderValue::from_static("1.1 gatehouse");
/// `Via` for requests that arrived over HTTP/2.
pub const VIA_H2: HeaderValue = HeaderValue::from_static("2 gatehouse");

/// The position of `name` (lowercase, as `HeaderName` keeps it) in [`HOP_BY_HOP`]:
/// a string match, which compiles to a switch on the length and one compare,
/// instead of nine `HeaderName` comparisons per header.
fn hop_by_hop_index(name: &str) -> Option<usize> {
    Some(match name {
        "connection" => 0,
        "keep-alive" => 1,
        "proxy-connection" => 2,
        "proxy-authenticate" => 3,
        "proxy-authorization" => 4,
        "te" => 5,
        "trailer" => 6,
        "transfer-encoding" => 7,
        "upgrade" => 8,
        _ => return None,
    })
}

/// Removes hop-by-hop headers, including those named by `Connection`.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // One pass over the names (no hashing) finds which are present; most messages
    // carry none, or only `Connection: keep-alive`.
    let mut present = [false; 9];
    for name in headers.keys() {
        if let Some(i) = hop_by_hop_index(name.as_str()) {
            present[i] = true;
        }
    }
    if present[0] {
        let named: Vec<HeaderName> = headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            // `close` and `keep-alive` are options, not (other) header names.
            .filter(|t| !t.eq_ignore_ascii_case("close") && !t.eq_ignore_ascii_case("keep-alive"))
            .filter_map(|t| HeaderName::from_bytes(t.as_bytes()).ok())
            .collect();
        for n in named {
            headers.remove(n);
        }
    }
    for (h, _) in HOP_BY_HOP.iter().zip(present).filter(|(_, p)| *p) {
        headers.remove(h);
    }
}

/// Writes an IP address without the formatting machinery (IPv4 is the common case).
fn write_ip(out: &mut impl Write, ip: IpAddr) -> std::io::Result<()> {
    match ip {
        IpAddr::V4(v4) => {
            let mut digits = itoa::Buffer::new();
            for (i, octet) in v4.octets().iter().enumerate() {
                if i > 0 {
                    out.write_all(b".")?;
                }
                out.write_all(digits.format(*octet).as_bytes())?;
            }
            Ok(())
        }
        IpAddr::V6(v6) => write!(out, "{v6}"),
    }
}

/// `prev, ip` (or `ip` alone), built in a stack buffer: the header value is the
/// only allocation.
fn forwarded_for(prev: Option<&HeaderValue>, ip: IpAddr) -> Option<HeaderValue> {
    let mut buf = [0u8; 512];
    let mut out = std::io::Cursor::new(&mut buf[..]);
    let written = match prev.map(HeaderValue::as_bytes) {
        Some(prev) if !prev.is_empty() => out
            .write_all(prev)
            .and_then(|()| out.write_all(b", "))
            .and_then(|()| write_ip(&mut out, ip)),
        _ => write_ip(&mut out, ip),
    };
    let len = out.position() as usize;
    match written {
        Ok(()) => HeaderValue::from_bytes(&buf[..len]).ok(),
        // A chain longer than the buffer: rare, take the slow path.
        Err(_) => {
            let prev = prev.and_then(|v| v.to_str().ok()).unwrap_or_default();
            HeaderValue::from_str(&format!("{prev}, {ip}")).ok()
        }
    }
}

/// Sets the forwarding headers on a request going upstream. `host` is the Host the
/// client used (the header, or the HTTP/2 authority).
pub fn add_forwarded(headers: &mut HeaderMap, remote: SocketAddr, host: Option<&HeaderValue>, via: HeaderValue) {
    // One lookup for the read and the write of X-Forwarded-For.
    match headers.entry(&X_FORWARDED_FOR) {
        header::Entry::Occupied(mut e) => {
            if let Some(v) = forwarded_for(Some(e.get()), remote.ip()) {
                e.insert(v);
            }
        }
        header::Entry::Vacant(e) => {
            if let Some(v) = forwarded_for(None, remote.ip()) {
                e.insert(v);
            }
        }
    }
    headers.insert(X_FORWARDED_PROTO.clone(), HeaderValue::from_static("http"));
    if let Some(h) = host {
        headers.insert(X_FORWARDED_HOST.clone(), h.clone());
    }
    append_via(headers, via);
}

/// Appends this gateway to `Via`.
pub fn append_via(headers: &mut HeaderMap, via: HeaderValue) {
    headers.append(header::VIA, via);
}

/// Applies RFC 9112's host rules to an HTTP/1 request head (HTTP/2 carries
/// `:authority` instead): an HTTP/1.1 request needs exactly one `Host`, any request
/// with several is refused (routing on an ambiguous host is a way around host
/// rules), and an absolute-form target's authority wins over `Host`, which is
/// rewritten to it (§3.2.2). `Err` says why the request is refused (400).
pub fn apply_host_rules(parts: &mut http::request::Parts) -> Result<(), &'static str> {
    if parts.version != Version::HTTP_11 && parts.version != Version::HTTP_10 {
        return Ok(());
    }
    let mut hosts = parts.headers.get_all(header::HOST).iter();
    let first = hosts.next();
    if hosts.next().is_some() {
        return Err("the request has more than one Host header");
    }
    if first.is_none() && parts.version == Version::HTTP_11 {
        return Err("an HTTP/1.1 request needs a Host header");
    }
    if let Some(authority) = parts.uri.authority()
        && !first.is_some_and(|h| h.as_bytes().eq_ignore_ascii_case(authority.as_str().as_bytes()))
    {
        let value = HeaderValue::from_str(authority.as_str())
            .map_err(|_| "the request target's authority is not a valid Host")?;
        parts.headers.insert(header::HOST, value);
    }
    Ok(())
}

/// Whether the client's `TE` offers `trailers`: the one `TE` value HTTP/2 allows
/// (RFC 9113 §8.2.2), which gRPC requires. `TE` is hop-by-hop and stripped, so the
/// pipeline sends `te: trailers` to HTTP/2 upstreams when the client asked for it.
pub fn te_trailers(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::TE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| {
            t.split(';')
                .next()
                .is_some_and(|t| t.trim().eq_ignore_ascii_case("trailers"))
        })
}

/// Whether a request is a gRPC call (`content-type: application/grpc[+proto|...]`).
pub fn is_grpc(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
}

/// The `grpc-status` code in `headers` (a response head or its trailers).
pub fn grpc_status(headers: &HeaderMap) -> Option<u8> {
    headers.get("grpc-status")?.to_str().ok()?.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn te_trailers_is_found_among_other_codings() {
        let mut h = HeaderMap::new();
        assert!(!te_trailers(&h));
        h.insert(header::TE, HeaderValue::from_static("gzip, trailers"));
        assert!(te_trailers(&h));
        h.insert(header::TE, HeaderValue::from_static("gzip;q=0.5"));
        assert!(!te_trailers(&h));
    }

    #[test]
    fn strips_connection_named_and_standard_hop_headers() {
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, "keep-alive, x-secret".parse().unwrap());
        h.insert("x-secret", "1".parse().unwrap());
        h.insert("keep-alive", "timeout=5".parse().unwrap());
        h.insert(header::TRANSFER_ENCODING, "chunked".parse().unwrap());
        h.insert("x-keep", "1".parse().unwrap());
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("x-keep"));
    }

    #[test]
    fn forwarded_headers_append() {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", "1.2.3.4".parse().unwrap());
        let host = HeaderValue::from_static("api.example.com");
        add_forwarded(&mut h, "10.0.0.9:1234".parse().unwrap(), Some(&host), VIA_H1);
        assert_eq!(h["x-forwarded-for"], "1.2.3.4, 10.0.0.9");
        assert_eq!(h["x-forwarded-proto"], "http");
        assert_eq!(h["x-forwarded-host"], "api.example.com");
        assert_eq!(h["via"], "1.1 gatehouse");
    }

    #[test]
    fn the_index_agrees_with_the_table() {
        for (i, h) in HOP_BY_HOP.iter().enumerate() {
            assert_eq!(hop_by_hop_index(h.as_str()), Some(i), "{h}");
        }
        assert_eq!(hop_by_hop_index("x-node"), None);
        assert_eq!(hop_by_hop_index("content-length"), None);
    }

    #[test]
    fn ipv6_clients_are_written_too() {
        let mut h = HeaderMap::new();
        add_forwarded(&mut h, "[2001:db8::1]:443".parse().unwrap(), None, VIA_H1);
        assert_eq!(h["x-forwarded-for"], "2001:db8::1");
    }

    #[test]
    fn long_forwarded_chains_are_kept() {
        let mut h = HeaderMap::new();
        let chain = vec!["203.0.113.7"; 60].join(", ");
        h.insert("x-forwarded-for", chain.parse().unwrap());
        add_forwarded(&mut h, "10.0.0.9:1234".parse().unwrap(), None, VIA_H1);
        assert_eq!(h["x-forwarded-for"], format!("{chain}, 10.0.0.9").as_str());
    }

    #[test]
    fn messages_without_hop_headers_are_untouched() {
        let mut h = HeaderMap::new();
        h.insert("host", "a".parse().unwrap());
        h.insert("x-a", "1".parse().unwrap());
        let before = h.clone();
        strip_hop_by_hop(&mut h);
        assert_eq!(h, before);
        h.insert(header::UPGRADE, "websocket".parse().unwrap());
        strip_hop_by_hop(&mut h);
        assert_eq!(h, before);
    }

    fn head(raw: &[(&str, &str)], uri: &str, version: Version) -> http::request::Parts {
        let mut b = http::Request::builder().uri(uri).version(version);
        for (k, v) in raw {
            b = b.header(*k, *v);
        }
        b.body(()).unwrap().into_parts().0
    }

    #[test]
    fn host_rules_of_rfc_9112() {
        let mut ok = head(&[("host", "a.example")], "/x", Version::HTTP_11);
        assert_eq!(apply_host_rules(&mut ok), Ok(()));
        let mut none = head(&[], "/x", Version::HTTP_11);
        assert!(apply_host_rules(&mut none).is_err());
        let mut old = head(&[], "/x", Version::HTTP_10);
        assert_eq!(apply_host_rules(&mut old), Ok(()), "HTTP/1.0 without Host works");
        let mut two = head(&[("host", "a.example"), ("host", "b.example")], "/x", Version::HTTP_11);
        assert!(apply_host_rules(&mut two).is_err());
        let mut absolute = head(&[("host", "b.example")], "http://a.example:8080/x", Version::HTTP_11);
        assert_eq!(apply_host_rules(&mut absolute), Ok(()));
        assert_eq!(absolute.headers[header::HOST], "a.example:8080", "the authority wins");
        let mut h2 = head(&[], "/x", Version::HTTP_2);
        assert_eq!(apply_host_rules(&mut h2), Ok(()), "HTTP/2 carries :authority");
    }
}
