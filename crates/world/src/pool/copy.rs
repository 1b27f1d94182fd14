//! An upper layer copied from a tmpfs into the pool, exactly as the fs_diff
//! and `cloche commit` read it: every kind of entry (whiteouts, that is
//! character devices 0:0, included), contents with their holes, hard links
//! inside the tree, owners, modes, extended attributes (`trusted.overlay.*`
//! opaque markers, cloche's `trusted.cloche.planned` marks, file
//! capabilities, ACLs) and times (atime, mtime; a ctime cannot be set).
//!
//! The tree is the world's: hostile input. As in the fs_diff's walk
//! (`diff/walk.rs`), nothing is ever followed: directories are opened from
//! the root by their relative path with `openat2` (`RESOLVE_BENEATH |
//! RESOLVE_NO_SYMLINKS | RESOLVE_NO_XDEV`), regular files `O_NOFOLLOW |
//! O_NONBLOCK` and checked against what was listed, symlinks read and made
//! again; the walk keeps a constant number of descriptors whatever the depth
//! and stops past [`crate::diff::MAX_DEPTH`] levels. The world is over when
//! this runs (nothing writes the tree meanwhile).
//!
//! By hand rather than `cp -a`: an error must name the path and the step,
//! and the copy must not depend on the host's coreutils build (xattrs of
//! the `trusted` namespace, sparse files, whiteouts).

use crate::diff::sys::{open_beneath, open_dir_rel, open_file, read_link, Names};
use crate::diff::MAX_DEPTH;
use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sys::stat::{fstat, fstatat, FileStat, Mode};
use std::collections::HashMap;
use std::ffi::{CStr, CString};
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

/// What was copied.
#[derive(Debug, Default, Clone, Copy)]
pub struct Copied {
    pub entries: u64,
    pub bytes: u64,
}

fn fail(step: &str, rel: &[u8], e: impl Into<io::Error>) -> io::Error {
    let e: io::Error = e.into();
    let path = if rel.is_empty() { "/".into() } else { String::from_utf8_lossy(rel).into_owned() };
    io::Error::new(e.kind(), format!("{step} {path}: {e}"))
}

fn join(dir: &[u8], name: &[u8]) -> Vec<u8> {
    let mut p = Vec::with_capacity(dir.len() + 1 + name.len());
    if !dir.is_empty() {
        p.extend_from_slice(dir);
        p.push(b'/');
    }
    p.extend_from_slice(name);
    p
}

fn open_dir(root: BorrowedFd<'_>, rel: &[u8], scratch: &mut Vec<u8>) -> nix::Result<OwnedFd> {
    if rel.is_empty() {
        open_beneath(root, c".", OFlag::O_RDONLY | OFlag::O_DIRECTORY)
    } else {
        open_dir_rel(root, rel, scratch)
    }
}

/// Copies what directory `src` holds into the empty directory `dst`, and
/// `src`'s own owner, mode, extended attributes and times onto `dst`.
pub fn tree(src: BorrowedFd<'_>, dst: BorrowedFd<'_>) -> io::Result<Copied> {
    let mut c = Copier { dst, links: HashMap::new(), done: Copied::default(), buf: vec![0; 1 << 17] };
    let mut scratch = Vec::new();
    let mut dirent_buf = vec![0u8; 32 * 1024];
    let mut names = Names::default();
    // Directories whose metadata is set once everything below them is in
    // place (their times would change otherwise): deepest last.
    let mut dirs: Vec<(Vec<u8>, FileStat)> = Vec::new();
    let root_st = fstat(src).map_err(|e| fail("stat", b"", e))?;
    dirs.push((Vec::new(), root_st));
    let mut pending: Vec<(Vec<u8>, usize)> = vec![(Vec::new(), 0)];
    while let Some((rel, depth)) = pending.pop() {
        if depth > MAX_DEPTH {
            return Err(fail("copy", &rel, io::Error::other(format!("deeper than {MAX_DEPTH} levels"))));
        }
        let sfd = open_dir(src, &rel, &mut scratch).map_err(|e| fail("open", &rel, e))?;
        let dfd = open_dir(dst, &rel, &mut scratch).map_err(|e| fail("open the copy of", &rel, e))?;
        names.read(sfd.as_fd(), &mut dirent_buf).map_err(|e| fail("list", &rel, e))?;
        for i in 0..names.len() {
            let (name, cname) = (names.name(i), names.cname(i));
            let path = join(&rel, name);
            let st =
                fstatat(&sfd, cname, nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW).map_err(|e| fail("stat", &path, e))?;
            if st.st_mode & libc::S_IFMT == libc::S_IFDIR {
                nix::sys::stat::mkdirat(&dfd, cname, Mode::from_bits_truncate(0o700))
                    .map_err(|e| fail("mkdir", &path, e))?;
                pending.push((path.clone(), depth + 1));
                dirs.push((path, st));
            } else {
                c.entry(sfd.as_fd(), dfd.as_fd(), cname, &path, &st)?;
            }
            c.done.entries += 1;
        }
    }
    for (rel, st) in dirs.iter().rev() {
        let sfd = open_dir(src, rel, &mut scratch).map_err(|e| fail("open", rel, e))?;
        let dfd = open_dir(dst, rel, &mut scratch).map_err(|e| fail("open the copy of", rel, e))?;
        set_meta(sfd.as_fd(), dfd.as_fd(), st).map_err(|e| fail("copy the attributes of", rel, e))?;
    }
    Ok(c.done)
}

