//! The verdict on one observation: success, failure of some kind, or nothing.
//!
//! The built-in [`BuiltinEvaluator`] classifies by the status lists of
//! `checks.active` and `checks.passive` (APISIX semantics). A plugin replaces it
//! through the snapshot layer's policy hooks (`health_evaluator`); it sees only the
//! observation and the node, while thresholds, counters and the state machine stay
//! in the host.

use std::time::Duration;

use crate::config::model::{Checks, Node, PassiveKind};
use crate::outcome::{EndpointKey, GrpcCodes, Outcome};

/// Where an observation came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// An active probe.
    Active,
    /// A real request.
    Passive,
}

impl Source {
    /// Lower-case name for logs and plugins.
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Active => "active",
            Source::Passive => "passive",
        }
    }
}

/// What was seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Observed {
    /// The node answered with this HTTP status.
    Status(u16),
    /// A TCP probe connected (the only success of a `tcp` probe).
    Connected,
    /// No connection could be made.
    ConnectFailure,
    /// The node did not answer in time.
    Timeout,
    /// The connection broke, or the answer was not HTTP.
    Reset,
    /// A gRPC status code: of a real call (not OK), or of a `grpc` probe (OK for
    /// `SERVING`, `UNAVAILABLE` for `NOT_SERVING`, else the call's code).
    Grpc(u8),
}

impl From<Outcome> for Observed {
    fn from(o: Outcome) -> Self {
        match o {
            Outcome::Status(s) => Observed::Status(s),
            Outcome::ConnectFailure => Observed::ConnectFailure,
            Outcome::Timeout => Observed::Timeout,
            Outcome::Reset => Observed::Reset,
            Outcome::Grpc(code) => Observed::Grpc(code),
        }
    }
}

/// One observation of one node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Observation {
    /// Probe or real request.
    pub source: Source,
    /// What happened.
    pub observed: Observed,
    /// How long it took.
    pub latency: Duration,
    /// The node's `Retry-After`, when it sent one (breakers may honour it).
    pub retry_after: Option<Duration>,
}

/// The node an observation is about: identity and labels.
#[derive(Debug, Clone, Copy)]
pub struct NodeInfo<'a> {
    /// Service and `host:port`.
    pub key: &'a EndpointKey,
    /// Node settings (weight, zone, region, priority, tags).
    pub node: &'a Node,
}

/// Which failure counter a failure feeds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// A failure status (`http_failures`).
    Http,
    /// A connection failure or reset (`tcp_failures`).
    Tcp,
    /// A timeout (`timeouts`).
    Timeout,
}

/// The verdict on one observation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Counts toward `healthy.successes` and clears the failure counters.
    Success,
    /// Counts toward the failure counter of this kind and clears the success counter.
    Failure(FailureKind),
    /// Counts toward nothing (a status in neither list).
    Ignore,
}

/// Classifies observations. Implementations must be cheap and must not block:
/// passive observations are classified on the request path.
pub trait HealthEvaluator: Send + Sync + 'static {
    /// Name for logs and the admin API.
    fn name(&self) -> &str;
    /// The verdict on `obs` of `node`.
    fn evaluate(&self, node: &NodeInfo<'_>, obs: &Observation) -> Verdict;
}

/// A set of HTTP status codes (100..=599) as a bitset: lookups without hashing
/// or allocation.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StatusSet {
    bits: [u64; 10],
}

impl StatusSet {
    /// The set of `codes` (codes outside 0..640 are dropped).
    pub fn new(codes: &[u16]) -> Self {
        let mut set = StatusSet::default();
        for &c in codes {
            if let Some(word) = set.bits.get_mut(usize::from(c / 64)) {
                *word |= 1 << (c % 64);
            }
        }
        set
    }

    /// Whether `code` is in the set.
    #[inline]
    pub fn contains(&self, code: u16) -> bool {
        self.bits
            .get(usize::from(code / 64))
            .is_some_and(|w| w & (1 << (code % 64)) != 0)
    }
}

