//! `--net none | allow=DEST[,DEST...]`: what a world may reach, parsed
//! into typed values ([`NetArg`]) and turned into the world's
//! [`NetSpec`] with the policy's pools and upstream.
//!
//! DEST is `IP[:PORT]`, `CIDR[:PORT]` or `NAME[:PORT]` (a missing port means
//! every port; TCP and UDP). An IPv6 address or network takes brackets
//! before a port: `[2001:db8::1]:443`, `[2001:db8::/64]:443`, `2001:db8::1`.
//! A NAME (`*.example.com`: the names below) is resolved by cloche's
//! resolver for the world, which pins the answers (A and AAAA).

use crate::error::{Error, Result};
pub use cloche_net::nft::{Allow, Proto};
use cloche_policy::NetworkSection;
use cloche_world::network::NetSpec;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The pool the worlds' IPv4 /30s come from.
pub const POOL: (Ipv4Addr, u8) = cloche_world::network::DEFAULT_POOL;
/// The pool of their IPv6 /126s.
pub const POOL6: (Ipv6Addr, u8) = cloche_world::network::DEFAULT_POOL6;

/// `--net`, parsed.
#[derive(Debug, Clone, PartialEq)]
pub enum NetArg {
    /// Loopback only.
    None,
    /// These destinations; `text` is the argument as given (for messages).
    Allow { dests: Vec<Dest>, text: String },
}

/// One allowed destination: an address or network (with an optional
/// port), or a name (canonical) whose answers the world's resolver pins.
#[derive(Debug, Clone, PartialEq)]
pub struct Dest {
    pub allow: Allow,
    pub name: Option<String>,
}

impl std::str::FromStr for NetArg {
    type Err = Error;

    /// `none` or `allow=DEST[,DEST...]`.
    fn from_str(arg: &str) -> Result<NetArg> {
        if arg == "none" {
            return Ok(NetArg::None);
        }
        let list = arg
            .strip_prefix("allow=")
            .ok_or_else(|| Error::Invalid(format!("--net {arg}: expected none or allow=DEST[,DEST...]")))?;
        let dests: Vec<&str> = list.split(',').collect();
        let dests = parse_dests(&dests).map_err(|e| Error::Invalid(format!("--net {arg}: {e}")))?;
        Ok(NetArg::Allow { dests, text: arg.to_string() })
    }
}

/// Parses `--net` and gives its spec: `None` for `none` (loopback only).
/// The pools and the upstream come from the policy's `[network]`.
pub fn parse(arg: &str, policy: &NetworkSection) -> Result<Option<NetSpec>> {
    spec(&arg.parse()?, policy)
}

/// The world's network for `--net` (`None`: loopback only).
pub fn spec(net: &NetArg, policy: &NetworkSection) -> Result<Option<NetSpec>> {
    match net {
        NetArg::None => Ok(None),
        NetArg::Allow { dests, text } => {
            net_spec(dests, policy).map(Some).map_err(|e| Error::Network(format!("--net {text}: {e}")))
        }
    }
}

/// The policy's `[network]` (None when `allow` is empty: loopback only).
pub fn from_policy(policy: &NetworkSection) -> Result<Option<NetSpec>> {
    if policy.allow.is_empty() {
        return Ok(None);
    }
    let dests: Vec<&str> = policy.allow.iter().map(String::as_str).collect();
    parse_dests(&dests)
        .and_then(|d| net_spec(&d, policy))
        .map(Some)
        .map_err(|e| Error::Network(format!("policy network.allow: {e}")))
}

/// Each destination of a list, typed.
fn parse_dests(dests: &[&str]) -> Result<Vec<Dest>, String> {
    if dests.is_empty() || dests.iter().any(|d| d.is_empty()) {
        return Err("no destination".into());
    }
    dests.iter().map(|d| dest(d).map(|(allow, name)| Dest { allow, name })).collect()
}

/// The spec of a list of destinations: each name gets a set and cloche's
/// resolver (upstream: `CLOCHE_DNS_UPSTREAM`, else the policy's
/// `upstream`, else the host's resolv.conf).
fn net_spec(dests: &[Dest], policy: &NetworkSection) -> Result<NetSpec, String> {
    let mut allow = Vec::new();
    let mut names = Vec::new();
    for d in dests {
        if let Some(n) = &d.name {
            let k = names.len() as u16;
            names.push((n.clone(), k));
            allow.push(Allow { set: Some(k), ..d.allow });
        } else {
            allow.push(d.allow);
        }
    }
    let upstream = match std::env::var("CLOCHE_DNS_UPSTREAM") {
        Ok(u) if !u.is_empty() => Some(u.parse().map_err(|_| format!("CLOCHE_DNS_UPSTREAM {u:?}: expected IP:PORT"))?),
        _ => policy.upstream,
    };
    Ok(NetSpec { allow, names, upstream, pool: policy.pool.unwrap_or(POOL), pool6: policy.pool6.unwrap_or(POOL6) })
}

