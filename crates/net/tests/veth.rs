//! veth pairs, addresses and routes over rtnetlink, between two network
//! namespaces the test creates (root). Addresses are test hosts' own,
//! 198.51.100.0/24; the machine's own namespace is never touched.

use cloche_net::Netns;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::os::fd::AsFd;

#[test]
fn a_veth_peer_made_inside_a_namespace_carries_traffic() {
    let (world, host) = (Netns::create().unwrap(), Netns::create().unwrap());
    let h = host.rtnl().unwrap();
    let t = std::time::Instant::now();
    h.add_veth("clt-h0", "clt-w0", world.as_fd()).unwrap();
    eprintln!("veth pair with its peer made inside the namespace: {:?}", t.elapsed());
    // Made once: a second pair with the same name is refused.
    assert!(h.add_veth("clt-h0", "clt-w1", world.as_fd()).is_err());
    let hi = h.index("clt-h0").unwrap();
    assert!(h.index("clt-w0").is_err(), "the peer is not in the host namespace");
    h.add_address(hi, Ipv4Addr::new(198, 51, 100, 1), 30).unwrap();
    h.set_up(hi).unwrap();

    let w = world.rtnl().unwrap();
    let wi = w.index("clt-w0").unwrap();
    w.add_address(wi, Ipv4Addr::new(198, 51, 100, 2), 30).unwrap();
    w.set_up(wi).unwrap();
    w.set_up(w.index("lo").unwrap()).unwrap();
    w.add_route(Ipv4Addr::UNSPECIFIED, 0, Ipv4Addr::new(198, 51, 100, 1)).unwrap();
    assert!(w.add_address(wi, Ipv4Addr::new(198, 51, 100, 2), 33).is_err());

    // A listener in the host namespace, a client in the world's.
    let listener = host.run(|| TcpListener::bind("198.51.100.1:0")).unwrap().unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = std::thread::spawn(move || {
        let (mut conn, peer) = listener.accept().unwrap();
        let mut buf = [0u8; 4];
        conn.read_exact(&mut buf).unwrap();
        conn.write_all(b"pong").unwrap();
        (peer, buf)
    });
    let client = world
        .run(move || -> std::io::Result<String> {
            let mut s = TcpStream::connect(("198.51.100.1", port))?;
            s.write_all(b"ping")?;
            s.shutdown(std::net::Shutdown::Write)?;
            let mut got = String::new();
            s.read_to_string(&mut got)?;
            Ok(got)
        })
        .unwrap();
    let (peer, buf) = server.join().unwrap();
    assert_eq!(peer.ip(), Ipv4Addr::new(198, 51, 100, 2));
    assert_eq!(&buf, b"ping");
    assert_eq!(client.unwrap(), "pong");

    // Deleting one end deletes the pair.
    h.delete(hi).unwrap();
    assert!(w.index("clt-w0").is_err());
}
