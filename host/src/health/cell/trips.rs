//! The breaker dimension of [`EndpointHealth`]: counting real requests against
//! the rules, tripping, and the half-open trial.

use std::sync::atomic::Ordering;

use super::EndpointHealth;
use crate::health::breaker::{BreakerSet, Trip};
use crate::health::evaluator::Observation;
use crate::health::state::{BreakerState, Cause, NodeState, PackedState, Transition};

impl EndpointHealth {
    pub(super) fn observe_breaker(&self, obs: &Observation, now_ms: u64) -> Option<Transition> {
        let guard = self.rules.load();
        let set = guard.as_deref().filter(|s| !s.is_empty())?;
        let w = self.breaker_word();
        match w.breaker() {
            BreakerState::Closed => {
                let trip = set.record(obs.observed, obs.retry_after, now_ms)?;
                self.open_breaker(set, w, trip, Cause::BreakerTripped, now_ms)
            }
            BreakerState::HalfOpen => match set.trial_failure(obs.observed, obs.retry_after) {
                Some(trip) => self.open_breaker(set, w, trip, Cause::BreakerTrialFailed, now_ms),
                None => {
                    let t =
                        self.move_breaker(w, BreakerState::Closed, 0, now_ms, Cause::BreakerTrialSucceeded, now_ms)?;
                    set.clear();
                    Some(t)
                }
            },
            BreakerState::Open => None,
        }
    }

    pub(super) fn open_breaker(
        &self,
        set: &BreakerSet,
        w: PackedState,
        trip: Trip,
        cause: Cause,
        now_ms: u64,
    ) -> Option<Transition> {
        let until = now_ms + trip.open_for.as_millis() as u64;
        let rule = trip.rule.min(usize::from(u8::MAX)) as u8;
        let mut t = self.move_breaker_raw(w, BreakerState::Open, rule, until, cause)?;
        set.clear();
        t.count = trip.failures;
        t.requests = trip.requests;
        t.out_for = Some(trip.open_for);
        t.rule = Some(rule);
        self.remember(t, now_ms);
        Some(t)
    }

    pub(super) fn move_breaker(
        &self,
        w: PackedState,
        to: BreakerState,
        rule: u8,
        t: u64,
        cause: Cause,
        now_ms: u64,
    ) -> Option<Transition> {
        let tr = self.move_breaker_raw(w, to, rule, t, cause)?;
        self.remember(tr, now_ms);
        Some(tr)
    }

    pub(super) fn move_breaker_raw(
        &self,
        w: PackedState,
        to: BreakerState,
        rule: u8,
        t: u64,
        cause: Cause,
    ) -> Option<Transition> {
        let next = PackedState {
            state: to as u8,
            n: rule,
            t,
        };
        self.breaker
            .compare_exchange(w.pack(), next.pack(), Ordering::AcqRel, Ordering::Acquire)
            .ok()?;
        let health = self.health_state();
        Some(Transition {
            from: NodeState::of(health, w.breaker()),
            to: NodeState::of(health, to),
            cause,
            count: 0,
            requests: 0,
            out_for: None,
            ejections: 0,
            rule: Some(rule),
        })
    }
}
