//! Committing a kept world's changes to the host.
//!
//! [`Commit::prepare`] plans the whole commit and checks every path before
//! anything is written; [`Commit::apply`] then writes, in three steps:
//!
//! 1. everything new is written beside its place, under temporary names
//!    (`.cloche-…`): a file in its directory, a new directory with all its
//!    contents; nothing visible has changed yet;
//! 2. one `syncfs` per commit root makes all of it durable;
//! 3. in path order, each temporary is renamed into place (after removing
//!    what it replaces), deletions and mode changes are applied; then
//!    `syncfs` again.
//!
//! A failure in step 1 removes the temporaries: nothing was applied. A
//! failure in step 3 stops there and the report lists exactly what was.
//!
//! What is refused (the whole commit is then refused, nothing written):
//! device nodes, FIFOs, sockets, setuid/setgid bits when the policy says
//! refuse (else they are stripped), symlinks leaving the commit roots,
//! paths whose host resolution meets a symlink or leaves the root, a
//! missing parent, deleting a commit root. A conflict is a path the host
//! changed since the world first changed it ([`crate::record`]); `force`
//! overrides conflicts (each one reported), never refusals. Paths outside
//! the commit roots and owner changes are reported as not committed. The
//! fs_diff's `touched` paths (written, but as the base has them) are not
//! changes and are never taken.

mod apply;
pub mod fsx;

use crate::flags::resolve_lexically;
use crate::record::HostState;
use crate::{at_or_below, under_roots, Review};
use cloche_world::diff::{Change, Entry, Kind};
use cloche_world::kept::KeptWorld;
use nix::fcntl::OFlag;
use serde::Serialize;
use std::collections::{HashMap, HashSet};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

pub use apply::{Applied, Report};

/// What a commit takes and how.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Only these paths and what is below them (empty: everything).
    pub paths: Vec<Vec<u8>>,
    /// Never these paths nor what is below them.
    pub exclude: Vec<Vec<u8>>,
    /// Apply over conflicts (each is reported and audited).
    pub force: bool,
    /// Refuse setuid/setgid files instead of stripping the bits.
    pub refuse_setuid: bool,
    /// Owner (uid, gid) of every entry the commit writes, new or replacing
    /// a host entry: the caller a world belongs to (`cloched`). `None`:
    /// new entries take the commit root's owner, replaced ones keep the
    /// host entry's.
    pub owner: Option<(u32, u32)>,
}

/// A path and why it is listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    pub path: Vec<u8>,
    pub why: String,
}

impl Serialize for Item {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut m = s.serialize_map(Some(2))?;
        match std::str::from_utf8(&self.path) {
            Ok(p) => m.serialize_entry("path", p)?,
            Err(_) => {
                use base64::Engine;
                m.serialize_entry("path_b64", &base64::engine::general_purpose::STANDARD.encode(&self.path))?
            }
        }
        m.serialize_entry("why", &self.why)?;
        m.end()
    }
}

/// One step of a commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// A new directory (its contents are separate steps).
    Mkdir {
        mode: u32,
    },
    /// A regular file's content and mode, from the world's upper layer.
    Write {
        mode: u32,
        size: u64,
    },
    Symlink {
        target: Vec<u8>,
    },
    /// Only the mode changes.
    Chmod {
        mode: u32,
    },
    /// The host entry goes (a directory with its whole tree).
    Remove,
}

