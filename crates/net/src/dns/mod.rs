//! cloche's resolver for a world: a DNS server (UDP and TCP) listening on
//! the world's loopback (sockets opened inside its namespace) that answers
//! **only** the allowed names. The world's ruleset redirects every DNS
//! query here, whatever server the world's resolv.conf names.
//!
//! - A name not allowed gets NXDOMAIN at once, without being asked
//!   upstream, and is listed as denied.
//! - An allowed name is asked upstream ([`upstream`]: connected UDP socket,
//!   cloche's own ID, the reply's question checked, TCP for TCP queries and
//!   truncated answers, 64 KiB messages). Its answer's addresses (A and
//!   AAAA records of the question's CNAME chain) are judged ([`guard`]): a
//!   refused one (loopback, link-local, the host's, a world's, cloud
//!   metadata, ...) is left out of the world's reply and listed as denied
//!   with its reason; the others go into the name's nft sets in the world
//!   (with the record's TTL) before the world reads the reply (DNS
//!   pinning), so a connection to them is allowed from then on.
//! - Each query asked upstream, and each TCP connection, has a thread of
//!   its own (at most [`serve::IN_FLIGHT`] at once), so a stalled upstream
//!   answer holds up nothing else. Refusals are answered on the listening
//!   thread, at constant cost, and what the resolver keeps is bounded
//!   ([`seen`]).

pub mod guard;
mod seen;
mod serve;
mod upstream;
mod wire;

pub use guard::{Guard, Refusal};
pub use seen::{DeniedName, Seen, ANSWERS_CAP, DENIED_NAMES_CAP};
pub use serve::IN_FLIGHT;

use serve::{Ctx, Step};
use std::io;
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex};

/// A name as cloche compares it: lowercase ASCII, one trailing dot
/// stripped, an internationalized name in its IDNA (`xn--`) form (UTS #46
/// mapping, so `Bücher.example` and `xn--bcher-kva.example` are one name).
/// Refused: NUL, control characters and spaces anywhere, empty names or
/// labels, labels over 63 bytes, names over 253, and what IDNA refuses.
/// `*.` may start a pattern.
pub fn canonical(name: &str) -> Result<String, String> {
    if name.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(format!("{name:?}: control characters or spaces in a name"));
    }
    let n = name.strip_suffix('.').unwrap_or(name);
    let ascii;
    let n = if n.is_ascii() {
        n
    } else {
        let (star, rest) = match n.strip_prefix("*.") {
            Some(rest) => ("*.", rest),
            None => ("", n),
        };
        let a =
            idna::domain_to_ascii_strict(rest).map_err(|_| format!("{name:?}: not a valid internationalized name"))?;
        ascii = format!("{star}{a}");
        ascii.as_str()
    };
    if n.is_empty() || n.len() > 253 {
        return Err(format!("{name:?}: not a host name"));
    }
    for (i, label) in n.split('.').enumerate() {
        let ok_chars =
            label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || (b == b'*' && i == 0));
        if label.is_empty() || label.len() > 63 || !ok_chars || (label.contains('*') && label != "*") {
            return Err(format!("{name:?}: bad label {label:?}"));
        }
    }
    Ok(n.to_ascii_lowercase())
}

/// `*.example.com` matches names below example.com, not example.com itself;
/// anything else matches exactly. Both sides canonical.
pub fn matches(pattern: &str, name: &str) -> bool {
    match pattern.strip_prefix("*.") {
        Some(base) => {
            name.len() > base.len() + 1 && name.ends_with(base) && name.as_bytes()[name.len() - base.len() - 1] == b'.'
        }
        None => pattern == name,
    }
}

/// The resolver's listening sockets, UDP and TCP (large answers, and
/// resolvers that prefer it) on each address. Bound in the namespace of
/// the calling thread: a world's, while the resolver itself asks upstream
/// from the host's.
pub struct Listeners {
    udp: Vec<UdpSocket>,
    tcp: Vec<TcpListener>,
}

