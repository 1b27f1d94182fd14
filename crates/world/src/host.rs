//! The host's facts as a world's parent asks for them while it builds the
//! mount plan, remembered: the plan, the toolchains and the PATH note ask
//! about the same few paths many times (`/root`, `/usr`, each home and each
//! PATH entry), and `realpath(3)` reads every component of a path again on
//! each call (about 250 `readlink`s per `cloche run` before this).
//!
//! Only for the short time one world is being planned: what the host
//! changes meanwhile is not seen, as it would not be between two calls.

use crate::plan::HostFacts;
use std::cell::RefCell;
use std::collections::HashMap;
use std::ffi::OsStr;
use std::hash::{BuildHasherDefault, Hasher};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

/// Symbolic links followed in one resolution at most (as the kernel's).
const MAX_LINKS: u32 = 40;

/// FNV-1a over a path's bytes. The maps below are asked a few hundred
/// times per plan, about paths cloche itself builds: the standard map's
/// keyed SipHash over `Path`'s components (it hashes each component
/// separately, so that `a//b` and `a/b` meet) was a fifth of the plan's
/// time in user space. Here a path is its bytes: two spellings of one path are two
/// entries, which costs a second lookup, never a wrong answer.
#[derive(Default)]
struct Fnv(u64);

impl Hasher for Fnv {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        let mut h = if self.0 == 0 { 0xcbf2_9ce4_8422_2325 } else { self.0 };
        for b in bytes {
            h = (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
        }
        self.0 = h;
    }
}

type Map<V> = HashMap<Box<[u8]>, V, BuildHasherDefault<Fnv>>;

/// The host, each answer kept for the next question.
#[derive(Default)]
pub struct CachedHost {
    /// Absolute path (its bytes, as asked or met) -> its canonical path, if
    /// it exists.
    canon: RefCell<Map<Option<PathBuf>>>,
    /// Path -> `Some(is_dir)` if it exists (not following a final link).
    lstat: RefCell<Map<Option<bool>>>,
}

fn key(p: &Path) -> &[u8] {
    p.as_os_str().as_bytes()
}

impl CachedHost {
    /// One component at a time, each prefix remembered: `dir` is canonical
    /// and `name` a plain name in it.
    fn step(&self, dir: &Path, name: &OsStr, links: &mut u32) -> Option<PathBuf> {
        let cand = dir.join(name);
        if let Some(known) = self.canon.borrow().get(key(&cand)) {
            return known.clone();
        }
        let got = match std::fs::read_link(&cand) {
            Ok(target) => {
                *links += 1;
                if *links > MAX_LINKS {
                    return None;
                }
                // A relative target is relative to the link's directory.
                self.resolve(&dir.join(target), links)
            }
            // EINVAL: it exists and is not a link.
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => Some(cand.clone()),
            Err(_) => None,
        };
        self.canon.borrow_mut().insert(key(&cand).into(), got.clone());
        got
    }

    /// `realpath(3)` of an absolute path, from remembered prefixes (the
    /// whole path first: most questions are asked again as they were).
    fn resolve(&self, p: &Path, links: &mut u32) -> Option<PathBuf> {
        if let Some(known) = self.canon.borrow().get(key(p)) {
            return known.clone();
        }
        let mut out = PathBuf::from("/");
        for c in p.components() {
            match c {
                Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
                Component::ParentDir => {
                    out.pop();
                }
                Component::Normal(name) => out = self.step(&out, name, links)?,
            }
        }
        // Only a whole answer is kept under the path as asked (a failed
        // step above returned before: the prefix that failed is kept).
        self.canon.borrow_mut().insert(key(p).into(), Some(out.clone()));
        Some(out)
    }

    fn lstat(&self, p: &Path) -> Option<bool> {
        if let Some(known) = self.lstat.borrow().get(key(p)) {
            return *known;
        }
        let got = std::fs::symlink_metadata(p).ok().map(|m| m.is_dir());
        self.lstat.borrow_mut().insert(key(p).into(), got);
        got
    }
}

impl HostFacts for CachedHost {
    fn canonical(&self, p: &Path) -> Option<PathBuf> {
        if !p.is_absolute() {
            return std::fs::canonicalize(p).ok();
        }
        self.resolve(p, &mut 0)
    }
    fn is_dir(&self, p: &Path) -> bool {
        self.lstat(p).unwrap_or(false)
    }
    fn exists(&self, p: &Path) -> bool {
        self.lstat(p).is_some()
    }
    fn read_link(&self, p: &Path) -> Option<PathBuf> {
        std::fs::read_link(p).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    /// Every path of a tree with absolute, relative, chained, dangling and
    /// looping links, and `..` after a link, resolves as `realpath(3)` does
    /// (asked twice: the second answer comes from what was remembered).
    #[test]
    fn resolves_as_realpath_does() {
        let dir = tempfile::tempdir().unwrap();
        let root = std::fs::canonicalize(dir.path()).unwrap();
        let r = |p: &str| root.join(p);
        std::fs::create_dir_all(r("a/b/c")).unwrap();
        std::fs::write(r("a/b/file"), b"x").unwrap();
        symlink(r("a/b"), r("abs")).unwrap();
        symlink("a/b/c", r("rel")).unwrap();
        symlink("../b", r("a/b/c/up")).unwrap();
        symlink("rel", r("chain")).unwrap();
        symlink("missing", r("dangling")).unwrap();
        symlink("loop2", r("loop1")).unwrap();
        symlink("loop1", r("loop2")).unwrap();
        let host = CachedHost::default();
        let asks = [
            "",
            "a",
            "a/b",
            "a/b/file",
            "a/b/file/x",
            "abs",
            "abs/c",
            "abs/..",
            "rel",
            "rel/up",
            "rel/up/file",
            "rel/../..",
            "chain",
            "chain/up/c/up",
            "dangling",
            "loop1",
            "loop1/x",
            "nothing",
            "a/./b/../b/c",
            // Two spellings of one path: two entries, one answer.
            "a//b/./c",
            "a/b/c/",
            "abs/c/up/../../b",
        ];
        for round in 0..2 {
            for a in asks {
                let p = r(a);
                assert_eq!(host.canonical(&p), std::fs::canonicalize(&p).ok(), "{a} (round {round})");
            }
        }
        assert!(host.is_dir(&r("abs/c")) && !host.is_dir(&r("abs")) && host.exists(&r("abs")));
        assert!(host.exists(&r("dangling")) && !host.exists(&r("nothing")) && !host.is_dir(&r("a/b/file")));
    }
}
