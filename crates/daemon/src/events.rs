//! What happens to batches, as events: submitted, approved, rejected,
//! cancelled, each step of a run (world started, entry started, its
//! output, its result, world kept...), the run's end, committed,
//! discarded.
//!
//! The bus keeps the newest events in a ring bounded in count and in
//! bytes; a [`Subscription`] reads the ring from its own position, so the
//! replay of what it missed (`since`, `Last-Event-ID`) and the live events
//! are one sequence with nothing between them lost or doubled, and a
//! subscriber that falls behind the ring is told how many events it
//! missed ([`Read::Lagged`]) instead of skipping them silently. Each event
//! is serialized once, when it is published (`GET /v1/events`, Server-Sent
//! Events, sends that text to each subscriber it is visible to).
//!
//! Sequence numbers increase by one per event. The first one of a daemon
//! is the time it started in microseconds since the epoch, so that a
//! position a client kept from an earlier daemon on this machine is below
//! anything the present one published: a reconnecting client is told its
//! events since then are unknown rather than handed a wrong replay.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use tokio::sync::watch;

/// One event, as `data:` of its SSE frame.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Increasing by one per event (see the module's documentation).
    pub seq: u64,
    /// Milliseconds since the epoch.
    pub time_ms: u64,
    pub batch: Option<String>,
    /// The actor the batch belongs to (its submitter): who may see it.
    pub owner: Option<String>,
    pub kind: String,
    pub data: Value,
}

/// The steps of a batch's run (`BatchEvent` of the service, as the job
/// process names them): each is published as its own kind.
pub const RUN_STEPS: &[&str] = &[
    "note",
    "world_started",
    "entry_started",
    "output",
    "entry_finished",
    "cancelled",
    "world_kept",
    "discarded",
    "retention_failed",
];

/// An event as the ring holds it: what a subscriber filters on, and its
/// JSON (one line).
#[derive(Debug)]
pub struct Held {
    pub seq: u64,
    pub batch: Option<String>,
    pub owner: Option<String>,
    pub kind: String,
    pub json: String,
}

struct Ring {
    events: VecDeque<Arc<Held>>,
    bytes: usize,
    /// The next event's seq.
    next: u64,
}

struct Inner {
    ring: Mutex<Ring>,
    /// The seq of this daemon's first event.
    first: u64,
    max_events: usize,
    max_bytes: usize,
    /// The last seq published: subscribers wait on it.
    tick: watch::Sender<u64>,
}

#[derive(Clone)]
pub struct Bus {
    inner: Arc<Inner>,
}

/// What a subscription reads next.
#[derive(Debug)]
pub enum Read {
    /// Events after its position, oldest first.
    Events(Vec<Arc<Held>>),
    /// Events it never saw: `first..=last` left the ring before it read
    /// them (the count is `last - first + 1`); or (`first` `None`) its
    /// starting position was not an event of this daemon, so what came
    /// after it is unknown (`last` is then the seq before this daemon's
    /// first). Reading goes on after `last`.
    Lagged { first: Option<u64>, last: u64 },
}

/// Most events handed out by one read: what a subscriber holds beyond
/// the ring (an event the ring dropped lives on until its subscribers
/// have sent it) is at most this many events.
const READ_BATCH: usize = 16;

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

