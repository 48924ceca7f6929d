//! The journal of operator-visible events: health transitions, config changes and
//! plugin reloads. A bounded ring (newest first when read) plus a broadcast channel
//! for live subscribers (the dashboard's `GET /admin/v1/events`).
//!
//! A leaf module: it imports nothing of the crate, so every module may feed it.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;
use tokio::sync::broadcast;

/// How many events the journal keeps by default.
pub const DEFAULT_CAPACITY: usize = 500;

/// One journal entry.
#[derive(Debug, Clone, Serialize)]
pub struct Event {
    /// Increasing number, unique in the process (starts at 1).
    pub seq: u64,
    /// When it happened, in milliseconds since the Unix epoch.
    pub at_ms: u64,
    /// What happened.
    #[serde(flatten)]
    pub kind: EventKind,
}

/// What happened.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum EventKind {
    /// A node's health state changed.
    Health {
        /// Service name.
        service: String,
        /// The node (`host:port`).
        node: String,
        /// Previous state.
        from: String,
        /// New state.
        to: String,
        /// Why (the transition's cause).
        reason: String,
    },
    /// A config change was applied or refused.
    Config {
        /// The generation served afterwards.
        generation: u64,
        /// Where it came from (`file`, `admin`, `signal`, ...).
        source: String,
        /// Whether it was applied.
        ok: bool,
        /// Why it was refused.
        #[serde(skip_serializing_if = "Option::is_none")]
        error: Option<String>,
    },
    /// A plugin file was loaded, rejected, removed or disabled.
    Plugin {
        /// Plugin name.
        name: String,
        /// `loaded`, `rejected`, `removed` or `disabled`.
        state: String,
        /// The error, when it failed.
        #[serde(skip_serializing_if = "Option::is_none")]
        error: Option<String>,
    },
}

/// The journal.
#[derive(Debug)]
pub struct Events {
    ring: Mutex<VecDeque<Event>>,
    capacity: usize,
    seq: AtomicU64,
    tx: broadcast::Sender<Event>,
}

impl Default for Events {
    fn default() -> Self {
        Self::new(DEFAULT_CAPACITY)
    }
}

impl Events {
    /// A journal keeping the last `capacity` events (at least one).
    pub fn new(capacity: usize) -> Self {
        let capacity = capacity.max(1);
        let (tx, _) = broadcast::channel(capacity);
        Events {
            ring: Mutex::new(VecDeque::with_capacity(capacity)),
            capacity,
            seq: AtomicU64::new(0),
            tx,
        }
    }

    /// Records one event and sends it to live subscribers.
    pub fn record(&self, kind: EventKind) -> Event {
        let at_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        let mut ring = self.ring.lock().unwrap_or_else(|p| p.into_inner());
        let event = Event {
            seq: self.seq.fetch_add(1, Ordering::Relaxed) + 1,
            at_ms,
            kind,
        };
        if ring.len() == self.capacity {
            ring.pop_front();
        }
        ring.push_back(event.clone());
        // Sent under the lock, so a subscriber sees each event once: in its history
        // or on its receiver.
        let _ = self.tx.send(event.clone());
        event
    }

    /// Records a health transition.
    pub fn health(&self, service: &str, node: &str, from: &str, to: &str, reason: &str) {
        self.record(EventKind::Health {
            service: service.to_string(),
            node: node.to_string(),
            from: from.to_string(),
            to: to.to_string(),
            reason: reason.to_string(),
        });
    }

    /// Records an applied (`error: None`) or refused config change.
    pub fn config(&self, generation: u64, source: &str, error: Option<String>) {
        self.record(EventKind::Config {
            generation,
            source: source.to_string(),
            ok: error.is_none(),
            error,
        });
    }

    /// Records a plugin load, rejection, removal or disabling.
    pub fn plugin(&self, name: &str, state: &str, error: Option<String>) {
        self.record(EventKind::Plugin {
            name: name.to_string(),
            state: state.to_string(),
            error,
        });
    }

    /// The kept events, newest first.
    pub fn history(&self) -> Vec<Event> {
        let ring = self.ring.lock().unwrap_or_else(|p| p.into_inner());
        ring.iter().rev().cloned().collect()
    }

    /// The kept events (newest first) and a receiver of every later one, with no
    /// event missed or repeated between the two.
    pub fn subscribe(&self) -> (Vec<Event>, broadcast::Receiver<Event>) {
        let ring = self.ring.lock().unwrap_or_else(|p| p.into_inner());
        let rx = self.tx.subscribe();
        (ring.iter().rev().cloned().collect(), rx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_newest_and_numbers_them() {
        let ev = Events::new(3);
        for g in 1..=5 {
            ev.config(g, "file", None);
        }
        let h = ev.history();
        assert_eq!(h.len(), 3);
        assert_eq!(h.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![5, 4, 3]);
        let json = serde_json::to_value(&h[0]).unwrap();
        assert_eq!(json["type"], "config");
        assert_eq!(json["generation"], 5);
        assert_eq!(json["ok"], true);
        assert!(json.get("error").is_none());
    }

    #[tokio::test]
    async fn subscribers_get_history_then_live_events_once() {
        let ev = Events::new(10);
        ev.health("s", "127.0.0.1:1", "healthy", "ejected", "passive_failures");
        let (history, mut rx) = ev.subscribe();
        assert_eq!(history.len(), 1);
        ev.plugin("p", "rejected", Some("bad".into()));
        let next = rx.recv().await.unwrap();
        assert_eq!(next.seq, 2);
        assert_eq!(
            next.kind,
            EventKind::Plugin {
                name: "p".into(),
                state: "rejected".into(),
                error: Some("bad".into())
            }
        );
        assert!(rx.try_recv().is_err());
    }
}
