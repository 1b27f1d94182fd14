//! cloche's resolver for a world: a DNS server (UDP and TCP) listening on
//! the world's loopback (sockets opened inside its namespace) that answers
//! **only** the allowed names. Each answer's
//! addresses (A and AAAA records) go into the name's nft sets in the world (with the record's TTL) before the
//! world sees the answer, so a connection to them is allowed from then on
//! (DNS pinning). Any other name gets NXDOMAIN and is recorded as denied.
//! The world's ruleset redirects every DNS query here, whatever server the
//! world's resolv.conf names.

use crate::nft;
use std::io;
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::AsRawFd;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

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

/// What the resolver saw: names refused (NXDOMAIN), and per allowed name
/// the addresses it answered.
#[derive(Debug, Clone, Default)]
pub struct Seen {
    pub denied: Vec<String>,
    pub answered: Vec<(String, Vec<IpAddr>)>,
}

/// A running resolver; stops (and joins its thread) when dropped.
pub struct Resolver {
    stop: Arc<AtomicBool>,
    /// Wakes the thread's poll at once when dropped (a world's end must not
    /// wait for a poll timeout).
    wake: std::os::unix::net::UnixDatagram,
    seen: Arc<Mutex<Seen>>,
    thread: Option<std::thread::JoinHandle<()>>,
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

impl Resolver {
    /// Serves on `listen`; asks `upstream` (from the namespace of the
    /// calling thread); pins into the sets of `names` (pattern, set index)
    /// through `nft`, a netfilter socket in the world's namespace.
    pub fn start(
        listen: Listeners,
        upstream: SocketAddr,
        names: Vec<(String, u16)>,
        nft: OwnedFd,
    ) -> io::Result<Resolver> {
        let Listeners { udp, tcp } = listen;
        let (wake, woken) = std::os::unix::net::UnixDatagram::pair()?;
        let mut fds: Vec<i32> = udp.iter().map(|s| s.as_raw_fd()).chain(tcp.iter().map(|l| l.as_raw_fd())).collect();
        fds.push(woken.as_raw_fd());
        let stop = Arc::new(AtomicBool::new(false));
        let seen = Arc::new(Mutex::new(Seen::default()));
        let (flag, log) = (stop.clone(), seen.clone());
        let thread = std::thread::spawn(move || {
            let _woken = woken; // open while the thread polls it
            let mut buf = [0u8; 1500];
            while !flag.load(Ordering::Relaxed) {
                wait_readable(&fds, 1000);
                for sock in &udp {
                    while let Ok((n, from)) = sock.recv_from(&mut buf) {
                        if let Some(reply) = answer(&buf[..n], upstream, &names, &nft, &log) {
                            let _ = sock.send_to(&reply, from);
                        }
                    }
                }
                for l in &tcp {
                    while let Ok((conn, _)) = l.accept() {
                        let _ = serve_tcp(conn, upstream, &names, &nft, &log);
                    }
                }
            }
        });
        Ok(Resolver { stop, wake, seen, thread: Some(thread) })
    }

