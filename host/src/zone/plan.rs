//! The pure traffic plan behind [`super::compute`]: node labels and health in,
//! traffic shares and fallback order out.

use crate::config::model::{OnPanic, PriorityFailover, UpstreamPolicy, ZoneRouting};

/// Envoy's overprovisioning factor: a priority level keeps all of its traffic while
/// at least 1/1.4 ≈ 71 % of its weight is healthy.
pub const OVERPROVISIONING: f64 = 1.4;

/// What the plan needs to know about one node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeView {
    /// Effective weight (0 = drained).
    pub weight: u32,
    /// In the gateway's zone.
    pub local_zone: bool,
    /// In the gateway's region.
    pub local_region: bool,
    /// Priority level (higher first).
    pub priority: i32,
    /// Healthy capacity: may receive traffic and counts toward the panic rule.
    pub healthy: bool,
    /// Half-open: may receive its one trial request, but is not capacity yet.
    pub trial: bool,
}

/// The routing settings of an upstream that the plan depends on.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TierPolicy {
    /// Zone routing mode.
    pub zone_routing: ZoneRouting,
    /// Healthy share of the local zone needed to keep all traffic local.
    pub min_local_share: f64,
    /// Priority failover mode.
    pub priority_failover: PriorityFailover,
    /// Panic threshold, percent of weight healthy.
    pub panic_threshold: f64,
    /// Panic behaviour.
    pub on_panic: OnPanic,
}

impl From<&UpstreamPolicy> for TierPolicy {
    fn from(u: &UpstreamPolicy) -> Self {
        Self {
            zone_routing: u.zone_routing,
            min_local_share: u.min_local_share,
            priority_failover: u.priority_failover,
            panic_threshold: u.panic_threshold,
            on_panic: u.on_panic,
        }
    }
}

/// Traffic shares and fallback order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Plan {
    /// (node index, share of new requests); shares sum to 1 unless empty.
    pub primary: Vec<(usize, f64)>,
    /// Remaining healthy nodes, grouped in order of preference, for retries.
    pub fallback: Vec<Vec<usize>>,
    /// Serving by the panic rule (or refusing, when `primary` is empty).
    pub panic: bool,
    /// Human-readable explanation.
    pub note: String,
}

/// Locality rank: 0 local zone, 1 same region, 2 elsewhere (all 0 with zones off).
fn rank(n: &NodeView, routing: ZoneRouting) -> u8 {
    match routing {
        ZoneRouting::Off => 0,
        _ if n.local_zone => 0,
        _ if n.local_region => 1,
        _ => 2,
    }
}

fn weight_of(nodes: &[NodeView], idx: impl IntoIterator<Item = usize>) -> f64 {
    idx.into_iter().map(|i| f64::from(nodes[i].weight)).sum()
}

/// Computes the plan. Deterministic: equal inputs give equal outputs.
pub fn plan(nodes: &[NodeView], p: &TierPolicy) -> Plan {
    let universe: Vec<usize> = (0..nodes.len())
        .filter(|&i| nodes[i].weight > 0 && (p.zone_routing != ZoneRouting::LocalOnly || nodes[i].local_zone))
        .collect();
    if universe.is_empty() {
        let note = match p.zone_routing {
            ZoneRouting::LocalOnly => "no node with weight in the local zone (local_only)",
            _ => "no node with weight",
        };
        return Plan {
            note: note.to_string(),
            ..Plan::default()
        };
    }
    let total = weight_of(nodes, universe.iter().copied());
    let healthy_weight = weight_of(nodes, universe.iter().copied().filter(|&i| nodes[i].healthy));
    let healthy_pct = 100.0 * healthy_weight / total;
    let panic = healthy_weight == 0.0 || (p.panic_threshold > 0.0 && healthy_pct < p.panic_threshold);
    if panic && (p.on_panic == OnPanic::Fail || (p.zone_routing == ZoneRouting::LocalOnly && healthy_weight == 0.0)) {
        return trials_only(nodes, &universe, healthy_pct);
    }
    let planner = Planner {
        nodes,
        p,
        universe,
        panic,
    };
    let levels = planner.levels();
    let loads = planner.level_loads(&levels);
    let mut share = vec![0.0f64; nodes.len()];
    let mut notes = Vec::new();
    for (&level, &load) in levels.iter().zip(&loads) {
        if load > 0.0 {
            notes.push(planner.spread(level, load, &mut share));
        }
    }
    let primary: Vec<(usize, f64)> = (0..nodes.len())
        .filter(|&i| share[i] > 0.0)
        .map(|i| (i, share[i]))
        .collect();
    let mut note = notes.join("; ");
    if panic {
        note = format!("panic: {healthy_pct:.0}% of capacity healthy, failing open; {note}");
    }
    Plan {
        primary,
        fallback: planner.fallback(&levels, &share),
        panic,
        note,
    }
}

/// Panic that refuses traffic, except half-open trials: they are how ejected nodes
/// come back.
fn trials_only(nodes: &[NodeView], universe: &[usize], healthy_pct: f64) -> Plan {
    let trials: Vec<usize> = universe.iter().copied().filter(|&i| nodes[i].trial).collect();
    let w = weight_of(nodes, trials.iter().copied());
    Plan {
        primary: trials.iter().map(|&i| (i, f64::from(nodes[i].weight) / w)).collect(),
        panic: true,
        note: format!("panic: {healthy_pct:.0}% of capacity healthy; refusing traffic but half-open trials"),
        ..Plan::default()
    }
}

