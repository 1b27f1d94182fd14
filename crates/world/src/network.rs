//! A scoped network for a world (`--net allow=…`), set up by the parent
//! from outside the world before the world's first instruction runs:
//!
//! 1. a veth pair whose peer (`eth0`) is created directly inside the world's
//!    network namespace (a move between namespaces costs tens of ms; the
//!    peer, and with it the pair, dies with the namespace: no teardown on the
//!    critical path);
//! 2. a /30 from the pool: `.1` on the host end, `.2` on `eth0`, a default
//!    route via `.1`; the same for IPv6, a /126 from the IPv6 pool whose low
//!    32 bits are the IPv4 slot's (no duplicate address detection: nobody
//!    else is on the link);
//! 3. the world's nftables ruleset (default deny both ways, the allowed
//!    destinations, refusals rejected and logged) sent into its namespace;
//!    the world holds no CAP_NET_ADMIN and seccomp refuses netfilter netlink,
//!    so it cannot change it;
//! 4. once per host: forwarding on (IPv4 and IPv6; for IPv6 without
//!    changing which interfaces accept router advertisements), and
//!    masquerading of the pools.
//!
//! The namespace fd is kept until the world is done, so its counters and
//! its NFLOG records can still be read after its last process exits.

pub use crate::net_scope::{AllowedFlow, DeniedFlow, DeniedName, Dropped, NetScope};
use cloche_net::nft::{self, Allow};
use cloche_net::scope;
use cloche_net::Netns;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::{AsFd, OwnedFd};
use std::sync::atomic::AtomicU64;

/// The default pool of the worlds' IPv4 /30s.
pub const DEFAULT_POOL: (Ipv4Addr, u8) = (Ipv4Addr::new(10, 203, 0, 0), 16);
/// The default pool of their IPv6 /126s (a unique local prefix: "cloche" in
/// hex).
pub const DEFAULT_POOL6: (Ipv6Addr, u8) = (Ipv6Addr::new(0xfd63, 0x6c6f, 0x6368, 0x6500, 0, 0, 0, 0), 64);

/// NFLOG group of refused attempts (per namespace: no clash between worlds).
const LOG_GROUP: u16 = 7;

/// What a world may reach.
#[derive(Debug, Clone, PartialEq)]
pub struct NetSpec {
    pub allow: Vec<Allow>,
    /// Allowed names (canonical pattern, index of their set in the world's
    /// ruleset): with any, cloche's resolver serves the world.
    pub names: Vec<(String, u16)>,
    /// Where the resolver asks (default: the first nameserver of the host's
    /// /etc/resolv.conf).
    pub upstream: Option<std::net::SocketAddr>,
    /// The pool of world addresses (a /30 each), e.g. 10.203.0.0/16.
    pub pool: (Ipv4Addr, u8),
    /// The pool of IPv6 addresses (a /126 each; at most a /96).
    pub pool6: (Ipv6Addr, u8),
}

/// A world's network while it runs.
pub struct WorldNet {
    ns: Netns,
    pub(crate) nft: OwnedFd,
    pub(crate) log: OwnedFd,
    pub(crate) allow: Vec<Allow>,
    pub(crate) names: Vec<(String, u16)>,
    pub(crate) resolver: Option<cloche_net::dns::Resolver>,
    /// The refusing rules' packet count at the last reading of the scope.
    pub(crate) refused: AtomicU64,
    pub address: Ipv4Addr,
    /// Its IPv6 address (none when the host has IPv6 off).
    pub address6: Option<Ipv6Addr>,
    /// The host end of its veth pair (`None` once [`WorldNet::end`] took
    /// over what its drop does).
    host_if: Option<String>,
}

pub(crate) fn err(step: &'static str) -> impl Fn(String) -> crate::WorldError {
    move |e| crate::WorldError::Network(format!("{step}: {e}"))
}

/// The netmask of an IPv4 prefix.
fn mask4(prefix: u8) -> u32 {
    if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(prefix.min(32)))
    }
}

/// The /30 of world `id` in the pool: the host end and the world end.
fn slot(id: &str, pool: (Ipv4Addr, u8), attempt: u32) -> (Ipv4Addr, Ipv4Addr) {
    let bits = 30u32.saturating_sub(u32::from(pool.1.min(30)));
    let slots = 1u32 << bits;
    let h = u32::from_str_radix(id.get(..8).unwrap_or("0"), 16)
        .unwrap_or(0)
        .wrapping_add(attempt.wrapping_mul(2_654_435_761));
    let mask = mask4(pool.1.min(30));
    let base = u32::from(pool.0) & mask;
    let net = base | ((h % slots) << 2);
    (Ipv4Addr::from(net + 1), Ipv4Addr::from(net + 2))
}

