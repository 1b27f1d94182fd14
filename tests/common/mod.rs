//! Shared harness of the end-to-end tests of `cloche run`.
//!
//! Every test builds a [`Fixture`]: it takes the suite-wide lock (the tests
//! compare host-global state: the mount table, cgroups, processes), makes a
//! project dir, a state dir and an output dir under /tmp, and snapshots the
//! host. `Fixture::finish` checks that nothing the worlds made is left on the
//! host: with CI set (or CLOCHE_TESTS_STRICT_LEAKS=1) anything new counts;
//! otherwise only what names the test's tag or world ids, so that someone else
//! running cloche on the same machine does not fail the tests.
//! Everything is cleaned up on drop, also when a test panics, and the
//! clean-up never crosses into a mount that a world may have left behind.
//!
//! Run as root, after `cargo build --workspace` (the probe is a binary of the
//! package crates/probe, which `cargo test` alone does not rebuild).

#![allow(dead_code)] // each test file uses a different part of the harness

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::{OsStr, OsString};
use std::fs;
use std::io::{Read, Write};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;

/// How long any single `cloche` invocation may take before the test kills it.
pub const DEADLINE: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------------------
// Binaries

pub fn cloche_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_cloche"))
}

/// The probe, built next to `cloche` by `cargo build --workspace`.
pub fn probe_bin() -> PathBuf {
    let p = cloche_bin().with_file_name("cloche-probe");
    assert!(
        p.is_file(),
        "the probe binary {} is missing: run `cargo build --workspace` before `cargo test` \
         (the probe is the package crates/probe)",
        p.display()
    );
    p
}

/// Whether the probe's directory is hidden by a world's masks (fresh /tmp, /run,
/// /var/tmp, masked homes), so it must be passed with `--expose`.
fn probe_needs_expose(probe: &Path) -> bool {
    ["/tmp", "/var/tmp", "/run", "/root", "/home", "/dev/shm"].iter().any(|p| probe.starts_with(p))
}

// ---------------------------------------------------------------------------
// Small utilities

/// A string unique to this test run, used in paths and argv to find things again.
pub fn unique_tag() -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().subsec_nanos();
    format!("ct{}x{}x{}", std::process::id(), COUNTER.fetch_add(1, Ordering::SeqCst), nanos)
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// SHA-256 (lower-case hex) through coreutils' `sha256sum`, an independent implementation.
pub fn sha256_hex(bytes: &[u8]) -> String {
    let mut child = Command::new("sha256sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("sha256sum (coreutils) must be installed");
    child.stdin.take().unwrap().write_all(bytes).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap()[..64].to_string()
}

/// Decodes base64 (standard or URL-safe alphabet, padding optional).
pub fn b64_decode(s: &str) -> Vec<u8> {
    fn val(c: u8) -> u32 {
        match c {
            b'A'..=b'Z' => (c - b'A') as u32,
            b'a'..=b'z' => (c - b'a') as u32 + 26,
            b'0'..=b'9' => (c - b'0') as u32 + 52,
            b'+' | b'-' => 62,
            b'/' | b'_' => 63,
            _ => panic!("not base64: {c:?}"),
        }
    }
    let mut out = Vec::new();
    let (mut acc, mut bits) = (0u32, 0);
    for &c in s.as_bytes().iter().filter(|&&c| c != b'=') {
        acc = (acc << 6) | val(c);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    out
}

/// Parses every non-empty line of `bytes` as JSON.
pub fn json_lines(bytes: &[u8]) -> Result<Vec<Value>, String> {
    String::from_utf8_lossy(bytes)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).map_err(|e| format!("{e} in line {l:?}")))
        .collect()
}

fn lossy_head(bytes: &[u8], max: usize) -> String {
    let s = String::from_utf8_lossy(bytes);
    if s.len() > max {
        let mut cut = max;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        format!("{}… ({} bytes in all)", &s[..cut], bytes.len())
    } else {
        s.into_owned()
    }
}

// ---------------------------------------------------------------------------
// The suite-wide lock

