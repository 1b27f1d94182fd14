//! A world's firewall: one nftables table, sent over netlink as a single
//! batch (all or nothing) into the world's network namespace from outside.
//!
//! ```text
//! table inet cloche {
//!   chain output { type filter hook output priority 0; policy drop;
//!     oifname "lo" accept
//!     ct state established,related accept
//!     ip daddr NET [meta l4proto tcp|udp] [th dport PORT] counter accept   # one per allowed destination
//!     counter log group G reject with icmpx admin-prohibited }
//!   chain input { type filter hook input priority 0; policy drop;
//!     iifname "lo" accept
//!     ct state established,related accept
//!     counter drop }
//! }
//! ```
//! Everything not listed is refused in both directions, IPv6 included (no
//! v6 destination can be listed yet, so all v6 but loopback is refused).
//! Refusals answer at once (`reject`), so a connect fails fast instead of
//! waiting for a timeout, and are logged to NFLOG group `G`.

use crate::msg::Msg;
use std::io;
use std::net::Ipv4Addr;
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

/// The transport a destination is allowed for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proto {
    Tcp,
    Udp,
    /// Both TCP and UDP (and, without a port, any protocol).
    Any,
}

/// One allowed IPv4 destination: a network, and a port or every port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Allow {
    pub net: Ipv4Addr,
    pub prefix: u8,
    pub port: Option<u16>,
    pub proto: Proto,
    /// A name's addresses instead of `net`: set `n<index>` of the world's
    /// table, filled by the resolver as it answers ([`set_add`]).
    pub set: Option<u16>,
}

/// Expressions of one rule, each an `NFTA_LIST_ELEM`.
struct Rule(Msg);

impl Rule {
    fn new(chain: &str) -> Rule {
        Rule::tagged(chain, None)
    }

    /// A rule carrying `tag` in its user data (read back with its counter:
    /// [`crate::scope::counters`]).
    fn tagged(chain: &str, tag: Option<u32>) -> Rule {
        Rule::at(NFPROTO_INET, TABLE, chain, tag)
    }

    /// A rule of chain `chain` in table `table` of `family`.
    fn at(family: u8, table: &str, chain: &str, tag: Option<u32>) -> Rule {
        let mut m = Msg::new(nft(NFT_MSG_NEWRULE), NLM_F_CREATE | NLM_F_APPEND)
            .bytes(&nfgen(family))
            .str(NFTA_RULE_TABLE, table)
            .str(NFTA_RULE_CHAIN, chain);
        if let Some(t) = tag {
            m = m.attr(NFTA_RULE_USERDATA, &t.to_be_bytes());
        }
        Rule(m.begin(NFTA_RULE_EXPRESSIONS))
    }

    fn expr(self, name: &str, data: impl FnOnce(Msg) -> Msg) -> Rule {
        let m = self.0.begin(NFTA_LIST_ELEM).str(NFTA_EXPR_NAME, name).begin(NFTA_EXPR_DATA);
        Rule(data(m).end().end())
    }

    /// `meta KEY` into register 1.
    fn meta(self, key: u32) -> Rule {
        self.expr("meta", |m| m.be32(1, REG1).be32(2, key))
    }

    /// `payload BASE OFFSET LEN` into register 1.
    fn payload(self, base: u32, offset: u32, len: u32) -> Rule {
        self.expr("payload", |m| m.be32(1, REG1).be32(2, base).be32(3, offset).be32(4, len))
    }

    /// Register 1 compared with `value` (`op`: 0 eq, 1 neq).
    fn cmp(self, op: u32, value: &[u8]) -> Rule {
        self.expr("cmp", |m| m.be32(1, REG1).be32(2, op).begin(3).attr(NFTA_DATA_VALUE, value).end())
    }

    /// Register 1 = (register 1 & mask) ^ 0.
    fn and(self, mask: &[u8]) -> Rule {
        let zero = vec![0u8; mask.len()];
        self.expr("bitwise", |m| {
            m.be32(1, REG1)
                .be32(2, REG1)
                .be32(3, mask.len() as u32)
                .begin(4)
                .attr(NFTA_DATA_VALUE, mask)
                .end()
                .begin(5)
                .attr(NFTA_DATA_VALUE, &zero)
                .end()
        })
    }

    /// Register 1 looked up in set `name`.
    fn lookup(self, name: &str) -> Rule {
        self.expr("lookup", |m| m.str(1, name).be32(2, REG1))
    }

