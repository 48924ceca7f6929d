//! Canary balancer: sends `percent` % of requests — and every request that carries
//! `header` — to the nodes tagged `tag` (default `canary`), the rest to the other nodes.
//! Within each group, nodes share traffic by smooth weighted round robin. A group with
//! no node left to try hands the request to the other group, so a canary outage never
//! fails a request that a stable node could serve.

use gatehouse_plugin_sdk::{Balancer, Node, PickRequest, RequestKey, export_plugin};
use serde::Deserialize;

/// `plugins.balancer.config`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    /// Share of requests for the canary nodes, 0–100 (fractions allowed).
    #[serde(default)]
    percent: f64,
    /// Requests carrying this header (any value) always go to the canary nodes.
    #[serde(default)]
    header: Option<String>,
    /// The tag that marks canary nodes.
    #[serde(default = "default_tag")]
    tag: String,
}

fn default_tag() -> String {
    "canary".to_string()
}

struct Canary {
    /// Percent × 100: requests with `request_id % 10_000` below it are canary requests.
    threshold: u64,
    header: Option<String>,
    tag: String,
    /// Smooth-weighted-round-robin running totals, by node id.
    current: Vec<i64>,
}

impl Canary {
    /// Smooth weighted round robin over the open nodes of one group.
    fn rotate<'a>(&mut self, group: impl Iterator<Item = &'a Node>) -> Option<u32> {
        let (mut total, mut best) = (0i64, None::<(u32, i64)>);
        for n in group {
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

impl Balancer for Canary {
    type Config = Config;

    fn new(c: Config) -> Result<Self, String> {
        if !(0.0..=100.0).contains(&c.percent) {
            return Err(format!("percent must be between 0 and 100, not {}", c.percent));
        }
        if c.tag.is_empty() {
            return Err("tag must not be empty".into());
        }
        Ok(Self {
            threshold: (c.percent * 100.0).round() as u64,
            header: c.header,
            tag: c.tag,
            current: Vec::new(),
        })
    }

    fn keys(&self) -> Vec<RequestKey> {
        self.header.iter().map(|h| RequestKey::Header(h.clone())).collect()
    }

    fn pick(&mut self, nodes: &[Node], req: &PickRequest) -> Option<u32> {
        let wants_canary = req.key(0).is_some() || req.request_id % 10_000 < self.threshold;
        let tag = std::mem::take(&mut self.tag);
        let open = |canary: bool| {
            let tag = &tag;
            nodes
                .iter()
                .filter(move |n| !req.is_excluded(n.id) && n.has_tag(tag) == canary)
        };
        let picked = self
            .rotate(open(wants_canary))
            .or_else(|| self.rotate(open(!wants_canary)));
        self.tag = tag;
        picked
    }
}

export_plugin!(balancer: Canary);

#[cfg(test)]
mod tests {
    use super::*;
    use gatehouse_plugin_sdk::key_hash;
    use gatehouse_plugin_sdk::testing::{BalancerHarness, requests};

    /// Nodes 0 and 1 stable, node 2 canary.
    fn harness(config: &str) -> BalancerHarness<Canary> {
        let mut h = BalancerHarness::new(config).unwrap();
        h.update(vec![
            Node::new(0, 1),
            Node::new(1, 1),
            Node::new(2, 1).with_tags(["canary", "v2"]),
        ]);
        h
    }

    fn canary_share(h: &mut BalancerHarness<Canary>, n: usize) -> f64 {
        let hits = requests(n).filter(|r| h.pick(r) == Some(2)).count();
        hits as f64 * 100.0 / n as f64
    }

    #[test]
    fn sends_the_configured_share_to_canary_nodes() {
        for percent in [0.0, 5.0, 10.0, 50.0, 100.0] {
            let mut h = harness(&format!(r#"{{"percent": {percent}}}"#));
            let share = canary_share(&mut h, 20_000);
            assert!(
                (share - percent).abs() < 1.0,
                "{percent}% configured, {share}% observed"
            );
        }
    }

    #[test]
    fn stable_traffic_rotates_over_stable_nodes() {
        let mut h = harness(r#"{"percent": 0}"#);
        let picks: Vec<u32> = requests(4).map(|r| h.pick(&r).unwrap()).collect();
        assert_eq!(picks, vec![0, 1, 0, 1]);
    }

    #[test]
    fn the_header_forces_the_canary() {
        let mut h = harness(r#"{"percent": 0, "header": "x-canary"}"#);
        assert_eq!(h.keys(), vec![RequestKey::Header("x-canary".into())]);
        for r in requests(50) {
            let with = r.clone().with_keys(vec![key_hash("1")]);
            assert_eq!(h.pick(&with), Some(2));
            assert_ne!(h.pick(&r.with_keys(vec![0])), Some(2));
        }
    }

    #[test]
    fn a_custom_tag_selects_other_nodes() {
        let mut h = harness(r#"{"percent": 100, "tag": "v2"}"#);
        assert!(requests(20).all(|r| h.pick(&r) == Some(2)));
    }

    #[test]
    fn falls_over_to_the_other_group() {
        let mut h = harness(r#"{"percent": 100}"#);
        // The canary was tried already: a stable node serves the retry.
        let retry = PickRequest::new(7).retrying(&[2]);
        assert!(matches!(h.pick(&retry), Some(0 | 1)));
        // No canary nodes at all.
        h.update(vec![Node::new(0, 1), Node::new(1, 1)]);
        assert!(requests(10).all(|r| h.pick(&r).is_some()));
        // Everything tried: decline.
        assert_eq!(h.pick(&PickRequest::new(1).retrying(&[0, 1])), None);
    }

    #[test]
    fn weights_apply_within_a_group() {
        let mut h = BalancerHarness::<Canary>::new(r#"{"percent": 0}"#).unwrap();
        h.update(vec![
            Node::new(0, 3),
            Node::new(1, 1),
            Node::new(2, 5).with_tags(["canary"]),
        ]);
        let zeros = requests(400).filter(|r| h.pick(r) == Some(0)).count();
        assert_eq!(zeros, 300);
    }

    #[test]
    fn rejects_bad_configs() {
        assert!(BalancerHarness::<Canary>::new(r#"{"percent": 150}"#).is_err());
        assert!(BalancerHarness::<Canary>::new(r#"{"percent": -1}"#).is_err());
        assert!(BalancerHarness::<Canary>::new(r#"{"percent": 5, "tag": ""}"#).is_err());
        assert!(BalancerHarness::<Canary>::new(r#"{"percnt": 5}"#).is_err());
        assert!(BalancerHarness::<Canary>::new("{}").is_ok());
    }
}
