//! Thin, no-follow system-call helpers for the diff walk.
//!
//! Everything is opened relative to a directory fd with `openat2`
//! (`RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS |
//! RESOLVE_NO_XDEV`) and `O_NOFOLLOW`; metadata comes from
//! `fstatat(AT_SYMLINK_NOFOLLOW)`; nothing here ever resolves a symlink.

use std::ffi::CStr;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};

use nix::errno::Errno;
use nix::fcntl::{openat2, OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::{fstat, fstatat, FileStat};

use super::model::Kind;

/// The subset of `struct stat` the diff uses.
#[derive(Clone, Copy, Debug)]
pub(crate) struct St {
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    pub blocks: u64,
    pub mtime: (i64, i64),
    pub ino: u64,
    pub dev: u64,
    pub rdev: u64,
    pub nlink: u64,
}

impl From<FileStat> for St {
    fn from(s: FileStat) -> St {
        St {
            mode: s.st_mode,
            uid: s.st_uid,
            gid: s.st_gid,
            size: s.st_size.max(0) as u64,
            blocks: s.st_blocks.max(0) as u64,
            mtime: (s.st_mtime, s.st_mtime_nsec),
            ino: s.st_ino,
            dev: s.st_dev,
            rdev: s.st_rdev,
            nlink: s.st_nlink,
        }
    }
}

impl St {
    pub fn kind(&self) -> Kind {
        Kind::from_mode(self.mode)
    }
    pub fn perm(&self) -> u32 {
        self.mode & 0o7777
    }
    pub fn is_reg(&self) -> bool {
        self.mode & libc::S_IFMT == libc::S_IFREG
    }
    pub fn is_dir(&self) -> bool {
        self.mode & libc::S_IFMT == libc::S_IFDIR
    }
    /// An overlayfs whiteout: a char device 0:0.
    pub fn is_whiteout(&self) -> bool {
        self.mode & libc::S_IFMT == libc::S_IFCHR && self.rdev == 0
    }
    pub fn key(&self) -> (u64, u64) {
        (self.dev, self.ino)
    }
    pub fn rdev_pair(&self) -> (u32, u32) {
        dev_pair(self.rdev)
    }
}

/// (major, minor) of a Linux `dev_t`.
pub(crate) fn dev_pair(dev: u64) -> (u32, u32) {
    let major = ((dev >> 32) & 0xffff_f000) | ((dev >> 8) & 0xfff);
    let minor = ((dev >> 12) & 0xffff_ff00) | (dev & 0xff);
    (major as u32, minor as u32)
}

/// `fstatat(dir, name, AT_SYMLINK_NOFOLLOW)`.
pub(crate) fn stat_at(dir: BorrowedFd<'_>, name: &CStr) -> nix::Result<St> {
    fstatat(dir, name, nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW).map(St::from)
}

/// Like [`stat_at`], with "absent" (`ENOENT`, `ENOTDIR`) as `None`.
pub(crate) fn stat_at_opt(dir: BorrowedFd<'_>, name: &CStr) -> nix::Result<Option<St>> {
    match stat_at(dir, name) {
        Ok(s) => Ok(Some(s)),
        Err(Errno::ENOENT) | Err(Errno::ENOTDIR) => Ok(None),
        Err(e) => Err(e),
    }
}

pub(crate) fn stat_fd(fd: BorrowedFd<'_>) -> nix::Result<St> {
    fstat(fd).map(St::from)
}

fn how(flags: OFlag) -> OpenHow {
    OpenHow::new().flags(flags | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC | OFlag::O_NOCTTY).resolve(
        ResolveFlag::RESOLVE_BENEATH
            | ResolveFlag::RESOLVE_NO_SYMLINKS
            | ResolveFlag::RESOLVE_NO_MAGICLINKS
            | ResolveFlag::RESOLVE_NO_XDEV,
    )
}

/// Opens `rel` (relative, no symlinks, no `..` above `dir`, no mount crossing).
pub(crate) fn open_beneath(dir: BorrowedFd<'_>, rel: &CStr, flags: OFlag) -> nix::Result<OwnedFd> {
    openat2(dir, rel, how(flags))
}

/// Opens a regular file for reading without side effects: never blocks (a
/// FIFO swapped in cannot hang the diff), no atime update when allowed.
pub(crate) fn open_file(dir: BorrowedFd<'_>, name: &CStr) -> nix::Result<OwnedFd> {
    let base = OFlag::O_RDONLY | OFlag::O_NONBLOCK;
    match open_beneath(dir, name, base | OFlag::O_NOATIME) {
        Err(Errno::EPERM) => open_beneath(dir, name, base),
        r => r,
    }
}

/// Longest chunk of a relative path handed to one `openat2` (PATH_MAX is 4096).
const CHUNK: usize = 3072;

/// Opens the directory at `rel` (no leading slash, components separated by
/// `/`) beneath `root`, in several `openat2` steps when the path is longer
/// than `PATH_MAX`. `scratch` is reused to build NUL-terminated chunks.
pub(crate) fn open_dir_rel(root: BorrowedFd<'_>, rel: &[u8], scratch: &mut Vec<u8>) -> nix::Result<OwnedFd> {
    let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY;
    let mut cur: Option<OwnedFd> = None;
    let mut rest = rel;
    loop {
        let take = if rest.len() <= CHUNK {
            rest.len()
        } else {
            // split at the last separator within the chunk (names are <= 255 bytes)
            match rest[..CHUNK].iter().rposition(|&b| b == b'/') {
                Some(i) if i > 0 => i,
                _ => return Err(Errno::ENAMETOOLONG),
            }
        };
        scratch.clear();
        scratch.extend_from_slice(&rest[..take]);
        scratch.push(0);
        let c = CStr::from_bytes_with_nul(scratch).map_err(|_| Errno::EINVAL)?;
        let fd = {
            let dir = cur.as_ref().map(|f| borrow(f)).unwrap_or(root);
            open_beneath(dir, c, flags)?
        };
        cur = Some(fd);
        rest = &rest[take..];
        while let [b'/', tail @ ..] = rest {
            rest = tail;
        }
        if rest.is_empty() {
            return cur.ok_or(Errno::EINVAL);
        }
    }
}

fn borrow(f: &OwnedFd) -> BorrowedFd<'_> {
    use std::os::fd::AsFd;
    f.as_fd()
}

