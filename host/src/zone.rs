//! Candidate tiers from zone, region and priority labels and from health — a pure
//! function of its inputs, computed off the request path.
//!
//! The first tier gets new requests; later tiers are where retries go once a
//! request has tried every node of the earlier ones.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::balance::{Candidate, CandidateSet};
use crate::config::model::{OnPanic, UpstreamPolicy, ZoneRouting};
use crate::health::EndpointHealth;
use crate::upstream::Endpoint;

/// The gateway's own place.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Locality {
    /// Zone ("" = unknown).
    pub zone: String,
    /// Region ("" = unknown).
    pub region: String,
}

/// Candidate tiers of one upstream at one moment.
#[derive(Debug, Clone, Default)]
pub struct Tiers {
    /// Unique per computation (plugins use it to know when the node set changed).
    pub generation: u64,
    /// Tiers in order of preference.
    pub tiers: Vec<CandidateSet>,
    /// Healthy capacity is under `panic_threshold`: serving by the panic rule.
    pub panic: bool,
}

impl Tiers {
    /// Whether two computations route the same way.
    pub fn same_routing(&self, other: &Tiers) -> bool {
        self.tiers == other.tiers && self.panic == other.panic
    }

    /// The first tier (empty when nothing can be served).
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

/// Computes the tiers for `endpoints` under `policy`, seen from `local`.
pub fn compute(endpoints: &[Arc<Endpoint>], policy: &UpstreamPolicy, local: &Locality) -> Tiers {
    let zone_of = |e: &Endpoint| -> bool { e.node.zone.is_empty() || e.node.zone == local.zone };
    let region_of = |e: &Endpoint| -> bool { e.node.region.is_empty() || e.node.region == local.region };
    // Rank: priority (higher first), then locality (local zone, same region, elsewhere).
    let locality_rank = |e: &Endpoint| -> u8 {
        match policy.zone_routing {
            ZoneRouting::Off => 0,
            _ if zone_of(e) => 0,
            _ if region_of(e) => 1,
            _ => 2,
        }
    };
    let allowed = |e: &Endpoint| policy.zone_routing != ZoneRouting::LocalOnly || zone_of(e);
    let mut ranks: Vec<(i32, u8)> = endpoints
        .iter()
        .filter(|e| e.node.weight > 0 && allowed(e))
        .map(|e| (e.node.priority, locality_rank(e)))
        .collect();
    ranks.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    ranks.dedup();
    let tier_of = |rank: (i32, u8), usable: fn(&EndpointHealth) -> bool| {
        CandidateSet::new(endpoints.iter().enumerate().filter_map(|(i, e)| {
            let fits = e.node.weight > 0
                && allowed(e)
                && (e.node.priority, locality_rank(e)) == rank
                && usable(&e.state.health);
            fits.then(|| Candidate {
                idx: i as u32,
                weight: effective_weight(e, policy),
            })
        }))
    };
    let generation = GENERATION.fetch_add(1, Ordering::Relaxed);
    let eligible = endpoints.iter().filter(|e| e.node.weight > 0 && allowed(e));
    let panic = panic_state(eligible.map(|e| &**e), policy.panic_threshold);
    let usable: fn(&EndpointHealth) -> bool = match (panic, policy.on_panic) {
        (false, _) => EndpointHealth::is_selectable,
        (true, OnPanic::FailOpen) => |_| true,
        // Only half-open trials pass, so ejected nodes can still come back.
        (true, OnPanic::Fail) => EndpointHealth::is_trial_only,
    };
    let tiers = ranks
        .iter()
        .map(|r| tier_of(*r, usable))
        .filter(|t| !t.is_empty())
        .collect();
    Tiers {
        generation,
        tiers,
        panic,
    }
}

/// The panic rule: whether the healthy share of the configured weight of
/// `eligible` endpoints is under `threshold` percent — with threshold 0, whether
/// no endpoint is healthy. Half-open endpoints and open breakers do not count as
/// healthy. No eligible endpoint at all is not panic (there is nothing to open).
pub fn panic_state<'a>(eligible: impl Iterator<Item = &'a Endpoint>, threshold: f64) -> bool {
    let (healthy, total) = eligible.fold((0u64, 0u64), |(h, t), e| {
        let w = u64::from(e.node.weight);
        (h + if e.state.health.is_healthy() { w } else { 0 }, t + w)
    });
    total > 0 && (healthy == 0 || (healthy as f64) * 100.0 < threshold * total as f64)
}
