//! Applying a checked plan (see the module docs of `commit`).

use super::fsx;
use super::{rel, Action, Commit, Op, Root};
use nix::fcntl::OFlag;
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::io::{Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::PathBuf;

/// One applied step.
#[derive(Debug, Clone, Serialize)]
pub struct Applied {
    #[serde(serialize_with = "lossy")]
    pub path: Vec<u8>,
    pub action: &'static str,
    /// For written files: the sha256 of the bytes written.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
}

fn lossy<S: serde::Serializer>(p: &[u8], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&String::from_utf8_lossy(p))
}

/// What [`Commit::apply`] did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    pub applied: Vec<Applied>,
    /// Set when it stopped: the failing step and why. `applied` is then
    /// exactly what reached the host.
    pub error: Option<String>,
}

/// Where a step's new entry waits before step 3.
enum Staged {
    /// A temporary name in the final parent directory.
    Temp(Vec<u8>),
    /// Inside a new directory staged under a temporary name: it arrives
    /// with that directory (the index of its op).
    Within(usize),
    /// Nothing staged (chmod, remove).
    None,
}

impl Commit<'_> {
    /// Applies the plan (which must be [`super::Plan::ok`]).
    pub fn apply(self) -> Report {
        let mut report = Report::default();
        if !self.plan.ok() {
            report.error = Some("the plan has refusals or conflicts".into());
            return report;
        }
        let mut st = Stager {
            c: &self,
            staged: Vec::new(),
            hashes: HashMap::new(),
            uppers: HashMap::new(),
            new_dirs: HashMap::new(),
            buf: Vec::new(),
        };
        // Step 1: stage everything new under temporary names.
        if let Err(e) = st.stage_all() {
            st.unstage(0);
            report.error = Some(e);
            return report;
        }
        // Step 2: make it durable before any of it becomes visible.
        if let Err(e) = self.sync() {
            st.unstage(0);
            report.error = Some(format!("syncfs: {e}"));
            return report;
        }
        // Step 3: into place, in path order.
        for (i, op) in self.plan.ops.iter().enumerate() {
            match st.place(i, op) {
                Ok(()) => report.applied.push(Applied {
                    path: op.path.clone(),
                    action: op.action.name(),
                    sha256: st.hashes.get(&i).cloned(),
                }),
                Err(e) => {
                    st.unstage(i);
                    report.error = Some(format!("{} {}: {e}", op.action.name(), String::from_utf8_lossy(&op.path)));
                    break;
                }
            }
        }
        if let Err(e) = self.sync() {
            report.error.get_or_insert(format!("syncfs: {e}"));
        }
        report
    }

    fn sync(&self) -> nix::Result<()> {
        self.roots.iter().try_for_each(|r| nix::unistd::syncfs(r.fd.as_fd()))
    }
}

struct Stager<'c, 'w> {
    c: &'c Commit<'w>,
    /// Per op, where its entry is staged.
    staged: Vec<Staged>,
    hashes: HashMap<usize, String>,
    /// Open upper directories, by their path.
    uppers: HashMap<PathBuf, OwnedFd>,
    /// Every staged new directory, with the op of the top one it arrives with.
    new_dirs: HashMap<Vec<u8>, usize>,
    /// The copy buffer, allocated once: a zeroed 1 MiB per file was most of
    /// the CPU time of a commit of 100,000 small files.
    buf: Vec<u8>,
}

impl Stager<'_, '_> {
    fn root(&self, op: &Op) -> &Root {
        &self.c.roots[op.root]
    }

