//! A world's end off the run's path: what still references a world whose
//! processes are gone (its mount namespace, the fs_diff's clones of host
//! mounts, its cgroup, a world without root's directory, the host's idle
//! masquerade table), released by a child process after cloche answered.

use crate::error::WorldError;
use crate::raw;
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
}

impl Drop for Teardown {
    fn drop(&mut self) {
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
        Teardown { fds, idle, remove: None, cgroup: None, claim: None }
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
    /// else and exits at once; returns without waiting for it: a child
    /// sharing this process's memory (`teardown_child`: no copy of it, and
    /// this process's exit leaves it to the child), or a fork when a world
    /// without root's directory is to be deleted. Only for a
    /// process about to exit (the child is adopted and reaped when it does)
    /// that clones no other world. If no child can be made, the mounts are
    /// released here and now.
    pub fn in_background(mut self) {
        if self.fds.is_empty() && self.idle.is_none() && self.cgroup.is_none() {
            return;
        }
        if self.idle.is_none() {
            if let Some(dir) = self.remove.take() {
                return self.remove_in_background(dir);
            }
        }
        if self.remove.is_none() {
            // No directory to delete (a root world's end): a child that
            // shares our memory (`teardown_child`); the host's table, if
            // this world had a network, is a fork of that child's.
            let idle: Option<&'static crate::net_host::IdleRemoval> =
                self.idle.take().map(|r| &*Box::leak(Box::new(r)));
            let mut keep: Vec<i32> = self.fds.iter().chain(&self.claim).map(|f| f.as_raw_fd()).collect();
            keep.extend(idle.iter().flat_map(|r| r.fds()));
            keep.sort_unstable();
            keep.dedup();
            let cgroup = self.cgroup.take();
            let (dirs, parents) = cgroup.as_ref().map(|c| c.c_paths()).unwrap_or_default();
            if crate::teardown_child::spawn(crate::teardown_child::Job { keep, dirs, parents, idle }).is_err() {
                // No child: the cgroup goes now, the mounts at drop, the
                // table from a detached grandchild.
                if let Some(c) = cgroup {
                    let _ = c.now();
                }
                if let Some(r) = idle {
                    r.detach();
                }
            }
            return;
        }
        // Both a table and a directory (never together today: a world
        // without root has no scoped network): one fork does it all.
        let idle = self.idle.take();
        let cgroup = self.cgroup.take();
        let mut keep: Vec<i32> = self.fds.iter().chain(&self.claim).map(|f| f.as_raw_fd()).collect();
        keep.extend(idle.iter().flat_map(|r| r.fds()));
        keep.sort_unstable();
        keep.dedup();
        // The child removes the cgroup, then waits to remove the host's
        // table (its own descriptors kept, the mounts' closed and so
        // released first), or exits (releasing the mounts).
        let then = || {
            if let Some(c) = &cgroup {
                // SAFETY: only async-signal-safe calls (`Removal::in_child`).
                unsafe { c.in_child() };
            }
            if let Some(r) = &idle {
                // SAFETY: `run_and_exit` makes only async-signal-safe calls.
                unsafe { r.run_and_exit() };
            }
        };
        // Either way our copies go now; with a child holding its own, that
        // is not the last reference and costs nothing.
        if raw::fork_holding(&keep, Some(&then)).is_err() {
            if let Some(r) = idle {
                r.detach();
            }
            if let Some(c) = cgroup {
                let _ = c.now();
            }
        }
        drop(self);
    }

    /// A world without root's end: a child holding the world's mounts and
    /// its id releases the mounts, then removes `dir`. Only from cloche's
    /// run without root, which never starts a thread (so the child may
    /// allocate).
    fn remove_in_background(mut self, dir: PathBuf) {
        // Sorted, as `fork_holding` needs (the lock's dup, made last, has
        // the highest number, and an unsorted list closed it in the child).
        let mut keep: Vec<i32> = self.fds.iter().chain(&self.claim).map(|f| f.as_raw_fd()).collect();
        keep.sort_unstable();
        keep.dedup();
        let mounts: Vec<i32> = self.fds.iter().map(|f| f.as_raw_fd()).collect();
        let cgroup = self.cgroup.take();
        let then = || {
            // The cgroup, the mounts (the world's namespace, then the
            // lowers), then its files; the claim's lock goes at exit.
            if let Some(c) = &cgroup {
                // SAFETY: only async-signal-safe calls (`Removal::in_child`).
                unsafe { c.in_child() };
            }
            for fd in &mounts {
                // SAFETY: descriptors this child owns, closed once.
                unsafe { libc::close(*fd) };
            }
            let _ = crate::rootless::remove_tree(&dir);
        };
        if raw::fork_holding(&keep, Some(&then)).is_err() {
            self.remove = Some(dir);
            self.cgroup = cgroup;
        }
    }
}