impl Action {
    pub fn name(&self) -> &'static str {
        match self {
            Action::Mkdir { .. } => "mkdir",
            Action::Write { .. } => "write",
            Action::Symlink { .. } => "symlink",
            Action::Chmod { .. } => "chmod",
            Action::Remove => "remove",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Op {
    pub path: Vec<u8>,
    pub action: Action,
    /// The host has an entry here that this step replaces (removed first
    /// when it is a directory or of another kind).
    pub replaces: bool,
    /// Index of the commit root the path is under.
    root: usize,
}

/// The checked plan.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    pub ops: Vec<Op>,
    pub refused: Vec<Item>,
    pub conflicts: Vec<Item>,
    /// Conflicts overridden by `force`.
    pub forced: Vec<Item>,
    /// Outside the commit roots, or changes that are never committed (owner).
    pub not_committed: Vec<Item>,
    /// setuid/setgid bits stripped.
    pub stripped: Vec<Item>,
    /// Paths the host already has as the world does (a commit done before).
    pub already: usize,
}

impl Plan {
    /// Nothing refused and no conflict left: the plan may be applied.
    pub fn ok(&self) -> bool {
        self.refused.is_empty() && self.conflicts.is_empty()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CommitError {
    #[error("commit root {0}: {1}")]
    Root(String, std::io::Error),
    #[error("the fs_diff is truncated: commit a narrower --path")]
    Truncated,
}

/// A commit root, opened once: every host path is resolved beneath it.
pub(crate) struct Root {
    pub path: Vec<u8>,
    pub fd: OwnedFd,
    /// Owner of new files and directories: the root directory's.
    pub uid: u32,
    pub gid: u32,
}

pub struct Commit<'a> {
    world: &'a KeptWorld,
    roots: Vec<Root>,
    owner: Option<(u32, u32)>,
    pub plan: Plan,
}

/// What one step of a plan writes on the host, for [`Commit::refuse_where`].
pub struct Step<'s> {
    pub op: &'s Op,
    /// The commit root the step is under, opened at planning (the steps
    /// are applied beneath this descriptor).
    pub root: BorrowedFd<'s>,
    /// The commit root's path.
    pub root_path: &'s [u8],
    /// The step's path relative to the root (`""`: the root itself).
    pub rel: &'s [u8],
    /// The parent directory relative to the root (`""`: the root).
    pub parent_rel: &'s [u8],
    /// The parent is a directory this commit creates.
    pub parent_is_new: bool,
}

/// The path below `root` (`/r/a/b` under `/r` → `a/b`; the root itself → ``).
fn rel<'p>(root: &[u8], path: &'p [u8]) -> &'p [u8] {
    let rest = if root == b"/" { &path[1..] } else { &path[root.len()..] };
    rest.strip_prefix(b"/").unwrap_or(rest)
}