    /// `dnat ip to ADDR:PORT` (inet table, IPv4 packets).
    fn dnat(self, addr: Ipv4Addr, port: u16) -> Rule {
        let imm = |reg: u32, v: &[u8]| {
            let v = v.to_vec();
            move |m: Msg| m.be32(1, reg).begin(2).attr(NFTA_DATA_VALUE, &v).end()
        };
        self.expr("immediate", imm(1, &addr.octets()))
            .expr("immediate", imm(2, &port.to_be_bytes()))
            .expr("nat", |m| m.be32(1, 1).be32(2, u32::from(NFPROTO_IPV4)).be32(3, 1).be32(5, 2))
    }

    fn counter(self) -> Rule {
        self.expr("counter", |m| m)
    }

    fn log_group(self, group: u16) -> Rule {
        self.expr("log", |m| m.attr(1, &group.to_be_bytes()))
    }

    /// `ct state established,related`.
    fn established(self) -> Rule {
        // ct state bits: established 2, related 4
        self.expr("ct", |m| m.be32(1, REG1).be32(2, 0)).and(&6u32.to_ne_bytes()).cmp(1, &0u32.to_ne_bytes())
    }

    /// `meta oifname|iifname NAME` (16 bytes, NUL padded).
    fn ifname(self, key: u32, name: &str) -> Rule {
        let mut v = [0u8; 16];
        v[..name.len()].copy_from_slice(name.as_bytes());
        self.meta(key).cmp(0, &v)
    }

    fn verdict(self, code: u32) -> Rule {
        self.expr("immediate", |m| {
            m.be32(1, 0).begin(2).begin(NFTA_DATA_VERDICT).be32(NFTA_VERDICT_CODE, code).end().end()
        })
    }

    /// `reject with icmpx admin-prohibited`.
    fn reject(self) -> Rule {
        self.expr("reject", |m| m.be32(1, 2).attr(2, &[3]))
    }

