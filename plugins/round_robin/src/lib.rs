//! Smooth weighted round robin (nginx's algorithm, the same policy as the built-in
//! `roundrobin`): each pick adds every open node's weight to its running total, takes the
//! largest and subtracts the sum of weights from it.

use gatehouse_plugin_sdk::{Balancer, NoConfig, Node, PickRequest, export_plugin};

/// Running totals, indexed by node id.
#[derive(Default)]
struct RoundRobin {
    current: Vec<i64>,
}

impl Balancer for RoundRobin {
    type Config = NoConfig;

    fn new(_: NoConfig) -> Result<Self, String> {
        Ok(Self::default())
    }

    fn pick(&mut self, nodes: &[Node], req: &PickRequest) -> Option<u32> {
        let (mut total, mut best) = (0i64, None::<(u32, i64)>);
        for n in nodes.iter().filter(|n| !req.is_excluded(n.id)) {
            let i = n.id as usize;
            if self.current.len() <= i {
                self.current.resize(i + 1, 0);
            }
            self.current[i] += i64::from(n.weight);
            total += i64::from(n.weight);
            if best.is_none_or(|(_, b)| self.current[i] > b) {
                best = Some((n.id, self.current[i]));
            }
        }
        let (id, _) = best?;
        self.current[id as usize] -= total;
        Some(id)
    }
}

export_plugin!(balancer: RoundRobin);

#[cfg(test)]
mod tests {
    use super::*;
    use gatehouse_plugin_sdk::testing::{BalancerHarness, requests};

    fn harness(weights: &[u32]) -> BalancerHarness<RoundRobin> {
        let mut h = BalancerHarness::new("{}").unwrap();
        h.update(
            weights
                .iter()
                .enumerate()
                .map(|(i, w)| Node::new(i as u32, *w))
                .collect(),
        );
        h
    }

    #[test]
    fn equal_weights_rotate() {
        let mut h = harness(&[1, 1, 1]);
        let picks: Vec<u32> = requests(6).map(|r| h.pick(&r).unwrap()).collect();
        assert_eq!(picks, vec![0, 1, 2, 0, 1, 2]);
    }

    #[test]
    fn weights_are_smooth() {
        // nginx's classic example: weights 5, 1, 1 -> a a b a c a a
        let mut h = harness(&[5, 1, 1]);
        let picks: Vec<u32> = requests(7).map(|r| h.pick(&r).unwrap()).collect();
        assert_eq!(picks, vec![0, 0, 1, 0, 2, 0, 0]);
    }

    #[test]
    fn never_picks_an_excluded_node() {
        let mut h = harness(&[1, 1]);
        for r in requests(10) {
            assert_eq!(h.pick(&r.retrying(&[0])), Some(1));
        }
        assert_eq!(h.pick(&PickRequest::new(1).retrying(&[0, 1])), None);
    }

    #[test]
    fn node_set_changes_are_followed() {
        let mut h = harness(&[1, 1]);
        h.update(vec![Node::new(4, 1)]);
        assert!(requests(5).all(|r| h.pick(&r) == Some(4)));
    }
}