/// Success and failure statuses of one check.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct StatusLists {
    healthy: StatusSet,
    unhealthy: StatusSet,
    /// gRPC codes that are failures; OK is a success, any other code too (the
    /// call was answered).
    unhealthy_grpc: GrpcCodes,
}

impl StatusLists {
    fn verdict(&self, observed: Observed) -> Verdict {
        match observed {
            Observed::Status(s) if self.healthy.contains(s) => Verdict::Success,
            Observed::Status(s) if self.unhealthy.contains(s) => Verdict::Failure(FailureKind::Http),
            Observed::Status(_) => Verdict::Ignore,
            Observed::Connected => Verdict::Success,
            Observed::ConnectFailure | Observed::Reset => Verdict::Failure(FailureKind::Tcp),
            Observed::Timeout => Verdict::Failure(FailureKind::Timeout),
            Observed::Grpc(code) if self.unhealthy_grpc.contains(code) => Verdict::Failure(FailureKind::Http),
            Observed::Grpc(_) => Verdict::Success,
        }
    }
}

/// The built-in classification: `healthy.http_statuses` are successes,
/// `unhealthy.http_statuses` are HTTP failures, any other status is ignored;
/// connect failures and resets are TCP failures; timeouts are timeouts; a `tcp`
/// probe that connects is a success.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BuiltinEvaluator {
    active: StatusLists,
    passive: StatusLists,
}

impl BuiltinEvaluator {
    /// The evaluator for a version's `checks`.
    pub fn new(checks: &Checks) -> Self {
        let mut e = BuiltinEvaluator::default();
        if let Some(a) = &checks.active {
            e.active = StatusLists {
                healthy: StatusSet::new(&a.healthy_statuses),
                unhealthy: StatusSet::new(&a.unhealthy_statuses),
                // A `grpc` probe succeeds only on OK (SERVING).
                unhealthy_grpc: GrpcCodes(!1),
            };
        }
        if let Some(p) = &checks.passive {
            e.passive = if p.kind == PassiveKind::Tcp {
                let every: Vec<u16> = (100..=599).collect();
                StatusLists {
                    healthy: StatusSet::new(&every),
                    unhealthy: StatusSet::default(),
                    unhealthy_grpc: GrpcCodes::default(),
                }
            } else {
                StatusLists {
                    healthy: StatusSet::new(&p.healthy_statuses),
                    unhealthy: StatusSet::new(&p.unhealthy_statuses),
                    unhealthy_grpc: p.unhealthy_grpc_statuses,
                }
            };
        }
        e
    }
}

impl HealthEvaluator for BuiltinEvaluator {
    fn name(&self) -> &str {
        "builtin"
    }

