//! The registry of limiter state that outlives snapshots, and the background task
//! that syncs shared rules with Redis and persists quotas.
//!
//! State is keyed by what it counts: a limit by (service, rule name, definition —
//! everything but `shadow`), a quota by (service, key, period, alignment, store),
//! so a new config keeps the counts of every rule that stays, and raising a quota's
//! `calls` keeps what was already spent. State no snapshot uses any more is
//! dropped by [`LimitRegistry::sweep`] (a dropped quota is written once more).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::builtin::{BuiltinLimiter, Counting, QuotaCounting, QuotaSlot, RuleSlot};
use super::counters::SharedCounters;
use super::key::KeySpec;
use super::local::LocalRule;
use super::metrics::LimitMetrics;
use super::quota::{LocalQuota, Periods};
use super::shared::{SharedAlgo, SharedRule};
use super::store::{HEARTBEAT_EVERY, Store};
use super::time::Clock;
use crate::config::model::{
    CounterPolicy, GatewaySettings, LimitAlgorithm, LimitRule, QuotaPeriod, QuotaRule, ServiceVersion,
};
use crate::metrics::Metrics;

const TICK: Duration = Duration::from_millis(100);
const SWEEP_EVERY: Duration = Duration::from_secs(5);

/// What [`LimitRegistry::usage`] reports of one rule.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RuleUsage {
    /// Rule name.
    pub name: String,
    /// Counted in Redis: `busiest` is this unit's view as of its last sync.
    pub shared: bool,
    /// Keys tracked in this process.
    pub keys: usize,
    /// The busiest keys: (key, used, limit).
    pub busiest: Vec<(String, u64, u64)>,
}

/// Limiter state shared by every snapshot of a gateway.
#[derive(Debug)]
pub struct LimitRegistry {
    inner: Mutex<Inner>,
    clock: Arc<Clock>,
    counters: Arc<SharedCounters>,
}

#[derive(Debug, Default)]
struct Inner {
    rules: HashMap<String, Counting>,
    quotas: HashMap<String, QuotaCounting>,
    store: Option<Arc<Store>>,
    retired: Vec<Arc<LocalQuota>>,
    metrics: LimitMetrics,
    /// Live keys evicted from the tables, as last reported to `metrics`.
    evicted: u64,
}

impl Default for LimitRegistry {
    fn default() -> Self {
        let clock = Arc::new(Clock::new());
        Self {
            inner: Mutex::default(),
            counters: Arc::new(SharedCounters::new(clock.clone())),
            clock,
        }
    }
}

fn algorithm(a: &LimitAlgorithm) -> String {
    match a {
        LimitAlgorithm::TokenBucket { rate, burst } => format!("token_bucket(rate={rate},burst={burst})"),
        LimitAlgorithm::SlidingWindow { count, window } => {
            format!("sliding_window(count={count},window={}ms)", window.as_millis())
        }
    }
}

fn period(p: QuotaPeriod) -> &'static str {
    match p {
        QuotaPeriod::Hour => "hour",
        QuotaPeriod::Day => "day",
        QuotaPeriod::Month => "month",
    }
}

fn short_hash(s: &str) -> String {
    format!("{:016x}", xxhash_rust::xxh3::xxh3_64(s.as_bytes()))
}

