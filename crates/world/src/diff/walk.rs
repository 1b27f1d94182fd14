//! The walk over the upper layer, with lookups in the lower layer only where
//! the upper has an entry (or where the upper hides a lower directory).
//!
//! Iterative depth-first walk: the stack holds, per directory level, the
//! names of the subdirectories still to visit, never an fd. Each directory is
//! opened from the layer root by its relative path with `openat2`
//! (`RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | …`), listed with `getdents64`,
//! and closed before its subdirectories are visited, so the number of open
//! fds stays constant whatever the depth.

use std::ffi::CStr;
use std::fs::File;
use std::io::Seek;
use std::os::fd::{AsFd, BorrowedFd};

use nix::errno::Errno;
use nix::fcntl::OFlag;

use super::collect::{Cat, Collector};
use super::flags::flag_entry;
use super::hash::{open_upper, too_sparse, Content, ContentError};
use super::model::{hex, Change, Entry, Kind, RawPath};
use super::sys::{
    is_opaque, is_planned, kind_of_dtype, open_beneath, open_dir_rel, open_file, read_link, stat_at, stat_at_opt,
    stat_fd, Names, St,
};
use super::{DiffError, DiffOptions, MAX_DEPTH};

/// A subdirectory still to visit.
struct Sub {
    name: Box<[u8]>,
    ino: u64,
    /// The lower layer has a directory at the same path.
    lower_dir: bool,
    /// The directory is as the base has it (mode, owner), maybe but its
    /// mtime (`Some(mtime differs)`): touched, unless something below it
    /// is listed.
    same: Option<bool>,
}

/// A directory that is touched if nothing below it is listed.
#[derive(Clone, Copy)]
struct MaybeTouched {
    mtime: bool,
    /// Copied up by cloche for its mount plan, as the base has it, mtime
    /// included: not listed at all ([`super::sys::PLANNED_XATTR`]).
    planned: bool,
    /// [`Collector::seen`] before its subtree was walked.
    seen: u64,
}

struct Frame {
    /// Length of this directory's path in `Walker::path`.
    path_len: usize,
    /// The lower directory here is hidden (opaque upper dir, or inside one):
    /// lower names absent from the upper are deleted.
    replacing: bool,
    /// Subdirectories still to visit, in reverse order (popped from the end).
    pending: Vec<Sub>,
    /// Decided when the subtree is done.
    maybe: Option<MaybeTouched>,
}

pub(crate) struct Walker<'a> {
    upper: BorrowedFd<'a>,
    lower: BorrowedFd<'a>,
    hash: bool,
    /// `DiffOptions::rootless`.
    rootless: bool,
    out: Collector,
    content: Content,
    /// Path of the current directory ("" for the root, else "/a/b"), then
    /// temporarily of the child being looked at.
    path: Vec<u8>,
    scratch: Vec<u8>,
    dirent_buf: Vec<u8>,
    unames: Names,
    lnames: Names,
    /// The regular file of the entry being looked at, when already open.
    upper_file: Option<((u64, u64), File)>,
}

fn io(op: &'static str, path: &[u8], e: Errno) -> DiffError {
    DiffError::Io { op, path: lossy(path), source: e.into() }
}

fn lossy(path: &[u8]) -> String {
    if path.is_empty() {
        "/".to_owned()
    } else {
        String::from_utf8_lossy(path).into_owned()
    }
}

fn content_err(path: &[u8], e: ContentError) -> DiffError {
    match e {
        ContentError::Sys(op, source) => DiffError::Io { op, path: lossy(path), source },
        ContentError::Changed(side) => DiffError::Changed { path: lossy(path), layer: side },
    }
}

