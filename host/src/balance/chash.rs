//! Consistent hashing on a ketama ring: 160 points per weight unit (weights reduced
//! by their greatest common divisor). A key lands on the first point at or after its
//! hash; unhealthy or already-tried endpoints are skipped by walking on, so the ring
//! layout never changes with health and a retry reaches the next distinct node.

use std::net::IpAddr;

use xxhash_rust::xxh3::xxh3_64;

use super::{Balancer, PickContext, RequestView};
use crate::config::model::HashKey;
use crate::upstream::Endpoint;

/// Ring points per weight unit.
pub const POINTS_PER_UNIT: u32 = 160;
/// Weight units are scaled down so no endpoint has more than this many.
const MAX_UNITS: u32 = 64;

/// Consistent-hash balancer.
#[derive(Debug)]
pub struct Chash {
    ring: Vec<(u64, u32)>,
    key: HashKey,
}

impl Chash {
    /// Builds the ring for `endpoints`.
    pub fn new(endpoints: &[std::sync::Arc<Endpoint>], key: HashKey) -> Self {
        let weights: Vec<u32> = endpoints.iter().map(|e| e.node.weight).collect();
        let g = weights.iter().copied().filter(|w| *w > 0).fold(0, gcd);
        let max_units = weights.iter().map(|w| w.checked_div(g).unwrap_or(0)).max().unwrap_or(0);
        let mut ring = Vec::new();
        for (idx, e) in endpoints.iter().enumerate() {
            let w = e.node.weight;
            if w == 0 {
                continue;
            }
            let mut units = w / g;
            if max_units > MAX_UNITS {
                units = ((u64::from(w) * u64::from(MAX_UNITS)) / u64::from(g * max_units)).max(1) as u32;
            }
            let name = e.key.authority.as_bytes();
            let mut buf = Vec::with_capacity(name.len() + 8);
            for i in 0..units * POINTS_PER_UNIT {
                buf.clear();
                buf.extend_from_slice(name);
                buf.push(b'#');
                buf.extend_from_slice(i.to_string().as_bytes());
                ring.push((xxh3_64(&buf), idx as u32));
            }
        }
        ring.sort_unstable();
        Self { ring, key }
    }

    /// Hash of the request's key (falls back to the client address when absent).
    pub fn key_hash(&self, req: &RequestView<'_>) -> u64 {
        match extract(&self.key, req) {
            Some(bytes) => xxh3_64(bytes),
            None => hash_ip(req.remote.ip()),
        }
    }
}

fn gcd(a: u32, b: u32) -> u32 {
    if b == 0 { a } else { gcd(b, a % b) }
}

fn hash_ip(ip: IpAddr) -> u64 {
    match ip {
        IpAddr::V4(v4) => xxh3_64(&v4.octets()),
        IpAddr::V6(v6) => xxh3_64(&v6.octets()),
    }
}

/// The key bytes named by `key`, if the request carries them.
fn extract<'a>(key: &HashKey, req: &RequestView<'a>) -> Option<&'a [u8]> {
    let parts = req.parts;
    let found = match key {
        HashKey::RemoteAddr => None,
        HashKey::Uri => Some(parts.uri.path().as_bytes()),
        HashKey::Host => parts
            .headers
            .get(http::header::HOST)
            .map(|h| h.as_bytes())
            .or_else(|| parts.uri.authority().map(|a| a.as_str().as_bytes())),
        HashKey::Header(name) => parts.headers.get(name).map(|h| h.as_bytes()),
        HashKey::Cookie(name) => parts
            .headers
            .get_all(http::header::COOKIE)
            .iter()
            .find_map(|h| cookie_value(h.as_bytes(), name.as_bytes())),
        HashKey::Query(name) => parts
            .uri
            .query()
            .and_then(|q| query_value(q.as_bytes(), name.as_bytes())),
    };
    found.filter(|b| !b.is_empty())
}

/// `name=value` out of a `Cookie` header.
pub fn cookie_value<'a>(header: &'a [u8], name: &[u8]) -> Option<&'a [u8]> {
    header.split(|b| *b == b';').find_map(|pair| {
        let pair = pair.trim_ascii();
        let eq = pair.iter().position(|b| *b == b'=')?;
        (&pair[..eq] == name).then(|| &pair[eq + 1..])
    })
}

