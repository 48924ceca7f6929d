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
pub use crate::zone::{Candidate, CandidateSet, NodeSet};

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
    /// As [`pick`](Self::pick), and says who decided when this balancer handed the
    /// decision to a fallback: `Some(why)` (a plugin declined, faulted, is disabled, or
    /// its config was refused), `None` when this balancer decided itself.
    fn pick_explained(&self, ctx: &PickContext<'_>) -> (Option<usize>, Option<&'static str>) {
        (self.pick(ctx), None)
    }
    /// The name of the balancer that decides when this one hands over (a plugin
    /// adapter's built-in); `None` for balancers without a fallback.
    fn fallback_name(&self) -> Option<&str> {
        None
    }
    /// The outcome of one try to endpoint `idx` (whoever picked it). The built-ins keep
    /// their state in the endpoints and ignore it; plugins may learn from it.
    fn observe(&self, _idx: usize, _outcome: crate::outcome::Outcome, _latency: std::time::Duration) {}
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