/// The nodes that count, and the policy, while one plan is computed.
struct Planner<'a> {
    nodes: &'a [NodeView],
    p: &'a TierPolicy,
    /// Nodes with weight (in the local zone only, for `local_only`).
    universe: Vec<usize>,
    /// Failing open: every node may receive traffic.
    panic: bool,
}

impl Planner<'_> {
    /// Who may receive traffic: healthy nodes and half-open trials; in panic (fail
    /// open) every node.
    fn ok(&self, i: usize) -> bool {
        self.panic || self.nodes[i].healthy || self.nodes[i].trial
    }

    fn members(&self, level: i32) -> impl Iterator<Item = usize> + '_ {
        self.universe
            .iter()
            .copied()
            .filter(move |&i| self.nodes[i].priority == level)
    }

    fn rank(&self, i: usize) -> u8 {
        rank(&self.nodes[i], self.p.zone_routing)
    }

    /// Priority levels, highest first.
    fn levels(&self) -> Vec<i32> {
        let mut levels: Vec<i32> = self.universe.iter().map(|&i| self.nodes[i].priority).collect();
        levels.sort_unstable_by(|a, b| b.cmp(a));
        levels.dedup();
        levels
    }

    /// The share of traffic each level takes: the first level with capacity takes
    /// all (`backup`), or each takes its healthy share × overprovisioning of what is
    /// left (`graceful`).
    fn level_loads(&self, levels: &[i32]) -> Vec<f64> {
        let nodes = self.nodes;
        let level_health: Vec<f64> = levels
            .iter()
            .map(|&l| weight_of(nodes, self.members(l).filter(|&i| self.ok(i))) / weight_of(nodes, self.members(l)))
            .collect();
        let mut loads = vec![0.0; levels.len()];
        match self.p.priority_failover {
            PriorityFailover::Backup => {
                if let Some(first) = level_health.iter().position(|h| *h > 0.0) {
                    loads[first] = 1.0;
                }
            }
            PriorityFailover::Graceful => {
                let mut remaining: f64 = 1.0;
                for (k, h) in level_health.iter().enumerate() {
                    let load = remaining.min((h * OVERPROVISIONING).min(1.0));
                    loads[k] = load;
                    remaining -= load;
                    if remaining <= 1e-12 {
                        break;
                    }
                }
                let sum: f64 = loads.iter().sum();
                if sum > 0.0 && (1.0 - sum).abs() > 1e-12 {
                    loads.iter_mut().for_each(|l| *l /= sum);
                }
            }
        }
        loads
    }

    /// Spreads `load` of `level` over its local nodes and its spill group, adding to
    /// `share`; returns the note for this level.
    fn spread(&self, level: i32, load: f64, share: &mut [f64]) -> String {
        let nodes = self.nodes;
        let serving_in = |r: u8| -> Vec<usize> {
            self.members(level)
                .filter(|&i| self.ok(i) && self.rank(i) == r)
                .collect()
        };
        let local = serving_in(0);
        let region = serving_in(1);
        let spill = if !region.is_empty() { region } else { serving_in(2) };
        let (local_part, why) = self.local_part(level, &local, spill.is_empty());
        let mut give = |group: &[usize], amount: f64| {
            let w = weight_of(nodes, group.iter().copied());
            if amount > 0.0 && w > 0.0 {
                for &i in group {
                    share[i] += amount * f64::from(nodes[i].weight) / w;
                }
            }
        };
        give(&local, load * local_part);
        give(&spill, load * (1.0 - local_part));
        format!("priority {level} takes {:.0}%; {why}", load * 100.0)
    }

    /// The part of a level's load its local zone keeps (`local` are its serving
    /// nodes), and why.
    fn local_part(&self, level: i32, local: &[usize], no_spill: bool) -> (f64, String) {
        let p = self.p;
        match p.zone_routing {
            ZoneRouting::Off => (1.0, "zones off".to_string()),
            ZoneRouting::LocalOnly => (1.0, "local zone only".to_string()),
            ZoneRouting::PreferLocal => {
                let local_healthy = weight_of(self.nodes, local.iter().copied());
                let local_total = weight_of(self.nodes, self.members(level).filter(|&i| self.rank(i) == 0));
                let s = if local_total > 0.0 {
                    local_healthy / local_total
                } else {
                    0.0
                };
                let f = if local_healthy == 0.0 {
                    0.0
                } else if no_spill || p.min_local_share <= 0.0 {
                    1.0
                } else {
                    (s / p.min_local_share).min(1.0)
                };
                let why = if f >= 1.0 {
                    format!("local zone {:.0}% healthy: all local", s * 100.0)
                } else {
                    format!(
                        "local zone {:.0}% healthy < {:.0}%: {:.0}% spills",
                        s * 100.0,
                        p.min_local_share * 100.0,
                        (1.0 - f) * 100.0
                    )
                };
                (f, why)
            }
        }
    }

    /// Serving nodes that got no share, by level and then locality rank: where a
    /// retry goes once the primary tier is tried.
    fn fallback(&self, levels: &[i32], share: &[f64]) -> Vec<Vec<usize>> {
        let mut fallback = Vec::new();
        for &level in levels {
            for r in 0..3u8 {
                let group: Vec<usize> = self
                    .members(level)
                    .filter(|&i| self.ok(i) && share[i] == 0.0 && self.rank(i) == r)
                    .collect();
                if !group.is_empty() {
                    fallback.push(group);
                }
            }
        }
        fallback
    }
}