impl<'a> Walker<'a> {
    pub fn new(upper: BorrowedFd<'a>, lower: BorrowedFd<'a>, opts: &DiffOptions) -> Walker<'a> {
        Walker {
            upper,
            lower,
            hash: opts.hash,
            rootless: opts.rootless,
            out: Collector::new(opts.max_entries),
            content: Content::new(),
            path: Vec::with_capacity(256),
            scratch: Vec::with_capacity(256),
            dirent_buf: vec![0; 32 * 1024],
            unames: Names::default(),
            lnames: Names::default(),
            upper_file: None,
        }
    }

    pub fn run(mut self) -> Result<super::FsDiff, DiffError> {
        let ust = stat_fd(self.upper).map_err(|e| io("fstat upper root", b"", e))?;
        let lst = stat_fd(self.lower).map_err(|e| io("fstat lower root", b"", e))?;
        if !ust.is_dir() || !lst.is_dir() {
            return Err(io("open root", b"", Errno::ENOTDIR));
        }
        // Fresh fds on the roots: their own directory offsets (the caller's
        // fds are left untouched and may be reused), and readable even when
        // the caller passed O_PATH.
        let root =
            |fd, side| open_beneath(fd, c".", OFlag::O_RDONLY | OFlag::O_DIRECTORY).map_err(|e| io(side, b"", e));
        let upper = root(self.upper, "open upper root")?;
        let lower = root(self.lower, "open lower root")?;
        let replacing = is_opaque(upper.as_fd(), self.rootless).map_err(|e| io("getxattr upper", b"", e))?;
        let pending = self.visit(upper.as_fd(), Some(lower.as_fd()), replacing)?;
        drop((upper, lower));
        let mut stack = vec![Frame { path_len: 0, replacing, pending, maybe: None }];
        while let Some(top) = stack.last_mut() {
            let Some(sub) = top.pending.pop() else {
                let (path_len, maybe) = (top.path_len, top.maybe);
                stack.pop();
                self.path.truncate(path_len);
                self.dir_done(maybe);
                continue;
            };
            let parent_replacing = top.replacing;
            self.path.truncate(top.path_len);
            self.path.push(b'/');
            self.path.extend_from_slice(&sub.name);
            if stack.len() > MAX_DEPTH {
                return Err(DiffError::TooDeep { path: lossy(&self.path), limit: MAX_DEPTH });
            }
            let ufd = open_dir_rel(self.upper, &self.path[1..], &mut self.scratch)
                .map_err(|e| io("open upper dir", &self.path, e))?;
            let got = stat_fd(ufd.as_fd()).map_err(|e| io("fstat upper dir", &self.path, e))?;
            if got.ino != sub.ino || !got.is_dir() {
                return Err(DiffError::Changed { path: lossy(&self.path), layer: "upper" });
            }
            let lfd = if sub.lower_dir {
                match open_dir_rel(self.lower, &self.path[1..], &mut self.scratch) {
                    Ok(fd) => Some(fd),
                    // the host changed since the lookup: no lower dir any more
                    Err(Errno::ENOENT | Errno::ENOTDIR | Errno::ELOOP) => None,
                    Err(Errno::EXDEV) => return Err(DiffError::LowerSubmount { path: lossy(&self.path) }),
                    Err(e) => return Err(io("open lower dir", &self.path, e)),
                }
            } else {
                None
            };
            let replacing = lfd.is_some()
                && (parent_replacing
                    || is_opaque(ufd.as_fd(), self.rootless).map_err(|e| io("getxattr upper", &self.path, e))?);
            let path_len = self.path.len();
            let maybe = match sub.same {
                Some(mtime) => {
                    let planned = !mtime && self.planned(ufd.as_fd(), c".")?;
                    Some(MaybeTouched { mtime, seen: self.out.seen(), planned })
                }
                None => None,
            };
            let pending = self.visit(ufd.as_fd(), lfd.as_ref().map(|f| f.as_fd()), replacing)?;
            drop((ufd, lfd));
            if pending.is_empty() {
                self.dir_done(maybe);
            } else {
                stack.push(Frame { path_len, replacing, pending, maybe });
            }
        }
        Ok(self.out.finish())
    }

    /// Looks at every entry of one upper directory (path in `self.path`);
    /// returns the subdirectories to visit, in reverse byte order.
    fn visit(&mut self, u: BorrowedFd<'_>, l: Option<BorrowedFd<'_>>, replacing: bool) -> Result<Vec<Sub>, DiffError> {
        let dir_len = self.path.len();
        let mut names = std::mem::take(&mut self.unames);
        let mut lnames = std::mem::take(&mut self.lnames);
        let r = self.visit_names(u, l, replacing, &mut names, &mut lnames);
        self.path.truncate(dir_len);
        self.unames = names;
        self.lnames = lnames;
        r
    }

    fn visit_names(
        &mut self,
        u: BorrowedFd<'_>,
        l: Option<BorrowedFd<'_>>,
        replacing: bool,
        names: &mut Names,
        lnames: &mut Names,
    ) -> Result<Vec<Sub>, DiffError> {
        let dir_len = self.path.len();
        names.read(u, &mut self.dirent_buf).map_err(|e| io("read upper dir", &self.path, e))?;
        names.sort();
        // The lower directory is listed when it is hidden (its children not
        // in the upper are deleted), and when it is small next to the upper
        // one: one getdents then replaces a negative lookup per upper name,
        // and the cost still follows the size of the upper.
        let listed = match l {
            Some(l) if replacing || self.lower_is_small(l, names.len())? => {
                lnames.read(l, &mut self.dirent_buf).map_err(|e| io("read lower dir", &self.path, e))?;
                lnames.sort();
                true
            }
            _ => false,
        };
        let mut subs = Vec::new();
        for i in 0..names.len() {
            self.path.truncate(dir_len);
            self.path.push(b'/');
            self.path.extend_from_slice(names.name(i));
            let l = l.filter(|_| !listed || lnames.contains(names.name(i)));
            self.entry(u, l, names.cname(i), names.dtype(i), &mut subs)?;
        }
        self.upper_file = None;
        self.path.truncate(dir_len);
        if replacing {
            if let Some(l) = l {
                self.hidden_lower(l, names, lnames)?;
            }
        }
        subs.reverse();
        Ok(subs)
    }

    /// Whether listing the lower directory costs less than looking up each of
    /// `n` upper names in it, judged from its size in bytes (tmpfs counts 20
    /// per entry, ext4 about 16 + the name, in 4 KiB blocks). Measured here:
    /// listing and sorting costs about 0.35 µs per lower entry, a negative
    /// lookup about 1.7 µs; a listing of up to ~6 entries per upper name
    /// pays, and its cost stays bounded by the upper.
    fn lower_is_small(&self, l: BorrowedFd<'_>, n: usize) -> Result<bool, DiffError> {
        if n < 8 {
            return Ok(false);
        }
        let st = stat_fd(l).map_err(|e| io("fstat lower dir", &self.path, e))?;
        Ok(st.size <= (n as u64).saturating_mul(128))
    }

    /// Lower children of a hidden (replaced) lower directory that the upper
    /// does not have are deleted.
    fn hidden_lower(&mut self, l: BorrowedFd<'_>, upper: &Names, lower: &Names) -> Result<(), DiffError> {
        let dir_len = self.path.len();
        for i in 0..lower.len() {
            if upper.contains(lower.name(i)) {
                continue;
            }
            self.path.truncate(dir_len);
            self.path.push(b'/');
            self.path.extend_from_slice(lower.name(i));
            let kind = match kind_of_dtype(lower.dtype(i)) {
                Some(k) => k,
                None => stat_at(l, lower.cname(i)).map_err(|e| io("stat lower", &self.path, e))?.kind(),
            };
            self.deleted(kind);
        }
        Ok(())
    }

    /// One upper entry, whose path is in `self.path`.
    fn entry(
        &mut self,
        u: BorrowedFd<'_>,
        l: Option<BorrowedFd<'_>>,
        name: &CStr,
        dtype: u8,
        subs: &mut Vec<Sub>,
    ) -> Result<(), DiffError> {
        let st = self.stat_upper(u, name, dtype)?;
        // `l` is None when the lower has no directory here, or when its
        // listing shows it lacks this name
        let lst = match l {
            Some(l) => stat_at_opt(l, name).map_err(|e| io("stat lower", &self.path, e))?,
            None => None,
        };
        if st.is_reg() && st.nlink > 1 {
            self.out.note_link(st.key(), &self.path);
        }
        if st.is_whiteout() {
            if let Some(lst) = lst {
                self.deleted(lst.kind());
            }
            return Ok(());
        }
        let kind = st.kind();
        let sub = |lower_dir, same| Sub { name: name.to_bytes().into(), ino: st.ino, lower_dir, same };
        let Some(lst) = lst else {
            if kind == Kind::Dir {
                subs.push(sub(false, None));
            }
            return self.added(u, name, &st);
        };
        if lst.kind() != kind {
            if kind == Kind::Dir {
                subs.push(sub(false, None));
            }
            let exec = kind == Kind::File && st.perm() & 0o111 != 0;
            return self.modified(u, name, &st, vec![Change::Type], exec, None);
        }
        let l = l.expect("lower stat implies lower dir");
        let mut changes = Vec::new();
        let mut known_hash = None;
        match kind {
            Kind::File => {
                let key = st.key();
                let cached = if st.nlink > 1 { self.out.link_hash(key) } else { None };
                let want_hash =
                    self.hash && cached.is_none() && !too_sparse(&st) && self.out.would_keep(&self.path, Cat::Modified);
                let (differs, h) = if st.size != lst.size {
                    (true, None)
                } else {
                    // Same size. When the mode or owner differs the entry is
                    // modified anyway: hash while comparing. Else only the
                    // content decides: compare first (no hashing), and hash
                    // from the start only if it differs, so that a
                    // content-identical rewrite costs one read of each side.
                    let meta_same =
                        st.perm() == lst.perm() && (self.rootless || (st.uid, st.gid) == (lst.uid, lst.gid));
                    let mut f = self.upper_file(u, name, &st)?;
                    let r = self.content.compare(&mut f, l, name, &st, want_hash && !meta_same);
                    let (eq, mut h) = r.map_err(|e| content_err(&self.path, e))?;
                    if !eq && want_hash && h.is_none() {
                        f.rewind().map_err(|e| DiffError::Io { op: "seek", path: lossy(&self.path), source: e })?;
                        let r = self.content.hash(&mut f, &st);
                        h = Some(r.map_err(|e| content_err(&self.path, e))?);
                    }
                    (!eq, h)
                };
                if let Some(h) = h {
                    if st.nlink > 1 {
                        self.out.set_link_hash(key, h);
                    }
                }
                known_hash = h.or(cached);
                if differs {
                    changes.push(Change::Content);
                }
            }
            Kind::Symlink => {
                let a = read_link(u, name).map_err(|e| io("readlink upper", &self.path, e))?;
                // a lower link gone or replaced since listed: not the same target
                let b = match read_link(l, name) {
                    Ok(b) => Some(b),
                    Err(Errno::ENOENT | Errno::EINVAL | Errno::ENOTDIR) => None,
                    Err(e) => return Err(io("readlink lower", &self.path, e)),
                };
                if b.as_ref() != Some(&a) {
                    changes.push(Change::Target);
                }
            }
            Kind::Char | Kind::Block if st.rdev != lst.rdev => changes.push(Change::Content),
            _ => {}
        }
        if kind != Kind::Symlink && st.perm() != lst.perm() {
            changes.push(Change::Mode);
        }
        // A world without root writes every file as its caller: its upper
        // says nothing of owners.
        if !self.rootless && (st.uid != lst.uid || st.gid != lst.gid) {
            changes.push(Change::Owner);
        }
        let mtime = st.mtime != lst.mtime;
        if kind == Kind::Dir {
            subs.push(sub(true, changes.is_empty().then_some(mtime)));
            if changes.is_empty() {
                // decided once its subtree is walked
                return Ok(());
            }
        }
        if changes.is_empty() {
            if mtime || !self.planned(u, name)? {
                self.touched(kind, mtime);
            }
            return Ok(());
        }
        let exec = kind == Kind::File
            && if changes.contains(&Change::Content) {
                st.perm() & 0o111 != 0
            } else {
                st.perm() & !lst.perm() & 0o111 != 0
            };
        self.modified(u, name, &st, changes, exec, known_hash)
    }

    /// Whether an upper entry as the base has it is cloche's doing (not
    /// listed as touched): its mark ([`super::sys::PLANNED_XATTR`]); in a
    /// world without root, which could forge any mark its overlay passes
    /// through, every such entry (`DiffOptions::rootless`).
    fn planned(&self, dir: BorrowedFd<'_>, name: &CStr) -> Result<bool, DiffError> {
        if self.rootless {
            return Ok(true);
        }
        is_planned(dir, name).map_err(|e| io("getxattr upper", &self.path, e))
    }

    /// Metadata of an upper entry. When hashing, a regular file (per
    /// `d_type`) is opened first and described with `fstat`, and the open
    /// file is kept for reading: one path lookup less per file.
    fn stat_upper(&mut self, u: BorrowedFd<'_>, name: &CStr, dtype: u8) -> Result<St, DiffError> {
        self.upper_file = None;
        if self.hash && dtype == libc::DT_REG {
            if let Ok(fd) = open_file(u, name) {
                let st = stat_fd(fd.as_fd()).map_err(|e| io("fstat upper", &self.path, e))?;
                if st.is_reg() {
                    self.upper_file = Some((st.key(), File::from(fd)));
                    return Ok(st);
                }
            }
        }
        stat_at(u, name).map_err(|e| io("stat upper", &self.path, e))
    }

    /// The current entry's upper file, already open or opened now (checked
    /// to be the regular file listed as `st`).
    fn upper_file(&mut self, u: BorrowedFd<'_>, name: &CStr, st: &St) -> Result<File, DiffError> {
        match self.upper_file.take() {
            // fresh from open (taken, so read at most once): at offset 0
            Some((key, f)) if key == st.key() => Ok(f),
            _ => open_upper(u, name, st).map_err(|e| content_err(&self.path, e)),
        }
    }

    /// A directory whose subtree is walked (its path in `self.path`): touched
    /// when it was as the base has it and nothing below it was met.
    fn dir_done(&mut self, maybe: Option<MaybeTouched>) {
        if let Some(m) = maybe.filter(|m| m.seen == self.out.seen() && !m.planned) {
            self.touched(Kind::Dir, m.mtime);
        }
    }

    /// An upper entry (path in `self.path`) that is as the base has it but
    /// maybe its mtime.
    fn touched(&mut self, kind: Kind, mtime: bool) {
        self.out.totals.touched += 1;
        if self.out.would_keep(&self.path, Cat::Touched) {
            let mut e = Entry::new(RawPath::from_bytes(self.path.as_slice()), kind);
            if mtime {
                e.changes.push(Change::Mtime);
            }
            self.out.push(e, Cat::Touched, None);
        }
    }

    fn deleted(&mut self, kind: Kind) {
        self.out.totals.deleted += 1;
        if self.out.would_keep(&self.path, Cat::Deleted) {
            let e = Entry::new(RawPath::from_bytes(self.path.as_slice()), kind);
            self.out.push(e, Cat::Deleted, None);
        } else {
            self.out.truncated = true;
        }
    }

    fn added(&mut self, u: BorrowedFd<'_>, name: &CStr, st: &St) -> Result<(), DiffError> {
        self.out.totals.added += 1;
        let exec = st.is_reg() && st.perm() & 0o111 != 0;
        self.report(u, name, st, Cat::Added, Vec::new(), exec, None)
    }

    fn modified(
        &mut self,
        u: BorrowedFd<'_>,
        name: &CStr,
        st: &St,
        changes: Vec<Change>,
        exec: bool,
        known_hash: Option<[u8; 32]>,
    ) -> Result<(), DiffError> {
        self.out.totals.modified += 1;
        self.report(u, name, st, Cat::Modified, changes, exec, known_hash)
    }

    /// Bytes, flags and (when it is kept) the listed entry of an added or
    /// modified upper entry.
    #[allow(clippy::too_many_arguments)]
    fn report(
        &mut self,
        u: BorrowedFd<'_>,
        name: &CStr,
        st: &St,
        cat: Cat,
        changes: Vec<Change>,
        exec: bool,
        known_hash: Option<[u8; 32]>,
    ) -> Result<(), DiffError> {
        let kind = st.kind();
        let link = (st.is_reg() && st.nlink > 1).then(|| st.key());
        if st.is_reg() {
            self.out.count_bytes(link, st.size);
        }
        flag_entry(&mut self.out, &self.path, st, exec, self.hash);
        if !self.out.would_keep(&self.path, cat) {
            self.out.truncated = true;
            return Ok(());
        }
        let mut e = Entry::new(RawPath::from_bytes(self.path.as_slice()), kind);
        e.changes = changes;
        e.uid = Some(st.uid);
        e.gid = Some(st.gid);
        if kind != Kind::Symlink {
            e.mode = Some(st.perm());
        }
        match kind {
            Kind::File => {
                e.size = Some(st.size);
                if self.hash && !too_sparse(st) {
                    let h = match known_hash.or_else(|| link.and_then(|k| self.out.link_hash(k))) {
                        Some(h) => h,
                        None => {
                            let mut f = self.upper_file(u, name, st)?;
                            let h = self.content.hash(&mut f, st).map_err(|e| content_err(&self.path, e))?;
                            if let Some(k) = link {
                                self.out.set_link_hash(k, h);
                            }
                            h
                        }
                    };
                    e.sha256 = Some(hex(&h));
                }
            }
            Kind::Symlink => {
                let t = read_link(u, name).map_err(|e| io("readlink upper", &self.path, e))?;
                e.size = Some(t.len() as u64);
                e.target = Some(RawPath::from_bytes(t));
            }
            Kind::Char | Kind::Block => e.rdev = Some(st.rdev_pair()),
            _ => {}
        }
        self.out.push(e, cat, link);
        Ok(())
    }
}
