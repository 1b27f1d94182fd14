//! The resolver's judge of answers against a namespace the test makes to
//! play the host: its interfaces' addresses, the routes to world veths
//! (`cl` + 12 hex digits) read at the start, and live route lookups for
//! what appears later. Addresses are test hosts' own, 198.51.100.0/24.

use cloche_net::dns::Guard;
use cloche_net::Netns;
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::AsFd;

/// A veth `name` in `host` with `.1` of `net`/30 on it, its peer in `world`.
fn world_link(host: &Netns, world: &Netns, name: &str, peer: &str, net: [u8; 4]) {
    let h = host.rtnl().unwrap();
    h.add_veth(name, peer, world.as_fd()).unwrap();
    let i = h.index(name).unwrap();
    let [a, b, c, d] = net;
    h.add_address(i, Ipv4Addr::new(a, b, c, d + 1), 30).unwrap();
    h.set_up(i).unwrap();
    let w = world.rtnl().unwrap();
    w.set_up(w.index(peer).unwrap()).unwrap();
}

#[test]
fn the_hosts_addresses_and_worlds_are_refused_also_when_they_appear_later() {
    let (host, world) = (Netns::create().unwrap(), Netns::create().unwrap());
    let h = host.rtnl().unwrap();
    h.set_up(h.index("lo").unwrap()).unwrap();
    world_link(&host, &world, "cl0123456789ab", "eth0", [198, 51, 100, 4]);
    let found = host.run(|| cloche_net::Rtnl::open().unwrap().addresses().unwrap()).unwrap();
    assert!(
        found.contains(&IpAddr::from([198, 51, 100, 5])) && found.contains(&IpAddr::from([127, 0, 0, 1])),
        "{found:?}"
    );
    let guard = host.run(|| Guard::for_host(vec![], vec![]).unwrap()).unwrap();
    let guard = std::sync::Arc::new(guard);
    let judge = |g: &std::sync::Arc<Guard>, ip: [u8; 4]| {
        let g = g.clone();
        host.run(move || g.judge(IpAddr::from(ip)).map(|r| r.kind)).unwrap()
    };
    assert_eq!(judge(&guard, [198, 51, 100, 5]), Some("host address"));
    assert_eq!(judge(&guard, [198, 51, 100, 6]), Some("world address"), "routed to a world's veth");
    assert_eq!(judge(&guard, [127, 0, 0, 1]), Some("loopback"));
    assert_eq!(judge(&guard, [198, 51, 100, 77]), None, "no route: nobody's");
    // A world that starts after the guard was made (another pool): caught
    // by the route lookup.
    let later = Netns::create().unwrap();
    world_link(&host, &later, "cl00000000beef", "eth0", [198, 51, 100, 8]);
    assert_eq!(judge(&guard, [198, 51, 100, 10]), Some("world address"));
    assert_eq!(judge(&guard, [198, 51, 100, 9]), Some("host address"));
    assert_eq!(judge(&guard, [198, 51, 100, 11]), Some("broadcast"));
}
