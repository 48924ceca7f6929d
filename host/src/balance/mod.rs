//! Load balancers: the [`Balancer`] trait and the four built-ins.
//!
//! A balancer picks one endpoint out of a [`CandidateSet`] that the zone/health
//! logic computed off the request path. Balancers keep their live state in the
//! endpoints' [`EndpointState`](crate::upstream::EndpointState), so a config swap
//! that rebuilds the balancer keeps round-robin positions, in-flight counts and
//! latency estimates.

pub mod chash;
pub mod ewma;
pub mod least_conn;
pub mod roundrobin;

use std::net::SocketAddr;
use std::sync::Arc;

use crate::config::model::{BalancerKind, HashKey};
use crate::upstream::Endpoint;

/// A small set of endpoint indexes (a bitset; no allocation up to 128 endpoints).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeSet {
    inline: [u64; 2],
    spill: Vec<u64>,
}

impl NodeSet {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `idx`.
    pub fn insert(&mut self, idx: usize) {
        let (w, b) = (idx / 64, idx % 64);
        if w < 2 {
            self.inline[w] |= 1 << b;
        } else {
            let w = w - 2;
            if self.spill.len() <= w {
                self.spill.resize(w + 1, 0);
            }
            self.spill[w] |= 1 << b;
        }
    }

    /// Whether `idx` is in the set.
    #[inline]
    pub fn contains(&self, idx: usize) -> bool {
        let (w, b) = (idx / 64, idx % 64);
        let word = if w < 2 {
            self.inline[w]
        } else {
            self.spill.get(w - 2).copied().unwrap_or(0)
        };
        word & (1 << b) != 0
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.inline == [0, 0] && self.spill.iter().all(|w| *w == 0)
    }

    /// Number of members.
    pub fn len(&self) -> usize {
        self.inline
            .iter()
            .chain(&self.spill)
            .map(|w| w.count_ones() as usize)
            .sum()
    }
}

/// One endpoint offered to the balancer, with the weight it should get now
/// (its configured weight scaled by slow start and by its tier's share).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Candidate {
    /// Index into the snapshot's endpoint list.
    pub idx: u32,
    /// Effective weight, > 0.
    pub weight: u32,
}

/// The endpoints a balancer may choose from, computed off the request path.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CandidateSet {
    /// Candidates in endpoint order.
    pub list: Vec<Candidate>,
    /// Membership by endpoint index.
    pub mask: NodeSet,
    /// Sum of the effective weights.
    pub total_weight: u64,
}

impl CandidateSet {
    /// Builds a set from candidates (zero weights are dropped).
    pub fn new(list: impl IntoIterator<Item = Candidate>) -> Self {
        let mut set = CandidateSet::default();
        for c in list {
            if c.weight == 0 {
                continue;
            }
            set.mask.insert(c.idx as usize);
            set.total_weight += u64::from(c.weight);
            set.list.push(c);
        }
        set
    }

    /// Whether nothing can be picked.
    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// Whether `idx` may be picked.
    #[inline]
    pub fn contains(&self, idx: usize) -> bool {
        self.mask.contains(idx)
    }
}

/// What the balancer may look at of the request.
#[derive(Debug, Clone, Copy)]
pub struct RequestView<'a> {
    /// Method, URI and headers.
    pub parts: &'a http::request::Parts,
    /// Client address.
    pub remote: SocketAddr,
}

/// Everything a balancer needs for one pick.
#[derive(Debug, Clone, Copy)]
pub struct PickContext<'a> {
    /// All endpoints of the upstream (indexes refer to this slice).
    pub endpoints: &'a [Arc<Endpoint>],
    /// Who may be picked.
    pub candidates: &'a CandidateSet,
    /// Endpoints this request already tried (or that refused it): never pick them.
    pub excluded: &'a NodeSet,
    /// The request.
    pub request: RequestView<'a>,
}