    /// The directory `dir` as it is during staging: a path at or below a
    /// staged new directory goes through its top directory's temporary name.
    fn staged_rel(&self, op: &Op, dir: &[u8]) -> Vec<u8> {
        let root = self.root(op);
        let Some(&top) = self.new_dirs.get(dir) else { return rel(&root.path, dir).to_vec() };
        let (Staged::Temp(tmp), o) = (&self.staged[top], &self.c.plan.ops[top]) else {
            return rel(&root.path, dir).to_vec();
        };
        let (parent, _) = fsx::split(&o.path);
        let mut r = rel(&root.path, parent).to_vec();
        if !r.is_empty() {
            r.push(b'/');
        }
        r.extend_from_slice(tmp);
        r.extend_from_slice(&dir[o.path.len()..]);
        r
    }

    /// The staged new directory (its top op) that `path` lies directly in.
    fn within(&self, path: &[u8]) -> Option<usize> {
        self.new_dirs.get(fsx::split(path).0).copied()
    }

    fn stage_all(&mut self) -> Result<(), String> {
        let ops = &self.c.plan.ops;
        let mut dir_modes = Vec::new();
        for (i, op) in ops.iter().enumerate() {
            let staged = self
                .stage(i, op)
                .map_err(|e| format!("{} {}: {e}", op.action.name(), String::from_utf8_lossy(&op.path)))?;
            if let (Action::Mkdir { mode }, false) = (&op.action, matches!(staged, Staged::None)) {
                dir_modes.push((i, *mode));
                let top = match staged {
                    Staged::Within(top) => top,
                    _ => i,
                };
                self.new_dirs.insert(op.path.clone(), top);
            }
            self.staged.push(staged);
        }
        // Directory modes last (a 0555 directory would refuse its contents).
        for (i, mode) in dir_modes.into_iter().rev() {
            let op = &ops[i];
            let (parent, name) = fsx::split(&op.path);
            let dir =
                fsx::open_dir(self.root(op).fd.as_fd(), &self.staged_rel(op, parent)).map_err(|e| e.to_string())?;
            let name = match &self.staged[i] {
                Staged::Temp(t) => t.clone(),
                _ => name.to_vec(),
            };
            fsx::chmod_at(dir.as_fd(), &name, mode)
                .map_err(|e| format!("chmod {}: {e}", String::from_utf8_lossy(&op.path)))?;
        }
        Ok(())
    }

    fn stage(&mut self, i: usize, op: &Op) -> Result<Staged, String> {
        if matches!(op.action, Action::Chmod { .. } | Action::Remove) {
            return Ok(Staged::None);
        }
        let root = self.root(op);
        let (parent, name) = fsx::split(&op.path);
        let dir = fsx::open_dir(root.fd.as_fd(), &self.staged_rel(op, parent)).map_err(|e| e.to_string())?;
        let (staged, at) = match self.within(&op.path) {
            Some(top) => (Staged::Within(top), name.to_vec()),
            None => {
                let t = fsx::temp_name();
                (Staged::Temp(t.clone()), t)
            }
        };
        // New entries belong to the root's owner; a replaced file keeps its
        // host owner; with an owner given, everything written is its.
        let (mut uid, mut gid) = (root.uid, root.gid);
        if op.replaces {
            if let Ok(Some(st)) = fsx::lstat_at(dir.as_fd(), name) {
                (uid, gid) = (st.st_uid, st.st_gid);
            }
        }
        if let Some(owner) = self.c.owner {
            (uid, gid) = owner;
        }
        let mut file = None;
        match &op.action {
            Action::Mkdir { .. } => fsx::mkdir(dir.as_fd(), &at).map_err(|e| e.to_string())?,
            Action::Symlink { target } => fsx::symlink(target, dir.as_fd(), &at).map_err(|e| e.to_string())?,
            Action::Write { .. } => file = Some(fsx::create(dir.as_fd(), &at).map_err(|e| e.to_string())?),
            Action::Chmod { .. } | Action::Remove => unreachable!("not staged"),
        }
        // The entry exists from here on: a failure removes it again (the
        // staged list does not hold it yet).
        let filled = (|| {
            if let (Action::Write { mode, .. }, Some(out)) = (&op.action, file.as_mut()) {
                let hash = self.copy_from_upper(&op.path, out)?;
                nix::sys::stat::fchmod(&*out, nix::sys::stat::Mode::from_bits_truncate(*mode))
                    .map_err(|e| e.to_string())?;
                self.hashes.insert(i, hash);
            }
            fsx::chown_at(dir.as_fd(), &at, uid, gid).map_err(|e| format!("chown: {e}"))
        })();
        if let Err(e) = filled {
            let _ = fsx::remove_tree(dir.as_fd(), &at);
            return Err(e);
        }
        Ok(staged)
    }

