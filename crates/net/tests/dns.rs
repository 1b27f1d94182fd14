//! cloche's resolver over UDP and TCP, in a namespace of the test's own: an
//! allowed name is asked upstream (a fake server of the test's) and pinned
//! into its set (a TCP query asked over TCP); another gets NXDOMAIN without
//! being asked.

use cloche_net::dns::{Config, Guard, Listeners, Resolver};
use cloche_net::nft::{self, Allow, Proto};
use cloche_net::Netns;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream, UdpSocket};

const AAAA: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x10);
use std::sync::{Arc, Mutex};
use std::time::Duration;

fn query(id: u16, name: &str) -> Vec<u8> {
    let mut q = id.to_be_bytes().to_vec();
    q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for l in name.split('.').filter(|l| !l.is_empty()) {
        q.push(l.len() as u8);
        q.extend_from_slice(l.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 1, 0, 1]);
    q
}

/// The fake upstream's answer to query `q`: its header and question (its
/// OPT record left out), an A record and an AAAA record.
fn answer(q: &[u8]) -> Vec<u8> {
    let mut end = 12;
    while end < q.len() && q[end] != 0 {
        end += 1 + usize::from(q[end]);
    }
    let mut r = q[..(end + 5).min(q.len())].to_vec();
    r[8..12].fill(0);
    r[2] = 0x81;
    r[3] = 0x80;
    r[7] = 2;
    r.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 198, 51, 100, 10]);
    // and an AAAA record, pinned into the name's IPv6 set
    r.extend_from_slice(&[0xc0, 12, 0, 28, 0, 1, 0, 0, 0, 60, 0, 16]);
    r.extend_from_slice(&AAAA.octets());
    r
}

#[test]
fn allowed_names_are_answered_over_udp_and_tcp_and_others_refused() {
    let ns = Netns::create().unwrap();
    let rt = ns.rtnl().unwrap();
    rt.set_up(rt.index("lo").unwrap()).unwrap();
    // The world's table with set n0 for the allowed name.
    let sock = ns.run(nft::socket).unwrap().unwrap();
    let allow =
        [Allow { net: Ipv4Addr::UNSPECIFIED.into(), prefix: 32, port: Some(80), proto: Proto::Any, set: Some(0) }];
    nft::send(&sock, &nft::world_ruleset(&allow, 7, &[])).unwrap();
    // A fake upstream, over UDP and TCP: svc.test is 198.51.100.10.
    let up = ns.run(|| UdpSocket::bind("127.0.0.1:0")).unwrap().unwrap();
    let upstream = up.local_addr().unwrap();
    let up_tcp = ns.run(move || std::net::TcpListener::bind(upstream)).unwrap().unwrap();
    let asked = Arc::new(Mutex::new(Vec::new()));
    let count = asked.clone();
    std::thread::spawn(move || {
        let mut b = [0u8; 512];
        while let Ok((n, from)) = up.recv_from(&mut b) {
            count.lock().unwrap().push("udp");
            let _ = up.send_to(&answer(&b[..n]), from);
        }
    });
    let count = asked.clone();
    std::thread::spawn(move || {
        while let Ok((mut c, _)) = up_tcp.accept() {
            count.lock().unwrap().push("tcp");
            let mut len = [0u8; 2];
            c.read_exact(&mut len).unwrap();
            let mut q = vec![0u8; usize::from(u16::from_be_bytes(len))];
            c.read_exact(&mut q).unwrap();
            let r = answer(&q);
            let mut framed = (r.len() as u16).to_be_bytes().to_vec();
            framed.extend_from_slice(&r);
            c.write_all(&framed).unwrap();
        }
    });
    let pin = ns.run(nft::socket).unwrap().unwrap();
    // On an IPv4 and an IPv6 address, like a world's gateway.
    let listen: [SocketAddr; 2] = ["127.0.0.1:53".parse().unwrap(), "[::1]:53".parse().unwrap()];
    let names = vec![("svc.test".to_string(), 0)];
    let listeners = ns.run(move || Listeners::bind(&listen)).unwrap().unwrap();
    let config = Config { upstream, names, guard: Guard::fixed(vec![], vec![], vec![]) };
    let resolver = ns.run(move || Resolver::start(listeners, config, pin)).unwrap().unwrap();
    let (udp, tcp, other, udp6) = ns
        .run(|| {
            let u = UdpSocket::bind("127.0.0.1:0").unwrap();
            u.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
            u.send_to(&query(1, "svc.test"), "127.0.0.1:53").unwrap();
            let mut b = [0u8; 512];
            let n = u.recv(&mut b).unwrap();
            let udp = b[..n].to_vec();
            u.send_to(&query(2, "other.test"), "127.0.0.1:53").unwrap();
            let n = u.recv(&mut b).unwrap();
            let other = b[..n].to_vec();
            let u6 = UdpSocket::bind("[::1]:0").unwrap();
            u6.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
            u6.send_to(&query(4, "svc.test"), "[::1]:53").unwrap();
            let n = u6.recv(&mut b).unwrap();
            let udp6 = b[..n].to_vec();
            let mut t = TcpStream::connect("127.0.0.1:53").unwrap();
            t.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
            let q = query(3, "SVC.test.");
            let mut msg = (q.len() as u16).to_be_bytes().to_vec();
            msg.extend_from_slice(&q);
            t.write_all(&msg).unwrap();
            let mut len = [0u8; 2];
            t.read_exact(&mut len).unwrap();
            let mut tcp = vec![0u8; usize::from(u16::from_be_bytes(len))];
            t.read_exact(&mut tcp).unwrap();
            (udp, tcp, other, udp6)
        })
        .unwrap();
    for (r, id) in [(&udp, 1u16), (&tcp, 3), (&udp6, 4)] {
        assert_eq!(u16::from_be_bytes([r[0], r[1]]), id);
        assert!(r.ends_with(&AAAA.octets()), "{r:?}");
    }
    assert_eq!(other[3] & 0x0f, 3, "NXDOMAIN");
    let seen = resolver.seen();
    let denied: Vec<(&str, &str)> = seen.denied.iter().map(|d| (d.name.as_str(), d.reason.as_str())).collect();
    assert_eq!(denied, [("other.test", "not allowed")]);
    assert_eq!(seen.answered[&0].len(), 2, "{seen:?}");
    assert!(seen.answered[&0].contains(&AAAA.into()), "{seen:?}");
    // The refused name was never asked upstream; the TCP query was asked over TCP.
    assert_eq!(*asked.lock().unwrap(), ["udp", "udp", "tcp"], "{seen:?}");
    drop(resolver);
}
