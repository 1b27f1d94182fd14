//! A world's nftables ruleset, sent into its namespace from outside, against
//! real traffic between two namespaces of the test's own (198.51.100.0/30).

use cloche_net::nft::{self, Allow, Proto};
use cloche_net::Netns;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream, UdpSocket};
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

const HOST: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 1);

/// A world namespace linked to a host-like namespace by a veth pair.
fn pair(tag: &str) -> (Netns, Netns) {
    let (world, host) = (Netns::create().unwrap(), Netns::create().unwrap());
    let h = host.rtnl().unwrap();
    h.add_veth(&format!("clf-h{tag}"), &format!("clf-w{tag}"), world.as_fd()).unwrap();
    let hi = h.index(&format!("clf-h{tag}")).unwrap();
    h.add_address(hi, HOST, 30).unwrap();
    h.set_up(hi).unwrap();
    let w = world.rtnl().unwrap();
    let wi = w.index(&format!("clf-w{tag}")).unwrap();
    w.add_address(wi, Ipv4Addr::new(198, 51, 100, 2), 30).unwrap();
    w.set_up(wi).unwrap();
    w.set_up(w.index("lo").unwrap()).unwrap();
    w.add_route(Ipv4Addr::UNSPECIFIED, 0, HOST).unwrap();
    (world, host)
}

fn tcp_echo(host: &Netns) -> u16 {
    let l = host.run(|| TcpListener::bind((HOST, 0))).unwrap().unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for c in l.incoming() {
            let Ok(mut c) = c else { return };
            let mut b = [0u8; 4];
            if c.read_exact(&mut b).is_ok() {
                let _ = c.write_all(&b);
            }
        }
    });
    port
}

/// Connects from the world; Ok(echo) or the error, and how long it took.
fn connect(world: &Netns, ip: Ipv4Addr, port: u16) -> (std::io::Result<Vec<u8>>, Duration) {
    world
        .run(move || {
            let t = Instant::now();
            let r = (|| {
                let mut s = TcpStream::connect_timeout(&(ip, port).into(), Duration::from_secs(3))?;
                s.write_all(b"ping")?;
                let mut b = vec![0u8; 4];
                s.read_exact(&mut b)?;
                Ok(b)
            })();
            (r, t.elapsed())
        })
        .unwrap()
}

#[test]
fn only_the_listed_destination_is_reachable_and_refusals_are_immediate() {
    let (world, host) = pair("0");
    let (open, closed) = (tcp_echo(&host), tcp_echo(&host));
    // Before any ruleset both answer.
    assert!(connect(&world, HOST, closed).0.is_ok());
    let sock = world.run(nft::socket).unwrap().unwrap();
    let log = world.run(nft::socket).unwrap().unwrap();
    cloche_net::scope::listen(&log, 7).unwrap();
    let t = Instant::now();
    nft::send(
        &sock,
        &nft::world_ruleset(
            &[Allow { net: HOST, prefix: 32, port: Some(open), proto: Proto::Tcp, set: None }],
            7,
            None,
        ),
    )
    .unwrap();
    eprintln!("ruleset over netlink: {:?}", t.elapsed());
    let (r, _) = connect(&world, HOST, open);
    assert_eq!(r.unwrap(), b"ping");
    for (ip, port) in [(HOST, closed), (Ipv4Addr::new(169, 254, 169, 254), 80), (Ipv4Addr::new(198, 51, 100, 9), open)]
    {
        let (r, took) = connect(&world, ip, port);
        assert!(r.is_err(), "{ip}:{port} reachable");
        assert!(took < Duration::from_secs(1), "{ip}:{port}: refused after {took:?}, not at once");
    }
    // The scopes: the allowed flow counted, each refused attempt logged.
    let counted = cloche_net::scope::counters(&sock).unwrap();
    let (packets, bytes) = counted[&0];
    assert!(packets >= 3 && bytes > 100, "{counted:?}");
    let denied = cloche_net::scope::drain(&log).unwrap();
    for (ip, port) in [(HOST, closed), (Ipv4Addr::new(169, 254, 169, 254), 80), (Ipv4Addr::new(198, 51, 100, 9), open)]
    {
        assert!(denied.keys().any(|d| d.ip == ip && d.port == port && d.proto == 6), "{ip}:{port} not in {denied:?}");
    }
    // UDP to the allowed address is not allowed either (TCP only was listed).
    let udp = host.run(|| UdpSocket::bind((HOST, 0))).unwrap().unwrap();
    udp.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
    let uport = udp.local_addr().unwrap().port();
    let sent = world.run(move || UdpSocket::bind("0.0.0.0:0").and_then(|s| s.send_to(b"x", (HOST, uport)))).unwrap();
    assert!(sent.is_err() || udp.recv(&mut [0u8; 8]).is_err(), "a UDP datagram got through");
    // Established flows in, nothing else: the host cannot open a connection
    // into the world.
    let wl = world.run(|| TcpListener::bind("198.51.100.2:0")).unwrap().unwrap();
    let wport = wl.local_addr().unwrap().port();
    let inbound = host
        .run(move || {
            TcpStream::connect_timeout(&(Ipv4Addr::new(198, 51, 100, 2), wport).into(), Duration::from_millis(500))
        })
        .unwrap();
    assert!(inbound.is_err(), "a connection into the world got through");
    // Removing the table opens it all again.
    nft::send(&sock, &nft::delete_ruleset()).unwrap();
    assert!(connect(&world, HOST, closed).0.is_ok());
}

#[test]
fn a_batch_with_an_error_changes_nothing() {
    let (world, host) = pair("1");
    let port = tcp_echo(&host);
    let sock = world.run(nft::socket).unwrap().unwrap();
    // The delete of a table that does not exist fails, and nothing is left.
    assert!(nft::send(&sock, &nft::delete_ruleset()).is_err());
    assert!(connect(&world, HOST, port).0.is_ok());
}