/// The IPv6 /126 matching IPv4 slot `gw` (its offset in `pool` as the low
/// 32 bits in `pool6`): the host end and the world end.
fn slot6(gw: Ipv4Addr, pool: (Ipv4Addr, u8), pool6: (Ipv6Addr, u8)) -> (Ipv6Addr, Ipv6Addr) {
    let mask = mask4(pool.1.min(30));
    let offset = u128::from(u32::from(gw) & !mask); // the host end: slot * 4 + 1
    let bits = 128 - u32::from(pool6.1.min(96));
    let base = u128::from(pool6.0) & !((1u128 << bits) - 1);
    (Ipv6Addr::from(base | offset), Ipv6Addr::from(base | (offset + 1)))
}

/// True if the host already routes to `a` through a route of its own (not
/// the default route): read from /proc/net/ipv6_route.
fn routed6(a: Ipv6Addr) -> bool {
    let Ok(t) = std::fs::read_to_string("/proc/net/ipv6_route") else { return false };
    t.lines().any(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        let dst = f.first().and_then(|s| u128::from_str_radix(s, 16).ok());
        let len = f.get(1).and_then(|s| u32::from_str_radix(s, 16).ok());
        match (dst, len) {
            (Some(dst), Some(len)) if (1..=128).contains(&len) => {
                let mask = u128::MAX << (128 - len);
                u128::from(a) & mask == dst & mask
            }
            _ => false,
        }
    })
}

/// True when the host has IPv6 (new interfaces get it).
pub fn host_has_ipv6() -> bool {
    std::fs::read_to_string("/proc/sys/net/ipv6/conf/default/disable_ipv6").is_ok_and(|v| v.trim() == "0")
}

/// The host's IPv4 routes that overlap `pool` (but cloche's own): as
/// `NET/PREFIX dev IF`. Worlds skip the slots these cover; a route over the
/// whole pool leaves them none.
pub fn pool_conflicts(pool: (Ipv4Addr, u8)) -> Vec<String> {
    let Ok(t) = std::fs::read_to_string("/proc/net/route") else { return vec![] };
    let pmask = mask4(pool.1);
    let pnet = u32::from(pool.0) & pmask;
    t.lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let hex = |s: &str| u32::from_str_radix(s, 16).ok().map(u32::from_be);
            let (dev, dst, mask) = (*f.first()?, hex(f.get(1)?)?, hex(f.get(7)?)?);
            let overlap = mask != 0 && (dst & mask & pmask) == (pnet & mask);
            let ours = dev.len() == 14 && dev.starts_with("cl") && dev[2..].bytes().all(|b| b.is_ascii_hexdigit());
            (overlap && !ours).then(|| format!("{}/{} dev {dev}", Ipv4Addr::from(dst), mask.count_ones()))
        })
        .collect()
}

/// True if the host already routes to `a` (another world's /30, or a host
/// network overlapping the pool): read from /proc/net/route.
fn routed(a: Ipv4Addr) -> bool {
    let Ok(t) = std::fs::read_to_string("/proc/net/route") else { return true };
    t.lines().skip(1).any(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        let hex = |s: &str| u32::from_str_radix(s, 16).ok().map(u32::from_be);
        match (f.get(1).and_then(|s| hex(s)), f.get(7).and_then(|s| hex(s))) {
            (Some(dst), Some(mask)) if mask != 0 => u32::from(a) & mask == dst & mask,
            _ => false,
        }
    })
}

/// What a world's network needs opened inside its namespace.
struct Inside {
    /// rtnetlink, for its addresses and routes.
    w: cloche_net::Rtnl,
    /// nftables, for its ruleset (and counters).
    nft_sock: OwnedFd,
    /// NFLOG, for the flows it refuses.
    log: OwnedFd,
    /// With names to resolve: the resolver's nftables socket (it pins each
    /// answer's addresses in the world's sets) and its listeners, bound on
    /// the world's loopback (brought up first).
    resolver: Option<(OwnedFd, cloche_net::dns::Listeners)>,
}

