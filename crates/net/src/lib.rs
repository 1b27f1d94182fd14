//! cloche-net: the network of a world, configured from outside it.
//!
//! So far: [`rtnl`], a small synchronous rtnetlink client (links, veth pairs
//! whose peer is created directly inside a world's network namespace,
//! addresses, routes); [`nft`], a world's nftables ruleset (default deny both
//! ways, listed IPv4 destinations and ports allowed with counters, refusals
//! rejected at once and logged to an NFLOG group) sent as one netlink batch;
//! and [`Netns`], a handle on a network namespace that opens sockets inside
//! it. Not yet: wiring into worlds (addresses pool, host forwarding), the
//! resolver, counters and NFLOG read-back, IPv6 destinations.

pub mod dns;
mod msg;
pub mod netns;
pub mod nft;
pub mod rtnl;
pub mod scope;

pub use netns::Netns;
pub use rtnl::{Rtnl, RtnlError};
