//! A directory's entries and their `lstat`, read through the directory's
//! own descriptor: one `open`, its `getdents64` and one `fstatat` per
//! name relative to it, instead of a path walked from `/` for every
//! entry (`rootless::frame` lists some 300 entries of the root filesystem
//! before a world without root is cloned).

use std::ffi::{CStr, CString, OsString};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

/// What `lstat` says of an entry that its choice needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stat {
    pub uid: u32,
    pub gid: u32,
    /// `st_mode`: the type and the permission bits.
    pub mode: u32,
}

impl Stat {
    pub fn is_dir(&self) -> bool {
        self.mode & libc::S_IFMT == libc::S_IFDIR
    }
    pub fn is_symlink(&self) -> bool {
        self.mode & libc::S_IFMT == libc::S_IFLNK
    }
    /// The permission bits (with set-id and sticky).
    pub fn perm(&self) -> u32 {
        self.mode & 0o7777
    }
}

impl Stat {
    /// From what `std::fs` says of a file.
    pub fn of(m: &std::fs::Metadata) -> Stat {
        use std::os::unix::fs::MetadataExt;
        Stat { uid: m.uid(), gid: m.gid(), mode: m.mode() }
    }
}

/// The entries of one directory, sorted by name, each with its `lstat` or
/// the errno that refused it (gone since it was listed, ...).
pub struct Listing {
    dir: OwnedFd,
    pub entries: Vec<(OsString, Result<Stat, i32>)>,
}

impl Listing {
    /// Lists `path`; `Ok(None)` when this process may not read it.
    pub fn of(path: &Path) -> io::Result<Option<Listing>> {
        let c = CString::new(path.as_os_str().as_bytes()).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        // SAFETY: a NUL-terminated path; the descriptor returned is ours.
        let fd = unsafe { libc::open(c.as_ptr(), libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC) };
        if fd < 0 {
            let e = io::Error::last_os_error();
            return if e.kind() == io::ErrorKind::PermissionDenied { Ok(None) } else { Err(e) };
        }
        // SAFETY: `fd` was just opened and is owned by nothing else.
        let dir = unsafe { OwnedFd::from_raw_fd(fd) };
        let mut names = read_names(&dir)?;
        names.sort();
        let entries = names
            .into_iter()
            .map(|n| {
                let st = stat_at(&dir, &n).map_err(|e| e.raw_os_error().unwrap_or(libc::EIO));
                (n, st)
            })
            .collect();
        Ok(Some(Listing { dir, entries }))
    }

    /// `faccessat(2)` of the entry `name` with the effective ids.
    pub fn access(&self, name: &OsString, how: libc::c_int) -> bool {
        let Ok(c) = CString::new(name.as_bytes()) else { return false };
        // SAFETY: a NUL-terminated name relative to a directory we hold.
        unsafe { libc::faccessat(self.dir.as_raw_fd(), c.as_ptr(), how, libc::AT_EACCESS) == 0 }
    }

    /// The target of the symbolic link `name`.
    pub fn read_link(&self, name: &OsString) -> io::Result<PathBuf> {
        let c = CString::new(name.as_bytes()).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        let mut buf = vec![0u8; libc::PATH_MAX as usize];
        // SAFETY: `buf` has `buf.len()` writable bytes; the name is NUL-terminated.
        let n = unsafe { libc::readlinkat(self.dir.as_raw_fd(), c.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        buf.truncate(n as usize);
        Ok(PathBuf::from(OsString::from_vec(buf)))
    }
}

/// `lstat` of `name` in `dir`.
fn stat_at(dir: &OwnedFd, name: &OsString) -> io::Result<Stat> {
    let c = CString::new(name.as_bytes()).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: `st` is plain data the call fills; the name is NUL-terminated.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    let r = unsafe { libc::fstatat(dir.as_raw_fd(), c.as_ptr(), &mut st, libc::AT_SYMLINK_NOFOLLOW) };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(Stat { uid: st.st_uid, gid: st.st_gid, mode: st.st_mode })
}

/// The names in the directory `dir` (without `.` and `..`).
fn read_names(dir: &OwnedFd) -> io::Result<Vec<OsString>> {
    let mut out = Vec::new();
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        // SAFETY: `buf` has `buf.len()` writable bytes for the kernel to fill.
        let n = unsafe { libc::syscall(libc::SYS_getdents64, dir.as_raw_fd(), buf.as_mut_ptr(), buf.len()) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        if n == 0 {
            return Ok(out);
        }
        let mut at = 0usize;
        while at < n as usize {
            // linux_dirent64: d_ino u64, d_off i64, d_reclen u16, d_type u8, d_name.
            let reclen = u16::from_ne_bytes([buf[at + 16], buf[at + 17]]) as usize;
            if reclen == 0 || at + reclen > n as usize {
                return Err(io::Error::other("getdents64: a malformed record"));
            }
            let name = CStr::from_bytes_until_nul(&buf[at + 19..at + reclen])
                .map_err(|_| io::Error::other("getdents64: a name without its NUL"))?;
            let b = name.to_bytes();
            if b != b"." && b != b".." {
                out.push(OsString::from_vec(b.to_vec()));
            }
            at += reclen;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    /// A listing is what `read_dir` and `symlink_metadata` say, sorted;
    /// links are read, and an entry gone since the listing is an errno.
    #[test]
    fn a_listing_is_what_std_sees() {
        let tmp = tempfile::tempdir().unwrap();
        let d = tmp.path();
        std::fs::write(d.join("b-file"), b"x").unwrap();
        std::fs::create_dir(d.join("a-dir")).unwrap();
        std::os::unix::fs::symlink("b-file", d.join("c-link")).unwrap();
        for i in 0..300 {
            std::fs::write(d.join(format!("many-{i:03}-{}", "n".repeat(100))), b"").unwrap();
        }
        let l = Listing::of(d).unwrap().expect("readable");
        let mut want: Vec<OsString> = std::fs::read_dir(d).unwrap().map(|e| e.unwrap().file_name()).collect();
        want.sort();
        let got: Vec<OsString> = l.entries.iter().map(|(n, _)| n.clone()).collect();
        assert_eq!(got, want, "every name, sorted, over several getdents64 calls");
        for (n, st) in &l.entries {
            let m = std::fs::symlink_metadata(d.join(n)).unwrap();
            assert_eq!(st.unwrap(), Stat::of(&m), "{n:?}");
            assert_eq!(m.mode(), st.unwrap().mode);
        }
        let kind = |name: &str| l.entries.iter().find(|(n, _)| n == name).unwrap().1.unwrap();
        assert!(kind("a-dir").is_dir() && !kind("a-dir").is_symlink());
        assert!(kind("c-link").is_symlink() && !kind("b-file").is_dir());
        assert_eq!(l.read_link(&"c-link".into()).unwrap(), PathBuf::from("b-file"));
        assert!(l.read_link(&"b-file".into()).is_err());
        assert!(l.access(&"a-dir".into(), libc::W_OK | libc::X_OK));
        assert!(!l.access(&"nothing".into(), libc::R_OK));
        assert!(Listing::of(&d.join("b-file")).is_err(), "not a directory");
    }
}
