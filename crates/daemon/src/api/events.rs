//! `GET /v1/events[?batch=ID][&since=SEQ]`: the bus ([`crate::events`]) as
//! Server-Sent Events, each frame `id: <seq>`, `event: <kind>`, `data:
//! <the event's JSON>`, a comment every 15 s to keep the stream alive.
//!
//! - Who sees what: an agent the events of its own batches (the event's
//!   owner is its actor), a reviewer or an admin all of them; a caller
//!   with no role is refused (403); a `batch` the caller may not see is
//!   answered 404 as by the other routes.
//! - The answer's head is sent once the subscription exists: a client that
//!   has read it and then starts a run misses none of the run's events.
//! - `since` (or the `Last-Event-ID` header, which wins: a browser's
//!   `EventSource` sends it when it reconnects): the events after it that
//!   the daemon still holds first, then the live ones.
//! - A subscriber that falls behind the daemon's buffer gets an `event:
//!   lagged` frame saying which events it missed, and the stream goes on
//!   from the oldest event still held.
//! - At most `max_event_streams` streams at once (503 beyond) and
//!   `max_event_streams_per_uid` per uid (429 beyond).

use super::{need_role, visible_batch, App, Query};
use crate::error::ApiError;
use crate::events::{Held, Read, Subscription};
use crate::identity::Caller;
use axum::extract::{Extension, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::sse::{Event as Frame, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How often an idle stream says it is alive (an SSE comment).
pub const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// The streams open, in all and per uid.
#[derive(Default)]
pub struct Streams {
    open: Mutex<(usize, HashMap<u32, usize>)>,
}

/// One open stream's place, given back when the stream is dropped (its
/// client gone, or the daemon stopping).
pub struct Slot {
    streams: Arc<Streams>,
    uid: u32,
}

impl Streams {
    fn take(self: &Arc<Self>, uid: u32, max: usize, per_uid: usize) -> Result<Slot, ApiError> {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let mine = open.1.get(&uid).copied().unwrap_or(0);
        if mine >= per_uid {
            return Err(ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                format!("uid {uid} has {mine} event streams open, its most (limits.max_event_streams_per_uid)"),
            ));
        }
        if open.0 >= max {
            return Err(ApiError::unavailable(format!(
                "{} event streams are open, the daemon's most (limits.max_event_streams): try again later",
                open.0
            )));
        }
        open.0 += 1;
        *open.1.entry(uid).or_insert(0) += 1;
        Ok(Slot { streams: self.clone(), uid })
    }

    /// How many are open.
    pub fn count(&self) -> usize {
        self.open.lock().unwrap_or_else(|p| p.into_inner()).0
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self.streams.open.lock().unwrap_or_else(|p| p.into_inner());
        open.0 -= 1;
        if let Some(n) = open.1.get_mut(&self.uid) {
            *n -= 1;
            if *n == 0 {
                open.1.remove(&self.uid);
            }
        }
    }
}

/// Which events a stream passes on.
struct Filter {
    /// Only the events of batches this actor owns (an agent's stream).
    owner: Option<String>,
    /// Only these batches' (none: every batch's).
    batches: Vec<String>,
}

impl Filter {
    fn admits(&self, h: &Held) -> bool {
        if let Some(o) = &self.owner {
            if h.owner.as_deref() != Some(o.as_str()) {
                return false;
            }
        }
        self.batches.is_empty() || h.batch.as_ref().is_some_and(|b| self.batches.contains(b))
    }
}

/// A position: a whole number.
fn position(what: &str, v: &str) -> Result<u64, ApiError> {
    v.trim().parse().map_err(|_| ApiError::bad_request(format!("{what}={v:?}: an event's seq (a whole number)")))
}

pub async fn events(State(app): State<App>, Extension(c): Extension<Caller>, uri: Uri, headers: HeaderMap) -> Response {
    match subscribe(app, c, uri, headers).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

async fn subscribe(app: App, c: Caller, uri: Uri, headers: HeaderMap) -> Result<Response, ApiError> {
    need_role(&c)?;
    let q = Query::parse(&uri, &["batch", "since"])?;
    // An empty Last-Event-ID is none (the format's "no id yet").
    let since = match headers.get("last-event-id").filter(|v| !v.as_bytes().trim_ascii().is_empty()) {
        Some(v) => Some(position("Last-Event-ID", v.to_str().unwrap_or("?"))?),
        None => q.get("since").map(|v| position("since", v)).transpose()?,
    };
    let mut batches: Vec<String> = Vec::new();
    for b in q.all("batch") {
        if !cloche_world::state::valid_id(b) {
            let shown: String = b.chars().take(40).collect();
            return Err(ApiError::bad_request(format!("batch={shown:?}: 16 lower-case hex digits")));
        }
        if !batches.iter().any(|x| x == b) {
            batches.push(b.to_string());
        }
    }
    if batches.len() > 64 {
        return Err(ApiError::bad_request("at most 64 batch= at once"));
    }
    if !batches.is_empty() {
        let (c, batches) = (c.clone(), batches.clone());
        app.pool.run(move |ctx| batches.iter().try_for_each(|b| visible_batch(ctx, &c, b).map(drop))).await?;
    }
    let limits = &app.cfg.limits;
    let slot = app.streams.take(c.uid, limits.max_event_streams, limits.max_event_streams_per_uid)?;
    let filter = Filter { owner: (!c.sees_all()).then(|| c.actor()), batches };
    // The subscription exists before the head is sent (when this returns).
    let sub = app.bus.subscribe(since);
    tracing::debug!(uid = c.uid, since, open = app.streams.count(), "event stream opened");
    let first = Some(Frame::default().comment("subscribed"));
    let feed = Feed { sub, filter, first, pending: VecDeque::new(), _slot: slot };
    let stream = futures_util::stream::unfold(feed, |mut f| async move {
        let frame = f.next().await?;
        Some((Ok::<_, Infallible>(frame), f))
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(KEEP_ALIVE)).into_response())
}

/// One stream's state.
struct Feed {
    sub: Subscription,
    filter: Filter,
    /// A frame of the daemon's own to send first (the first comment, a gap).
    first: Option<Frame>,
    /// Events read from the bus, not yet filtered and sent: shared with
    /// the ring (each is serialized once), made a frame when sent.
    pending: VecDeque<Arc<Held>>,
    _slot: Slot,
}

impl Feed {
    /// The next frame; `None` when the daemon stops.
    async fn next(&mut self) -> Option<Frame> {
        loop {
            if let Some(f) = self.first.take() {
                return Some(f);
            }
            while let Some(h) = self.pending.pop_front() {
                if self.filter.admits(&h) {
                    return Some(Frame::default().id(h.seq.to_string()).event(&h.kind).data(&h.json));
                }
            }
            match self.sub.next().await? {
                Read::Events(v) => self.pending.extend(v),
                Read::Lagged { first, last } => self.first = Some(lagged(first, last)),
            }
        }
    }
}

/// The frame that says which events a stream missed: shaped as an event
/// (`kind` `lagged`), its id the last one missed (a reconnect with it
/// goes on from there).
fn lagged(first: Option<u64>, last: u64) -> Frame {
    let (skipped, reason) = match first {
        Some(f) => (
            json!(last - f + 1),
            "this stream fell behind (or asked for events) past the daemon's buffer: \
             these events (of any batch, not only ones it would see) are gone",
        ),
        _ => (
            json!(null),
            "the position asked for is not one of this daemon's events (it restarted?): \
             what came after it is unknown; here is everything still held",
        ),
    };
    let time_ms =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0);
    let data = json!({"seq": last, "time_ms": time_ms, "batch": null, "owner": null, "kind": "lagged",
        "data": {"skipped": skipped, "first": first, "last": last, "reason": reason}});
    Frame::default().id(last.to_string()).event("lagged").data(data.to_string())
}
