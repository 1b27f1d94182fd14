//! `cloche` through `cloched`: a real daemon on a temporary socket
//! (`CLOCHE_SOCKET`), the real `cloche` binary run as other uids, real
//! worlds; and `cloche` without a daemon, as root and as another user.
//!
//! Run as root after `cargo build --workspace` (cloched is built next to
//! cloche).

use crate::common;

use common::*;
use serde_json::{json, Value};
use std::io::{BufRead, BufReader};
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// `cloche` as `uid` (root when `None`) in `cwd`, through the daemon at
/// `socket` (`CLOCHE_SOCKET` unset when `None`).
fn cloche_as(fx: &Fixture, uid: Option<u32>, cwd: &Path, socket: Option<&Path>) -> Command {
    let mut c = fx.command();
    c.current_dir(cwd);
    match socket {
        Some(s) => c.env("CLOCHE_SOCKET", s),
        None => c.env_remove("CLOCHE_SOCKET"),
    };
    if let Some(u) = uid {
        c.uid(u).gid(u).env("HOME", "/nonexistent");
    }
    c
}

fn run_as(fx: &Fixture, uid: Option<u32>, cwd: &Path, socket: Option<&Path>, args: &[&str]) -> Outcome {
    run_cmd(cloche_as(fx, uid, cwd, socket).args(args), DEADLINE)
}

/// Exit 125, nothing on stdout, one line on stderr containing `want`.
fn refused(o: &Outcome, want: &str) {
    let err = text(&o.stderr);
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(
        o.code == Some(125) && o.stdout.is_empty() && lines.len() == 1 && lines[0].contains(want),
        "want exit 125, no stdout, one stderr line with {want:?}:\n{}",
        o.describe()
    );
}

const SCRIPT: &str = "echo out; echo err >&2; exit 3";

/// A user other than root runs `cloche run` through the daemon and gets
/// what root gets from a world made in its own process: the same stdout,
/// stderr, exit code and report (`--json`), the output as it is written;
/// what cannot go through the daemon is refused in one line.
#[test]
fn a_user_runs_a_command_through_the_daemon_as_root_does_in_process() {
    let fx = Fixture::new();
    let proj = owned_dir(&fx, "a", AGENT_A);
    let d = Daemon::start(&fx, None);
    let sock = Some(d.socket.as_path());

    let here = run_as(&fx, None, &proj, None, &["--no-daemon", "run", "--", "sh", "-c", SCRIPT]);
    let there = run_as(&fx, Some(AGENT_A), &proj, sock, &["run", "--", "sh", "-c", SCRIPT]);
    assert_eq!(here.code, Some(3), "{}", here.describe());
    assert_eq!(text(&here.stdout), "out\n", "{}", here.describe());
    assert!(text(&here.stderr).ends_with("err\n"), "{}", here.describe());
    assert_eq!(
        (there.code, text(&there.stdout), text(&there.stderr)),
        (here.code, text(&here.stdout), text(&here.stderr)),
        "{}",
        there.describe()
    );

    // --json: the report after the output, the same document.
    let json_of = |o: &Outcome| -> Value {
        let t = text(&o.stdout);
        let doc = t.strip_prefix("out\n").unwrap_or_else(|| panic!("output first: {}", o.describe()));
        serde_json::from_str(doc).unwrap_or_else(|e| panic!("{e}: {}", o.describe()))
    };
    let here = run_as(&fx, None, &proj, None, &["--no-daemon", "run", "--json", "--", "sh", "-c", SCRIPT]);
    let there = run_as(&fx, Some(AGENT_A), &proj, sock, &["run", "--json", "--", "sh", "-c", SCRIPT]);
    let (h, t) = (json_of(&here), json_of(&there));
    assert_eq!(there.code, Some(3), "{}", there.describe());
    let keys = |v: &Value| v.as_object().unwrap().keys().cloned().collect::<Vec<_>>();
    assert_eq!(keys(&t), keys(&h), "{t:#}");
    for k in ["exit_code", "command", "cwd", "limits", "fs_diff", "network", "timed_out", "kept", "schema_version"] {
        assert_eq!(t[k], h[k], "{k}: {t:#}");
    }
    assert_ne!(t["world"], h["world"]);
    // --report FILE is written here, by the caller.
    let report = proj.join("report.json");
    let o = run_as(&fx, Some(AGENT_A), &proj, sock, &["run", "--report", "report.json", "--", "true"]);
    assert_eq!(o.code, Some(0), "{}", o.describe());
    assert_eq!(std::fs::metadata(&report).unwrap().uid(), AGENT_A);
    let r: Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    assert_eq!(r["exit_code"], 0);
    std::fs::remove_file(&report).unwrap();

    // Exit codes: a timeout, and a value refused before anything runs.
    let o = run_as(&fx, Some(AGENT_A), &proj, sock, &["run", "--timeout", "0.5", "--", "sleep", "5"]);
    assert_eq!(o.code, Some(124), "{}", o.describe());
    assert!(text(&o.stderr).contains("cloche: timed out; world killed"), "{}", o.describe());
    refused(&run_as(&fx, Some(AGENT_A), &proj, sock, &["run", "--memory", "12x", "--", "true"]), "--memory 12x");
    // Never ignored: what the daemon's worlds cannot do.
    for (args, want) in [
        (&["run", "-t", "--", "true"][..], "-t cannot go through the daemon"),
        (&["run", "-i", "--", "true"][..], "-i cannot go through the daemon"),
        (&["run", "--policy", "/dev/null", "--", "true"][..], "--policy cannot go through the daemon"),
    ] {
        refused(&run_as(&fx, Some(AGENT_A), &proj, sock, args), want);
    }

    // As it is written: the first line long before the end.
    let mut c = cloche_as(&fx, Some(AGENT_A), &proj, sock);
    c.args(["run", "--timeout", "30", "--", "sh", "-c", "echo first; sleep 2; echo second"]);
    let start = Instant::now();
    let mut child = c.stdout(Stdio::piped()).stderr(Stdio::null()).spawn().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    assert_eq!(lines.next().unwrap().unwrap(), "first");
    let first = start.elapsed();
    assert_eq!(lines.next().unwrap().unwrap(), "second");
    assert!(child.wait().unwrap().success());
    let end = start.elapsed();
    assert!(end - first >= Duration::from_millis(1500), "first line at {first:?}, end at {end:?}");
    drop(d);
    fx.finish();
}