struct Copier<'a> {
    dst: BorrowedFd<'a>,
    /// (dev, ino) of a source file with several links -> its copy's path.
    links: HashMap<(u64, u64), CString>,
    done: Copied,
    buf: Vec<u8>,
}

impl Copier<'_> {
    /// One entry that is not a directory.
    fn entry(
        &mut self,
        sdir: BorrowedFd<'_>,
        ddir: BorrowedFd<'_>,
        name: &CStr,
        path: &[u8],
        st: &FileStat,
    ) -> io::Result<()> {
        let kind = st.st_mode & libc::S_IFMT;
        let key = (st.st_dev, st.st_ino);
        if kind == libc::S_IFREG && st.st_nlink > 1 {
            if let Some(first) = self.links.get(&key) {
                return nix::unistd::linkat(self.dst, first.as_c_str(), ddir, name, nix::fcntl::AtFlags::empty())
                    .map_err(|e| fail("link", path, e));
            }
        }
        match kind {
            libc::S_IFREG => {
                let from = open_file(sdir, name).map_err(|e| fail("open", path, e))?;
                let got = fstat(&from).map_err(|e| fail("stat", path, e))?;
                if (got.st_dev, got.st_ino) != key || got.st_mode & libc::S_IFMT != libc::S_IFREG {
                    return Err(fail("copy", path, io::Error::other("changed while copied")));
                }
                let to = nix::fcntl::openat(
                    ddir,
                    name,
                    OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                    Mode::from_bits_truncate(0o600),
                )
                .map_err(|e| fail("create", path, e))?;
                let (from, to) = (File::from(from), File::from(to));
                self.done.bytes +=
                    data(&from, &to, got.st_size as u64, &mut self.buf).map_err(|e| fail("copy", path, e))?;
                set_meta(from.as_fd(), to.as_fd(), &got).map_err(|e| fail("copy the attributes of", path, e))?;
                if st.st_nlink > 1 {
                    self.links.insert(key, CString::new(path).map_err(|_| fail("copy", path, Errno::EINVAL))?);
                }
                Ok(())
            }
            libc::S_IFLNK => {
                let target = read_link(sdir, name).map_err(|e| fail("readlink", path, e))?;
                let target = CString::new(target).map_err(|_| fail("readlink", path, Errno::EINVAL))?;
                nix::unistd::symlinkat(target.as_c_str(), ddir, name).map_err(|e| fail("symlink", path, e))?;
                set_meta_at(sdir, ddir, name, st).map_err(|e| fail("copy the attributes of", path, e))
            }
            _ => {
                // Character (an overlay whiteout is 0:0) or block device,
                // FIFO, socket: made again as they are.
                // SAFETY: a directory fd we hold and a NUL-terminated name.
                if unsafe { libc::mknodat(ddir.as_raw_fd(), name.as_ptr(), st.st_mode & libc::S_IFMT, st.st_rdev) } != 0
                {
                    return Err(fail("mknod", path, io::Error::last_os_error()));
                }
                set_meta_at(sdir, ddir, name, st).map_err(|e| fail("copy the attributes of", path, e))
            }
        }
    }
}