/// Whether an upper directory is marked opaque (`trusted.overlay.opaque` = "y").
/// Other `trusted.overlay.*` attributes (origin, impure, ...) are ignored.
/// With `user`, the `userxattr` overlay's name, `user.overlay.opaque` (an
/// overlay refuses to let its world set it: a world's attribute of that
/// name is stored escaped, as `user.overlay.overlay.opaque`).
pub(crate) fn is_opaque(dir: BorrowedFd<'_>, user: bool) -> nix::Result<bool> {
    let mut val = [0u8; 8];
    let name = if user { c"user.overlay.opaque" } else { c"trusted.overlay.opaque" };
    // SAFETY: the name is NUL-terminated and `val` is valid for `val.len()` bytes.
    let n = unsafe { libc::fgetxattr(dir.as_raw_fd(), name.as_ptr(), val.as_mut_ptr().cast(), val.len()) };
    if n < 0 {
        return match Errno::last() {
            Errno::ENODATA | Errno::EOPNOTSUPP | Errno::ERANGE => Ok(false),
            e => Err(e),
        };
    }
    Ok(&val[..n as usize] == b"y")
}

/// The extended attribute the child sets on what it copies up for its own
/// mount plan (a writable home, the mount points in it): such an entry is
/// cloche's doing, not the world's, and is not listed as touched while it
/// is as the base has it. `trusted.*`: a world (without `CAP_SYS_ADMIN`)
/// can neither set nor remove it.
pub const PLANNED_XATTR: &CStr = c"trusted.cloche.planned";

/// Whether upper entry `name` of directory `dir` (not followed if a
/// symlink) carries [`PLANNED_XATTR`]. `.` is the open directory itself
/// (`fgetxattr`); another name is read through `/proc/self/fd`, since
/// `lgetxattr` has no directory-relative form before Linux 6.13.
pub(crate) fn is_planned(dir: BorrowedFd<'_>, name: &CStr) -> nix::Result<bool> {
    let mut val = [0u8; 8];
    let n = if name == c"." {
        // SAFETY: the name is NUL-terminated and `val` is valid for `val.len()` bytes.
        unsafe { libc::fgetxattr(dir.as_raw_fd(), PLANNED_XATTR.as_ptr(), val.as_mut_ptr().cast(), val.len()) }
    } else {
        let mut path = format!("/proc/self/fd/{}/", dir.as_raw_fd()).into_bytes();
        path.extend_from_slice(name.to_bytes());
        let path = std::ffi::CString::new(path).map_err(|_| Errno::EINVAL)?;
        // SAFETY: both strings are NUL-terminated and `val` is valid for
        // `val.len()` bytes.
        unsafe { libc::lgetxattr(path.as_ptr(), PLANNED_XATTR.as_ptr(), val.as_mut_ptr().cast(), val.len()) }
    };
    if n < 0 {
        return match Errno::last() {
            Errno::ENODATA | Errno::EOPNOTSUPP | Errno::ERANGE => Ok(false),
            e => Err(e),
        };
    }
    Ok(true)
}

