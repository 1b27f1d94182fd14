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
            &[Allow { net: HOST.into(), prefix: 32, port: Some(open), proto: Proto::Tcp, set: None }],
            7,
            &[],
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
        assert!(
            denied.keys().any(|d| d.ip == std::net::IpAddr::from(ip) && d.port == port && d.proto == 6),
            "{ip}:{port} not in {denied:?}"
        );
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

/// IPv6 the same way: a listed v6 destination is reachable (neighbour
/// discovery passes the ruleset), anything else over v6 is refused at once
/// and logged, and the IPv4 address of the same host is not listed.
#[test]
fn ipv6_destinations_are_reachable_only_when_listed() {
    use std::net::{IpAddr, Ipv6Addr, SocketAddr};
    const HOST6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1);
    let (world, host) = pair("2");
    let h = host.rtnl().unwrap();
    h.add_address(h.index("clf-h2").unwrap(), HOST6, 126).unwrap();
    let w = world.rtnl().unwrap();
    w.add_address(w.index("clf-w2").unwrap(), Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 2), 126).unwrap();
    w.add_route(Ipv6Addr::UNSPECIFIED, 0, HOST6).unwrap();
    let listen = |at: SocketAddr| {
        let l = host.run(move || TcpListener::bind(at)).unwrap().unwrap();
        let port = l.local_addr().unwrap().port();
        std::thread::spawn(move || {
            for c in l.incoming() {
                let Ok(mut c) = c else { return };
                let _ = c.write_all(b"pong");
            }
        });
        port
    };
    let open = listen((HOST6, 0).into());
    let closed = listen((HOST6, 0).into());
    let v4 = listen((HOST, 0).into());
    let dial = |ip: IpAddr, port: u16| {
        world
            .run(move || {
                let t = Instant::now();
                let r = TcpStream::connect_timeout(&(ip, port).into(), Duration::from_secs(3)).and_then(|mut s| {
                    let mut b = [0u8; 4];
                    s.read_exact(&mut b).map(|_| b)
                });
                (r, t.elapsed())
            })
            .unwrap()
    };
    let sock = world.run(nft::socket).unwrap().unwrap();
    let log = world.run(nft::socket).unwrap().unwrap();
    cloche_net::scope::listen(&log, 7).unwrap();
    let allow = [Allow { net: HOST6.into(), prefix: 128, port: Some(open), proto: Proto::Tcp, set: None }];
    nft::send(&sock, &nft::world_ruleset(&allow, 7, &[])).unwrap();
    assert_eq!(&dial(HOST6.into(), open).0.unwrap(), b"pong");
    let refused: [(IpAddr, u16); 3] =
        [(HOST6.into(), closed), (Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 3).into(), open), (HOST.into(), v4)];
    for (ip, port) in refused {
        let (r, took) = dial(ip, port);
        assert!(r.is_err(), "[{ip}]:{port} reachable");
        assert!(took < Duration::from_secs(1), "[{ip}]:{port}: refused after {took:?}, not at once");
    }
    let (packets, _) = cloche_net::scope::counters(&sock).unwrap()[&0];
    assert!(packets >= 3, "the v6 flow was not counted");
    let denied = cloche_net::scope::drain(&log).unwrap();
    for (ip, port) in refused {
        assert!(denied.keys().any(|d| d.ip == ip && d.port == port && d.proto == 6), "[{ip}]:{port} not in {denied:?}");
    }
    // Nothing but the attempts: the link-local chatter of a fresh interface
    // (router solicitations, MLD reports) is not logged.
    assert!(denied.keys().all(|d| d.proto == 6), "{denied:?}");
}
