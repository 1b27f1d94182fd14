//! A caller as the host knows it (uid, gid, supplementary groups), for the
//! daemon's callers that are not root: the filesystem checks made with its
//! identity (a project it could read, the directories a commit writes in)
//! and the owner of what a commit writes.
//!
//! The checks ask the kernel, not a copy of its rules: the calling thread
//! takes the caller's filesystem identity (`setfsuid`, `setfsgid` and
//! `setgroups`, all per-thread credentials of the kernel; the capabilities
//! that bypass file permissions leave the effective set with a non-zero
//! fsuid), asks `faccessat2(AT_EACCESS)`, and takes root's identity back.
//! ACLs, the sticky bit's rules and read-only mounts are the kernel's.
//! `cloched` makes these checks in single-threaded job processes.

use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// A caller's identity on the host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostUser {
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups (the primary one may be among them).
    #[serde(default)]
    pub groups: Vec<u32>,
}

/// Read and search (a directory the caller could list and enter).
pub const READ_DIR: i32 = libc::R_OK | libc::X_OK;
/// Write and search (a directory the caller could create entries in).
pub const WRITE_DIR: i32 = libc::W_OK | libc::X_OK;

impl HostUser {
    /// `uid:<uid>`, the actor the broker and the audit log name.
    pub fn actor(&self) -> String {
        format!("uid:{}", self.uid)
    }

    pub fn is_root(&self) -> bool {
        self.uid == 0
    }

    /// The user a world started for this caller runs as (`None` for root).
    pub fn world_user(&self) -> Option<cloche_world::spec::WorldUser> {
        (!self.is_root()).then(|| cloche_world::spec::WorldUser {
            uid: self.uid,
            gid: self.gid,
            groups: self.groups.clone(),
        })
    }

    /// Runs `f` with this user's filesystem identity on the calling thread,
    /// then restores the thread's own. Only ever call it where no other
    /// code runs on this thread meanwhile (a job process of `cloched`).
    pub fn with_identity<T>(&self, f: impl FnOnce() -> T) -> io::Result<T> {
        let saved = Saved::take()?;
        let guard = Restore(Some(saved));
        set_groups(&self.groups)?;
        // SAFETY: setfsgid/setfsuid take integers; the value they return
        // is the previous id, checked by asking again (an invalid id, -1,
        // changes nothing and returns the current one).
        unsafe {
            libc::setfsgid(self.gid);
            libc::setfsuid(self.uid);
            if libc::setfsgid(u32::MAX) as u32 != self.gid || libc::setfsuid(u32::MAX) as u32 != self.uid {
                return Err(io::Error::other(format!("cannot take the identity of uid {}", self.uid)));
            }
        }
        let out = f();
        drop(guard);
        Ok(out)
    }

    /// Whether this user may access `path` with `mode` (`READ_DIR`, ...):
    /// search permission on every directory on the way included.
    pub fn may(&self, path: &Path, mode: i32) -> io::Result<bool> {
        self.with_identity(|| access(None, path.as_os_str().as_bytes(), mode))?
    }

    /// Refuses `path` unless this user could read it (and enter it, for a
    /// directory): a project, a cwd, an exposure of a world started for it.
    /// A path that is missing and one it may not read get the same answer
    /// (root's view of the host is not told).
    pub fn check_readable(&self, what: &str, path: &Path) -> Result<()> {
        let r = self.with_identity(|| -> io::Result<bool> {
            let md = match std::fs::metadata(path) {
                Ok(m) => m,
                Err(e)
                    if matches!(e.raw_os_error(), Some(libc::EACCES | libc::ENOENT | libc::ENOTDIR | libc::ELOOP)) =>
                {
                    return Ok(false)
                }
                Err(e) => return Err(e),
            };
            access(None, path.as_os_str().as_bytes(), if md.is_dir() { READ_DIR } else { libc::R_OK })
        });
        match r {
            Ok(Ok(true)) => Ok(()),
            Ok(Ok(false)) => Err(Error::Forbidden(format!(
                "{what} {}: missing or not readable by uid {} (a world started for a caller is given only what \
                 it could read)",
                path.display(),
                self.uid
            ))),
            Ok(Err(e)) | Err(e) => Err(Error::Invalid(format!("{what} {}: {e}", path.display()))),
        }
    }
}

