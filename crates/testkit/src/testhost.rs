//! A test host for scoped networks: a network namespace of the test's own
//! (198.51.100.0/24 and 2001:db8::/64), linked to the machine's by a veth
//! pair and reached through the host's forwarding, with a TCP and a UDP
//! server, and a DNS server of the test's own whose answers each test
//! chooses ([`TestHost::dns_with`]).

use cloche_net::Netns;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, Ipv6Addr, TcpListener, UdpSocket};
use std::os::fd::AsFd;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The machine's end of the test link.
pub const MACHINE: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);
pub const TEST_HOST: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 10);
/// The test host over IPv6 (the documentation prefix); it also answers on
/// ::20, the address its DNS server gives `svc6.test`.
pub const TEST_HOST6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x10);
pub const MACHINE6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1);

/// A test host: its own namespace, linked to the machine's by a veth pair
/// (198.51.100.1 here, .10 there; 2001:db8::1 here, ::10 and ::20 there),
/// with a TCP server on `port` (IPv4 and IPv6) that greets and closes, and
/// a UDP server on the same port (IPv4) that answers "pong". Dropping it takes the namespace, and with it both veth ends.
pub struct TestHost {
    ns: Option<Netns>,
    tag: String,
    pub port: u16,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    /// Its servers (TCP, and DNS once asked for).
    servers: std::sync::Mutex<Vec<std::thread::JoinHandle<()>>>,
}

/// Also when a test fails: the servers stop and the namespace closes, and
/// the drop waits until its veth pair is gone, so the next test's test host
/// (same addresses) never shares the machine with a stale one.
impl Drop for TestHost {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for s in self.servers.lock().map(|mut v| std::mem::take(&mut *v)).unwrap_or_default() {
            let _ = s.join();
        }
        drop(self.ns.take());
        let gone = std::path::PathBuf::from(format!("/sys/class/net/clt-r{}", self.tag));
        let deadline = Instant::now() + Duration::from_secs(5);
        while gone.exists() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl TestHost {
    pub fn new(tag: &str) -> TestHost {
        let ns = Netns::create().unwrap();
        let root = cloche_net::Rtnl::open().unwrap();
        let here = format!("clt-r{tag}");
        root.add_veth(&here, "clt-t", ns.as_fd()).unwrap();
        let i = root.index(&here).unwrap();
        // No duplicate address detection for the machine's link-local
        // address on this link: until it is done (about a second) the
        // kernel sends no neighbour solicitation on the link, and the first
        // IPv6 packets to the test host would wait for it.
        std::fs::write(format!("/proc/sys/net/ipv6/conf/{here}/accept_dad"), "0").unwrap();
        root.add_address(i, Ipv4Addr::new(198, 51, 100, 1), 24).unwrap();
        root.set_up(i).unwrap();
        let t = ns.rtnl().unwrap();
        let ti = t.index("clt-t").unwrap();
        t.add_address(ti, TEST_HOST, 24).unwrap();
        t.set_up(ti).unwrap();
        t.set_up(t.index("lo").unwrap()).unwrap();
        t.add_route(Ipv4Addr::UNSPECIFIED, 0, Ipv4Addr::new(198, 51, 100, 1)).unwrap();
        root.add_address(i, MACHINE6, 64).unwrap();
        t.add_address(ti, TEST_HOST6, 64).unwrap();
        t.add_address(ti, Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x20), 64).unwrap();
        t.add_route(Ipv6Addr::UNSPECIFIED, 0, MACHINE6).unwrap();
        let l = ns.run(|| TcpListener::bind((TEST_HOST, 0))).unwrap().unwrap();
        let port = l.local_addr().unwrap().port();
        l.set_nonblocking(true).unwrap();
        let v6 = [TEST_HOST6, Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x20)];
        let l6: Vec<TcpListener> =
            v6.iter().map(|&a| ns.run(move || TcpListener::bind((a, port))).unwrap().unwrap()).collect();
        l6.iter().for_each(|l| l.set_nonblocking(true).unwrap());
        // UDP on the same port number: answers "pong".
        let u = ns.run(move || std::net::UdpSocket::bind((TEST_HOST, port))).unwrap().unwrap();
        u.set_nonblocking(true).unwrap();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = stop.clone();
        // The sockets hold the namespace: the server ends when asked.
        let server = std::thread::spawn(move || {
            let mut b = [0u8; 512];
            while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                let mut idle = true;
                for l in [&l, &l6[0], &l6[1]] {
                    if let Ok((c, _)) = l.accept() {
                        let _ = (&c).write_all(b"hello\n");
                        idle = false;
                    }
                }
                if let Ok((_, from)) = u.recv_from(&mut b) {
                    let _ = u.send_to(b"pong", from);
                    idle = false;
                }
                if idle {
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
        });
        TestHost { ns: Some(ns), tag: tag.to_string(), port, stop, servers: std::sync::Mutex::new(vec![server]) }
    }

