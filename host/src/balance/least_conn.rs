//! Least connections: the candidate with the lowest `(in-flight + 1) / weight`.
//! Ties are broken by a rotating start so equal nodes share the load.

use std::sync::atomic::{AtomicUsize, Ordering};

use super::{Balancer, PickContext};

/// Least-connections balancer.
#[derive(Debug, Default)]
pub struct LeastConn {
    rotor: AtomicUsize,
}

impl LeastConn {
    /// A new balancer.
    pub fn new() -> Self {
        Self::default()
    }
}

impl Balancer for LeastConn {
    fn name(&self) -> &str {
        "least_conn"
    }

    fn pick(&self, ctx: &PickContext<'_>) -> Option<usize> {
        let list = &ctx.candidates.list;
        let n = list.len();
        if n == 0 {
            return None;
        }
        let start = self.rotor.fetch_add(1, Ordering::Relaxed) % n;
        let mut best: Option<(usize, u64, u64)> = None; // (idx, load numerator, weight)
        for k in 0..n {
            let c = &list[(start + k) % n];
            if ctx.excluded.contains(c.idx as usize) {
                continue;
            }
            let load = u64::from(ctx.endpoints[c.idx as usize].state.inflight()) + 1;
            let w = u64::from(c.weight.max(1));
            // load/w < best_load/best_w  <=>  load*best_w < best_load*w
            if best.is_none_or(|(_, bl, bw)| load * bw < bl * w) {
                best = Some((c.idx as usize, load, w));
            }
        }
        best.map(|(idx, _, _)| idx)
    }
}

#[cfg(test)]
mod tests {
    use super::super::NodeSet;
    use super::super::testing::*;
    use super::*;

    #[test]
    fn prefers_fewest_in_flight_per_weight() {
        let eps = endpoints(&[1, 1, 2]);
        let _g: Vec<_> = (0..2)
            .map(|_| eps[0].state.start_request())
            .chain((0..3).map(|_| eps[2].state.start_request()))
            .collect();
        // loads: 3/1, 1/1, 4/2 -> node 1
        let set = all(&eps);
        let parts = parts("/");
        let excluded = NodeSet::new();
        assert_eq!(pick_with(&LeastConn::new(), &eps, &set, &excluded, &parts), Some(1));
    }

    #[test]
    fn ties_rotate() {
        let eps = endpoints(&[1, 1, 1]);
        let set = all(&eps);
        let parts = parts("/");
        let excluded = NodeSet::new();
        let lc = LeastConn::new();
        let mut seen = std::collections::HashSet::new();
        for _ in 0..3 {
            seen.insert(pick_with(&lc, &eps, &set, &excluded, &parts).unwrap());
        }
        assert_eq!(seen.len(), 3);
    }
}
