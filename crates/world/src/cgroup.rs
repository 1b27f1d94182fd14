//! cgroup limits for a world, on v2 (when the unified hierarchy carries the
//! memory, pids and cpu controllers) or v1 (one hierarchy per controller, as on
//! hybrid hosts).
//!
//! Joining without the RCU wait: writing a pid into `cgroup.procs` makes the
//! writer wait for an RCU grace period when attaches are sporadic (about
//! 11 ms here). Two ways avoid it:
//! - v2: `clone3(CLONE_INTO_CGROUP)` places the world's first process in its
//!   cgroup at birth;
//! - v1: the child moves *itself* as a single thread by writing "0" to each
//!   hierarchy's `tasks` file, which skips the global threadgroup lock (about
//!   0.05 ms). The child is single-threaded at that point, so the thread is
//!   the whole process; everything it forks later is born inside.

use std::fs;
use std::io::{self, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

/// Top-level directory cloche creates in each hierarchy.
const PARENT: &str = "cloche";
const CONTROLLERS: [&str; 3] = ["memory", "pids", "cpu"];

#[derive(Debug, thiserror::Error)]
#[error("cgroup {what} {path}: {source}")]
pub struct CgroupError {
    pub what: &'static str,
    pub path: PathBuf,
    pub source: io::Error,
}

fn err<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> CgroupError + 'a {
    move |source| CgroupError { what, path: path.to_path_buf(), source }
}

/// Where the controllers live on this host.
#[derive(Debug, Clone, PartialEq)]
pub enum Layout {
    /// Unified hierarchy with memory, pids and cpu available.
    V2 { root: PathBuf },
    /// One mount per controller (paths in CONTROLLERS order).
    V1 { memory: PathBuf, pids: PathBuf, cpu: PathBuf },
    /// Controllers missing; `missing` names them.
    Unavailable { missing: Vec<&'static str> },
}

impl Layout {
    /// Reads /proc/self/mountinfo and the v2 controller list.
    pub fn detect() -> Layout {
        let info = crate::sys::mountinfo().unwrap_or_default();
        Self::from_mountinfo(&info, |root| fs::read_to_string(root.join("cgroup.controllers")).ok())
    }

    /// Pure part of `detect`, for tests.
    pub fn from_mountinfo(info: &str, v2_controllers: impl Fn(&Path) -> Option<String>) -> Layout {
        let mut v1: [Option<PathBuf>; 3] = Default::default();
        let mut v2_root = None;
        for line in info.lines() {
            let Some((left, right)) = line.split_once(" - ") else { continue };
            let mountpoint = left.split(' ').nth(4).map(unescape);
            let mut r = right.split(' ');
            let (fstype, _src, opts) = (r.next(), r.next(), r.next().unwrap_or(""));
            let Some(mp) = mountpoint else { continue };
            match fstype {
                Some("cgroup2") if v2_root.is_none() => v2_root = Some(mp),
                Some("cgroup") => {
                    for (i, c) in CONTROLLERS.iter().enumerate() {
                        if opts.split(',').any(|o| o == *c) && v1[i].is_none() {
                            v1[i] = Some(mp.clone());
                        }
                    }
                }
                _ => {}
            }
        }
        if let Some(root) = v2_root {
            let have = v2_controllers(&root).unwrap_or_default();
            if CONTROLLERS.iter().all(|c| have.split_whitespace().any(|h| h == *c)) {
                return Layout::V2 { root };
            }
        }
        match v1 {
            [Some(memory), Some(pids), Some(cpu)] => Layout::V1 { memory, pids, cpu },
            _ => Layout::Unavailable {
                missing: CONTROLLERS.iter().zip(v1.iter()).filter(|(_, p)| p.is_none()).map(|(c, _)| *c).collect(),
            },
        }
    }

    /// "v2", "v1" or "none", for reports.
    pub fn name(&self) -> &'static str {
        match self {
            Layout::V2 { .. } => "v2",
            Layout::V1 { .. } => "v1",
            Layout::Unavailable { .. } => "none",
        }
    }

