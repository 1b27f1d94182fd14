//! Removing what a world left in its own store between its runs: the
//! overlays' work directories (`work/work` holds overlayfs' `volatile`
//! marker, which refuses a second mount of the same upper; `work/index`
//! names the upper it was made for, which a fork's copy is not) and the
//! scratch directories (`/tmp`, `/var/tmp`, `/run`: fresh in every run).
//!
//! Every step is relative to an open directory, never follows a symlink
//! and never leaves the store's filesystem; a tree deeper than
//! [`MAX_DEPTH`] is refused rather than walked (each level holds a
//! descriptor). The review crate has a remover for the host's trees; this
//! one works on a world's store, which the world crate owns.

use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag};
use nix::sys::stat::{fstatat, Mode, SFlag};
use nix::unistd::UnlinkatFlags;
use std::ffi::{OsStr, OsString};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;

/// The deepest tree removed.
pub const MAX_DEPTH: usize = 256;

fn open_dir(dir: BorrowedFd<'_>, name: &OsStr) -> nix::Result<OwnedFd> {
    let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    nix::fcntl::openat(dir, name, flags, Mode::empty())
}

/// The entry `name` of `dir`: `Some(is a directory)`, `None` when absent.
fn kind(dir: BorrowedFd<'_>, name: &OsStr) -> nix::Result<Option<bool>> {
    match fstatat(dir, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
        Ok(st) => Ok(Some(SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFDIR)),
        Err(Errno::ENOENT) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Removes `name` of `dir` and everything below it; nothing when absent.
pub fn remove(dir: BorrowedFd<'_>, name: &str) -> nix::Result<()> {
    remove_at(dir, OsStr::new(name), 0)
}

/// Empties directory `name` of `dir` (it stays); nothing when absent.
pub fn clear(dir: BorrowedFd<'_>, name: &str) -> nix::Result<()> {
    match kind(dir, OsStr::new(name))? {
        None => Ok(()),
        Some(false) => Err(Errno::ENOTDIR),
        Some(true) => clear_fd(open_dir(dir, OsStr::new(name))?.as_fd(), 0),
    }
}

fn remove_at(dir: BorrowedFd<'_>, name: &OsStr, depth: usize) -> nix::Result<()> {
    match kind(dir, name)? {
        None => Ok(()),
        Some(false) => nix::unistd::unlinkat(dir, name, UnlinkatFlags::NoRemoveDir),
        Some(true) => {
            clear_fd(open_dir(dir, name)?.as_fd(), depth + 1)?;
            nix::unistd::unlinkat(dir, name, UnlinkatFlags::RemoveDir)
        }
    }
}

fn clear_fd(dir: BorrowedFd<'_>, depth: usize) -> nix::Result<()> {
    if depth > MAX_DEPTH {
        return Err(Errno::ELOOP);
    }
    loop {
        // A batch of names, then their removal (never while the
        // directory's stream is being read).
        let batch = names(dir, 1024)?;
        if batch.is_empty() {
            return Ok(());
        }
        for n in &batch {
            remove_at(dir, n, depth)?;
        }
    }
}

/// Up to `max` names of directory `dir` (without `.` and `..`).
fn names(dir: BorrowedFd<'_>, max: usize) -> nix::Result<Vec<OsString>> {
    let fd = nix::fcntl::openat(dir, ".", OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC, Mode::empty())?;
    let mut d = nix::dir::Dir::from_fd(fd)?;
    let mut out = Vec::new();
    for e in d.iter() {
        let e = e?;
        let n = e.file_name().to_bytes();
        if n != b"." && n != b".." {
            out.push(OsStr::from_bytes(n).to_owned());
            if out.len() >= max {
                break;
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(p: &std::path::Path) -> OwnedFd {
        open_dir(nix::fcntl::AT_FDCWD, p.as_os_str()).unwrap()
    }

    #[test]
    fn removes_and_clears_without_following_links() {
        let tmp = tempfile::tempdir().unwrap();
        let outside = tmp.path().join("outside");
        std::fs::create_dir(&outside).unwrap();
        std::fs::write(outside.join("keep"), b"k").unwrap();
        let store = tmp.path().join("store");
        std::fs::create_dir_all(store.join("scratch/a/b")).unwrap();
        std::fs::write(store.join("scratch/a/b/f"), b"x").unwrap();
        std::os::unix::fs::symlink(&outside, store.join("scratch/link")).unwrap();
        std::fs::create_dir_all(store.join("work/work/incompat/volatile")).unwrap();
        std::fs::write(store.join("work/work/incompat/volatile/dirty"), b"").unwrap();
        let fd = dir(&store);
        let empty = |p: &std::path::Path| std::fs::read_dir(p).unwrap().next().is_none();
        clear(fd.as_fd(), "scratch").unwrap();
        assert!(empty(&store.join("scratch")));
        assert!(outside.join("keep").exists(), "a symlink was followed");
        let work = dir(&store.join("work"));
        remove(work.as_fd(), "work").unwrap();
        assert!(!store.join("work/work").exists() && store.join("work").is_dir());
        remove(work.as_fd(), "absent").unwrap();
        clear(fd.as_fd(), "absent").unwrap();
        // Too deep: refused, not walked.
        let mut deep = store.join("scratch");
        for _ in 0..MAX_DEPTH + 2 {
            deep.push("d");
        }
        std::fs::create_dir_all(&deep).unwrap();
        assert_eq!(clear(fd.as_fd(), "scratch"), Err(Errno::ELOOP));
    }
}