/// Copies `size` bytes of `from` into `to`, the holes left as holes.
/// Returns the bytes of data copied.
fn data(from: &File, to: &File, size: u64, buf: &mut [u8]) -> io::Result<u64> {
    use std::os::unix::fs::FileExt;
    let mut copied = 0;
    let mut off = 0i64;
    while (off as u64) < size {
        // SAFETY: lseek on a descriptor we hold.
        let start = unsafe { libc::lseek(from.as_raw_fd(), off, libc::SEEK_DATA) };
        if start < 0 {
            match io::Error::last_os_error().raw_os_error() {
                Some(libc::ENXIO) => break, // only a hole is left
                _ => return Err(io::Error::last_os_error()),
            }
        }
        // SAFETY: as above.
        let end = unsafe { libc::lseek(from.as_raw_fd(), start, libc::SEEK_HOLE) };
        if end < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut at = start as u64;
        while at < end as u64 {
            let want = ((end as u64 - at) as usize).min(buf.len());
            let n = from.read_at(&mut buf[..want], at)?;
            if n == 0 {
                break; // shorter than it said: the size is set below
            }
            to.write_all_at(&buf[..n], at)?;
            at += n as u64;
            copied += n as u64;
        }
        off = end;
    }
    to.set_len(size)?;
    Ok(copied)
}

