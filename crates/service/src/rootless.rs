//! `cloche run` by a user who is not root, without a daemon: a world
//! without root (`cloche_world::rootless`, docs/security.md, *Worlds
//! without root*). What it cannot do is refused before anything is made,
//! each with one line.

use crate::error::{Error, Result};
use crate::net::NetArg;
use crate::run::RunRequest;
use cloche_world::cgroup::Layout;
use cloche_world::cgroup_delegated::{delegated_cgroup, no_cgroup_line};
use cloche_world::rootless::Caller;
use cloche_world::spec::UpperStore;
use cloche_world::Spec;

/// The line a scoped network is refused with: its host side (a veth,
/// nftables, the world's resolver) needs root.
pub const NET_NEEDS_DAEMON: &str = "a scoped network (--net allow=...) needs root on the host side (a veth pair, \
     nftables): without root, run it through the daemon, cloched (started by root; see README), or use --net none";

/// Refuses what a world without root cannot have, before the state
/// directory is made. With limits: the cgroup delegated to the caller, for
/// [`apply`] to hand to the engine (which then need not look again).
pub fn check_request(req: &RunRequest) -> Result<Option<Layout>> {
    if matches!(req.net, Some(NetArg::Allow { .. })) {
        return Err(Error::Invalid(NET_NEEDS_DAEMON.into()));
    }
    if req.world.is_some() {
        return Err(Error::Invalid(
            "--world: continuing a kept world needs root or the daemon (cloched); a world without root is kept \
             for `cloche diff` and `cloche worlds discard`"
                .into(),
        ));
    }
    if req.upper == Some(UpperStore::Tmpfs) {
        return Err(Error::Invalid(
            "--upper tmpfs: a world without root keeps its writes in your state directory (its user cannot mount \
             a tmpfs the host can read back)"
                .into(),
        ));
    }
    if req.no_limits {
        return Ok(None);
    }
    delegated_cgroup().map(Some).map_err(|why| Error::Invalid(no_cgroup_line(&why)))
}

/// Makes `spec` a world without root for `caller`: no range of ids of
/// cloche's (the caller's namespace maps only the caller), no scoped
/// network (the policy's default included), limits only in a delegated
/// cgroup unless `no_limits` (said on stderr: an explicit relaxation).
/// Returns the line that says the relaxation, if any.
pub fn apply(spec: &mut Spec, caller: Caller, no_limits: bool, delegated: Option<Layout>) -> Result<Option<String>> {
    if spec.net.is_some() {
        return Err(Error::Invalid(format!("the policy's [network] allows destinations: {NET_NEEDS_DAEMON}")));
    }
    spec.userns = None;
    spec.user = None;
    spec.upper = UpperStore::Disk;
    spec.rootless = Some(caller);
    spec.no_limits = no_limits;
    spec.delegated = delegated;
    if !no_limits {
        return Ok(None);
    }
    // The explicit flag wins over the policy's `layers.require = ["cgroup"]`
    // (the built-in policy's): said, and in the report (`limits.none`).
    spec.require.retain(|l| l != "cgroup");
    tracing::warn!(uid = caller.uid, "world without root and without limits (--no-limits)");
    Ok(Some("cloche: --no-limits: this world runs without memory, process or CPU limits".into()))
}
