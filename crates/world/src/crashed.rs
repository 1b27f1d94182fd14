//! What runs that died (`kill -9`, a crashed daemon, a power cut) left on
//! the host, settled at once rather than by the next world's start.
//!
//! A run's liveness is its lock on live.lock (`state.rs`), which the kernel
//! drops however the run's process dies. For every world whose lock is
//! free: whatever still runs in its cgroups is killed and the cgroups
//! removed (a world's init dies with its runner through
//! `PR_SET_PDEATHSIG` only while its credentials are unchanged: a world
//! that runs as a caller's uid has lost it, so the cgroup is what
//! reliably holds every process of a world); its directory is kept as
//! `interrupted` or removed, as its policy's `keep_interrupted` said; and
//! the host's masquerade table goes if no live world has a network. Its
//! mounts, network namespace and veth need nothing: they live in the
//! world's own namespaces, which end with its last process.

use crate::cgroup::{self, Layout};
use crate::state::StateDir;

/// What [`sweep`] settled.
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Swept {
    /// Worlds whose cgroups were removed (and their processes killed).
    pub cgroups: Vec<String>,
    /// Worlds kept for review as `interrupted`.
    pub kept: Vec<String>,
    /// World directories removed.
    pub removed: Vec<String>,
    /// The host's masquerade table was removed (no live world had a network).
    pub nat_table: bool,
}

impl Swept {
    pub fn is_empty(&self) -> bool {
        self.cgroups.is_empty() && self.kept.is_empty() && self.removed.is_empty() && !self.nat_table
    }
}

/// Settles every world of `state` (and every cgroup of this machine's
/// worlds) whose run is gone. Safe beside live runs and other sweeps.
/// (A world's start sweeps too, the network's part in the background:
/// `launch.rs`.)
pub fn sweep(state: &StateDir) -> Swept {
    // Processes first: a world's directory is settled once nothing writes in it.
    let cgroups = cgroup::sweep(&Layout::detect(), |id| state.is_live(id));
    let settled = state.settle_dead();
    let nat_table = crate::net_host::remove_now_if_idle();
    Swept { cgroups, kept: settled.kept, removed: settled.removed, nat_table }
}
