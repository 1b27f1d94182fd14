//! The cgroup of a daemon's processes: the spawner moves itself in at its
//! start, and everything it forks (job processes, their helpers) is born
//! in it. A process cannot leave a cgroup it did not ask to leave, and a
//! cgroup outlives every process in it: so whoever is alive (the spawner
//! when the daemon dies, the daemon when the spawner dies, the next daemon
//! when both died) finds and kills every one of them, orphans included,
//! by reading it. Worlds leave it for their own cgroups (`crashed.rs` of
//! the world crate kills those).
//!
//! One per state directory, found again by the next daemon on it:
//! `<pids hierarchy or cgroup2 root>/cloched/state-<16 hex digits of the
//! SHA-256 of the state directory's path>`.

use std::fs;
use std::io::{self, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The directory made in the hierarchy's root for daemons' cgroups.
const PARENT: &str = "cloched";

/// The cgroup of one state directory's daemon processes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobsCgroup {
    /// Its directory.
    dir: PathBuf,
    /// Its path as `/proc/<pid>/cgroup` shows it (from the hierarchy's root).
    rel: String,
}

impl JobsCgroup {
    /// The cgroup of the daemons of `state` (canonical) on this host: in
    /// the pids hierarchy (v1) or the unified one (v2); `None` without
    /// either.
    pub fn of_state(state: &Path) -> Option<JobsCgroup> {
        use cloche_world::cgroup::Layout;
        let root = match Layout::detect() {
            Layout::V2 { root } => root,
            Layout::V1 { pids, .. } => pids,
            Layout::Unavailable { .. } => return None,
        };
        Some(JobsCgroup::under(&root, state))
    }

    /// The cgroup of `state` in the hierarchy mounted at `root`.
    pub fn under(root: &Path, state: &Path) -> JobsCgroup {
        use sha2::Digest;
        let digest = sha2::Sha256::digest(state.as_os_str().as_encoded_bytes());
        let key: String = digest.iter().take(8).map(|b| format!("{b:02x}")).collect();
        let rel = format!("/{PARENT}/state-{key}");
        JobsCgroup { dir: root.join(&rel[1..]), rel }
    }

    /// Its directory.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// Makes it (and its parent) if missing.
    pub fn create(&self) -> io::Result<()> {
        fs::create_dir_all(&self.dir)
    }

    /// Moves the calling process (single-threaded) into it.
    pub fn join(&self) -> io::Result<()> {
        fs::OpenOptions::new().write(true).open(self.dir.join("cgroup.procs"))?.write_all(b"0")
    }

    /// The processes in it (none when it does not exist).
    pub fn members(&self) -> Vec<i32> {
        let text = fs::read_to_string(self.dir.join("cgroup.procs")).unwrap_or_default();
        text.lines().filter_map(|l| l.trim().parse().ok()).collect()
    }

    /// SIGKILLs every process in it but `except`, again until none is left
    /// (what they fork meanwhile is born inside) or `within` has passed.
    /// Returns how many processes were killed.
    pub fn kill_all(&self, except: Option<i32>, within: Duration) -> usize {
        let deadline = Instant::now() + within;
        let mut killed = std::collections::HashSet::new();
        loop {
            let left: Vec<i32> = self.members().into_iter().filter(|p| Some(*p) != except).collect();
            if left.is_empty() || Instant::now() > deadline {
                return killed.len();
            }
            for pid in left {
                if self.kill(pid) {
                    killed.insert(pid);
                }
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// SIGKILLs `pid` if it is still in this cgroup. The pid is pinned by a
    /// pidfd before its cgroup is read: a pid that ended and was given to
    /// another process since it was listed is never signalled.
    fn kill(&self, pid: i32) -> bool {
        let Some(pidfd) = pidfd_open(pid) else { return false };
        let cgroups = fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default();
        if !cgroups.lines().any(|l| l.rsplit_once(':').is_some_and(|(_, p)| p == self.rel)) {
            return false;
        }
        // SAFETY: pidfd_send_signal on a pidfd we hold, no siginfo.
        let r = unsafe {
            libc::syscall(libc::SYS_pidfd_send_signal, pidfd.as_raw_fd(), libc::SIGKILL, std::ptr::null::<u8>(), 0)
        };
        r == 0
    }

    /// Moves the calling process out (to the hierarchy's root) and removes
    /// it: the last process of a daemon that is gone leaves nothing.
    pub fn leave_and_remove(&self) {
        let root = self.dir.ancestors().nth(2).unwrap_or(Path::new("/"));
        if fs::OpenOptions::new()
            .write(true)
            .open(root.join("cgroup.procs"))
            .and_then(|mut f| f.write_all(b"0"))
            .is_ok()
        {
            self.remove(Duration::ZERO);
        }
    }

    /// Kills what is left in it (for at most `within`) and removes it, and
    /// its parent once no other daemon's is there.
    pub fn remove(&self, within: Duration) {
        self.kill_all(None, within);
        let _ = fs::remove_dir(&self.dir);
        if let Some(parent) = self.dir.parent() {
            let _ = fs::remove_dir(parent);
        }
    }
}

/// A pidfd of `pid` (`None` once it is gone).
fn pidfd_open(pid: i32) -> Option<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags; the fd returned is ours.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    // SAFETY: a new descriptor, owned by nobody else.
    (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_cgroup_per_state_directory() {
        let a = JobsCgroup::under(Path::new("/sys/fs/cgroup/pids"), Path::new("/var/lib/cloche"));
        let b = JobsCgroup::under(Path::new("/sys/fs/cgroup/pids"), Path::new("/tmp/other"));
        assert_ne!(a, b);
        assert_eq!(a, JobsCgroup::under(Path::new("/sys/fs/cgroup/pids"), Path::new("/var/lib/cloche")));
        assert!(a.path().to_str().unwrap().starts_with("/sys/fs/cgroup/pids/cloched/state-"), "{}", a.path().display());
        assert_eq!(a.path(), Path::new("/sys/fs/cgroup/pids").join(&a.rel[1..]));
        assert_eq!(a.rel.len(), "/cloched/state-".len() + 16);
    }

    /// Real cgroups (root): a process and its child in the cgroup are
    /// killed, one outside is not; the cgroup goes.
    #[test]
    fn everything_in_it_is_killed_and_nothing_else() {
        if !cloche_service::context::is_root() {
            eprintln!("skipped: needs root");
            return;
        }
        let tmp = tempfile::tempdir().unwrap();
        let Some(cg) = JobsCgroup::of_state(tmp.path()) else {
            eprintln!("skipped: no cgroup hierarchy");
            return;
        };
        cg.create().unwrap();
        let procs = cg.path().join("cgroup.procs");
        let mut inside = std::process::Command::new("sh");
        // The shell joins the cgroup, then starts a child (born there).
        inside.arg("-c").arg(format!("echo $$ > {}; sleep 30 & wait", procs.display()));
        let mut inside = inside.spawn().unwrap();
        let mut outside = std::process::Command::new("sleep").arg("30").spawn().unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while cg.members().len() < 2 {
            assert!(Instant::now() < deadline, "the shell and its child never joined: {:?}", cg.members());
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(cg.kill_all(None, Duration::from_secs(5)), 2);
        assert!(cg.members().is_empty());
        assert!(inside.wait().unwrap().code().is_none(), "killed by a signal");
        assert!(outside.try_wait().unwrap().is_none(), "a process outside is left alone");
        outside.kill().unwrap();
        outside.wait().unwrap();
        cg.remove(Duration::from_secs(1));
        assert!(!cg.path().exists());
    }
}
