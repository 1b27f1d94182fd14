//! `cloche-mcp`: cloche's tools for agents over the Model Context Protocol
//! (stdio), a thin client of `cloched` (docs/mcp.md).
//!
//! - [`client`]: the daemon's HTTP API over its Unix socket;
//! - [`private`]: a daemon of the session's own when none answers (root);
//! - [`server`]: the tools, resources and instructions ([`run`],
//!   [`batch`], [`review`]);
//! - [`summary`]: what a model reads (capped output, diff summaries).

pub mod batch;
pub mod client;
pub mod private;
pub mod review;
pub mod run;
pub mod server;
pub mod summary;
