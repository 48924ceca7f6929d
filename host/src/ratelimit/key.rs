//! Limit keys: which request property a rule counts by.
//!
//! A key is built into a per-thread buffer, so deciding a request allocates
//! nothing. Parts of a comma combination are joined with `\x1f` (a byte no header
//! value can hold, so `a|b` + `c` and `a` + `b|c` never collide).
//!
//! A missing header (or consumer) does not let a request escape its rule: that
//! part falls back to the client address, marked with `\x1e` so it cannot equal a
//! header value. This is APISIX's behaviour and what the `chash` balancer does.

use std::cell::RefCell;
use std::fmt::Write as _;
use std::net::IpAddr;

use http::{HeaderMap, HeaderName};

use crate::config::model::KeyPart;

/// Longest key kept as written; longer ones are replaced by a 128-bit hash.
pub const MAX_KEY_LEN: usize = 256;
/// Separates the parts of a combined key.
pub const PART_SEP: char = '\x1f';
/// Marks a part that fell back to the client address.
pub const FALLBACK_MARK: char = '\x1e';

/// What a key is built from.
#[derive(Debug, Clone, Copy)]
pub struct KeySource<'a> {
    /// Request headers.
    pub headers: &'a HeaderMap,
    /// Client address.
    pub remote: IpAddr,
    /// Name of the matched route.
    pub route: &'a str,
    /// `gateway.consumer_header`, if configured.
    pub consumer_header: Option<&'a HeaderName>,
}

/// The key parts of one rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeySpec {
    parts: Box<[KeyPart]>,
}

impl KeySpec {
    /// A spec from validated parts.
    pub fn new(parts: &[KeyPart]) -> Self {
        Self { parts: parts.into() }
    }

    /// The spec as written in the config (`remote_addr,header:x-api-key`).
    pub fn describe(&self) -> String {
        self.parts
            .iter()
            .map(|p| match p {
                KeyPart::RemoteAddr => "remote_addr".to_string(),
                KeyPart::Route => "route".to_string(),
                KeyPart::Consumer => "consumer".to_string(),
                KeyPart::Header(h) => format!("header:{h}"),
            })
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Writes the key of a request into `buf` (cleared first).
    pub fn write(&self, src: &KeySource<'_>, buf: &mut String) {
        buf.clear();
        for (i, part) in self.parts.iter().enumerate() {
            if i > 0 {
                buf.push(PART_SEP);
            }
            let header = match part {
                KeyPart::RemoteAddr => None,
                KeyPart::Route => {
                    buf.push_str(src.route);
                    continue;
                }
                KeyPart::Header(h) => Some(h),
                KeyPart::Consumer => src.consumer_header,
            };
            match header.and_then(|h| src.headers.get(h)) {
                Some(v) => push_value(buf, v.as_bytes()),
                None => {
                    if header.is_some() || matches!(part, KeyPart::Consumer) {
                        buf.push(FALLBACK_MARK);
                    }
                    let _ = write!(buf, "{}", src.remote);
                }
            }
        }
        if buf.len() > MAX_KEY_LEN {
            let h = xxhash_rust::xxh3::xxh3_128(buf.as_bytes());
            buf.clear();
            let _ = write!(buf, "#{h:032x}");
        }
    }
}

fn push_value(buf: &mut String, bytes: &[u8]) {
    match std::str::from_utf8(bytes) {
        Ok(s) => buf.push_str(s),
        Err(_) => {
            buf.push_str("0x");
            for b in bytes {
                let _ = write!(buf, "{b:02x}");
            }
        }
    }
}

thread_local! {
    static BUF: RefCell<String> = RefCell::new(String::with_capacity(128));
}

/// Builds the key of a request in this thread's buffer and passes it to `f`.
/// `f` must not call `with_key` again.
pub fn with_key<R>(spec: &KeySpec, src: &KeySource<'_>, f: impl FnOnce(&str) -> R) -> R {
    BUF.with(|cell| {
        let mut buf = cell.borrow_mut();
        spec.write(src, &mut buf);
        f(&buf)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn src(headers: &HeaderMap) -> KeySource<'_> {
        KeySource {
            headers,
            remote: "10.0.0.7".parse().unwrap(),
            route: "pets#0",
            consumer_header: None,
        }
    }

    fn key(parts: &[KeyPart], s: &KeySource<'_>) -> String {
        with_key(&KeySpec::new(parts), s, str::to_string)
    }

    #[test]
    fn parts_and_combinations() {
        let mut h = HeaderMap::new();
        h.insert("x-api-key", "k1".parse().unwrap());
        let s = src(&h);
        let api = KeyPart::Header(HeaderName::from_static("x-api-key"));
        assert_eq!(key(&[KeyPart::RemoteAddr], &s), "10.0.0.7");
        assert_eq!(key(&[KeyPart::Route], &s), "pets#0");
        assert_eq!(key(std::slice::from_ref(&api), &s), "k1");
        assert_eq!(key(&[KeyPart::RemoteAddr, api.clone()], &s), "10.0.0.7\x1fk1");
        let spec = KeySpec::new(&[KeyPart::RemoteAddr, api]);
        assert_eq!(spec.describe(), "remote_addr,header:x-api-key");
    }

    #[test]
    fn missing_header_falls_back_to_the_client_address() {
        let h = HeaderMap::new();
        let s = src(&h);
        let k = key(&[KeyPart::Header(HeaderName::from_static("x-api-key"))], &s);
        assert_eq!(k, "\x1e10.0.0.7");
        assert_ne!(k, key(&[KeyPart::RemoteAddr], &s));
        // A consumer key without a configured header also falls back.
        assert_eq!(key(&[KeyPart::Consumer], &s), "\x1e10.0.0.7");
    }

    #[test]
    fn consumer_reads_the_configured_header() {
        let mut h = HeaderMap::new();
        h.insert("x-consumer", "acme".parse().unwrap());
        let name = HeaderName::from_static("x-consumer");
        let s = KeySource {
            consumer_header: Some(&name),
            ..src(&h)
        };
        assert_eq!(key(&[KeyPart::Consumer], &s), "acme");
    }

    #[test]
    fn long_and_binary_values_stay_bounded_and_distinct() {
        let mut h = HeaderMap::new();
        h.insert("x-k", "a".repeat(5000).parse().unwrap());
        let s = src(&h);
        let part = [KeyPart::Header(HeaderName::from_static("x-k"))];
        let long = key(&part, &s);
        assert_eq!(long.len(), 33);
        assert!(long.starts_with('#'));
        h.insert("x-k", http::HeaderValue::from_bytes(b"\xff\xfe").unwrap());
        assert_eq!(key(&part, &src(&h)), "0xfffe");
    }
}