/// An exclusive flock on /tmp/cloche-tests.lock, held by every test for its whole
/// life, so that host-wide comparisons (mounts, cgroups, processes) are meaningful.
pub struct TestLock(fs::File);

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
        let cloche_names = ["cloche", "cloche-init", "cloche-probe", "cloched"];
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

        HostSnapshot { mounts, cgroups, procs, netdevs, loops }
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

// ---------------------------------------------------------------------------
// Host file trees, to prove the host was not modified

/// Everything about one host file that a world could change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    pub kind: &'static str,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    pub mtime_ns: i128,
    pub ctime_ns: i128,
    pub nlink: u64,
    pub ino: u64,
    pub content: Vec<u8>,
    pub target: Option<PathBuf>,
}

pub fn node_of(path: &Path) -> Option<Node> {
    let m = fs::symlink_metadata(path).ok()?;
    let ft = m.file_type();
    use std::os::unix::fs::FileTypeExt;
    let kind = if ft.is_symlink() {
        "symlink"
    } else if ft.is_dir() {
        "dir"
    } else if ft.is_file() {
        "file"
    } else if ft.is_char_device() {
        "char"
    } else if ft.is_block_device() {
        "block"
    } else if ft.is_fifo() {
        "fifo"
    } else {
        "socket"
    };
    Some(Node {
        kind,
        mode: m.mode() & 0o7777,
        uid: m.uid(),
        gid: m.gid(),
        size: m.size(),
        mtime_ns: m.mtime() as i128 * 1_000_000_000 + m.mtime_nsec() as i128,
        ctime_ns: m.ctime() as i128 * 1_000_000_000 + m.ctime_nsec() as i128,
        nlink: m.nlink(),
        ino: m.ino(),
        content: if ft.is_file() { fs::read(path).unwrap_or_default() } else { Vec::new() },
        target: if ft.is_symlink() { fs::read_link(path).ok() } else { None },
    })
}

/// The whole tree under `root` (root itself included, as ""), never following symlinks.
pub fn tree_snapshot(root: &Path) -> BTreeMap<Vec<u8>, Node> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<Vec<u8>, Node>) {
        let Ok(rd) = fs::read_dir(dir) else { return };
        for e in rd.flatten() {
            let p = e.path();
            if let Some(n) = node_of(&p) {
                let rel = p.strip_prefix(root).unwrap().as_os_str().as_bytes().to_vec();
                let is_dir = n.kind == "dir";
                out.insert(rel, n);
                if is_dir {
                    walk(root, &p, out);
                }
            }
        }
    }
    let mut out = BTreeMap::new();
    if let Some(n) = node_of(root) {
        out.insert(Vec::new(), n);
    }
    walk(root, root, &mut out);
    out
}

/// Panics with the list of paths that differ between two snapshots of `root`.
pub fn assert_same_tree(root: &Path, before: &BTreeMap<Vec<u8>, Node>, after: &BTreeMap<Vec<u8>, Node>) {
    let mut diffs = Vec::new();
    for (k, b) in before {
        match after.get(k) {
            None => diffs.push(format!("deleted on the host: {}", String::from_utf8_lossy(k))),
            Some(a) if a != b => diffs.push(format!(
                "changed on the host: {:?}\n    before {:?}\n    after  {:?}",
                String::from_utf8_lossy(k),
                brief(b),
                brief(a)
            )),
            _ => {}
        }
    }
    for k in after.keys().filter(|k| !before.contains_key(*k)) {
        diffs.push(format!("added on the host: {}", String::from_utf8_lossy(k)));
    }
    assert!(diffs.is_empty(), "the host tree {} was modified by a world:\n  {}", root.display(), diffs.join("\n  "));
}

fn brief(n: &Node) -> String {
    format!(
        "{} mode {:04o} uid {} gid {} size {} mtime {} ctime {} nlink {} ino {} content {:?}",
        n.kind,
        n.mode,
        n.uid,
        n.gid,
        n.size,
        n.mtime_ns,
        n.ctime_ns,
        n.nlink,
        n.ino,
        lossy_head(&n.content, 60)
    )
}

