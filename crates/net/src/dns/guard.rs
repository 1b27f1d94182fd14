//! Which addresses an answer may pin. An allowed name's answer is the
//! upstream's word, and the upstream (or whoever controls the name) may
//! point it anywhere: at the host itself, its loopback, a cloud metadata
//! service, another world. Such an address is refused (stripped from the
//! answer, never pinned) unless the policy lists it, or a network holding
//! it, as a destination of its own.

use crate::rtnl::{RouteKind, Rtnl};
use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Mutex;

/// Why an address was refused, as the report says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Refusal {
    pub kind: &'static str,
    /// The IPv6 form that carried an IPv4 address of `kind`, if any.
    pub via: Option<&'static str>,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.via {
            Some(via) => write!(f, "{} (IPv4 inside {via})", self.kind),
            None => f.write_str(self.kind),
        }
    }
}

const fn no(kind: &'static str) -> Option<Refusal> {
    Some(Refusal { kind, via: None })
}

/// Cloud metadata and platform services, each reachable only from inside
/// its cloud's instances: instance metadata (AWS, GCP, Azure, OpenStack,
/// Oracle, DigitalOcean, IBM and others share 169.254.169.254), AWS's DNS,
/// time and ECS/EKS credential endpoints and their IPv6 forms, GCP's IPv6
/// metadata, Alibaba's metadata, Azure's WireServer, Tencent's metadata,
/// Oracle Cloud Classic's metadata. Most are link-local and refused as
/// such anyway; they are named so that the report says what they are.
pub const METADATA: [IpAddr; 14] = [
    IpAddr::V4(Ipv4Addr::new(169, 254, 169, 254)),
    IpAddr::V4(Ipv4Addr::new(169, 254, 169, 253)),
    IpAddr::V4(Ipv4Addr::new(169, 254, 169, 123)),
    IpAddr::V4(Ipv4Addr::new(169, 254, 170, 2)),
    IpAddr::V4(Ipv4Addr::new(169, 254, 170, 23)),
    IpAddr::V4(Ipv4Addr::new(169, 254, 0, 23)),
    IpAddr::V4(Ipv4Addr::new(100, 100, 100, 200)),
    IpAddr::V4(Ipv4Addr::new(168, 63, 129, 16)),
    IpAddr::V4(Ipv4Addr::new(192, 0, 0, 192)),
    IpAddr::V6(Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254)),
    IpAddr::V6(Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x253)),
    IpAddr::V6(Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x123)),
    IpAddr::V6(Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x23)),
    IpAddr::V6(Ipv6Addr::new(0xfd20, 0xce, 0, 0, 0, 0, 0, 0x254)),
];

/// The judge of a world's answers.
pub struct Guard {
    /// The policy's own destinations (networks, not names): an address in
    /// one of them passes whatever its kind (the world may reach it anyway).
    listed: Vec<(IpAddr, u8)>,
    /// Every address on the host's interfaces (with their broadcast
    /// addresses), read when the world starts.
    host: HashSet<IpAddr>,
    /// The worlds' pools (the policy's and the defaults) and the networks
    /// the host routes to a world's veth when the world starts.
    worlds: Vec<(IpAddr, u8)>,
    /// The host's routing table, asked about each address that passed the
    /// rest: an address that became the host's, or a world's, after the
    /// start (another world under another pool) is caught here.
    routes: Option<Mutex<Rtnl>>,
}

impl Guard {
    /// A guard for the calling thread's network namespace (the host's):
    /// reads its interfaces' addresses and the routes to worlds' veths now,
    /// and keeps a netlink socket for route lookups.
    pub fn for_host(listed: Vec<(IpAddr, u8)>, pools: Vec<(IpAddr, u8)>) -> std::io::Result<Guard> {
        let rt = Rtnl::open().map_err(std::io::Error::other)?;
        let host = rt.addresses().map_err(std::io::Error::other)?.into_iter().collect();
        let mut worlds = pools;
        worlds.extend(rt.routes_to(is_world_veth).map_err(std::io::Error::other)?);
        Ok(Guard { listed, host, worlds, routes: Some(Mutex::new(rt)) })
    }

    /// A guard from given facts, without route lookups (tests).
    pub fn fixed(listed: Vec<(IpAddr, u8)>, pools: Vec<(IpAddr, u8)>, host: Vec<IpAddr>) -> Guard {
        Guard { listed, host: host.into_iter().collect(), worlds: pools, routes: None }
    }

