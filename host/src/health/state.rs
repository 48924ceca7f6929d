//! The states of an endpoint's two health dimensions, the causes of transitions,
//! and their packing into atomic words.
//!
//! Health (active and passive checks) and the circuit breaker are tracked apart:
//! a node may be healthy by its probes and still have an open breaker. Each
//! dimension is one `u64` — state, a small counter, and a 48-bit millisecond
//! timestamp — so every transition is a single compare-and-swap.

use std::time::Duration;

/// The health dimension, driven by active probes and passive observation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum HealthState {
    /// Serves traffic.
    Healthy = 0,
    /// Marked down; returns when active probes succeed.
    Unhealthy = 1,
    /// Ejected by passive checks alone; returns through a trial after a timer.
    Ejected = 2,
    /// Ejection ended: one trial request at a time decides.
    HalfOpen = 3,
}

impl HealthState {
    fn from_u8(x: u8) -> Self {
        match x {
            0 => HealthState::Healthy,
            1 => HealthState::Unhealthy,
            2 => HealthState::Ejected,
            _ => HealthState::HalfOpen,
        }
    }

    /// Lower-case name for logs, metrics and the admin API.
    pub fn as_str(self) -> &'static str {
        match self {
            HealthState::Healthy => "healthy",
            HealthState::Unhealthy => "unhealthy",
            HealthState::Ejected => "ejected",
            HealthState::HalfOpen => "half_open",
        }
    }
}

/// The circuit-breaker dimension, driven by `circuit_breaker.rules`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum BreakerState {
    /// Traffic flows and is counted.
    Closed = 0,
    /// Tripped: no traffic until a timer ends.
    Open = 1,
    /// Trip ended: one trial request at a time decides.
    HalfOpen = 2,
}

impl BreakerState {
    fn from_u8(x: u8) -> Self {
        match x {
            0 => BreakerState::Closed,
            1 => BreakerState::Open,
            _ => BreakerState::HalfOpen,
        }
    }

    /// Lower-case name for logs, metrics and the admin API.
    pub fn as_str(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "half_open",
        }
    }
}

/// One state summarising both dimensions, as the admin API and the node gauge
/// show it: the health state unless the node is healthy, then the breaker's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeState {
    /// Serves traffic.
    Healthy,
    /// Marked down by checks.
    Unhealthy,
    /// Ejected by passive checks until a time.
    Ejected,
    /// Admits one trial request at a time (ejection or breaker).
    HalfOpen,
    /// The circuit breaker is open.
    BreakerOpen,
}

impl NodeState {
    /// Every state, in gauge order.
    pub const ALL: [NodeState; 5] = [
        NodeState::Healthy,
        NodeState::Unhealthy,
        NodeState::Ejected,
        NodeState::HalfOpen,
        NodeState::BreakerOpen,
    ];

    /// The summary of a health and a breaker state.
    pub fn of(health: HealthState, breaker: BreakerState) -> Self {
        match (health, breaker) {
            (HealthState::Unhealthy, _) => NodeState::Unhealthy,
            (HealthState::Ejected, _) => NodeState::Ejected,
            (_, BreakerState::Open) => NodeState::BreakerOpen,
            (HealthState::HalfOpen, _) | (_, BreakerState::HalfOpen) => NodeState::HalfOpen,
            (HealthState::Healthy, BreakerState::Closed) => NodeState::Healthy,
        }
    }

    /// Lower-case name for the admin API, logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            NodeState::Healthy => "healthy",
            NodeState::Unhealthy => "unhealthy",
            NodeState::Ejected => "ejected",
            NodeState::HalfOpen => "half_open",
            NodeState::BreakerOpen => "breaker_open",
        }
    }

    /// Position in [`NodeState::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }
}

/// Why a transition happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Cause {
    /// `checks.active.unhealthy.http_failures` consecutive failure statuses.
    ActiveHttpFailures,
    /// `checks.active.unhealthy.tcp_failures` consecutive connect failures.
    ActiveTcpFailures,
    /// `checks.active.unhealthy.timeouts` consecutive probe timeouts.
    ActiveTimeouts,
    /// `checks.active.healthy.successes` consecutive successful probes.
    ActiveSuccesses,
    /// `checks.passive.unhealthy.http_failures` consecutive failure statuses.
    PassiveHttpFailures,
    /// `checks.passive.unhealthy.tcp_failures` consecutive connect failures/resets.
    PassiveTcpFailures,
    /// `checks.passive.unhealthy.timeouts` consecutive timeouts.
    PassiveTimeouts,
    /// `checks.passive.healthy.successes` consecutive successes of an ejected node
    /// (it gets traffic only in a fail-open panic).
    PassiveSuccesses,
    /// The ejection time ended.
    EjectionExpired,
    /// The half-open trial request succeeded.
    TrialSucceeded,
    /// The half-open trial request failed.
    TrialFailed,
    /// A breaker rule tripped.
    BreakerTripped,
    /// The breaker's open time ended.
    BreakerExpired,
    /// The breaker's trial request succeeded.
    BreakerTrialSucceeded,
    /// The breaker's trial request failed.
    BreakerTrialFailed,
    /// A new config no longer has the checks or rules that held the state.
    ConfigChanged,
    /// Set by hand ([`EndpointHealth::set_state`](super::EndpointHealth::set_state)).
    Manual,
}

