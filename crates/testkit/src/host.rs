//! Host-global state: the suite-wide lock, scratch directories that are safe
//! to remove after a broken world, snapshots of the host for leak checks, and
//! host processes.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::fs;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};

// ---------------------------------------------------------------------------
// The suite-wide lock

/// An exclusive flock on /tmp/cloche-tests.lock, held by every test for its whole
/// life, so that host-wide comparisons (mounts, cgroups, processes) are meaningful.
pub struct TestLock(#[allow(dead_code)] fs::File); // held: its drop releases the lock

impl TestLock {
    pub fn acquire() -> TestLock {
        use std::os::fd::AsRawFd;
        let f = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open("/tmp/cloche-tests.lock")
            .expect("open /tmp/cloche-tests.lock");
        // SAFETY: flock on a descriptor we own; blocks until the lock is ours.
        let r = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) };
        assert_eq!(r, 0, "flock /tmp/cloche-tests.lock");
        TestLock(f)
    }
}

// ---------------------------------------------------------------------------
// Temporary directories that are safe to remove after a broken world

/// A directory removed on drop. Before removal, anything still mounted beneath it
/// (a world's leftovers) is lazily unmounted, and the removal never descends
/// into another filesystem, so a leaked bind mount of a host path cannot make
/// the clean-up delete host files.
pub struct Scratch {
    path: PathBuf,
}

impl Scratch {
    pub fn new_in(base: &str, prefix: &str) -> Scratch {
        let dir = tempfile::Builder::new()
            .prefix(prefix)
            .tempdir_in(base)
            .unwrap_or_else(|e| panic!("temp dir in {base}: {e}"));
        let path = dir.keep();
        Scratch { path: fs::canonicalize(&path).unwrap() }
    }

    /// Takes charge of a directory that the test created itself at a fixed path.
    pub fn adopt(path: PathBuf) -> Scratch {
        Scratch { path }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let mut beneath: Vec<PathBuf> = mount_points().into_iter().filter(|m| m.starts_with(&self.path)).collect();
        beneath.sort_by_key(|m| std::cmp::Reverse(m.as_os_str().len()));
        for m in &beneath {
            eprintln!("cloche tests: clean-up: {} is still mounted, detaching it", m.display());
            let c = std::ffi::CString::new(m.as_os_str().as_bytes()).unwrap();
            // SAFETY: valid NUL-terminated path.
            unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
        }
        remove_tree_same_fs(&self.path);
    }
}

fn remove_tree_same_fs(root: &Path) {
    let Ok(meta) = fs::symlink_metadata(root) else {
        return;
    };
    if !meta.is_dir() {
        let _ = fs::remove_file(root);
        return;
    }
    fn walk(dir: &Path, dev: u64) {
        let Ok(rd) = fs::read_dir(dir) else { return };
        for e in rd.flatten() {
            let p = e.path();
            let Ok(m) = fs::symlink_metadata(&p) else {
                continue;
            };
            if m.is_dir() {
                if m.dev() != dev {
                    eprintln!("cloche tests: clean-up: not descending into {} (another filesystem)", p.display());
                    continue;
                }
                walk(&p, dev);
                let _ = fs::remove_dir(&p);
            } else {
                let _ = fs::remove_file(&p);
            }
        }
    }
    walk(root, meta.dev());
    let _ = fs::remove_dir(root);
}

/// Unescapes the octal escapes (\040 …) of a mountinfo field.
fn unescape_mountinfo(field: &str) -> PathBuf {
    let b = field.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let octal =
            b.get(i + 1..i + 4).and_then(|d| std::str::from_utf8(d).ok()).and_then(|d| u8::from_str_radix(d, 8).ok());
        if let (b'\\', Some(v)) = (b[i], octal) {
            out.push(v);
            i += 4;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    PathBuf::from(OsString::from_vec(out))
}

pub fn mount_points() -> Vec<PathBuf> {
    fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split(' ').nth(4).map(unescape_mountinfo))
        .collect()
}

// ---------------------------------------------------------------------------
// Host state, for leak checks

/// What the host looks like, as far as worlds could leave traces.
#[derive(Debug, Clone)]
pub struct HostSnapshot {
    /// mountinfo lines without the two mount ids (multiset).
    mounts: BTreeMap<String, usize>,
    /// every cgroup directory of every hierarchy under /sys/fs/cgroup.
    cgroups: BTreeSet<PathBuf>,
    /// processes in another pid namespace than ours, or running a cloche binary:
    /// (pid, start time) → (argv, evidence: argv, cwd, cgroups and environment).
    procs: BTreeMap<(i32, u64), (String, String)>,
    /// network interfaces of the host namespace.
    netdevs: BTreeSet<String>,
    /// loop devices and their backing files.
    loops: BTreeSet<String>,
    /// nftables tables of the host namespace (`inet cloche_nat`).
    nft_tables: BTreeSet<String>,
}

