//! A world's firewall: one nftables table, sent over netlink as a single
//! batch (all or nothing) into the world's network namespace from outside.
//!
//! ```text
//! table inet cloche {
//!   chain output { type filter hook output priority 0; policy drop;
//!     oifname "lo" accept
//!     icmpv6 type { nd-neighbor-solicit, nd-neighbor-advert } accept
//!     meta l4proto icmpv6 ip6 daddr ff02::/16 drop   # router solicitations, MLD reports
//!     ip daddr NET [meta l4proto tcp|udp] [th dport PORT] counter accept    # one per allowed
//!     ip6 daddr NET [meta l4proto tcp|udp] [th dport PORT] counter accept   # destination
//!     ip daddr 127.0.0.1 th dport 53 accept    # redirected DNS (with names;
//!     ip6 daddr ::1 th dport 53 accept         # see chain dns)
//!     ct state established,related accept
//!     meta nfproto ipv6 meta l4proto tcp counter log group G reject with tcp reset
//!     counter log group G reject with icmpx admin-prohibited }
//!   chain input { type filter hook input priority 0; policy drop;
//!     iifname "lo" accept
//!     icmpv6 type { nd-neighbor-solicit, nd-neighbor-advert } accept
//!     ct state established,related ip[6] saddr NET ... counter accept      # answers, counted
//!     ct state established,related accept
//!     counter drop }
//!   chain dns { type nat hook output priority -100;   # with allowed names only
//!     udp|tcp dport 53 dnat ip to 127.0.0.1:53
//!     udp|tcp dport 53 dnat ip6 to [::1]:53 }          # cloche's resolver
//! }
//! ```
//! Everything not listed is refused in both directions, over IPv4 and IPv6
//! alike. Neighbour discovery is let through (without it no IPv6 packet
//! leaves the link); the link-local chatter of a fresh interface (router
//! solicitations, MLD reports) is dropped without being logged, so it never
//! shows as an attempt. Refusals answer at once (`reject`), so a connect
//! fails fast instead of waiting for a timeout, and are logged to NFLOG
//! group `G`.

mod host;
mod rule;

use crate::msg::Msg;
pub use host::{host_nat, host_nat_rules, pool_tag, HOST_TABLE};
use rule::{family, mask, octets, Rule, IPPROTO_ICMPV6};
use std::io;
use std::net::IpAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFNL_MSG_BATCH_BEGIN: u16 = 16;
const NFNL_MSG_BATCH_END: u16 = 17;
const NFT_MSG_NEWTABLE: u16 = 0;
const NFT_MSG_NEWCHAIN: u16 = 3;
const NFT_MSG_NEWRULE: u16 = 6;
const NFT_MSG_DELTABLE: u16 = 2;
const NFT_MSG_NEWSET: u16 = 9;
const NFT_MSG_NEWSETELEM: u16 = 12;
const NFT_SET_TIMEOUT: u32 = 0x10;
const NLM_F_CREATE: u16 = 0x400;
const NLM_F_EXCL: u16 = 0x200;
const NLM_F_APPEND: u16 = 0x800;
pub(crate) const NFPROTO_INET: u8 = 1;
const NFPROTO_IPV4: u8 = 2;
const NFPROTO_IPV6: u8 = 10;
const NLMSG_ERROR: u16 = 2;

// attributes (linux/netfilter/nf_tables.h)
const NFTA_TABLE_NAME: u16 = 1;
const NFTA_CHAIN_TABLE: u16 = 1;
const NFTA_CHAIN_NAME: u16 = 3;
const NFTA_CHAIN_HOOK: u16 = 4;
const NFTA_CHAIN_POLICY: u16 = 5;
const NFTA_CHAIN_TYPE: u16 = 7;
const NFTA_HOOK_HOOKNUM: u16 = 1;
const NFTA_HOOK_PRIORITY: u16 = 2;
const NFTA_RULE_TABLE: u16 = 1;
const NFTA_RULE_CHAIN: u16 = 2;
pub(crate) const NFTA_RULE_EXPRESSIONS: u16 = 4;
pub(crate) const NFTA_RULE_USERDATA: u16 = 7;
const NFTA_LIST_ELEM: u16 = 1;
const NFTA_EXPR_NAME: u16 = 1;
const NFTA_EXPR_DATA: u16 = 2;
const NFTA_DATA_VALUE: u16 = 1;
const NFTA_DATA_VERDICT: u16 = 2;
const NFTA_VERDICT_CODE: u16 = 1;

