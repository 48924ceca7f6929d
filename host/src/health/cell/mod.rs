//! [`EndpointHealth`]: the health of one endpoint, shared by every snapshot that
//! serves it, and the state machine that moves it.
//!
//! Everything the request path reads or writes is atomic: selection and trial
//! admission are loads and one compare-and-swap; an observation updates packed
//! counters and, rarely, moves a state with one compare-and-swap. Time comes in as
//! a [`tokio::time::Instant`] argument, so the machine runs under paused time in
//! tests.
//!
//! ```text
//!                 failures ≥ threshold                       failures ≥ threshold
//!   ┌──────────┐  (active, or passive with active) ┌───────────┐
//!   │          │ ─────────────────────────────────▶│ unhealthy │
//!   │          │ ◀───────────────────────────────── │           │
//!   │ healthy  │  healthy.successes probes pass     └───────────┘
//!   │          │
//!   │          │  passive failures ≥ threshold      ┌───────────┐  timer: base × n
//!   │          │  (passive alone) ─────────────────▶│  ejected  │ ─────────────┐
//!   │          │                                    └───────────┘              ▼
//!   │          │ ◀──── trial request succeeds ───────────────────────── ┌───────────┐
//!   └──────────┘          trial fails: ejected again, n + 1 ◀────────── │ half_open │
//!                                                                        └───────────┘
//!   breaker (independent):  closed ──rule trips──▶ open ──timer──▶ half_open
//!                           half_open ──trial ok──▶ closed;  trial fails ──▶ open
//! ```

mod timers;
mod trips;

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use tokio::time::Instant;

use super::breaker::BreakerSet;
use super::counters::{AtomicCounts, Counts};
use super::evaluator::{FailureKind, Observation, Source, Verdict};
use super::state::{BreakerState, Cause, HealthState, NodeState, PackedState, Transition, Transitions};
use crate::config::model::{ActiveCheck, BreakerRule, PassiveCheck, UpstreamPolicy};

/// How long [`EndpointHealth::set_state`] keeps a node ejected or its breaker open.
pub const FORCED_OUT_FOR: Duration = Duration::from_secs(30);

/// Health of one endpoint, shared across snapshots.
#[derive(Debug)]
pub struct EndpointHealth {
    /// Zero of the millisecond times in the words.
    origin: Instant,
    /// [`HealthState`], ejections in a row, until (ejected) or since (other states).
    health: AtomicU64,
    /// [`BreakerState`], tripping rule, until (open) or since.
    breaker: AtomicU64,
    /// A half-open trial request is in flight.
    trial: AtomicBool,
    active: AtomicCounts,
    passive: AtomicCounts,
    /// Breaker rules with this endpoint's windows; swapped when the rules change.
    rules: ArcSwapOption<BreakerSet>,
    /// The last transition and when it happened (ms); written on transitions only.
    last: Mutex<Option<(Transition, u64)>>,
    transitions: AtomicU64,
}

impl Default for EndpointHealth {
    fn default() -> Self {
        Self::new()
    }
}

/// Permission to send one request to an endpoint.
#[derive(Debug)]
pub enum Admission<'a> {
    /// The endpoint takes traffic normally.
    Normal,
    /// This request is the endpoint's half-open trial; the slot frees when dropped.
    Trial(TrialPermit<'a>),
}

impl Admission<'_> {
    /// Whether this request is a half-open trial.
    pub fn is_trial(&self) -> bool {
        matches!(self, Admission::Trial(_))
    }
}

/// Holds an endpoint's single half-open trial slot until dropped.
#[derive(Debug)]
pub struct TrialPermit<'a>(&'a AtomicBool);

impl Drop for TrialPermit<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

impl EndpointHealth {
    /// A healthy endpoint with a closed breaker and no history.
    pub fn new() -> Self {
        let healthy = PackedState {
            state: HealthState::Healthy as u8,
            n: 0,
            t: 0,
        };
        let closed = PackedState {
            state: BreakerState::Closed as u8,
            n: 0,
            t: 0,
        };
        EndpointHealth {
            origin: Instant::now(),
            health: AtomicU64::new(healthy.pack()),
            breaker: AtomicU64::new(closed.pack()),
            trial: AtomicBool::new(false),
            active: AtomicCounts::default(),
            passive: AtomicCounts::default(),
            rules: ArcSwapOption::empty(),
            last: Mutex::new(None),
            transitions: AtomicU64::new(0),
        }
    }

