//! cloche-world: the isolation engine.
//!
//! A world is built from a [`Spec`], cloned into new namespaces, set up by
//! its child side (`child::setup`: overlay, masks, pivot_root, capabilities,
//! seccomp), runs one command under a small init, and is torn down after its
//! fs_diff has been collected. [`run`] is the whole life cycle.

pub mod batch;
pub mod bpf_cache;
pub mod caps;
pub mod cgroup;
pub mod cgroup_delegated;
pub mod child;
pub mod continued;
pub mod crashed;
pub mod diff;
mod dirlist;
pub mod error;
pub mod exposure;
mod fdpass;
mod host;
pub mod init;
pub mod kept;
pub mod launch;
pub mod layers;
#[cfg(target_env = "musl")]
mod libc_compat;
mod mount_plan;
mod net_host;
mod net_scope;
pub mod netns_spare;
pub mod network;
pub mod plan;
mod plan_wire;
pub mod pool;
pub mod profile;
pub mod raw;
pub mod rename;
pub mod rootless;
pub mod seccomp;
pub mod spec;
pub mod state;
mod stdio;
mod sys;
mod sys_overlay;
mod sys_stdio;
pub mod teardown;
mod teardown_child;
mod upper;
pub mod userns;
pub mod view;
pub mod world;

pub use error::WorldError;
pub use spec::Spec;
pub use state::StateDir;
pub use teardown::Teardown;
pub use world::{continue_run, run, Outcome, Timings};
