//! The built-in limiter of a service version: its `limits:` rules and its
//! `quota:`, decided together.
//!
//! Every rule sees every request. If an enforced rule refuses, the request is
//! refused and the enforced rules that admitted it get their slot back (a refused
//! request consumes nothing); the rule that asks for the longest wait is reported
//! (the strictest wins). Shadow rules count every request and never refuse. The
//! quota is consulted only for requests the rules admit, so a rate-limited request
//! does not spend quota; a spent quota refuses with 403.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use http::HeaderName;

use super::counters::SharedCounters;
use super::key::{KeySource, KeySpec, with_key};
use super::local::LocalRule;
use super::metrics::RuleMetrics;
use super::quota::LocalQuota;
use super::shared::SharedRule;
use super::time::{Clock, Now};
use super::{Admission, Decision, LimitRequest, MAX_RULES, RateHeaders, RateLimiter, RuleStep};

/// Where a rule counts.
#[derive(Debug, Clone)]
pub enum Counting {
    /// In this process.
    Local(Arc<LocalRule>),
    /// In Redis, shared by the units of the group.
    Shared(Arc<SharedRule>),
}

impl Counting {
    fn acquire(&self, key: &str, now: Now) -> RuleStep {
        match self {
            Counting::Local(r) => r.acquire(key, now.mono_ns),
            Counting::Shared(r) => r.acquire(key, now),
        }
    }

    fn refund(&self, key: &str, how: Admission, now: Now) {
        match self {
            Counting::Local(r) => r.refund(key, now.mono_ns),
            Counting::Shared(r) => r.refund(key, how, now),
        }
    }
}

/// Where a quota counts.
#[derive(Debug, Clone)]
pub enum QuotaCounting {
    /// In this process, persisted under `state_dir`.
    Local(Arc<LocalQuota>),
    /// In Redis.
    Shared(Arc<SharedRule>),
}

/// One rate-limit rule as the limiter applies it.
#[derive(Debug)]
pub struct RuleSlot {
    /// Rule name.
    pub name: Arc<str>,
    /// Key parts.
    pub key: KeySpec,
    /// Report only.
    pub shadow: bool,
    /// Counting state.
    pub counting: Counting,
    /// Metric handles.
    pub metrics: RuleMetrics,
    last_log: AtomicU64,
}

impl RuleSlot {
    /// A slot for a rule.
    pub fn new(name: &str, key: KeySpec, shadow: bool, counting: Counting, metrics: RuleMetrics) -> Self {
        Self {
            name: name.into(),
            key,
            shadow,
            counting,
            metrics,
            last_log: AtomicU64::new(u64::MAX),
        }
    }

    /// Logs a shadow refusal, at most once a second per rule.
    fn log_shadow(&self, service: &str, req: &LimitRequest<'_>, now: Now, retry: Duration) {
        let sec = now.mono_ns / 1_000_000_000;
        if self.last_log.swap(sec, Ordering::Relaxed) != sec {
            tracing::info!(
                target: "gatehouse::ratelimit",
                service,
                rule = %self.name,
                client = %req.remote.ip(),
                route = req.route,
                retry_after_ms = retry.as_millis() as u64,
                "shadow rate limit would have refused this request"
            );
        }
    }
}

/// The quota as the limiter applies it.
#[derive(Debug)]
pub struct QuotaSlot {
    /// Key parts.
    pub key: KeySpec,
    /// Counting state.
    pub counting: QuotaCounting,
    /// Metric handles.
    pub metrics: RuleMetrics,
}

/// The built-in [`RateLimiter`] of one service version.
#[derive(Debug)]
pub struct BuiltinLimiter {
    service: Arc<str>,
    rules: Vec<RuleSlot>,
    quota: Option<QuotaSlot>,
    consumer_header: Option<HeaderName>,
    clock: Arc<Clock>,
    counters: Arc<SharedCounters>,
}

/// Name of the quota in responses and metrics.
pub const QUOTA_RULE: &str = "quota";

impl BuiltinLimiter {
    /// A limiter over `rules` (at most [`MAX_RULES`]; validation enforces it) and `quota`.
    pub fn new(
        service: Arc<str>,
        mut rules: Vec<RuleSlot>,
        quota: Option<QuotaSlot>,
        consumer_header: Option<HeaderName>,
        clock: Arc<Clock>,
        counters: Arc<SharedCounters>,
    ) -> Self {
        rules.truncate(MAX_RULES);
        Self {
            service,
            rules,
            quota,
            consumer_header,
            clock,
            counters,
        }
    }

