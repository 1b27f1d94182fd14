//! What a world reached and what it tried: the counters of its allow rules
//! (read back from nftables) and its refused attempts (NFLOG packets of the
//! ruleset's `log group`, read from a socket opened inside its namespace:
//! a plain `log` would print nothing outside the init namespace).

use crate::msg::{attrs, messages, Msg};
use crate::nft::{nfgen, nft, NFPROTO_INET, NFTA_RULE_EXPRESSIONS, NFTA_RULE_USERDATA, TABLE};
use std::collections::BTreeMap;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsRawFd, OwnedFd};

const NFT_MSG_GETRULE: u16 = 7;
const NFT_MSG_NEWRULE: u16 = 6;
const NLM_F_DUMP: u16 = 0x300;
const NLMSG_DONE: u16 = 3;
const NLMSG_ERROR: u16 = 2;
const NFTA_RULE_TABLE: u16 = 1;
const NFTA_LIST_ELEM: u16 = 1;
const NFTA_EXPR_NAME: u16 = 1;
const NFTA_EXPR_DATA: u16 = 2;
const NFTA_COUNTER_BYTES: u16 = 1;
const NFTA_COUNTER_PACKETS: u16 = 2;

const NFNL_SUBSYS_ULOG: u16 = 4;
const NFULNL_MSG_PACKET: u16 = 0;
const NFULNL_MSG_CONFIG: u16 = 1;
const NFULA_CFG_CMD: u16 = 1;
const NFULA_CFG_MODE: u16 = 2;
const NFULA_CFG_TIMEOUT: u16 = 4;
const NFULA_CFG_QTHRESH: u16 = 5;
const NFULNL_CFG_CMD_BIND: u8 = 1;
const NFULNL_COPY_PACKET: u8 = 2;
const NFULA_PAYLOAD: u16 = 9;

fn be64(b: &[u8]) -> u64 {
    b.get(..8).and_then(|x| x.try_into().ok()).map(u64::from_be_bytes).unwrap_or(0)
}

