//! Running `cloche` ([`run_cmd`], [`Outcome`]) and the per-test [`Fixture`].

use std::collections::BTreeSet;
use std::ffi::{OsStr, OsString};
use std::fs;
use std::io::Read;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::{cloche_bin, json_lines, lossy_head, probe_bin, probe_needs_expose, unique_tag, DEADLINE};
use crate::{mount_points, strict_leaks, HostSnapshot, Leak, Scratch, TestLock};

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

    /// Worlds in `$STATE/worlds` (none when it does not exist): every entry
    /// but the disk pool's own (`.spare-*`, `.trash-*`: `pool_entries`),
    /// once the runs that answered are done with them. A world not kept
    /// leaves `worlds/` a moment after cloche has answered (its teardown
    /// moves it to the pool's trash): entries without a `world.json` are
    /// given up to 2 s to go. (`worlds_now`: the listing as it is.)
    pub fn worlds(&self) -> Vec<String> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
        loop {
            let v = self.worlds_now();
            let ending = v.iter().any(|id| !self.worlds_dir().join(id).join("world.json").exists());
            if !ending || std::time::Instant::now() >= deadline {
                return v;
            }
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
    }

    /// The worlds in `$STATE/worlds` now, a running one's included.
    pub fn worlds_now(&self) -> Vec<String> {
        let mut v: Vec<String> = self.pool_entries().into_iter().filter(|n| !n.starts_with('.')).collect();
        v.sort();
        v
    }

    /// Every entry of `$STATE/worlds`, the disk pool's housekeeping included.
    pub fn pool_entries(&self) -> Vec<String> {
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

    /// Counts a world made elsewhere (a daemon's) as this test's, for the
    /// leak checks of [`Fixture::finish`].
    pub fn track_world(&self, id: &str) {
        self.ids.borrow_mut().insert(id.to_string());
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

    /// Counts what names world `id` as this test's in the leak checks (a
    /// world the test did not start with `run`: a daemon's).
    pub fn note_world(&self, id: &str) {
        self.ids.borrow_mut().insert(id.to_string());
    }

    /// Checks that nothing is left behind: no world state dir, and no new mount,
    /// cgroup, foreign-namespace process, network interface or loop device on the
    /// host since the fixture was made. Outside strict mode (see `strict_leaks`)
    /// only what names this test's tag or world ids counts; the rest is printed.
    pub fn finish(self) {
        let worlds = self.worlds();
        assert!(worlds.is_empty(), "world state dirs left in {}: {worlds:?}", self.worlds_dir().display());
        self.release_pools();
        // A process that is exiting (its memory already gone, its namespaces
        // not yet) is transient: give such things a moment before judging.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(3);
        let mut ours = self.leaks();
        while !ours.is_empty() && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(100));
            // (A world's teardown may have made a spare since.)
            self.release_pools();
            ours = self.leaks();
        }
        assert!(ours.is_empty(), "the host has new things the worlds left behind:\n  {}", ours.join("\n  "));
    }

    /// Unmounts the disk pools (`<state>/worlds`) and the spare network
    /// namespaces (`<state>/netns/spare`) of the state dirs under this
    /// fixture's dirs, as removing a state dir takes: both outlive every
    /// world by design (a pool's loop device detaches itself when the pool
    /// is released; its image, `<state>/pool.img`, goes with the state dir),
    /// a test's state dir does not outlive the test.
    pub fn release_pools(&self) {
        let roots = [self.state.path(), self.out.path(), self.project.path()];
        for m in mount_points() {
            let is_pool = m.file_name().is_some_and(|n| n == "worlds");
            let is_spare = m.ends_with("netns/spare");
            if (is_pool || is_spare) && roots.iter().any(|r| m.starts_with(r)) {
                let c = std::ffi::CString::new(std::os::unix::ffi::OsStrExt::as_bytes(m.as_os_str())).unwrap();
                // SAFETY: a valid NUL-terminated path.
                unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
            }
        }
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