/// `faccessat2(dir or AT_FDCWD, path, mode, AT_EACCESS)` with the thread's
/// current (filesystem) identity: `Ok(false)` when refused.
pub fn access(dir: Option<BorrowedFd<'_>>, path: &[u8], mode: i32) -> io::Result<bool> {
    let path = if path.is_empty() { b".".as_slice() } else { path };
    let c = CString::new(path).map_err(|_| io::Error::other("a path with a NUL byte"))?;
    let fd = dir.map_or(libc::AT_FDCWD, |d| d.as_raw_fd());
    // SAFETY: a valid NUL-terminated path; integers otherwise. The raw call
    // (not glibc's faccessat, which may emulate AT_EACCESS with the
    // effective uid) lets the kernel check with the filesystem ids.
    let r = unsafe { libc::syscall(libc::SYS_faccessat2, fd, c.as_ptr(), mode, libc::AT_EACCESS) };
    if r == 0 {
        return Ok(true);
    }
    match io::Error::last_os_error() {
        e if matches!(e.raw_os_error(), Some(libc::EACCES | libc::EPERM | libc::EROFS)) => Ok(false),
        e => Err(e),
    }
}

/// The thread's credentials before [`HostUser::with_identity`].
struct Saved {
    fsuid: u32,
    fsgid: u32,
    groups: Vec<u32>,
}

impl Saved {
    fn take() -> io::Result<Saved> {
        // SAFETY: getgroups with a zero size returns the count; then fills
        // at most that many entries of a buffer that large.
        let groups = unsafe {
            let n = libc::getgroups(0, std::ptr::null_mut());
            if n < 0 {
                return Err(io::Error::last_os_error());
            }
            let mut g = vec![0u32; n as usize];
            let m = libc::getgroups(n, g.as_mut_ptr());
            if m < 0 {
                return Err(io::Error::last_os_error());
            }
            g.truncate(m as usize);
            g
        };
        // SAFETY: -1 is an invalid id: nothing changes, the current id returns.
        let (fsuid, fsgid) = unsafe { (libc::setfsuid(u32::MAX) as u32, libc::setfsgid(u32::MAX) as u32) };
        Ok(Saved { fsuid, fsgid, groups })
    }
}

/// Puts the saved identity back, also when the work panicked.
struct Restore(Option<Saved>);

impl Drop for Restore {
    fn drop(&mut self) {
        let Some(s) = self.0.take() else { return };
        // SAFETY: integers only. A root fsuid brings the file capabilities
        // of the permitted set back into the effective set.
        unsafe {
            libc::setfsuid(s.fsuid);
            libc::setfsgid(s.fsgid);
        }
        if set_groups(&s.groups).is_err() {
            // A thread left with a caller's groups must not go on.
            std::process::abort();
        }
    }
}

/// `setgroups(2)` of the calling thread only (glibc's wrapper would change
/// every thread of the process).
fn set_groups(groups: &[u32]) -> io::Result<()> {
    // SAFETY: the pointer and length describe `groups`.
    let r = unsafe { libc::syscall(libc::SYS_setgroups, groups.len(), groups.as_ptr()) };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_caller_reads_and_writes_only_what_it_may() {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("skipped: needs root to take another identity");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        use std::os::unix::fs::PermissionsExt;
        let open = dir.path().join("open");
        let closed = dir.path().join("closed");
        std::fs::create_dir(&open).unwrap();
        std::fs::create_dir(&closed).unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
        std::fs::set_permissions(&closed, std::fs::Permissions::from_mode(0o700)).unwrap();
        let u = HostUser { uid: 64_123, gid: 64_123, groups: vec![] };
        // A thread of its own: the identity is per thread.
        std::thread::spawn(move || {
            assert!(u.may(&open, WRITE_DIR).unwrap());
            assert!(!u.may(&closed, READ_DIR).unwrap());
            assert!(!u.may(&closed.join("x"), libc::R_OK).unwrap_or(false));
            assert!(u.check_readable("project", &closed).is_err());
            // The thread is root again afterwards.
            assert!(access(None, closed.as_os_str().as_bytes(), WRITE_DIR).unwrap());
        })
        .join()
        .unwrap();
    }
}