/// Names of one directory, stored NUL-terminated in one arena (no per-entry
/// allocation), sortable by bytes.
#[derive(Default)]
pub(crate) struct Names {
    arena: Vec<u8>,
    items: Vec<NameRef>,
}

#[derive(Clone, Copy)]
struct NameRef {
    start: usize,
    /// Length without the NUL.
    len: usize,
    dtype: u8,
}

impl Names {
    pub fn len(&self) -> usize {
        self.items.len()
    }
    /// The name bytes (no NUL).
    pub fn name(&self, i: usize) -> &[u8] {
        let r = self.items[i];
        &self.arena[r.start..r.start + r.len]
    }
    /// The name as a C string.
    pub fn cname(&self, i: usize) -> &CStr {
        let r = self.items[i];
        // The arena holds exactly one NUL at the end of each name (the
        // kernel never returns a name containing a NUL).
        CStr::from_bytes_with_nul(&self.arena[r.start..=r.start + r.len]).expect("NUL-terminated name")
    }
    /// `d_type` from getdents (`DT_UNKNOWN` when the filesystem does not say).
    pub fn dtype(&self, i: usize) -> u8 {
        self.items[i].dtype
    }
    pub fn sort(&mut self) {
        let arena = &self.arena;
        self.items.sort_unstable_by(|a, b| arena[a.start..a.start + a.len].cmp(&arena[b.start..b.start + b.len]));
    }
    /// Binary search in sorted names.
    pub fn contains(&self, name: &[u8]) -> bool {
        self.items.binary_search_by(|r| self.arena[r.start..r.start + r.len].cmp(name)).is_ok()
    }

    /// Reads every entry of `dir` (except `.` and `..`) with `getdents64`,
    /// replacing the current contents. `buf` is the reusable syscall buffer.
    pub fn read(&mut self, dir: BorrowedFd<'_>, buf: &mut [u8]) -> nix::Result<()> {
        self.arena.clear();
        self.items.clear();
        loop {
            // SAFETY: `buf` is valid for writes of `buf.len()` bytes.
            let n = unsafe { libc::syscall(libc::SYS_getdents64, dir.as_raw_fd(), buf.as_mut_ptr(), buf.len()) };
            if n < 0 {
                let e = Errno::last();
                if e == Errno::EINTR {
                    continue;
                }
                return Err(e);
            }
            if n == 0 {
                return Ok(());
            }
            let data = &buf[..n as usize];
            let mut off = 0;
            // struct linux_dirent64 { u64 ino; i64 off; u16 reclen; u8 type; char name[]; }
            while off + 19 <= data.len() {
                let reclen = u16::from_ne_bytes([data[off + 16], data[off + 17]]) as usize;
                if reclen < 19 || off + reclen > data.len() {
                    return Err(Errno::EIO);
                }
                let dtype = data[off + 18];
                let raw = &data[off + 19..off + reclen];
                let len = raw.iter().position(|&b| b == 0).ok_or(Errno::EIO)?;
                let name = &raw[..len];
                if name != b"." && name != b".." && !name.is_empty() {
                    let start = self.arena.len();
                    self.arena.extend_from_slice(name);
                    self.arena.push(0);
                    self.items.push(NameRef { start, len, dtype });
                }
                off += reclen;
            }
        }
    }
}

/// The kind from a `d_type`, when the filesystem gave one.
pub(crate) fn kind_of_dtype(d: u8) -> Option<Kind> {
    Some(match d {
        libc::DT_REG => Kind::File,
        libc::DT_DIR => Kind::Dir,
        libc::DT_LNK => Kind::Symlink,
        libc::DT_CHR => Kind::Char,
        libc::DT_BLK => Kind::Block,
        libc::DT_FIFO => Kind::Fifo,
        libc::DT_SOCK => Kind::Socket,
        _ => return None,
    })
}

/// `readlinkat` without following anything.
pub(crate) fn read_link(dir: BorrowedFd<'_>, name: &CStr) -> nix::Result<Vec<u8>> {
    use std::os::unix::ffi::OsStringExt;
    nix::fcntl::readlinkat(dir, name).map(|s| s.into_vec())
}
