//! cloche-net: the network of a world, configured from outside it.
//!
//! [`rtnl`], a small synchronous rtnetlink client (links, veth pairs whose
//! peer is created directly inside a world's network namespace, IPv4 and
//! IPv6 addresses, routes); [`nft`], a world's nftables ruleset (default
//! deny both ways, listed IPv4 and IPv6 destinations and ports allowed with
//! counters, refusals answered at once and logged to an NFLOG group) sent as
//! one netlink batch, and the host's masquerade table; [`scope`], counters
//! and NFLOG read back; [`dns`], the resolver that answers only allowed
//! names and pins the addresses of their answers that its judge lets
//! through; and [`Netns`], a handle on a network
//! namespace that opens sockets inside it. The wiring into worlds (address
//! pools, host forwarding, teardown) is `cloche_world::network`.

pub mod dns;
mod msg;
pub mod netns;
pub mod nft;
pub mod rtnl;
pub mod scope;

pub use netns::{Inside, Netns};
pub use rtnl::{Rtnl, RtnlError};
