//! State-machine tests under tokio's paused clock: every timer is exact, no sleeps.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::{Instant, advance};

use super::*;
use crate::config::model::{ActiveCheck, BreakerRule, ErrorClass, PassiveCheck, TripCondition, UpstreamPolicy};

fn policy(yaml_upstream: &str) -> UpstreamPolicy {
    let yaml = format!(
        r#"
services:
  - name: s
    versions:
      - version: "1"
        routes: [{{ uri: "/*" }}]
        upstream:
{yaml_upstream}
gateway_groups:
  - name: default
    services:
      - {{ service: s, version: "1", nodes: [{{ host: 127.0.0.1, port: 1 }}] }}
"#
    );
    let loaded = crate::config::load_str(&yaml, "test", &Default::default(), std::path::Path::new("."))
        .unwrap_or_else(|e| panic!("{e}"));
    loaded.config.services["s"].versions[0].upstream.clone()
}

fn passive_only() -> UpstreamPolicy {
    policy(
        r#"          checks:
            passive:
              unhealthy: { http_statuses: [500], http_failures: 3, tcp_failures: 2, timeouts: 2 }
              base_ejection_time: 1
              max_ejection_time: 3"#,
    )
}

fn active_and_passive() -> UpstreamPolicy {
    policy(
        r#"          checks:
            active:
              healthy: { successes: 2 }
              unhealthy: { http_failures: 2, tcp_failures: 2, timeouts: 3 }
            passive:
              unhealthy: { http_statuses: [500], http_failures: 3 }"#,
    )
}

/// An observation with a 1 ms latency and no `Retry-After`.
pub(crate) fn obs(source: Source, observed: Observed) -> Observation {
    Observation {
        source,
        observed,
        latency: Duration::from_millis(1),
        retry_after: None,
    }
}

/// Observes through the built-in evaluator, as the request path does.
fn feed(h: &EndpointHealth, p: &UpstreamPolicy, source: Source, observed: Observed) -> Transitions {
    let e = BuiltinEvaluator::new(&p.checks);
    let key = crate::outcome::EndpointKey {
        service: "s".into(),
        authority: "127.0.0.1:1".into(),
    };
    let node = crate::config::model::Node {
        host: "127.0.0.1".into(),
        port: 1,
        weight: 1,
        zone: String::new(),
        region: String::new(),
        priority: 0,
        tags: vec![],
    };
    let o = obs(source, observed);
    let verdict = e.evaluate(&NodeInfo { key: &key, node: &node }, &o);
    h.observe(p, &o, verdict, Instant::now())
}

fn causes(t: &Transitions) -> Vec<Cause> {
    t.iter().map(|t| t.cause).collect()
}

#[tokio::test(start_paused = true)]
async fn passive_alone_ejects_returns_through_one_trial_and_doubles_the_ejection() {
    let p = passive_only();
    let h = EndpointHealth::new();
    for _ in 0..2 {
        assert!(feed(&h, &p, Source::Passive, Observed::Status(500)).is_empty());
    }
    // A success in between clears the failure counter: consecutive failures only.
    feed(&h, &p, Source::Passive, Observed::Status(200));
    for _ in 0..2 {
        assert!(feed(&h, &p, Source::Passive, Observed::Status(500)).is_empty());
    }
    let t = feed(&h, &p, Source::Passive, Observed::Status(500));
    assert_eq!(causes(&t), [Cause::PassiveHttpFailures]);
    let t = t.iter().next().unwrap();
    assert_eq!(
        (t.from, t.to, t.count, t.ejections),
        (NodeState::Healthy, NodeState::Ejected, 3, 1)
    );
    assert_eq!(t.out_for, Some(Duration::from_secs(1)));
    assert!(!h.is_selectable());
    assert!(h.try_admit().is_none());

    // The timer, not traffic, ends the ejection.
    advance(Duration::from_millis(999)).await;
    let (t, next) = h.tick(&p, Instant::now());
    assert!(t.is_empty());
    assert_eq!(next.unwrap() - Instant::now(), Duration::from_millis(1));
    advance(Duration::from_millis(1)).await;
    let (t, _) = h.tick(&p, Instant::now());
    assert_eq!(causes(&t), [Cause::EjectionExpired]);
    assert_eq!(h.state(), NodeState::HalfOpen);

    // Exactly one trial at a time.
    let trial = h.try_admit().expect("first request is the trial");
    assert!(trial.is_trial());
    assert!(h.try_admit().is_none(), "a second concurrent request is refused");
    // The trial fails: ejected again for twice as long.
    let t = feed(&h, &p, Source::Passive, Observed::Status(500));
    drop(trial);
    assert_eq!(causes(&t), [Cause::TrialFailed]);
    let t = t.iter().next().unwrap();
    assert_eq!((t.ejections, t.out_for), (2, Some(Duration::from_secs(2))));
    advance(Duration::from_millis(1999)).await;
    assert!(h.tick(&p, Instant::now()).0.is_empty());
    advance(Duration::from_millis(1)).await;
    assert_eq!(causes(&h.tick(&p, Instant::now()).0), [Cause::EjectionExpired]);

    // This trial succeeds.
    let trial = h.try_admit().unwrap();
    let t = feed(&h, &p, Source::Passive, Observed::Status(200));
    drop(trial);
    assert_eq!(causes(&t), [Cause::TrialSucceeded]);
    assert_eq!(h.state(), NodeState::Healthy);
    assert!(matches!(h.try_admit(), Some(Admission::Normal)));
    assert_eq!(h.ejections(), 2, "remembered until a sustained healthy period");
}

