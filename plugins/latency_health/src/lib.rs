//! Latency-aware health evaluator: keeps the last `window` latency samples of each node
//! and, while their median exceeds `max_latency_ms`, classifies the node's observations as
//! failures (`count_as`: `timeout` by default, or `http`). The gateway's own thresholds
//! then mark the node unhealthy (for example after `unhealthy.timeouts` such failures in a
//! row) and bring it back through its usual recovery. Everything else — statuses,
//! connection failures — is left to the built-in classification of the version's `checks`.
//!
//! Samples come from successful exchanges (any status below 500, or a connected TCP
//! probe); a timeout counts as a sample at twice the bound. A median needs `min_samples`
//! samples (default half the window), so one slow response changes nothing.

use std::collections::{HashMap, VecDeque};

use gatehouse_plugin_sdk::{FailureKind, HealthEvaluator, HealthVerdict, Observation, Observed, export_plugin};
use serde::Deserialize;

/// `plugins.health.config`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    /// A median latency above this makes observations of the node failures.
    max_latency_ms: u32,
    /// Samples kept per node.
    #[serde(default = "default_window")]
    window: usize,
    /// Samples needed before judging.
    #[serde(default)]
    min_samples: Option<usize>,
    /// The failure counter slow observations feed.
    #[serde(default)]
    count_as: CountAs,
}

#[derive(Debug, Default, Clone, Copy, Deserialize)]
#[serde(rename_all = "snake_case")]
enum CountAs {
    #[default]
    Timeout,
    Http,
}

fn default_window() -> usize {
    10
}

struct LatencyHealth {
    max_us: u64,
    window: usize,
    min_samples: usize,
    kind: FailureKind,
    samples: HashMap<u64, VecDeque<u64>>,
}

impl LatencyHealth {
    fn median(&self, node: u64) -> Option<u64> {
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
        if !(1..=1000).contains(&c.window) {
            return Err("window must be between 1 and 1000".into());
        }
        let min_samples = c.min_samples.unwrap_or(c.window.div_ceil(2));
        if !(1..=c.window).contains(&min_samples) {
            return Err("min_samples must be between 1 and window".into());
        }
        Ok(Self {
            max_us: u64::from(c.max_latency_ms) * 1000,
            window: c.window,
            min_samples,
            kind: match c.count_as {
                CountAs::Timeout => FailureKind::Timeout,
                CountAs::Http => FailureKind::Http,
            },
            samples: HashMap::new(),
        })
    }

    fn evaluate(&mut self, o: &Observation) -> HealthVerdict {
        let sample = match o.observed {
            Observed::Status(s) if s < 500 => u64::from(o.latency_us),
            Observed::Connected => u64::from(o.latency_us),
            Observed::Timeout => self.max_us * 2,
            _ => return HealthVerdict::Builtin,
        };
        let window = self.window;
        let s = self.samples.entry(o.node).or_default();
        if s.len() == window {
            s.pop_front();
        }
        s.push_back(sample);
        match self.median(o.node) {
            Some(m) if m > self.max_us => HealthVerdict::Failure(self.kind),
            _ => HealthVerdict::Builtin,
        }
    }
}

export_plugin!(health_evaluator: LatencyHealth);

#[cfg(test)]
mod tests {
    use super::*;
    use gatehouse_plugin_sdk::testing::HealthHarness;

    fn feed(h: &mut HealthHarness<LatencyHealth>, node: &str, ms: u32, n: usize) -> Vec<HealthVerdict> {
        (0..n).map(|_| h.evaluate(&Observation::ok(node, ms))).collect()
    }

    const SLOW: HealthVerdict = HealthVerdict::Failure(FailureKind::Timeout);
    const PASS: HealthVerdict = HealthVerdict::Builtin;

    #[test]
    fn slow_nodes_fail_until_their_median_recovers() {
        let mut h = HealthHarness::<LatencyHealth>::new(r#"{"max_latency_ms": 100, "window": 4}"#).unwrap();
        assert_eq!(feed(&mut h, "a:1", 20, 4), vec![PASS; 4]);
        // Two slow samples of four: the median (upper middle) is slow.
        assert_eq!(feed(&mut h, "a:1", 300, 2), vec![PASS, SLOW]);
        assert_eq!(feed(&mut h, "a:1", 300, 1), vec![SLOW]);
        // Fast again: failures until the slow samples leave the median.
        assert_eq!(feed(&mut h, "a:1", 20, 4), vec![SLOW, SLOW, PASS, PASS]);
    }

    #[test]
    fn nodes_are_judged_separately_and_need_enough_samples() {
        let mut h = HealthHarness::<LatencyHealth>::new(r#"{"max_latency_ms": 50, "window": 10}"#).unwrap();
        assert_eq!(feed(&mut h, "slow:1", 500, 4), vec![PASS; 4]);
        assert_eq!(feed(&mut h, "slow:1", 500, 1), vec![SLOW]);
        assert_eq!(feed(&mut h, "fast:1", 10, 10), vec![PASS; 10]);
    }

    #[test]
    fn errors_are_left_to_the_builtin_and_timeouts_count_as_slow() {
        let mut h = HealthHarness::<LatencyHealth>::new(
            r#"{"max_latency_ms": 50, "window": 2, "min_samples": 1, "count_as": "http"}"#,
        )
        .unwrap();
        let seen = |observed| Observation {
            observed,
            ..Observation::ok("n:1", 1)
        };
        assert_eq!(h.evaluate(&seen(Observed::Status(503))), PASS);
        assert_eq!(h.evaluate(&seen(Observed::ConnectFailure)), PASS);
        assert_eq!(h.evaluate(&seen(Observed::Reset)), PASS);
        assert_eq!(
            h.evaluate(&seen(Observed::Timeout)),
            HealthVerdict::Failure(FailureKind::Http)
        );
    }

    #[test]
    fn rejects_bad_configs() {
        for bad in [
            "{}",
            r#"{"max_latency_ms": 0}"#,
            r#"{"max_latency_ms": 10, "window": 0}"#,
            r#"{"max_latency_ms": 10, "window": 5, "min_samples": 6}"#,
            r#"{"max_latency_ms": 10, "count_as": "tcp"}"#,
        ] {
            assert!(HealthHarness::<LatencyHealth>::new(bad).is_err(), "{bad}");
        }
    }
}