impl LimitRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// The counters plugins use.
    pub fn counters(&self) -> Arc<SharedCounters> {
        self.counters.clone()
    }

    /// The Redis store, if `gateway.redis` is configured.
    pub fn store(&self) -> Option<Arc<Store>> {
        self.lock().store.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Registers the rate-limit families in `metrics` and reports to them from now
    /// on (until then, and in tests, the metrics are detached).
    pub fn register_metrics(&self, metrics: &Metrics) {
        let limits = metrics.register(LimitMetrics::register);
        self.lock().metrics = limits;
    }

    /// The built-in limiter of a service version, reusing the state of every rule
    /// that an earlier snapshot already had.
    pub fn limiter(&self, service: &Arc<str>, version: &ServiceVersion, gw: &GatewaySettings) -> Arc<BuiltinLimiter> {
        let mut inner = self.lock();
        let metrics = inner.metrics.clone();
        if let Some(settings) = &gw.redis {
            let current = inner.store.as_ref().is_some_and(|s| s.serves(settings, &gw.group));
            if !current {
                let store = Arc::new(Store::new(settings, &gw.group, metrics.clone()));
                self.counters.set_store(Some(store.clone()));
                inner.store = Some(store);
            }
        }
        let store = inner.store.clone();
        let rules = version
            .limits
            .iter()
            .map(|rule| {
                let counting = inner.rule(service, rule, store.as_ref());
                RuleSlot::new(
                    &rule.name,
                    KeySpec::new(&rule.key),
                    rule.shadow,
                    counting,
                    metrics.rule(service, &rule.name),
                )
            })
            .collect();
        let quota = version.quota.as_ref().map(|q| QuotaSlot {
            key: KeySpec::new(&q.key),
            counting: inner.quota(service, q, gw, store.as_ref(), &self.clock),
            metrics: metrics.rule(service, super::builtin::QUOTA_RULE),
        });
        Arc::new(BuiltinLimiter::new(
            service.clone(),
            rules,
            quota,
            gw.consumer_header.clone(),
            self.clock.clone(),
            self.counters.clone(),
        ))
    }

    /// The counting state of `service`'s rules, by rule name: for a local rule the
    /// number of keys tracked and the `top` busiest as (key, used, limit); for a
    /// shared (Redis) rule the keys this unit tracks, their use read from its view
    /// of the Redis counts as of the last sync.
    pub fn usage(&self, service: &str, top: usize) -> Vec<RuleUsage> {
        let clock_now = self.clock.now();
        let now = clock_now.mono_ns;
        let prefix = format!("{service}\x1f");
        let inner = self.lock();
        let mut out: Vec<RuleUsage> = inner
            .rules
            .iter()
            .filter_map(|(id, counting)| {
                let rest = id.strip_prefix(&prefix)?;
                let name = rest.split('\x1f').next().unwrap_or_default().to_string();
                Some(match counting {
                    Counting::Local(r) => {
                        let (keys, busiest) = r.busiest(now, top);
                        RuleUsage {
                            name,
                            shared: false,
                            keys,
                            busiest,
                        }
                    }
                    Counting::Shared(r) => {
                        let (keys, busiest) = r.busiest(clock_now, top);
                        RuleUsage {
                            name,
                            shared: true,
                            keys,
                            busiest,
                        }
                    }
                })
            })
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    /// Drops state that no limiter uses any more.
    pub fn sweep(&self) {
        let mut inner = self.lock();
        inner.rules.retain(|_, c| match c {
            Counting::Local(r) => Arc::strong_count(r) > 1,
            Counting::Shared(r) => Arc::strong_count(r) > 1,
        });
        let mut retired = Vec::new();
        inner.quotas.retain(|_, c| match c {
            QuotaCounting::Local(q) if Arc::strong_count(q) == 1 => {
                retired.push(q.clone());
                false
            }
            QuotaCounting::Local(_) => true,
            QuotaCounting::Shared(r) => Arc::strong_count(r) > 1,
        });
        inner.retired.extend(retired);
    }

    /// Writes every quota now (clean shutdown) and leaves the live-unit set.
    pub async fn close(&self) {
        let (quotas, store) = {
            let mut inner = self.lock();
            let mut quotas: Vec<Arc<LocalQuota>> = std::mem::take(&mut inner.retired);
            quotas.extend(inner.quotas.values().filter_map(|q| match q {
                QuotaCounting::Local(q) => Some(q.clone()),
                QuotaCounting::Shared(_) => None,
            }));
            (quotas, inner.store.clone())
        };
        let now = self.clock.now().wall_ms;
        let _ = tokio::task::spawn_blocking(move || {
            for q in quotas {
                if let Err(e) = q.persist(now) {
                    tracing::warn!(error = %e, "quota state not written at shutdown");
                }
            }
        })
        .await;
        if let Some(store) = store {
            store.leave().await;
        }
    }

    /// Syncs shared rules and counters with Redis, heartbeats, persists quotas and
    /// sweeps idle keys until `shutdown` is cancelled.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let mut last_sync: HashMap<usize, Instant> = HashMap::new();
        let mut last_persist: HashMap<usize, Instant> = HashMap::new();
        let mut last_heartbeat: Option<Instant> = None;
        let mut last_counters = Instant::now();
        let mut last_sweep = Instant::now();
        loop {
            let (shared, quotas, retired, store) = self.work();
            let tick = shared.iter().map(|r| r.sync_interval()).min().unwrap_or(TICK).min(TICK);
            let wake = async {
                match &store {
                    Some(s) => s.wake.notified().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(tick) => {}
                _ = wake => {}
            }
            let now = self.clock.now();
            if let Some(store) = &store {
                let due = last_heartbeat.is_none_or(|t| t.elapsed() >= HEARTBEAT_EVERY);
                if due || store.degraded() {
                    last_heartbeat = Some(Instant::now());
                    if let Err(e) = store.heartbeat(now.wall_ms).await {
                        tracing::debug!(error = %e, "Redis heartbeat failed");
                    }
                }
                for rule in shared.iter().filter(|_| !store.degraded()) {
                    let id = Arc::as_ptr(rule) as usize;
                    let periodic = last_sync.get(&id).is_none_or(|t| t.elapsed() >= rule.sync_interval());
                    if periodic {
                        last_sync.insert(id, Instant::now());
                    }
                    if let Err(e) = rule.sync(now.wall_ms, !periodic).await {
                        tracing::debug!(error = %e, "rate-limit sync failed");
                        break;
                    }
                }
                if last_counters.elapsed() >= TICK && !store.degraded() {
                    last_counters = Instant::now();
                    if let Err(e) = self.counters.sync().await {
                        tracing::debug!(error = %e, "counter sync failed");
                    }
                }
            }
            let due: Vec<Arc<LocalQuota>> = quotas
                .into_iter()
                .filter(|q| {
                    let id = Arc::as_ptr(q) as usize;
                    let due = last_persist.get(&id).is_none_or(|t| t.elapsed() >= q.sync_interval());
                    if due {
                        last_persist.insert(id, Instant::now());
                    }
                    due
                })
                .chain(retired)
                .collect();
            if !due.is_empty() {
                self.persist(due, now.wall_ms).await;
            }
            if last_sweep.elapsed() >= SWEEP_EVERY {
                last_sweep = Instant::now();
                self.sweep();
                self.sweep_keys(&shared, now);
                last_sync.retain(|id, _| shared.iter().any(|r| Arc::as_ptr(r) as usize == *id));
            }
        }
    }

    /// What the task works on this tick.
    #[allow(clippy::type_complexity)]
    fn work(
        &self,
    ) -> (
        Vec<Arc<SharedRule>>,
        Vec<Arc<LocalQuota>>,
        Vec<Arc<LocalQuota>>,
        Option<Arc<Store>>,
    ) {
        let mut inner = self.lock();
        let mut shared: Vec<Arc<SharedRule>> = inner
            .rules
            .values()
            .filter_map(|c| match c {
                Counting::Shared(r) => Some(r.clone()),
                Counting::Local(_) => None,
            })
            .collect();
        let mut quotas = Vec::new();
        for q in inner.quotas.values() {
            match q {
                QuotaCounting::Shared(r) => shared.push(r.clone()),
                QuotaCounting::Local(q) => quotas.push(q.clone()),
            }
        }
        let retired = std::mem::take(&mut inner.retired);
        (shared, quotas, retired, inner.store.clone())
    }

    async fn persist(&self, quotas: Vec<Arc<LocalQuota>>, now_ms: u64) {
        let failures = tokio::task::spawn_blocking(move || {
            quotas
                .iter()
                .filter_map(|q| q.persist(now_ms).err())
                .map(|e| e.to_string())
                .collect::<Vec<_>>()
        })
        .await
        .unwrap_or_default();
        for e in failures {
            self.count_persist_failure();
            tracing::warn!(error = %e, "quota state not written; will retry");
        }
    }

    fn count_persist_failure(&self) {
        self.lock().metrics.persist_failures.inc();
    }

    fn sweep_keys(&self, shared: &[Arc<SharedRule>], now: super::time::Now) {
        let locals: Vec<Arc<LocalRule>> = self
            .lock()
            .rules
            .values()
            .filter_map(|c| match c {
                Counting::Local(r) => Some(r.clone()),
                Counting::Shared(_) => None,
            })
            .collect();
        let mut evicted: u64 = locals.iter().map(|r| r.sweep(now.mono_ns)).sum();
        evicted += shared.iter().map(|r| r.sweep(now.wall_ms)).sum::<u64>();
        self.counters.sweep();
        let mut inner = self.lock();
        if evicted > inner.evicted {
            inner.metrics.evicted_keys.inc_by(evicted - inner.evicted);
        }
        inner.evicted = evicted;
    }
}

impl Inner {
    fn rule(&mut self, service: &str, rule: &LimitRule, store: Option<&Arc<Store>>) -> Counting {
        let def = format!(
            "key={};{}",
            KeySpec::new(&rule.key).describe(),
            algorithm(&rule.algorithm)
        );
        let (id, store) = match (rule.policy, store) {
            (CounterPolicy::Redis, Some(store)) => (
                format!(
                    "{service}\x1f{}\x1f{def};redis;sync={:?};failure={:?};{}:{}",
                    rule.name,
                    rule.sync_interval,
                    rule.on_store_failure,
                    store.prefix(),
                    Arc::as_ptr(store) as usize
                ),
                Some(store),
            ),
            _ => (format!("{service}\x1f{}\x1f{def};local", rule.name), None),
        };
        self.rules
            .entry(id)
            .or_insert_with(|| match store {
                Some(store) => {
                    let prefix = format!("{}:rl:{service}:{}:{}", store.prefix(), rule.name, short_hash(&def));
                    Counting::Shared(Arc::new(SharedRule::new(
                        SharedAlgo::from_limit(&rule.algorithm),
                        Some(rule.algorithm),
                        rule.on_store_failure,
                        rule.sync_interval,
                        prefix,
                        store.clone(),
                    )))
                }
                None => Counting::Local(Arc::new(LocalRule::new(&rule.algorithm))),
            })
            .clone()
    }

    fn quota(
        &mut self,
        service: &str,
        q: &QuotaRule,
        gw: &GatewaySettings,
        store: Option<&Arc<Store>>,
        clock: &Clock,
    ) -> QuotaCounting {
        let alignment = if q.calendar { "calendar" } else { "rolling" };
        let def = format!(
            "key={};period={};{alignment}",
            KeySpec::new(&q.key).describe(),
            period(q.period)
        );
        let periods = Periods {
            period: q.period,
            calendar: q.calendar,
        };
        let counting = match (q.policy, store) {
            (CounterPolicy::Redis, Some(store)) => {
                let id = format!(
                    "{service}\x1fquota\x1f{def};calls={};sync={:?};failure={:?};{}",
                    q.calls,
                    q.sync_interval,
                    q.on_store_failure,
                    Arc::as_ptr(store) as usize
                );
                self.quotas
                    .entry(id)
                    .or_insert_with(|| {
                        let prefix = format!("{}:q:{service}:{}", store.prefix(), short_hash(&def));
                        QuotaCounting::Shared(Arc::new(SharedRule::new(
                            SharedAlgo::Quota {
                                calls: q.calls,
                                periods,
                            },
                            None,
                            q.on_store_failure,
                            q.sync_interval,
                            prefix,
                            store.clone(),
                        )))
                    })
                    .clone()
            }
            _ => {
                let path = quota_path(&gw.state_dir, service, &def);
                let id = format!("{service}\x1fquota\x1f{def};local;{}", path.display());
                self.quotas
                    .entry(id)
                    .or_insert_with(|| {
                        let now = clock.now().wall_ms;
                        QuotaCounting::Local(Arc::new(LocalQuota::open(path, def.clone(), periods, q.calls, now)))
                    })
                    .clone()
            }
        };
        if let QuotaCounting::Local(l) = &counting {
            l.configure(q.calls, q.sync_interval);
        }
        counting
    }
}

/// Where a local quota of `service` is persisted.
fn quota_path(state_dir: &std::path::Path, service: &str, def: &str) -> PathBuf {
    state_dir
        .join("quotas")
        .join(format!("{service}.{}.json", short_hash(&format!("{service}\x1f{def}"))))
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::config::{Config, Overrides, load_str};
    use crate::ratelimit::{Decision, LimitRequest, RateLimiter};

    fn config(state: &Path, limits: &str) -> Config {
        let text = format!(
            r#"
gateway: {{ state_dir: "{}" }}
services:
  - name: s
    versions:
      - version: "1"
        routes: [ {{ uri: "/" }} ]
{limits}
gateway_groups:
  - {{ name: default, services: [ {{ service: s, version: "1", nodes: [ {{ host: h, port: 1 }} ] }} ] }}
"#,
            state.display()
        );
        load_str(&text, "t", &Overrides::default(), Path::new("."))
            .unwrap()
            .config
    }

    fn limiter(reg: &LimitRegistry, cfg: &Config) -> Arc<BuiltinLimiter> {
        let version = &cfg.services["s"].versions[0];
        reg.limiter(&"s".into(), version, &cfg.gateway)
    }

    fn admitted(l: &BuiltinLimiter, n: usize) -> usize {
        let headers = http::HeaderMap::new();
        let (method, uri) = (http::Method::GET, http::Uri::from_static("/"));
        let req = LimitRequest {
            method: &method,
            uri: &uri,
            headers: &headers,
            remote: "192.0.2.9:1".parse().unwrap(),
            route: "r",
        };
        (0..n)
            .filter(|_| matches!(l.check(&req), Decision::Allow { .. }))
            .count()
    }

    #[test]
    fn state_survives_a_new_config_for_rules_that_stay() {
        let dir = tempfile::tempdir().unwrap();
        let reg = LimitRegistry::new();
        let rule = "          - { name: a, key: remote_addr, algorithm: token_bucket, rate: 0.001, burst: 3 }\n";
        let first = config(dir.path(), &format!("        limits:\n{rule}"));
        let l1 = limiter(&reg, &first);
        assert_eq!(admitted(&l1, 2), 2);
        // A new config with the same rule (and another one) keeps its count.
        let second = config(
            dir.path(),
            &format!(
                "        limits:\n{rule}          - {{ name: b, key: route, algorithm: token_bucket, rate: 1 }}\n"
            ),
        );
        let l2 = limiter(&reg, &second);
        assert_eq!(admitted(&l2, 5), 1);
        // A changed definition starts from zero.
        let third = config(
            dir.path(),
            "        limits:\n          - { name: a, key: remote_addr, algorithm: token_bucket, rate: 0.001, burst: 4 }\n",
        );
        let l3 = limiter(&reg, &third);
        assert_eq!(admitted(&l3, 9), 4);
        // State no limiter uses is dropped.
        drop((l1, l2));
        reg.sweep();
        assert_eq!(reg.lock().rules.len(), 1);
    }

    #[test]
    fn quota_counts_survive_a_new_calls_value_and_a_new_registry() {
        let dir = tempfile::tempdir().unwrap();
        let q = |calls: u32| format!("        quota: {{ key: remote_addr, calls: {calls}, period: day }}\n");
        let reg = LimitRegistry::new();
        let l = limiter(&reg, &config(dir.path(), &q(3)));
        assert_eq!(admitted(&l, 2), 2);
        let l = limiter(&reg, &config(dir.path(), &q(5)));
        assert_eq!(admitted(&l, 9), 3, "5 calls, 2 already spent");
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        rt.block_on(reg.close());
        // A restart (a new registry) reads the file back.
        let reg = LimitRegistry::new();
        let l = limiter(&reg, &config(dir.path(), &q(6)));
        assert_eq!(admitted(&l, 9), 1);
    }
}