fn proc_start_time(pid: i32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &stat[stat.rfind(')')? + 2..];
    after.split(' ').nth(19)?.parse().ok()
}

pub fn proc_cmdline(pid: i32) -> String {
    let raw = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    raw.split(|&b| b == 0)
        .filter(|s| !s.is_empty())
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

fn all_pids() -> Vec<i32> {
    fs::read_dir("/proc")
        .map(|rd| rd.flatten().filter_map(|e| e.file_name().to_str()?.parse().ok()).collect())
        .unwrap_or_default()
}

fn walk_dirs(dir: &Path, out: &mut BTreeSet<PathBuf>) {
    let Ok(rd) = fs::read_dir(dir) else { return };
    for e in rd.flatten() {
        if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
            let p = e.path();
            walk_dirs(&p, out);
            out.insert(p);
        }
    }
}

impl HostSnapshot {
    pub fn take() -> HostSnapshot {
        let mut mounts = BTreeMap::new();
        for line in fs::read_to_string("/proc/self/mountinfo").unwrap_or_default().lines() {
            let key = line.splitn(3, ' ').nth(2).unwrap_or(line).to_string();
            *mounts.entry(key).or_insert(0) += 1;
        }

        let mut cgroups = BTreeSet::new();
        walk_dirs(Path::new("/sys/fs/cgroup"), &mut cgroups);

        let own_ns = fs::read_link("/proc/self/ns/pid").ok();
        let me = std::process::id() as i32;
        let cloche_names = ["cloche", "cloche-init", "cloche-probe", "cloched", "cloched-spawner"];
        let mut procs = BTreeMap::new();
        for pid in all_pids() {
            if pid == me {
                continue;
            }
            let ns = fs::read_link(format!("/proc/{pid}/ns/pid")).ok();
            let argv = proc_cmdline(pid);
            let argv0 = argv.split(' ').next().unwrap_or("");
            let base = argv0.rsplit('/').next().unwrap_or("");
            let foreign = ns.is_some() && ns != own_ns;
            if foreign || cloche_names.contains(&base) {
                if let Some(start) = proc_start_time(pid) {
                    let evidence = format!(
                        "{argv} cwd={} cgroup={} env={}",
                        fs::read_link(format!("/proc/{pid}/cwd")).map(|p| p.display().to_string()).unwrap_or_default(),
                        fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default(),
                        String::from_utf8_lossy(&fs::read(format!("/proc/{pid}/environ")).unwrap_or_default()),
                    );
                    procs.insert((pid, start), (argv, evidence));
                }
            }
        }

        let netdevs = fs::read_dir("/sys/class/net")
            .map(|rd| rd.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
            .unwrap_or_default();

        let mut loops = BTreeSet::new();
        if let Ok(rd) = fs::read_dir("/sys/block") {
            for e in rd.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if let Ok(b) = fs::read_to_string(e.path().join("loop/backing_file")) {
                    loops.insert(format!("{name} -> {}", b.trim()));
                }
            }
        }

        let nft_tables = cloche_net::nft::socket()
            .and_then(|s| cloche_net::scope::tables(&s))
            .map(|t| t.into_iter().collect())
            .unwrap_or_default();

        HostSnapshot { mounts, cgroups, procs, netdevs, loops, nft_tables }
    }

    /// Everything present now that was not in `before`, each with the text in
    /// which to look for the tag or world ids that tie it to a test.
    pub fn new_since(&self, before: &HostSnapshot) -> Vec<Leak> {
        let mut leaks = Vec::new();
        let mut push = |what: String, evidence: String| leaks.push(Leak { what, evidence });
        for (m, n) in &self.mounts {
            let was = before.mounts.get(m).copied().unwrap_or(0);
            if *n > was {
                push(format!("mount: {m}"), m.clone());
            }
        }
        for c in self.cgroups.difference(&before.cgroups) {
            push(format!("cgroup: {}", c.display()), c.display().to_string());
        }
        for (k, (argv, evidence)) in &self.procs {
            if !before.procs.contains_key(k) {
                push(format!("process {}: {argv}", k.0), evidence.clone());
            }
        }
        for d in self.netdevs.difference(&before.netdevs) {
            push(format!("network interface: {d}"), d.clone());
        }
        for l in self.loops.difference(&before.loops) {
            push(format!("loop device: {l}"), l.clone());
        }
        for t in self.nft_tables.difference(&before.nft_tables) {
            push(format!("nftables table: {t}"), t.clone());
        }
        leaks
    }
}

