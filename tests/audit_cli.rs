//! `cloche audit verify|tail|recover` end to end, on logs written by the
//! library in a temporary state directory. Needs no root and no worlds.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use cloche_trace::audit::events;
use cloche_trace::AuditLog;
use serde_json::{json, Value};

const EVENTS: &[&str] = &[
    events::SUBMITTED,
    events::DECIDED,
    events::APPROVED,
    events::REJECTED,
    events::STARTED,
    events::ENTRY_FINISHED,
    events::CANCELLED,
    events::COMMITTED,
    events::DISCARDED,
    events::POLICY_CHANGED,
    events::EXPIRED,
    events::FAILED,
];

/// A state directory holding an audit.jsonl of `n` records.
fn state_with(n: usize) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let mut log = AuditLog::open(&path).unwrap();
    for i in 0..n {
        let entry = format!("e{i}");
        let details = json!({"i": i, "output_sha256": format!("{i:064x}"), "note": "ünïcode \"quoted\"\n"});
        log.append(EVENTS[i % EVENTS.len()], "uid:1000", Some("b-42"), Some(&entry), details).unwrap();
    }
    (dir, path)
}

fn cloche(state: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_cloche")).args(args).env("CLOCHE_STATE_DIR", state).output().expect("run cloche")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn lines(path: &Path) -> Vec<String> {
    fs::read_to_string(path).unwrap().lines().map(|l| format!("{l}\n")).collect()
}

/// `cloche audit verify` fails with exit 1 and one stderr line naming `line`.
fn assert_broken_at(state: &Path, line: u64, why: &str) {
    let out = cloche(state, &["audit", "verify"]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "stdout: {} stderr: {err}", text(&out.stdout));
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    assert!(err.starts_with("cloche: ") && err.contains(&format!("audit.jsonl line {line}: ")), "{err}");
    assert!(err.contains(why), "expected {why:?} in {err}");
    assert!(out.stdout.is_empty());
}