impl Listeners {
    pub fn bind(addrs: &[SocketAddr]) -> io::Result<Listeners> {
        let (mut udp, mut tcp) = (Vec::new(), Vec::new());
        for at in addrs {
            let sock = UdpSocket::bind(at)?;
            sock.set_nonblocking(true)?;
            let l = TcpListener::bind(at)?;
            l.set_nonblocking(true)?;
            udp.push(sock);
            tcp.push(l);
        }
        Ok(Listeners { udp, tcp })
    }
}

/// What the resolver answers for, and how.
pub struct Config {
    /// Where it asks (from the namespace of the thread that starts it).
    pub upstream: SocketAddr,
    /// Allowed names: (canonical pattern, index of its sets).
    pub names: Vec<(String, u16)>,
    /// The judge of answers' addresses.
    pub guard: Guard,
}

/// A running resolver; stops (and joins its threads) when dropped.
pub struct Resolver {
    /// The write end of the stop pipe: closing it wakes every thread.
    stop: Option<OwnedFd>,
    seen: Arc<Mutex<Seen>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Resolver {
    /// Serves on `listen`; pins through `nft`, a netfilter socket in the
    /// world's namespace. Threads are started here: call it in cloche's
    /// parent after the world is cloned, never before.
    pub fn start(listen: Listeners, config: Config, nft: OwnedFd) -> io::Result<Resolver> {
        let (stop_r, stop_w) = pipe()?;
        let seen = Arc::new(Mutex::new(Seen::default()));
        let ctx = Arc::new(Ctx {
            upstream: config.upstream,
            names: config.names,
            guard: config.guard,
            nft: Mutex::new(nft),
            seen: seen.clone(),
            stop: stop_r,
            busy: AtomicUsize::new(0),
        });
        let thread = std::thread::Builder::new().name("cloche-dns".into()).spawn(move || serve(listen, ctx))?;
        Ok(Resolver { stop: Some(stop_w), seen, thread: Some(thread) })
    }

    /// What it saw so far (bounded: see [`Seen`]).
    pub fn seen(&self) -> Seen {
        self.seen.lock().map(|s| s.snapshot()).unwrap_or_default()
    }

    /// Stops it without waiting: its threads see the stop at once and end
    /// by themselves (for a process about to answer and exit, which a join,
    /// the wake-up of a sleeping thread, would delay by about 0.17 ms).
    pub fn let_go(mut self) {
        drop(self.stop.take());
        drop(self.thread.take()); // detached
    }
}

impl Drop for Resolver {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A pipe (read end, write end), close-on-exec.
fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0i32; 2];
    // SAFETY: pipe2 fills the two descriptors, owned at once below.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: both were just returned by pipe2 and are ours.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// The listening thread: reads every datagram and connection, answers
/// refusals itself, hands the rest to a thread each; at stop, joins them.
fn serve(listen: Listeners, ctx: Arc<Ctx>) {
    let Listeners { udp, tcp } = listen;
    let udp: Vec<Arc<UdpSocket>> = udp.into_iter().map(Arc::new).collect();
    let mut fds: Vec<i32> = udp.iter().map(|s| s.as_raw_fd()).chain(tcp.iter().map(|l| l.as_raw_fd())).collect();
    fds.push(ctx.stop.as_raw_fd());
    let mut workers: Vec<std::thread::JoinHandle<()>> = Vec::new();
    let mut buf = vec![0u8; wire::MAX_MESSAGE];
    while let Some(ready) = wait_readable(&fds) {
        // Only the sockets poll named: an accept or a read on an idle one
        // costs the kernel as much as a busy one.
        for sock in udp.iter().zip(&ready).filter(|(_, r)| **r).map(|(s, _)| s) {
            // At most a round's worth per socket: a flood on one never
            // starves the others, nor the stop.
            for _ in 0..ROUND {
                let Ok((n, from)) = sock.recv_from(&mut buf) else { break };
                let q = match ctx.triage(&buf[..n]) {
                    Step::Nothing => continue,
                    Step::Reply(r) => {
                        let _ = sock.send_to(&r, from);
                        continue;
                    }
                    Step::Ask(q) => q,
                };
                let Some(slot) = ctx.slot() else {
                    let _ = sock.send_to(&q.error(hickory_proto::op::ResponseCode::ServFail), from);
                    continue;
                };
                let (c, s) = (ctx.clone(), sock.clone());
                let spawned = spawn(move || {
                    let _slot = slot;
                    if let Some(r) = c.resolve(&q, false) {
                        let _ = s.send_to(&r, from);
                    }
                });
                workers.extend(spawned);
            }
        }
        for l in tcp.iter().zip(&ready[udp.len()..]).filter(|(_, r)| **r).map(|(l, _)| l) {
            for _ in 0..ROUND {
                let Ok((conn, _)) = l.accept() else { break };
                // Past the cap the connection is closed at once.
                if let Some(slot) = ctx.slot() {
                    let c = ctx.clone();
                    workers.extend(spawn(move || {
                        let _slot = slot;
                        c.serve_tcp(conn);
                    }));
                }
            }
        }
        workers.retain(|w| !w.is_finished());
    }
    for w in workers {
        let _ = w.join();
    }
}

/// Datagrams (or connections) taken from one socket before the others get
/// their turn.
const ROUND: usize = 256;

/// A thread for one query or connection (a small stack: buffers are on the
/// heap); none if the system has no more.
fn spawn(f: impl FnOnce() + Send + 'static) -> Option<std::thread::JoinHandle<()>> {
    std::thread::Builder::new().name("cloche-dns-q".into()).stack_size(256 << 10).spawn(f).ok()
}

/// Waits until one of `fds` is readable: which ones are, or none once the
/// last one (the stop pipe) is readable or hung up.
fn wait_readable(fds: &[i32]) -> Option<Vec<bool>> {
    let mut p: Vec<libc::pollfd> =
        fds.iter().map(|&fd| libc::pollfd { fd, events: libc::POLLIN, revents: 0 }).collect();
    loop {
        // SAFETY: poll on our own array of pollfd.
        let n = unsafe { libc::poll(p.as_mut_ptr(), p.len() as libc::nfds_t, -1) };
        if n < 0 && io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
            continue;
        }
        if n <= 0 || p.last().is_none_or(|s| s.revents != 0) {
            return None;
        }
        return Some(p.iter().map(|s| s.revents != 0).collect());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_canonical_and_wildcards_match_below_only() {
        assert_eq!(canonical("Svc.Test.").unwrap(), "svc.test");
        for bad in [
            "",
            ".",
            "a..b",
            "a b",
            "a\0b",
            "b\u{00e4}d\u{0007}.x",
            "a*.b",
            "x.*.y",
            &"a".repeat(64),
            "a..",
            "x\u{200b} y",
        ] {
            assert!(canonical(bad).is_err(), "{bad:?}");
        }
        // IDNA: mapped (fullwidth letters, case) and encoded.
        assert_eq!(canonical("Bücher.Example.").unwrap(), "xn--bcher-kva.example");
        assert_eq!(canonical("*.bücher.example").unwrap(), "*.xn--bcher-kva.example");
        assert_eq!(canonical("\u{ff52}egistry.io").unwrap(), "registry.io");
        assert_eq!(canonical("xn--bcher-kva.example").unwrap(), canonical("bücher.example").unwrap());
        assert!(matches("*.example.com", "a.example.com") && matches("*.example.com", "x.y.example.com"));
        assert!(!matches("*.example.com", "example.com") && !matches("*.example.com", "badexample.com"));
        assert!(matches("svc.test", "svc.test") && !matches("svc.test", "a.svc.test"));
    }
}