    /// What it saw so far.
    pub fn seen(&self) -> Seen {
        self.seen.lock().map(|s| s.clone()).unwrap_or_default()
    }
}

impl Drop for Resolver {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.wake.send(&[1]);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Waits until one of `fds` is readable, or `ms` milliseconds.
fn wait_readable(fds: &[i32], ms: i32) {
    let mut p: Vec<libc::pollfd> =
        fds.iter().map(|&fd| libc::pollfd { fd, events: libc::POLLIN, revents: 0 }).collect();
    // SAFETY: poll on our own array of pollfd.
    unsafe { libc::poll(p.as_mut_ptr(), p.len() as libc::nfds_t, ms) };
}

/// One DNS-over-TCP connection: queries prefixed by their 2-byte length,
/// answered the same way, until the peer closes or stalls (2 s).
fn serve_tcp(
    mut conn: TcpStream,
    upstream: SocketAddr,
    names: &[(String, u16)],
    nft: &OwnedFd,
    seen: &Mutex<Seen>,
) -> io::Result<()> {
    conn.set_nonblocking(false)?;
    conn.set_read_timeout(Some(Duration::from_secs(2)))?;
    loop {
        let mut len = [0u8; 2];
        conn.read_exact(&mut len)?;
        let mut q = vec![0u8; usize::from(u16::from_be_bytes(len))];
        conn.read_exact(&mut q)?;
        let Some(reply) = answer(&q, upstream, names, nft, seen) else { return Ok(()) };
        let mut out = (reply.len() as u16).to_be_bytes().to_vec();
        out.extend_from_slice(&reply);
        conn.write_all(&out)?;
    }
}

/// The question of a query: its name (canonical) and where it ends.
fn question(q: &[u8]) -> Option<(String, usize)> {
    if q.len() < 12 || u16::from_be_bytes([q[4], q[5]]) != 1 || q[2] & 0x80 != 0 {
        return None; // one question, and a query
    }
    let mut at = 12;
    let mut labels = Vec::new();
    loop {
        let len = usize::from(*q.get(at)?);
        at += 1;
        if len == 0 {
            break;
        }
        if len > 63 {
            return None; // no compression in a question
        }
        // ASCII only on the wire: a raw UTF-8 label is not the IDNA name
        // it would map to, and must not match it.
        let label = std::str::from_utf8(q.get(at..at + len)?).ok()?;
        label.is_ascii().then_some(())?;
        labels.push(label.to_string());
        at += len;
    }
    let end = at + 4; // type, class
    (end <= q.len()).then_some(())?;
    canonical(&labels.join(".")).ok().map(|n| (n, end))
}

/// An NXDOMAIN answer to query `q` whose question ends at `end`.
fn nxdomain(q: &[u8], end: usize) -> Vec<u8> {
    let mut r = q[..end].to_vec();
    r[2] = 0x80 | (q[2] & 0x01); // QR, keep RD
    r[3] = 0x80 | 3; // RA, NXDOMAIN
    r[6..12].fill(0); // no answer, authority, additional
    r
}

/// The A and AAAA records of a response: (address, ttl seconds).
fn a_records(r: &[u8]) -> Vec<(IpAddr, u32)> {
    let mut out = Vec::new();
    if r.len() < 12 {
        return out;
    }
    let (qd, an) = (u16::from_be_bytes([r[4], r[5]]), u16::from_be_bytes([r[6], r[7]]));
    let mut at = 12;
    let skip_name = |mut at: usize| -> Option<usize> {
        loop {
            let b = *r.get(at)?;
            if b & 0xc0 == 0xc0 {
                return Some(at + 2);
            }
            if b == 0 {
                return Some(at + 1);
            }
            at += 1 + usize::from(b);
        }
    };
    for _ in 0..qd {
        let Some(a) = skip_name(at) else { return out };
        at = a + 4;
    }
    for _ in 0..an {
        let Some(a) = skip_name(at) else { return out };
        let Some(h) = r.get(a..a + 10) else { return out };
        let (kind, ttl, len) = (
            u16::from_be_bytes([h[0], h[1]]),
            u32::from_be_bytes([h[4], h[5], h[6], h[7]]),
            usize::from(u16::from_be_bytes([h[8], h[9]])),
        );
        let Some(data) = r.get(a + 10..a + 10 + len) else { return out };
        if kind == 1 && len == 4 {
            out.push((Ipv4Addr::new(data[0], data[1], data[2], data[3]).into(), ttl));
        }
        if let (28, Ok(b)) = (kind, <[u8; 16]>::try_from(data)) {
            out.push((Ipv6Addr::from(b).into(), ttl));
        }
        at = a + 10 + len;
    }
    out
}

/// The reply to one datagram from the world, if any.
fn answer(
    q: &[u8],
    upstream: SocketAddr,
    names: &[(String, u16)],
    nft_sock: &OwnedFd,
    seen: &Mutex<Seen>,
) -> Option<Vec<u8>> {
    let (name, end) = question(q)?;
    let Some(&(_, set)) = names.iter().find(|(p, _)| matches(p, &name)) else {
        if let Ok(mut s) = seen.lock() {
            if !s.denied.contains(&name) {
                s.denied.push(name);
            }
        }
        return Some(nxdomain(q, end));
    };
    let up = UdpSocket::bind(if upstream.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" }).ok()?;
    up.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    up.send_to(q, upstream).ok()?;
    let mut buf = [0u8; 4096];
    let (n, _) = up.recv_from(&mut buf).ok()?;
    let reply = buf[..n].to_vec();
    if reply.get(..2) != q.get(..2) {
        return None; // not the answer to this query
    }
    let addrs = a_records(&reply);
    if !addrs.is_empty() {
        // Pinned before the world reads the answer: its connect then passes.
        let elems: Vec<(IpAddr, u64)> = addrs.iter().map(|(ip, ttl)| (*ip, u64::from(*ttl).max(1) * 1000)).collect();
        nft::send(nft_sock, &nft::set_add(set, &elems)).ok()?;
        if let Ok(mut s) = seen.lock() {
            s.answered.push((name, addrs.iter().map(|(ip, _)| *ip).collect()));
        }
    }
    Some(reply)
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

    #[test]
    fn questions_and_answers_are_parsed() {
        // query id 0x1234, RD, one question svc.test A IN
        let mut q = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
        q.extend_from_slice(b"\x03svc\x04test\x00\x00\x01\x00\x01");
        assert_eq!(question(&q), Some(("svc.test".to_string(), q.len())));
        let nx = nxdomain(&q, q.len());
        assert_eq!((nx[2], nx[3] & 0x0f), (0x81, 3));
        // the answer: question + one A record with a pointer to the name
        let mut r = q.clone();
        r[2] = 0x81;
        r[3] = 0x80;
        r[7] = 1;
        r.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 198, 51, 100, 10]);
        assert_eq!(a_records(&r), vec![(Ipv4Addr::new(198, 51, 100, 10).into(), 60)]);
        let mut r6 = r.clone();
        r6.extend_from_slice(&[0xc0, 12, 0, 28, 0, 1, 0, 0, 0, 30, 0, 16]);
        r6.extend_from_slice(&"2001:db8::10".parse::<Ipv6Addr>().unwrap().octets());
        r6[7] = 2;
        assert_eq!(a_records(&r6)[1], ("2001:db8::10".parse().unwrap(), 30));
        let mut raw = q.clone();
        raw[13..16].copy_from_slice("sü".as_bytes());
        assert_eq!(question(&raw), None, "a raw UTF-8 label is refused");
        assert!(a_records(&r[..r.len() - 2]).is_empty());
        assert_eq!(question(&r), None, "a response is not a question");
    }
}