impl Bus {
    /// A bus keeping the newest `max_events` events, at most `max_bytes`
    /// of them (their JSON; always at least the newest one).
    pub fn new(max_events: usize, max_bytes: usize) -> Bus {
        let micros = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_micros() as u64)
            .unwrap_or(0);
        Bus::starting_at(micros.max(1), max_events, max_bytes)
    }

    fn starting_at(first: u64, max_events: usize, max_bytes: usize) -> Bus {
        let (tick, _) = watch::channel(first - 1);
        let ring = Ring { events: VecDeque::new(), bytes: 0, next: first };
        Bus { inner: Arc::new(Inner { ring: Mutex::new(ring), first, max_events: max_events.max(1), max_bytes, tick }) }
    }

    fn ring(&self) -> std::sync::MutexGuard<'_, Ring> {
        // Nothing panics while holding it; a poisoned lock's ring is whole.
        self.inner.ring.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Publishes an event; returns its seq.
    pub fn publish(&self, batch: Option<&str>, owner: Option<&str>, kind: &str, data: Value) -> u64 {
        let time_ms = now_ms();
        // The costly part (an output chunk's base64) outside the lock.
        let text = |v: Option<&str>| serde_json::to_string(&v).unwrap_or_else(|_| "null".into());
        let tail = format!(
            r#""time_ms":{time_ms},"batch":{},"owner":{},"kind":{},"data":{}}}"#,
            text(batch),
            text(owner),
            text(Some(kind)),
            serde_json::to_string(&data).unwrap_or_else(|_| "null".into()),
        );
        let mut ring = self.ring();
        let seq = ring.next;
        ring.next += 1;
        let held = Held {
            seq,
            batch: batch.map(str::to_string),
            owner: owner.map(str::to_string),
            kind: kind.to_string(),
            json: format!(r#"{{"seq":{seq},{tail}"#),
        };
        ring.bytes += held.json.len();
        ring.events.push_back(Arc::new(held));
        while ring.events.len() > 1 && (ring.events.len() > self.inner.max_events || ring.bytes > self.inner.max_bytes)
        {
            if let Some(old) = ring.events.pop_front() {
                ring.bytes -= old.json.len();
            }
        }
        // Under the lock: subscribers see ticks in seq order.
        self.inner.tick.send_replace(seq);
        seq
    }

    /// The last seq published (the first's predecessor before any).
    pub fn latest(&self) -> u64 {
        self.ring().next - 1
    }

    /// A subscription from now on (`since` `None`), or after the event
    /// `since`: its successors still in the ring are read first. `0` means
    /// from this daemon's first event; a position that is not one of this
    /// daemon's events (a client's from an earlier daemon) reads as a
    /// [`Read::Lagged`] of unknown extent, then everything the ring holds.
    pub fn subscribe(&self, since: Option<u64>) -> Subscription {
        let mut tick = self.inner.tick.subscribe();
        tick.mark_unchanged();
        let latest = self.latest();
        let start = self.inner.first - 1;
        let (after, unknown) = match since {
            None => (latest, false),
            Some(0) => (start, false),
            Some(s) if (start..=latest).contains(&s) => (s, false),
            Some(_) => (start, true),
        };
        Subscription { bus: self.clone(), tick, after, unknown }
    }
}

/// A reader of the bus with its own position.
pub struct Subscription {
    bus: Bus,
    tick: watch::Receiver<u64>,
    /// The last seq read (or skipped).
    after: u64,
    /// Tell the reader first that its starting point is unknown.
    unknown: bool,
}

impl Subscription {
    /// What comes next, waiting for it; `None` once the bus is gone.
    pub async fn next(&mut self) -> Option<Read> {
        if std::mem::take(&mut self.unknown) {
            return Some(Read::Lagged { first: None, last: self.bus.inner.first - 1 });
        }
        loop {
            // Marked seen before the ring is read: a publish after the read
            // wakes the wait below.
            self.tick.borrow_and_update();
            if let Some(r) = self.try_next() {
                return Some(r);
            }
            if self.tick.changed().await.is_err() {
                return None;
            }
        }
    }