/// One destination, and its canonical name when it is a name.
fn dest(d: &str) -> Result<(Allow, Option<String>), String> {
    // `[v6]:port`, `[v6/prefix]:port`; more than one colon without
    // brackets is an IPv6 address or network without a port.
    let (host, port) = if let Some(rest) = d.strip_prefix('[') {
        let (h, tail) = rest.split_once(']').ok_or_else(|| format!("{d}: missing ]"))?;
        let p = tail.strip_prefix(':').ok_or_else(|| format!("{d}: expected [IPv6]:PORT"))?;
        if h.parse::<Ipv6Addr>().is_err() && h.split_once('/').is_none_or(|(a, _)| a.parse::<Ipv6Addr>().is_err()) {
            return Err(format!("{d}: not an IPv6 address or network in brackets"));
        }
        (h, Some(p))
    } else if d.matches(':').count() > 1 {
        (d, None)
    } else {
        match d.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (d, None),
        }
    };
    let port = match port {
        None => None,
        Some(p) => match p.parse::<u16>() {
            Ok(0) => return Err(format!("{d}: port 0")),
            Ok(n) => Some(n),
            Err(_) => return Err(format!("{d}: bad port {p:?}")),
        },
    };
    let any = Allow { net: Ipv4Addr::UNSPECIFIED.into(), prefix: 32, port, proto: Proto::Any, set: None };
    if let Some((ip, p)) = host.split_once('/') {
        let net: IpAddr = ip.parse().map_err(|_| format!("{d}: not an IP network"))?;
        let max = if net.is_ipv4() { 32 } else { 128 };
        let prefix = p.parse::<u8>().ok().filter(|p| *p <= max).ok_or_else(|| format!("{d}: bad prefix"))?;
        return Ok((Allow { net, prefix, ..any }, None));
    }
    if let Ok(net) = host.parse::<IpAddr>() {
        return Ok((Allow { net, prefix: if net.is_ipv4() { 32 } else { 128 }, ..any }, None));
    }
    // All digits and dots is a mistyped address, not a name; so is a colon.
    if host.bytes().all(|b| b.is_ascii_digit() || b == b'.') || host.contains(':') {
        return Err(format!("{d}: not an IP address"));
    }
    let name = cloche_net::dns::canonical(host).map_err(|e| format!("{d}: {e}"))?;
    Ok((any, Some(name)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_default(arg: &str) -> Result<Option<NetSpec>> {
        parse(arg, &NetworkSection::default())
    }

    #[test]
    fn the_policy_gives_pools_and_upstream() {
        let p = NetworkSection {
            allow: vec!["svc.test:80".into()],
            pool: Some(("10.77.0.0".parse().unwrap(), 20)),
            pool6: None,
            upstream: Some("198.51.100.53:53".parse().unwrap()),
        };
        let s = from_policy(&p).unwrap().unwrap();
        assert_eq!((s.pool, s.pool6, s.names.len()), (p.pool.unwrap(), POOL6, 1));
        assert_eq!(parse("allow=198.51.100.1", &p).unwrap().unwrap().pool, p.pool.unwrap());
        assert!(from_policy(&NetworkSection { allow: vec!["1.2.3".into()], ..p }).is_err());
    }

    #[test]
    fn destinations() {
        assert!(parse_default("none").unwrap().is_none());
        let s = parse_default("allow=198.51.100.10:8080,198.51.100.0/24").unwrap().unwrap();
        assert_eq!(
            s.allow[0],
            Allow {
                net: Ipv4Addr::new(198, 51, 100, 10).into(),
                prefix: 32,
                port: Some(8080),
                proto: Proto::Any,
                set: None
            }
        );
        assert_eq!((s.allow[1].prefix, s.allow[1].port), (24, None));
        for bad in [
            "all",
            "allow=",
            "allow=1.2.3.4:0",
            "allow=1.2.3.4:x",
            "allow=1.2.3.4/33",
            "allow=a b:1",
            "allow=1.2.3",
            "allow=[2001:db8::1]",
            "allow=[2001:db8::1:80",
            "allow=[svc.test]:80",
            "allow=2001:db8::/129",
            "allow=2001:db8::g",
        ] {
            assert!(parse_default(bad).is_err(), "{bad}");
        }
        let s = parse_default("allow=Svc.Test.:443,*.registry.io,198.51.100.1").unwrap().unwrap();
        assert_eq!(s.names, [("svc.test".to_string(), 0), ("*.registry.io".to_string(), 1)]);
        assert_eq!(
            (s.allow[0].set, s.allow[0].port, s.allow[1].set, s.allow[2].set),
            (Some(0), Some(443), Some(1), None)
        );
        let s = parse_default("allow=[2001:db8::10]:8080,2001:db8::/64,[2001:db8:1::/48]:53,bücher.example")
            .unwrap()
            .unwrap();
        let v6: IpAddr = "2001:db8::10".parse().unwrap();
        assert_eq!((s.allow[0].net, s.allow[0].prefix, s.allow[0].port), (v6, 128, Some(8080)));
        assert_eq!((s.allow[1].prefix, s.allow[1].port), (64, None));
        assert_eq!((s.allow[2].prefix, s.allow[2].port), (48, Some(53)));
        assert_eq!(s.names, [("xn--bcher-kva.example".to_string(), 0)]);
    }
}