    /// `None` if an answer may pin `ip`, else why not.
    pub fn judge(&self, ip: IpAddr) -> Option<Refusal> {
        if self.listed.iter().any(|(net, prefix)| within(ip, *net, *prefix)) {
            return None;
        }
        let r = match ip {
            IpAddr::V4(a) => kind4(a),
            IpAddr::V6(a) => self.kind6(a),
        };
        r.or_else(|| self.local(ip))
    }

    /// What this host and its worlds make of `ip`.
    fn local(&self, ip: IpAddr) -> Option<Refusal> {
        if self.host.contains(&ip) {
            return no("host address");
        }
        if self.worlds.iter().any(|(net, prefix)| within(ip, *net, *prefix)) {
            return no("world address");
        }
        let rt = self.routes.as_ref()?.lock().ok()?;
        match rt.route_get(ip) {
            Ok((RouteKind::Local, _)) => no("host address"),
            Ok((RouteKind::Broadcast, _)) => no("broadcast"),
            Ok((RouteKind::Multicast, _)) => no("multicast"),
            Ok((_, Some(dev))) if is_world_veth(&dev) => no("world address"),
            // No route (the host cannot reach it either) or an ordinary one.
            _ => None,
        }
    }

    /// IPv6 kinds, the IPv4 ones carried inside IPv6 forms included.
    fn kind6(&self, a: Ipv6Addr) -> Option<Refusal> {
        let s = a.segments();
        let v = u128::from(a);
        let embedded = |via: &'static str, inner: Ipv4Addr| {
            self.judge(inner.into()).map(|r| Refusal { kind: r.kind, via: Some(r.via.unwrap_or(via)) })
        };
        if METADATA.contains(&IpAddr::V6(a)) {
            return no("cloud metadata");
        }
        match () {
            _ if a.is_unspecified() => no("unspecified"),
            _ if a.is_loopback() => no("loopback"),
            // Forms whose traffic is IPv4 on this host: refused whatever
            // they carry (no name needs them).
            _ if v >> 32 == 0xffff => no("IPv4-mapped IPv6"),
            _ if v >> 32 == 0 => no("IPv4-compatible IPv6"),
            _ if v >> 32 == 0xffff_0000 => no("IPv4-translated IPv6"),
            _ if s[0] == 0x2001 && s[1] == 0 => no("Teredo"),
            _ if s[0] & 0xffc0 == 0xfe80 => no("link-local"),
            _ if s[0] & 0xffc0 == 0xfec0 => no("site-local"),
            _ if s[0] >> 8 == 0xff => no("multicast"),
            // NAT64's well-known prefix: the IPv4 address in the low 32 bits.
            _ if v >> 32 == 0x0064_ff9b_0000_0000_0000_0000 => embedded("NAT64", Ipv4Addr::from(v as u32)),
            // Its local-use prefix: the operator picks where the IPv4
            // address sits (RFC 6052), so it cannot be judged. A network
            // that uses it lists its prefix in the policy.
            _ if v >> 80 == 0x0064_ff9b_0001 => no("local-use NAT64"),
            _ if s[0] == 0x2002 => embedded("6to4", Ipv4Addr::from((v >> 80) as u32)),
            _ => None,
        }
    }
}

/// IPv4 kinds that no allowed name may pin.
fn kind4(a: Ipv4Addr) -> Option<Refusal> {
    let o = a.octets();
    match () {
        _ if METADATA.contains(&IpAddr::V4(a)) => no("cloud metadata"),
        _ if o[0] == 0 => no("unspecified"),
        _ if o[0] == 127 => no("loopback"),
        _ if o[0] == 169 && o[1] == 254 => no("link-local"),
        _ if o[0] & 0xf0 == 224 => no("multicast"),
        _ if a.is_broadcast() => no("broadcast"),
        _ if o[0] & 0xf0 == 240 => no("reserved"),
        _ => None,
    }
}

/// True if `ip` is inside `net/prefix` (of the same family).
pub fn within(ip: IpAddr, net: IpAddr, prefix: u8) -> bool {
    match (ip, net) {
        (IpAddr::V4(a), IpAddr::V4(n)) => {
            let m = if prefix == 0 { 0 } else { u32::MAX << (32 - u32::from(prefix.min(32))) };
            u32::from(a) & m == u32::from(n) & m
        }
        (IpAddr::V6(a), IpAddr::V6(n)) => {
            let m = if prefix == 0 { 0 } else { u128::MAX << (128 - u32::from(prefix.min(128))) };
            u128::from(a) & m == u128::from(n) & m
        }
        _ => false,
    }
}

