//! The registry of live state that outlives snapshots: one [`EndpointState`] per
//! endpoint identity (with its connection pool) and one [`ServiceLive`] per service.
//!
//! Only snapshot builds touch the registry (under its lock); the request path holds
//! `Arc`s to the states it needs.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use super::{EndpointKey, EndpointState};

/// Live state of one service, shared by every snapshot that serves it.
#[derive(Debug, Default)]
pub struct ServiceLive {
    /// Requests of this service in flight at the gateway (retry budget base).
    pub active_requests: AtomicU32,
    /// Retries in flight.
    pub active_retries: AtomicU32,
    /// Retries refused because the budget was spent.
    pub budget_exhausted: AtomicU64,
}

impl ServiceLive {
    /// Counts a request as active until the guard drops.
    pub fn start_request(self: &Arc<Self>) -> ActiveGuard {
        self.active_requests.fetch_add(1, Ordering::Relaxed);
        ActiveGuard {
            live: self.clone(),
            retry: false,
        }
    }

    /// Reserves a retry if the budget allows: retries in flight stay under
    /// `percent` of active requests, with `min_concurrent` always allowed.
    pub fn try_start_retry(self: &Arc<Self>, percent: f64, min_concurrent: u32) -> Option<ActiveGuard> {
        let active = self.active_requests.load(Ordering::Relaxed);
        let allowed = ((f64::from(active) * percent / 100.0) as u32).max(min_concurrent);
        let ok = self
            .active_retries
            .fetch_update(Ordering::AcqRel, Ordering::Relaxed, |r| (r < allowed).then_some(r + 1))
            .is_ok();
        if ok {
            Some(ActiveGuard {
                live: self.clone(),
                retry: true,
            })
        } else {
            self.budget_exhausted.fetch_add(1, Ordering::Relaxed);
            None
        }
    }
}

/// Ends an active request or retry when dropped.
#[derive(Debug)]
pub struct ActiveGuard {
    live: Arc<ServiceLive>,
    retry: bool,
}

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        let counter = if self.retry {
            &self.live.active_retries
        } else {
            &self.live.active_requests
        };
        counter.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Live state that survives snapshot swaps.
#[derive(Debug, Default)]
pub struct LiveRegistry {
    inner: Mutex<Inner>,
    health: Arc<crate::health::HealthHub>,
    /// Rate-limit and quota state, keyed by rule.
    pub limits: Arc<crate::ratelimit::LimitRegistry>,
}

#[derive(Debug, Default)]
struct Inner {
    endpoints: HashMap<EndpointKey, Arc<EndpointState>>,
    services: HashMap<Arc<str>, Arc<ServiceLive>>,
}

impl LiveRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// The states for `keys` of one service: existing ones are reused, new ones are
    /// seeded with the mean latency estimate of the existing ones (so a new node is
    /// neither flooded nor starved by latency-aware balancers).
    pub fn endpoints(&self, keys: &[EndpointKey]) -> Vec<Arc<EndpointState>> {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let known: Vec<f32> = keys
            .iter()
            .filter_map(|k| inner.endpoints.get(k))
            .map(|s| s.ewma_raw_us())
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
                    .or_insert_with(|| Arc::new(EndpointState::new(seed)))
                    .clone()
            })
            .collect()
    }

    /// The live state of a service.
    pub fn service(&self, name: &Arc<str>) -> Arc<ServiceLive> {
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
    pub fn health_hub(&self) -> &Arc<crate::health::HealthHub> {
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
        first[0].observe_latency(Duration::from_millis(10));
        first[1].observe_latency(Duration::from_millis(30));
        let second = reg.endpoints(&[key("a:1"), key("b:1"), key("c:1")]);
        assert!(Arc::ptr_eq(&first[0], &second[0]));
        let seeded = second[2].ewma_raw_us();
        assert!((seeded - 20_000.0).abs() < 1.0, "{seeded}");
        reg.retain(&[key("a:1")], &[]);
        assert_eq!(reg.endpoint_count(), 1);
    }

    #[test]
    fn retry_budget() {
        let live = Arc::new(ServiceLive::default());
        let reqs: Vec<_> = (0..20).map(|_| live.start_request()).collect();
        // 20 % of 20 = 4, min 3.
        let retries: Vec<_> = (0..10).filter_map(|_| live.try_start_retry(20.0, 3)).collect();
        assert_eq!(retries.len(), 4);
        assert_eq!(live.budget_exhausted.load(Ordering::Relaxed), 6);
        drop(retries);
        drop(reqs);
        assert_eq!(live.active_requests.load(Ordering::Relaxed), 0);
        assert_eq!(live.active_retries.load(Ordering::Relaxed), 0);
    }
}
