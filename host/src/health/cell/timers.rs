//! Timer work of [`EndpointHealth`], run by the background sweeper.

use std::sync::atomic::Ordering;

use tokio::time::Instant;

use super::EndpointHealth;
use crate::config::model::UpstreamPolicy;
use crate::health::state::{BreakerState, Cause, HealthState, PackedState, Transitions};

impl EndpointHealth {
    /// Timer work, run by the background sweeper: ends ejections and breaker trips
    /// whose time is up, forgets old ejections, and settles states the serving
    /// config can no longer move (its checks or rules were removed). Returns the
    /// transitions and the next time this endpoint needs a tick.
    pub fn tick(&self, policy: &UpstreamPolicy, now: Instant) -> (Transitions, Option<Instant>) {
        let now_ms = self.ms(now);
        let mut out = Transitions::default();
        let mut next: Option<u64> = None;
        let checks = &policy.checks;
        let w = self.health_word();
        let settled = match w.health() {
            HealthState::Healthy => None,
            _ if checks.active.is_none() && checks.passive.is_none() => self.move_health(
                w,
                PackedState {
                    state: HealthState::Healthy as u8,
                    n: 0,
                    t: now_ms,
                },
                Cause::ConfigChanged,
                0,
                None,
                now_ms,
            ),
            HealthState::Unhealthy if checks.active.is_none() => {
                self.mark(w, HealthState::HalfOpen, Cause::ConfigChanged, 0, now_ms)
            }
            HealthState::Ejected if now_ms >= w.t => {
                self.mark(w, HealthState::HalfOpen, Cause::EjectionExpired, 0, now_ms)
            }
            HealthState::Ejected => {
                next = Some(w.t);
                None
            }
            HealthState::Unhealthy | HealthState::HalfOpen => None,
        };
        if let Some(t) = settled {
            out.push(t);
        }
        if w.health() == HealthState::Healthy && w.n > 0 {
            let sustain = checks
                .passive
                .as_ref()
                .map_or(0, |p| p.max_ejection_time.as_millis() as u64);
            if now_ms.saturating_sub(w.t) >= sustain {
                // Quietly forget old ejections; losing the race to a transition is fine.
                let _ = self.health.compare_exchange(
                    w.pack(),
                    PackedState { n: 0, ..w }.pack(),
                    Ordering::AcqRel,
                    Ordering::Acquire,
                );
            } else {
                next = Some(next.map_or(w.t + sustain, |n| n.min(w.t + sustain)));
            }
        }

        let b = self.breaker_word();
        let moved = match b.breaker() {
            BreakerState::Open | BreakerState::HalfOpen if policy.breaker.is_empty() => {
                self.move_breaker(b, BreakerState::Closed, 0, now_ms, Cause::ConfigChanged, now_ms)
            }
            BreakerState::Open if now_ms >= b.t => {
                self.move_breaker(b, BreakerState::HalfOpen, b.n, now_ms, Cause::BreakerExpired, now_ms)
            }
            BreakerState::Open => {
                next = Some(next.map_or(b.t, |n| n.min(b.t)));
                None
            }
            _ => None,
        };
        if let Some(t) = moved {
            out.push(t);
        }
        (out, next.map(|ms| self.instant(ms)))
    }
}