/// Starts opening [`Inside`] on one thread that enters the world's
/// namespace (each `Netns::run` starts a thread: one for all, started
/// first, while this one makes the veth and the host's end).
fn open_inside(ns: &Netns, dns: &[IpAddr]) -> Result<cloche_net::Inside<InsideResult>, crate::WorldError> {
    let listen: Vec<SocketAddr> = dns.iter().map(|ip| SocketAddr::new(*ip, 53)).collect();
    let opened = ns.spawn(move || -> Result<Inside, crate::WorldError> {
        let w = cloche_net::Rtnl::open().map_err(|e| err("netlink in the world")(e.to_string()))?;
        let nft_sock = nft::socket().map_err(|e| err("nftables socket")(e.to_string()))?;
        let log = nft::socket().map_err(|e| err("nflog socket")(e.to_string()))?;
        let resolver = match listen.is_empty() {
            true => None,
            false => {
                let pin = nft::socket().map_err(|e| err("resolver socket")(e.to_string()))?;
                w.set_up(w.index("lo").map_err(|e| err("lo")(e.to_string()))?)
                    .map_err(|e| err("lo up")(e.to_string()))?;
                let listeners =
                    cloche_net::dns::Listeners::bind(&listen).map_err(|e| err("resolver sockets")(e.to_string()))?;
                Some((pin, listeners))
            }
        };
        Ok(Inside { w, nft_sock, log, resolver })
    });
    opened.map_err(|e| err("netlink in the world")(e.to_string()))
}

type InsideResult = Result<Inside, crate::WorldError>;

/// Sets up world `id`'s network: its namespace `ns` (the world's init is
/// not yet released).
pub fn setup(ns: Netns, id: &str, spec: &NetSpec) -> Result<WorldNet, crate::WorldError> {
    let host = cloche_net::Rtnl::open().map_err(|e| err("netlink")(e.to_string()))?;
    let name = format!("cl{}", id.get(..12).unwrap_or(id));
    let v6 = host_has_ipv6();
    if !v6 && spec.allow.iter().any(|a| a.net.is_ipv6() && a.set.is_none()) {
        return Err(err("IPv6")("an IPv6 destination is listed, but IPv6 is off on this host".into()));
    }
    // cloche's resolver listens on the world's own loopback (sockets opened
    // in its namespace; `lo` is up before the child's go) and every DNS
    // query is redirected there, whatever server it was sent to: a
    // resolv.conf naming a stub on 127.0.0.53 works as well as one naming
    // a server outside, and the world's files stay untouched.
    let dns: Vec<IpAddr> = match (spec.names.is_empty(), v6) {
        (true, _) => vec![],
        (false, true) => vec![Ipv4Addr::LOCALHOST.into(), Ipv6Addr::LOCALHOST.into()],
        (false, false) => vec![Ipv4Addr::LOCALHOST.into()],
    };
    // The world's side opens its sockets meanwhile.
    let inside = open_inside(&ns, &dns)?;
    // Held while this world picks its /30 and its veth and address appear
    // (so two worlds never pick the same one: the first's route is there
    // before the second looks), and while the host's set-up is checked (the
    // last world to leave removes that set-up under it).
    let _host = crate::net_host::lock()?;
    let (mut gw, mut addr) = slot(id, spec.pool, 0);
    for attempt in 1..16 {
        let taken = routed(gw) || (v6 && routed6(slot6(gw, spec.pool, spec.pool6).0));
        if !taken {
            break;
        }
        (gw, addr) = slot(id, spec.pool, attempt);
    }
    let (gw6, addr6) = slot6(gw, spec.pool, spec.pool6);
    crate::profile::mark("net: slot");
    host.add_veth(&name, "eth0", ns.as_fd()).map_err(|e| err("veth")(e.to_string()))?;
    crate::profile::mark("net: veth");
    let hi = host.index(&name).map_err(|e| err("veth")(e.to_string()))?;
    host.add_address(hi, gw, 30).map_err(|e| err("host address")(e.to_string()))?;
    if v6 {
        host.add_address(hi, gw6, 126).map_err(|e| err("host IPv6 address")(e.to_string()))?;
    }
    host.set_up(hi).map_err(|e| err("host link")(e.to_string()))?;
    crate::profile::mark("net: host end");
    let joined = inside.join().map_err(|e| err("netlink in the world")(e.to_string()))?;
    let Inside { w, nft_sock, log, resolver: inside } = joined?;
    let wi = w.index("eth0").map_err(|e| err("eth0")(e.to_string()))?;
    w.add_address(wi, addr, 30).map_err(|e| err("world address")(e.to_string()))?;
    w.set_up(wi).map_err(|e| err("eth0 up")(e.to_string()))?;
    w.add_route(Ipv4Addr::UNSPECIFIED, 0, gw).map_err(|e| err("default route")(e.to_string()))?;
    if v6 {
        w.add_address(wi, addr6, 126).map_err(|e| err("world IPv6 address")(e.to_string()))?;
        w.add_route(Ipv6Addr::UNSPECIFIED, 0, gw6).map_err(|e| err("IPv6 default route")(e.to_string()))?;
    }
    crate::profile::mark("net: world end");
    scope::listen(&log, LOG_GROUP).map_err(|e| err("nflog")(e.to_string()))?;
    crate::profile::mark("net: sockets, nflog");
    nft::send(&nft_sock, &nft::world_ruleset(&spec.allow, LOG_GROUP, &dns))
        .map_err(|e| err("world ruleset")(e.to_string()))?;
    let resolver = match inside {
        None => None,
        Some((pin, listeners)) => {
            let upstream = spec.upstream.or_else(host_nameserver).ok_or_else(|| {
                err("resolver")("no upstream nameserver (the policy's [network] upstream, CLOCHE_DNS_UPSTREAM, or the host's /etc/resolv.conf)".into())
            })?;
            let config = cloche_net::dns::Config { upstream, names: spec.names.clone(), guard: guard(spec)? };
            Some(cloche_net::dns::Resolver::start(listeners, config, pin).map_err(|e| err("resolver")(e.to_string()))?)
        }
    };
    crate::profile::mark("net: ruleset");
    crate::net_host::setup_once(spec.pool, v6.then_some(spec.pool6))?;
    crate::profile::mark("net: host once");
    Ok(WorldNet {
        ns,
        nft: nft_sock,
        log,
        allow: spec.allow.clone(),
        names: spec.names.clone(),
        resolver,
        refused: AtomicU64::new(0),
        address: addr,
        address6: v6.then_some(addr6),
        host_if: Some(name),
    })
}

