//! Latency-aware health evaluator: keeps the last `window` latency samples of each node
//! and marks a node unhealthy when their median exceeds `max_latency_ms` (once at least
//! `min_samples` were seen). A node it marked unhealthy is declared healthy again when the
//! median falls to `recover_latency_ms` or below (default 80 % of the bound), so the
//! verdict does not flap around the bound.
//!
//! Only latency is judged: responses with a 5xx status and connection failures are left
//! to the gateway's built-in rules (`no-change`), and the plugin only ever clears the
//! unhealthy marks it set itself. A timeout counts as a sample at the bound's double.

use std::collections::{HashMap, HashSet, VecDeque};

use gatehouse_plugin_sdk::{HealthEvaluator, HealthVerdict, Observation, Outcome, export_plugin};
use serde::Deserialize;

/// `plugins.health.config`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    /// A median latency above this marks the node unhealthy.
    max_latency_ms: u32,
    /// At or below this, a node this plugin marked unhealthy is healthy again.
    #[serde(default)]
    recover_latency_ms: Option<u32>,
    /// Samples kept per node.
    #[serde(default = "default_window")]
    window: usize,
    /// Samples needed before judging.
    #[serde(default)]
    min_samples: Option<usize>,
}

fn default_window() -> usize {
    10
}

struct LatencyHealth {
    max_us: u64,
    recover_us: u64,
    window: usize,
    min_samples: usize,
    samples: HashMap<u32, VecDeque<u64>>,
    marked: HashSet<u32>,
}

impl LatencyHealth {
    fn median(&self, node: u32) -> Option<u64> {
        let s = self.samples.get(&node)?;
        if s.len() < self.min_samples {
            return None;
        }
        let mut sorted: Vec<u64> = s.iter().copied().collect();
        sorted.sort_unstable();
        Some(sorted[sorted.len() / 2])
    }
}

impl HealthEvaluator for LatencyHealth {
    type Config = Config;

    fn new(c: Config) -> Result<Self, String> {
        if c.max_latency_ms == 0 {
            return Err("max_latency_ms must be positive".into());
        }
        let recover = c.recover_latency_ms.unwrap_or(c.max_latency_ms * 4 / 5);
        if recover > c.max_latency_ms {
            return Err("recover_latency_ms must not exceed max_latency_ms".into());
        }
        if !(1..=1000).contains(&c.window) {
            return Err("window must be between 1 and 1000".into());
        }
        let min_samples = c.min_samples.unwrap_or(c.window.div_ceil(2));
        if !(1..=c.window).contains(&min_samples) {
            return Err("min_samples must be between 1 and window".into());
        }
        Ok(Self {
            max_us: u64::from(c.max_latency_ms) * 1000,
            recover_us: u64::from(recover) * 1000,
            window: c.window,
            min_samples,
            samples: HashMap::new(),
            marked: HashSet::new(),
        })
    }

    fn evaluate(&mut self, o: &Observation) -> HealthVerdict {
        let sample = match o.outcome {
            Outcome::Status(s) if s < 500 => u64::from(o.latency_us),
            Outcome::Timeout => self.max_us * 2,
            _ => return HealthVerdict::NoChange,
        };
        let window = self.window;
        let s = self.samples.entry(o.node).or_default();
        if s.len() == window {
            s.pop_front();
        }
        s.push_back(sample);
        let Some(median) = self.median(o.node) else {
            return HealthVerdict::NoChange;
        };
        if median > self.max_us {
            self.marked.insert(o.node);
            HealthVerdict::Unhealthy
        } else if median <= self.recover_us && self.marked.remove(&o.node) {
            HealthVerdict::Healthy
        } else {
            HealthVerdict::NoChange
        }
    }
}

export_plugin!(health_evaluator: LatencyHealth);

#[cfg(test)]
mod tests {
    use super::*;
    use gatehouse_plugin_sdk::testing::HealthHarness;

    fn feed(h: &mut HealthHarness<LatencyHealth>, node: u32, ms: u32, n: usize) -> Vec<HealthVerdict> {
        (0..n).map(|_| h.evaluate(&Observation::ok(node, ms))).collect()
    }

    #[test]
    fn slow_nodes_go_unhealthy_and_come_back() {
        let mut h = HealthHarness::<LatencyHealth>::new(r#"{"max_latency_ms": 100, "window": 4}"#).unwrap();
        assert!(feed(&mut h, 1, 20, 4).iter().all(|v| *v == HealthVerdict::NoChange));
        // Two slow samples of four: the median (upper middle) is slow.
        assert_eq!(
            feed(&mut h, 1, 300, 2),
            vec![HealthVerdict::NoChange, HealthVerdict::Unhealthy]
        );
        assert_eq!(feed(&mut h, 1, 300, 1), vec![HealthVerdict::Unhealthy]);
        // Back to fast: healthy once the median recovers, then quiet again.
        let v = feed(&mut h, 1, 20, 4);
        assert_eq!(v.iter().filter(|v| **v == HealthVerdict::Healthy).count(), 1, "{v:?}");
        assert_eq!(feed(&mut h, 1, 20, 3), vec![HealthVerdict::NoChange; 3]);
    }

    #[test]
    fn nodes_are_judged_separately_and_need_enough_samples() {
        let mut h = HealthHarness::<LatencyHealth>::new(r#"{"max_latency_ms": 50, "window": 10}"#).unwrap();
        assert_eq!(feed(&mut h, 7, 500, 4), vec![HealthVerdict::NoChange; 4]);
        assert_eq!(feed(&mut h, 7, 500, 1), vec![HealthVerdict::Unhealthy]);
        assert_eq!(feed(&mut h, 8, 10, 10), vec![HealthVerdict::NoChange; 10]);
    }

    #[test]
    fn errors_are_left_to_the_builtin_rules_and_timeouts_count_as_slow() {
        let mut h =
            HealthHarness::<LatencyHealth>::new(r#"{"max_latency_ms": 50, "window": 2, "min_samples": 1}"#).unwrap();
        let fail = |outcome| Observation {
            outcome,
            ..Observation::ok(3, 1)
        };
        assert_eq!(h.evaluate(&fail(Outcome::Status(503))), HealthVerdict::NoChange);
        assert_eq!(h.evaluate(&fail(Outcome::ConnectFailure)), HealthVerdict::NoChange);
        assert_eq!(h.evaluate(&fail(Outcome::Timeout)), HealthVerdict::Unhealthy);
    }

    #[test]
    fn never_clears_marks_it_did_not_set() {
        let mut h = HealthHarness::<LatencyHealth>::new(r#"{"max_latency_ms": 50, "min_samples": 1}"#).unwrap();
        assert_eq!(feed(&mut h, 2, 1, 5), vec![HealthVerdict::NoChange; 5]);
    }

    #[test]
    fn rejects_bad_configs() {
        for bad in [
            "{}",
            r#"{"max_latency_ms": 0}"#,
            r#"{"max_latency_ms": 10, "recover_latency_ms": 20}"#,
            r#"{"max_latency_ms": 10, "window": 0}"#,
            r#"{"max_latency_ms": 10, "window": 5, "min_samples": 6}"#,
        ] {
            assert!(HealthHarness::<LatencyHealth>::new(bad).is_err(), "{bad}");
        }
    }
}