fn recv(sock: &OwnedFd, buf: &mut [u8], flags: i32) -> io::Result<usize> {
    loop {
        // SAFETY: recv into our buffer.
        let n = unsafe { libc::recv(sock.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), flags) };
        if n >= 0 {
            return Ok(n as usize);
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

fn send(sock: &OwnedFd, msg: &[u8]) -> io::Result<()> {
    // SAFETY: send from our buffer.
    if unsafe { libc::send(sock.as_raw_fd(), msg.as_ptr().cast(), msg.len(), 0) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// A dump: sends `req`, hands each answer of type `kind` to `each` (its
/// netfilter family and attributes) until the kernel is done.
fn dump(sock: &OwnedFd, req: &[u8], kind: u16, mut each: impl FnMut(u8, &[(u16, &[u8])])) -> io::Result<()> {
    send(sock, req)?;
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = recv(sock, &mut buf, 0)?;
        for (k, body) in messages(&buf[..n]) {
            match k {
                NLMSG_DONE => return Ok(()),
                NLMSG_ERROR => {
                    let code = body.get(..4).and_then(|b| b.try_into().ok()).map(i32::from_ne_bytes).unwrap_or(0);
                    if code != 0 {
                        return Err(io::Error::from_raw_os_error(-code));
                    }
                }
                k if k == kind => each(body.first().copied().unwrap_or(0), &attrs(body.get(4..).unwrap_or_default())),
                _ => {}
            }
        }
    }
}

/// Each rule of `table` (of netfilter `family`): its attributes.
fn each_rule(sock: &OwnedFd, family: u8, table: &str, mut each: impl FnMut(&[(u16, &[u8])])) -> io::Result<()> {
    let req = Msg::new(nft(NFT_MSG_GETRULE), NLM_F_DUMP).bytes(&nfgen(family)).str(NFTA_RULE_TABLE, table).finish();
    dump(sock, &req, nft(NFT_MSG_NEWRULE), |_, a| each(a))
}

/// Every nftables table of the socket's namespace, as `FAMILY NAME`
/// (`inet cloche_nat`): one dump of all families.
pub fn tables(sock: &OwnedFd) -> io::Result<Vec<String>> {
    const NFT_MSG_GETTABLE: u16 = 1;
    const NFT_MSG_NEWTABLE: u16 = 0;
    let mut out = Vec::new();
    let req = Msg::new(nft(NFT_MSG_GETTABLE), NLM_F_DUMP).bytes(&nfgen(0)).finish();
    dump(sock, &req, nft(NFT_MSG_NEWTABLE), |family, a| {
        let family = match family {
            1 => "inet",
            2 => "ip",
            3 => "arp",
            5 => "netdev",
            7 => "bridge",
            10 => "ip6",
            _ => "?",
        };
        let name =
            a.iter().find(|(t, _)| *t == 1).map(|(_, d)| String::from_utf8_lossy(d).trim_end_matches('\0').to_string());
        out.push(format!("{family} {}", name.unwrap_or_default()));
    })?;
    Ok(out)
}

/// The user data of each rule of `table` (rules without any are left out).
pub fn rule_tags(sock: &OwnedFd, family: u8, table: &str) -> io::Result<Vec<Vec<u8>>> {
    let mut out = Vec::new();
    each_rule(sock, family, table, |a| {
        out.extend(a.iter().find(|(t, _)| *t == NFTA_RULE_USERDATA).map(|(_, d)| d.to_vec()));
    })?;
    Ok(out)
}

/// Packets and bytes per allowed destination (the index in the ruleset's
/// allow list), summed over its rules. `sock`: a netfilter netlink socket
/// in the world's namespace ([`crate::nft::socket`]); read before the
/// namespace goes.
pub fn counters(sock: &OwnedFd) -> io::Result<BTreeMap<u32, (u64, u64)>> {
    let mut out: BTreeMap<u32, (u64, u64)> = BTreeMap::new();
    each_rule(sock, NFPROTO_INET, TABLE, |a| {
        let tag = a.iter().find(|(t, _)| *t == NFTA_RULE_USERDATA).and_then(|(_, d)| d.get(..4));
        let Some(tag) = tag.and_then(|d| d.try_into().ok()).map(u32::from_be_bytes) else { return };
        for (_, exprs) in a.iter().filter(|(t, _)| *t == NFTA_RULE_EXPRESSIONS) {
            for (_, elem) in attrs(exprs).into_iter().filter(|(t, _)| *t == NFTA_LIST_ELEM) {
                let e = attrs(elem);
                let is_counter = e.iter().any(|(t, d)| *t == NFTA_EXPR_NAME && d.starts_with(b"counter"));
                let data = e.iter().find(|(t, _)| *t == NFTA_EXPR_DATA).map(|(_, d)| attrs(d));
                if let (true, Some(data)) = (is_counter, data) {
                    let get = |k| data.iter().find(|(t, _)| *t == k).map(|(_, d)| be64(d)).unwrap_or(0);
                    let slot = out.entry(tag).or_default();
                    slot.0 += get(NFTA_COUNTER_PACKETS);
                    slot.1 += get(NFTA_COUNTER_BYTES);
                }
            }
        }
    })?;
    Ok(out)
}

/// One refused attempt, from an NFLOG packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Denied {
    pub ip: IpAddr,
    /// TCP or UDP destination port (0 for other protocols).
    pub port: u16,
    /// IP protocol number.
    pub proto: u8,
}

/// Subscribes `sock` (a netfilter netlink socket in the world's namespace)
/// to NFLOG group `group`, copying the first 128 bytes of each packet.
pub fn listen(sock: &OwnedFd, group: u16) -> io::Result<()> {
    let kind = (NFNL_SUBSYS_ULOG << 8) | NFULNL_MSG_CONFIG;
    let res = group.to_be_bytes();
    let hdr = [libc::AF_UNSPEC as u8, 0, res[0], res[1]];
    let bind = Msg::new(kind, 0).bytes(&hdr).attr(NFULA_CFG_CMD, &[NFULNL_CFG_CMD_BIND]).finish();
    let mut mode = 128u32.to_be_bytes().to_vec();
    mode.extend_from_slice(&[NFULNL_COPY_PACKET, 0]);
    // Every packet sent at once (queue threshold 1, flush timeout 10 ms): a
    // drain right after the attempt sees it.
    let mode = Msg::new(kind, 0)
        .bytes(&hdr)
        .attr(NFULA_CFG_MODE, &mode)
        .be32(NFULA_CFG_QTHRESH, 1)
        .be32(NFULA_CFG_TIMEOUT, 1)
        .finish();
    for m in [bind, mode] {
        send(sock, &m)?;
        let mut buf = [0u8; 512];
        let n = recv(sock, &mut buf, 0)?;
        for (k, body) in messages(&buf[..n]) {
            let code = body.get(..4).and_then(|b| b.try_into().ok()).map(i32::from_ne_bytes).unwrap_or(0);
            if k == NLMSG_ERROR && code != 0 {
                return Err(io::Error::from_raw_os_error(-code));
            }
        }
    }
    Ok(())
}

/// Refused destinations listed per reading ([`drain`]).
pub const DENIED_FLOWS_CAP: usize = 256;

/// Reads every NFLOG packet waiting on `sock` (never blocks): the refused
/// attempts, counted per (destination, port, protocol), at most
/// [`DENIED_FLOWS_CAP`] of them (attempts to others are read and not
/// listed). The socket's buffer bounds what waits: packets the kernel could
/// not queue are lost, and counted by the refusing rules' counters
/// ([`crate::nft::REFUSED_TAG`]).
pub fn drain(sock: &OwnedFd) -> io::Result<BTreeMap<Denied, u64>> {
    let mut out: BTreeMap<Denied, u64> = BTreeMap::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = match recv(sock, &mut buf, libc::MSG_DONTWAIT) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(out),
            // The kernel dropped packets for a full buffer: counts are then
            // a lower bound; read on.
            Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => continue,
            Err(e) => return Err(e),
        };
        for (kind, body) in messages(&buf[..n]) {
            if kind != (NFNL_SUBSYS_ULOG << 8) | NFULNL_MSG_PACKET {
                continue;
            }
            let payload = attrs(body.get(4..).unwrap_or_default()).into_iter().find(|(t, _)| *t == NFULA_PAYLOAD);
            let Some(d) = payload.and_then(|(_, p)| parse_ip(p)) else { continue };
            let full = out.len() >= DENIED_FLOWS_CAP;
            match out.get_mut(&d) {
                Some(n) => *n += 1,
                None if !full => {
                    out.insert(d, 1);
                }
                None => {}
            }
        }
    }
}