#[tokio::test(start_paused = true)]
async fn ejection_time_is_capped_and_forgiven_after_a_sustained_healthy_period() {
    let p = passive_only();
    let h = EndpointHealth::new();
    let eject = |h: &EndpointHealth| {
        feed(h, &p, Source::Passive, Observed::Timeout);
        let t = feed(h, &p, Source::Passive, Observed::Timeout);
        *t.iter().next().expect("two timeouts eject")
    };
    let come_back = |h: &EndpointHealth| {
        let t = feed(h, &p, Source::Passive, Observed::Status(200));
        assert_eq!(causes(&t), [Cause::TrialSucceeded]);
    };
    assert_eq!(eject(&h).out_for, Some(Duration::from_secs(1)));
    for expected in [2, 3, 3] {
        advance(Duration::from_secs(3)).await;
        h.tick(&p, Instant::now());
        let trial = h.try_admit().unwrap();
        let t = feed(&h, &p, Source::Passive, Observed::Status(500));
        drop(trial);
        assert_eq!(t.iter().next().unwrap().out_for, Some(Duration::from_secs(expected)));
    }
    advance(Duration::from_secs(3)).await;
    h.tick(&p, Instant::now());
    come_back(&h);
    assert_eq!(h.ejections(), 4);
    // Healthy for max_ejection_time (3 s): the sweeper forgets the old ejections.
    advance(Duration::from_secs(3)).await;
    h.tick(&p, Instant::now());
    assert_eq!(h.ejections(), 0);
    assert_eq!(eject(&h).out_for, Some(Duration::from_secs(1)));
}

#[tokio::test(start_paused = true)]
async fn active_marks_down_and_up_with_consecutive_counts() {
    let p = active_and_passive();
    let h = EndpointHealth::new();
    assert!(feed(&h, &p, Source::Active, Observed::Status(500)).is_empty());
    // A failure of another kind does not clear http failures; a success would.
    assert!(feed(&h, &p, Source::Active, Observed::Timeout).is_empty());
    let t = feed(&h, &p, Source::Active, Observed::Status(500));
    assert_eq!(causes(&t), [Cause::ActiveHttpFailures]);
    assert_eq!(h.state(), NodeState::Unhealthy);
    assert!(h.try_admit().is_none());
    // Unhealthy by probes: traffic (in panic) does not bring it back, probes do.
    assert!(feed(&h, &p, Source::Passive, Observed::Status(200)).is_empty());
    assert!(feed(&h, &p, Source::Active, Observed::Status(200)).is_empty());
    assert!(feed(&h, &p, Source::Active, Observed::Status(500)).is_empty());
    assert!(feed(&h, &p, Source::Active, Observed::Status(200)).is_empty());
    let t = feed(&h, &p, Source::Active, Observed::Status(200));
    assert_eq!(causes(&t), [Cause::ActiveSuccesses]);
    assert_eq!(h.state(), NodeState::Healthy);
    // Timers never move an unhealthy node: no deadline.
    assert_eq!(h.tick(&p, Instant::now()).1, None);
}