// ---------------------------------------------------------------------------
// Running cloche

/// What one `cloche` invocation did.
pub struct Outcome {
    pub what: String,
    pub status: ExitStatus,
    pub code: Option<i32>,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    pub elapsed: Duration,
    pub report_path: Option<PathBuf>,
}

impl Outcome {
    /// A description for assertion messages.
    pub fn describe(&self) -> String {
        format!(
            "`{}`\n  exit: {:?} (signal {:?}) after {:?}\n  stdout: {}\n  stderr: {}",
            self.what,
            self.code,
            self.status.signal(),
            self.elapsed,
            lossy_head(&self.stdout, 3000),
            lossy_head(&self.stderr, 3000)
        )
    }

    pub fn expect_code(&self, code: i32) -> &Outcome {
        assert_eq!(self.code, Some(code), "expected exit code {code}, got {:?}\n{}", self.code, self.describe());
        self
    }

    /// Every stdout line as JSON (the probe's output).
    pub fn lines(&self) -> Vec<Value> {
        json_lines(&self.stdout).unwrap_or_else(|e| {
            panic!("stdout is not JSON lines ({e}); is the probe the command?\n{}", self.describe())
        })
    }

    /// The single JSON line the probe printed.
    pub fn one(&self) -> Value {
        let mut l = self.lines();
        assert_eq!(l.len(), 1, "expected one JSON line from the probe\n{}", self.describe());
        l.remove(0)
    }

    /// The `--report` file of this run.
    pub fn report(&self) -> Value {
        let p = self.report_path.as_ref().expect("this run had no --report");
        let text =
            fs::read_to_string(p).unwrap_or_else(|e| panic!("no report at {} ({e})\n{}", p.display(), self.describe()));
        serde_json::from_str(&text).unwrap_or_else(|e| {
            panic!("the report is not JSON ({e}): {}\n{}", lossy_head(text.as_bytes(), 2000), self.describe())
        })
    }
}

fn reader(mut src: impl Read + Send + 'static) -> mpsc::Receiver<Vec<u8>> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = src.read_to_end(&mut buf);
        let _ = tx.send(buf);
    });
    rx
}

