//! The active-probe scheduler: one probe task per endpoint with an active check,
//! keyed by endpoint identity and reconciled on every config apply. Tasks run under
//! the gateway's shutdown tree (a child token each, one tracker).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::runtime::Handle;
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::probe::run_probe;
use super::sweep::SWEEP_INTERVAL;
use super::{Snapshot, Upstream};
use crate::health::{HealthState, Observation, ProbeSpec, Source};
use crate::outcome::EndpointKey;

/// Probe intervals vary by up to this fraction either way, so units that share
/// nodes do not probe in lock-step.
pub const INTERVAL_JITTER: f64 = 0.1;

/// What one probe task probes now; replaced on every apply.
struct ProbeTarget {
    upstream: Arc<Upstream>,
    idx: usize,
    spec: ProbeSpec,
    /// `https` probes: TLS under the spec's settings (one per upstream).
    connector: Option<Arc<crate::tls::client::UpstreamConnector>>,
    limit: Arc<Semaphore>,
}

struct ProbeTask {
    target: Arc<ArcSwap<ProbeTarget>>,
    stop: CancellationToken,
}

#[derive(Default)]
struct Inner {
    probes: HashMap<EndpointKey, ProbeTask>,
    /// Per service: `concurrency` and its semaphore.
    limits: HashMap<Arc<str>, (u32, Arc<Semaphore>)>,
    /// Generation of the last snapshot reconciled (older ones are ignored).
    generation: u64,
}

/// Owns the probe tasks.
pub struct ProbeScheduler {
    runtime: Handle,
    tracker: TaskTracker,
    shutdown: CancellationToken,
    inner: Mutex<Inner>,
}

impl std::fmt::Debug for ProbeScheduler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProbeScheduler")
            .field("probes", &self.probe_count())
            .finish()
    }
}

impl ProbeScheduler {
    /// A scheduler that spawns its probe tasks on `runtime`, tracked by `tracker`;
    /// every task stops when `shutdown` is cancelled.
    pub fn new(runtime: Handle, tracker: TaskTracker, shutdown: CancellationToken) -> Self {
        ProbeScheduler {
            runtime,
            tracker,
            shutdown,
            inner: Mutex::new(Inner::default()),
        }
    }

    /// Makes the probe tasks match `snapshot`: endpoints with an active check get a
    /// task (kept if they had one: its state and schedule go on), tasks of
    /// endpoints that left or lost their check stop. Call after every apply; a
    /// snapshot older than the last one reconciled (racing applies) is ignored.
    pub fn reconcile(&self, snapshot: &Snapshot) {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if snapshot.generation < inner.generation {
            return;
        }
        inner.generation = snapshot.generation;
        let mut wanted: HashMap<EndpointKey, ProbeTarget> = HashMap::new();
        for up in &snapshot.upstreams {
            let Some(check) = &up.version.upstream.checks.active else {
                continue;
            };
            let limit = match inner.limits.get(&up.service) {
                Some((n, sem)) if *n == check.concurrency => sem.clone(),
                _ => {
                    let sem = Arc::new(Semaphore::new(check.concurrency as usize));
                    inner
                        .limits
                        .insert(up.service.clone(), (check.concurrency, sem.clone()));
                    sem
                }
            };
            let tls = up.endpoints.first().and_then(|ep| {
                let spec = ProbeSpec::new(check, &ep.node).with_tls(check, up.version.upstream.tls.as_deref());
                crate::tls::client::connector_for(spec.tls.as_ref()).map(|c| {
                    if check.kind == crate::config::model::ProbeKind::Grpc {
                        c.alpn_h2()
                    } else {
                        c
                    }
                })
            });
            for (idx, ep) in up.endpoints.iter().enumerate() {
                wanted.insert(
                    ep.key.clone(),
                    ProbeTarget {
                        upstream: up.clone(),
                        idx,
                        spec: ProbeSpec::new(check, &ep.node).with_tls(check, up.version.upstream.tls.as_deref()),
                        connector: tls.clone(),
                        limit: limit.clone(),
                    },
                );
            }
        }
        inner.probes.retain(|key, probe| {
            let keep = wanted.contains_key(key);
            if !keep {
                probe.stop.cancel();
                tracing::debug!(target: "gatehouse::health", node = %key, "probe stopped");
            }
            keep
        });
        let services: Vec<Arc<str>> = snapshot.service_names();
        inner.limits.retain(|s, _| services.contains(s));
        for (key, target) in wanted {
            match inner.probes.get(&key) {
                Some(probe) => probe.target.store(Arc::new(target)),
                None => {
                    let target = Arc::new(ArcSwap::from_pointee(target));
                    let stop = self.shutdown.child_token();
                    let task = probe_loop(target.clone());
                    let until_stopped = stop.clone().run_until_cancelled_owned(task);
                    self.tracker.spawn_on(until_stopped, &self.runtime);
                    tracing::debug!(target: "gatehouse::health", node = %key, "probe started");
                    inner.probes.insert(key, ProbeTask { target, stop });
                }
            }
        }
    }

    /// Number of running probe tasks.
    pub fn probe_count(&self) -> usize {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).probes.len()
    }

    /// Stops every probe task (they also stop when the shutdown token is cancelled).
    pub fn stop(&self) {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        for (_, probe) in inner.probes.drain() {
            probe.stop.cancel();
        }
    }
}

impl Drop for ProbeScheduler {
    fn drop(&mut self) {
        self.stop();
    }
}

/// `d` varied uniformly by ±[`INTERVAL_JITTER`].
fn jittered(d: Duration) -> Duration {
    d.mul_f64(1.0 + INTERVAL_JITTER * (2.0 * fastrand::f64() - 1.0))
}

async fn probe_loop(target: Arc<ArcSwap<ProbeTarget>>) {
    // Start at a random point of the first interval: units and endpoints spread out.
    let first = {
        let t = target.load();
        t.upstream
            .version
            .upstream
            .checks
            .active
            .as_ref()
            .map_or(SWEEP_INTERVAL, |c| c.healthy_interval)
    };
    tokio::time::sleep(first.mul_f64(fastrand::f64())).await;
    loop {
        let t = target.load_full();
        let Some(check) = t.upstream.version.upstream.checks.active.clone() else {
            // Reconcile stops tasks whose check went away; until then, idle.
            tokio::time::sleep(SWEEP_INTERVAL).await;
            continue;
        };
        let observed = {
            let _permit = t.limit.acquire().await;
            let started = Instant::now();
            let observed = run_probe(&t.spec, t.connector.as_deref()).await;
            (observed, started.elapsed())
        };
        let obs = Observation {
            source: Source::Active,
            observed: observed.0,
            latency: observed.1,
            retry_after: None,
        };
        let ep = &t.upstream.endpoints[t.idx];
        let verdict = t.upstream.health.observe_at(ep, t.idx, &obs, Instant::now());
        t.upstream.health.metrics.probe(verdict);
        let interval = match t.upstream.health.cells[t.idx].health_state() {
            HealthState::Healthy => check.healthy_interval,
            _ => check.unhealthy_interval,
        };
        drop(t);
        tokio::time::sleep(jittered(interval)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_stays_within_ten_percent_and_varies() {
        let d = Duration::from_secs(1);
        let samples: Vec<Duration> = (0..200).map(|_| jittered(d)).collect();
        assert!(samples.iter().all(|s| (900..=1100).contains(&s.as_millis())));
        let (lo, hi) = (samples.iter().min().unwrap(), samples.iter().max().unwrap());
        assert!(hi.as_millis() - lo.as_millis() > 100, "{lo:?}..{hi:?}");
    }
}
