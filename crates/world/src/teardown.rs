//! A world's end off the run's path: what still references a world whose
//! processes are gone (its mount namespace, the fs_diff's clones of host
//! mounts, its cgroup, its disk upper's place in the pool, a world without
//! root's directory, the host's idle masquerade table), released by a
//! child process after cloche answered.

use crate::error::WorldError;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::PathBuf;

/// What still references a world whose processes are all gone: its mount
/// namespace (held by cloche once the world is cloned) and the clones of
/// host mounts its fs_diff was read against. Were the world's init the last
/// holder of the namespace, its exit would unmount every mount of the
/// world, and each overlay's teardown and each unmount waits for an RCU
/// grace period (0.5 to several ms in all): time between the command's exit
/// and cloche learning of it. Held here, the init exits at once; dropping
/// this releases the mounts (synchronously), and `in_background` hands them
/// to a child process that releases them while cloche exits (as
/// bubblewrap's parent exits before its sandbox's pid 1 unmounts).
#[derive(Debug, Default)]
pub struct Teardown {
    fds: Vec<OwnedFd>,
    /// The host's masquerade table, removed once no world uses it (a world
    /// with a network): by the child of `in_background`, else at drop.
    idle: Option<crate::net_host::IdleRemoval>,
    /// A world without root's directory (`worlds/<id>`, its upper in it),
    /// removed once its mounts are released: by the child of
    /// `in_background`, else at drop.
    remove: Option<PathBuf>,
    /// The world's cgroup directories: removed by the child of
    /// `in_background`, else at drop.
    cgroup: Option<crate::cgroup::Removal>,
    /// A dup of the world's claim lock while `remove` or `cgroup` waits:
    /// the id stays live (no sweep races the child, no world takes the id).
    claim: Option<OwnedFd>,
    /// Where the child of `in_background` makes the next world's network
    /// namespace (`netns_spare`), last; none is made at drop.
    spare: Option<crate::netns_spare::Paths>,
    /// A disk upper's move to the pool's trash: by the child of
    /// `in_background` (first), else at drop.
    trash: Option<crate::pool::ToTrash>,
}

impl Drop for Teardown {
    fn drop(&mut self) {
        if let Some(t) = self.trash.take() {
            t.now();
        }
        if let Some(r) = self.idle.take() {
            r.detach();
        }
        if let Some(c) = self.cgroup.take() {
            let _ = c.now();
        }
        if let Some(dir) = self.remove.take() {
            self.fds.clear();
            let _ = crate::rootless::remove_tree(&dir);
        }
    }
}

impl Teardown {
    /// The world's mounts (its mount namespace first) and the host's table,
    /// if this world was its last user.
    pub(crate) fn new(fds: Vec<OwnedFd>, idle: Option<crate::net_host::IdleRemoval>) -> Teardown {
        Teardown { fds, idle, remove: None, cgroup: None, claim: None, spare: None, trash: None }
    }

    /// Makes the next world's network namespace ahead, under
    /// `state_root` (after a world as root: `netns_spare`).
    pub(crate) fn make_spare_netns(&mut self, state_root: &std::path::Path) {
        self.spare = crate::netns_spare::Paths::new(state_root).ok();
    }

    /// Removes `dir` (a world without root's directory) with the world's
    /// mounts, its id held live until then (a dup of `claim`'s lock).
    pub(crate) fn discard(&mut self, dir: PathBuf, claim: &crate::state::Claim) {
        match self.hold_claim(claim) {
            true => self.remove = Some(dir),
            false => {
                let _ = crate::rootless::remove_tree(&dir);
            }
        }
    }

    /// Moves a disk upper to the pool's trash after cloche has answered
    /// (its id held live until then), or now when the id cannot be held.
    pub(crate) fn trash(&mut self, t: crate::pool::ToTrash, claim: &crate::state::Claim) {
        match self.hold_claim(claim) {
            true => self.trash = Some(t),
            false => t.now(),
        }
    }

    /// Removes the world's cgroup after cloche has answered (its id held
    /// live until then), or now when the id cannot be held.
    pub(crate) fn remove_cgroup(
        &mut self,
        cg: crate::cgroup::WorldCgroup,
        claim: &crate::state::Claim,
    ) -> Result<(), WorldError> {
        match self.hold_claim(claim) {
            true => self.cgroup = Some(cg.into_removal()),
            false => cg.remove()?,
        }
        Ok(())
    }

    /// Holds a dup of the claim's lock (once); false if it cannot be made.
    fn hold_claim(&mut self, claim: &crate::state::Claim) -> bool {
        if self.claim.is_none() {
            self.claim = claim.hold().ok();
        }
        self.claim.is_some()
    }

    /// Adds a descriptor to release with the world's mounts.
    pub(crate) fn hold(&mut self, fd: OwnedFd) {
        self.fds.push(fd);
    }

    /// Releases the world's mounts in a child process that holds nothing
    /// else and exits at once; returns without waiting for it. The child
    /// shares this process's memory (`teardown_child`: no copy of it, and
    /// this process's exit leaves it to the child). Only for a process
    /// about to exit (the child is adopted and reaped when it does) that
    /// clones no other world. If no child can be made, all of it is done
    /// here and now.
    pub fn in_background(mut self) {
        if self.fds.is_empty()
            && self.idle.is_none()
            && self.cgroup.is_none()
            && self.remove.is_none()
            && self.spare.is_none()
            && self.trash.is_none()
        {
            return;
        }
        // The host's table, if this world had a network: a fork of the
        // child's. Leaked to it, as the rest of its data.
        let idle: Option<&'static crate::net_host::IdleRemoval> = self.idle.take().map(|r| &*Box::leak(Box::new(r)));
        let trash = self.trash.as_ref();
        let mut keep: Vec<i32> =
            self.fds.iter().chain(&self.claim).chain(trash.map(|t| &t.pool)).map(|f| f.as_raw_fd()).collect();
        keep.extend(idle.iter().flat_map(|r| r.fds()));
        keep.sort_unstable();
        keep.dedup();
        let cgroup = self.cgroup.take();
        let (dirs, parents) = cgroup.as_ref().map(|c| c.c_paths()).unwrap_or_default();
        // A world without root's directory (`worlds/<id>` and its `fs`, the
        // mount point of its tmpfs store): removed after the world's mounts
        // are released (their descriptors closed first). Anything else in
        // it is the next sweep's (a world not kept has no `world.json`).
        let c = |p: &std::path::Path| crate::sys::cpath(p).ok();
        let remove: Vec<std::ffi::CString> =
            self.remove.iter().flat_map(|d| [c(&d.join("fs")), c(d)]).flatten().collect();
        let release = match remove.is_empty() {
            true => Vec::new(),
            false => self.fds.iter().map(|f| f.as_raw_fd()).collect(),
        };
        let spare = self.spare.take();
        let trash = trash.map(|t| (t.pool.as_raw_fd(), t.id.clone(), t.trash.clone()));
        let job = crate::teardown_child::Job { keep, dirs, parents, idle, release, remove, spare, trash };
        match crate::teardown_child::spawn(job) {
            // Our copies go with `self`: not the last references.
            Ok(_) => {
                self.remove = None;
                self.trash = None;
            }
            // No child: the cgroup goes now, the directory and the mounts
            // at drop, the table from a detached grandchild.
            Err(_) => {
                if let Some(c) = cgroup {
                    let _ = c.now();
                }
                if let Some(r) = idle {
                    r.detach();
                }
            }
        }
    }
}
