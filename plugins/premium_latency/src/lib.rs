//! Premium traffic to the fastest node: requests whose tier header (default `x-tier`)
//! names a premium tier (default `gold`, compared case-insensitively) go to the open node
//! with the lowest latency EWMA, read live from the gateway; every other request rotates
//! over the open nodes. Written against Plugin API 0.2.

use gatehouse_plugin_sdk::v2::{Balancer, Node, NodeHealth, PickRequest, RequestAttribute, Wants, stats};
use gatehouse_plugin_sdk::{export_plugin, serde};

/// The plugin's config.
#[derive(Debug, serde::Deserialize)]
#[serde(crate = "gatehouse_plugin_sdk::serde", deny_unknown_fields, default)]
pub struct Config {
    /// The header that carries the tier.
    pub header: String,
    /// Tiers that get the fastest node.
    pub premium: Vec<String>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            header: "x-tier".into(),
            premium: vec!["gold".into()],
        }
    }
}

/// The balancer.
pub struct PremiumLatency {
    config: Config,
    next: usize,
}

impl PremiumLatency {
    fn is_premium(&self, request: &PickRequest) -> bool {
        request
            .attribute(0)
            .is_some_and(|tier| self.config.premium.iter().any(|p| p.eq_ignore_ascii_case(tier.trim())))
    }
}

impl Balancer for PremiumLatency {
    type Config = Config;

    fn new(config: Config) -> Result<Self, String> {
        if config.header.trim().is_empty() {
            return Err("`header` must name a request header".into());
        }
        if config.premium.is_empty() {
            return Err("`premium` must list at least one tier".into());
        }
        Ok(Self { config, next: 0 })
    }

    fn wants(&self) -> Wants {
        Wants {
            attributes: vec![RequestAttribute::Header(self.config.header.clone())],
            ..Wants::default()
        }
    }

    fn pick(&mut self, nodes: &[Node], request: &PickRequest) -> Option<u32> {
        let open: Vec<u32> = nodes
            .iter()
            .map(|n| n.id)
            .filter(|id| !request.is_excluded(*id))
            .collect();
        if open.is_empty() {
            return None;
        }
        if self.is_premium(request) {
            // Fastest healthy node; ties go to the one with fewer requests in flight.
            let fastest = stats(&open)
                .into_iter()
                .filter(|s| s.health == NodeHealth::Healthy)
                .min_by_key(|s| (s.ewma_us, s.in_flight))
                .map(|s| s.id);
            if fastest.is_some() {
                return fastest;
            }
        }
        self.next = self.next.wrapping_add(1);
        Some(open[self.next % open.len()])
    }
}

export_plugin!(balancer_v2: PremiumLatency);

#[cfg(test)]
mod tests {
    use super::*;
    use gatehouse_plugin_sdk::v2::NodeStats;
    use gatehouse_plugin_sdk::v2::testing::{BalancerHarness, nodes};

    fn harness(config: &str) -> BalancerHarness<PremiumLatency> {
        let mut h = BalancerHarness::new(config).unwrap();
        h.update("z1", "r1", nodes(3));
        h.set_latency(0, 40_000, 0);
        h.set_latency(1, 2_000, 5);
        h.set_latency(2, 9_000, 0);
        h
    }

    #[test]
    fn gold_goes_to_the_lowest_latency_node_every_time() {
        let mut h = harness("{}");
        for id in 0..50 {
            assert_eq!(h.pick(&PickRequest::new(id, &[Some("gold")])), Some(1));
        }
        assert_eq!(
            h.pick(&PickRequest::new(1, &[Some(" GOLD ")])),
            Some(1),
            "case and spaces"
        );
    }

    #[test]
    fn a_retry_of_gold_takes_the_next_fastest() {
        let mut h = harness("{}");
        assert_eq!(h.pick(&PickRequest::new(1, &[Some("gold")]).retrying(&[1])), Some(2));
    }

    #[test]
    fn latency_changes_move_gold_traffic() {
        let mut h = harness("{}");
        h.set_latency(2, 1_000, 0);
        assert_eq!(h.pick(&PickRequest::new(1, &[Some("gold")])), Some(2));
    }

    #[test]
    fn unhealthy_nodes_do_not_get_gold_traffic() {
        let mut h = harness("{}");
        h.set_stats(NodeStats {
            id: 1,
            ewma_us: 2_000,
            health: NodeHealth::Ejected,
            ..NodeStats::default()
        });
        assert_eq!(h.pick(&PickRequest::new(1, &[Some("gold")])), Some(2));
    }

    #[test]
    fn everyone_else_rotates_over_every_node() {
        let mut h = harness("{}");
        let mut seen = [0u32; 3];
        for id in 0..30 {
            let tier = if id % 2 == 0 { Some("silver") } else { None };
            seen[h.pick(&PickRequest::new(id, &[tier])).unwrap() as usize] += 1;
        }
        assert_eq!(seen, [10, 10, 10]);
    }

    #[test]
    fn the_config_names_the_header_and_the_tiers() {
        let mut h = harness(r#"{"header": "x-plan", "premium": ["platinum", "gold"]}"#);
        assert_eq!(h.wants().attributes, vec![RequestAttribute::Header("x-plan".into())]);
        assert_eq!(h.pick(&PickRequest::new(1, &[Some("platinum")])), Some(1));
        assert!(BalancerHarness::<PremiumLatency>::new(r#"{"premium": []}"#).is_err());
        assert!(BalancerHarness::<PremiumLatency>::new(r#"{"tiers": ["gold"]}"#).is_err());
    }
}
