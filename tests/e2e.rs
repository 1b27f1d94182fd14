//! The end-to-end tests, one test binary: each file of `tests/` is a
//! module of it (`cargo test --test e2e run::` runs those of `run.rs`).
//! One binary instead of one a file: the 34 files took 48 s of the test
//! command's build on two cores, each crate compiling and linking the
//! harness's generic code again (docs/architecture.md, *The test command's
//! time*). `zz_leaks.rs` stays a binary of its own: it runs after this one.

mod common;

#[path = "agents.rs"]
mod agents;
#[path = "audit_cli.rs"]
mod audit_cli;
#[path = "batch.rs"]
mod batch;
#[path = "cli.rs"]
mod cli;
#[path = "cli_daemon.rs"]
mod cli_daemon;
#[path = "daemon.rs"]
mod daemon;
#[path = "daemon_crash.rs"]
mod daemon_crash;
#[path = "daemon_events.rs"]
mod daemon_events;
#[path = "daemon_load.rs"]
mod daemon_load;
#[path = "daemon_premade.rs"]
mod daemon_premade;
#[path = "disk.rs"]
mod disk;
#[path = "fsdiff.rs"]
mod fsdiff;
#[path = "home.rs"]
mod home;
#[path = "ingest.rs"]
mod ingest;
#[path = "isolation.rs"]
mod isolation;
#[path = "kept.rs"]
mod kept;
#[path = "kernel.rs"]
mod kernel;
#[path = "limits.rs"]
mod limits;
#[path = "mcp.rs"]
mod mcp;
#[path = "network.rs"]
mod network;
#[path = "policy_cli.rs"]
mod policy_cli;
#[path = "policy_exec.rs"]
mod policy_exec;
#[path = "projects.rs"]
mod projects;
#[path = "relro.rs"]
mod relro;
#[path = "resolver.rs"]
mod resolver;
#[path = "review.rs"]
mod review;
#[path = "review_large.rs"]
mod review_large;
#[path = "rootless.rs"]
mod rootless;
#[path = "rootless_limits.rs"]
mod rootless_limits;
#[path = "run.rs"]
mod run;
#[path = "session.rs"]
mod session;
#[path = "spare_netns.rs"]
mod spare_netns;
#[path = "stdio.rs"]
mod stdio;
#[path = "userns.rs"]
mod userns;
#[path = "web.rs"]
mod web;