/// A world's veth on the host: `cl` and 12 hex digits.
pub fn is_world_veth(name: &str) -> bool {
    name.len() == 14 && name.starts_with("cl") && name[2..].bytes().all(|b| b.is_ascii_hexdigit())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn guard() -> Guard {
        let pools = vec![(ip("10.203.0.0"), 16), (ip("fd63:6c6f:6368:6500::"), 64), (ip("10.77.0.0"), 24)];
        Guard::fixed(
            vec![(ip("198.51.100.77"), 32)],
            pools,
            vec![ip("192.0.2.2"), ip("192.0.2.255"), ip("2001:db8::1")],
        )
    }

    #[test]
    fn every_forbidden_kind_is_refused_with_its_reason() {
        let g = guard();
        for (addr, kind) in [
            ("127.0.0.1", "loopback"),
            ("127.255.0.9", "loopback"),
            ("0.0.0.0", "unspecified"),
            ("0.1.2.3", "unspecified"),
            ("169.254.1.1", "link-local"),
            ("169.254.169.254", "cloud metadata"),
            ("100.100.100.200", "cloud metadata"),
            ("168.63.129.16", "cloud metadata"),
            ("224.0.0.1", "multicast"),
            ("239.255.255.250", "multicast"),
            ("255.255.255.255", "broadcast"),
            ("240.0.0.1", "reserved"),
            ("192.0.2.2", "host address"),
            ("192.0.2.255", "host address"),
            ("10.203.7.2", "world address"),
            ("10.77.0.6", "world address"),
            ("::", "unspecified"),
            ("::1", "loopback"),
            ("fe80::1", "link-local"),
            ("febf::1", "link-local"),
            ("fec0::1", "site-local"),
            ("ff02::1", "multicast"),
            ("fd00:ec2::254", "cloud metadata"),
            ("fd20:ce::254", "cloud metadata"),
            ("2001:db8::1", "host address"),
            ("fd63:6c6f:6368:6500::2", "world address"),
            ("::ffff:198.51.100.10", "IPv4-mapped IPv6"),
            ("::ffff:127.0.0.1", "IPv4-mapped IPv6"),
            ("::127.0.0.1", "IPv4-compatible IPv6"),
            ("::ffff:0:7f00:1", "IPv4-translated IPv6"),
            ("2001:0:4136:e378:8000:63bf:3fff:fdd2", "Teredo"),
        ] {
            assert_eq!(g.judge(ip(addr)).map(|r| r.kind), Some(kind), "{addr}");
        }
    }

    #[test]
    fn ipv4_inside_ipv6_forms_is_judged() {
        let g = guard();
        let r = |s: &str| g.judge(ip(s)).map(|r| r.to_string());
        assert_eq!(r("64:ff9b::7f00:1").as_deref(), Some("loopback (IPv4 inside NAT64)"));
        assert_eq!(r("64:ff9b::a9fe:a9fe").as_deref(), Some("cloud metadata (IPv4 inside NAT64)"));
        assert_eq!(r("64:ff9b::c000:202").as_deref(), Some("host address (IPv4 inside NAT64)"));
        assert_eq!(r("2002:7f00:1::1").as_deref(), Some("loopback (IPv4 inside 6to4)"));
        assert_eq!(r("2002:acb:702::").as_deref(), Some("world address (IPv4 inside 6to4)"));
        // the local-use NAT64 prefix hides where its IPv4 address is: refused
        assert_eq!(r("64:ff9b:1::c633:640a").as_deref(), Some("local-use NAT64"));
        // ordinary addresses carried the same way pass
        assert_eq!(r("64:ff9b::c633:640a"), None);
        assert_eq!(r("2002:c633:640a::1"), None);
    }

    #[test]
    fn ordinary_and_listed_addresses_pass() {
        let g = guard();
        for ok in ["198.51.100.10", "10.0.0.5", "100.64.0.1", "172.16.0.1", "2001:db8::10", "fd12::1", "10.204.0.1"] {
            assert_eq!(g.judge(ip(ok)), None, "{ok}");
        }
        // listed by the policy: passes whatever its kind
        let g = Guard::fixed(vec![(ip("127.0.0.0"), 8), (ip("169.254.169.254"), 32)], vec![], vec![]);
        assert_eq!(g.judge(ip("127.0.0.53")), None);
        assert_eq!(g.judge(ip("169.254.169.254")), None);
        assert!(g.judge(ip("169.254.169.253")).is_some());
        assert!(within(ip("10.1.2.3"), ip("0.0.0.0"), 0) && !within(ip("::1"), ip("0.0.0.0"), 0));
        assert!(is_world_veth("cl0123456789ab") && !is_world_veth("clt-r0") && !is_world_veth("eth0"));
    }
}