    /// Decides a request at a given time (the trait method reads the clock).
    pub fn check_at(&self, req: &LimitRequest<'_>, now: Now) -> Decision {
        let src = KeySource {
            headers: req.headers,
            remote: req.remote.ip(),
            route: req.route,
            consumer_header: self.consumer_header.as_ref(),
        };
        let headers = match self.check_rules(req, &src, now) {
            Ok(headers) => headers,
            Err(refused) => return refused,
        };
        match self.check_quota(&src, now) {
            Some(refused) => refused,
            None => Decision::Allow { headers },
        }
    }

    /// Every rule counts the request; if one refuses, the others give their slots
    /// back. `Ok` carries the headers of the tightest enforced rule.
    fn check_rules(
        &self,
        req: &LimitRequest<'_>,
        src: &KeySource<'_>,
        now: Now,
    ) -> Result<Option<RateHeaders>, Decision> {
        let mut pass = RulesPass::default();
        for (i, rule) in self.rules.iter().enumerate() {
            let step = with_key(&rule.key, src, |k| rule.counting.acquire(k, now));
            if rule.shadow && !matches!(step, RuleStep::Admit { .. }) {
                rule.metrics.shadow_limited.inc();
                if let RuleStep::Deny { retry, .. } | RuleStep::Busy { retry, .. } = step {
                    rule.log_shadow(&self.service, req, now, retry);
                }
                continue;
            }
            pass.note(i, rule, step);
        }
        if pass.refused.is_none() && pass.unavailable.is_none() {
            for (i, rule) in self.rules.iter().enumerate() {
                if pass.admitted[i].is_some() {
                    rule.metrics.allowed.inc();
                }
            }
            return Ok(pass.headers);
        }
        for (i, rule) in self.rules.iter().enumerate() {
            if let (false, Some(how)) = (rule.shadow, pass.admitted[i]) {
                with_key(&rule.key, src, |k| rule.counting.refund(k, how, now));
            }
        }
        Err(match (pass.refused, pass.unavailable) {
            (Some((i, retry, headers)), _) => Decision::Limited {
                rule: self.rules[i].name.clone(),
                retry_after: retry,
                headers,
            },
            (None, Some(i)) => Decision::Unavailable {
                rule: self.rules[i].name.clone(),
                retry_after: Duration::from_secs(1),
            },
            (None, None) => unreachable!("checked above"),
        })
    }

    /// The quota, after every rule admitted: `Some` is its refusal.
    fn check_quota(&self, src: &KeySource<'_>, now: Now) -> Option<Decision> {
        let q = self.quota.as_ref()?;
        let step = with_key(&q.key, src, |k| match &q.counting {
            QuotaCounting::Local(l) => l.acquire(k, now.wall_ms),
            QuotaCounting::Shared(s) => s.acquire(k, now),
        });
        let refused = match step {
            RuleStep::Admit { .. } => {
                q.metrics.allowed.inc();
                return None;
            }
            RuleStep::Deny { retry, .. } => Decision::QuotaExceeded {
                rule: QUOTA_RULE.into(),
                retry_after: retry,
            },
            // Room in the store, but this unit's share has not arrived: a 429, not spent.
            RuleStep::Busy { limit, retry, reset } => Decision::Limited {
                rule: QUOTA_RULE.into(),
                retry_after: retry,
                headers: RateHeaders {
                    limit,
                    remaining: 0,
                    reset,
                },
            },
            RuleStep::Unavailable => {
                q.metrics.unavailable.inc();
                return Some(Decision::Unavailable {
                    rule: QUOTA_RULE.into(),
                    retry_after: Duration::from_secs(1),
                });
            }
        };
        q.metrics.limited.inc();
        Some(refused)
    }
}

/// What the enforced rules said of one request, as they are counted.
struct RulesPass {
    /// How each rule counted an admission (to give it back on refusal).
    admitted: [Option<Admission>; MAX_RULES],
    /// Headers of the tightest admitting enforced rule.
    headers: Option<RateHeaders>,
    /// The refusing rule with the longest wait: (index, wait, headers).
    refused: Option<(usize, Duration, RateHeaders)>,
    /// The first rule whose store is unreachable (fail closed).
    unavailable: Option<usize>,
}

