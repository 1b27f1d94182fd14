//! The host's side of scoped networks: one masquerade table for every
//! world, with a rule per address pool.

use super::rule::{family, mask, octets, Rule};
use super::*;

/// The host's side, made once for every world: table `inet cloche_nat`
/// that masquerades what leaves the world pools (`pools`: an IPv4 and an
/// IPv6 network with their prefixes) for any interface but the worlds' own
/// (`cl…`). Sent with `NLM_F_EXCL` on the table: if it exists the batch
/// fails with `EEXIST` and changes nothing, unless `replace` (the batch
/// then removes it first: one transaction). Each rule carries its pool's
/// [`pool_tag`], so a world whose policy names other pools adds its own
/// ([`host_nat_rules`]).
pub fn host_nat(pools: &[(IpAddr, u8)], replace: bool) -> Vec<u8> {
    const NF_INET_POST_ROUTING: u32 = 4;
    let table = HOST_TABLE;
    let mut msgs = Vec::new();
    if replace {
        msgs.push(Msg::new(nft(NFT_MSG_DELTABLE), 0).bytes(&nfgen(NFPROTO_INET)).str(NFTA_TABLE_NAME, table).finish());
    }
    msgs.extend([
        Msg::new(nft(NFT_MSG_NEWTABLE), NLM_F_CREATE | NLM_F_EXCL)
            .bytes(&nfgen(NFPROTO_INET))
            .str(NFTA_TABLE_NAME, table)
            .finish(),
        chain(table, "postrouting", ("nat", NF_INET_POST_ROUTING, 100), NF_ACCEPT),
    ]);
    msgs.extend(masquerade(pools));
    batch(msgs)
}

/// The masquerade rules of more pools, for the existing host table.
pub fn host_nat_rules(pools: &[(IpAddr, u8)]) -> Vec<u8> {
    batch(masquerade(pools))
}

/// What identifies a pool's masquerade rule (its user data): the network's
/// bytes and the prefix.
pub fn pool_tag(net: IpAddr, prefix: u8) -> Vec<u8> {
    let mut t = octets(net);
    t.push(prefix);
    t
}

fn masquerade(pools: &[(IpAddr, u8)]) -> Vec<Vec<u8>> {
    let mut msgs = Vec::new();
    for (net, prefix) in pools {
        let bytes = octets(*net);
        let m = mask(*prefix, bytes.len());
        let net_bytes: Vec<u8> = bytes.iter().zip(&m).map(|(b, m)| b & m).collect();
        msgs.push(
            Rule::at(HOST_TABLE, "postrouting", Some(pool_tag(*net, *prefix)))
                .family(family(*net))
                .addr(family(*net), false)
                .and(&m)
                .cmp(0, &net_bytes)
                .meta(META_OIFNAME)
                .cmp(1, b"cl")
                .expr("masq", |m| m)
                .finish(),
        );
    }
    msgs
}

/// The host's masquerade table (`inet` family).
pub const HOST_TABLE: &str = "cloche_nat";
