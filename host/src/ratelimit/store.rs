//! The Redis connection shared by every `policy: redis` rule of a gateway: one
//! multiplexed connection, script handles, the unit heartbeat that counts live
//! units, and the normal/degraded mode the request path reads.
//!
//! Only the background sync task talks to Redis. Every operation has a timeout
//! (`gateway.redis.timeout`, default 250 ms); a failure or timeout drops the
//! connection and switches to degraded mode, and the next successful operation
//! (the task retries every tick) switches back. Both transitions are logged.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, Script, ScriptInvocation, Value};
use tokio::sync::Notify;

use super::metrics::LimitMetrics;
use super::scripts;
use crate::config::model::RedisSettings;

/// How long a heartbeat keeps a unit counted live.
pub const UNIT_TTL: Duration = Duration::from_secs(3);
/// How often a unit heartbeats.
pub const HEARTBEAT_EVERY: Duration = Duration::from_secs(1);

/// Why a Redis operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The URL could not be used.
    #[error("invalid Redis URL: {0}")]
    Url(String),
    /// No answer within the timeout.
    #[error("Redis did not answer within {0:?}")]
    Timeout(Duration),
    /// Redis or the connection reported an error.
    #[error("Redis error: {0}")]
    Redis(#[from] redis::RedisError),
    /// A script answered with something unexpected.
    #[error("unexpected Redis reply: {0}")]
    Reply(String),
}

/// The compiled scripts.
#[derive(Debug)]
pub struct Scripts {
    /// Sliding-window grants.
    pub window: Script,
    /// Token-bucket grants.
    pub bucket: Script,
    /// Quota grants.
    pub quota: Script,
    /// Plain counters.
    pub counters: Script,
    heartbeat: Script,
    leave: Script,
}

/// A gateway's Redis.
#[derive(Debug)]
pub struct Store {
    client: Result<redis::Client, String>,
    url: String,
    timeout: Duration,
    prefix: String,
    unit: String,
    conn: Mutex<Option<MultiplexedConnection>>,
    degraded: AtomicBool,
    generation: AtomicU64,
    live_units: AtomicU32,
    /// Wakes the sync task early (a key needs a grant now).
    pub wake: Notify,
    /// Metrics.
    pub metrics: LimitMetrics,
    /// Script handles.
    pub scripts: Scripts,
}

impl Store {
    /// A store for `settings`; keys are prefixed with `gatehouse:<group>:`, so
    /// units of one gateway group share counters and other groups do not.
    pub fn new(settings: &RedisSettings, group: &str, metrics: LimitMetrics) -> Self {
        let client = redis::Client::open(settings.url.as_str()).map_err(|e| e.to_string());
        if let Err(e) = &client {
            tracing::error!(url = %settings.url, error = %e, "invalid Redis URL: shared rate limits stay degraded");
        }
        Self {
            client,
            url: settings.url.clone(),
            timeout: settings.timeout,
            prefix: format!("gatehouse:{group}"),
            unit: format!("{}-{:08x}", std::process::id(), fastrand::u32(..)),
            conn: Mutex::new(None),
            degraded: AtomicBool::new(false),
            generation: AtomicU64::new(0),
            live_units: AtomicU32::new(1),
            wake: Notify::new(),
            metrics,
            scripts: Scripts {
                window: Script::new(&scripts::window()),
                bucket: Script::new(&scripts::bucket()),
                quota: Script::new(&scripts::quota()),
                counters: Script::new(scripts::COUNTERS),
                heartbeat: Script::new(scripts::HEARTBEAT),
                leave: Script::new(scripts::LEAVE),
            },
        }
    }

    /// Whether this store serves `settings` for `group`.
    pub fn serves(&self, settings: &RedisSettings, group: &str) -> bool {
        self.url == settings.url && self.timeout == settings.timeout && self.prefix == format!("gatehouse:{group}")
    }

    /// Key prefix of this gateway group.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// This unit's id in heartbeats and grant registrations.
    pub fn unit(&self) -> &str {
        &self.unit
    }

    /// Whether Redis is considered unreachable.
    pub fn degraded(&self) -> bool {
        self.degraded.load(Ordering::Acquire)
    }

    /// Bumped each time Redis comes back (grants held before are void).
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Live units as last counted (at least 1); kept while Redis is down.
    pub fn live_units(&self) -> u32 {
        self.live_units.load(Ordering::Relaxed).max(1)
    }