impl PickContext<'_> {
    /// Candidates that are not excluded.
    pub fn open(&self) -> impl Iterator<Item = &Candidate> + '_ {
        self.candidates
            .list
            .iter()
            .filter(|c| !self.excluded.contains(c.idx as usize))
    }
}

/// Picks an endpoint for a request.
///
/// Contract: the returned index is a member of `ctx.candidates` and not in
/// `ctx.excluded`; `None` only when no such endpoint exists (or, for plugins,
/// when the policy declines and the caller should fall back).
pub trait Balancer: Send + Sync + 'static {
    /// Short name for logs and the debug header (`roundrobin`, a plugin name, ...).
    fn name(&self) -> &str;
    /// Chooses one endpoint.
    fn pick(&self, ctx: &PickContext<'_>) -> Option<usize>;
}

/// Builds the built-in balancer for an upstream.
pub fn build(kind: BalancerKind, endpoints: &[Arc<Endpoint>], hash_key: &HashKey) -> Arc<dyn Balancer> {
    match kind {
        BalancerKind::RoundRobin => Arc::new(roundrobin::RoundRobin::new()),
        BalancerKind::Chash => Arc::new(chash::Chash::new(endpoints, hash_key.clone())),
        BalancerKind::Ewma => Arc::new(ewma::PeakEwma::new()),
        BalancerKind::LeastConn => Arc::new(least_conn::LeastConn::new()),
    }
}

#[cfg(test)]
pub(crate) mod testing {
    //! Helpers shared by the balancer tests.
    use super::*;
    use crate::config::model::Node;
    use crate::upstream::EndpointState;

    pub fn endpoints(weights: &[u32]) -> Vec<Arc<Endpoint>> {
        weights
            .iter()
            .enumerate()
            .map(|(i, w)| {
                let node = Node {
                    host: "127.0.0.1".into(),
                    port: 9000 + i as u16,
                    weight: *w,
                    zone: String::new(),
                    region: String::new(),
                    priority: 0,
                    tags: vec![],
                };
                Arc::new(Endpoint::new("svc".into(), node, Arc::new(EndpointState::new(0.0))))
            })
            .collect()
    }

    pub fn all(endpoints: &[Arc<Endpoint>]) -> CandidateSet {
        CandidateSet::new(endpoints.iter().enumerate().map(|(i, e)| Candidate {
            idx: i as u32,
            weight: e.node.weight,
        }))
    }

    /// One pick of `b` over `set`, never choosing `excluded`.
    pub fn pick_with(
        b: &dyn Balancer,
        eps: &[Arc<Endpoint>],
        set: &CandidateSet,
        excluded: &NodeSet,
        parts: &http::request::Parts,
    ) -> Option<usize> {
        b.pick(&PickContext {
            endpoints: eps,
            candidates: set,
            excluded,
            request: RequestView {
                parts,
                remote: remote(),
            },
        })
    }

    pub fn parts(uri: &str) -> http::request::Parts {
        http::Request::builder().uri(uri).body(()).unwrap().into_parts().0
    }

    pub fn remote() -> SocketAddr {
        "10.0.0.1:5555".parse().unwrap()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nodeset_inline_and_spill() {
        let mut s = NodeSet::new();
        assert!(s.is_empty());
        for i in [0, 63, 64, 127, 128, 500] {
            s.insert(i);
        }
        for i in [0, 63, 64, 127, 128, 500] {
            assert!(s.contains(i));
        }
        assert!(!s.contains(1) && !s.contains(499) && !s.contains(10_000));
        assert_eq!(s.len(), 6);
    }

    #[test]
    fn candidate_set_drops_zero_weights() {
        let set = CandidateSet::new([Candidate { idx: 0, weight: 0 }, Candidate { idx: 1, weight: 5 }]);
        assert_eq!(set.list.len(), 1);
        assert!(!set.contains(0) && set.contains(1));
        assert_eq!(set.total_weight, 5);
    }
}