const NF_INET_LOCAL_IN: u32 = 1;
const NF_INET_LOCAL_OUT: u32 = 3;
const NF_DROP: u32 = 0;
const NF_ACCEPT: u32 = 1;
/// The 16-byte register 1 (`NFT_REG_1`); 0 is the verdict register.
const REG1: u32 = 1;

/// The table every world's rules live in.
pub const TABLE: &str = "cloche";

/// The user data tag of the rules that refuse (and log) what leaves a world:
/// their counters give the number of refused packets, logged or not.
pub const REFUSED_TAG: u32 = u32::MAX;

/// Elements a name's set holds at most (each pinned address until its TTL
/// ends): past it the kernel refuses the pin, and the resolver answers
/// SERVFAIL.
pub const SET_SIZE: u32 = 4096;

/// The transport a destination is allowed for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proto {
    Tcp,
    Udp,
    /// Both TCP and UDP (and, without a port, any protocol).
    Any,
}

/// One allowed destination: an IPv4 or IPv6 network, and a port or every
/// port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Allow {
    pub net: IpAddr,
    pub prefix: u8,
    pub port: Option<u16>,
    pub proto: Proto,
    /// A name's addresses instead of `net`: sets `n<index>` (IPv4) and
    /// `m<index>` (IPv6) of the world's table, filled by the resolver as it
    /// answers ([`set_add`]).
    pub set: Option<u16>,
}

/// A base chain of inet table `table`: `hook` is (type, hook number,
/// priority); `policy` its verdict for what no rule decides.
fn chain(table: &str, name: &str, hook: (&str, u32, i32), policy: u32) -> Vec<u8> {
    let (kind, hooknum, priority) = hook;
    Msg::new(nft(NFT_MSG_NEWCHAIN), NLM_F_CREATE)
        .bytes(&nfgen(NFPROTO_INET))
        .str(NFTA_CHAIN_TABLE, table)
        .str(NFTA_CHAIN_NAME, name)
        .begin(NFTA_CHAIN_HOOK)
        .be32(NFTA_HOOK_HOOKNUM, hooknum)
        .be32(NFTA_HOOK_PRIORITY, priority as u32)
        .end()
        .be32(NFTA_CHAIN_POLICY, policy)
        .str(NFTA_CHAIN_TYPE, kind)
        .finish()
}

pub(crate) fn nft(msg: u16) -> u16 {
    (NFNL_SUBSYS_NFTABLES << 8) | msg
}

/// `struct nfgenmsg`: family, version, resource id (big endian).
pub(crate) fn nfgen(family: u8) -> [u8; 4] {
    [family, 0, 0, 0]
}

const META_L4PROTO: u32 = 16;
const META_NFPROTO: u32 = 15;
const META_OIFNAME: u32 = 7;
const META_IIFNAME: u32 = 6;