    fn evaluate(&self, _node: &NodeInfo<'_>, obs: &Observation) -> Verdict {
        match obs.source {
            Source::Active => self.active.verdict(obs.observed),
            Source::Passive => self.passive.verdict(obs.observed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::model::PassiveCheck;

    #[test]
    fn tcp_passive_checks_judge_connections_only() {
        let passive = PassiveCheck {
            kind: PassiveKind::Tcp,
            healthy_statuses: vec![200],
            healthy_successes: 1,
            unhealthy_statuses: vec![500],
            unhealthy_http_failures: 1,
            unhealthy_tcp_failures: 1,
            unhealthy_timeouts: 1,
            unhealthy_grpc_statuses: GrpcCodes::new(&[14]),
            base_ejection_time: Duration::from_secs(1),
            max_ejection_time: Duration::from_secs(2),
        };
        let e = BuiltinEvaluator::new(&Checks {
            active: None,
            passive: Some(passive),
        });
        assert_eq!(e.passive.verdict(Observed::Status(500)), Verdict::Success);
        assert_eq!(
            e.passive.verdict(Observed::ConnectFailure),
            Verdict::Failure(FailureKind::Tcp)
        );
    }

    #[test]
    fn status_set_membership() {
        let s = StatusSet::new(&[200, 302, 599, 100]);
        assert!(s.contains(200) && s.contains(302) && s.contains(599) && s.contains(100));
        assert!(!s.contains(201) && !s.contains(0) && !s.contains(65535));
    }

    #[test]
    fn builtin_classifies_by_source_lists() {
        let passive = PassiveCheck {
            kind: PassiveKind::Http,
            healthy_statuses: vec![200],
            healthy_successes: 1,
            unhealthy_statuses: vec![500],
            unhealthy_http_failures: 1,
            unhealthy_tcp_failures: 1,
            unhealthy_timeouts: 1,
            unhealthy_grpc_statuses: GrpcCodes::new(&[14]),
            base_ejection_time: Duration::from_secs(1),
            max_ejection_time: Duration::from_secs(2),
        };
        let e = BuiltinEvaluator::new(&Checks {
            active: None,
            passive: Some(passive),
        });
        let key = EndpointKey {
            service: "s".into(),
            authority: "a:1".into(),
        };
        let node = Node {
            host: "a".into(),
            port: 1,
            weight: 1,
            zone: String::new(),
            region: String::new(),
            priority: 0,
            tags: vec![],
        };
        let info = NodeInfo { key: &key, node: &node };
        let obs = |source, observed| Observation {
            source,
            observed,
            latency: Duration::ZERO,
            retry_after: None,
        };
        let v = |o| e.evaluate(&info, &o);
        assert_eq!(v(obs(Source::Passive, Observed::Status(200))), Verdict::Success);
        assert_eq!(
            v(obs(Source::Passive, Observed::Status(500))),
            Verdict::Failure(FailureKind::Http)
        );
        assert_eq!(v(obs(Source::Passive, Observed::Status(404))), Verdict::Ignore);
        assert_eq!(
            v(obs(Source::Passive, Observed::Reset)),
            Verdict::Failure(FailureKind::Tcp)
        );
        assert_eq!(
            v(obs(Source::Passive, Observed::Timeout)),
            Verdict::Failure(FailureKind::Timeout)
        );
        // No active check configured: its status lists are empty.
        assert_eq!(v(obs(Source::Active, Observed::Status(200))), Verdict::Ignore);
        assert_eq!(v(obs(Source::Active, Observed::Connected)), Verdict::Success);
        // gRPC: the listed codes fail, any other answer is a success.
        assert_eq!(
            v(obs(Source::Passive, Observed::Grpc(14))),
            Verdict::Failure(FailureKind::Http)
        );
        assert_eq!(v(obs(Source::Passive, Observed::Grpc(5))), Verdict::Success);
    }

    #[test]
    fn grpc_probes_succeed_only_on_ok() {
        let e = BuiltinEvaluator::new(&Checks {
            active: Some(crate::config::model::ActiveCheck {
                kind: crate::config::model::ProbeKind::Grpc,
                timeout: Duration::from_secs(1),
                concurrency: 1,
                http_method: http::Method::GET,
                http_path: "/".into(),
                host: None,
                port: None,
                req_headers: vec![],
                healthy_interval: Duration::from_secs(1),
                healthy_successes: 1,
                healthy_statuses: vec![200],
                unhealthy_interval: Duration::from_secs(1),
                unhealthy_http_failures: 1,
                unhealthy_tcp_failures: 1,
                unhealthy_timeouts: 1,
                unhealthy_statuses: vec![500],
                https_verify_certificate: true,
                grpc_service: String::new(),
            }),
            passive: None,
        });
        assert_eq!(e.active.verdict(Observed::Grpc(0)), Verdict::Success);
        assert_eq!(
            e.active.verdict(Observed::Grpc(14)),
            Verdict::Failure(FailureKind::Http)
        );
        assert_eq!(
            e.active.verdict(Observed::Grpc(12)),
            Verdict::Failure(FailureKind::Http)
        );
    }
}