impl Default for RulesPass {
    fn default() -> Self {
        RulesPass {
            admitted: [None; MAX_RULES],
            headers: None,
            refused: None,
            unavailable: None,
        }
    }
}

impl RulesPass {
    /// Records what rule `i` said (a shadow rule only ever admits here).
    fn note(&mut self, i: usize, rule: &RuleSlot, step: RuleStep) {
        match step {
            RuleStep::Admit {
                limit,
                remaining,
                reset,
                how,
            } => {
                self.admitted[i] = Some(how);
                let tighter = self.headers.is_none_or(|h| remaining < h.remaining);
                if !rule.shadow && remaining != u64::MAX && tighter {
                    self.headers = Some(RateHeaders {
                        limit,
                        remaining,
                        reset,
                    });
                }
            }
            RuleStep::Deny { limit, retry, reset } | RuleStep::Busy { limit, retry, reset } => {
                rule.metrics.limited.inc();
                if self.refused.as_ref().is_none_or(|(_, r, _)| retry > *r) {
                    let h = RateHeaders {
                        limit,
                        remaining: 0,
                        reset,
                    };
                    self.refused = Some((i, retry, h));
                }
            }
            RuleStep::Unavailable => {
                rule.metrics.unavailable.inc();
                self.unavailable.get_or_insert(i);
            }
        }
    }
}

impl RateLimiter for BuiltinLimiter {
    fn name(&self) -> &str {
        "builtin"
    }

    fn check(&self, req: &LimitRequest<'_>) -> Decision {
        if self.rules.is_empty() && self.quota.is_none() {
            return Decision::Allow { headers: None };
        }
        self.check_at(req, self.clock.now())
    }