/// A client that goes away (killed) stops its world: no process of the
/// world is left, and the daemon says why.
#[test]
fn a_client_that_goes_away_stops_its_world() {
    let fx = Fixture::new();
    let proj = owned_dir(&fx, "a", AGENT_A);
    let d = Daemon::start(&fx, None);
    let tag = format!("sleep {}", 600 + std::process::id() % 300);
    let mut c = cloche_as(&fx, Some(AGENT_A), &proj, Some(&d.socket));
    c.args(["run", "--", "sh", "-c", &format!("echo started; exec {tag}")]);
    let mut child = c.stdout(Stdio::piped()).stderr(Stdio::null()).spawn().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    assert_eq!(lines.next().unwrap().unwrap(), "started");
    let running = || {
        std::fs::read_dir("/proc").unwrap().flatten().any(|e| {
            std::fs::read(e.path().join("cmdline"))
                .is_ok_and(|c| c.split(|b| *b == 0).collect::<Vec<_>>().join(&b' ').starts_with(tag.as_bytes()))
        })
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while !running() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(running(), "the world's command runs");
    child.kill().unwrap();
    child.wait().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while running() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(!running(), "the world outlived its client by 10 s: {}", d.log_text());
    assert!(d.log_text().contains("client went away"), "{}", d.log_text());
    drop(d);
    fx.finish();
}

/// `cloche batch` as agents through the daemon: one submits, lists and
/// shows its batch; another sees nothing of it; the agent may not approve
/// (the daemon's refusal, one line); root approves, the agent runs it,
/// root commits what it wrote (the agent's files), and discards the world.
#[test]
fn agents_use_batches_through_the_daemon_and_see_only_their_own() {
    let fx = Fixture::new();
    let proj = owned_dir(&fx, "a", AGENT_A);
    let d = Daemon::start(&fx, None);
    let sock = Some(d.socket.as_path());
    let file = proj.join("batch.json");
    let batch = json!({"project": proj, "entries": [
        {"command": "echo one; echo two >&2"}, {"command": "echo made > made.txt"}]});
    std::fs::write(&file, serde_json::to_vec(&batch).unwrap()).unwrap();

    let o = run_as(&fx, Some(AGENT_A), &proj, sock, &["batch", "submit", "batch.json"]);
    assert_eq!(o.code, Some(0), "{}", o.describe());
    let id = text(&o.stdout).trim().to_string();
    assert_eq!(id.len(), 16, "{}", o.describe());
    let list = run_as(&fx, Some(AGENT_A), &proj, sock, &["batch", "list"]);
    assert!(text(&list.stdout).starts_with(&format!("{id}  pending")), "{}", list.describe());
    let show = run_as(&fx, Some(AGENT_A), &proj, sock, &["batch", "show", &id, "--json"]);
    let v: Value = serde_json::from_slice(&show.stdout).unwrap_or_else(|e| panic!("{e}: {}", show.describe()));
    assert_eq!((v["id"].as_str(), v["submitter"].clone()), (Some(id.as_str()), json!(format!("uid:{AGENT_A}"))));
    assert_eq!(v["schema_version"], 1, "{v}");
    // The text as root prints it for the same batch in process.
    let mine = run_as(&fx, Some(AGENT_A), &proj, sock, &["batch", "show", &id]);
    let root = run_as(&fx, None, &proj, None, &["--no-daemon", "batch", "show", &id]);
    assert_eq!(text(&mine.stdout), text(&root.stdout), "{}", mine.describe());
    assert!(text(&mine.stdout).starts_with(&format!("batch {id}  Pending  decision")), "{}", mine.describe());

    // Another agent: as if it did not exist.
    refused(&run_as(&fx, Some(AGENT_B), &proj, sock, &["batch", "show", &id]), &format!("no batch {id}"));
    refused(&run_as(&fx, Some(AGENT_B), &proj, sock, &["batch", "cancel", &id]), &format!("no batch {id}"));
    let theirs = run_as(&fx, Some(AGENT_B), &proj, sock, &["batch", "list", "--json"]);
    let v: Value = serde_json::from_slice(&theirs.stdout).unwrap_or_else(|e| panic!("{e}: {}", theirs.describe()));
    assert_eq!(v["batches"], json!([]), "{v}");

    // The agent may not approve; root does, through the daemon.
    refused(&run_as(&fx, Some(AGENT_A), &proj, sock, &["batch", "approve", &id]), "needs the reviewer role");
    let o = run_as(&fx, None, &proj, sock, &["batch", "approve", &id]);
    assert_eq!((o.code, text(&o.stderr)), (Some(0), format!("cloche: batch {id} approved\n")), "{}", o.describe());
    let audit = audit_events(&fx, "approved");
    assert_eq!(audit.iter().map(|r| r["actor"].clone()).collect::<Vec<_>>(), [json!("uid:0")]);

    let run = run_as(&fx, Some(AGENT_A), &proj, sock, &["batch", "run", &id]);
    assert_eq!(run.code, Some(0), "{}", run.describe());
    let v: Value =
        serde_json::from_slice(&run_as(&fx, Some(AGENT_A), &proj, sock, &["batch", "show", &id, "--json"]).stdout)
            .unwrap();
    assert_eq!(v["state"], "completed", "{v}");

    refused(&run_as(&fx, Some(AGENT_A), &proj, sock, &["commit", &id]), "needs the reviewer role");
    let o = run_as(&fx, None, &proj, sock, &["commit", &id]);
    assert_eq!(o.code, Some(0), "{}", o.describe());
    assert!(text(&o.stderr).contains("cloche: committed 1 paths from world"), "{}", o.describe());
    assert_eq!(std::fs::metadata(proj.join("made.txt")).unwrap().uid(), AGENT_A, "the agent's file");
    let o = run_as(&fx, None, &proj, sock, &["discard", &id]);
    assert_eq!(o.code, Some(0), "{}", o.describe());
    drop(d);
    fx.finish();
}

/// 16 lower-case hex digits (a batch's, an entry's, a world's id) as `ID`.
fn ids_out(t: &str) -> String {
    let b = t.as_bytes();
    let (mut out, mut i) = (String::new(), 0);
    while i < b.len() {
        let hex = |c: &u8| c.is_ascii_digit() || (b'a'..=b'f').contains(c);
        if i + 16 <= b.len() && b[i..i + 16].iter().all(hex) && !b.get(i + 16).is_some_and(hex) {
            out.push_str("ID");
            i += 16;
        } else {
            out.push(b[i] as char);
            i += 1;
        }
    }
    out
}

/// Submits `batch` as `uid` (through the daemon when `socket`), approved by root.
fn approved(fx: &Fixture, uid: Option<u32>, dir: &Path, socket: Option<&Path>, batch: &Value) -> String {
    let file = dir.join(format!("batch-{}.json", fx.tag));
    std::fs::write(&file, serde_json::to_vec(batch).unwrap()).unwrap();
    let here: &[&str] = if socket.is_none() { &["--no-daemon"] } else { &[] };
    let args = |rest: &[&str]| -> Vec<String> { here.iter().chain(rest).map(|a| a.to_string()).collect() };
    let submit = args(&["batch", "submit", file.to_str().unwrap()]);
    let o = run_cmd(cloche_as(fx, uid, dir, socket).args(&submit), DEADLINE);
    std::fs::remove_file(&file).unwrap();
    assert_eq!(o.code, Some(0), "{}", o.describe());
    let id = text(&o.stdout).trim().to_string();
    let o = run_cmd(cloche_as(fx, None, dir, socket).args(args(&["batch", "approve", &id])), DEADLINE);
    assert_eq!(o.code, Some(0), "{}", o.describe());
    id
}

/// `cloche batch run` through the daemon shows what it shows in process:
/// a line per entry as it starts, its output as it comes, its exit, the
/// kept world; and the same exit codes (1: an entry failed).
#[test]
fn a_batch_run_through_the_daemon_shows_its_steps_and_output_as_they_come() {
    let fx = Fixture::new();
    let proj = owned_dir(&fx, "a", AGENT_A);
    let d = Daemon::start(&fx, None);
    let sock = Some(d.socket.as_path());
    let batch = json!({"project": proj, "stop_on_failure": false, "entries": [
        {"command": "echo one; echo two >&2"}, {"command": "printf 'no newline'; exit 4"}, {"command": "echo three"}]});
    let theirs = approved(&fx, Some(AGENT_A), &proj, sock, &batch);
    let there = run_as(&fx, Some(AGENT_A), &proj, sock, &["batch", "run", &theirs]);
    let ours = approved(&fx, None, &proj, None, &batch);
    let here = run_as(&fx, None, &proj, None, &["--no-daemon", "batch", "run", &ours]);
    assert_eq!(here.code, Some(1), "{}", here.describe());
    assert_eq!(
        text(&here.stdout),
        "one
no newlinethree
",
        "{}",
        here.describe()
    );
    assert!(
        text(&here.stderr).contains(
            "[2/3] running: printf 'no newline'; exit 4
"
        ),
        "{}",
        here.describe()
    );
    assert_eq!(
        (there.code, text(&there.stdout), ids_out(&text(&there.stderr))),
        (here.code, text(&here.stdout), ids_out(&text(&here.stderr))),
        "{}",
        there.describe()
    );
    // --json: the batch after its run, the entries' output on stderr.
    let again = approved(&fx, Some(AGENT_A), &proj, sock, &batch);
    let o = run_as(&fx, Some(AGENT_A), &proj, sock, &["batch", "run", &again, "--json"]);
    let v: Value = serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", o.describe()));
    assert_eq!((o.code, v["state"].as_str(), v["id"].as_str()), (Some(1), Some("failed"), Some(again.as_str())));
    assert!(
        text(&o.stderr).contains(
            "one
two
"
        ),
        "{}",
        o.describe()
    );

    // As it comes: the first line long before the end.
    let slow = json!({"project": proj, "entries": [{"command": "echo first; sleep 2; echo second"}]});
    let id = approved(&fx, Some(AGENT_A), &proj, sock, &slow);
    let mut c = cloche_as(&fx, Some(AGENT_A), &proj, sock);
    let start = Instant::now();
    let mut child = c.args(["batch", "run", &id]).stdout(Stdio::piped()).stderr(Stdio::null()).spawn().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    assert_eq!(lines.next().unwrap().unwrap(), "first");
    let first = start.elapsed();
    assert_eq!(lines.next().unwrap().unwrap(), "second");
    assert!(child.wait().unwrap().success());
    let end = start.elapsed();
    assert!(end - first >= Duration::from_millis(1500), "first line at {first:?}, end at {end:?}");
    // A batch that is not approved: the daemon's refusal, one line, nothing run.
    let o = run_as(&fx, Some(AGENT_A), &proj, sock, &["batch", "run", &id]);
    refused(&o, "");
    for b in [theirs, ours, again, id] {
        let o = run_as(&fx, None, &proj, None, &["--no-daemon", "discard", &b]);
        assert_eq!(o.code, Some(0), "{}", o.describe());
    }
    drop(d);
    fx.finish();
}

/// Without a daemon, a user other than root gets one line saying how to
/// start one, and exit 125, whatever the command; nothing runs.
#[test]
fn without_a_daemon_a_user_is_told_how_to_start_one() {
    let fx = Fixture::new();
    let proj = owned_dir(&fx, "a", AGENT_A);
    open_up(fx.out.path());
    let missing = fx.out.path().join("no-daemon.sock");
    // A socket a daemon left behind, nobody listening.
    let stale = fx.out.path().join("stale.sock");
    drop(std::os::unix::net::UnixListener::bind(&stale).unwrap());
    std::fs::set_permissions(&stale, std::os::unix::fs::PermissionsExt::from_mode(0o666)).unwrap();
    for sock in [&missing, &stale] {
        let want =
            format!("no daemon at {}; start one as root with: cloched --socket {}", sock.display(), sock.display());
        for args in [
            &["run", "--", "true"][..],
            &["batch", "list"][..],
            &["batch", "submit", "b.json"][..],
            &["diff", "0123456789abcdef"][..],
            &["commit", "0123456789abcdef"][..],
        ] {
            let o = run_as(&fx, Some(AGENT_A), &proj, Some(sock), args);
            refused(&o, &want);
            assert!(text(&o.stderr).contains("(see README)"), "{}", o.describe());
        }
    }
    // Root is not worked for silently either when it named the socket.
    refused(&run_as(&fx, None, &proj, Some(&missing), &["run", "--", "true"]), "no daemon at");
    assert!(fx.worlds().is_empty());
    fx.finish();
}

/// Root works in this process as before: without a daemon, with
/// `--no-daemon` or `CLOCHE_SOCKET=` beside a running daemon, and when the
/// daemon serves another state directory than `CLOCHE_STATE_DIR`.
#[test]
fn root_works_in_process_without_a_daemon_or_when_told() {
    let fx = Fixture::new();
    let proj = fx.dir().to_path_buf();
    let keep_here = |o: &Outcome| {
        assert_eq!(o.code, Some(0), "{}", o.describe());
        let err = text(&o.stderr);
        let line =
            err.lines().find(|l| l.starts_with("cloche: kept world ")).unwrap_or_else(|| panic!("{}", o.describe()));
        let world = line.split_whitespace().nth(3).unwrap_or_default().to_string();
        assert!(fx.worlds().contains(&world), "kept in this fixture's state: {}", o.describe());
        let o = run_as(&fx, None, &proj, None, &["--no-daemon", "discard", &world]);
        assert_eq!(o.code, Some(0), "{}", o.describe());
    };
    // No daemon at the default socket's path for this state directory.
    keep_here(&run_as(&fx, None, &proj, None, &["run", "--keep", "--", "true"]));

    // A daemon on another state directory, named by CLOCHE_SOCKET.
    let other = Scratch::new_in("/tmp", &format!("cloche-test-state2-{}-", fx.tag));
    open_up(fx.out.path());
    let socket = fx.out.path().join("other.sock");
    let mut daemon = Command::new(cloched_bin());
    daemon.arg("--socket").arg(&socket).env("CLOCHE_STATE_DIR", other.path());
    let mut daemon = daemon.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::os::unix::net::UnixStream::connect(&socket).is_err() {
        assert!(Instant::now() < deadline && daemon.try_wait().unwrap().is_none(), "cloched did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    keep_here(&run_as(&fx, None, &proj, Some(&socket), &["--no-daemon", "run", "--keep", "--", "true"]));
    keep_here(&run_as(&fx, None, &proj, Some(Path::new("")), &["run", "--keep", "--", "true"]));
    // Named, it must serve this state directory: never worked for silently.
    refused(&run_as(&fx, None, &proj, Some(&socket), &["run", "--", "true"]), "serves the state directory");
    // SAFETY: kill(2) of our own child.
    unsafe { libc::kill(daemon.id() as i32, libc::SIGTERM) };
    daemon.wait().unwrap();
    drop(other);
    fx.finish();
}
