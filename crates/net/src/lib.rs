//! cloche-net: the network of a world, configured from outside it.
//!
//! So far: [`rtnl`], a small synchronous rtnetlink client (links, veth pairs
//! whose peer is created directly inside a world's network namespace,
//! addresses, routes) and [`Netns`], a handle on a network namespace that
//! opens netlink sockets inside it. The nftables ruleset, the resolver and
//! the scope accounting of the network issue build on these.

pub mod netns;
pub mod rtnl;

pub use netns::Netns;
pub use rtnl::{Rtnl, RtnlError};