    /// Drops the test host (see its `Drop`) and checks its veth pair went.
    pub fn finish(self, tag: &str) {
        drop(self);
        let gone = std::path::PathBuf::from(format!("/sys/class/net/clt-r{tag}"));
        assert!(!gone.exists(), "the test host's veth outlived its namespace");
    }

    pub fn ns(&self) -> &Netns {
        self.ns.as_ref().expect("the test host's namespace")
    }
}

/// One record of a fake answer.
#[derive(Clone)]
pub struct Rr {
    pub owner: String,
    pub kind: u16,
    pub data: Vec<u8>,
}

impl Rr {
    pub fn a(owner: &str, ip: Ipv4Addr) -> Rr {
        Rr { owner: owner.into(), kind: 1, data: ip.octets().to_vec() }
    }
    pub fn aaaa(owner: &str, ip: Ipv6Addr) -> Rr {
        Rr { owner: owner.into(), kind: 28, data: ip.octets().to_vec() }
    }
    pub fn cname(owner: &str, target: &str) -> Rr {
        Rr { owner: owner.into(), kind: 5, data: wire_name(target) }
    }
    pub fn txt(owner: &str, text: &[u8]) -> Rr {
        let mut data = Vec::new();
        for chunk in text.chunks(255) {
            data.push(chunk.len() as u8);
            data.extend_from_slice(chunk);
        }
        Rr { owner: owner.into(), kind: 16, data }
    }
}

/// How the fake DNS server answers one question.
#[derive(Clone)]
pub enum Fake {
    /// These records (those whose type is asked, and CNAMEs; any other
    /// owner's too), rcode NOERROR.
    Records(Vec<Rr>),
    NxDomain,
    /// No answer at all.
    Silent,
    /// Over UDP: the TC bit and no records (over TCP: the records).
    Truncated(Vec<Rr>),
    /// Over UDP: first a forged reply with these records, from another port
    /// of the test host, then one for another question from port 53, then
    /// the true one.
    Forged {
        forged: Vec<Rr>,
        records: Vec<Rr>,
    },
}

/// The questions the fake DNS server was asked: (name, over TCP).
pub type Asked = Arc<Mutex<Vec<(String, bool)>>>;

/// A name in wire form.
fn wire_name(n: &str) -> Vec<u8> {
    let mut b = Vec::new();
    for l in n.split('.').filter(|l| !l.is_empty()) {
        b.push(l.len() as u8);
        b.extend_from_slice(l.as_bytes());
    }
    b.push(0);
    b
}

/// The question of a query: (name, type, where the question ends).
fn question(q: &[u8]) -> Option<(String, u16, usize)> {
    let mut at = 12;
    let mut labels = Vec::new();
    while *q.get(at)? != 0 {
        let l = usize::from(q[at]);
        labels.push(String::from_utf8_lossy(q.get(at + 1..at + 1 + l)?).to_lowercase());
        at += 1 + l;
    }
    let kind = u16::from_be_bytes([*q.get(at + 1)?, *q.get(at + 2)?]);
    Some((labels.join("."), kind, at + 5))
}

/// A reply to query `q` (its ID and question): `rcode`, `tc`, and the
/// records of `rrs` of type `kind` or CNAME (question name `qname`).
fn reply(q: &[u8], end: usize, rcode: u8, tc: bool, kind: u16, rrs: &[Rr]) -> Vec<u8> {
    let rrs: Vec<&Rr> = rrs.iter().filter(|r| r.kind == kind || r.kind == 5).collect();
    let mut r = q[..end].to_vec();
    r[2] = 0x81 | if tc { 0x02 } else { 0 };
    r[3] = 0x80 | rcode;
    r[6..8].copy_from_slice(&(rrs.len() as u16).to_be_bytes());
    r[8..12].fill(0);
    for rr in rrs {
        r.extend_from_slice(&wire_name(&rr.owner));
        r.extend_from_slice(&rr.kind.to_be_bytes());
        r.extend_from_slice(&[0, 1, 0, 0, 0, 60]);
        r.extend_from_slice(&(rr.data.len() as u16).to_be_bytes());
        r.extend_from_slice(&rr.data);
    }
    r
}

