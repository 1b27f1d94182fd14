//! One query from the world, from its bytes to its reply: refused at once
//! (a name not allowed, an unreadable message), or asked upstream, judged,
//! pinned and answered. Shared by the resolver's threads.

use super::guard::Guard;
use super::seen::Seen;
use super::upstream::{self, read_exact, write_all, Failure};
use super::wire::{self, Parsed, Question, MAX_MESSAGE};
use crate::nft;
use hickory_proto::op::ResponseCode;
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Queries asked upstream at once, and TCP connections served at once
/// (together): past it, a query gets SERVFAIL and a connection is closed.
pub const IN_FLIGHT: usize = 64;
/// A TCP connection from the world with nothing to say for this long is
/// closed.
const TCP_IDLE: Duration = Duration::from_secs(10);

/// What every thread of a resolver shares.
pub(super) struct Ctx {
    pub upstream: SocketAddr,
    /// Allowed names: (canonical pattern, set index).
    pub names: Vec<(String, u16)>,
    pub guard: Guard,
    /// The netfilter socket in the world's namespace that pins (one batch
    /// and its acknowledgement at a time).
    pub nft: Mutex<OwnedFd>,
    pub seen: Arc<Mutex<Seen>>,
    /// Readable (hung up) once the resolver stops.
    pub stop: OwnedFd,
    pub busy: AtomicUsize,
}

/// One of the [`IN_FLIGHT`] places, given back when dropped.
pub(super) struct Slot(Arc<Ctx>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.busy.fetch_sub(1, Ordering::AcqRel);
    }
}

/// What a message from the world needs.
pub(super) enum Step {
    /// Nothing (not a query).
    Nothing,
    /// This reply, at once.
    Reply(Vec<u8>),
    /// An answer from upstream.
    Ask(Question),
}

impl Ctx {
    /// A place for one more query or connection, if there is one.
    pub fn slot(self: &Arc<Self>) -> Option<Slot> {
        if self.busy.fetch_add(1, Ordering::AcqRel) >= IN_FLIGHT {
            self.busy.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        Some(Slot(self.clone()))
    }

    /// The sets of the allowed patterns `name` matches.
    fn sets(&self, name: &str) -> Vec<u16> {
        self.names.iter().filter(|(p, _)| super::matches(p, name)).map(|(_, s)| *s).collect()
    }

    fn deny(&self, name: &str, ip: Option<IpAddr>, reason: &str) {
        if let Ok(mut s) = self.seen.lock() {
            s.deny(name, ip, reason);
        }
    }

    /// Reads a message from the world: constant work, whatever it holds.
    pub fn triage(&self, b: &[u8]) -> Step {
        match wire::parse_query(b) {
            Parsed::Ignore => Step::Nothing,
            Parsed::Reply(r) => Step::Reply(r),
            Parsed::Invalid(name, r) => {
                self.deny(&name, None, "not a host name");
                Step::Reply(r)
            }
            Parsed::Ask(q) if self.names.iter().any(|(p, _)| super::matches(p, &q.name)) => Step::Ask(q),
            Parsed::Ask(q) => {
                self.deny(&q.name, None, "not allowed");
                Step::Reply(q.error(ResponseCode::NXDomain))
            }
        }
    }

    /// Asks upstream for `q`, judges the answer, pins what passed into the
    /// sets of every pattern the name matches, and returns the world's
    /// reply (none when the resolver is stopping). An upstream that fails,
    /// or a pin the kernel refuses, gives SERVFAIL: the world never reads
    /// an address that is not pinned.
    pub fn resolve(&self, q: &Question, tcp: bool) -> Option<Vec<u8>> {
        let up = match upstream::ask(q, self.upstream, tcp, self.stop.as_fd()) {
            Ok(m) => m,
            Err(Failure::Stopped) => return None,
            Err(Failure::Upstream) => return Some(q.error(ResponseCode::ServFail)),
        };
        let f = wire::filter(q, up, |ip| self.guard.judge(ip));
        for (ip, why) in &f.refused {
            self.deny(&q.name, Some(*ip), &why.to_string());
        }
        if !f.pins.is_empty() {
            let sets = self.sets(&q.name);
            let elems: Vec<(IpAddr, u64)> = f.pins.iter().map(|(ip, ttl)| (*ip, u64::from(*ttl) * 1000)).collect();
            let pinned = self
                .nft
                .lock()
                .ok()
                .is_some_and(|sock| sets.iter().all(|set| nft::send(&sock, &nft::set_add(*set, &elems)).is_ok()));
            if !pinned {
                return Some(q.error(ResponseCode::ServFail));
            }
            if let Ok(mut s) = self.seen.lock() {
                for set in &sets {
                    f.pins.iter().for_each(|(ip, _)| s.answer(*set, *ip));
                }
            }
        }
        Some(wire::encode(&f.reply, if tcp { MAX_MESSAGE } else { q.udp_limit() }))
    }

    /// One DNS-over-TCP connection from the world: queries prefixed by their
    /// 2-byte length, answered in turn, until the world closes it or says
    /// nothing for [`TCP_IDLE`].
    pub fn serve_tcp(&self, mut conn: TcpStream) {
        if conn.set_nonblocking(true).is_err() {
            return;
        }
        let stop = self.stop.as_fd();
        loop {
            let deadline = Instant::now() + TCP_IDLE;
            let mut len = [0u8; 2];
            if read_exact(&mut conn, &mut len, stop, deadline).is_err() {
                return;
            }
            let mut msg = vec![0u8; usize::from(u16::from_be_bytes(len))];
            if read_exact(&mut conn, &mut msg, stop, deadline).is_err() {
                return;
            }
            let reply = match self.triage(&msg) {
                Step::Nothing => continue,
                Step::Reply(r) => r,
                Step::Ask(q) => match self.resolve(&q, true) {
                    Some(r) => r,
                    None => return,
                },
            };
            let mut framed = (reply.len() as u16).to_be_bytes().to_vec();
            framed.extend_from_slice(&reply);
            if write_all(&mut conn, &framed, stop, Instant::now() + TCP_IDLE).is_err() {
                return;
            }
        }
    }
}
