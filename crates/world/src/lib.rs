//! cloche-world: the isolation engine.
//!
//! A [`World`] is built from a [`Spec`], spawned (namespaces, overlay, masks,
//! cgroup, capabilities, seccomp), runs one command under a small init, and is
//! torn down after its fs_diff has been collected.

pub mod diff;
pub mod seccomp;