    async fn connection(&self) -> Result<MultiplexedConnection, StoreError> {
        if let Some(c) = self.conn.lock().unwrap_or_else(|p| p.into_inner()).clone() {
            return Ok(c);
        }
        let client = self.client.as_ref().map_err(|e| StoreError::Url(e.clone()))?;
        let cfg = AsyncConnectionConfig::new()
            .set_connection_timeout(self.timeout)
            .set_response_timeout(self.timeout);
        let conn = tokio::time::timeout(self.timeout, client.get_multiplexed_async_connection_with_config(&cfg))
            .await
            .map_err(|_| StoreError::Timeout(self.timeout))??;
        *self.conn.lock().unwrap_or_else(|p| p.into_inner()) = Some(conn.clone());
        Ok(conn)
    }

    /// Runs a script invocation with the timeout, recording success or failure.
    pub async fn run(&self, inv: &ScriptInvocation<'_>) -> Result<Value, StoreError> {
        let result = async {
            let mut conn = self.connection().await?;
            tokio::time::timeout(self.timeout, inv.invoke_async::<Value>(&mut conn))
                .await
                .map_err(|_| StoreError::Timeout(self.timeout))?
                .map_err(StoreError::from)
        }
        .await;
        match &result {
            Ok(_) => self.succeeded(),
            Err(e) => self.failed(e),
        }
        result
    }

    /// Registers this unit as live and refreshes the live-unit count.
    pub async fn heartbeat(&self, now_ms: u64) -> Result<u32, StoreError> {
        let mut inv = self.scripts.heartbeat.prepare_invoke();
        inv.key(format!("{}:units", self.prefix))
            .arg(&self.unit)
            .arg(now_ms)
            .arg(UNIT_TTL.as_millis() as u64);
        let n = match self.run(&inv).await? {
            Value::Int(n) => u32::try_from(n).unwrap_or(1).max(1),
            other => return Err(StoreError::Reply(format!("{other:?}"))),
        };
        if self.live_units.swap(n, Ordering::Relaxed) != n {
            tracing::info!(units = n, "live gateway units (Redis heartbeats)");
        }
        self.metrics.live_units.set(i64::from(n));
        Ok(n)
    }

    /// Removes this unit from the live set (clean shutdown), best effort.
    pub async fn leave(&self) {
        if self.degraded() {
            return;
        }
        let mut inv = self.scripts.leave.prepare_invoke();
        inv.key(format!("{}:units", self.prefix)).arg(&self.unit);
        let _ = self.run(&inv).await;
    }

    /// Sets the mode and live units directly (unit tests of the rules).
    #[cfg(test)]
    pub fn set_state(&self, degraded: bool, units: u32) {
        self.degraded.store(degraded, Ordering::Release);
        self.live_units.store(units, Ordering::Relaxed);
    }

    fn succeeded(&self) {
        if self.degraded.swap(false, Ordering::AcqRel) {
            self.generation.fetch_add(1, Ordering::AcqRel);
            self.metrics.degraded.set(0);
            tracing::info!(url = %self.url, "Redis is reachable again: shared rate limits resume");
        }
    }

    fn failed(&self, e: &StoreError) {
        self.metrics.sync_failures.inc();
        *self.conn.lock().unwrap_or_else(|p| p.into_inner()) = None;
        if !self.degraded.swap(true, Ordering::AcqRel) {
            self.metrics.degraded.set(1);
            tracing::warn!(
                url = %self.url,
                error = %e,
                units = self.live_units(),
                "Redis is unreachable: shared rate limits follow on_store_failure until it is back"
            );
        }
    }
}

/// A reply field as a number (integers, bulk strings and doubles).
pub fn number(v: &Value) -> Option<f64> {
    match v {
        Value::Int(i) => Some(*i as f64),
        Value::Double(d) => Some(*d),
        Value::BulkString(b) => std::str::from_utf8(b).ok()?.parse().ok(),
        Value::SimpleString(s) => s.parse().ok(),
        _ => None,
    }
}

/// A script reply that is a list of lists of numbers.
pub fn rows(v: Value, width: usize) -> Result<Vec<Vec<f64>>, StoreError> {
    let Value::Array(items) = v else {
        return Err(StoreError::Reply(format!("{v:?}")));
    };
    items
        .into_iter()
        .map(|item| match item {
            Value::Array(fields) if fields.len() == width => fields
                .iter()
                .map(|f| number(f).ok_or_else(|| StoreError::Reply(format!("{f:?}"))))
                .collect(),
            other => Err(StoreError::Reply(format!("{other:?}"))),
        })
        .collect()
}