/// Destination, port and protocol of an IPv4 or IPv6 packet (for IPv6,
/// the protocol is the first next header: a packet with extension headers
/// is counted without its port).
fn parse_ip(p: &[u8]) -> Option<Denied> {
    let (ip, proto, l4): (IpAddr, u8, usize) = match p.first()? >> 4 {
        4 if p.len() >= 20 => (Ipv4Addr::new(p[16], p[17], p[18], p[19]).into(), p[9], usize::from(p[0] & 0x0f) * 4),
        6 if p.len() >= 40 => (Ipv6Addr::from(<[u8; 16]>::try_from(&p[24..40]).ok()?).into(), p[6], 40),
        _ => return None,
    };
    let port = match proto {
        6 | 17 => p.get(l4 + 2..l4 + 4).map(|b| u16::from_be_bytes([b[0], b[1]])).unwrap_or(0),
        _ => 0,
    };
    Some(Denied { ip, port, proto })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv4_headers_are_parsed_and_junk_is_not() {
        let mut p = vec![0x45, 0, 0, 40, 0, 0, 0, 0, 64, 6, 0, 0, 198, 51, 100, 2, 169, 254, 169, 254];
        p.extend_from_slice(&[0x9c, 0x40, 0x00, 0x50]);
        assert_eq!(parse_ip(&p), Some(Denied { ip: Ipv4Addr::new(169, 254, 169, 254).into(), port: 80, proto: 6 }));
        assert_eq!(parse_ip(&p[..10]), None);
        assert_eq!(parse_ip(&[0x60; 39]), None);
        assert_eq!(parse_ip(&[]), None);
        // IPv6, UDP to [2001:db8::10]:53
        let mut v6 = vec![0x60, 0, 0, 0, 0, 8, 17, 64];
        v6.extend_from_slice(&[0; 16]);
        v6.extend_from_slice(&"2001:db8::10".parse::<Ipv6Addr>().unwrap().octets());
        v6.extend_from_slice(&[0x9c, 0x40, 0, 53]);
        assert_eq!(parse_ip(&v6), Some(Denied { ip: "2001:db8::10".parse().unwrap(), port: 53, proto: 17 }));
        assert!(attrs(&[200, 0, 1, 0]).is_empty());
        assert!(messages(&[1, 0, 0, 0]).is_empty());
    }
}
