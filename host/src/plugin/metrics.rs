//! Prometheus metrics of plugins, read from the registry at scrape time (the request
//! path only bumps the atomics of [`super::stats::Stats`]).
//!
//! - `gatehouse_plugin_calls_total{plugin}`
//! - `gatehouse_plugin_faults_total{plugin,fault}` (trap, timeout, memory, contract, init)
//! - `gatehouse_plugin_declines_total{plugin}` and `gatehouse_plugin_refusals_total{plugin}`:
//!   decisions the plugin declined, and decisions the built-in made for a refused config;
//! - `gatehouse_plugin_fallbacks_total{plugin}`: decisions the built-in made instead
//! - `gatehouse_plugin_call_duration_seconds{plugin}` (histogram)
//! - `gatehouse_plugin_loads_total{plugin,result}` (loaded, rejected)
//! - `gatehouse_plugin_state{plugin,state}`: 1 for the current state

use std::sync::Weak;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

use super::registry::{Registry, Slot};
use super::stats::{BUCKETS, FaultKind, StatsSnapshot, bucket_bound_ns};

/// Encodes the plugin families on each scrape.
#[derive(Debug)]
pub struct PluginCollector {
    registry: Weak<Registry>,
}

impl PluginCollector {
    /// A collector over `registry` (weak: it goes quiet when the runtime stops).
    pub fn new(registry: Weak<Registry>) -> Self {
        Self { registry }
    }
}

fn totals(slot: &Slot) -> StatsSnapshot {
    let retired = slot.retired.snapshot();
    match slot.current().as_ref() {
        Some(g) => retired.plus(&g.stats.snapshot()),
        None => retired,
    }
}

impl Collector for PluginCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let Some(registry) = self.registry.upgrade() else {
            return Ok(());
        };
        let slots: Vec<_> = registry.slots().into_iter().map(|s| (totals(&s), s)).collect();

        let mut calls =
            encoder.encode_descriptor("plugin_calls", "Plugin calls completed", None, MetricType::Counter)?;
        for (t, s) in &slots {
            ConstCounter::new(t.calls).encode(calls.encode_family(&[("plugin", s.name.as_str())])?)?;
        }
        let mut faults = encoder.encode_descriptor(
            "plugin_faults",
            "Plugin calls that failed, by fault",
            None,
            MetricType::Counter,
        )?;
        for (t, s) in &slots {
            for k in FaultKind::ALL {
                let labels = [("plugin", s.name.as_str()), ("fault", k.as_str())];
                ConstCounter::new(t.faults_of(k)).encode(faults.encode_family(&labels)?)?;
            }
        }
        let mut fallbacks = encoder.encode_descriptor(
            "plugin_fallbacks",
            "Decisions the built-in policy made after a plugin fault or while it is disabled",
            None,
            MetricType::Counter,
        )?;
        for (t, s) in &slots {
            ConstCounter::new(t.fallbacks).encode(fallbacks.encode_family(&[("plugin", s.name.as_str())])?)?;
        }
        let mut declines = encoder.encode_descriptor(
            "plugin_declines",
            "Decisions a plugin left to the built-in policy on purpose",
            None,
            MetricType::Counter,
        )?;
        for (t, s) in &slots {
            ConstCounter::new(t.declines).encode(declines.encode_family(&[("plugin", s.name.as_str())])?)?;
        }
        let mut refusals = encoder.encode_descriptor(
            "plugin_refusals",
            "Decisions the built-in policy made because the plugin refused the config of that use",
            None,
            MetricType::Counter,
        )?;
        for (t, s) in &slots {
            ConstCounter::new(t.refusals).encode(refusals.encode_family(&[("plugin", s.name.as_str())])?)?;
        }
        let mut duration = encoder.encode_descriptor(
            "plugin_call_duration_seconds",
            "Duration of plugin calls",
            None,
            MetricType::Histogram,
        )?;
        for (t, s) in &slots {
            let mut cumulative = 0;
            let buckets: Vec<(f64, u64)> = (0..BUCKETS)
                .map(|i| {
                    cumulative += t.buckets[i];
                    (bucket_bound_ns(i) as f64 / 1e9, cumulative)
                })
                .collect();
            duration
                .encode_family(&[("plugin", s.name.as_str())])?
                .encode_histogram::<[(&str, &str); 0]>(t.sum_ns as f64 / 1e9, cumulative, &buckets, None)?;
        }
        let mut loads = encoder.encode_descriptor(
            "plugin_loads",
            "Plugin files loaded or rejected",
            None,
            MetricType::Counter,
        )?;
        for (_, s) in &slots {
            let loaded = s.loads.load(std::sync::atomic::Ordering::Relaxed);
            let rejected = s.rejects.load(std::sync::atomic::Ordering::Relaxed);
            for (result, n) in [("loaded", loaded), ("rejected", rejected)] {
                let labels = [("plugin", s.name.as_str()), ("result", result)];
                ConstCounter::new(n).encode(loads.encode_family(&labels)?)?;
            }
        }
        let mut states = encoder.encode_descriptor(
            "plugin_state",
            "Plugin state (1 for the current one)",
            None,
            MetricType::Gauge,
        )?;
        for (_, s) in &slots {
            let now = s.state();
            for st in ["active", "disabled", "rejected", "absent"] {
                let labels = [("plugin", s.name.as_str()), ("state", st)];
                ConstGauge::new(i64::from(st == now)).encode(states.encode_family(&labels)?)?;
            }
        }
        Ok(())
    }
}