    /// Copies the world's version of `path` into `out` (bounded memory),
    /// returning the sha256 of what was written.
    fn copy_from_upper(&mut self, path: &[u8], out: &mut std::fs::File) -> Result<String, String> {
        let (upper, relp) = self.c.world.upper_for(path).ok_or("no upper layer holds this path")?;
        if !self.uppers.contains_key(&upper.upper) {
            let fd = nix::fcntl::open(
                &upper.upper,
                OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
                nix::sys::stat::Mode::empty(),
            )
            .map_err(|e| format!("open the world's upper: {e}"))?;
            self.uppers.insert(upper.upper.clone(), fd);
        }
        let dir: BorrowedFd<'_> = self.uppers[&upper.upper].as_fd();
        let src = fsx::open_beneath(dir, relp, OFlag::O_RDONLY | OFlag::O_NONBLOCK)
            .map_err(|e| format!("open in the world's upper: {e}"))?;
        let mut src = std::fs::File::from(src);
        if !src.metadata().map_err(|e| e.to_string())?.is_file() {
            return Err("not a regular file in the world's upper".into());
        }
        let mut h = Sha256::new();
        if self.buf.is_empty() {
            self.buf = vec![0u8; 1 << 20];
        }
        let buf = &mut self.buf;
        loop {
            let n = src.read(buf).map_err(|e| format!("read: {e}"))?;
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
            out.write_all(&buf[..n]).map_err(|e| format!("write: {e}"))?;
        }
        Ok(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
    }

    /// Step 3 for op `i`.
    fn place(&mut self, i: usize, op: &Op) -> nix::Result<()> {
        let root = self.root(op);
        let (parent, name) = fsx::split(&op.path);
        let dir = fsx::open_dir(root.fd.as_fd(), rel(&root.path, parent))?;
        match (&self.staged[i], &op.action) {
            (Staged::Within(_), _) => Ok(()), // arrived with its directory
            (Staged::None, Action::Remove) => fsx::remove_tree(dir.as_fd(), name).map(drop),
            (Staged::None, Action::Chmod { mode }) => fsx::chmod_at(dir.as_fd(), name, *mode),
            (Staged::Temp(tmp), action) => {
                let tmp = tmp.clone();
                // A directory, or an entry of another kind, is removed
                // first; a file or symlink is replaced atomically.
                if op.replaces {
                    let host = fsx::lstat_at(dir.as_fd(), name)?;
                    let is_dir = host.as_ref().is_some_and(fsx::is_dir);
                    if is_dir || matches!(action, Action::Mkdir { .. }) {
                        fsx::remove_tree(dir.as_fd(), name)?;
                    }
                }
                fsx::rename(dir.as_fd(), &tmp, name, !op.replaces)?;
                self.staged[i] = Staged::None;
                Ok(())
            }
            (Staged::None, _) => Ok(()),
        }
    }

    /// Removes what is still staged from op `from` on.
    fn unstage(&mut self, from: usize) {
        for j in from..self.staged.len() {
            let Staged::Temp(tmp) = &self.staged[j] else { continue };
            let op = &self.c.plan.ops[j];
            let root = self.root(op);
            let (parent, _) = fsx::split(&op.path);
            if let Ok(dir) = fsx::open_dir(root.fd.as_fd(), rel(&root.path, parent)) {
                let _ = fsx::remove_tree(dir.as_fd(), tmp);
            }
        }
    }
}
