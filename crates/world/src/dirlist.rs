//! A directory's entries and their `lstat`, read through the directory's
//! own descriptor: one `open`, its `getdents64` and one `fstatat` per
//! name relative to it, instead of a path walked from `/` for every
//! entry (`rootless::frame` lists some 300 entries of the root filesystem
//! before a world without root is cloned). The system calls are the diff
//! walk's (`diff::sys`).

use crate::diff::sys::{self, Names, St};
use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag};
use nix::sys::stat::Mode;
use nix::unistd::AccessFlags;
use std::ffi::OsString;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};

/// The entries of one directory, sorted by name, each with its `lstat` or
/// the error that refused it (gone since it was listed, ...).
pub struct Listing {
    dir: OwnedFd,
    names: Names,
    stats: Vec<Result<St, Errno>>,
}

impl Listing {
    /// Lists `path`; `Ok(None)` when this process may not read it.
    pub fn of(path: &Path) -> io::Result<Option<Listing>> {
        let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
        let dir = match nix::fcntl::open(path, flags, Mode::empty()) {
            Ok(d) => d,
            Err(Errno::EACCES) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        // One buffer for every listing of this thread: a fresh one was 32 KiB
        // zeroed for each directory listed (and fresh pages whenever the
        // allocator had none free).
        thread_local! {
            static BUF: std::cell::RefCell<Vec<u8>> = std::cell::RefCell::new(vec![0u8; 32 * 1024]);
        }
        let mut names = Names::default();
        BUF.with_borrow_mut(|buf| names.read(dir.as_fd(), buf))?;
        names.sort();
        let stats = (0..names.len()).map(|i| sys::stat_at(dir.as_fd(), names.cname(i))).collect();
        Ok(Some(Listing { dir, names, stats }))
    }

    /// The entries: index, name and `lstat`.
    pub fn entries(&self) -> impl Iterator<Item = (usize, OsString, Result<St, Errno>)> + '_ {
        self.stats.iter().enumerate().map(|(i, st)| (i, OsString::from_vec(self.names.name(i).to_vec()), *st))
    }

    /// `faccessat(2)` of entry `i` with the effective ids.
    pub fn access(&self, i: usize, how: AccessFlags) -> bool {
        nix::unistd::faccessat(self.dir.as_fd(), self.names.cname(i), how, AtFlags::AT_EACCESS).is_ok()
    }

    /// The target of the symbolic link that is entry `i`.
    pub fn read_link(&self, i: usize) -> io::Result<PathBuf> {
        Ok(PathBuf::from(OsString::from_vec(sys::read_link(self.dir.as_fd(), self.names.cname(i))?)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    /// A listing is what `read_dir` and `symlink_metadata` say, sorted;
    /// links are read and entries judged by the kernel.
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
        let got: Vec<OsString> = l.entries().map(|(_, n, _)| n).collect();
        assert_eq!(got, want, "every name, sorted, over several getdents64 calls");
        for (_, n, st) in l.entries() {
            let m = std::fs::symlink_metadata(d.join(&n)).unwrap();
            let st = st.unwrap();
            assert_eq!((st.uid, st.gid, st.mode), (m.uid(), m.gid(), m.mode()), "{n:?}");
        }
        let at = |name: &str| l.entries().find(|(_, n, _)| n == name).unwrap();
        let (dir, link, file) = (at("a-dir"), at("c-link"), at("b-file"));
        assert!(dir.2.unwrap().is_dir() && !link.2.unwrap().is_dir() && !file.2.unwrap().is_dir());
        assert_eq!(link.2.unwrap().kind(), crate::diff::Kind::Symlink);
        assert_eq!(l.read_link(link.0).unwrap(), PathBuf::from("b-file"));
        assert!(l.read_link(file.0).is_err());
        assert!(l.access(dir.0, AccessFlags::W_OK | AccessFlags::X_OK));
        assert!(Listing::of(&d.join("b-file")).is_err(), "not a directory");
    }
}