/// The fake's answers to `q` over UDP (none, one, or several in turn) and
/// the port each comes from (0: port 53).
fn answers(q: &[u8], fake: &dyn Fn(&str) -> Fake, tcp: bool) -> Vec<(u16, Vec<u8>)> {
    let Some((name, kind, end)) = question(q) else { return vec![] };
    match fake(&name) {
        Fake::Records(rrs) => vec![(0, reply(q, end, 0, false, kind, &rrs))],
        Fake::NxDomain => vec![(0, reply(q, end, 3, false, kind, &[]))],
        Fake::Silent => vec![],
        Fake::Truncated(rrs) if tcp => vec![(0, reply(q, end, 0, false, kind, &rrs))],
        Fake::Truncated(_) => vec![(0, reply(q, end, 0, true, kind, &[]))],
        Fake::Forged { records, .. } if tcp => vec![(0, reply(q, end, 0, false, kind, &records))],
        Fake::Forged { forged, records } => {
            let mut other = q[..12].to_vec();
            other.extend_from_slice(&wire_name("elsewhere.test"));
            other.extend_from_slice(&q[end - 4..end]);
            let other_end = other.len();
            vec![
                (5353, reply(q, end, 0, false, kind, &forged)),
                (0, reply(&other, other_end, 0, false, kind, &forged)),
                (0, reply(q, end, 0, false, kind, &records)),
            ]
        }
    }
}

impl TestHost {
    /// A DNS server of the test's own on the test host (port 53): `svc.test`
    /// is 198.51.100.10, `svc6.test` has only an IPv6 address,
    /// 2001:db8::20; anything else NXDOMAIN. Returns the names it was asked
    /// for.
    pub fn dns(&self) -> Asked {
        self.dns_with(|name| match name {
            "svc.test" => Fake::Records(vec![Rr::a("svc.test", TEST_HOST)]),
            "svc6.test" => {
                Fake::Records(vec![Rr::aaaa("svc6.test", Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x20))])
            }
            _ => Fake::NxDomain,
        })
    }

    /// A DNS server of the test's own on the test host, port 53, over UDP
    /// and TCP, answering as `fake` says for each name (lowercase, no
    /// trailing dot). Returns what it was asked.
    pub fn dns_with(&self, fake: impl Fn(&str) -> Fake + Send + Sync + 'static) -> Asked {
        let udp = self.ns().run(|| UdpSocket::bind((TEST_HOST, 53))).unwrap().unwrap();
        let forger = self.ns().run(|| UdpSocket::bind((TEST_HOST, 5353))).unwrap().unwrap();
        let tcp = self.ns().run(|| TcpListener::bind((TEST_HOST, 53))).unwrap().unwrap();
        udp.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
        tcp.set_nonblocking(true).unwrap();
        let asked: Asked = Arc::new(Mutex::new(Vec::new()));
        let fake: Arc<dyn Fn(&str) -> Fake + Send + Sync> = Arc::new(fake);
        let (log, stop, f) = (asked.clone(), self.stop.clone(), fake.clone());
        let on_udp = std::thread::spawn(move || {
            let mut b = [0u8; 4096];
            while !stop.load(Ordering::Relaxed) {
                let Ok((n, from)) = udp.recv_from(&mut b) else { continue };
                let q = &b[..n];
                log.lock().unwrap().extend(question(q).map(|(name, _, _)| (name, false)));
                for (port, r) in answers(q, &*f, false) {
                    let _ = if port == 0 { udp.send_to(&r, from) } else { forger.send_to(&r, from) };
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
        });
        let (log, stop) = (asked.clone(), self.stop.clone());
        let on_tcp = std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let Ok((mut c, _)) = tcp.accept() else {
                    std::thread::sleep(Duration::from_millis(10));
                    continue;
                };
                let (log, f) = (log.clone(), fake.clone());
                // One thread per connection: a silent answer holds up no
                // other. It ends when the resolver closes the connection, or
                // after 2 s of silence (its socket holds the namespace).
                std::thread::spawn(move || {
                    let _ = c.set_nonblocking(false);
                    let _ = c.set_read_timeout(Some(Duration::from_secs(2)));
                    let mut len = [0u8; 2];
                    while c.read_exact(&mut len).is_ok() {
                        let mut q = vec![0u8; usize::from(u16::from_be_bytes(len))];
                        if c.read_exact(&mut q).is_err() {
                            return;
                        }
                        log.lock().unwrap().extend(question(&q).map(|(name, _, _)| (name, true)));
                        for (_, r) in answers(&q, &*f, true) {
                            let mut framed = (r.len() as u16).to_be_bytes().to_vec();
                            framed.extend_from_slice(&r);
                            let _ = c.write_all(&framed);
                        }
                    }
                });
            }
        });
        self.servers.lock().unwrap().extend([on_udp, on_tcp]);
        asked
    }
}