/// The judge of the resolver's answers: the policy's own destinations pass
/// whatever their kind; the worlds' pools (this policy's and the defaults)
/// are refused like the host's addresses and the rest
/// ([`cloche_net::dns::Guard`]). Read in the host's namespace.
fn guard(spec: &NetSpec) -> Result<cloche_net::dns::Guard, crate::WorldError> {
    let listed = spec.allow.iter().filter(|a| a.set.is_none()).map(|a| (a.net, a.prefix)).collect();
    let mut pools: Vec<(IpAddr, u8)> = vec![
        (spec.pool.0.into(), spec.pool.1),
        (spec.pool6.0.into(), spec.pool6.1),
        (DEFAULT_POOL.0.into(), DEFAULT_POOL.1),
        (DEFAULT_POOL6.0.into(), DEFAULT_POOL6.1),
    ];
    pools.dedup();
    cloche_net::dns::Guard::for_host(listed, pools).map_err(|e| err("resolver: the host's addresses")(e.to_string()))
}

/// The first nameserver of the host's /etc/resolv.conf, port 53.
pub fn host_nameserver() -> Option<std::net::SocketAddr> {
    let text = std::fs::read_to_string("/etc/resolv.conf").ok()?;
    text.lines().find_map(|l| {
        let mut w = l.split_whitespace();
        (w.next() == Some("nameserver"))
            .then(|| w.next()?.parse::<std::net::IpAddr>().ok().map(|ip| (ip, 53).into()))?
    })
}

impl Drop for WorldNet {
    /// The host's masquerade table goes when no world with a network is
    /// left (forwarding stays on: another tool may rely on it).
    fn drop(&mut self) {
        if let Some(own) = &self.host_if {
            crate::net_host::remove_when_idle(own);
        }
    }
}

impl WorldNet {
    /// Ends the world's network (its namespace's descriptor closed), and
    /// hands back the host table's removal when idle, for a process that
    /// runs it after cloche has answered (`Teardown::in_background`)
    /// rather than forking twice now.
    pub(crate) fn end(mut self) -> Option<crate::net_host::IdleRemoval> {
        if let Some(r) = self.resolver.take() {
            r.let_go();
        }
        self.host_if.take().and_then(|own| crate::net_host::IdleRemoval::prepare(&own))
    }
}

impl WorldNet {
    /// Keeps the namespace open (its counters) until dropped.
    pub fn netns(&self) -> &Netns {
        &self.ns
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_stay_in_the_pool() {
        let pool = (Ipv4Addr::new(10, 203, 0, 0), 16);
        for id in ["0000000000000000", "ffffffffffffffff", "0123456789abcdef"] {
            for attempt in 0..4 {
                let (gw, addr) = slot(id, pool, attempt);
                assert_eq!(u32::from(gw) >> 16, u32::from(pool.0) >> 16, "{gw}");
                assert_eq!(u32::from(gw) & 3, 1);
                assert_eq!(u32::from(addr), u32::from(gw) + 1);
                let pool6 = ("fd63:6c6f:6368:6500::".parse().unwrap(), 64);
                let (gw6, addr6) = slot6(gw, pool, pool6);
                assert_eq!(u128::from(gw6) >> 64, u128::from(pool6.0) >> 64);
                assert_eq!(u128::from(gw6) as u32, u32::from(gw) & 0xffff);
                assert_eq!(u128::from(addr6), u128::from(gw6) + 1);
            }
        }
    }
}
