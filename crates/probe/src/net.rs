//! The probe's network subcommands: connect, listen, resolve, query.

use crate::{emit, outcome, parse};
use serde_json::{json, Value};
use std::time::Duration;

/// `IP:PORT`, or `gateway:PORT` for the IPv4 default route's gateway (the
/// host's end of a world's link).
fn target(addr: &str) -> std::io::Result<std::net::SocketAddr> {
    let invalid = |e: String| std::io::Error::new(std::io::ErrorKind::InvalidInput, e);
    if let Some(port) = addr.strip_prefix("gateway:") {
        let port: u16 = port.parse().map_err(|_| invalid(format!("bad port in {addr}")))?;
        let routes = std::fs::read_to_string("/proc/net/route")?;
        let gw = routes.lines().skip(1).find_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.get(1) == Some(&"00000000")).then(|| u32::from_str_radix(f.get(2)?, 16).ok())?
        });
        let gw = gw.ok_or_else(|| invalid("no default route".into()))?;
        return Ok((std::net::Ipv4Addr::from(u32::from_be(gw)), port).into());
    }
    addr.parse().map_err(|e: std::net::AddrParseError| invalid(e.to_string()))
}

/// TCP connect to `IP:PORT` or `gateway:PORT` (2 s timeout).
pub fn connect_tcp(addr: &str) -> Value {
    let r = target(addr).and_then(|a| std::net::TcpStream::connect_timeout(&a, Duration::from_secs(2))).map(|_| ());
    outcome(json!({"addr": addr}), r)
}

