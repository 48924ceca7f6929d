//! Peak-EWMA with the power of two choices (linkerd, Finagle): two random
//! candidates are compared by `latency × (in-flight + 1) / weight` and the cheaper
//! one wins. The latency estimate jumps to peaks at once and decays over 10 s.

use super::{Balancer, Candidate, PickContext};
use crate::upstream::Endpoint;

/// Peak-EWMA balancer (stateless: the estimates live in the endpoints).
#[derive(Debug, Default)]
pub struct PeakEwma;

impl PeakEwma {
    /// A new balancer.
    pub fn new() -> Self {
        Self
    }
}

/// The load score of a candidate; lower is better.
pub fn cost(e: &Endpoint, c: &Candidate) -> f64 {
    let latency = f64::from(e.state.ewma_us()) + 1.0;
    latency * f64::from(e.state.inflight() + 1) / f64::from(c.weight.max(1))
}

impl Balancer for PeakEwma {
    fn name(&self) -> &str {
        "ewma"
    }

    fn pick(&self, ctx: &PickContext<'_>) -> Option<usize> {
        let list = &ctx.candidates.list;
        let score = |c: &Candidate| cost(&ctx.endpoints[c.idx as usize], c);
        if ctx.excluded.is_empty() {
            match list.len() {
                0 => return None,
                1 => return Some(list[0].idx as usize),
                n => {
                    let i = fastrand::usize(..n);
                    let mut j = fastrand::usize(..n - 1);
                    if j >= i {
                        j += 1;
                    }
                    let (a, b) = (&list[i], &list[j]);
                    return Some(if score(a) <= score(b) { a.idx } else { b.idx } as usize);
                }
            }
        }
        // A retry: few candidates are left, compare them all.
        ctx.open()
            .min_by(|a, b| score(a).total_cmp(&score(b)))
            .map(|c| c.idx as usize)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::super::NodeSet;
    use super::super::testing::*;
    use super::*;

    #[test]
    fn avoids_the_slow_node() {
        let eps = endpoints(&[1, 1, 1]);
        eps[0].state.observe_latency(Duration::from_millis(200));
        eps[1].state.observe_latency(Duration::from_millis(1));
        eps[2].state.observe_latency(Duration::from_millis(1));
        let set = all(&eps);
        let parts = parts("/");
        let excluded = NodeSet::new();
        let b = PeakEwma::new();
        let slow = (0..1000)
            .filter(|_| pick_with(&b, &eps, &set, &excluded, &parts) == Some(0))
            .count();
        assert_eq!(slow, 0);
    }

    #[test]
    fn in_flight_counts() {
        let eps = endpoints(&[1, 1]);
        let _busy: Vec<_> = (0..5).map(|_| eps[0].state.start_request()).collect();
        let set = all(&eps);
        let parts = parts("/");
        let excluded = NodeSet::new();
        assert_eq!(pick_with(&PeakEwma::new(), &eps, &set, &excluded, &parts), Some(1));
    }
}