/// Runs `cmd` (stdout and stderr captured) and kills its process group if it
/// outlives `deadline`. Panics if stdout/stderr stay open after it exited
/// (a process that escaped the world would hold them).
pub fn run_cmd(cmd: &mut Command, deadline: Duration) -> Outcome {
    let what = format!(
        "{} {}",
        cmd.get_program().to_string_lossy(),
        cmd.get_args().map(|a| a.to_string_lossy().into_owned()).collect::<Vec<_>>().join(" ")
    );
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).process_group(0);
    let start = Instant::now();
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("cannot start `{what}`: {e}"));
    let out_rx = reader(child.stdout.take().unwrap());
    let err_rx = reader(child.stderr.take().unwrap());
    let status = loop {
        if let Some(st) = child.try_wait().expect("try_wait") {
            break st;
        }
        if start.elapsed() > deadline {
            // SAFETY: kill(2) of the process group we created for the child.
            unsafe { libc::kill(-(child.id() as i32), libc::SIGKILL) };
            let _ = child.kill();
            let _ = child.wait();
            let err = err_rx.recv_timeout(Duration::from_secs(1)).unwrap_or_default();
            panic!("`{what}` still running after {deadline:?}: killed it\n  stderr: {}", lossy_head(&err, 3000));
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let elapsed = start.elapsed();
    let grace = Duration::from_secs(5);
    let stdout = out_rx.recv_timeout(grace).unwrap_or_else(|_| {
        panic!("`{what}` exited ({status:?}) but its stdout is still open {grace:?} later: a process outlived it")
    });
    let stderr = err_rx.recv_timeout(grace).unwrap_or_else(|_| {
        panic!("`{what}` exited ({status:?}) but its stderr is still open {grace:?} later: a process outlived it")
    });
    Outcome { what, code: status.code(), status, stdout, stderr, elapsed, report_path: None }
}

// ---------------------------------------------------------------------------
// The fixture

/// One test's world of files: a project dir (the cwd of `cloche`), a state dir
/// (`CLOCHE_STATE_DIR`), an output dir (reports), the suite lock, and the host
/// snapshot taken at the start.
pub struct Fixture {
    pub tag: String,
    pub project: Scratch,
    pub state: Scratch,
    pub out: Scratch,
    before: HostSnapshot,
    /// ids of the worlds this fixture's runs reported.
    ids: std::cell::RefCell<BTreeSet<String>>,
    _lock: TestLock, // last: released after the directories are gone
}

impl Fixture {
    pub fn new() -> Fixture {
        let lock = TestLock::acquire();
        let tag = unique_tag();
        let project = Scratch::new_in("/tmp", &format!("cloche-test-proj-{tag}-"));
        let state = Scratch::new_in("/tmp", &format!("cloche-test-state-{tag}-"));
        let out = Scratch::new_in("/tmp", &format!("cloche-test-out-{tag}-"));
        let before = HostSnapshot::take();
        Fixture { tag, project, state, out, before, ids: Default::default(), _lock: lock }
    }

    /// The project dir (canonical): also the world's default cwd.
    pub fn dir(&self) -> &Path {
        self.project.path()
    }

    /// Writes a file in the project dir (parents created), with `mode`.
    pub fn write(&self, rel: &str, content: &[u8], mode: u32) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let p = self.dir().join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(&p, content).unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(mode)).unwrap();
        p
    }

    pub fn mkdir(&self, rel: &str) -> PathBuf {
        let p = self.dir().join(rel);
        fs::create_dir_all(&p).unwrap();
        p
    }

    pub fn report_path(&self) -> PathBuf {
        self.out.path().join("report.json")
    }

    pub fn worlds_dir(&self) -> PathBuf {
        self.state.path().join("worlds")
    }

    /// Entries of `$STATE/worlds` (none when it does not exist).
    pub fn worlds(&self) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(self.worlds_dir())
            .map(|rd| rd.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
            .unwrap_or_default();
        v.sort();
        v
    }

    /// `cloche` with cwd = project dir, `CLOCHE_STATE_DIR` = own state dir, stdin null.
    pub fn command(&self) -> Command {
        let mut c = Command::new(cloche_bin());
        c.current_dir(self.dir()).env("CLOCHE_STATE_DIR", self.state.path()).stdin(Stdio::null());
        c
    }

    /// Runs `cloche ARGS` as is.
    pub fn cloche<S: AsRef<OsStr>>(&self, args: &[S]) -> Outcome {
        run_cmd(self.command().args(args), DEADLINE)
    }

    /// `run --report R [--expose PROBE_DIR] OPTS -- CMD...`
    pub fn run_args<S: AsRef<OsStr>, T: AsRef<OsStr>>(&self, opts: &[S], cmd: &[T]) -> Vec<OsString> {
        let mut a: Vec<OsString> = vec!["run".into(), "--report".into(), self.report_path().into()];
        let probe = probe_bin();
        if probe_needs_expose(&probe) {
            a.push("--expose".into());
            a.push(probe.parent().unwrap().into());
        }
        a.extend(opts.iter().map(|o| o.as_ref().to_owned()));
        a.push("--".into());
        a.extend(cmd.iter().map(|c| c.as_ref().to_owned()));
        a
    }

    /// Runs `cmd` in a world (with a report), from `command` (so the caller can
    /// change cwd, env or stdin first).
    pub fn run_with<S: AsRef<OsStr>, T: AsRef<OsStr>>(&self, mut command: Command, opts: &[S], cmd: &[T]) -> Outcome {
        let _ = fs::remove_file(self.report_path());
        command.args(self.run_args(opts, cmd));
        let mut o = run_cmd(&mut command, DEADLINE);
        o.report_path = Some(self.report_path());
        if let Some(id) = fs::read_to_string(self.report_path())
            .ok()
            .and_then(|t| serde_json::from_str::<Value>(&t).ok())
            .and_then(|r| r["world"].as_str().map(str::to_string))
        {
            self.ids.borrow_mut().insert(id);
        }
        o
    }

    /// Runs `cmd` in a world (with a report).
    pub fn run<S: AsRef<OsStr>, T: AsRef<OsStr>>(&self, opts: &[S], cmd: &[T]) -> Outcome {
        self.run_with(self.command(), opts, cmd)
    }

    /// Runs the probe in a world: `cloche run --report R OPTS -- cloche-probe ARGS`.
    pub fn probe<S: AsRef<OsStr>, T: AsRef<OsStr>>(&self, opts: &[S], args: &[T]) -> Outcome {
        let mut cmd: Vec<OsString> = vec![probe_bin().into()];
        cmd.extend(args.iter().map(|a| a.as_ref().to_owned()));
        self.run(opts, &cmd)
    }

    /// Runs a shell script in a world; `$PROBE` in it is the probe's path.
    pub fn sh<S: AsRef<OsStr>>(&self, opts: &[S], script: &str) -> Outcome {
        let script = format!("PROBE='{}'\n{script}", probe_bin().display());
        self.run(opts, &["/bin/sh", "-c", &script])
    }

    /// Checks that nothing is left behind: no world state dir, and no new mount,
    /// cgroup, foreign-namespace process, network interface or loop device on the
    /// host since the fixture was made. Outside strict mode (see `strict_leaks`)
    /// only what names this test's tag or world ids counts; the rest is printed.
    pub fn finish(self) {
        let worlds = self.worlds();
        assert!(worlds.is_empty(), "world state dirs left in {}: {worlds:?}", self.worlds_dir().display());
        // A process that is exiting (its memory already gone, its namespaces
        // not yet) is transient: give such things a moment before judging.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(3);
        let mut ours = self.leaks();
        while !ours.is_empty() && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(100));
            ours = self.leaks();
        }
        assert!(ours.is_empty(), "the host has new things the worlds left behind:\n  {}", ours.join("\n  "));
    }

    /// What is new on the host since the fixture was made and counts as this
    /// test's (see `finish`); the rest is printed as a note.
    pub fn leaks(&self) -> Vec<String> {
        let mut needles: Vec<String> = self.ids.borrow().iter().cloned().collect();
        needles.push(self.tag.clone());
        let (ours, others): (Vec<Leak>, Vec<Leak>) = HostSnapshot::take()
            .new_since(&self.before)
            .into_iter()
            .partition(|l| strict_leaks() || l.names_any(&needles));
        for l in &others {
            eprintln!("note: new on the host, not from this test's worlds: {}", l.what);
        }
        ours.into_iter().map(|l| l.what).collect()
    }
}

