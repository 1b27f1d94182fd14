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

/// Sends one A query for `name` over UDP to `server` (whatever the world's
/// resolv.conf says) and reports the answer's rcode and IPv4 addresses.
pub fn dns_query(server: &str, name: &str) -> Value {
    let base = json!({"server": server, "name": name});
    let Ok(server) = server.parse::<std::net::SocketAddr>() else { return json!({"server": server, "ok": false}) };
    let mut q = vec![0x4b, 0x1d, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    for l in name.split('.').filter(|l| !l.is_empty()) {
        q.push(l.len().min(63) as u8);
        q.extend_from_slice(&l.as_bytes()[..l.len().min(63)]);
    }
    q.extend_from_slice(&[0, 0, 1, 0, 1]);
    let bind = if server.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" };
    let sent = std::net::UdpSocket::bind(bind).and_then(|s| {
        s.set_read_timeout(Some(Duration::from_secs(2)))?;
        s.send_to(&q, server)?;
        let mut b = [0u8; 1500];
        let n = s.recv(&mut b)?;
        Ok(b[..n].to_vec())
    });
    let r = match sent {
        Ok(r) if r.len() >= 12 && r[..2] == q[..2] => r,
        Ok(_) => return outcome(base, Err(std::io::Error::other("not an answer to the query"))),
        Err(e) => return outcome(base, Err(e)),
    };
    // The answer's A records, after the question (copied back first); each
    // record's name is taken to be a 2-byte pointer to the question's, as
    // in answers to one question.
    let mut addrs = Vec::new();
    let mut at = q.len();
    while at + 12 <= r.len() {
        let len = usize::from(u16::from_be_bytes([r[at + 10], r[at + 11]]));
        if r[at + 2..at + 4] == [0, 1] && len == 4 && at + 16 <= r.len() {
            addrs.push(std::net::Ipv4Addr::new(r[at + 12], r[at + 13], r[at + 14], r[at + 15]).to_string());
        }
        at += 12 + len;
    }
    let mut v = outcome(base, Ok(()));
    v["rcode"] = json!(r[3] & 0x0f);
    v["addrs"] = json!(addrs);
    v
}