/// Owner, extended attributes, mode and times of an open entry onto its
/// copy: owner first (a change of owner drops file capabilities), mode
/// after the attributes (an ACL sets the group bits).
fn set_meta(from: BorrowedFd<'_>, to: BorrowedFd<'_>, st: &FileStat) -> io::Result<()> {
    nix::unistd::fchown(to, Some(st.st_uid.into()), Some(st.st_gid.into()))?;
    xattrs(&XattrAt::Fd(from), &XattrAt::Fd(to))?;
    nix::sys::stat::fchmod(to, Mode::from_bits_truncate(st.st_mode & 0o7777))?;
    let times = [ts(st.st_atime, st.st_atime_nsec), ts(st.st_mtime, st.st_mtime_nsec)];
    // SAFETY: a descriptor we hold and two timespecs.
    if unsafe { libc::futimens(to.as_raw_fd(), times.as_ptr()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The same for an entry that cannot be opened (symlink, device, FIFO,
/// socket), by name in its directory.
fn set_meta_at(sdir: BorrowedFd<'_>, ddir: BorrowedFd<'_>, name: &CStr, st: &FileStat) -> io::Result<()> {
    nix::unistd::fchownat(
        ddir,
        name,
        Some(st.st_uid.into()),
        Some(st.st_gid.into()),
        nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
    )?;
    xattrs(&XattrAt::Path(proc_path(sdir, name)?), &XattrAt::Path(proc_path(ddir, name)?))?;
    if st.st_mode & libc::S_IFMT != libc::S_IFLNK {
        // Not a symlink (checked just above in the copy, made by us): a
        // mode change by name follows nothing.
        nix::sys::stat::fchmodat(
            ddir,
            name,
            Mode::from_bits_truncate(st.st_mode & 0o7777),
            nix::sys::stat::FchmodatFlags::FollowSymlink,
        )?;
    }
    let times = [ts(st.st_atime, st.st_atime_nsec), ts(st.st_mtime, st.st_mtime_nsec)];
    // SAFETY: a directory fd we hold, a NUL-terminated name, two timespecs.
    if unsafe { libc::utimensat(ddir.as_raw_fd(), name.as_ptr(), times.as_ptr(), libc::AT_SYMLINK_NOFOLLOW) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn ts(sec: i64, nsec: i64) -> libc::timespec {
    libc::timespec { tv_sec: sec, tv_nsec: nsec }
}

/// `/proc/self/fd/DIR/NAME`: an entry by name for the `l*xattr` calls,
/// which have no directory-relative form before Linux 6.13 (the last
/// component is not followed).
fn proc_path(dir: BorrowedFd<'_>, name: &CStr) -> io::Result<CString> {
    let mut p = format!("/proc/self/fd/{}/", dir.as_raw_fd()).into_bytes();
    p.extend_from_slice(name.to_bytes());
    CString::new(p).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

enum XattrAt<'a> {
    Fd(BorrowedFd<'a>),
    Path(CString),
}

impl XattrAt<'_> {
    /// `*listxattr` / `*getxattr` into `buf` (`name` None: the list).
    fn get(&self, name: Option<&CStr>, buf: &mut Vec<u8>) -> io::Result<usize> {
        loop {
            // SAFETY: NUL-terminated strings, a descriptor we hold, and a
            // buffer valid for buf.len() bytes.
            let n = unsafe {
                match (self, name) {
                    (XattrAt::Fd(fd), None) => libc::flistxattr(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()),
                    (XattrAt::Path(p), None) => libc::llistxattr(p.as_ptr(), buf.as_mut_ptr().cast(), buf.len()),
                    (XattrAt::Fd(fd), Some(k)) => {
                        libc::fgetxattr(fd.as_raw_fd(), k.as_ptr(), buf.as_mut_ptr().cast(), buf.len())
                    }
                    (XattrAt::Path(p), Some(k)) => {
                        libc::lgetxattr(p.as_ptr(), k.as_ptr(), buf.as_mut_ptr().cast(), buf.len())
                    }
                }
            };
            if n >= 0 {
                return Ok(n as usize);
            }
            let e = io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::ERANGE) if buf.len() < 1 << 20 => buf.resize(buf.len() * 4, 0),
                Some(libc::EOPNOTSUPP) if name.is_none() => return Ok(0),
                _ => return Err(e),
            }
        }
    }

    fn set(&self, name: &CStr, value: &[u8]) -> io::Result<()> {
        // SAFETY: NUL-terminated strings, a descriptor we hold, and a value
        // valid for value.len() bytes.
        let r = unsafe {
            match self {
                XattrAt::Fd(fd) => {
                    libc::fsetxattr(fd.as_raw_fd(), name.as_ptr(), value.as_ptr().cast(), value.len(), 0)
                }
                XattrAt::Path(p) => libc::lsetxattr(p.as_ptr(), name.as_ptr(), value.as_ptr().cast(), value.len(), 0),
            }
        };
        if r != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

/// Every extended attribute of `from` onto `to`.
fn xattrs(from: &XattrAt<'_>, to: &XattrAt<'_>) -> io::Result<()> {
    let mut list = vec![0u8; 1024];
    let n = from.get(None, &mut list)?;
    let mut value = vec![0u8; 4096];
    for name in list[..n].split(|&b| b == 0).filter(|s| !s.is_empty()) {
        let name = CString::new(name).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
        let len = match from.get(Some(&name), &mut value) {
            Ok(len) => len,
            Err(e) if e.raw_os_error() == Some(libc::ENODATA) => continue, // gone meanwhile
            Err(e) => return Err(e),
        };
        to.set(&name, &value[..len])
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", name.to_string_lossy())))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    fn open(p: &std::path::Path) -> OwnedFd {
        nix::fcntl::open(p, OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC, Mode::empty()).unwrap()
    }

    #[test]
    fn copies_kinds_links_holes_modes_and_times() {
        let tmp = tempfile::tempdir().unwrap();
        let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
        std::fs::create_dir_all(a.join("d/e")).unwrap();
        std::fs::create_dir(&b).unwrap();
        std::fs::write(a.join("d/f"), b"hello").unwrap();
        std::fs::hard_link(a.join("d/f"), a.join("g")).unwrap();
        std::os::unix::fs::symlink("../../etc/passwd", a.join("d/e/l")).unwrap();
        nix::unistd::mkfifo(&a.join("p"), Mode::from_bits_truncate(0o640)).unwrap();
        let sparse = File::create(a.join("s")).unwrap();
        sparse.set_len(8 << 20).unwrap();
        std::os::unix::fs::FileExt::write_all_at(&sparse, b"x", 4 << 20).unwrap();
        std::fs::set_permissions(a.join("d"), std::os::unix::fs::PermissionsExt::from_mode(0o751)).unwrap();
        let old = nix::sys::time::TimeSpec::new(1_000_000, 5);
        nix::sys::stat::utimensat(
            nix::fcntl::AT_FDCWD,
            &a.join("d/f"),
            &old,
            &old,
            nix::sys::stat::UtimensatFlags::NoFollowSymlink,
        )
        .unwrap();
        let got = tree(open(&a).as_fd(), open(&b).as_fd()).unwrap();
        assert_eq!(got.entries, 7);
        let m = |p: &str| std::fs::symlink_metadata(b.join(p)).unwrap();
        assert_eq!(std::fs::read(b.join("g")).unwrap(), b"hello");
        assert_eq!(m("g").ino(), m("d/f").ino(), "hard link kept");
        assert_eq!(m("d/f").mtime(), 1_000_000);
        assert_eq!(std::fs::read_link(b.join("d/e/l")).unwrap().to_str(), Some("../../etc/passwd"));
        assert!(std::os::unix::fs::FileTypeExt::is_fifo(&m("p").file_type()));
        assert_eq!(m("p").mode() & 0o7777, 0o640);
        assert_eq!(m("d").mode() & 0o7777, 0o751);
        assert_eq!((m("s").len(), m("s").blocks() * 512 < 1 << 20), (8 << 20, true), "holes kept");
        assert_eq!(&std::fs::read(b.join("s")).unwrap()[4 << 20..(4 << 20) + 1], b"x");
    }

    fn xattr(p: &std::path::Path, name: &CStr) -> Option<Vec<u8>> {
        let c = CString::new(p.as_os_str().as_encoded_bytes()).unwrap();
        let mut v = vec![0u8; 64];
        // SAFETY: NUL-terminated strings and a buffer of v.len() bytes.
        let n = unsafe { libc::lgetxattr(c.as_ptr(), name.as_ptr(), v.as_mut_ptr().cast(), v.len()) };
        (n >= 0).then(|| v[..n as usize].to_vec())
    }

    fn set_xattr(p: &std::path::Path, name: &CStr, value: &[u8]) {
        let c = CString::new(p.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: NUL-terminated strings and a value of value.len() bytes.
        let r = unsafe { libc::lsetxattr(c.as_ptr(), name.as_ptr(), value.as_ptr().cast(), value.len(), 0) };
        assert_eq!(r, 0, "{}", io::Error::last_os_error());
    }

    /// What an overlay's upper holds besides plain files, as root makes
    /// it: a whiteout (char 0:0), an opaque directory, cloche's mark, an
    /// owner that is not root, setuid bits.
    #[test]
    fn copies_whiteouts_markers_owners_and_setuid() {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("skipped: needs root (mknod, trusted.* attributes, chown)");
            return;
        }
        let tmp = tempfile::tempdir().unwrap();
        let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
        std::fs::create_dir_all(a.join("opaque")).unwrap();
        std::fs::create_dir(&b).unwrap();
        let wh = CString::new(a.join("gone").as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: a NUL-terminated path.
        assert_eq!(unsafe { libc::mknod(wh.as_ptr(), libc::S_IFCHR, 0) }, 0);
        set_xattr(&a.join("opaque"), c"trusted.overlay.opaque", b"y");
        std::fs::write(a.join("opaque/f"), b"f").unwrap();
        set_xattr(&a.join("opaque/f"), c"trusted.cloche.planned", b"");
        std::fs::write(a.join("suid"), b"#!/bin/sh\n").unwrap();
        std::os::unix::fs::chown(a.join("suid"), Some(1234), Some(5678)).unwrap();
        std::fs::set_permissions(a.join("suid"), std::os::unix::fs::PermissionsExt::from_mode(0o4755)).unwrap();
        tree(open(&a).as_fd(), open(&b).as_fd()).unwrap();
        let m = |p: &str| std::fs::symlink_metadata(b.join(p)).unwrap();
        assert!(std::os::unix::fs::FileTypeExt::is_char_device(&m("gone").file_type()));
        assert_eq!(m("gone").rdev(), 0, "a whiteout is 0:0");
        assert_eq!(xattr(&b.join("opaque"), c"trusted.overlay.opaque").as_deref(), Some(&b"y"[..]));
        assert_eq!(xattr(&b.join("opaque/f"), c"trusted.cloche.planned").as_deref(), Some(&b""[..]));
        assert_eq!((m("suid").uid(), m("suid").gid(), m("suid").mode() & 0o7777), (1234, 5678, 0o4755));
    }
}