/// `name=value` out of a query string (not percent-decoded).
pub fn query_value<'a>(query: &'a [u8], name: &[u8]) -> Option<&'a [u8]> {
    query.split(|b| *b == b'&').find_map(|pair| {
        let eq = pair.iter().position(|b| *b == b'=').unwrap_or(pair.len());
        (&pair[..eq] == name).then(|| pair.get(eq + 1..).unwrap_or(&[]))
    })
}

impl Balancer for Chash {
    fn name(&self) -> &str {
        "chash"
    }

    fn pick(&self, ctx: &PickContext<'_>) -> Option<usize> {
        if !self.ring.is_empty() {
            let h = self.key_hash(&ctx.request);
            let start = self.ring.partition_point(|p| p.0 < h);
            let n = self.ring.len();
            for i in 0..n {
                let idx = self.ring[(start + i) % n].1 as usize;
                if ctx.candidates.contains(idx) && !ctx.excluded.contains(idx) {
                    return Some(idx);
                }
            }
        }
        ctx.open().next().map(|c| c.idx as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::super::NodeSet;
    use super::super::testing::*;
    use super::*;

    fn pick_for(ch: &Chash, eps: &[std::sync::Arc<Endpoint>], key: &str) -> usize {
        let set = all(eps);
        let mut parts = parts("/x");
        parts.headers.insert("x-user", key.parse().unwrap());
        let excluded = NodeSet::new();
        pick_with(ch, eps, &set, &excluded, &parts).unwrap()
    }

    #[test]
    fn same_key_same_node_and_few_moves_on_removal() {
        let key = HashKey::Header("x-user".parse().unwrap());
        let eps = endpoints(&[100, 100, 100, 100]);
        let ch = Chash::new(&eps, key.clone());
        let before: Vec<_> = (0..1000).map(|i| pick_for(&ch, &eps, &format!("user-{i}"))).collect();
        let again: Vec<_> = (0..1000).map(|i| pick_for(&ch, &eps, &format!("user-{i}"))).collect();
        assert_eq!(before, again);
        // Remove node 3: only its keys may move.
        let fewer: Vec<_> = eps[..3].to_vec();
        let ch3 = Chash::new(&fewer, key);
        let after: Vec<_> = (0..1000)
            .map(|i| pick_for(&ch3, &fewer, &format!("user-{i}")))
            .collect();
        let moved = before.iter().zip(&after).filter(|(b, a)| b != a).count();
        assert!(moved <= 350, "moved {moved}");
        assert!(before.iter().zip(&after).all(|(b, a)| b == a || *b == 3));
    }

    #[test]
    fn spreads_keys_roughly_by_weight() {
        let eps = endpoints(&[100, 100, 200]);
        let ch = Chash::new(&eps, HashKey::Header("x-user".parse().unwrap()));
        let mut counts = [0usize; 3];
        for i in 0..4000 {
            counts[pick_for(&ch, &eps, &format!("k{i}"))] += 1;
        }
        assert!(counts[2] > counts[0] && counts[2] > counts[1], "{counts:?}");
    }

    #[test]
    fn retry_walks_to_next_distinct_node() {
        let eps = endpoints(&[1, 1, 1]);
        let ch = Chash::new(&eps, HashKey::Uri);
        let set = all(&eps);
        let parts = parts("/a/b");
        let mut excluded = NodeSet::new();
        let mut seen = vec![];
        for _ in 0..3 {
            let idx = pick_with(&ch, &eps, &set, &excluded, &parts).unwrap();
            assert!(!seen.contains(&idx));
            seen.push(idx);
            excluded.insert(idx);
        }
    }

    #[test]
    fn key_extraction() {
        assert_eq!(cookie_value(b"a=1; sid=xyz; b=2", b"sid"), Some(&b"xyz"[..]));
        assert_eq!(cookie_value(b"a=1", b"sid"), None);
        assert_eq!(query_value(b"a=1&user=bob&c", b"user"), Some(&b"bob"[..]));
        assert_eq!(query_value(b"c", b"c"), Some(&b""[..]));
    }
}
