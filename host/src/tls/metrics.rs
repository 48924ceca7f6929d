//! Prometheus metrics of TLS listeners, computed at scrape time:
//!
//! - `gatehouse_tls_certificate_expiry_seconds{listener,cert,names}`: seconds until
//!   the certificate expires (negative once expired)
//! - `gatehouse_tls_handshake_failures_total{listener}`: failed or timed-out handshakes

use std::sync::Weak;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

use super::TlsRuntime;

/// Encodes the TLS families on each scrape.
#[derive(Debug)]
pub struct TlsCollector {
    runtime: Weak<TlsRuntime>,
}

impl TlsCollector {
    /// A collector over `runtime` (weak: it goes quiet when the gateway stops).
    pub fn new(runtime: Weak<TlsRuntime>) -> Self {
        Self { runtime }
    }
}

impl Collector for TlsCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let Some(rt) = self.runtime.upgrade() else {
            return Ok(());
        };
        let certs = rt.certificates();
        if !certs.is_empty() {
            let mut expiry = encoder.encode_descriptor(
                "tls_certificate_expiry_seconds",
                "Seconds until a served certificate expires",
                None,
                MetricType::Gauge,
            )?;
            for c in &certs {
                let listener = c.listener.to_string();
                let names = c.names.join(",");
                let labels = [
                    ("listener", listener.as_str()),
                    ("cert", c.cert.as_str()),
                    ("names", names.as_str()),
                ];
                ConstGauge::new(c.expires_in_seconds).encode(expiry.encode_family(&labels)?)?;
            }
        }
        let failures = rt.handshake_failures();
        if !failures.is_empty() {
            let mut family = encoder.encode_descriptor(
                "tls_handshake_failures",
                "TLS handshakes that failed or timed out",
                None,
                MetricType::Counter,
            )?;
            for (addr, n) in failures {
                let listener = addr.to_string();
                ConstCounter::new(n).encode(family.encode_family(&[("listener", listener.as_str())])?)?;
            }
        }
        Ok(())
    }
}