#[tokio::test(start_paused = true)]
async fn passive_with_active_marks_unhealthy_and_probes_bring_it_back() {
    let p = active_and_passive();
    let h = EndpointHealth::new();
    for _ in 0..2 {
        feed(&h, &p, Source::Passive, Observed::Status(500));
    }
    let t = feed(&h, &p, Source::Passive, Observed::Status(500));
    assert_eq!(causes(&t), [Cause::PassiveHttpFailures]);
    assert_eq!(h.state(), NodeState::Unhealthy);
    advance(Duration::from_secs(600)).await;
    assert!(h.tick(&p, Instant::now()).0.is_empty(), "no timer brings it back");
    feed(&h, &p, Source::Active, Observed::Status(200));
    let t = feed(&h, &p, Source::Active, Observed::Status(200));
    assert_eq!(causes(&t), [Cause::ActiveSuccesses]);
}

fn breaker_policy(condition: TripCondition, accept_retry_after: bool) -> UpstreamPolicy {
    let mut p = policy("          type: roundrobin");
    p.breaker = vec![BreakerRule {
        name: "errors".into(),
        condition,
        interval: Duration::from_secs(10),
        status_ranges: vec![(500, 599), (429, 429)],
        errors: vec![ErrorClass::ConnectFailure, ErrorClass::Timeout, ErrorClass::Reset],
        trip_duration: Duration::from_secs(5),
        accept_retry_after,
    }];
    p
}

#[tokio::test(start_paused = true)]
async fn breaker_trips_on_percentage_half_opens_and_closes() {
    let p = breaker_policy(
        TripCondition::Percentage {
            percent: 50.0,
            min_requests: 4,
        },
        false,
    );
    let h = EndpointHealth::new();
    h.configure(&p.breaker);
    for o in [Observed::Status(200), Observed::Status(503), Observed::Status(200)] {
        assert!(feed(&h, &p, Source::Passive, o).is_empty());
    }
    let t = feed(&h, &p, Source::Passive, Observed::Status(503));
    assert_eq!(causes(&t), [Cause::BreakerTripped]);
    let t = t.iter().next().unwrap();
    assert_eq!((t.count, t.requests, t.to), (2, 4, NodeState::BreakerOpen));
    assert!(!h.is_selectable() && h.try_admit().is_none());
    // Requests still in flight when it tripped do not move an open breaker.
    assert!(feed(&h, &p, Source::Passive, Observed::Status(200)).is_empty());

    advance(Duration::from_millis(4999)).await;
    assert!(h.tick(&p, Instant::now()).0.is_empty());
    advance(Duration::from_millis(1)).await;
    assert_eq!(causes(&h.tick(&p, Instant::now()).0), [Cause::BreakerExpired]);
    assert_eq!(h.state(), NodeState::HalfOpen);
    let trial = h.try_admit().unwrap();
    assert!(h.try_admit().is_none());
    // Trial fails: open again for the trip duration.
    let t = feed(&h, &p, Source::Passive, Observed::Timeout);
    drop(trial);
    assert_eq!(causes(&t), [Cause::BreakerTrialFailed]);
    advance(Duration::from_secs(5)).await;
    h.tick(&p, Instant::now());
    let trial = h.try_admit().unwrap();
    let t = feed(&h, &p, Source::Passive, Observed::Status(404));
    drop(trial);
    assert_eq!(causes(&t), [Cause::BreakerTrialSucceeded]);
    assert_eq!(h.state(), NodeState::Healthy);
    // The window starts empty after closing: one failure is 100 % of 1, under min_requests.
    assert!(feed(&h, &p, Source::Passive, Observed::Status(500)).is_empty());
}

#[tokio::test(start_paused = true)]
async fn breaker_honours_retry_after_on_429() {
    let p = breaker_policy(TripCondition::Count(1), true);
    let h = EndpointHealth::new();
    h.configure(&p.breaker);
    let mut o = obs(Source::Passive, Observed::Status(429));
    o.retry_after = Some(Duration::from_secs(20));
    let t = h.observe(&p, &o, Verdict::Ignore, Instant::now());
    assert_eq!(t.iter().next().unwrap().out_for, Some(Duration::from_secs(20)));
    advance(Duration::from_secs(19)).await;
    assert!(h.tick(&p, Instant::now()).0.is_empty());
    advance(Duration::from_secs(1)).await;
    assert_eq!(causes(&h.tick(&p, Instant::now()).0), [Cause::BreakerExpired]);
}

