//! A spare network namespace: made at a world's end, for the next world.
//!
//! A world run as root gets a network namespace of its own with `lo` up
//! (and, with a scoped network, the veth the parent adds). Making one is
//! the kernel's per-namespace set-up: about 0.4 ms here back to back and
//! 0.7 ms after an idle moment, on the parent's way to its child's go (or,
//! scoped, the child's first step). So the end of such a world makes the
//! next one's ahead, in its teardown child, after cloche has answered
//! (`teardown_child::make_spare`): a new namespace, `lo` up, bind-mounted
//! on `<state>/netns/spare` (the state directory is root's alone), like
//! `ip netns add`. The next world as root claims it ([`claim`]): under the
//! directory's lock, it opens it, checks that it is a network namespace
//! and not its own (the host's), and marks it taken (the lock file's first
//! byte, `t`). Unmounting it there would cost the claim as much as it
//! saves (an unmount waits for an RCU grace period): the next maker
//! unmounts and unlinks a taken spare first. A spare is made for one world
//! and given to at most one; nothing of a world's ever reaches it (it is
//! made after that world's processes are all gone). None there (the first
//! run after a boot, two runs at once, a run that starts before the last
//! one's end made it): the namespace is made as before.
//!
//! What stays between runs: one namespace and its mount, as the disk pool
//! stays mounted (docs/security.md, *The spare network namespace*).

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

/// The spares' directory under the state directory.
pub(crate) const DIR: &str = "netns";
const SPARE: &str = "spare";
const LOCK: &str = ".lock";

/// `NS_GET_NSTYPE` (linux/nsfs.h): `_IO(0xb7, 0x3)`.
pub(crate) const NS_GET_NSTYPE: libc::c_ulong = 0xb703;

/// The paths a teardown child makes a spare with (NUL-terminated, made
/// before it is cloned: it allocates nothing).
#[derive(Debug)]
pub(crate) struct Paths {
    pub dir: CString,
    pub lock: CString,
    pub spare: CString,
}

impl Paths {
    pub(crate) fn new(state_root: &Path) -> io::Result<Paths> {
        let dir = state_root.join(DIR);
        let c = crate::sys::cpath;
        Ok(Paths { lock: c(&dir.join(LOCK))?, spare: c(&dir.join(SPARE))?, dir: c(&dir)? })
    }
}

/// The lock file's first byte: the spare is taken (or not usable), for the
/// next maker to remove.
pub(crate) const TAKEN: u8 = b't';
/// ... or there to take.
pub(crate) const FREE: u8 = b'f';

/// The spare network namespace under `state_root`, marked taken, if there
/// is one not taken yet: a network namespace that is not this process's
/// own. Anything else found there is marked taken too (the next maker
/// removes it); `None` then.
pub(crate) fn claim(state_root: &Path) -> Option<OwnedFd> {
    let p = Paths::new(state_root).ok()?;
    // SAFETY: open, flock, pread, pwrite and ioctl on paths and descriptors
    // we own, and a one-byte buffer of ours; the lock is released when its
    // descriptor closes.
    unsafe {
        let lock = libc::open(p.lock.as_ptr(), libc::O_RDWR | libc::O_CLOEXEC | libc::O_NOFOLLOW);
        if lock < 0 {
            return None; // no spare was ever made here
        }
        let lock = OwnedFd::from_raw_fd(lock);
        let mut state = [0u8; 1];
        if libc::flock(lock.as_raw_fd(), libc::LOCK_EX) != 0
            || libc::pread(lock.as_raw_fd(), state.as_mut_ptr().cast(), 1, 0) != 1
            || state[0] != FREE
        {
            return None;
        }
        let taken = || libc::pwrite(lock.as_raw_fd(), [TAKEN].as_ptr().cast(), 1, 0) == 1;
        let fd = libc::open(p.spare.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC | libc::O_NOFOLLOW);
        if fd < 0 {
            taken();
            return None;
        }
        let ns = OwnedFd::from_raw_fd(fd);
        let is_netns = libc::ioctl(ns.as_raw_fd(), NS_GET_NSTYPE as _) == libc::CLONE_NEWNET;
        // Given out only once it is marked taken.
        (taken() && is_netns && !is_own(&ns)).then_some(ns)
    }
}