    /// v1: the `tasks` files of world `id` the child writes "0" into; v2:
    /// none (the child is born in its cgroup).
    pub fn tasks_files(&self, id: &str) -> Vec<PathBuf> {
        match self {
            Layout::V1 { .. } => self.dirs(id).into_iter().map(|d| d.join("tasks")).collect(),
            _ => Vec::new(),
        }
    }

    /// Ids of the worlds that have a cgroup (the first hierarchy is enough:
    /// a world's cgroups are made and removed together, first to last).
    pub fn world_ids(&self) -> Vec<String> {
        let Some(root) = self.roots().into_iter().next() else { return Vec::new() };
        let Ok(rd) = fs::read_dir(root.join(PARENT)) else { return Vec::new() };
        rd.flatten()
            .filter(|e| e.file_type().map(|t| t.is_dir()).unwrap_or(false))
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|id| crate::state::valid_id(id))
            .collect()
    }

    /// The directory of world `id` in each hierarchy.
    fn dirs(&self, id: &str) -> Vec<PathBuf> {
        self.roots().into_iter().map(|r| r.join(PARENT).join(id)).collect()
    }

    fn roots(&self) -> Vec<PathBuf> {
        match self {
            Layout::V2 { root } => vec![root.clone()],
            Layout::V1 { memory, pids, cpu } => vec![memory.clone(), pids.clone(), cpu.clone()],
            Layout::Unavailable { .. } => vec![],
        }
    }
}