    fn ms(&self, now: Instant) -> u64 {
        now.saturating_duration_since(self.origin).as_millis() as u64
    }

    fn instant(&self, ms: u64) -> Instant {
        self.origin + Duration::from_millis(ms)
    }

    fn health_word(&self) -> PackedState {
        PackedState::unpack(self.health.load(Ordering::Acquire))
    }

    fn breaker_word(&self) -> PackedState {
        PackedState::unpack(self.breaker.load(Ordering::Acquire))
    }

    /// The health dimension.
    pub fn health_state(&self) -> HealthState {
        self.health_word().health()
    }

    /// The breaker dimension.
    pub fn breaker_state(&self) -> BreakerState {
        self.breaker_word().breaker()
    }

    /// Both dimensions summarised.
    pub fn state(&self) -> NodeState {
        NodeState::of(self.health_state(), self.breaker_state())
    }

    /// Whether the endpoint may be offered to the balancer: healthy or half-open,
    /// and its breaker not open.
    pub fn is_selectable(&self) -> bool {
        matches!(self.health_state(), HealthState::Healthy | HealthState::HalfOpen)
            && self.breaker_state() != BreakerState::Open
    }

    /// Whether the endpoint counts as healthy capacity (the panic rule): healthy
    /// with a closed breaker. Half-open endpoints do not count.
    pub fn is_healthy(&self) -> bool {
        self.state() == NodeState::Healthy
    }

    /// Whether the endpoint takes only its half-open trial: selectable, not healthy.
    pub fn is_trial_only(&self) -> bool {
        self.is_selectable() && !self.is_healthy()
    }

    /// Ejections in a row (passive checks alone).
    pub fn ejections(&self) -> u8 {
        self.health_word().n
    }

    /// Current consecutive counters of one source.
    pub fn counts(&self, source: Source) -> Counts {
        match source {
            Source::Active => self.active.load(),
            Source::Passive => self.passive.load(),
        }
    }

