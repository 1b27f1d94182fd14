//! The policy's `[network]` section: what worlds may reach, and where
//! their addresses and their resolver's answers come from.

use serde::Deserialize;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawNetwork {
    #[serde(default)]
    allow: Vec<String>,
    pool: Option<String>,
    pool6: Option<String>,
    upstream: Option<String>,
}

/// What worlds may reach (`[network]`): destinations as `--net allow=`
/// takes them (checked by the CLI, which knows their syntax). Empty:
/// loopback only. `pool`/`pool6`: where the worlds' addresses come from
/// (default 10.203.0.0/16 and fd63:6c6f:6368:6500::/64); `upstream`: the
/// server cloche's resolver asks (default: the host's first nameserver).
#[derive(Debug, Clone, Default)]
pub struct NetworkSection {
    pub allow: Vec<String>,
    pub pool: Option<(std::net::Ipv4Addr, u8)>,
    pub pool6: Option<(std::net::Ipv6Addr, u8)>,
    pub upstream: Option<std::net::SocketAddr>,
}

/// `ADDR/PREFIX` of one family, the prefix within `range`.
fn network<A: std::str::FromStr>(key: &str, v: &str, range: std::ops::RangeInclusive<u8>) -> Result<(A, u8), String> {
    let bad = || format!("network.{key} {v:?}: expected ADDRESS/PREFIX, prefix {}..={}", range.start(), range.end());
    let (a, p) = v.split_once('/').ok_or_else(bad)?;
    let a = a.parse::<A>().map_err(|_| bad())?;
    let p = p.parse::<u8>().ok().filter(|p| range.contains(p)).ok_or_else(bad)?;
    Ok((a, p))
}

/// An upstream server: `IP`, `IP:PORT` or `[IPv6]:PORT` (port 53 when
/// left out).
fn upstream(v: &str) -> Result<std::net::SocketAddr, String> {
    if let Ok(ip) = v.parse::<std::net::IpAddr>() {
        return Ok((ip, 53).into());
    }
    v.parse().map_err(|_| format!("network.upstream {v:?}: expected IP, IP:PORT or [IPv6]:PORT"))
}

pub(crate) fn section(raw: Option<RawNetwork>) -> Result<NetworkSection, String> {
    let Some(raw) = raw else { return Ok(NetworkSection::default()) };
    if raw.allow.iter().any(|d| d.is_empty() || d.contains(',') || d.chars().any(char::is_whitespace)) {
        return Err("network.allow: one destination per string, without commas or spaces".into());
    }
    Ok(NetworkSection {
        allow: raw.allow,
        // A /30 per world: the pool holds at least one; an IPv6 /126 per
        // world takes the IPv4 slot's 32 low bits.
        pool: raw.pool.map(|v| network("pool", &v, 8..=30)).transpose()?,
        pool6: raw.pool6.map(|v| network("pool6", &v, 8..=96)).transpose()?,
        upstream: raw.upstream.map(|v| upstream(&v)).transpose()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(pool: Option<&str>, pool6: Option<&str>, up: Option<&str>) -> Option<RawNetwork> {
        Some(RawNetwork {
            allow: vec!["198.51.100.10:80".into()],
            pool: pool.map(String::from),
            pool6: pool6.map(String::from),
            upstream: up.map(String::from),
        })
    }

    #[test]
    fn pools_and_upstream_are_checked() {
        let n = section(raw(Some("10.77.0.0/20"), Some("fd00:1:2:3::/64"), Some("198.51.100.53"))).unwrap();
        assert_eq!(n.pool, Some(("10.77.0.0".parse().unwrap(), 20)));
        assert_eq!(n.pool6.unwrap().1, 64);
        assert_eq!(n.upstream, Some("198.51.100.53:53".parse().unwrap()));
        assert_eq!(section(raw(None, None, Some("[2001:db8::53]:5353"))).unwrap().upstream.unwrap().port(), 5353);
        for (p, p6, u) in [
            (Some("10.0.0.0/31"), None, None),
            (Some("10.0.0.0"), None, None),
            (Some("fd00::/64"), None, None),
            (None, Some("fd00::/100"), None),
            (None, Some("10.0.0.0/16"), None),
            (None, None, Some("resolver.example")),
        ] {
            assert!(section(raw(p, p6, u)).is_err(), "{p:?} {p6:?} {u:?}");
        }
        assert!(section(None).unwrap().allow.is_empty());
    }
}