/// The whole ruleset of a world as one netlink batch.
///
/// With `dns` (the world's loopback addresses, where cloche's resolver
/// listens), every DNS query the world sends, to whatever server, is
/// redirected there (an IPv4 query to the IPv4 one, an IPv6 query to the
/// IPv6 one), and the allowed names' addresses live in sets the resolver
/// fills.
pub fn world_ruleset(allow: &[Allow], log_group: u16, dns: &[IpAddr]) -> Vec<u8> {
    let mut msgs: Vec<Vec<u8>> = Vec::new();
    msgs.push(
        Msg::new(nft(NFT_MSG_NEWTABLE), NLM_F_CREATE).bytes(&nfgen(NFPROTO_INET)).str(NFTA_TABLE_NAME, TABLE).finish(),
    );
    for k in allow.iter().filter_map(|a| a.set) {
        // (name, key type, key length, id): ipv4_addr is type 7, ipv6_addr 8.
        for (name, kind, len, id) in
            [(format!("n{k}"), 7, 4, 2 * u32::from(k) + 1), (format!("m{k}"), 8, 16, 2 * u32::from(k) + 2)]
        {
            msgs.push(
                Msg::new(nft(NFT_MSG_NEWSET), NLM_F_CREATE)
                    .bytes(&nfgen(NFPROTO_INET))
                    .str(1, TABLE) // NFTA_SET_TABLE
                    .str(2, &name) // NFTA_SET_NAME
                    .be32(3, NFT_SET_TIMEOUT) // NFTA_SET_FLAGS
                    .be32(4, kind) // NFTA_SET_KEY_TYPE
                    .be32(5, len) // NFTA_SET_KEY_LEN
                    .begin(9) // NFTA_SET_DESC
                    .be32(1, SET_SIZE) // NFTA_SET_DESC_SIZE
                    .end()
                    .be32(10, id) // NFTA_SET_ID
                    .finish(),
            );
        }
    }
    if !dns.is_empty() {
        msgs.push(chain(TABLE, "dns", ("nat", NF_INET_LOCAL_OUT, -100), NF_ACCEPT));
        for gw in dns {
            for p in [libc::IPPROTO_UDP as u8, libc::IPPROTO_TCP as u8] {
                let r = Rule::new("dns").family(family(*gw)).meta(META_L4PROTO).cmp(0, &[p]);
                msgs.push(r.payload(2, 2, 2).cmp(0, &53u16.to_be_bytes()).dnat(*gw, 53).finish());
            }
        }
    }
    for (name, hook) in [("output", NF_INET_LOCAL_OUT), ("input", NF_INET_LOCAL_IN)] {
        msgs.push(chain(TABLE, name, ("filter", hook, 0), NF_DROP));
    }
    // Neighbour solicitations and advertisements (ICMPv6 135, 136).
    let nd = |chain: &str| [135u8, 136].map(|t| Rule::new(chain).icmpv6(t).verdict(NF_ACCEPT).finish());
    // The allow rules come before `established` so that their counters see
    // every packet of a flow, both ways (tagged alike, summed on read).
    msgs.push(Rule::new("output").ifname(META_OIFNAME, "lo").verdict(NF_ACCEPT).finish());
    msgs.extend(nd("output"));
    let ll_multicast = Rule::new("output").family(NFPROTO_IPV6).meta(META_L4PROTO).cmp(0, &[IPPROTO_ICMPV6]);
    msgs.push(
        ll_multicast
            .addr(NFPROTO_IPV6, true)
            .and(&mask(16, 16))
            .cmp(0, &[0xff, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0])
            .verdict(NF_DROP)
            .finish(),
    );
    for (i, a) in allow.iter().enumerate() {
        msgs.extend(allow_rules(a, i as u32, Dir::Out));
    }
    for r in dns {
        // Queries to cloche's resolver, after the redirect: the filter hook
        // still sees the interface of the route taken before it (`eth0`
        // for a query to an outside server), so `lo` does not cover them.
        let q = Rule::new("output").family(family(*r)).addr(family(*r), true).cmp(0, &octets(*r));
        msgs.push(q.payload(2, 2, 2).cmp(0, &53u16.to_be_bytes()).verdict(NF_ACCEPT).finish());
    }
    msgs.push(Rule::new("output").established().verdict(NF_ACCEPT).finish());
    // A refused IPv6 TCP connect is answered with a reset: the ICMPv6 error
    // reaches the socket while connect(2) still holds it, and the kernel
    // then only notes it, so the caller would wait a second for the SYN's
    // retransmission (measured here).
    let refused = || Rule::tagged("output", Some(REFUSED_TAG));
    let tcp6 = refused().family(NFPROTO_IPV6).meta(META_L4PROTO).cmp(0, &[libc::IPPROTO_TCP as u8]);
    msgs.push(tcp6.counter().log_group(log_group).reset().finish());
    msgs.push(refused().counter().log_group(log_group).reject().finish());
    msgs.push(Rule::new("input").ifname(META_IIFNAME, "lo").verdict(NF_ACCEPT).finish());
    msgs.extend(nd("input"));
    for (i, a) in allow.iter().enumerate() {
        msgs.extend(allow_rules(a, i as u32, Dir::In));
    }
    msgs.push(Rule::new("input").established().verdict(NF_ACCEPT).finish());
    msgs.push(Rule::new("input").counter().verdict(NF_DROP).finish());
    batch(msgs)
}

