//! The builder of one nftables rule: its expressions, each an
//! `NFTA_LIST_ELEM` of netlink attributes, and the address helpers the
//! rulesets share.

use super::*;

/// Expressions of one rule, each an `NFTA_LIST_ELEM`.
pub(super) struct Rule(pub(super) Msg);

impl Rule {
    pub(super) fn new(chain: &str) -> Rule {
        Rule::tagged(chain, None)
    }

    /// A rule carrying `tag` in its user data (read back with its counter:
    /// [`crate::scope::counters`]).
    pub(super) fn tagged(chain: &str, tag: Option<u32>) -> Rule {
        Rule::at(TABLE, chain, tag.map(|t| t.to_be_bytes().to_vec()))
    }

    /// A rule of chain `chain` in inet table `table`, with `tag` as its
    /// user data.
    pub(super) fn at(table: &str, chain: &str, tag: Option<Vec<u8>>) -> Rule {
        let mut m = Msg::new(nft(NFT_MSG_NEWRULE), NLM_F_CREATE | NLM_F_APPEND)
            .bytes(&nfgen(NFPROTO_INET))
            .str(NFTA_RULE_TABLE, table)
            .str(NFTA_RULE_CHAIN, chain);
        if let Some(t) = tag {
            m = m.attr(NFTA_RULE_USERDATA, &t);
        }
        Rule(m.begin(NFTA_RULE_EXPRESSIONS))
    }

    pub(super) fn expr(self, name: &str, data: impl FnOnce(Msg) -> Msg) -> Rule {
        let m = self.0.begin(NFTA_LIST_ELEM).str(NFTA_EXPR_NAME, name).begin(NFTA_EXPR_DATA);
        Rule(data(m).end().end())
    }

    /// `meta KEY` into register 1.
    pub(super) fn meta(self, key: u32) -> Rule {
        self.expr("meta", |m| m.be32(1, REG1).be32(2, key))
    }

    /// `payload BASE OFFSET LEN` into register 1.
    pub(super) fn payload(self, base: u32, offset: u32, len: u32) -> Rule {
        self.expr("payload", |m| m.be32(1, REG1).be32(2, base).be32(3, offset).be32(4, len))
    }

    /// Register 1 compared with `value` (`op`: 0 eq, 1 neq).
    pub(super) fn cmp(self, op: u32, value: &[u8]) -> Rule {
        self.expr("cmp", |m| m.be32(1, REG1).be32(2, op).begin(3).attr(NFTA_DATA_VALUE, value).end())
    }

    /// Register 1 = (register 1 & mask) ^ 0.
    pub(super) fn and(self, mask: &[u8]) -> Rule {
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
    pub(super) fn lookup(self, name: &str) -> Rule {
        self.expr("lookup", |m| m.str(1, name).be32(2, REG1))
    }

    /// `dnat ip|ip6 to ADDR:PORT` (inet table, packets of ADDR's family).
    pub(super) fn dnat(self, addr: IpAddr, port: u16) -> Rule {
        let imm = |reg: u32, v: &[u8]| {
            let v = v.to_vec();
            move |m: Msg| m.be32(1, reg).begin(2).attr(NFTA_DATA_VALUE, &v).end()
        };
        let family = u32::from(family(addr));
        self.expr("immediate", imm(1, &octets(addr)))
            .expr("immediate", imm(2, &port.to_be_bytes()))
            .expr("nat", |m| m.be32(1, 1).be32(2, family).be32(3, 1).be32(5, 2))
    }

    /// `meta nfproto ipv4|ipv6`.
    pub(super) fn family(self, nfproto: u8) -> Rule {
        self.meta(META_NFPROTO).cmp(0, &[nfproto])
    }

    /// The packet's destination (`out`) or source address, of `nfproto`'s
    /// family, into register 1.
    pub(super) fn addr(self, nfproto: u8, out: bool) -> Rule {
        match (nfproto, out) {
            (NFPROTO_IPV4, true) => self.payload(1, 16, 4),
            (NFPROTO_IPV4, false) => self.payload(1, 12, 4),
            (_, true) => self.payload(1, 24, 16),
            (_, false) => self.payload(1, 8, 16),
        }
    }

    /// ICMPv6 of type `kind` (neighbour discovery and such).
    pub(super) fn icmpv6(self, kind: u8) -> Rule {
        self.family(NFPROTO_IPV6).meta(META_L4PROTO).cmp(0, &[IPPROTO_ICMPV6]).payload(2, 0, 1).cmp(0, &[kind])
    }

    pub(super) fn counter(self) -> Rule {
        self.expr("counter", |m| m)
    }

    pub(super) fn log_group(self, group: u16) -> Rule {
        self.expr("log", |m| m.attr(1, &group.to_be_bytes()))
    }

    /// `ct state established,related`.
    pub(super) fn established(self) -> Rule {
        // ct state bits: established 2, related 4
        self.expr("ct", |m| m.be32(1, REG1).be32(2, 0)).and(&6u32.to_ne_bytes()).cmp(1, &0u32.to_ne_bytes())
    }

    /// `meta oifname|iifname NAME` (16 bytes, NUL padded).
    pub(super) fn ifname(self, key: u32, name: &str) -> Rule {
        let mut v = [0u8; 16];
        v[..name.len()].copy_from_slice(name.as_bytes());
        self.meta(key).cmp(0, &v)
    }

    pub(super) fn verdict(self, code: u32) -> Rule {
        self.expr("immediate", |m| {
            m.be32(1, 0).begin(2).begin(NFTA_DATA_VERDICT).be32(NFTA_VERDICT_CODE, code).end().end()
        })
    }

    /// `reject with icmpx admin-prohibited`.
    pub(super) fn reject(self) -> Rule {
        self.expr("reject", |m| m.be32(1, 2).attr(2, &[3]))
    }

    /// `reject with tcp reset`.
    pub(super) fn reset(self) -> Rule {
        self.expr("reject", |m| m.be32(1, 1))
    }

    pub(super) fn finish(self) -> Vec<u8> {
        self.0.end().finish()
    }
}

pub(super) const IPPROTO_ICMPV6: u8 = 58;

/// The netfilter family of an address.
pub(super) fn family(a: IpAddr) -> u8 {
    if a.is_ipv4() {
        NFPROTO_IPV4
    } else {
        NFPROTO_IPV6
    }
}

pub(super) use crate::msg::octets;

/// The first `prefix` bits of `len` bytes set.
pub(super) fn mask(prefix: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| {
            let bits = usize::from(prefix).saturating_sub(i * 8).min(8);
            if bits == 0 {
                0
            } else {
                0xffu8 << (8 - bits)
            }
        })
        .collect()
}
