//! Native tests of 0.2 balancers: [`BalancerHarness`] runs a plugin as the gateway
//! does, and scripts what [`super::stats`] answers and which tries are observed.

use std::cell::RefCell;
use std::collections::BTreeMap;

use super::{Balancer, BalancerRt, Node, NodeStats, Outcome, PickRequest, Placement, TryReport, Wants};

thread_local! {
    static STATS: RefCell<BTreeMap<u32, NodeStats>> = const { RefCell::new(BTreeMap::new()) };
}

/// What [`super::stats`] answers natively: the scripted statistics of `ids`.
pub(super) fn stats(ids: &[u32]) -> Vec<NodeStats> {
    STATS.with(|s| {
        let s = s.borrow();
        ids.iter().filter_map(|id| s.get(id).copied()).collect()
    })
}

/// `count` nodes with ids `0..count`, addresses `10.0.0.<id>:80`, weight 1, fully ramped.
pub fn nodes(count: u32) -> Vec<Node> {
    (0..count)
        .map(|id| {
            let address = format!("10.0.0.{id}:80");
            Node {
                id,
                key: crate::key_hash(&address),
                address,
                weight: 1,
                configured_weight: 1,
                slow_start: 1.0,
                ..Node::default()
            }
        })
        .collect()
}

/// Runs a 0.2 balancer natively, the way the gateway calls it.
pub struct BalancerHarness<T: Balancer> {
    rt: BalancerRt<T>,
}

impl<T: Balancer> std::fmt::Debug for BalancerHarness<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BalancerHarness")
            .field("nodes", &self.rt.nodes().len())
            .finish_non_exhaustive()
    }
}

impl<T: Balancer> BalancerHarness<T> {
    /// `init` with `config` (JSON text); clears the scripted statistics.
    pub fn new(config: &str) -> Result<Self, String> {
        STATS.with(|s| s.borrow_mut().clear());
        let mut rt = BalancerRt::new();
        rt.init(config)?;
        Ok(Self { rt })
    }

    /// `wants`.
    pub fn wants(&self) -> Wants {
        self.rt.wants()
    }

    /// `update` with `nodes`, the gateway in `zone`/`region`.
    pub fn update(&mut self, zone: &str, region: &str, nodes: Vec<Node>) {
        let placement = Placement {
            zone: zone.into(),
            region: region.into(),
        };
        self.rt.update(placement, nodes);
    }

    /// Scripts node `id`'s latency EWMA and in-flight count (healthy, no failures).
    pub fn set_latency(&mut self, id: u32, ewma_us: u32, in_flight: u32) {
        self.set_stats(NodeStats {
            id,
            ewma_us,
            in_flight,
            ..NodeStats::default()
        });
    }

    /// Scripts what [`super::stats`] answers for `stats.id`.
    pub fn set_stats(&mut self, stats: NodeStats) {
        STATS.with(|s| s.borrow_mut().insert(stats.id, stats));
    }

    /// `pick`.
    pub fn pick(&mut self, request: &PickRequest) -> Option<u32> {
        self.rt.pick(request)
    }

    /// `observe` of one try, if the plugin wants tries.
    pub fn observe(&mut self, node: u32, outcome: Outcome, latency_us: u32) {
        if self.rt.wants().observe {
            self.rt.observe(&TryReport {
                node,
                outcome,
                latency_us,
            });
        }
    }

    /// The plugin.
    pub fn plugin(&mut self) -> &mut T {
        self.rt.plugin_mut()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::NoConfig;

    /// The lowest-latency open node, learning latencies from observed tries too.
    struct Fastest {
        seen: BTreeMap<u32, u32>,
    }

    impl Balancer for Fastest {
        type Config = NoConfig;

        fn new(_: NoConfig) -> Result<Self, String> {
            Ok(Fastest { seen: BTreeMap::new() })
        }

        fn wants(&self) -> Wants {
            Wants {
                observe: true,
                ..Wants::default()
            }
        }

        fn pick(&mut self, nodes: &[Node], req: &PickRequest) -> Option<u32> {
            let open: Vec<u32> = nodes.iter().map(|n| n.id).filter(|id| !req.is_excluded(*id)).collect();
            super::super::stats(&open)
                .into_iter()
                .min_by_key(|s| s.ewma_us.max(self.seen.get(&s.id).copied().unwrap_or(0)))
                .map(|s| s.id)
        }

        fn observe(&mut self, report: &TryReport) {
            self.seen.insert(report.node, report.latency_us);
        }
    }

    #[test]
    fn scripted_stats_and_observed_tries_reach_the_plugin() {
        let mut h = BalancerHarness::<Fastest>::new("{}").unwrap();
        h.update("z1", "r1", nodes(3));
        h.set_latency(0, 900, 0);
        h.set_latency(1, 200, 0);
        h.set_latency(2, 500, 0);
        assert_eq!(h.pick(&PickRequest::new(1, &[])), Some(1));
        assert_eq!(h.pick(&PickRequest::new(2, &[]).retrying(&[1])), Some(2));
        h.observe(1, Outcome::Status(200), 5_000);
        assert_eq!(h.pick(&PickRequest::new(3, &[])), Some(2));
        assert_eq!(stats(&[7]), vec![], "unknown ids are left out");
    }
}
