//! A real `cloched` on a temporary socket for one test ([`Daemon`]; stopped
//! and reaped on drop), and real clients: `curl --unix-socket` run as any
//! uid ([`Daemon::curl`]).

use crate::*;
use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Test callers: uids (and gids) with no passwd entry, as agents.
pub const AGENT_A: u32 = 64_101;
pub const AGENT_B: u32 = 64_102;

/// `cloched`, built next to `cloche` by `cargo build --workspace`.
pub fn cloched_bin() -> PathBuf {
    let p = cloche_bin().with_file_name("cloched");
    assert!(p.is_file(), "{} is missing: run `cargo build --workspace` before `cargo test`", p.display());
    p
}

/// A daemon serving the fixture's state directory.
pub struct Daemon {
    child: Option<Child>,
    pub socket: PathBuf,
    pub log: PathBuf,
}

/// An answer: the status and the body (JSON when it parses, else `Null`
/// with the text in `text`).
pub struct Answer {
    pub status: u16,
    pub json: Value,
    pub text: String,
}

impl Answer {
    pub fn expect(&self, status: u16) -> &Value {
        assert_eq!(self.status, status, "expected HTTP {status}, got {}: {}", self.status, self.text);
        &self.json
    }
}

/// Makes `dir` and its ancestors up to /tmp searchable by other users.
pub fn open_up(dir: &Path) {
    for d in dir.ancestors().take_while(|d| *d != Path::new("/tmp") && *d != Path::new("/")) {
        let mode = fs::metadata(d).unwrap().permissions().mode();
        fs::set_permissions(d, fs::Permissions::from_mode(mode | 0o755)).unwrap();
    }
}