impl<'a> Commit<'a> {
    /// Plans the commit of `review` (a world's fs_diff with its roots) from
    /// `world`'s uppers, against the recorded `base` states.
    pub fn prepare(
        review: &Review,
        world: &'a KeptWorld,
        base: &HashMap<Vec<u8>, HostState>,
        opts: &Options,
    ) -> Result<Commit<'a>, CommitError> {
        if review.diff.truncated {
            return Err(CommitError::Truncated);
        }
        let roots = open_roots(&review.roots)?;
        let mut c = Commit { world, roots, owner: opts.owner, plan: Plan::default() };
        let mut entries: Vec<(&Entry, Status)> = Vec::new();
        entries.extend(review.diff.added.iter().map(|e| (e, Status::Added)));
        entries.extend(review.diff.modified.iter().map(|e| (e, Status::Modified)));
        entries.extend(review.diff.deleted.iter().map(|e| (e, Status::Deleted)));
        entries.sort_by(|a, b| a.0.path.as_bytes().cmp(b.0.path.as_bytes()));
        let wanted = Selection::new(&entries, opts);
        let mut new_dirs: HashSet<Vec<u8>> = HashSet::new();
        let mut parents: HashMap<Vec<u8>, Result<(), String>> = HashMap::new();
        for (e, status) in entries {
            let path = e.path.as_bytes();
            if !wanted.takes(path) {
                continue;
            }
            let item = |why: &str| Item { path: path.to_vec(), why: why.to_string() };
            let Some(root) = c.roots.iter().position(|r| at_or_below(path, &r.path)) else {
                c.plan.not_committed.push(item("outside the commit roots"));
                continue;
            };
            let action = match c.action(e, status, opts, &review.roots) {
                Ok(Some(a)) => a,
                Ok(None) => continue,
                Err(why) => {
                    c.plan.refused.push(item(&why));
                    continue;
                }
            };
            if path == c.roots[root].path.as_slice() && !matches!(action, Action::Chmod { .. }) {
                c.plan.refused.push(item("the commit root itself"));
                continue;
            }
            // Already on the host as in the world (an earlier commit): no step.
            if c.already_there(root, path, &action) {
                c.plan.already += 1;
                continue;
            }
            // The host side: the parent must resolve beneath the root with
            // no symlink, or be created by this commit.
            let (parent, _) = fsx::split(path);
            if path != c.roots[root].path.as_slice() && !new_dirs.contains(parent) {
                let r = &c.roots[root];
                let check = parents.entry(parent.to_vec()).or_insert_with(|| {
                    fsx::open_dir(r.fd.as_fd(), rel(&r.path, parent)).map(drop).map_err(|e| host_why(e, parent))
                });
                if let Err(why) = check {
                    c.plan.refused.push(item(why));
                    continue;
                }
            }
            // The base: the host must still be as the world found it.
            let replaced = status == Status::Deleted || e.changes.contains(&Change::Type);
            let now = HostState::read(Path::new(std::ffi::OsStr::from_bytes(path)), replaced);
            let conflict = match (base.get(path), now) {
                (_, Err(err)) => Some(format!("cannot read the host path: {err}")),
                // Added by the world (the host had nothing there) and still
                // absent on the host: nothing to conflict with, recorded or not
                // (records are cut where a huge fs_diff was truncated).
                (None, Ok(HostState::Absent)) if status == Status::Added => None,
                (None, _) => Some("no base state was recorded for it".to_string()),
                (Some(b), Ok(now)) if !b.same_as_base(&now) => {
                    Some("changed on the host since the world changed it".into())
                }
                _ => None,
            };
            if let Some(why) = conflict {
                if !opts.force {
                    c.plan.conflicts.push(item(&why));
                    continue;
                }
                c.plan.forced.push(item(&why));
            }
            if matches!(action, Action::Mkdir { .. }) {
                new_dirs.insert(path.to_vec());
            }
            let replaces = status == Status::Modified;
            c.plan.ops.push(Op { path: path.to_vec(), action, replaces, root });
        }
        Ok(c)
    }

    /// Moves every step for which `why` gives a reason to the refused ones
    /// (the plan is then not [`Plan::ok`]: nothing is applied). `why` sees
    /// each step with its root's descriptor, so that checks look at what
    /// [`Commit::apply`] would write, not at a path resolved again.
    pub fn refuse_where(&mut self, mut why: impl FnMut(&Step<'_>) -> Option<String>) {
        let new_dirs: HashSet<Vec<u8>> =
            self.plan.ops.iter().filter(|o| matches!(o.action, Action::Mkdir { .. })).map(|o| o.path.clone()).collect();
        let mut kept = Vec::with_capacity(self.plan.ops.len());
        for op in std::mem::take(&mut self.plan.ops) {
            let r = &self.roots[op.root];
            let (parent, _) = fsx::split(&op.path);
            let step = Step {
                op: &op,
                root: r.fd.as_fd(),
                root_path: &r.path,
                rel: rel(&r.path, &op.path),
                parent_rel: if op.path == r.path { b"" } else { rel(&r.path, parent) },
                parent_is_new: new_dirs.contains(parent),
            };
            match why(&step) {
                Some(w) => self.plan.refused.push(Item { path: op.path.clone(), why: w }),
                None => kept.push(op),
            }
        }
        self.plan.ops = kept;
    }

    /// The step for one entry: `Ok(None)` when nothing is to be written
    /// (reported as not committed), `Err` when it is refused.
    fn action(
        &mut self,
        e: &Entry,
        status: Status,
        opts: &Options,
        roots: &[PathBuf],
    ) -> Result<Option<Action>, String> {
        let path = e.path.as_bytes();
        if status == Status::Deleted {
            return Ok(Some(Action::Remove));
        }
        let mut mode = e.mode.unwrap_or(0o644) & 0o7777;
        match e.kind {
            Kind::Char | Kind::Block => return Err("device node".into()),
            Kind::Fifo => return Err("fifo".into()),
            Kind::Socket => return Err("socket".into()),
            Kind::Symlink => {
                let target = e.target.as_ref().map(|t| t.as_bytes().to_vec()).unwrap_or_default();
                if !under_roots(&resolve_lexically(path, &target), roots) {
                    return Err("symlink leaves the commit roots".into());
                }
                if status == Status::Modified && !e.changes.iter().any(|c| matches!(c, Change::Type | Change::Target)) {
                    return self.not_committed(path, "owner changes are never committed");
                }
                return Ok(Some(Action::Symlink { target }));
            }
            Kind::File | Kind::Dir => {}
        }
        if mode & 0o6000 != 0 {
            if opts.refuse_setuid {
                return Err(if mode & 0o4000 != 0 { "setuid".into() } else { "setgid".into() });
            }
            self.plan.stripped.push(Item { path: path.to_vec(), why: "setuid/setgid bits stripped".into() });
            mode &= !0o6000;
        }
        let has = |c: Change| e.changes.contains(&c);
        Ok(Some(match (e.kind, status) {
            (Kind::Dir, Status::Added) => Action::Mkdir { mode },
            (Kind::Dir, _) if has(Change::Type) => Action::Mkdir { mode },
            (Kind::Dir, _) if has(Change::Mode) => Action::Chmod { mode },
            (Kind::File, Status::Added) => Action::Write { mode, size: e.size.unwrap_or(0) },
            (Kind::File, _) if has(Change::Type) || has(Change::Content) => {
                Action::Write { mode, size: e.size.unwrap_or(0) }
            }
            (Kind::File, _) if has(Change::Mode) => Action::Chmod { mode },
            _ if has(Change::Owner) => return self.not_committed(path, "owner changes are never committed"),
            _ => {
                // Nothing but times differs (the fs_diff lists such paths as
                // touched, which a commit never takes): nothing to write.
                self.plan.already += 1;
                return Ok(None);
            }
        }))
    }

    /// True when the host already holds what `action` would write.
    fn already_there(&self, root: usize, path: &[u8], action: &Action) -> bool {
        let r = &self.roots[root];
        let (parent, name) = fsx::split(path);
        let dir = match fsx::open_dir(r.fd.as_fd(), rel(&r.path, parent)) {
            Ok(d) => d,
            // Nothing left to delete where even the parent is gone.
            Err(nix::errno::Errno::ENOENT) => return matches!(action, Action::Remove),
            Err(_) => return false,
        };
        let host = match fsx::lstat_at(dir.as_fd(), name) {
            Ok(h) => h,
            Err(_) => return false,
        };
        let kind = host.as_ref().map(|h| h.st_mode & libc::S_IFMT);
        let perm = host.as_ref().map(|h| h.st_mode & 0o7777);
        match action {
            Action::Remove => host.is_none(),
            Action::Mkdir { mode } => kind == Some(libc::S_IFDIR) && perm == Some(*mode),
            Action::Chmod { mode } => perm == Some(*mode),
            Action::Symlink { target } => {
                kind == Some(libc::S_IFLNK)
                    && nix::fcntl::readlinkat(dir.as_fd(), std::ffi::OsStr::from_bytes(name))
                        .is_ok_and(|t| t.as_bytes() == target.as_slice())
            }
            Action::Write { mode, size } => {
                kind == Some(libc::S_IFREG)
                    && perm == Some(*mode)
                    && host.as_ref().is_some_and(|h| h.st_size as u64 == *size)
                    && self.same_content(&dir, name, path)
            }
        }
    }

    /// The host file `name` in `dir` has the bytes of the world's `path`.
    fn same_content(&self, dir: &OwnedFd, name: &[u8], path: &[u8]) -> bool {
        let Some((upper, relp)) = self.world.upper_for(path) else { return false };
        let open_upper = || {
            let u = nix::fcntl::open(
                &upper.upper,
                OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
                nix::sys::stat::Mode::empty(),
            )?;
            fsx::open_beneath(u.as_fd(), relp, OFlag::O_RDONLY | OFlag::O_NONBLOCK)
        };
        let (Ok(a), Ok(b)) = (open_upper(), fsx::open_beneath(dir.as_fd(), name, OFlag::O_RDONLY | OFlag::O_NONBLOCK))
        else {
            return false;
        };
        matches!((hash(a), hash(b)), (Some(x), Some(y)) if x == y)
    }

    fn not_committed(&mut self, path: &[u8], why: &str) -> Result<Option<Action>, String> {
        self.plan.not_committed.push(Item { path: path.to_vec(), why: why.into() });
        Ok(None)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Status {
    Added,
    Modified,
    Deleted,
}

/// `--path` / `--exclude`: a new directory on the way to a wanted path is
/// wanted too (its contents could not be written without it).
struct Selection<'o> {
    opts: &'o Options,
    ancestors: HashSet<Vec<u8>>,
}

impl<'o> Selection<'o> {
    fn new(entries: &[(&Entry, Status)], opts: &'o Options) -> Selection<'o> {
        let mut ancestors = HashSet::new();
        for p in &opts.paths {
            let mut cur = p.as_slice();
            while let Some(i) = cur.iter().rposition(|&b| b == b'/').filter(|&i| i > 0) {
                cur = &cur[..i];
                ancestors.insert(cur.to_vec());
            }
        }
        let new_dir =
            |e: &Entry, s: Status| e.kind == Kind::Dir && (s == Status::Added || e.changes.contains(&Change::Type));
        let ancestors = entries
            .iter()
            .filter(|(e, s)| new_dir(e, *s) && ancestors.contains(e.path.as_bytes()))
            .map(|(e, _)| e.path.as_bytes().to_vec())
            .collect();
        Selection { opts, ancestors }
    }

    fn takes(&self, path: &[u8]) -> bool {
        if self.opts.exclude.iter().any(|x| at_or_below(path, x)) {
            return false;
        }
        self.opts.paths.is_empty()
            || self.opts.paths.iter().any(|p| at_or_below(path, p))
            || self.ancestors.contains(path)
    }
}

/// sha256 of a regular file's bytes.
fn hash(fd: OwnedFd) -> Option<[u8; 32]> {
    use sha2::Digest;
    use std::io::Read;
    let mut f = std::fs::File::from(fd);
    let md = f.metadata().ok()?;
    if !md.is_file() {
        return None;
    }
    let mut h = sha2::Sha256::new();
    let mut buf = vec![0u8; read_buf_len(md.len())];
    loop {
        let n = f.read(&mut buf).ok()?;
        if n == 0 {
            return Some(h.finalize().into());
        }
        h.update(&buf[..n]);
    }
}

/// A read buffer for a file of `len` bytes: its size and one byte more (to
/// see its end in one read), at most 64 KiB. A zeroed 64 KiB per file is
/// noticeable over 100,000 small files.
pub(crate) fn read_buf_len(len: u64) -> usize {
    len.saturating_add(1).min(1 << 16) as usize
}

fn host_why(e: nix::errno::Errno, parent: &[u8]) -> String {
    use nix::errno::Errno;
    let p = String::from_utf8_lossy(parent);
    match e {
        Errno::ELOOP => format!("the host path {p} goes through a symlink"),
        Errno::EXDEV => format!("the host path {p} leaves the commit root"),
        Errno::ENOENT => format!("the host directory {p} does not exist"),
        Errno::ENOTDIR => format!("the host path {p} is not a directory"),
        e => format!("the host path {p}: {e}"),
    }
}

fn open_roots(roots: &[PathBuf]) -> Result<Vec<Root>, CommitError> {
    roots
        .iter()
        .map(|r| {
            let err = |e: std::io::Error| CommitError::Root(r.display().to_string(), e);
            let fd = nix::fcntl::open(
                r,
                OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
                nix::sys::stat::Mode::empty(),
            )
            .map_err(|e| err(e.into()))?;
            let st = nix::sys::stat::fstat(&fd).map_err(|e| err(e.into()))?;
            Ok(Root { path: r.as_os_str().as_bytes().to_vec(), fd, uid: st.st_uid, gid: st.st_gid })
        })
        .collect()
}

#[cfg(test)]
mod tests;
