//! The health sweeper: ends timed states, republishes candidate tiers and keeps the
//! health gauges current.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{Snapshot, Upstream};
use crate::health::HealthHub;

/// The sweeper runs at least this often (gauges, slow start ramps, safety net).
pub const SWEEP_INTERVAL: Duration = Duration::from_secs(1);

/// The sweeper: whenever a state changes (or a timer is due, or every
/// [`SWEEP_INTERVAL`]) it ends ejections and breaker trips whose time is up,
/// recomputes every upstream's candidate tiers, and updates the health gauges.
/// Runs until `shutdown` is cancelled.
pub async fn sweep(snapshot: Arc<ArcSwap<Snapshot>>, hub: Arc<HealthHub>, shutdown: CancellationToken) {
    let mut panics: HashMap<Arc<str>, bool> = HashMap::new();
    loop {
        let snap = snapshot.load_full();
        let now = Instant::now();
        let mut next = now + SWEEP_INTERVAL;
        for up in &snap.upstreams {
            if let Some(due) = up.health.tick(&up.endpoints, now) {
                next = next.min(due);
            }
        }
        snap.refresh_tiers();
        let mut gauges = Vec::with_capacity(snap.upstreams.len());
        for up in &snap.upstreams {
            let counts = up.health.state_counts();
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
            _ = shutdown.cancelled() => return,
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
