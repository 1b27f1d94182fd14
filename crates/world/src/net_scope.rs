//! The network scope of a world, as reports and spans show it: what it
//! reached (counters of its allow rules), what it tried and was refused
//! (NFLOG), the names and answers its resolver refused, and what did not
//! fit in those bounded lists.

use crate::network::WorldNet;
use cloche_net::nft;
use cloche_net::scope;
use serde::Serialize;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::atomic::Ordering;

/// The network scope of a finished world (report and spans).
#[derive(Debug, Clone, Default, Serialize)]
pub struct NetScope {
    pub mode: &'static str,
    pub address: Option<Ipv4Addr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub address6: Option<Ipv6Addr>,
    pub allowed: Vec<AllowedFlow>,
    pub denied: Vec<DeniedFlow>,
    /// Names the world asked for and was refused (NXDOMAIN), and answers
    /// of allowed names whose addresses were refused: each once, in the
    /// order first seen, at most [`cloche_net::dns::DENIED_NAMES_CAP`].
    pub denied_names: Vec<DeniedName>,
    /// What the bounded lists above left out.
    pub dropped: Dropped,
}

#[derive(Debug, Clone, Serialize)]
pub struct AllowedFlow {
    /// The allowed name, for a name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dst: Option<String>,
    /// The network, or for a name the addresses the resolver answered.
    pub ip: String,
    pub port: Option<u16>,
    pub proto: &'static str,
    pub packets: u64,
    pub bytes: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct DeniedFlow {
    pub ip: IpAddr,
    pub port: u16,
    pub proto: &'static str,
    pub attempts: u64,
}

/// A refused name (`reason` "not allowed", or "not a host name"), or an
/// address an allowed name's answer carried and the resolver refused (`ip`
/// and its kind as `reason`: "loopback", "cloud metadata", ...).
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct DeniedName {
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ip: Option<IpAddr>,
    pub reason: String,
}

/// Events not listed because a list was full.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct Dropped {
    /// Refused packets not in `denied`: past its cap, or lost by the kernel
    /// (the world sent them faster than cloche reads); from the refusing
    /// rules' counters.
    pub denied: u64,
    /// Refusals not in `denied_names` (repeats included).
    pub denied_names: u64,
    /// Answered addresses not in the names' `ip` lists.
    pub answers: u64,
}

impl WorldNet {
    /// The scope: counters of each allowed destination, refused attempts
    /// (those logged since the last reading), the resolver's refusals.
    /// Bounded whatever the world did: each list has a cap.
    pub fn scope(&self) -> NetScope {
        let counted = scope::counters(&self.nft).unwrap_or_default();
        let seen = self.resolver.as_ref().map(|r| r.seen()).unwrap_or_default();
        let denied = scope::drain(&self.log).unwrap_or_default();
        let refused = counted.get(&nft::REFUSED_TAG).map_or(0, |c| c.0);
        let before = self.refused.swap(refused, Ordering::Relaxed);
        let listed: u64 = denied.values().sum();
        let proto = |p: nft::Proto| match p {
            nft::Proto::Tcp => "tcp",
            nft::Proto::Udp => "udp",
            nft::Proto::Any => "any",
        };
        let allowed = self.allow.iter().enumerate().map(|(i, a)| {
            let (packets, bytes) = counted.get(&(i as u32)).copied().unwrap_or((0, 0));
            let name = a.set.and_then(|k| self.names.iter().find(|(_, s)| *s == k)).map(|(n, _)| n.clone());
            let ip = match a.set {
                // The addresses the resolver answered for it.
                Some(k) => seen.answered.get(&k).map(|ips| ips.iter().map(|ip| ip.to_string()).collect()),
                None => None,
            };
            let ip = ip.map_or_else(|| format!("{}/{}", a.net, a.prefix), |v: Vec<String>| v.join(","));
            AllowedFlow { dst: name, ip, port: a.port, proto: proto(a.proto), packets, bytes }
        });
        let denied_flows = denied.into_iter().map(|(d, n)| DeniedFlow {
            ip: d.ip,
            port: d.port,
            proto: match d.proto {
                6 => "tcp",
                17 => "udp",
                1 => "icmp",
                _ => "other",
            },
            attempts: n,
        });
        NetScope {
            mode: "scoped",
            address: Some(self.address),
            address6: self.address6,
            allowed: allowed.collect(),
            denied: denied_flows.collect(),
            denied_names: seen
                .denied
                .into_iter()
                .map(|d| DeniedName { name: d.name, ip: d.ip, reason: d.reason })
                .collect(),
            dropped: Dropped {
                denied: refused.saturating_sub(before).saturating_sub(listed),
                denied_names: seen.denied_dropped,
                answers: seen.answers_dropped,
            },
        }
    }
}
