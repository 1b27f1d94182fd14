//! What happens to batches, as events: submitted, approved, rejected,
//! cancelled, each step of a run (world started, entry started, its
//! output, its result, world kept), the run's end, committed, discarded.
//! Published on a broadcast bus; a stream of them to clients
//! (`GET /v1/events`, Server-Sent Events) subscribes here.

use serde::Serialize;
use serde_json::Value;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tokio::sync::broadcast;

/// One event.
#[derive(Debug, Clone, Serialize)]
pub struct Event {
    /// Increasing, from 1 at the daemon's start.
    pub seq: u64,
    /// Milliseconds since the epoch.
    pub time_ms: u64,
    pub batch: Option<String>,
    /// The actor the batch belongs to (its submitter): who may see it.
    pub owner: Option<String>,
    pub kind: String,
    pub data: Value,
}

#[derive(Clone)]
pub struct Bus {
    tx: broadcast::Sender<Event>,
    seq: Arc<AtomicU64>,
}

impl Bus {
    /// A bus keeping the last `cap` events for slow subscribers.
    pub fn new(cap: usize) -> Bus {
        let (tx, _) = broadcast::channel(cap);
        Bus { tx, seq: Arc::new(AtomicU64::new(0)) }
    }

    pub fn publish(&self, batch: Option<&str>, owner: Option<&str>, kind: &str, data: Value) {
        let time_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        let e = Event {
            seq: self.seq.fetch_add(1, Ordering::Relaxed) + 1,
            time_ms,
            batch: batch.map(str::to_string),
            owner: owner.map(str::to_string),
            kind: kind.to_string(),
            data,
        };
        // Nobody listening is not an error.
        let _ = self.tx.send(e);
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.tx.subscribe()
    }
}