/// Which way an allow rule looks: out, at the destination; in, at the
/// source of answers (only on established flows: never a new one inbound).
#[derive(Clone, Copy, PartialEq)]
enum Dir {
    Out,
    In,
}

/// The accept rules of one allowed destination: one per family (a name
/// has both: its IPv4 and its IPv6 set) and per transport (a port with
/// `Proto::Any` means TCP and UDP, which carry it at offset 2).
fn allow_rules(a: &Allow, tag: u32, dir: Dir) -> Vec<Vec<u8>> {
    let (tcp, udp) = (libc::IPPROTO_TCP as u8, libc::IPPROTO_UDP as u8);
    let families = match a.set {
        Some(_) => vec![NFPROTO_IPV4, NFPROTO_IPV6],
        None => vec![family(a.net)],
    };
    let protos = match (a.proto, a.port) {
        (Proto::Tcp, _) => vec![Some(tcp)],
        (Proto::Udp, _) => vec![Some(udp)],
        (Proto::Any, Some(_)) => vec![Some(tcp), Some(udp)],
        (Proto::Any, None) => vec![None],
    };
    let mut out = Vec::new();
    for fam in families {
        for proto in &protos {
            // daddr / th dport going out; saddr / th sport coming in.
            let (chain, port_at) = if dir == Dir::Out { ("output", 2) } else { ("input", 0) };
            let mut r = Rule::tagged(chain, Some(tag));
            if dir == Dir::In {
                r = r.established();
            }
            r = r.family(fam).addr(fam, dir == Dir::Out);
            if let Some(k) = a.set {
                r = r.lookup(&format!("{}{k}", if fam == NFPROTO_IPV4 { 'n' } else { 'm' }));
            } else {
                let bytes = octets(a.net);
                let m = mask(a.prefix, bytes.len());
                let net: Vec<u8> = bytes.iter().zip(&m).map(|(b, m)| b & m).collect();
                if m.iter().any(|b| *b != 0xff) {
                    r = r.and(&m);
                }
                r = r.cmp(0, &net);
            }
            if let Some(p) = proto {
                r = r.meta(META_L4PROTO).cmp(0, &[*p]);
            }
            if let Some(port) = a.port {
                r = r.payload(2, port_at, 2).cmp(0, &port.to_be_bytes());
            }
            out.push(r.counter().verdict(NF_ACCEPT).finish());
        }
    }
    out
}

/// Adds `addrs` to the sets of name `set` of the world's table (`n<set>`
/// for IPv4, `m<set>` for IPv6), each for `ttl_ms` (elements already there
/// keep their own timeout).
pub fn set_add(set: u16, addrs: &[(IpAddr, u64)]) -> Vec<u8> {
    let mut msgs = Vec::new();
    for (fam, prefix) in [(NFPROTO_IPV4, 'n'), (NFPROTO_IPV6, 'm')] {
        let these: Vec<&(IpAddr, u64)> = addrs.iter().filter(|(ip, _)| family(*ip) == fam).collect();
        if these.is_empty() {
            continue;
        }
        let mut m = Msg::new(nft(NFT_MSG_NEWSETELEM), NLM_F_CREATE)
            .bytes(&nfgen(NFPROTO_INET))
            .str(1, TABLE) // NFTA_SET_ELEM_LIST_TABLE
            .str(2, &format!("{prefix}{set}")) // NFTA_SET_ELEM_LIST_SET
            .begin(3); // NFTA_SET_ELEM_LIST_ELEMENTS
        for (ip, ttl_ms) in these {
            m = m
                .begin(NFTA_LIST_ELEM)
                .begin(1) // NFTA_SET_ELEM_KEY
                .attr(NFTA_DATA_VALUE, &octets(*ip))
                .end()
                .attr(4, &(*ttl_ms).max(1000).to_be_bytes()) // NFTA_SET_ELEM_TIMEOUT (ms)
                .end();
        }
        msgs.push(m.end().finish());
    }
    batch(msgs)
}

