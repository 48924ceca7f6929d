//! Background work: one probe task per endpoint with an active check, keyed by
//! endpoint identity and reconciled on every config apply, and the sweeper that
//! ends timed states and republishes the candidate tiers.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::runtime::Handle;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::evaluator::{Observation, Source};
use super::hub::HealthHub;
use super::probe::{ProbeSpec, run_probe};
use super::state::{HealthState, NodeState};
use crate::upstream::{EndpointKey, Snapshot, Upstream};

/// The sweeper runs at least this often (gauges, slow start ramps, safety net).
pub const SWEEP_INTERVAL: Duration = Duration::from_secs(1);

/// Probe intervals vary by up to this fraction either way, so units that share
/// nodes do not probe in lock-step.
pub const INTERVAL_JITTER: f64 = 0.1;

/// What one probe task probes now; replaced on every apply.
struct ProbeTarget {
    upstream: Arc<Upstream>,
    idx: usize,
    spec: ProbeSpec,
    limit: Arc<Semaphore>,
}

struct ProbeTask {
    target: Arc<ArcSwap<ProbeTarget>>,
    task: JoinHandle<()>,
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
pub struct HealthManager {
    runtime: Handle,
    inner: Mutex<Inner>,
}

impl std::fmt::Debug for HealthManager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HealthManager")
            .field("probes", &self.probe_count())
            .finish()
    }
}

impl HealthManager {
    /// A manager that spawns its probe tasks on `runtime`.
    pub fn new(runtime: Handle) -> Self {
        HealthManager {
            runtime,
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
            for (idx, ep) in up.endpoints.iter().enumerate() {
                wanted.insert(
                    ep.key.clone(),
                    ProbeTarget {
                        upstream: up.clone(),
                        idx,
                        spec: ProbeSpec::new(check, &ep.node),
                        limit: limit.clone(),
                    },
                );
            }
        }
        inner.probes.retain(|key, probe| {
            let keep = wanted.contains_key(key);
            if !keep {
                probe.task.abort();
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
                    let task = self.runtime.spawn(probe_loop(target.clone()));
                    tracing::debug!(target: "gatehouse::health", node = %key, "probe started");
                    inner.probes.insert(key, ProbeTask { target, task });
                }
            }
        }
    }

    /// Number of running probe tasks.
    pub fn probe_count(&self) -> usize {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).probes.len()
    }

    /// Stops every probe task.
    pub fn stop(&self) {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        for (_, probe) in inner.probes.drain() {
            probe.task.abort();
        }
    }
}

impl Drop for HealthManager {
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
            let observed = run_probe(&t.spec).await;
            (observed, started.elapsed())
        };
        let obs = Observation {
            source: Source::Active,
            observed: observed.0,
            latency: observed.1,
            retry_after: None,
        };
        let ep = &t.upstream.endpoints[t.idx];
        let verdict = super::observe_at(&t.upstream, ep, &obs, Instant::now());
        t.upstream.health.metrics.probe(verdict);
        let interval = match ep.state.health.health_state() {
            HealthState::Healthy => check.healthy_interval,
            _ => check.unhealthy_interval,
        };
        drop(t);
        tokio::time::sleep(jittered(interval)).await;
    }
}

/// The sweeper: whenever a state changes (or a timer is due, or every
/// [`SWEEP_INTERVAL`]) it ends ejections and breaker trips whose time is up,
/// recomputes every upstream's candidate tiers, and updates the health gauges.
/// Runs until `shutdown` turns true.
pub async fn sweep(snapshot: Arc<ArcSwap<Snapshot>>, hub: Arc<HealthHub>, mut shutdown: watch::Receiver<bool>) {
    let mut panics: HashMap<Arc<str>, bool> = HashMap::new();
    loop {
        let snap = snapshot.load_full();
        let now = Instant::now();
        let mut next = now + SWEEP_INTERVAL;
        for up in &snap.upstreams {
            for ep in &up.endpoints {
                let (transitions, due) = ep.state.health.tick(&up.version.upstream, now);
                up.health.publish(ep, &transitions);
                if let Some(due) = due {
                    next = next.min(due);
                }
            }
        }
        snap.refresh_tiers();
        let mut gauges = Vec::with_capacity(snap.upstreams.len());
        for up in &snap.upstreams {
            let mut counts = [0i64; NodeState::ALL.len()];
            for ep in &up.endpoints {
                counts[ep.state.health.state().index()] += 1;
            }
            let panic = up.tiers.load().panic;
            let was = panics.insert(up.service.clone(), panic).unwrap_or(false);
            if panic != was {
                log_panic(up, panic);
            }
            gauges.push((&*up.service, counts, panic));
        }
        hub.set_gauges(gauges);
        panics.retain(|s, _| snap.upstreams.iter().any(|u| &u.service == s));
        drop(snap);
        tokio::select! {
            _ = shutdown.wait_for(|s| *s) => return,
            _ = hub.changed.notified() => {}
            _ = tokio::time::sleep_until(next) => {}
        }
    }
}

fn log_panic(up: &Upstream, panic: bool) {
    let policy = &up.version.upstream;
    if panic {
        tracing::warn!(
            target: "gatehouse::health",
            service = %up.service,
            panic_threshold = policy.panic_threshold,
            on_panic = ?policy.on_panic,
            "upstream in panic: too little healthy capacity"
        );
    } else {
        tracing::info!(target: "gatehouse::health", service = %up.service, "upstream out of panic");
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