    /// Admits one request: `None` when the endpoint is out, a [`TrialPermit`] when
    /// it is half-open and no other trial is in flight, else [`Admission::Normal`].
    pub fn try_admit(&self) -> Option<Admission<'_>> {
        let health = self.health_state();
        let breaker = self.breaker_state();
        if matches!(health, HealthState::Unhealthy | HealthState::Ejected) || breaker == BreakerState::Open {
            return None;
        }
        if health == HealthState::HalfOpen || breaker == BreakerState::HalfOpen {
            return self
                .trial
                .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
                .ok()
                .map(|_| Admission::Trial(TrialPermit(&self.trial)));
        }
        Some(Admission::Normal)
    }

    /// Forces a summary state (tests, manual overrides); returns the previous one.
    /// `Ejected` and `BreakerOpen` last [`FORCED_OUT_FOR`]. The sweeper still settles
    /// states the serving config cannot move (an `Unhealthy` node without active
    /// checks goes half-open, or healthy when there are no checks at all).
    pub fn set_state(&self, state: NodeState) -> NodeState {
        let now = Instant::now();
        let now_ms = self.ms(now);
        let prev = self.state();
        let until = now_ms + FORCED_OUT_FOR.as_millis() as u64;
        let (health, breaker) = match state {
            NodeState::Healthy => (HealthState::Healthy, BreakerState::Closed),
            NodeState::Unhealthy => (HealthState::Unhealthy, BreakerState::Closed),
            NodeState::Ejected => (HealthState::Ejected, BreakerState::Closed),
            NodeState::HalfOpen => (HealthState::HalfOpen, BreakerState::Closed),
            NodeState::BreakerOpen => (HealthState::Healthy, BreakerState::Open),
        };
        let n = self.health_word().n;
        let t = if health == HealthState::Ejected { until } else { now_ms };
        self.health.store(
            PackedState {
                state: health as u8,
                n,
                t,
            }
            .pack(),
            Ordering::Release,
        );
        let t = if breaker == BreakerState::Open { until } else { now_ms };
        self.breaker.store(
            PackedState {
                state: breaker as u8,
                n: 0,
                t,
            }
            .pack(),
            Ordering::Release,
        );
        self.active.clear();
        self.passive.clear();
        let timed = matches!(state, NodeState::Ejected | NodeState::BreakerOpen);
        self.remember(
            Transition {
                from: prev,
                to: state,
                cause: Cause::Manual,
                count: 0,
                requests: 0,
                out_for: timed.then_some(FORCED_OUT_FOR),
                ejections: n,
                rule: None,
            },
            now_ms,
        );
        prev
    }

    /// Whether a half-open trial request is in flight.
    pub fn trial_in_flight(&self) -> bool {
        self.trial.load(Ordering::Acquire)
    }

    /// Installs the breaker rules of the serving version; windows are kept while
    /// the rules stay the same.
    pub fn configure(&self, rules: &[BreakerRule]) {
        let current = self.rules.load();
        let same = match current.as_deref() {
            Some(set) => set.same_rules(rules),
            None => rules.is_empty(),
        };
        if !same {
            self.rules
                .store((!rules.is_empty()).then(|| std::sync::Arc::new(BreakerSet::new(rules))));
        }
    }

    /// Feeds one observation (with its verdict) to the state machine.
    pub fn observe(&self, policy: &UpstreamPolicy, obs: &Observation, verdict: Verdict, now: Instant) -> Transitions {
        let now_ms = self.ms(now);
        let mut out = Transitions::default();
        match obs.source {
            Source::Passive => {
                if let Some(t) = self.observe_breaker(obs, now_ms) {
                    out.push(t);
                }
                if let Some(p) = &policy.checks.passive
                    && let Some(t) = self.observe_passive(p, policy.checks.active.is_some(), verdict, now_ms)
                {
                    out.push(t);
                }
            }
            Source::Active => {
                if let Some(a) = &policy.checks.active
                    && let Some(t) = self.observe_active(a, verdict, now_ms)
                {
                    out.push(t);
                }
            }
        }
        out
    }

    fn observe_passive(&self, p: &PassiveCheck, has_active: bool, verdict: Verdict, now_ms: u64) -> Option<Transition> {
        let w = self.health_word();
        match w.health() {
            HealthState::Healthy => {
                let counts = self.passive.apply(verdict);
                let Verdict::Failure(kind) = verdict else { return None };
                let (threshold, cause) = match kind {
                    FailureKind::Http => (p.unhealthy_http_failures, Cause::PassiveHttpFailures),
                    FailureKind::Tcp => (p.unhealthy_tcp_failures, Cause::PassiveTcpFailures),
                    FailureKind::Timeout => (p.unhealthy_timeouts, Cause::PassiveTimeouts),
                };
                let count = counts.failures(kind);
                if threshold == 0 || u32::from(count) < threshold {
                    return None;
                }
                if has_active {
                    self.mark(w, HealthState::Unhealthy, cause, u64::from(count), now_ms)
                } else {
                    self.eject(p, w, cause, u64::from(count), now_ms)
                }
            }
            HealthState::HalfOpen => match verdict {
                Verdict::Success => self.mark(w, HealthState::Healthy, Cause::TrialSucceeded, 1, now_ms),
                Verdict::Failure(_) => self.eject(p, w, Cause::TrialFailed, 1, now_ms),
                Verdict::Ignore => None,
            },
            // Ejected nodes get traffic only in a fail-open panic: if it succeeds
            // `healthy.successes` times in a row, the node is back before its timer.
            HealthState::Ejected => {
                let counts = self.passive.apply(verdict);
                let n = u32::from(counts.successes);
                if verdict != Verdict::Success || p.healthy_successes == 0 || n < p.healthy_successes {
                    return None;
                }
                let count = u64::from(n);
                self.mark(w, HealthState::Healthy, Cause::PassiveSuccesses, count, now_ms)
            }
            // Marked down with active checks configured: probes bring it back.
            HealthState::Unhealthy => None,
        }
    }

    fn observe_active(&self, a: &ActiveCheck, verdict: Verdict, now_ms: u64) -> Option<Transition> {
        let counts = self.active.apply(verdict);
        let w = self.health_word();
        match (w.health(), verdict) {
            (HealthState::Healthy, Verdict::Failure(kind)) => {
                let (threshold, cause) = match kind {
                    FailureKind::Http => (a.unhealthy_http_failures, Cause::ActiveHttpFailures),
                    FailureKind::Tcp => (a.unhealthy_tcp_failures, Cause::ActiveTcpFailures),
                    FailureKind::Timeout => (a.unhealthy_timeouts, Cause::ActiveTimeouts),
                };
                let count = counts.failures(kind);
                if threshold == 0 || u32::from(count) < threshold {
                    return None;
                }
                self.mark(w, HealthState::Unhealthy, cause, u64::from(count), now_ms)
            }
            (HealthState::Unhealthy | HealthState::Ejected | HealthState::HalfOpen, Verdict::Success)
                if u32::from(counts.successes) >= a.healthy_successes =>
            {
                let count = u64::from(counts.successes);
                self.mark(w, HealthState::Healthy, Cause::ActiveSuccesses, count, now_ms)
            }
            _ => None,
        }
    }

    /// Ejects for `base × n` (capped), `n` being this ejection's number in a row.
    /// A node that stayed healthy for `max_ejection_time` since it came back starts
    /// again at `n = 1`.
    fn eject(&self, p: &PassiveCheck, w: PackedState, cause: Cause, count: u64, now_ms: u64) -> Option<Transition> {
        let forgiven =
            w.health() == HealthState::Healthy && now_ms.saturating_sub(w.t) >= p.max_ejection_time.as_millis() as u64;
        let n = if forgiven { 1 } else { w.n.saturating_add(1) };
        let out_for = p
            .base_ejection_time
            .saturating_mul(u32::from(n))
            .min(p.max_ejection_time);
        let until = now_ms + out_for.as_millis() as u64;
        let next = PackedState {
            state: HealthState::Ejected as u8,
            n,
            t: until,
        };
        self.move_health(w, next, cause, count, Some(out_for), now_ms)
    }

    /// Moves the health dimension from `w` (if it is still current) to `to` now,
    /// keeping the ejection count.
    fn mark(&self, w: PackedState, to: HealthState, cause: Cause, count: u64, now_ms: u64) -> Option<Transition> {
        let next = PackedState {
            state: to as u8,
            n: w.n,
            t: now_ms,
        };
        self.move_health(w, next, cause, count, None, now_ms)
    }

    /// Moves the health dimension from `w` (if it is still current) to `next`.
    fn move_health(
        &self,
        w: PackedState,
        next: PackedState,
        cause: Cause,
        count: u64,
        out_for: Option<Duration>,
        now_ms: u64,
    ) -> Option<Transition> {
        self.health
            .compare_exchange(w.pack(), next.pack(), Ordering::AcqRel, Ordering::Acquire)
            .ok()?;
        // Counters start over in every state (lua-resty-healthcheck does the same).
        self.active.clear();
        self.passive.clear();
        let breaker = self.breaker_state();
        let t = Transition {
            from: NodeState::of(w.health(), breaker),
            to: NodeState::of(next.health(), breaker),
            cause,
            count,
            requests: 0,
            out_for,
            ejections: next.n,
            rule: None,
        };
        self.remember(t, now_ms);
        Some(t)
    }

    fn remember(&self, t: Transition, now_ms: u64) {
        self.transitions.fetch_add(1, Ordering::Relaxed);
        *self.last.lock().unwrap_or_else(|p| p.into_inner()) = Some((t, now_ms));
    }

    /// When an ejection or an open breaker ends, if one is running.
    pub fn out_until(&self) -> (Option<Instant>, Option<Instant>) {
        let w = self.health_word();
        let b = self.breaker_word();
        (
            (w.health() == HealthState::Ejected).then(|| self.instant(w.t)),
            (b.breaker() == BreakerState::Open).then(|| self.instant(b.t)),
        )
    }

    /// Index of the rule that last tripped the breaker (meaningful while not closed).
    pub fn breaker_rule(&self) -> u8 {
        self.breaker_word().n
    }

    /// Name of breaker rule `i` of the installed rules.
    pub fn breaker_rule_name(&self, i: u8) -> Option<String> {
        self.rules
            .load()
            .as_deref()
            .map(|s| s.rule_name(usize::from(i)).to_string())
    }

    /// The last transition and when it happened.
    pub fn last_transition(&self) -> Option<(Transition, Instant)> {
        let last = *self.last.lock().unwrap_or_else(|p| p.into_inner());
        last.map(|(t, ms)| (t, self.instant(ms)))
    }

    /// Transitions ever made.
    pub fn transitions_total(&self) -> u64 {
        self.transitions.load(Ordering::Relaxed)
    }
}