#[tokio::test(start_paused = true)]
async fn removed_checks_and_rules_release_their_states() {
    let p = passive_only();
    let h = EndpointHealth::new();
    for _ in 0..3 {
        feed(&h, &p, Source::Passive, Observed::Status(500));
    }
    assert_eq!(h.state(), NodeState::Ejected);
    // The next version has no checks at all: nothing could bring the node back.
    let none = policy("          type: roundrobin");
    assert_eq!(causes(&h.tick(&none, Instant::now()).0), [Cause::ConfigChanged]);
    assert_eq!(h.state(), NodeState::Healthy);

    // Active only, and a node held down by it, then a version with passive only.
    let active = active_and_passive();
    for _ in 0..2 {
        feed(&h, &active, Source::Active, Observed::ConnectFailure);
    }
    assert_eq!(h.state(), NodeState::Unhealthy);
    assert_eq!(causes(&h.tick(&p, Instant::now()).0), [Cause::ConfigChanged]);
    assert_eq!(h.state(), NodeState::HalfOpen, "a trial decides now");

    let b = breaker_policy(TripCondition::Count(1), false);
    let h = EndpointHealth::new();
    h.configure(&b.breaker);
    feed(&h, &b, Source::Passive, Observed::Reset);
    assert_eq!(h.state(), NodeState::BreakerOpen);
    h.configure(&[]);
    assert_eq!(causes(&h.tick(&none, Instant::now()).0), [Cause::ConfigChanged]);
    assert_eq!(h.state(), NodeState::Healthy);
}

#[tokio::test(start_paused = true)]
async fn report_shows_state_timer_cause_and_counters() {
    let p = passive_only();
    let h = EndpointHealth::new();
    feed(&h, &p, Source::Passive, Observed::Status(200));
    let r = report(&h);
    assert_eq!(r["state"], "healthy");
    assert_eq!(r["counters"]["passive"]["successes"], 1);
    for _ in 0..3 {
        feed(&h, &p, Source::Passive, Observed::Status(500));
    }
    let r = report(&h);
    assert_eq!(r["state"], "ejected");
    assert_eq!(r["ejections"], 1);
    assert_eq!(r["ejected_remaining_ms"], 1000);
    assert_eq!(r["last_transition"]["cause"], "passive_http_failures");
    assert_eq!(r["last_transition"]["count"], 3);
    assert_eq!(r["last_transition"]["from"], "healthy");
    assert_eq!(r["transitions"], 1);
}

#[test]
fn concurrent_failures_eject_exactly_once() {
    let p = Arc::new(passive_only());
    let h = Arc::new(EndpointHealth::new());
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let (p, h) = (p.clone(), h.clone());
            std::thread::spawn(move || {
                (0..100)
                    .map(|_| feed(&h, &p, Source::Passive, Observed::Status(500)).iter().count())
                    .sum::<usize>()
            })
        })
        .collect();
    let total: usize = threads.into_iter().map(|t| t.join().unwrap()).sum();
    assert_eq!(total, 1);
    assert_eq!(h.transitions_total(), 1);
}

#[test]
fn active_check_defaults_follow_apisix() {
    let p = policy(
        r#"          checks:
            active: { type: http }"#,
    );
    let a: &ActiveCheck = p.checks.active.as_ref().unwrap();
    assert_eq!(
        (
            a.healthy_successes,
            a.unhealthy_http_failures,
            a.unhealthy_tcp_failures,
            a.unhealthy_timeouts
        ),
        (2, 5, 2, 3)
    );
    let p = policy(
        r#"          checks:
            passive: {}"#,
    );
    let pc: &PassiveCheck = p.checks.passive.as_ref().unwrap();
    assert_eq!(pc.base_ejection_time, Duration::from_secs(30));
    assert_eq!(pc.max_ejection_time, Duration::from_secs(300));
}

#[tokio::test(start_paused = true)]
async fn set_state_forces_a_state_and_timers_still_apply() {
    let p = passive_only();
    let h = EndpointHealth::new();
    assert_eq!(h.set_state(NodeState::BreakerOpen), NodeState::Healthy);
    assert!(!h.is_selectable());
    assert_eq!(h.last_transition().unwrap().0.cause, Cause::Manual);
    assert_eq!(h.set_state(NodeState::Ejected), NodeState::BreakerOpen);
    assert_eq!(h.breaker_state(), BreakerState::Closed);
    advance(FORCED_OUT_FOR).await;
    assert_eq!(causes(&h.tick(&p, Instant::now()).0), [Cause::EjectionExpired]);
    h.set_state(NodeState::Unhealthy);
    assert_eq!(h.state(), NodeState::Unhealthy);
    h.set_state(NodeState::Healthy);
    assert!(h.is_healthy());
}