/// Sends a UDP datagram to `IP:PORT` (a connected socket, so a refusal
/// comes back as an error) and waits up to 1 s for one back: `reply` is
/// what came back.
pub fn udp_echo(addr: &str) -> Value {
    let r = target(addr).and_then(|a| {
        let s = std::net::UdpSocket::bind(if a.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" })?;
        s.set_read_timeout(Some(Duration::from_secs(1)))?;
        s.connect(a)?;
        s.send(b"ping")?;
        let mut b = [0u8; 64];
        let n = s.recv(&mut b)?;
        Ok(String::from_utf8_lossy(&b[..n]).into_owned())
    });
    match r {
        Ok(reply) => json!({"addr": addr, "ok": true, "reply": reply}),
        Err(e) => outcome(json!({"addr": addr}), Err(e)),
    }
}

/// Listens on `ADDR` for `SECS` seconds and counts the connections accepted.
/// Prints `{"listening": ADDR}` at once (flushed), then the count.
pub fn listen_tcp(addr: &str, secs: &str) -> Value {
    let secs: f64 = parse(secs);
    let l = match std::net::TcpListener::bind(addr) {
        Ok(l) => l,
        Err(e) => return outcome(json!({"listen": addr}), Err(e)),
    };
    emit(json!({"listening": addr}));
    let _ = l.set_nonblocking(true);
    let end = std::time::Instant::now() + Duration::from_secs_f64(secs);
    let mut accepted = 0;
    while std::time::Instant::now() < end {
        match l.accept() {
            Ok(_) => accepted += 1,
            Err(_) => std::thread::sleep(Duration::from_millis(10)),
        }
    }
    json!({"listen": addr, "accepted": accepted})
}

/// Resolves `NAME:PORT` (getaddrinfo, as programs do) and connects to the
/// first address: `resolved` says whether the name resolved at all.
pub fn connect_name(target: &str) -> Value {
    use std::net::ToSocketAddrs;
    match target.to_socket_addrs().map(|mut a| a.next()) {
        Ok(Some(a)) => {
            let r = std::net::TcpStream::connect_timeout(&a, Duration::from_secs(2)).map(|_| ());
            outcome(json!({"target": target, "resolved": true, "addr": a.to_string()}), r)
        }
        Ok(None) | Err(_) => json!({"target": target, "resolved": false, "ok": false}),
    }
}

/// An A query for `name` with ID `id` (RD set).
fn a_query(id: u16, name: &str) -> Vec<u8> {
    let mut q = id.to_be_bytes().to_vec();
    q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for l in name.split('.').filter(|l| !l.is_empty()) {
        q.push(l.len().min(63) as u8);
        q.extend_from_slice(&l.as_bytes()[..l.len().min(63)]);
    }
    q.extend_from_slice(&[0, 0, 1, 0, 1]);
    q
}

/// Where the name at `at` of message `r` ends (labels, or a pointer).
fn skip_name(r: &[u8], mut at: usize) -> Option<usize> {
    loop {
        let b = *r.get(at)?;
        match b {
            0 => return Some(at + 1),
            b if b & 0xc0 == 0xc0 => return Some(at + 2),
            b => at += 1 + usize::from(b),
        }
    }
}

/// The A and AAAA addresses of the answer section of `r` (one question).
fn answer_addrs(r: &[u8]) -> Vec<String> {
    let mut addrs = Vec::new();
    let count = u16::from_be_bytes([r[6], r[7]]);
    let Some(mut at) = skip_name(r, 12).map(|a| a + 4) else { return addrs };
    for _ in 0..count {
        let Some(a) = skip_name(r, at) else { break };
        let Some(h) = r.get(a..a + 10) else { break };
        let (kind, len) = (u16::from_be_bytes([h[0], h[1]]), usize::from(u16::from_be_bytes([h[8], h[9]])));
        let Some(d) = r.get(a + 10..a + 10 + len) else { break };
        if let (1, Ok(b)) = (kind, <[u8; 4]>::try_from(d)) {
            addrs.push(std::net::Ipv4Addr::from(b).to_string());
        }
        if let (28, Ok(b)) = (kind, <[u8; 16]>::try_from(d)) {
            addrs.push(std::net::Ipv6Addr::from(b).to_string());
        }
        at = a + 10 + len;
    }
    addrs
}

/// One exchange with a DNS server, over UDP or TCP (2 s timeout).
fn exchange(server: std::net::SocketAddr, q: &[u8], tcp: bool) -> std::io::Result<Vec<u8>> {
    use std::io::{Read, Write};
    if tcp {
        let mut c = std::net::TcpStream::connect_timeout(&server, Duration::from_secs(2))?;
        c.set_read_timeout(Some(Duration::from_secs(2)))?;
        let mut framed = (q.len() as u16).to_be_bytes().to_vec();
        framed.extend_from_slice(q);
        c.write_all(&framed)?;
        let mut len = [0u8; 2];
        c.read_exact(&mut len)?;
        let mut r = vec![0u8; usize::from(u16::from_be_bytes(len))];
        c.read_exact(&mut r)?;
        return Ok(r);
    }
    let s = std::net::UdpSocket::bind(if server.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" })?;
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    s.send_to(q, server)?;
    let mut b = vec![0u8; 65536];
    let n = s.recv(&mut b)?;
    b.truncate(n);
    Ok(b)
}

/// Sends one A query for `name` to `server` (whatever the world's
/// resolv.conf says), over UDP or TCP, and reports the answer: rcode,
/// TC, the answer section's A and AAAA addresses, its size, and how long it
/// took (ms).
pub fn dns_query(server: &str, name: &str, tcp: bool) -> Value {
    let base = json!({"server": server, "name": name});
    let Ok(server) = server.parse::<std::net::SocketAddr>() else { return json!({"server": server, "ok": false}) };
    let q = a_query(0x4b1d, name);
    let t = std::time::Instant::now();
    let r = match exchange(server, &q, tcp) {
        Ok(r) if r.len() >= 12 && r[..2] == q[..2] => r,
        Ok(_) => return outcome(base, Err(std::io::Error::other("not an answer to the query"))),
        Err(e) => return outcome(base, Err(e)),
    };
    let mut v = outcome(base, Ok(()));
    v["ms"] = json!(t.elapsed().as_millis() as u64);
    v["rcode"] = json!(r[3] & 0x0f);
    v["tc"] = json!(r[2] & 0x02 != 0);
    v["size"] = json!(r.len());
    v["addrs"] = json!(answer_addrs(&r));
    v
}

/// Sends `n` A queries over UDP to `server`, each for a name of its own
/// (`f<i>.flood.test`), one after the other (1 s for each answer), and
/// counts the answers and the NXDOMAINs.
pub fn dns_flood(server: &str, n: &str) -> Value {
    let n: u32 = parse(n);
    let base = json!({"server": server, "sent": n});
    let Ok(server) = server.parse::<std::net::SocketAddr>() else { return json!({"server": server, "ok": false}) };
    let r = std::net::UdpSocket::bind(if server.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" }).and_then(|s| {
        s.set_read_timeout(Some(Duration::from_secs(1)))?;
        s.connect(server)?;
        let (mut answered, mut nx) = (0u32, 0u32);
        let mut b = [0u8; 1500];
        for i in 0..n {
            let q = a_query(i as u16, &format!("f{i}.flood.test"));
            s.send(&q)?;
            if let Ok(len) = s.recv(&mut b) {
                answered += 1;
                nx += u32::from(len >= 4 && b[3] & 0x0f == 3);
            }
        }
        Ok((answered, nx))
    });
    match r {
        Ok((answered, nx)) => {
            let mut v = outcome(base, Ok(()));
            v["answered"] = json!(answered);
            v["nxdomain"] = json!(nx);
            v
        }
        Err(e) => outcome(base, Err(e)),
    }
}

/// Sends one datagram to each port of `ip` from `from` to `to` (one
/// socket, not connected) and counts the sends tried and refused (a send
/// a firewall refuses fails with EPERM; the next one is tried all the same).
pub fn udp_spray(ip: &str, from: &str, to: &str) -> Value {
    let (from, to): (u16, u16) = (parse(from), parse(to));
    let Ok(ip) = ip.parse::<std::net::IpAddr>() else { return json!({"ip": ip, "ok": false}) };
    let r = std::net::UdpSocket::bind(if ip.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" }).map(|s| {
        let refused = (from..=to).filter(|p| s.send_to(b"x", (ip, *p)).is_err()).count();
        (usize::from(to - from) + 1, refused)
    });
    match r {
        Ok((tried, refused)) => json!({"ip": ip, "ok": true, "tried": tried, "refused": refused}),
        Err(e) => outcome(json!({"ip": ip}), Err(e)),
    }
}