#[test]
fn verify_a_sound_log_and_every_tampering() {
    let (state, path) = state_with(20);
    let out = cloche(state.path(), &["audit", "verify"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    assert_eq!(stdout.lines().next(), Some("ok: 20 entries"));
    assert!(stdout.contains("head: "));
    let good = lines(&path);

    let mut edited = good.clone();
    edited[6] = edited[6].replace("\"actor\":\"uid:1000\"", "\"actor\":\"uid:0\"");
    assert_ne!(edited[6], good[6]);
    fs::write(&path, edited.concat()).unwrap();
    assert_broken_at(state.path(), 7, "hash mismatch");

    let mut deleted = good.clone();
    deleted.remove(4);
    fs::write(&path, deleted.concat()).unwrap();
    assert_broken_at(state.path(), 5, "seq 6 where 5 was expected");

    let mut swapped = good.clone();
    swapped.swap(7, 8);
    fs::write(&path, swapped.concat()).unwrap();
    assert_broken_at(state.path(), 8, "seq 9 where 8 was expected");

    let all = good.concat();
    let half = all.len() - good[19].len() / 2;
    fs::write(&path, &all[..half]).unwrap();
    assert_broken_at(state.path(), 20, "incomplete last line");

    fs::write(&path, format!("{all}{{\"seq\":21,\"garbage\n")).unwrap();
    assert_broken_at(state.path(), 21, "invalid JSON");

    fs::write(&path, &all).unwrap();
    assert_eq!(cloche(state.path(), &["audit", "verify"]).status.code(), Some(0));
}

#[test]
fn missing_log_and_file_option() {
    // A missing log is not an empty one: nothing was verified (125, one line).
    let state = tempfile::tempdir().unwrap();
    let out = cloche(state.path(), &["audit", "verify"]);
    assert_eq!(out.status.code(), Some(125));
    assert!(out.stdout.is_empty(), "{}", text(&out.stdout));
    assert!(text(&out.stderr).starts_with("cloche: there is no audit log at "), "{}", text(&out.stderr));
    assert_eq!(text(&out.stderr).lines().count(), 1);

    let (other, path) = state_with(3);
    let out = cloche(state.path(), &["audit", "verify", "--file", path.to_str().unwrap()]);
    assert_eq!(text(&out.stdout).lines().next(), Some("ok: 3 entries"));
    let out = cloche(state.path(), &["audit", "tail", "--file", path.to_str().unwrap(), "-n", "1"]);
    assert!(text(&out.stdout).contains("     3  "), "{}", text(&out.stdout));
    drop(other);

    // An unreadable path is cloche's failure (125), not a broken chain.
    let out = cloche(state.path(), &["audit", "verify", "--file", state.path().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(125), "{}", text(&out.stderr));
    assert_eq!(text(&out.stderr).lines().count(), 1);
}

#[test]
fn tail_prints_the_last_records() {
    let (state, path) = state_with(20);
    let out = cloche(state.path(), &["audit", "tail", "-n", "3", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let got: Vec<&str> = stdout.lines().collect();
    let want: Vec<String> = lines(&path)[17..].iter().map(|l| l.trim_end().to_string()).collect();
    assert_eq!(got, want, "--json prints the log's own lines");

    let out = cloche(state.path(), &["audit", "tail"]);
    let stdout = text(&out.stdout);
    assert_eq!(stdout.lines().count(), 10);
    let last = stdout.lines().last().unwrap();
    assert!(last.trim_start().starts_with("20  "), "{last}");
    assert!(
        last.contains("committed") && last.contains("uid:1000") && last.contains("batch=b-42  entry=e19"),
        "{last}"
    );

    let empty = tempfile::tempdir().unwrap();
    let out = cloche(empty.path(), &["audit", "tail"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(out.stdout.is_empty() && text(&out.stderr).contains("no audit log"));
}

#[test]
fn recover_sets_a_torn_line_aside() {
    let (state, path) = state_with(8);
    let all = lines(&path).concat();
    fs::write(&path, &all[..all.len() - 25]).unwrap();
    assert_broken_at(state.path(), 8, "incomplete last line");
    let out = cloche(state.path(), &["audit", "recover"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stdout).starts_with("recovered: "));
    assert!(path.with_file_name("audit.jsonl.torn-8").exists());
    let out = cloche(state.path(), &["audit", "verify"]);
    assert_eq!(text(&out.stdout).lines().next(), Some("ok: 8 entries"));
    let last: Value = serde_json::from_str(lines(&path).last().unwrap()).unwrap();
    assert_eq!(last["event"], "recovered");
    // Nothing else to recover: refused, one line, 125.
    let out = cloche(state.path(), &["audit", "recover"]);
    assert_eq!(out.status.code(), Some(125));
}

#[test]
fn concurrent_appends_verify_through_the_cli() {
    let (state, path) = state_with(0);
    let handles: Vec<_> = (0..4)
        .map(|t| {
            let path = path.clone();
            std::thread::spawn(move || {
                let mut log = AuditLog::open(&path).unwrap();
                for i in 0..50 {
                    log.append(events::ENTRY_FINISHED, &format!("uid:{t}"), None, None, json!({"i": i})).unwrap();
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    let out = cloche(state.path(), &["audit", "verify"]);
    assert_eq!(text(&out.stdout).lines().next(), Some("ok: 200 entries"), "{}", text(&out.stderr));
}

/// The Python snippet of docs/audit.md re-verifies a log cloche wrote, and
/// finds the same first bad line.
#[test]
fn the_documented_python_verifier_agrees() {
    if Command::new("python3").arg("-c").arg("pass").output().map(|o| !o.status.success()).unwrap_or(true) {
        eprintln!("skipped: no python3");
        return;
    }
    let doc = fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/audit.md")).unwrap();
    let start = doc.find("```python\n").expect("docs/audit.md has a python block") + "```python\n".len();
    let script = &doc[start..start + doc[start..].find("```").unwrap()];
    let (state, path) = state_with(20);
    let run = |p: &Path| Command::new("python3").arg("-c").arg(script).arg(p).output().unwrap();
    let out = run(&path);
    assert_eq!(out.status.code(), Some(0), "{}{}", text(&out.stdout), text(&out.stderr));
    assert_eq!(text(&out.stdout).trim(), "ok: 20 entries");
    let mut edited = lines(&path);
    edited[11] = edited[11].replace("b-42", "b-43");
    fs::write(&path, edited.concat()).unwrap();
    let out = run(&path);
    assert_ne!(out.status.code(), Some(0));
    let said = text(&out.stdout) + &text(&out.stderr);
    assert!(said.contains("line 12: hash mismatch"), "{said}");
    drop(state);
}