    /// What the ring holds after the position, without waiting.
    pub fn try_next(&mut self) -> Option<Read> {
        let ring = self.bus.ring();
        let oldest = ring.events.front().map(|e| e.seq).unwrap_or(ring.next);
        if self.after + 1 < oldest {
            let (first, last) = (self.after + 1, oldest - 1);
            self.after = last;
            return Some(Read::Lagged { first: Some(first), last });
        }
        let skip = (self.after + 1 - oldest) as usize;
        let out: Vec<Arc<Held>> = ring.events.iter().skip(skip).take(READ_BATCH).cloned().collect();
        let last = out.last()?.seq;
        self.after = last;
        Some(Read::Events(out))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn seqs(r: Option<Read>) -> Vec<u64> {
        match r {
            Some(Read::Events(v)) => v.iter().map(|h| h.seq).collect(),
            other => panic!("expected events, got {other:?}"),
        }
    }

    #[test]
    fn the_json_is_the_events_own() {
        let bus = Bus::starting_at(7, 10, 1 << 20);
        let data = json!({"entry": "e1", "stream": "stdout", "data_b64": "aGkK", "q": "a\"\n\u{1}"});
        bus.publish(Some("0123456789abcdef"), None, "output", data.clone());
        let mut s = bus.subscribe(Some(0));
        let Some(Read::Events(v)) = s.try_next() else { panic!() };
        assert!(!v[0].json.contains('\n'));
        let e: Event = serde_json::from_str(&v[0].json).unwrap();
        assert_eq!(
            (e.seq, e.batch.as_deref(), e.owner, e.kind.as_str(), e.data),
            (7, Some("0123456789abcdef"), None, "output", data)
        );
    }

    #[tokio::test]
    async fn a_subscription_reads_in_order_from_its_position() {
        let bus = Bus::starting_at(100, 10, 1 << 20);
        bus.publish(None, None, "a", json!(1));
        let mut live = bus.subscribe(None);
        let mut all = bus.subscribe(Some(0));
        let mut after = bus.subscribe(Some(100));
        assert!(live.try_next().is_none());
        for _ in 0..3 {
            bus.publish(None, None, "b", json!(2));
        }
        assert_eq!(seqs(live.next().await), [101, 102, 103]);
        assert_eq!(seqs(all.next().await), [100, 101, 102, 103]);
        assert_eq!(seqs(after.next().await), [101, 102, 103]);
        // A wait ends on the next publish.
        let b = bus.clone();
        let t = tokio::spawn(async move { seqs(live.next().await) });
        tokio::task::yield_now().await;
        b.publish(None, None, "c", json!(3));
        assert_eq!(t.await.unwrap(), [104]);
    }

    #[test]
    fn a_reader_behind_the_ring_is_told_what_it_missed() {
        let bus = Bus::starting_at(1, 3, 1 << 20);
        let mut s = bus.subscribe(None);
        for _ in 0..5 {
            bus.publish(None, None, "k", json!(null));
        }
        match s.try_next() {
            Some(Read::Lagged { first: Some(1), last: 2 }) => {}
            other => panic!("{other:?}"),
        }
        assert_eq!(seqs(s.try_next()), [3, 4, 5]);
        // Bytes bound the ring too, keeping the newest event whatever its size.
        let bus = Bus::starting_at(1, 100, 400);
        for _ in 0..4 {
            bus.publish(None, None, "k", json!("x".repeat(100)));
        }
        let mut s = bus.subscribe(Some(0));
        assert!(matches!(s.try_next(), Some(Read::Lagged { first: Some(1), last: 2 })));
        assert_eq!(seqs(s.try_next()), [3, 4]);
        bus.publish(None, None, "k", json!("x".repeat(1000)));
        assert_eq!(bus.ring().events.len(), 1);
    }

    #[test]
    fn a_position_of_another_daemon_is_unknown_ground() {
        let bus = Bus::starting_at(1000, 10, 1 << 20);
        bus.publish(None, None, "k", json!(null));
        for since in [5, 998, 1001, 999_999] {
            let mut s = bus.subscribe(Some(since));
            let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
            assert!(matches!(rt.block_on(s.next()), Some(Read::Lagged { first: None, last: 999 })));
            assert_eq!(seqs(rt.block_on(s.next())), [1000]);
        }
        // Its own first event's predecessor: the whole ring, no gap.
        assert_eq!(seqs(bus.subscribe(Some(999)).try_next()), [1000]);
    }
}