/// True if table `name` of IPv4 (`family` 2) or inet (1) exists: one plain
/// get, no transaction (a batch that fails costs the kernel a grace
/// period, several milliseconds in the init namespace).
pub fn table_exists(sock: &OwnedFd, family: u8, name: &str) -> io::Result<bool> {
    let req = get_table(family, name);
    // SAFETY: send from our buffer.
    if unsafe { libc::send(sock.as_raw_fd(), req.as_ptr().cast(), req.len(), 0) } < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut buf = vec![0u8; 8192];
    loop {
        // SAFETY: recv into our buffer.
        let n = unsafe { libc::recv(sock.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        let got = &buf[..n as usize];
        if got.len() < 16 {
            return Err(io::Error::other("short netlink reply"));
        }
        let kind = u16::from_ne_bytes([got[4], got[5]]);
        if kind != NLMSG_ERROR {
            return Ok(true); // the table itself; its ack follows and is read now
        }
        let code = i32::from_ne_bytes(got.get(16..20).and_then(|b| b.try_into().ok()).unwrap_or_default());
        return match code {
            0 => Ok(true),
            c if -c == libc::ENOENT => Ok(false),
            c => Err(io::Error::from_raw_os_error(-c)),
        };
    }
}

/// The request for table `name` of `family` (answered by the table, or an
/// error: `ENOENT` when there is none).
pub fn get_table(family: u8, name: &str) -> Vec<u8> {
    const NFT_MSG_GETTABLE: u16 = 1;
    Msg::new(nft(NFT_MSG_GETTABLE), 0).bytes(&nfgen(family)).str(NFTA_TABLE_NAME, name).finish()
}

/// Removes the world's table (its chains, rules and counters with it).
pub fn delete_ruleset() -> Vec<u8> {
    delete_table(NFPROTO_INET, TABLE)
}

/// Removes table `name` of `family` (2: ip, 1: inet).
pub fn delete_table(family: u8, name: &str) -> Vec<u8> {
    batch(vec![Msg::new(nft(NFT_MSG_DELTABLE), 0).bytes(&nfgen(family)).str(NFTA_TABLE_NAME, name).finish()])
}

/// A batch marker: no acknowledgement asked (only the messages inside are
/// answered).
fn marker(kind: u16) -> Vec<u8> {
    let mut m = Msg::new(kind, 0).bytes(&[0, 0, 0, NFNL_SUBSYS_NFTABLES as u8]).finish();
    m[6..8].copy_from_slice(&1u16.to_ne_bytes()); // NLM_F_REQUEST only
    m
}

/// Wraps messages in a batch, numbered from 1.
fn batch(msgs: Vec<Vec<u8>>) -> Vec<u8> {
    let mut out = marker(NFNL_MSG_BATCH_BEGIN);
    let mut seq = 1u32;
    for mut m in msgs {
        seq += 1;
        m[8..12].copy_from_slice(&seq.to_ne_bytes());
        out.extend_from_slice(&m);
    }
    let mut end = marker(NFNL_MSG_BATCH_END);
    end[8..12].copy_from_slice(&(seq + 1).to_ne_bytes());
    out.extend_from_slice(&end);
    out
}

/// A netfilter netlink socket in the calling thread's network namespace.
pub fn socket() -> io::Result<OwnedFd> {
    // SAFETY: plain socket(2); the fd is owned below.
    let fd = unsafe { libc::socket(libc::AF_NETLINK, libc::SOCK_RAW | libc::SOCK_CLOEXEC, libc::NETLINK_NETFILTER) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd was just returned by socket(2).
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Sends a batch and reads every acknowledgement: the first error fails
/// the call (the kernel then applied nothing of the batch).
pub fn send(sock: &OwnedFd, batch: &[u8]) -> io::Result<()> {
    // SAFETY: send from our buffer.
    if unsafe { libc::send(sock.as_raw_fd(), batch.as_ptr().cast(), batch.len(), 0) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // Every message but the batch markers asked for an ack.
    let mut want = count_msgs(batch).saturating_sub(2);
    let mut buf = vec![0u8; 65536];
    while want > 0 {
        // SAFETY: recv into our buffer.
        let n = unsafe { libc::recv(sock.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        let mut at = 0usize;
        let got = &buf[..n as usize];

        while at + 20 <= got.len() {
            let len = u32::from_ne_bytes(got[at..at + 4].try_into().unwrap_or_default()) as usize;
            let kind = u16::from_ne_bytes([got[at + 4], got[at + 5]]);
            if kind == NLMSG_ERROR {
                let code = i32::from_ne_bytes(got[at + 16..at + 20].try_into().unwrap_or_default());
                if code != 0 {
                    return Err(io::Error::from_raw_os_error(-code));
                }
                want -= 1;
            }
            if len < 16 {
                break;
            }
            at += (len + 3) & !3;
        }
    }
    Ok(())
}

fn count_msgs(batch: &[u8]) -> usize {
    let (mut at, mut n) = (0usize, 0usize);
    while at + 16 <= batch.len() {
        let len = u32::from_ne_bytes(batch[at..at + 4].try_into().unwrap_or_default()) as usize;
        if len < 16 {
            break;
        }
        n += 1;
        at += (len + 3) & !3;
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_is_framed_and_numbered() {
        let one = |net: &str, prefix, port, proto| Allow { net: net.parse().unwrap(), prefix, port, proto, set: None };
        let b = world_ruleset(&[one("198.51.100.10", 32, Some(8080), Proto::Tcp)], 7, &[]);
        // begin, table, 2 chains; output: lo, 2 nd, link-local multicast,
        // allow, established, IPv6 TCP reset, final; input: lo, 2 nd, allow, established,
        // final; end
        assert_eq!(count_msgs(&b), 19);
        assert_eq!(u16::from_ne_bytes([b[4], b[5]]), NFNL_MSG_BATCH_BEGIN);
        let any = world_ruleset(&[one("198.51.100.0", 24, Some(53), Proto::Any)], 7, &[]);
        assert_eq!(count_msgs(&any), 21, "a port for any protocol is a TCP rule and a UDP rule, each way");
        let v6 = world_ruleset(&[one("2001:db8::", 64, None, Proto::Any)], 7, &[]);
        assert_eq!(count_msgs(&v6), 19);
        // A name: two sets (IPv4, IPv6) and a rule per family each way; a
        // resolver on two addresses: a nat chain, a redirect per family and
        // transport, an accept per address.
        let name = Allow { set: Some(0), ..one("0.0.0.0", 0, Some(443), Proto::Tcp) };
        let dns: [IpAddr; 2] = ["127.0.0.1".parse().unwrap(), "::1".parse().unwrap()];
        assert_eq!(count_msgs(&world_ruleset(&[name], 7, &dns)), 19 + 2 + 2 + 1 + 4 + 2);
        assert_eq!(count_msgs(&delete_ruleset()), 3);
        assert_eq!(count_msgs(&set_add(0, &[(dns[0], 1000), (dns[1], 1000)])), 4);
    }

    #[test]
    fn masks() {
        assert_eq!(mask(0, 4), [0, 0, 0, 0]);
        assert_eq!(mask(20, 4), [255, 255, 0xf0, 0]);
        assert_eq!(mask(32, 4), [255; 4]);
        assert_eq!(mask(65, 16)[7..10], [255, 0x80, 0]);
    }
}
