//! Candidate tiers from zone, region and priority labels and from health — a pure
//! function of its inputs, computed off the request path whenever health changes.
//!
//! The first tier carries new requests: its members' weights are their shares of
//! the traffic. Later tiers hold the remaining healthy nodes in order of preference
//! (same priority and zone first); a retry moves to them once it has tried every
//! node of the earlier tiers.
//!
//! Rules (see docs/zones.md):
//! - Priorities: higher levels first. `backup`: the first level with any healthy node
//!   takes everything. `graceful`: a level takes `min(1, healthy share × 1.4)` of
//!   what is left (Envoy's overprovisioning), the rest spills to the next level.
//! - Zones inside a level, `prefer_local`: the local zone keeps all of the level's
//!   traffic while at least `min_local_share` of its weight is healthy; below that it
//!   keeps `healthy share ÷ min_local_share` of it and only the shortfall spills, in
//!   proportion to healthy weight, to other zones of the same region, or — when the
//!   region has none — to other regions. Works with any number of zones.
//!   `local_only` never leaves the zone. `off` ignores zones.
//! - Panic: when healthy capacity (healthy nodes with closed breakers; half-open ones
//!   do not count) is below `panic_threshold` percent of the configured weight (or
//!   nothing is healthy), `on_panic: fail_open` routes as if every node were healthy
//!   and `fail` (or `local_only` with an empty zone) serves only half-open trials (503
//!   otherwise), so ejected nodes can still come back.

mod candidates;
mod plan;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

pub use candidates::{Candidate, CandidateSet, NodeSet};
pub use plan::{NodeView, Plan, TierPolicy, plan};

use crate::config::model::UpstreamPolicy;
use crate::upstream::Endpoint;

/// What the plan needs to know of one endpoint's health.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeHealth {
    /// Healthy with a closed breaker: counts as capacity.
    pub healthy: bool,
    /// Out, but admits one half-open trial request.
    pub trial: bool,
}

/// The gateway's own place.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Locality {
    /// Zone ("" = unknown).
    pub zone: String,
    /// Region ("" = unknown).
    pub region: String,
}

impl Locality {
    /// Whether a node's zone label is the gateway's zone ("" means the gateway's own).
    pub fn is_local_zone(&self, zone: &str) -> bool {
        zone.is_empty() || zone == self.zone
    }

    /// Whether a node's region label is the gateway's region ("" means the gateway's own).
    pub fn is_local_region(&self, region: &str) -> bool {
        region.is_empty() || region == self.region
    }
}

/// Candidate tiers of one upstream at one moment.
#[derive(Debug, Clone, Default)]
pub struct Tiers {
    /// Unique per computation (plugins use it to know when the node set changed).
    pub generation: u64,
    /// Tiers in order of preference; the first carries new requests.
    pub tiers: Vec<CandidateSet>,
    /// Serving by the panic rule.
    pub panic: bool,
    /// Why the traffic is split this way, for logs and the debug header.
    pub note: String,
}

impl Tiers {
    /// Whether two computations route the same way.
    pub fn same_routing(&self, other: &Tiers) -> bool {
        self.tiers == other.tiers && self.panic == other.panic
    }

    /// The first tier (absent when nothing can be served).
    pub fn primary(&self) -> Option<&CandidateSet> {
        self.tiers.first()
    }
}

static GENERATION: AtomicU64 = AtomicU64::new(1);

/// Effective weight of an endpoint now: its weight, ramped by slow start.
pub fn effective_weight(e: &Endpoint, policy: &UpstreamPolicy) -> u32 {
    let w = e.node.weight;
    let window = policy.slow_start.window;
    if window.is_zero() || w == 0 {
        return w;
    }
    let since = e.state.since_joined();
    if since >= window {
        return w;
    }
    let factor = (since.as_secs_f64() / window.as_secs_f64()).max(policy.slow_start.min_weight);
    ((f64::from(w) * factor).round() as u32).max(1)
}

/// Shares are scaled to integer weights with this resolution.
const SHARE_SCALE: f64 = 1_000_000.0;

/// Computes the tiers for `endpoints` under `policy`, seen from `local`; `health(i)`
/// says whether endpoint `i` is healthy and whether it only admits a half-open trial.
pub fn compute(
    endpoints: &[Arc<Endpoint>],
    health: impl Fn(usize) -> NodeHealth,
    policy: &UpstreamPolicy,
    local: &Locality,
) -> Tiers {
    let views: Vec<NodeView> = endpoints
        .iter()
        .enumerate()
        .map(|(i, e)| {
            let h = health(i);
            NodeView {
                weight: effective_weight(e, policy),
                local_zone: local.is_local_zone(&e.node.zone),
                local_region: local.is_local_region(&e.node.region),
                priority: e.node.priority,
                healthy: h.healthy,
                trial: h.trial,
            }
        })
        .collect();
    let p = plan(&views, &TierPolicy::from(policy));
    let generation = GENERATION.fetch_add(1, Ordering::Relaxed);
    let mut tiers = Vec::with_capacity(p.fallback.len() + 1);
    let primary = CandidateSet::new(p.primary.iter().map(|&(idx, share)| Candidate {
        idx: idx as u32,
        weight: ((share * SHARE_SCALE).round() as u32).max(1),
    }));
    if !primary.is_empty() {
        tiers.push(primary);
    }
    for group in &p.fallback {
        let set = CandidateSet::new(group.iter().map(|&idx| Candidate {
            idx: idx as u32,
            weight: views[idx].weight.max(1),
        }));
        if !set.is_empty() {
            tiers.push(set);
        }
    }
    Tiers {
        generation,
        tiers,
        panic: p.panic,
        note: p.note,
    }
}

#[cfg(test)]
mod tests;