/// mountinfo escapes space, tab, newline and backslash as \ooo.
pub(crate) fn unescape(s: &str) -> PathBuf {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 4 <= b.len() {
            if let Ok(v) = u8::from_str_radix(std::str::from_utf8(&b[i + 1..i + 4]).unwrap_or("x"), 8) {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    use std::os::unix::ffi::OsStringExt;
    PathBuf::from(std::ffi::OsString::from_vec(out))
}

/// Resource limits of one world.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limits {
    pub memory: u64,
    pub pids: u64,
    pub cpus: f64,
}

/// One world's cgroup directories, created with their limits set.
#[derive(Debug)]
pub struct WorldCgroup {
    layout: Layout,
    dirs: Vec<PathBuf>,
    /// v2: the cgroup directory, for CLONE_INTO_CGROUP.
    dir_fd: Option<OwnedFd>,
}

impl WorldCgroup {
    /// Creates the world's cgroup(s) and writes the limits.
    pub fn create(layout: &Layout, id: &str, limits: &Limits) -> Result<WorldCgroup, CgroupError> {
        let mut cg = WorldCgroup { layout: layout.clone(), dirs: Vec::new(), dir_fd: None };
        match layout {
            Layout::Unavailable { .. } => {}
            Layout::V2 { root } => {
                let dir = root.join(PARENT).join(id);
                make_world_dir(&dir, |parent| ensure_parent_v2(root, parent))?;
                cg.dirs.push(dir.clone());
                write(&dir.join("memory.max"), &limits.memory.to_string())?;
                let _ = write(&dir.join("memory.swap.max"), "0"); // absent without swap accounting
                write(&dir.join("pids.max"), &limits.pids.to_string())?;
                write(&dir.join("cpu.max"), &format!("{} 100000", cpu_quota(limits.cpus)))?;
                let fd = fs::File::open(&dir).map_err(err("open", &dir))?;
                cg.dir_fd = Some(fd.into());
            }
            Layout::V1 { .. } => {
                for dir in layout.dirs(id) {
                    make_world_dir(&dir, make_parent)?;
                    cg.dirs.push(dir);
                }
                let (mem, pids, cpu) = (&cg.dirs[0], &cg.dirs[1], &cg.dirs[2]);
                write(&mem.join("memory.limit_in_bytes"), &limits.memory.to_string())?;
                // Without swap accounting this file does not exist; with it,
                // the world may not swap past its limit.
                let memsw = mem.join("memory.memsw.limit_in_bytes");
                if memsw.exists() {
                    write(&memsw, &limits.memory.to_string())?;
                }
                write(&pids.join("pids.max"), &limits.pids.to_string())?;
                write(&cpu.join("cpu.cfs_period_us"), "100000")?;
                write(&cpu.join("cpu.cfs_quota_us"), &cpu_quota(limits.cpus).to_string())?;
            }
        }
        Ok(cg)
    }

    /// v2: the directory fd for CLONE_INTO_CGROUP.
    pub fn clone_into(&self) -> Option<BorrowedFd<'_>> {
        self.dir_fd.as_ref().map(|f| f.as_fd())
    }

    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// Counters of limit events so far (memory, pids), to tell which limits
    /// one entry of a batch ran into (`newly_hit`).
    pub fn limit_events(&self) -> [u64; 2] {
        let read = |p: PathBuf| fs::read_to_string(p).unwrap_or_default();
        let field = |text: &str, key: &str| -> u64 {
            text.lines().find_map(|l| l.strip_prefix(key).map(|v| v.trim().parse().unwrap_or(0))).unwrap_or(0)
        };
        match &self.layout {
            Layout::V2 { .. } => {
                let d = &self.dirs[0];
                let m = read(d.join("memory.events"));
                [field(&m, "oom_kill ") + field(&m, "max "), field(&read(d.join("pids.events")), "max ")]
            }
            Layout::V1 { .. } => {
                let (mem, pids) = (&self.dirs[0], &self.dirs[1]);
                let oom = field(&read(mem.join("memory.oom_control")), "oom_kill ");
                let failcnt = read(mem.join("memory.failcnt")).trim().parse::<u64>().unwrap_or(0);
                [oom + failcnt, field(&read(pids.join("pids.events")), "max ")]
            }
            Layout::Unavailable { .. } => [0, 0],
        }
    }

    /// SIGKILLs every task of the world but `keep` (the init), until none is
    /// left: a timed-out batch entry and everything it started.
    pub fn kill_all_but(&self, keep: libc::pid_t) {
        let Some(dir) = self.dirs.first() else { return };
        for _ in 0..100 {
            let text = fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
            let others: Vec<i32> = text.lines().filter_map(|l| l.trim().parse().ok()).filter(|p| *p != keep).collect();
            if others.is_empty() {
                return;
            }
            for pid in others {
                // SAFETY: kill with an integer pid and signal.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    }

    /// Which limits the world ran into ("memory", "pids").
    pub fn limits_hit(&self) -> Vec<&'static str> {
        let mut hit = Vec::new();
        let read = |p: PathBuf| fs::read_to_string(p).unwrap_or_default();
        let field = |text: &str, key: &str| -> u64 {
            text.lines().find_map(|l| l.strip_prefix(key).map(|v| v.trim().parse().unwrap_or(0))).unwrap_or(0)
        };
        match &self.layout {
            Layout::V2 { .. } => {
                let d = &self.dirs[0];
                if field(&read(d.join("memory.events")), "oom_kill ") > 0
                    || field(&read(d.join("memory.events")), "max ") > 0
                {
                    hit.push("memory");
                }
                if field(&read(d.join("pids.events")), "max ") > 0 {
                    hit.push("pids");
                }
            }
            Layout::V1 { .. } => {
                let (mem, pids) = (&self.dirs[0], &self.dirs[1]);
                let oom = field(&read(mem.join("memory.oom_control")), "oom_kill ");
                let failcnt = read(mem.join("memory.failcnt")).trim().parse::<u64>().unwrap_or(0);
                if oom > 0 || failcnt > 0 {
                    hit.push("memory");
                }
                if field(&read(pids.join("pids.events")), "max ") > 0 {
                    hit.push("pids");
                }
            }
            Layout::Unavailable { .. } => {}
        }
        hit
    }

    /// Kills every task still in the world's cgroup and removes the
    /// directories. Retries briefly while exiting tasks are still accounted.
    pub fn remove(mut self) -> Result<(), CgroupError> {
        self.dir_fd = None;
        remove_dirs(&self.dirs)
    }

    /// The directories to remove once the world's processes are gone, made
    /// ready for a forked child ([`Removal::in_child`]).
    pub fn into_removal(self) -> Removal {
        let c = |p: &Path| std::ffi::CString::new(std::os::unix::ffi::OsStrExt::as_bytes(p.as_os_str())).ok();
        let parents = self.dirs.iter().filter_map(|d| d.parent()).filter(|p| p.ends_with(PARENT));
        Removal {
            c_dirs: self.dirs.iter().filter_map(|d| c(d)).collect(),
            c_parents: parents.filter_map(c).collect(),
            dirs: self.dirs.clone(),
        }
    }
}

/// A world's cgroup directories, to be removed after its last process
/// (a one-shot world's init, whose exit took every other process of its pid
/// namespace with it). The paths are made before any fork, so that a child
/// of `Teardown::in_background` removes them after cloche has answered,
/// with async-signal-safe calls only (about 0.1 ms off a run's end).
#[derive(Debug)]
pub struct Removal {
    dirs: Vec<PathBuf>,
    c_dirs: Vec<std::ffi::CString>,
    c_parents: Vec<std::ffi::CString>,
}

impl Removal {
    /// Removes them here and now, killing what is left in them first.
    pub fn now(self) -> Result<(), CgroupError> {
        remove_dirs(&self.dirs)
    }

    /// The world directories and their `cloche` parents, NUL-terminated,
    /// for a child that removes them with raw system calls
    /// (`teardown_child`).
    pub(crate) fn c_paths(&self) -> (Vec<std::ffi::CString>, Vec<std::ffi::CString>) {
        (self.c_dirs.clone(), self.c_parents.clone())
    }
}

/// Creates a world's cgroup directory, and its `cloche` parent when absent
/// (`parent` makes it). The parent is removed by the last world to leave
/// (`remove_dirs`), so it may vanish between the two mkdirs: retry.
fn make_world_dir(dir: &Path, parent: impl Fn(&Path) -> Result<(), CgroupError>) -> Result<(), CgroupError> {
    let up = dir.parent().expect("a world cgroup has a parent");
    for _ in 0..8 {
        match fs::create_dir(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => parent(up)?,
            Err(e) => return Err(err("mkdir", dir)(e)),
        }
    }
    Err(err("mkdir", dir)(io::Error::from_raw_os_error(libc::ENOENT)))
}

/// Creates the `cloche` parent of v1 world cgroups (already there is fine).
fn make_parent(parent: &Path) -> Result<(), CgroupError> {
    match fs::create_dir(parent) {
        Err(e) if e.kind() != io::ErrorKind::AlreadyExists => Err(err("mkdir", parent)(e)),
        _ => Ok(()),
    }
}

/// Removes world cgroup directories, then their `cloche` parent when no
/// other world is left in it (a busy parent stays: that is not an error).
fn remove_dirs(dirs: &[PathBuf]) -> Result<(), CgroupError> {
    remove_world_dirs(dirs)?;
    for parent in dirs.iter().filter_map(|d| d.parent()) {
        if parent.file_name() == Some(std::ffi::OsStr::new(PARENT)) {
            let _ = fs::remove_dir(parent);
        }
    }
    Ok(())
}

fn remove_world_dirs(dirs: &[PathBuf]) -> Result<(), CgroupError> {
    for dir in dirs {
        let mut tries = 0;
        loop {
            match fs::remove_dir(dir) {
                Ok(()) => break,
                Err(e) if e.kind() == io::ErrorKind::NotFound => break,
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) && tries < 200 => {
                    kill_tasks(dir);
                    tries += 1;
                    std::thread::sleep(std::time::Duration::from_millis(5));
                }
                Err(e) => return Err(err("rmdir", dir)(e)),
            }
        }
    }
    Ok(())
}

/// SIGKILLs every process listed in the cgroup.
fn kill_tasks(dir: &Path) {
    for name in ["cgroup.procs", "tasks"] {
        if let Ok(text) = fs::read_to_string(dir.join(name)) {
            for pid in text.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
                // SAFETY: kill with an integer pid and signal.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
    }
}

/// Limits whose event counters grew between two `limit_events` readings.
pub fn newly_hit(before: &[u64; 2], after: &[u64; 2]) -> Vec<&'static str> {
    ["memory", "pids"].into_iter().zip(before.iter().zip(after)).filter(|(_, (b, a))| a > b).map(|(n, _)| n).collect()
}

/// Removes the cgroups world `id` may have left (a run of it that died),
/// killing what is left in them: before a run continues that world (its id
/// held, so no sweep removes them meanwhile) makes them again.
pub fn remove_stale(layout: &Layout, id: &str) -> Result<(), CgroupError> {
    remove_world_dirs(&layout.dirs(id))
}

/// Removes the cgroups of worlds whose runs are gone (`is_live` false),
/// killing what is left in them. Returns the ids removed.
pub fn sweep(layout: &Layout, is_live: impl Fn(&str) -> bool) -> Vec<String> {
    let mut swept = Vec::new();
    for id in layout.world_ids() {
        if !is_live(&id) && remove_dirs(&layout.dirs(&id)).is_ok() {
            swept.push(id);
        }
    }
    swept
}

fn ensure_parent_v2(root: &Path, parent: &Path) -> Result<(), CgroupError> {
    make_parent(parent)?;
    let want = "+memory +pids +cpu";
    let root_ctl = root.join("cgroup.subtree_control");
    let cur = fs::read_to_string(&root_ctl).unwrap_or_default();
    if !CONTROLLERS.iter().all(|c| cur.split_whitespace().any(|h| h == *c)) {
        write(&root_ctl, want)?;
    }
    write(&parent.join("cgroup.subtree_control"), want)
}

fn cpu_quota(cpus: f64) -> u64 {
    ((cpus * 100_000.0).round() as u64).max(1000)
}

fn write(path: &Path, value: &str) -> Result<(), CgroupError> {
    let mut f = fs::OpenOptions::new().write(true).open(path).map_err(err("open", path))?;
    f.write_all(value.as_bytes()).map_err(err("write", path))
}

/// Child side (v1): moves the calling thread into each cgroup by writing "0"
/// to its `tasks` file (see the module docs for why "0" and `tasks`).
pub fn join_self(tasks: &[PathBuf]) -> io::Result<()> {
    for t in tasks {
        let mut f = fs::OpenOptions::new().write(true).open(t)?;
        f.write_all(b"0")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "\
27 1 254:0 / / rw,relatime - ext4 /dev/vda rw
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";

    #[test]
    fn hybrid_without_v2_controllers_is_v1() {
        let l = Layout::from_mountinfo(HYBRID, |_| Some(String::new()));
        assert_eq!(
            l,
            Layout::V1 {
                memory: "/sys/fs/cgroup/memory".into(),
                pids: "/sys/fs/cgroup/pids".into(),
                cpu: "/sys/fs/cgroup/cpu".into()
            }
        );
    }

    #[test]
    fn v2_with_controllers_wins() {
        let l = Layout::from_mountinfo(HYBRID, |_| Some("cpuset cpu io memory pids".into()));
        assert_eq!(l, Layout::V2 { root: "/sys/fs/cgroup/unified".into() });
    }

    #[test]
    fn combined_v1_mounts_and_missing_ones() {
        let info = "32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct\n\
                    35 31 0:32 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n";
        let l = Layout::from_mountinfo(info, |_| None);
        assert_eq!(l, Layout::Unavailable { missing: vec!["pids"] });
    }

    #[test]
    fn escaped_mountpoints() {
        assert_eq!(unescape("/a\\040b"), PathBuf::from("/a b"));
        assert_eq!(unescape("/plain"), PathBuf::from("/plain"));
    }

    #[test]
    fn the_parent_is_made_on_demand_and_left_by_the_last_world() {
        let tmp = tempfile::tempdir().unwrap();
        let (a, b) = (tmp.path().join(PARENT).join("a"), tmp.path().join(PARENT).join("b"));
        make_world_dir(&a, make_parent).unwrap();
        make_world_dir(&b, make_parent).unwrap();
        remove_dirs(std::slice::from_ref(&a)).unwrap();
        assert!(tmp.path().join(PARENT).is_dir(), "b still lives there");
        remove_dirs(std::slice::from_ref(&b)).unwrap();
        assert!(!tmp.path().join(PARENT).exists(), "the last world takes the parent with it");
        // Removing again is not an error.
        remove_dirs(&[a, b]).unwrap();
    }

    #[test]
    fn quota() {
        assert_eq!(cpu_quota(2.0), 200_000);
        assert_eq!(cpu_quota(0.0001), 1000);
    }
}
