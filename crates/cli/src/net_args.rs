//! `--net none | allow=DEST[,DEST...]`: what a world may reach.
//!
//! DEST is `IP[:PORT]` or `CIDR[:PORT]` (IPv4; a missing port means every
//! port; TCP and UDP). Host names come with cloche's resolver.

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
    let allow = list.split(',').map(dest).collect::<Result<Vec<_>, _>>().map_err(|e| format!("--net {arg}: {e}"))?;
    if allow.is_empty() {
        return Err(format!("--net {arg}: no destination"));
    }
    Ok(Some(NetSpec { allow, pool: POOL }))
}

/// The policy's `[network] allow` (None when empty: loopback only).
pub fn from_policy(allow: &[String]) -> Result<Option<NetSpec>, String> {
    if allow.is_empty() {
        return Ok(None);
    }
    let allow = allow
        .iter()
        .map(|d| dest(d))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("policy network.allow: {e}"))?;
    Ok(Some(NetSpec { allow, pool: POOL }))
}

fn dest(d: &str) -> Result<Allow, String> {
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
    let (ip, prefix) = match host.split_once('/') {
        Some((ip, p)) => (ip, p.parse::<u8>().ok().filter(|p| *p <= 32).ok_or_else(|| format!("{d}: bad prefix"))?),
        None => (host, 32),
    };
    let net: Ipv4Addr = ip.parse().map_err(|_| {
        if ip.chars().any(|c| c.is_ascii_alphabetic()) {
            format!("{d}: host names are not supported yet (give an IPv4 address or network)")
        } else {
            format!("{d}: not an IPv4 address")
        }
    })?;
    Ok(Allow { net, prefix, port, proto: Proto::Any })
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
            Allow { net: Ipv4Addr::new(198, 51, 100, 10), prefix: 32, port: Some(8080), proto: Proto::Any }
        );
        assert_eq!((s.allow[1].prefix, s.allow[1].port), (24, None));
        for bad in ["all", "allow=", "allow=1.2.3.4:0", "allow=1.2.3.4:x", "allow=1.2.3.4/33", "allow=example.com:443"]
        {
            assert!(parse(bad).is_err(), "{bad}");
        }
        assert!(parse("allow=example.com:443").unwrap_err().contains("names"));
    }
}