impl Cause {
    /// Every cause, in metric order.
    pub const ALL: [Cause; 17] = [
        Cause::ActiveHttpFailures,
        Cause::ActiveTcpFailures,
        Cause::ActiveTimeouts,
        Cause::ActiveSuccesses,
        Cause::PassiveHttpFailures,
        Cause::PassiveTcpFailures,
        Cause::PassiveTimeouts,
        Cause::PassiveSuccesses,
        Cause::EjectionExpired,
        Cause::TrialSucceeded,
        Cause::TrialFailed,
        Cause::BreakerTripped,
        Cause::BreakerExpired,
        Cause::BreakerTrialSucceeded,
        Cause::BreakerTrialFailed,
        Cause::ConfigChanged,
        Cause::Manual,
    ];

    /// Snake-case name for logs, metrics and the admin API.
    pub fn as_str(self) -> &'static str {
        match self {
            Cause::ActiveHttpFailures => "active_http_failures",
            Cause::ActiveTcpFailures => "active_tcp_failures",
            Cause::ActiveTimeouts => "active_timeouts",
            Cause::ActiveSuccesses => "active_successes",
            Cause::PassiveHttpFailures => "passive_http_failures",
            Cause::PassiveTcpFailures => "passive_tcp_failures",
            Cause::PassiveTimeouts => "passive_timeouts",
            Cause::PassiveSuccesses => "passive_successes",
            Cause::EjectionExpired => "ejection_expired",
            Cause::TrialSucceeded => "trial_succeeded",
            Cause::TrialFailed => "trial_failed",
            Cause::BreakerTripped => "breaker_tripped",
            Cause::BreakerExpired => "breaker_expired",
            Cause::BreakerTrialSucceeded => "breaker_trial_succeeded",
            Cause::BreakerTrialFailed => "breaker_trial_failed",
            Cause::ConfigChanged => "config_changed",
            Cause::Manual => "manual",
        }
    }

    /// Position in [`Cause::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }
}

/// One change of state, as logged, counted and reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transition {
    /// Summary state before.
    pub from: NodeState,
    /// Summary state after.
    pub to: NodeState,
    /// Why.
    pub cause: Cause,
    /// The count that crossed its threshold (consecutive failures or successes,
    /// failures in a breaker window); 0 for timers.
    pub count: u64,
    /// Requests in the breaker window (breaker trips only).
    pub requests: u64,
    /// How long the node stays out (ejections and trips).
    pub out_for: Option<Duration>,
    /// Ejections in a row (passive-only ejections).
    pub ejections: u8,
    /// Breaker rule index (breaker transitions).
    pub rule: Option<u8>,
}

/// Up to two transitions from one observation (one per dimension), without allocating.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Transitions {
    items: [Option<Transition>; 2],
}

impl Transitions {
    /// Adds one (a third is dropped; one observation changes at most two dimensions).
    pub fn push(&mut self, t: Transition) {
        if let Some(slot) = self.items.iter_mut().find(|s| s.is_none()) {
            *slot = Some(t);
        }
    }

    /// The transitions in order.
    pub fn iter(&self) -> impl Iterator<Item = &Transition> {
        self.items.iter().flatten()
    }

    /// Whether nothing changed.
    pub fn is_empty(&self) -> bool {
        self.items[0].is_none()
    }
}

/// Largest millisecond value a packed state holds (about 8900 years).
const T_MASK: u64 = (1 << 48) - 1;

/// One dimension of a node's health (health or breaker) packed into a u64 so one
/// compare-and-swap moves it: the state, a small counter, and a millisecond time (an
/// "until" for timed states, a "since" otherwise).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PackedState {
    pub state: u8,
    pub n: u8,
    pub t: u64,
}

impl PackedState {
    pub fn pack(self) -> u64 {
        u64::from(self.state) << 56 | u64::from(self.n) << 48 | (self.t & T_MASK)
    }

    pub fn unpack(x: u64) -> Self {
        PackedState {
            state: (x >> 56) as u8,
            n: (x >> 48) as u8,
            t: x & T_MASK,
        }
    }

    pub fn health(self) -> HealthState {
        HealthState::from_u8(self.state)
    }

    pub fn breaker(self) -> BreakerState {
        BreakerState::from_u8(self.state)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_round_trip() {
        let w = PackedState {
            state: HealthState::Ejected as u8,
            n: 7,
            t: 123_456_789,
        };
        assert_eq!(PackedState::unpack(w.pack()), w);
        assert_eq!(PackedState::unpack(w.pack()).health(), HealthState::Ejected);
    }

    #[test]
    fn summary_state_prefers_health_then_breaker() {
        use BreakerState as B;
        use HealthState as H;
        assert_eq!(NodeState::of(H::Healthy, B::Closed), NodeState::Healthy);
        assert_eq!(NodeState::of(H::Ejected, B::Open), NodeState::Ejected);
        assert_eq!(NodeState::of(H::HalfOpen, B::Open), NodeState::BreakerOpen);
        assert_eq!(NodeState::of(H::Healthy, B::HalfOpen), NodeState::HalfOpen);
        for (i, s) in NodeState::ALL.iter().enumerate() {
            assert_eq!(s.index(), i);
        }
        for (i, c) in Cause::ALL.iter().enumerate() {
            assert_eq!(c.index(), i);
        }
    }
}
