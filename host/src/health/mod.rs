//! Upstream health: the per-endpoint health cell read by the request path.
//!
//! Active probes, passive observation, circuit breakers and the panic rule build on
//! this cell (see DESIGN.md §4).

use std::sync::atomic::{AtomicU8, Ordering};

/// What the balancer may do with an endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum NodeState {
    /// Serves traffic.
    Healthy = 0,
    /// Marked down by active probes.
    Unhealthy = 1,
}

impl NodeState {
    /// Lower-case name for the admin API and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            NodeState::Healthy => "healthy",
            NodeState::Unhealthy => "unhealthy",
        }
    }
}

/// Health of one endpoint, shared across snapshots.
#[derive(Debug, Default)]
pub struct EndpointHealth {
    state: AtomicU8,
}

impl EndpointHealth {
    /// Current state.
    pub fn state(&self) -> NodeState {
        match self.state.load(Ordering::Acquire) {
            0 => NodeState::Healthy,
            _ => NodeState::Unhealthy,
        }
    }

    /// Whether the balancer may pick this endpoint.
    pub fn is_selectable(&self) -> bool {
        self.state() == NodeState::Healthy
    }

    /// Sets the state; returns the previous one.
    pub fn set_state(&self, s: NodeState) -> NodeState {
        match self.state.swap(s as u8, Ordering::AcqRel) {
            0 => NodeState::Healthy,
            _ => NodeState::Unhealthy,
        }
    }
}

/// The health part of an endpoint's entry in `GET /admin/v1/services`.
pub fn report(h: &EndpointHealth) -> serde_json::Value {
    serde_json::json!({ "state": h.state().as_str() })
}