/// Releases the spare under `state_root`, if any (`cloche worlds gc`):
/// under the directory's lock, its mount detached, its file removed and the
/// lock file marked taken, so that nothing of it stays on the host. The
/// next world as root makes its namespace itself, and its end a new spare.
pub fn release(state_root: &Path) {
    let Ok(p) = Paths::new(state_root) else { return };
    // SAFETY: open, flock, umount2, unlink and pwrite on paths and a
    // descriptor we own, and a one-byte buffer of ours; the lock is
    // released when its descriptor closes.
    unsafe {
        let lock = libc::open(p.lock.as_ptr(), libc::O_RDWR | libc::O_CLOEXEC | libc::O_NOFOLLOW);
        if lock < 0 {
            return; // no spare was ever made here
        }
        let lock = OwnedFd::from_raw_fd(lock);
        if libc::flock(lock.as_raw_fd(), libc::LOCK_EX) != 0 {
            return;
        }
        libc::pwrite(lock.as_raw_fd(), [TAKEN].as_ptr().cast(), 1, 0);
        libc::umount2(p.spare.as_ptr(), libc::MNT_DETACH);
        libc::unlink(p.spare.as_ptr());
    }
}

/// Whether `ns` is this process's own network namespace (the host's: a
/// world must never get it).
fn is_own(ns: &OwnedFd) -> bool {
    let id = |s: nix::sys::stat::FileStat| (s.st_dev, s.st_ino);
    let theirs = nix::sys::stat::fstat(ns).map(id);
    let ours = nix::sys::stat::stat("/proc/thread-self/ns/net").map(id);
    // Unknown counts as its own: never given out.
    !matches!((theirs, ours), (Ok(a), Ok(b)) if a != b)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The lock file's mark.
    fn mark(dir: &Path) -> Vec<u8> {
        std::fs::read(dir.join(LOCK)).unwrap()
    }

    /// A spare is given out once; a plain file there (a maker that stopped
    /// half-way) and the host's own namespace never are. Each is marked
    /// taken, for the next maker to remove. (Root: it mounts, as the test
    /// suite runs.)
    #[test]
    fn a_spare_is_claimed_once_and_never_the_hosts() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join(DIR);
        assert!(claim(root.path()).is_none(), "nothing made: nothing claimed");
        std::fs::create_dir(&dir).unwrap();
        let free = || std::fs::write(dir.join(LOCK), [FREE]).unwrap();
        // Half-made: a plain file.
        std::fs::write(dir.join(SPARE), b"").unwrap();
        free();
        assert!(claim(root.path()).is_none());
        assert_eq!(mark(&dir), [TAKEN]);
        std::fs::remove_file(dir.join(SPARE)).unwrap();
        let bind = |src: &str| {
            std::fs::write(dir.join(SPARE), b"").unwrap();
            let (s, t) = (CString::new(src).unwrap(), crate::sys::cpath(&dir.join(SPARE)).unwrap());
            // SAFETY: a bind mount of two paths we own.
            let rc = unsafe { libc::mount(s.as_ptr(), t.as_ptr(), std::ptr::null(), libc::MS_BIND, std::ptr::null()) };
            assert_eq!(rc, 0, "{}", io::Error::last_os_error());
        };
        let unbind = || {
            let t = crate::sys::cpath(&dir.join(SPARE)).unwrap();
            // SAFETY: unmounting a path we own.
            assert_eq!(unsafe { libc::umount2(t.as_ptr(), libc::MNT_DETACH) }, 0);
            std::fs::remove_file(dir.join(SPARE)).unwrap();
        };
        // The host's own namespace, bind-mounted there: never given out.
        bind("/proc/self/ns/net");
        free();
        assert!(claim(root.path()).is_none(), "the host's namespace was given out");
        assert_eq!(mark(&dir), [TAKEN]);
        unbind();
        // A namespace of its own: given out once.
        let other = crate::fdpass::new_netns().unwrap();
        bind(&format!("/proc/self/fd/{}", other.as_raw_fd()));
        drop(other);
        free();
        let got = claim(root.path()).expect("the spare");
        assert!(!is_own(&got));
        assert_eq!(mark(&dir), [TAKEN]);
        assert!(claim(root.path()).is_none(), "claimed twice");
        unbind();
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        assert!(!mounts.contains(root.path().to_str().unwrap()), "a mount left: {mounts}");
    }
}