impl Daemon {
    /// Starts `cloched` (with `config`, TOML, when given) and waits until
    /// it answers.
    pub fn start(fx: &Fixture, config: Option<&str>) -> Daemon {
        let (child, socket, log) = Daemon::spawn(fx, config, "cloched.sock");
        let mut d = Daemon { child: Some(child), socket, log };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if std::os::unix::net::UnixStream::connect(&d.socket).is_ok() {
                return d;
            }
            if let Some(st) = d.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("cloched exited ({st}) before serving: {}", fs::read_to_string(&d.log).unwrap_or_default());
            }
            assert!(Instant::now() < deadline, "cloched did not serve within 20 s: {}", d.log_text());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Starts `cloched` without waiting (another daemon's attempt).
    pub fn spawn(fx: &Fixture, config: Option<&str>, socket_name: &str) -> (Child, PathBuf, PathBuf) {
        open_up(fx.out.path());
        let socket = fx.out.path().join(socket_name);
        let log = fx.out.path().join(format!("{socket_name}.log"));
        let mut cmd = Command::new(cloched_bin());
        cmd.arg("--socket").arg(&socket).env("CLOCHE_STATE_DIR", fx.state.path()).env("CLOCHE_LOG", "debug");
        if let Some(text) = config {
            let file = fx.out.path().join(format!("{socket_name}.toml"));
            fs::write(&file, text).unwrap();
            cmd.arg("--config").arg(file);
        }
        cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(fs::File::create(&log).unwrap());
        (cmd.spawn().expect("start cloched"), socket, log)
    }

    pub fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    /// `curl --unix-socket` as `uid` (its gid the same number; root when
    /// `None`): METHOD PATH with BODY.
    pub fn curl(&self, uid: Option<u32>, method: &str, path: &str, body: Option<&[u8]>) -> Answer {
        let (child, writer) = self.curl_spawn(uid, method, path, body);
        let out = child.wait_with_output().unwrap();
        writer.join().unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
        let status = code.trim().parse().unwrap_or_else(|_| {
            panic!("curl {method} {path}: no status ({text:?}, {})", String::from_utf8_lossy(&out.stderr))
        });
        Answer { status, json: serde_json::from_str(body).unwrap_or(Value::Null), text: body.to_string() }
    }

    /// [`Daemon::curl`] started, not waited for (a request in flight): the
    /// process (stdout: the body, a newline, the status; `000` when no
    /// answer came) and the thread writing its body.
    pub fn curl_spawn(
        &self,
        uid: Option<u32>,
        method: &str,
        path: &str,
        body: Option<&[u8]>,
    ) -> (Child, std::thread::JoinHandle<()>) {
        let mut cmd = Command::new("curl");
        cmd.args(["-q", "-s", "-S", "--max-time", "300", "--unix-socket"]).arg(&self.socket);
        cmd.args(["-X", method, "-o", "-", "-w", "\n%{http_code}"]);
        if body.is_some() {
            cmd.args(["-H", "Content-Type: application/json", "--data-binary", "@-"]);
        }
        cmd.arg(format!("http://localhost{path}"));
        if let Some(u) = uid {
            cmd.uid(u).gid(u).env("HOME", "/nonexistent");
        }
        cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("curl (the README's tour needs it installed)");
        let mut stdin = child.stdin.take().unwrap();
        let data = body.map(<[u8]>::to_vec).unwrap_or_default();
        let writer = std::thread::spawn(move || {
            let _ = stdin.write_all(&data);
        });
        (child, writer)
    }

    pub fn get(&self, uid: Option<u32>, path: &str) -> Answer {
        self.curl(uid, "GET", path, None)
    }

    pub fn post(&self, uid: Option<u32>, path: &str, body: &Value) -> Answer {
        self.curl(uid, "POST", path, Some(&serde_json::to_vec(body).unwrap()))
    }

    /// SIGTERM, then SIGKILL after 5 s; reaped.
    pub fn stop(&mut self) {
        let Some(mut c) = self.child.take() else { return };
        let spawners = children_of(c.id() as i32);
        // SAFETY: kill(2) of our own child.
        unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(5);
        while c.try_wait().ok().flatten().is_none() {
            if Instant::now() > deadline {
                let _ = c.kill();
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = c.wait();
        // The spawner (and any job) ends when the daemon's socket to it closes.
        let deadline = Instant::now() + Duration::from_secs(10);
        while spawners.iter().any(|p| Path::new(&format!("/proc/{p}")).exists()) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let left: Vec<_> = spawners.iter().filter(|p| Path::new(&format!("/proc/{p}")).exists()).collect();
        assert!(left.is_empty() || std::thread::panicking(), "the daemon's children outlived it: {left:?}");
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The pids whose parent is `pid`.
pub fn children_of(pid: i32) -> Vec<i32> {
    let mut out = Vec::new();
    for e in fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(p) = e.file_name().to_string_lossy().parse::<i32>() else { continue };
        let stat = fs::read_to_string(format!("/proc/{p}/stat")).unwrap_or_default();
        let ppid = stat.rfind(')').and_then(|i| stat[i + 2..].split_whitespace().nth(1)?.parse::<i32>().ok());
        if ppid == Some(pid) {
            out.push(p);
        }
    }
    out
}

/// Every descendant of `pid` now (children first met first), with its
/// start time: `(pid, start)`.
pub fn descendants(pid: i32) -> Vec<(i32, u64)> {
    let mut out = Vec::new();
    let mut todo = vec![pid];
    while let Some(p) = todo.pop() {
        for c in children_of(p) {
            if let Some(start) = start_time_of(c) {
                out.push((c, start));
                todo.push(c);
            }
        }
    }
    out
}

/// Field 22 of /proc/PID/stat.
pub fn start_time_of(pid: i32) -> Option<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat[stat.rfind(')')? + 2..].split(' ').nth(19)?.parse().ok()
}

/// Whether process `pid` started at `start` still runs (not a zombie).
pub fn still_runs(pid: i32, start: u64) -> bool {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let Some(i) = stat.rfind(')') else { return false };
    let mut f = stat[i + 2..].split(' ');
    let state = f.next().unwrap_or("X");
    f.nth(18).and_then(|s| s.parse::<u64>().ok()) == Some(start) && !matches!(state, "Z" | "X")
}

/// A directory of the fixture's project owned by `uid` (0755).
pub fn owned_dir(fx: &Fixture, name: &str, uid: u32) -> PathBuf {
    open_up(fx.dir());
    let d = fx.mkdir(name);
    std::os::unix::fs::chown(&d, Some(uid), Some(uid)).unwrap();
    d
}
