//! Host filesystem steps of a commit, none of which follows a symlink:
//! every path is opened beneath a directory fd with `openat2(RESOLVE_BENEATH
//! | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS)`, final components with
//! `O_NOFOLLOW` or `AT_SYMLINK_NOFOLLOW`, and removals with `unlinkat`.

use nix::errno::Errno;
use nix::fcntl::{openat2, OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::{fstatat, FileStat, Mode};
use nix::unistd::UnlinkatFlags;
use std::ffi::OsStr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::sync::atomic::{AtomicU64, Ordering};

/// Deepest tree `remove_tree` descends.
pub const MAX_DEPTH: usize = 512;

fn how(flags: OFlag) -> OpenHow {
    OpenHow::new()
        .flags(flags | OFlag::O_CLOEXEC | OFlag::O_NOFOLLOW)
        .resolve(ResolveFlag::RESOLVE_BENEATH | ResolveFlag::RESOLVE_NO_SYMLINKS | ResolveFlag::RESOLVE_NO_MAGICLINKS)
}

fn os(b: &[u8]) -> &OsStr {
    OsStr::from_bytes(b)
}

/// Opens `rel` (relative, `""` = `dir` itself) beneath `dir`.
pub fn open_beneath(dir: BorrowedFd<'_>, rel: &[u8], flags: OFlag) -> nix::Result<OwnedFd> {
    let rel = if rel.is_empty() { b".".as_slice() } else { rel };
    openat2(dir, os(rel), how(flags))
}

/// Opens directory `rel` beneath `dir` (readable, for `*at` calls and
/// fsync). A symlink anywhere on the way is `ELOOP` (also as the last
/// component: no `O_DIRECTORY`, whose `ENOTDIR` would hide it); another
/// non-directory is `ENOTDIR`.
pub fn open_dir(dir: BorrowedFd<'_>, rel: &[u8]) -> nix::Result<OwnedFd> {
    let fd = open_beneath(dir, rel, OFlag::O_RDONLY | OFlag::O_NONBLOCK)?;
    if nix::sys::stat::fstat(&fd)?.st_mode & libc::S_IFMT != libc::S_IFDIR {
        return Err(Errno::ENOTDIR);
    }
    Ok(fd)
}

/// `lstat` of `name` in `dir`; `None` when it does not exist.
pub fn lstat_at(dir: BorrowedFd<'_>, name: &[u8]) -> nix::Result<Option<FileStat>> {
    match fstatat(dir, os(name), nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW) {
        Ok(st) => Ok(Some(st)),
        Err(Errno::ENOENT) => Ok(None),
        Err(e) => Err(e),
    }
}

/// True when a stat is of a directory.
pub fn is_dir(st: &FileStat) -> bool {
    st.st_mode & libc::S_IFMT == libc::S_IFDIR
}

/// A fresh name for a temporary entry: `.cloche-<pid>-<n>-<random>`.
pub fn temp_name() -> Vec<u8> {
    static N: AtomicU64 = AtomicU64::new(0);
    let mut r = [0u8; 6];
    // getrandom never blocks once the pool is up; a failure leaves zeros,
    // and O_EXCL/RENAME_NOREPLACE still refuse a clash.
    // SAFETY: getrandom writes at most r.len() bytes into r.
    let _ = unsafe { libc::getrandom(r.as_mut_ptr().cast(), r.len(), 0) };
    let hex: String = r.iter().map(|b| format!("{b:02x}")).collect();
    format!(".cloche-{}-{}-{hex}", std::process::id(), N.fetch_add(1, Ordering::Relaxed)).into_bytes()
}

/// Removes `name` in `dir`: a directory with everything below it (never
/// following a symlink, never crossing into another directory by a path),
/// anything else with one `unlinkat`. Returns how many entries it removed.
pub fn remove_tree(dir: BorrowedFd<'_>, name: &[u8]) -> nix::Result<u64> {
    remove_rec(dir, name, 0)
}

fn remove_rec(dir: BorrowedFd<'_>, name: &[u8], depth: usize) -> nix::Result<u64> {
    let Some(st) = lstat_at(dir, name)? else { return Ok(0) };
    if !is_dir(&st) {
        nix::unistd::unlinkat(dir, os(name), UnlinkatFlags::NoRemoveDir)?;
        return Ok(1);
    }
    if depth >= MAX_DEPTH {
        return Err(Errno::ELOOP);
    }
    let sub = open_beneath(dir, name, OFlag::O_RDONLY | OFlag::O_DIRECTORY)?;
    let mut removed = 0;
    loop {
        // Read a batch of names, then remove them (never delete while the
        // directory stream is open on the same fd).
        let names = list(sub.as_fd(), 1024)?;
        if names.is_empty() {
            break;
        }
        for n in &names {
            removed += remove_rec(sub.as_fd(), n, depth + 1)?;
        }
    }
    nix::unistd::unlinkat(dir, os(name), UnlinkatFlags::RemoveDir)?;
    Ok(removed + 1)
}

/// Up to `max` names in a directory (without `.` and `..`).
fn list(dir: BorrowedFd<'_>, max: usize) -> nix::Result<Vec<Vec<u8>>> {
    let fd = open_beneath(dir, b".", OFlag::O_RDONLY | OFlag::O_DIRECTORY)?;
    let mut d = nix::dir::Dir::from_fd(fd)?;
    let mut out = Vec::new();
    for e in d.iter() {
        let e = e?;
        let n = e.file_name().to_bytes();
        if n != b"." && n != b".." {
            out.push(n.to_vec());
            if out.len() >= max {
                break;
            }
        }
    }
    Ok(out)
}

/// Creates directory `name` in `dir`, mode 0700 until its final mode is set.
pub fn mkdir(dir: BorrowedFd<'_>, name: &[u8]) -> nix::Result<()> {
    nix::sys::stat::mkdirat(dir, os(name), Mode::from_bits_truncate(0o700))
}

/// Creates regular file `name` in `dir` (must not exist), mode 0600.
pub fn create(dir: BorrowedFd<'_>, name: &[u8]) -> nix::Result<std::fs::File> {
    let how = OpenHow::new()
        .flags(OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC)
        .mode(Mode::from_bits_truncate(0o600))
        .resolve(ResolveFlag::RESOLVE_BENEATH | ResolveFlag::RESOLVE_NO_SYMLINKS);
    openat2(dir, os(name), how).map(std::fs::File::from)
}

/// `symlinkat(target, dir, name)`.
pub fn symlink(target: &[u8], dir: BorrowedFd<'_>, name: &[u8]) -> nix::Result<()> {
    nix::unistd::symlinkat(os(target), dir, os(name))
}

/// Sets the owner of `name` in `dir` without following a symlink.
pub fn chown_at(dir: BorrowedFd<'_>, name: &[u8], uid: u32, gid: u32) -> nix::Result<()> {
    nix::unistd::fchownat(
        dir,
        os(name),
        Some(nix::unistd::Uid::from_raw(uid)),
        Some(nix::unistd::Gid::from_raw(gid)),
        nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
    )
}

/// Sets the mode of regular file or directory `name` in `dir` through an fd
/// opened without following a symlink (`O_NONBLOCK`: never waits on a FIFO
/// planted in between).
pub fn chmod_at(dir: BorrowedFd<'_>, name: &[u8], mode: u32) -> nix::Result<()> {
    let fd = open_beneath(dir, name, OFlag::O_RDONLY | OFlag::O_NONBLOCK)?;
    let st = nix::sys::stat::fstat(&fd)?;
    let kind = st.st_mode & libc::S_IFMT;
    if kind != libc::S_IFREG && kind != libc::S_IFDIR {
        return Err(Errno::EPERM);
    }
    nix::sys::stat::fchmod(&fd, Mode::from_bits_truncate(mode))
}

/// Renames `from` to `to` in `dir`; with `noreplace`, fails if `to` exists.
pub fn rename(dir: BorrowedFd<'_>, from: &[u8], to: &[u8], noreplace: bool) -> nix::Result<()> {
    let flags = if noreplace {
        cloche_world::rename::RenameFlags::RENAME_NOREPLACE
    } else {
        cloche_world::rename::RenameFlags::EMPTY
    };
    cloche_world::rename::renameat2(dir, os(from), dir, os(to), flags)
}

/// `(parent, name)` of an absolute path (`/a/b` → `/a`, `b`).
pub fn split(path: &[u8]) -> (&[u8], &[u8]) {
    match path.iter().rposition(|&b| b == b'/') {
        Some(0) => (b"/", &path[1..]),
        Some(i) => (&path[..i], &path[i + 1..]),
        None => (b"", path),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    #[test]
    fn nothing_follows_a_symlink() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("root");
        let outside = tmp.path().join("outside");
        std::fs::create_dir_all(root.join("d/e")).unwrap();
        std::fs::create_dir(&outside).unwrap();
        std::fs::write(outside.join("keep"), b"k").unwrap();
        std::os::unix::fs::symlink(&outside, root.join("link")).unwrap();
        std::os::unix::fs::symlink("../outside", root.join("d/rel")).unwrap();
        let fd = nix::fcntl::open(&root, OFlag::O_RDONLY | OFlag::O_DIRECTORY, Mode::empty()).unwrap();
        assert_eq!(open_dir(fd.as_fd(), b"link").unwrap_err(), Errno::ELOOP);
        assert!(open_dir(fd.as_fd(), b"link/").is_err());
        assert!(open_dir(fd.as_fd(), b"../outside").is_err());
        assert!(open_dir(fd.as_fd(), b"d/e").is_ok());
        assert!(chmod_at(fd.as_fd(), b"link", 0o777).is_err());
        // Removing a tree that holds symlinks removes the links, not their targets.
        std::os::unix::fs::symlink(&outside, root.join("d/e/abs")).unwrap();
        assert_eq!(remove_tree(fd.as_fd(), b"d").unwrap(), 4);
        assert!(outside.join("keep").exists());
        assert_eq!(remove_tree(fd.as_fd(), b"link").unwrap(), 1);
        assert!(outside.join("keep").exists());
        assert!(create(fd.as_fd(), b"f").is_ok());
        assert_eq!(create(fd.as_fd(), b"f").unwrap_err(), Errno::EEXIST);
    }

    #[test]
    fn splits() {
        assert_eq!(split(b"/a/b"), (b"/a".as_slice(), b"b".as_slice()));
        assert_eq!(split(b"/a"), (b"/".as_slice(), b"a".as_slice()));
        assert!(temp_name() != temp_name());
    }
}