    fn finish(self) -> Vec<u8> {
        self.0.end().finish()
    }
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
/// With `dns` (the world's gateway, where cloche's resolver listens), every
/// DNS query the world sends, to whatever server, is redirected there, and
/// the allowed names' addresses live in sets the resolver fills.
pub fn world_ruleset(allow: &[Allow], log_group: u16, dns: Option<Ipv4Addr>) -> Vec<u8> {
    let mut msgs: Vec<Vec<u8>> = Vec::new();
    msgs.push(
        Msg::new(nft(NFT_MSG_NEWTABLE), NLM_F_CREATE).bytes(&nfgen(NFPROTO_INET)).str(NFTA_TABLE_NAME, TABLE).finish(),
    );
    for k in allow.iter().filter_map(|a| a.set) {
        msgs.push(
            Msg::new(nft(NFT_MSG_NEWSET), NLM_F_CREATE)
                .bytes(&nfgen(NFPROTO_INET))
                .str(1, TABLE) // NFTA_SET_TABLE
                .str(2, &format!("n{k}")) // NFTA_SET_NAME
                .be32(3, NFT_SET_TIMEOUT) // NFTA_SET_FLAGS
                .be32(4, 7) // NFTA_SET_KEY_TYPE: ipv4_addr
                .be32(5, 4) // NFTA_SET_KEY_LEN
                .be32(10, u32::from(k) + 1) // NFTA_SET_ID
                .finish(),
        );
    }
    if let Some(gw) = dns {
        msgs.push(
            Msg::new(nft(NFT_MSG_NEWCHAIN), NLM_F_CREATE)
                .bytes(&nfgen(NFPROTO_INET))
                .str(NFTA_CHAIN_TABLE, TABLE)
                .str(NFTA_CHAIN_NAME, "dns")
                .begin(NFTA_CHAIN_HOOK)
                .be32(NFTA_HOOK_HOOKNUM, NF_INET_LOCAL_OUT)
                .be32(NFTA_HOOK_PRIORITY, (-100i32) as u32)
                .end()
                .be32(NFTA_CHAIN_POLICY, NF_ACCEPT)
                .str(NFTA_CHAIN_TYPE, "nat")
                .finish(),
        );
        for p in [libc::IPPROTO_UDP as u8, libc::IPPROTO_TCP as u8] {
            let r = Rule::new("dns").meta(META_NFPROTO).cmp(0, &[NFPROTO_IPV4]).meta(META_L4PROTO).cmp(0, &[p]);
            msgs.push(r.payload(2, 2, 2).cmp(0, &53u16.to_be_bytes()).dnat(gw, 53).finish());
        }
    }
    for (name, hook) in [("output", NF_INET_LOCAL_OUT), ("input", NF_INET_LOCAL_IN)] {
        msgs.push(
            Msg::new(nft(NFT_MSG_NEWCHAIN), NLM_F_CREATE)
                .bytes(&nfgen(NFPROTO_INET))
                .str(NFTA_CHAIN_TABLE, TABLE)
                .str(NFTA_CHAIN_NAME, name)
                .begin(NFTA_CHAIN_HOOK)
                .be32(NFTA_HOOK_HOOKNUM, hook)
                .be32(NFTA_HOOK_PRIORITY, 0)
                .end()
                .be32(NFTA_CHAIN_POLICY, NF_DROP)
                .str(NFTA_CHAIN_TYPE, "filter")
                .finish(),
        );
    }
    // The allow rules come before `established` so that their counters see
    // every packet of a flow, both ways (tagged alike, summed on read).
    msgs.push(Rule::new("output").ifname(META_OIFNAME, "lo").verdict(NF_ACCEPT).finish());
    for (i, a) in allow.iter().enumerate() {
        msgs.extend(allow_rules(a, i as u32, Dir::Out));
    }
    if let Some(gw) = dns {
        // Queries to cloche's resolver (after the redirect above).
        let r = Rule::new("output").meta(META_NFPROTO).cmp(0, &[NFPROTO_IPV4]).payload(1, 16, 4);
        msgs.push(r.cmp(0, &gw.octets()).payload(2, 2, 2).cmp(0, &53u16.to_be_bytes()).verdict(NF_ACCEPT).finish());
    }
    msgs.push(Rule::new("output").established().verdict(NF_ACCEPT).finish());
    msgs.push(Rule::new("output").counter().log_group(log_group).reject().finish());
    msgs.push(Rule::new("input").ifname(META_IIFNAME, "lo").verdict(NF_ACCEPT).finish());
    for (i, a) in allow.iter().enumerate() {
        msgs.extend(allow_rules(a, i as u32, Dir::In));
    }
    msgs.push(Rule::new("input").established().verdict(NF_ACCEPT).finish());
    msgs.push(Rule::new("input").counter().verdict(NF_DROP).finish());
    batch(msgs)
}

/// The accept rules of one allowed destination: one per transport (a port
/// with `Proto::Any` means TCP and UDP, which carry it at offset 2).
/// Which way an allow rule looks: out, at the destination; in, at the
/// source of answers (only on established flows: never a new one inbound).
#[derive(Clone, Copy, PartialEq)]
enum Dir {
    Out,
    In,
}

fn allow_rules(a: &Allow, tag: u32, dir: Dir) -> Vec<Vec<u8>> {
    let (tcp, udp) = (libc::IPPROTO_TCP as u8, libc::IPPROTO_UDP as u8);
    let mask = if a.prefix == 0 { 0 } else { u32::MAX << (32 - u32::from(a.prefix.min(32))) };
    let net = u32::from(a.net) & mask;
    let protos = match (a.proto, a.port) {
        (Proto::Tcp, _) => vec![Some(tcp)],
        (Proto::Udp, _) => vec![Some(udp)],
        (Proto::Any, Some(_)) => vec![Some(tcp), Some(udp)],
        (Proto::Any, None) => vec![None],
    };
    protos
        .into_iter()
        .map(|proto| {
            // ip daddr / th dport going out; ip saddr / th sport coming in.
            let (chain, addr_at, port_at) = if dir == Dir::Out { ("output", 16, 2) } else { ("input", 12, 0) };
            let mut r = Rule::tagged(chain, Some(tag));
            if dir == Dir::In {
                r = r.established();
            }
            r = r.meta(META_NFPROTO).cmp(0, &[NFPROTO_IPV4]).payload(1, addr_at, 4);
            if let Some(k) = a.set {
                r = r.lookup(&format!("n{k}"));
            } else {
                if mask != u32::MAX {
                    r = r.and(&mask.to_be_bytes());
                }
                r = r.cmp(0, &net.to_be_bytes());
            }
            if let Some(p) = proto {
                r = r.meta(META_L4PROTO).cmp(0, &[p]);
            }
            if let Some(port) = a.port {
                r = r.payload(2, port_at, 2).cmp(0, &port.to_be_bytes());
            }
            r.counter().verdict(NF_ACCEPT).finish()
        })
        .collect()
}

/// The host's side, made once for every world: table `ip cloche_nat` that
/// masquerades what leaves the world pool `pool/prefix` for any interface
/// but the worlds' own (`cl…`). Sent with `NLM_F_EXCL` on the table: if it
/// exists the batch fails with `EEXIST` and changes nothing.
pub fn host_nat(pool: Ipv4Addr, prefix: u8) -> Vec<u8> {
    const NFPROTO_IPV4_TABLE: u8 = 2;
    const NF_INET_POST_ROUTING: u32 = 4;
    let table = "cloche_nat";
    let mask = if prefix == 0 { 0 } else { u32::MAX << (32 - u32::from(prefix.min(32))) };
    let net = u32::from(pool) & mask;
    let msgs = vec![
        Msg::new(nft(NFT_MSG_NEWTABLE), NLM_F_CREATE | NLM_F_EXCL)
            .bytes(&nfgen(NFPROTO_IPV4_TABLE))
            .str(NFTA_TABLE_NAME, table)
            .finish(),
        Msg::new(nft(NFT_MSG_NEWCHAIN), NLM_F_CREATE)
            .bytes(&nfgen(NFPROTO_IPV4_TABLE))
            .str(NFTA_CHAIN_TABLE, table)
            .str(NFTA_CHAIN_NAME, "postrouting")
            .begin(NFTA_CHAIN_HOOK)
            .be32(NFTA_HOOK_HOOKNUM, NF_INET_POST_ROUTING)
            .be32(NFTA_HOOK_PRIORITY, 100)
            .end()
            .be32(NFTA_CHAIN_POLICY, NF_ACCEPT)
            .str(NFTA_CHAIN_TYPE, "nat")
            .finish(),
        Rule::at(NFPROTO_IPV4_TABLE, table, "postrouting", None)
            .payload(1, 12, 4)
            .and(&mask.to_be_bytes())
            .cmp(0, &net.to_be_bytes())
            .meta(META_OIFNAME)
            .cmp(1, b"cl")
            .expr("masq", |m| m)
            .finish(),
    ];
    batch(msgs)
}

/// Adds `addrs` to set `n<set>` of the world's table, each for `ttl_ms`
/// (elements already there keep their own timeout).
pub fn set_add(set: u16, addrs: &[(Ipv4Addr, u64)]) -> Vec<u8> {
    let mut m = Msg::new(nft(NFT_MSG_NEWSETELEM), NLM_F_CREATE)
        .bytes(&nfgen(NFPROTO_INET))
        .str(1, TABLE) // NFTA_SET_ELEM_LIST_TABLE
        .str(2, &format!("n{set}")) // NFTA_SET_ELEM_LIST_SET
        .begin(3); // NFTA_SET_ELEM_LIST_ELEMENTS
    for (ip, ttl_ms) in addrs {
        m = m
            .begin(NFTA_LIST_ELEM)
            .begin(1) // NFTA_SET_ELEM_KEY
            .attr(NFTA_DATA_VALUE, &ip.octets())
            .end()
            .attr(4, &(*ttl_ms).max(1000).to_be_bytes()) // NFTA_SET_ELEM_TIMEOUT (ms)
            .end();
    }
    batch(vec![m.end().finish()])
}

/// True if table `name` of IPv4 (`family` 2) or inet (1) exists: one plain
/// get, no transaction (a batch that fails costs the kernel a grace
/// period, several milliseconds in the init namespace).
pub fn table_exists(sock: &OwnedFd, family: u8, name: &str) -> io::Result<bool> {
    const NFT_MSG_GETTABLE: u16 = 1;
    let req = Msg::new(nft(NFT_MSG_GETTABLE), 0).bytes(&nfgen(family)).str(NFTA_TABLE_NAME, name).finish();
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
        let b = world_ruleset(
            &[Allow {
                net: Ipv4Addr::new(198, 51, 100, 10),
                prefix: 32,
                port: Some(8080),
                proto: Proto::Tcp,
                set: None,
            }],
            7,
            None,
        );
        // begin, table, 2 chains, output: lo, allow, established, final;
        // input: lo, allow, established, final; end
        assert_eq!(count_msgs(&b), 13);
        assert_eq!(u16::from_ne_bytes([b[4], b[5]]), NFNL_MSG_BATCH_BEGIN);
        let any = world_ruleset(
            &[Allow { net: Ipv4Addr::new(198, 51, 100, 0), prefix: 24, port: Some(53), proto: Proto::Any, set: None }],
            7,
            None,
        );
        assert_eq!(count_msgs(&any), 15, "a port for any protocol is a TCP rule and a UDP rule, each way");
        assert_eq!(count_msgs(&delete_ruleset()), 3);
    }
}
