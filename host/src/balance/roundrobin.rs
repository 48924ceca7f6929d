//! Smooth weighted round robin (nginx): every pick adds each candidate's weight to
//! its running total, takes the largest, and subtracts the sum of weights from it.
//! Over any window of `sum(weights)` picks each endpoint gets exactly its share,
//! interleaved rather than in bursts.

use std::sync::Mutex;
use std::sync::atomic::Ordering;

use super::{Balancer, PickContext};

/// Smooth weighted round robin. The running totals live in the endpoints' state.
#[derive(Debug, Default)]
pub struct RoundRobin {
    /// Serializes picks so one pick sees and updates all totals consistently.
    lock: Mutex<()>,
}

impl RoundRobin {
    /// A new balancer.
    pub fn new() -> Self {
        Self::default()
    }
}

impl Balancer for RoundRobin {
    fn name(&self) -> &str {
        "roundrobin"
    }

    fn pick(&self, ctx: &PickContext<'_>) -> Option<usize> {
        let _serial = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        let mut total: i64 = 0;
        let mut best: Option<(usize, i64)> = None;
        for c in ctx.open() {
            let w = i64::from(c.weight);
            let cur = ctx.endpoints[c.idx as usize].state.rr_current();
            let now = cur.load(Ordering::Relaxed) + w;
            cur.store(now, Ordering::Relaxed);
            total += w;
            if best.is_none_or(|(_, b)| now > b) {
                best = Some((c.idx as usize, now));
            }
        }
        let (idx, _) = best?;
        ctx.endpoints[idx]
            .state
            .rr_current()
            .fetch_sub(total, Ordering::Relaxed);
        Some(idx)
    }
}

#[cfg(test)]
mod tests {
    use super::super::NodeSet;
    use super::super::testing::*;
    use super::*;

    fn run(weights: &[u32], picks: usize) -> Vec<usize> {
        let eps = endpoints(weights);
        let set = all(&eps);
        let parts = parts("/");
        let rr = RoundRobin::new();
        let excluded = NodeSet::new();
        (0..picks)
            .map(|_| pick_with(&rr, &eps, &set, &excluded, &parts).unwrap())
            .collect()
    }

    #[test]
    fn exact_shares_over_a_cycle() {
        let seq = run(&[100, 100, 50], 1000);
        let count = |i| seq.iter().filter(|&&x| x == i).count();
        assert_eq!((count(0), count(1), count(2)), (400, 400, 200));
    }

    #[test]
    fn smooth_interleaving() {
        assert_eq!(run(&[5, 1, 1], 7), vec![0, 0, 1, 0, 2, 0, 0]);
    }

    #[test]
    fn zero_weight_gets_nothing_and_exclusion_is_respected() {
        let seq = run(&[0, 1, 1], 10);
        assert!(!seq.contains(&0));
        let eps = endpoints(&[1, 1, 1]);
        let set = all(&eps);
        let parts = parts("/");
        let mut excluded = NodeSet::new();
        excluded.insert(0);
        excluded.insert(2);
        let rr = RoundRobin::new();
        for _ in 0..5 {
            assert_eq!(pick_with(&rr, &eps, &set, &excluded, &parts), Some(1));
        }
        excluded.insert(1);
        assert_eq!(pick_with(&rr, &eps, &set, &excluded, &parts), None);
    }
}
