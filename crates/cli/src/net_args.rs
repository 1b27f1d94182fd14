//! `--net none | allow=DEST[,DEST...]`: what a world may reach.
//!
//! DEST is `IP[:PORT]`, `CIDR[:PORT]` or `NAME[:PORT]` (IPv4; a missing port
//! means every port; TCP and UDP). A NAME (`*.example.com`: the names below)
//! is resolved by cloche's resolver for the world, which pins the answers.

use cloche_net::nft::{Allow, Proto};
use cloche_world::network::NetSpec;
use std::net::Ipv4Addr;

/// The pool the worlds' /30s come from.
pub const POOL: (Ipv4Addr, u8) = (Ipv4Addr::new(10, 203, 0, 0), 16);

/// Parses `--net`: `None` for `none` (loopback only).
pub fn parse(arg: &str) -> Result<Option<NetSpec>, String> {
    if arg == "none" {
        return Ok(None);
    }
    let list =
        arg.strip_prefix("allow=").ok_or_else(|| format!("--net {arg}: expected none or allow=DEST[,DEST...]"))?;
    let dests: Vec<&str> = list.split(',').collect();
    spec(&dests).map(Some).map_err(|e| format!("--net {arg}: {e}"))
}

/// The policy's `[network] allow` (None when empty: loopback only).
pub fn from_policy(allow: &[String]) -> Result<Option<NetSpec>, String> {
    if allow.is_empty() {
        return Ok(None);
    }
    let dests: Vec<&str> = allow.iter().map(String::as_str).collect();
    spec(&dests).map(Some).map_err(|e| format!("policy network.allow: {e}"))
}

/// The spec of a list of destinations: each name gets a set and cloche's
/// resolver (upstream: `CLOCHE_DNS_UPSTREAM`, else the host's resolv.conf).
fn spec(dests: &[&str]) -> Result<NetSpec, String> {
    if dests.is_empty() || dests.iter().any(|d| d.is_empty()) {
        return Err("no destination".into());
    }
    let mut allow = Vec::new();
    let mut names = Vec::new();
    for d in dests {
        let (a, name) = dest(d)?;
        if let Some(n) = name {
            let k = names.len() as u16;
            names.push((n, k));
            allow.push(Allow { set: Some(k), ..a });
        } else {
            allow.push(a);
        }
    }
    let upstream = match std::env::var("CLOCHE_DNS_UPSTREAM") {
        Ok(u) if !u.is_empty() => Some(u.parse().map_err(|_| format!("CLOCHE_DNS_UPSTREAM {u:?}: expected IP:PORT"))?),
        _ => None,
    };
    Ok(NetSpec { allow, names, upstream, pool: POOL })
}

/// One destination, and its canonical name when it is a name.
fn dest(d: &str) -> Result<(Allow, Option<String>), String> {
    let (host, port) = match d.rsplit_once(':') {
        Some((h, p)) => {
            let port: u16 = p.parse().map_err(|_| format!("{d}: bad port {p:?}"))?;
            if port == 0 {
                return Err(format!("{d}: port 0"));
            }
            (h, Some(port))
        }
        None => (d, None),
    };
    let any = Allow { net: Ipv4Addr::UNSPECIFIED, prefix: 32, port, proto: Proto::Any, set: None };
    if let Some((ip, p)) = host.split_once('/') {
        let prefix = p.parse::<u8>().ok().filter(|p| *p <= 32).ok_or_else(|| format!("{d}: bad prefix"))?;
        let net = ip.parse().map_err(|_| format!("{d}: not an IPv4 network"))?;
        return Ok((Allow { net, prefix, ..any }, None));
    }
    if let Ok(net) = host.parse::<Ipv4Addr>() {
        return Ok((Allow { net, ..any }, None));
    }
    // All digits and dots is a mistyped address, not a name.
    if host.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return Err(format!("{d}: not an IPv4 address"));
    }
    let name = cloche_net::dns::canonical(host).map_err(|e| format!("{d}: {e}"))?;
    Ok((any, Some(name)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn destinations() {
        assert!(parse("none").unwrap().is_none());
        let s = parse("allow=198.51.100.10:8080,198.51.100.0/24").unwrap().unwrap();
        assert_eq!(
            s.allow[0],
            Allow { net: Ipv4Addr::new(198, 51, 100, 10), prefix: 32, port: Some(8080), proto: Proto::Any, set: None }
        );
        assert_eq!((s.allow[1].prefix, s.allow[1].port), (24, None));
        for bad in
            ["all", "allow=", "allow=1.2.3.4:0", "allow=1.2.3.4:x", "allow=1.2.3.4/33", "allow=a b:1", "allow=1.2.3"]
        {
            assert!(parse(bad).is_err(), "{bad}");
        }
        let s = parse("allow=Svc.Test.:443,*.registry.io,198.51.100.1").unwrap().unwrap();
        assert_eq!(s.names, [("svc.test".to_string(), 0), ("*.registry.io".to_string(), 1)]);
        assert_eq!(
            (s.allow[0].set, s.allow[0].port, s.allow[1].set, s.allow[2].set),
            (Some(0), Some(443), Some(1), None)
        );
    }
}
