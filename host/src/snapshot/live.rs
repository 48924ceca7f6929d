//! The registry of live state that outlives snapshots: per endpoint identity its
//! [`EndpointState`] (with its connection pool) and its [`EndpointHealth`], per
//! service its [`RetryBudget`], plus the health hub and the rate-limit registry.
//!
//! Only snapshot builds touch the registry (under its lock); the request path holds
//! `Arc`s to the states it needs.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::health::{EndpointHealth, HealthHub};
use crate::outcome::EndpointKey;
use crate::ratelimit::LimitRegistry;
use crate::retry::RetryBudget;
use crate::upstream::EndpointState;

/// The live state of one endpoint identity, as a snapshot build hands it out.
#[derive(Debug, Clone)]
pub struct LiveEndpoint {
    /// In-flight, latency, balancer position, connection pool.
    pub state: Arc<EndpointState>,
    /// Health, breaker and ejection state.
    pub health: Arc<EndpointHealth>,
}

/// Live state that survives snapshot swaps.
#[derive(Debug, Default)]
pub struct LiveRegistry {
    inner: Mutex<Inner>,
    health: Arc<HealthHub>,
    /// Rate-limit and quota state, keyed by rule.
    pub limits: Arc<LimitRegistry>,
}

#[derive(Debug, Default)]
struct Inner {
    endpoints: HashMap<EndpointKey, LiveEndpoint>,
    services: HashMap<Arc<str>, Arc<RetryBudget>>,
}

impl LiveRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty registry whose health hub records transitions in `events`.
    pub fn with_events(events: Arc<crate::events::Events>) -> Self {
        LiveRegistry {
            health: Arc::new(HealthHub::with_events(events)),
            ..Self::default()
        }
    }

    /// The states for `keys` of one service: existing ones are reused, new ones are
    /// seeded with the mean latency estimate of the existing ones (so a new node is
    /// neither flooded nor starved by latency-aware balancers).
    pub fn endpoints(&self, keys: &[EndpointKey]) -> Vec<LiveEndpoint> {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let known: Vec<f32> = keys
            .iter()
            .filter_map(|k| inner.endpoints.get(k))
            .map(|s| s.state.ewma_raw_us())
            .collect();
        let seed = if known.is_empty() {
            0.0
        } else {
            known.iter().sum::<f32>() / known.len() as f32
        };
        keys.iter()
            .map(|k| {
                inner
                    .endpoints
                    .entry(k.clone())
                    .or_insert_with(|| LiveEndpoint {
                        state: Arc::new(EndpointState::new(seed)),
                        health: Arc::default(),
                    })
                    .clone()
            })
            .collect()
    }

    /// The retry budget of a service.
    pub fn budget(&self, name: &Arc<str>) -> Arc<RetryBudget> {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        inner.services.entry(name.clone()).or_default().clone()
    }

    /// Forgets endpoints and services that are no longer served, and limiter state
    /// no snapshot uses any more.
    pub fn retain(&self, endpoints: &[EndpointKey], services: &[Arc<str>]) {
        self.limits.sweep();
        let keep: std::collections::HashSet<&EndpointKey> = endpoints.iter().collect();
        let keep_services: std::collections::HashSet<&Arc<str>> = services.iter().collect();
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        inner.endpoints.retain(|k, _| keep.contains(k));
        inner.services.retain(|k, _| keep_services.contains(k));
    }

    /// The health signal and metric families shared by every snapshot.
    pub fn health_hub(&self) -> &Arc<HealthHub> {
        &self.health
    }

    /// Number of endpoint states held.
    pub fn endpoint_count(&self) -> usize {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).endpoints.len()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn key(a: &str) -> EndpointKey {
        EndpointKey {
            service: "s".into(),
            authority: a.into(),
        }
    }

    #[test]
    fn state_survives_and_new_nodes_are_seeded_at_the_mean() {
        let reg = LiveRegistry::new();
        let first = reg.endpoints(&[key("a:1"), key("b:1")]);
        first[0].state.observe_latency(Duration::from_millis(10));
        first[1].state.observe_latency(Duration::from_millis(30));
        let second = reg.endpoints(&[key("a:1"), key("b:1"), key("c:1")]);
        assert!(Arc::ptr_eq(&first[0].state, &second[0].state));
        assert!(Arc::ptr_eq(&first[0].health, &second[0].health));
        let seeded = second[2].state.ewma_raw_us();
        assert!((seeded - 20_000.0).abs() < 1.0, "{seeded}");
        reg.retain(&[key("a:1")], &[]);
        assert_eq!(reg.endpoint_count(), 1);
    }
}