impl Default for Fixture {
    fn default() -> Self {
        Self::new()
    }
}

// ---------------------------------------------------------------------------
// Report helpers

/// All entries of one fs_diff list.
pub fn diff_list<'a>(report: &'a Value, list: &str) -> &'a [Value] {
    report["fs_diff"][list]
        .as_array()
        .map(|v| v.as_slice())
        .unwrap_or_else(|| panic!("report.fs_diff.{list} is not an array: {report:#}"))
}

/// The path of an fs_diff entry as raw bytes ("path" or "path_b64").
pub fn entry_path(e: &Value) -> Vec<u8> {
    if let Some(p) = e["path"].as_str() {
        p.as_bytes().to_vec()
    } else if let Some(b) = e["path_b64"].as_str() {
        b64_decode(b)
    } else {
        panic!("fs_diff entry without path or path_b64: {e}")
    }
}

/// The entry of `list` for `path`, if any.
pub fn find_entry<'a>(report: &'a Value, list: &str, path: &Path) -> Option<&'a Value> {
    let want = path.as_os_str().as_bytes();
    diff_list(report, list).iter().find(|e| entry_path(e) == want)
}

pub fn string_list(v: &Value) -> Vec<String> {
    v.as_array().map(|a| a.iter().filter_map(|s| s.as_str().map(str::to_string)).collect()).unwrap_or_default()
}