/// Something new on the host since a snapshot.
#[derive(Debug, Clone)]
pub struct Leak {
    pub what: String,
    evidence: String,
}

impl Leak {
    /// Whether it names one of `needles` (a test's tag or its world ids).
    pub fn names_any(&self, needles: &[String]) -> bool {
        needles.iter().any(|n| !n.is_empty() && (self.evidence.contains(n.as_str()) || self.what.contains(n.as_str())))
    }
}

/// Whether every new thing on the host counts as a leak of the running test
/// (CI, or CLOCHE_TESTS_STRICT_LEAKS=1), rather than only the things that name
/// the test's tag or one of its world ids. On a shared machine where someone
/// else runs cloche at the same time, strict mode blames the tests for the
/// other runs' worlds.
pub fn strict_leaks() -> bool {
    std::env::var_os("CI").is_some_and(|v| !v.is_empty() && v != "0" && v != "false")
        || std::env::var("CLOCHE_TESTS_STRICT_LEAKS").is_ok_and(|v| v == "1")
}

/// Host processes (other than this test process) whose argv contains `marker`.
pub fn processes_with(marker: &str) -> Vec<(i32, String)> {
    let me = std::process::id() as i32;
    all_pids()
        .into_iter()
        .filter(|&p| p != me)
        .filter_map(|p| {
            let argv = proc_cmdline(p);
            argv.contains(marker).then_some((p, argv))
        })
        .collect()
}

/// [`processes_with`] once cloche's own end is done: `cloche run` answers
/// before its teardown child (docs/architecture.md, `Teardown::in_background`)
/// has finished, and that child shares cloche's memory, so its argv. While
/// every process found is such a child (the `cloche` binary, in this pid
/// namespace) it is given up to 2 s to go; any other process, a world's
/// above all (a world's processes live in its own pid namespace), is
/// returned at once.
pub fn processes_left_with(marker: &str) -> Vec<(i32, String)> {
    let ours = fs::read_link("/proc/self/ns/pid").ok();
    let teardown = |pid: i32| {
        fs::read_link(format!("/proc/{pid}/ns/pid")).ok() == ours
            && fs::read_link(format!("/proc/{pid}/exe")).is_ok_and(|e| e.file_name().is_some_and(|n| n == "cloche"))
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    loop {
        let left = processes_with(marker);
        // (A process that ended since it was listed is not left: look again.)
        let settling = |p: i32| teardown(p) || !Path::new(&format!("/proc/{p}")).exists();
        if left.is_empty() || !left.iter().all(|(p, _)| settling(*p)) || std::time::Instant::now() >= deadline {
            return left;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// A host process the test started; killed and reaped on drop.
pub struct HostChild(pub Child);

impl HostChild {
    pub fn spawn(cmd: &mut Command) -> HostChild {
        HostChild(cmd.spawn().expect("spawn a host helper process"))
    }
    pub fn pid(&self) -> i32 {
        self.0.id() as i32
    }
    /// Alive and not a zombie.
    pub fn alive(&mut self) -> bool {
        if self.0.try_wait().ok().flatten().is_some() {
            return false;
        }
        let stat = fs::read_to_string(format!("/proc/{}/stat", self.pid())).unwrap_or_default();
        let state = stat.rfind(')').and_then(|i| stat[i + 2..].chars().next());
        !matches!(state, None | Some('Z') | Some('X'))
    }
}

impl Drop for HostChild {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A tmpfs mounted on a test's directory, unmounted (lazily) on drop, also
/// when the test fails.
pub struct Mounted(PathBuf);

impl Mounted {
    /// Mounts a tmpfs of `size` (mount(8)'s syntax: `4m`, `4g`) on `at`,
    /// named after `tag` in the mount table.
    pub fn tmpfs(at: &Path, size: &str, tag: &str) -> Mounted {
        let o = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size},mode=0755"), &format!("cloche-test-{tag}")])
            .arg(at)
            .output()
            .unwrap();
        assert!(o.status.success(), "mount tmpfs on {}: {}", at.display(), String::from_utf8_lossy(&o.stderr));
        Mounted(at.to_path_buf())
    }

    pub fn remount_ro(&self) {
        let o = Command::new("mount").args(["-o", "remount,ro"]).arg(&self.0).output().unwrap();
        assert!(o.status.success(), "remount: {}", String::from_utf8_lossy(&o.stderr));
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}
