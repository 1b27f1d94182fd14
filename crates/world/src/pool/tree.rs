//! Removing what a world left in its own store between its runs: the
//! overlays' work directories (`work/work` holds overlayfs' `volatile`
//! marker, which refuses a second mount of the same upper; `work/index`
//! names the upper it was made for, which a fork's copy is not) and the
//! scratch directories of a continued world's last run (`/tmp`, `/var/tmp`,
//! `/run`: fresh in every run).
//!
//! Every step is relative to an open directory, never follows a symlink
//! and never leaves the store's filesystem. A world chooses how deep its
//! `/tmp` goes: past [`MAX_DEPTH`] levels (each open level holds a
//! descriptor) a directory is moved up to the top of the tree being
//! removed and taken from there, so any depth is removed with a bounded
//! number of descriptors. The review crate has a remover for the host's
//! trees; this one works on a world's store, which the world crate owns.

use crate::rename::RenameFlags;
use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag};
use nix::sys::stat::{fstatat, Mode, SFlag};
use nix::unistd::UnlinkatFlags;
use std::ffi::{OsStr, OsString};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;

/// The deepest level walked with open descriptors.
pub const MAX_DEPTH: usize = 64;

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
    let name = OsStr::new(name);
    match kind(dir, name)? {
        None => Ok(()),
        Some(false) => nix::unistd::unlinkat(dir, name, UnlinkatFlags::NoRemoveDir),
        Some(true) => {
            let top = open_dir(dir, name)?;
            empty(top.as_fd(), top.as_fd(), 0)?;
            nix::unistd::unlinkat(dir, name, UnlinkatFlags::RemoveDir)
        }
    }
}

/// Empties `d`, a directory `depth` levels below `top`.
fn empty(d: BorrowedFd<'_>, top: BorrowedFd<'_>, depth: usize) -> nix::Result<()> {
    let mut moved = 0u64;
    loop {
        // A batch of names, then their removal (never while the
        // directory's stream is being read).
        let batch = names(d, 1024)?;
        if batch.is_empty() {
            return Ok(());
        }
        for n in &batch {
            match kind(d, n)? {
                None => {}
                Some(false) => nix::unistd::unlinkat(d, n.as_os_str(), UnlinkatFlags::NoRemoveDir)?,
                Some(true) if depth >= MAX_DEPTH => up(d, n, top, &mut moved)?,
                Some(true) => {
                    empty(open_dir(d, n)?.as_fd(), top, depth + 1)?;
                    nix::unistd::unlinkat(d, n.as_os_str(), UnlinkatFlags::RemoveDir)?;
                }
            }
        }
    }
}

/// Moves directory `n` of `d` to the top of the tree, under a name of its
/// own, where the top's loop takes it at depth 0.
fn up(d: BorrowedFd<'_>, n: &OsStr, top: BorrowedFd<'_>, moved: &mut u64) -> nix::Result<()> {
    loop {
        *moved += 1;
        let to = format!(".cloche-deep-{}-{moved}", std::process::id());
        match crate::rename::renameat2(d, n, top, to.as_str(), RenameFlags::RENAME_NOREPLACE) {
            Err(Errno::EEXIST) => continue,
            r => return r,
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

    #[test]
    fn removes_any_depth_without_following_links() {
        let tmp = tempfile::tempdir().unwrap();
        let outside = tmp.path().join("outside");
        std::fs::create_dir(&outside).unwrap();
        std::fs::write(outside.join("keep"), b"k").unwrap();
        let store = tmp.path().join("store");
        std::fs::create_dir_all(store.join("scratch.old/a/b")).unwrap();
        std::fs::write(store.join("scratch.old/a/b/f"), b"x").unwrap();
        std::os::unix::fs::symlink(&outside, store.join("scratch.old/link")).unwrap();
        // Deeper than the descriptors walked, with files on the way.
        let mut deep = store.join("scratch.old/deep");
        for i in 0..MAX_DEPTH * 3 {
            deep.push("d");
            if i % 50 == 0 {
                std::fs::create_dir_all(&deep).unwrap();
                std::fs::write(deep.join("f"), b"y").unwrap();
            }
        }
        std::fs::create_dir_all(&deep).unwrap();
        std::fs::create_dir_all(store.join("work/work/incompat/volatile")).unwrap();
        std::fs::write(store.join("work/work/incompat/volatile/dirty"), b"").unwrap();
        let fd = open_dir(nix::fcntl::AT_FDCWD, store.as_os_str()).unwrap();
        remove(fd.as_fd(), "scratch.old").unwrap();
        assert!(!store.join("scratch.old").exists());
        assert!(outside.join("keep").exists(), "a symlink was followed");
        let work = open_dir(nix::fcntl::AT_FDCWD, store.join("work").as_os_str()).unwrap();
        remove(work.as_fd(), "work").unwrap();
        assert!(!store.join("work/work").exists() && store.join("work").is_dir());
        remove(work.as_fd(), "absent").unwrap();
    }
}