    fn counters(&self) -> Option<Arc<SharedCounters>> {
        Some(self.counters.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::model::{KeyPart, LimitAlgorithm, QuotaPeriod};
    use crate::ratelimit::quota::Periods;

    fn slot(name: &str, alg: LimitAlgorithm, shadow: bool) -> RuleSlot {
        RuleSlot::new(
            name,
            KeySpec::new(&[KeyPart::RemoteAddr]),
            shadow,
            Counting::Local(Arc::new(LocalRule::new(&alg))),
            RuleMetrics::default(),
        )
    }

    fn limiter(rules: Vec<RuleSlot>, quota: Option<QuotaSlot>) -> BuiltinLimiter {
        let clock = Arc::new(Clock::new());
        let counters = Arc::new(SharedCounters::new(clock.clone()));
        BuiltinLimiter::new("svc".into(), rules, quota, None, clock, counters)
    }

    static GET: std::sync::LazyLock<(http::Method, http::Uri)> =
        std::sync::LazyLock::new(|| (http::Method::GET, http::Uri::from_static("/")));

    fn req(headers: &http::HeaderMap) -> LimitRequest<'_> {
        LimitRequest {
            method: &GET.0,
            uri: &GET.1,
            headers,
            remote: "192.0.2.1:5000".parse().unwrap(),
            route: "r",
        }
    }

    const S: u64 = 1_000_000_000;

    fn at(s: u64) -> Now {
        Now {
            mono_ns: s * S,
            wall_ms: 1_700_000_000_000 + s * 1000,
        }
    }

    fn tb(rate: f64, burst: f64) -> LimitAlgorithm {
        LimitAlgorithm::TokenBucket { rate, burst }
    }

    #[test]
    fn strictest_rule_wins_and_refused_requests_cost_nothing() {
        let l = limiter(
            vec![slot("loose", tb(1.0, 5.0), false), slot("tight", tb(0.5, 2.0), false)],
            None,
        );
        let h = http::HeaderMap::new();
        let d: Vec<Decision> = (0..4).map(|_| l.check_at(&req(&h), at(10))).collect();
        assert!(matches!(
            d[0],
            Decision::Allow {
                headers: Some(RateHeaders {
                    limit: 2,
                    remaining: 1,
                    ..
                })
            }
        ));
        let Decision::Limited {
            rule,
            retry_after,
            headers,
        } = &d[2]
        else {
            panic!("{:?}", d[2])
        };
        assert_eq!(&**rule, "tight");
        assert_eq!(*retry_after, Duration::from_secs(2));
        assert_eq!((headers.limit, headers.remaining), (2, 0));
        // "loose" admitted only the 2 requests that went through: 3 tokens left.
        assert_eq!(l.rules[0].metrics.allowed.get(), 2);
        assert_eq!(l.rules[1].metrics.limited.get(), 2);
        let loose = &l.rules[0];
        let left = (0..10)
            .filter(|_| {
                matches!(
                    with_key(
                        &loose.key,
                        &KeySource {
                            headers: &h,
                            remote: "192.0.2.1".parse().unwrap(),
                            route: "r",
                            consumer_header: None
                        },
                        |k| loose.counting.acquire(k, at(10))
                    ),
                    RuleStep::Admit { .. }
                )
            })
            .count();
        assert_eq!(left, 3);
    }

    #[test]
    fn shadow_rules_count_but_never_refuse() {
        let l = limiter(vec![slot("watch", tb(1.0, 1.0), true)], None);
        let h = http::HeaderMap::new();
        for _ in 0..5 {
            assert!(matches!(l.check_at(&req(&h), at(3)), Decision::Allow { headers: None }));
        }
        assert_eq!(l.rules[0].metrics.allowed.get(), 1);
        assert_eq!(l.rules[0].metrics.shadow_limited.get(), 4);
    }

    #[test]
    fn quota_is_spent_only_by_admitted_requests() {
        let dir = tempfile::tempdir().unwrap();
        let periods = Periods {
            period: QuotaPeriod::Day,
            calendar: true,
        };
        let q = Arc::new(LocalQuota::open(dir.path().join("q.json"), "q".into(), periods, 3, 0));
        let quota = QuotaSlot {
            key: KeySpec::new(&[KeyPart::RemoteAddr]),
            counting: QuotaCounting::Local(q.clone()),
            metrics: RuleMetrics::default(),
        };
        let l = limiter(vec![slot("rate", tb(1.0, 2.0), false)], Some(quota));
        let h = http::HeaderMap::new();
        let first: Vec<_> = (0..4).map(|_| l.check_at(&req(&h), at(0))).collect();
        assert!(matches!(first[3], Decision::Limited { .. }));
        assert_eq!(q.count("192.0.2.1", at(0).wall_ms), 2, "429s spend no quota");
        assert!(matches!(l.check_at(&req(&h), at(5)), Decision::Allow { .. }));
        let Decision::QuotaExceeded { rule, retry_after } = l.check_at(&req(&h), at(10)) else {
            panic!()
        };
        assert_eq!(&*rule, QUOTA_RULE);
        assert!(retry_after > Duration::ZERO && retry_after <= Duration::from_secs(86_400));
    }

    #[tokio::test(start_paused = true)]
    async fn sliding_window_edges_in_tokio_time() {
        let window = LimitAlgorithm::SlidingWindow {
            count: 2,
            window: Duration::from_secs(1),
        };
        let l = limiter(vec![slot("w", window, false)], None);
        let h = http::HeaderMap::new();
        let pass = |l: &BuiltinLimiter| matches!(l.check(&req(&h)), Decision::Allow { .. });
        assert!(pass(&l) && pass(&l) && !pass(&l));
        // At the window edge the previous window still weighs fully.
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(!pass(&l));
        // Half-way through, half of it is forgiven: one more fits.
        tokio::time::advance(Duration::from_millis(500)).await;
        assert!(pass(&l) && !pass(&l));
        // Two windows later nothing is left of the past.
        tokio::time::advance(Duration::from_secs(2)).await;
        assert!(pass(&l) && pass(&l) && !pass(&l));
    }

    #[tokio::test(start_paused = true)]
    async fn the_trait_reads_tokio_time() {
        let l = limiter(vec![slot("r", tb(10.0, 10.0), false)], None);
        let h = http::HeaderMap::new();
        let passed = (0..50)
            .filter(|_| matches!(l.check(&req(&h)), Decision::Allow { .. }))
            .count();
        assert_eq!(passed, 10);
        let Decision::Limited { retry_after, .. } = l.check(&req(&h)) else {
            panic!()
        };
        tokio::time::advance(retry_after).await;
        assert!(matches!(l.check(&req(&h)), Decision::Allow { .. }));
        assert!(matches!(l.check(&req(&h)), Decision::Limited { .. }));
    }
}
