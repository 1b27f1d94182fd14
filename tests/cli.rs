//! The command line as people use it: the flags they know from Docker and
//! the usual Unix tools, `--json` documents checked against the JSON
//! Schemas in docs/schemas, colour, the pager, completions, the man page,
//! and every bad input refused with one line, a non-zero exit and nothing
//! changed. All through the real binary.

use crate::common;

use common::*;
use serde_json::Value;
use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Exit 125, nothing on stdout, exactly one line on stderr containing `want`.
fn refused(o: &Outcome, want: &str) -> Option<String> {
    let err = text(&o.stderr);
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    let ok = o.code == Some(125) && o.stdout.is_empty() && lines.len() == 1 && lines[0].contains(want);
    (!ok).then(|| format!("want exit 125, no stdout, one stderr line with {want:?}:\n{}", o.describe()))
}

/// Files and directories under `dir` (relative paths), to show that a
/// refused command changed nothing.
fn listing(dir: &Path) -> BTreeSet<PathBuf> {
    let mut out = BTreeSet::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                todo.push(p.clone());
            }
            out.insert(p.strip_prefix(dir).unwrap().to_path_buf());
        }
    }
    out
}

#[test]
fn flags_people_know_are_aliases_of_todays() {
    let fx = Fixture::new();
    let sub = fx.mkdir("crates/inner");
    let env_file = fx.out.path().join("vars.env");
    std::fs::write(&env_file, "# set by the file\nFROM_FILE=file value\nOVERRIDDEN=file\nPASSED_FROM_FILE\n").unwrap();
    let script = "printf '%s|' \"$FROM_FILE\" \"$OVERRIDDEN\" \"$PASSED\" \"$PASSED_FROM_FILE\" \"${NOT_SET-unset}\" \
                  \"$(pwd)\"";
    let report = fx.report_path();
    let mut cmd = fx.command();
    cmd.env("PASSED", "from the caller").env("PASSED_FROM_FILE", "caller too").env_remove("NOT_SET");
    cmd.args([OsStr::new("run"), OsStr::new("--report"), report.as_os_str()]);
    cmd.args(["-e", "OVERRIDDEN=flag", "-e", "PASSED", "-e", "NOT_SET", "--env-file"]).arg(&env_file);
    // A relative --workdir is taken from the current directory; no `--`
    // before a command that does not start with `-`.
    cmd.args(["-w", "crates/inner", "-m", "300M", "--pids-limit", "77", "--network", "none", "--rm"]);
    cmd.args(["sh", "-c", script]);
    let o = run_cmd(&mut cmd, DEADLINE);
    o.expect_code(0);
    let want = format!("file value|flag|from the caller|caller too|unset|{}|", sub.display());
    assert_eq!(text(&o.stdout), want, "{}", o.describe());
    let r: Value = serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    assert_eq!((r["limits"]["memory"].as_u64(), r["limits"]["pids"].as_u64()), (Some(300 << 20), Some(77)), "{r:#}");
    assert_eq!(r["network"]["mode"], "none");
    assert_eq!(r["cwd"], sub.to_str().unwrap());

    // The long names of today still work, and `--` still separates a
    // command that starts like an option.
    let o = fx.cloche(&["run", "--cwd", "crates", "--memory", "300M", "--pids", "77", "--net", "none", "--", "pwd"]);
    o.expect_code(0);
    assert_eq!(text(&o.stdout).trim(), fx.dir().join("crates").to_str().unwrap(), "{}", o.describe());
    let o = fx.cloche(&["run", "--workdir", "crates", "ls", "-a", "-1"]);
    o.expect_code(0);
    assert!(text(&o.stdout).lines().any(|l| l == "inner"), "`ls -a -1` without --: {}", o.describe());
    let o = fx.cloche(&["run", "--", "-not-a-command"]);
    o.expect_code(127);
    assert!(fx.worlds().is_empty(), "--rm (the default) kept a world: {:?}", fx.worlds());
    fx.finish();
}

#[test]
fn bad_values_are_refused_with_one_line_and_change_nothing() {
    let fx = Fixture::new();
    let missing = format!("/nonexistent-{}/dir/r.json", fx.tag);
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["run", "--timeout", "-1", "--", "true"], "--timeout -1: must be a positive"),
        (vec!["run", "--timeout=-1", "true"], "--timeout -1: must be a positive"),
        (vec!["run", "--timeout", "0", "true"], "--timeout 0: must be a positive"),
        (vec!["run", "--cpus", "-3", "--", "true"], "--cpus -3: must be a positive"),
        (vec!["run", "--cpus", "0", "true"], "--cpus 0: must be a positive"),
        (vec!["run", "--pids", "-1", "true"], "--pids -1: must be a positive"),
        (vec!["run", "--pids-limit", "0", "true"], "--pids 0: must be a positive"),
        (vec!["run", "--memory", "-1", "true"], "--memory -1: must be a positive"),
        (vec!["run", "-m", "-5G", "true"], "--memory -5G: must be a positive"),
        (vec!["run", "--cwd", "no-such-dir", "true"], "--cwd no-such-dir: No such file or directory"),
        (vec!["run", "-e", "=x", "true"], "--env =x: expected K=V"),
        (vec!["run", "--env-file", "/nonexistent-env-file", "true"], "--env-file /nonexistent-env-file"),
        (vec!["run", "--keep", "--rm", "true"], "--keep"),
        (vec!["run", "--report", &missing, "--keep", "--", "true"], "--report"),
        (vec!["audit", "tail", "-n", "-1"], "must be a positive whole number"),
        (vec!["history", "--limit", "-1"], "must be a positive whole number"),
        (vec!["run", "--color", "sometimes", "true"], "sometimes"),
    ];
    let before = listing(fx.state.path());
    let mut wrong = Vec::new();
    for (args, want) in cases {
        let o = fx.cloche(&args);
        wrong.extend(refused(&o, want));
        if listing(fx.state.path()) != before {
            wrong.push(format!("`{}` changed the state directory: {:?}", args.join(" "), listing(fx.state.path())));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n\n"));
    fx.finish();
}

#[test]
fn the_report_directory_is_checked_before_the_world_and_the_exit_code_survives() {
    let fx = Fixture::new();
    // Refused before the world starts: no kept world, no state at all.
    let missing = format!("/nonexistent-{}/dir/r.json", fx.tag);
    let o = fx.cloche(&["run", "--keep", "--report", &missing, "--", "sh", "-c", "exit 3"]);
    if let Some(w) = refused(&o, &format!("--report {missing}")) {
        panic!("{w}");
    }
    assert!(o.elapsed < Duration::from_secs(5));
    assert!(listing(fx.state.path()).is_empty(), "state made: {:?}", listing(fx.state.path()));

    // A report that fails after all (its directory went away meanwhile):
    // the command's own status still comes out.
    let dir = fx.out.path().join("going");
    std::fs::create_dir(&dir).unwrap();
    let mut cmd = fx.command();
    cmd.args([OsStr::new("run"), OsStr::new("--report"), dir.join("r.json").as_os_str()]);
    cmd.args(["--", "sh", "-c", "sleep 2; exit 7"]).stdout(Stdio::null()).stderr(Stdio::piped());
    let mut child = HostChild::spawn(&mut cmd);
    std::thread::sleep(Duration::from_millis(800));
    std::fs::remove_dir(&dir).unwrap();
    let status = child.0.wait().unwrap();
    let mut err = String::new();
    child.0.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    assert_eq!(status.code(), Some(7), "the command's exit code was lost to the report: {err}");
    assert!(err.contains("--report"), "the failed report is said: {err}");
    fx.finish();
}

#[test]
fn audit_verify_of_a_missing_log_fails() {
    let fx = Fixture::new();
    let missing = format!("/nonexistent-{}", fx.tag);
    for args in [
        vec!["audit", "verify", "--file", missing.as_str()],
        vec!["audit", "verify", "--json", "--file", missing.as_str()],
        // A state directory whose log is gone (or was never written).
        vec!["audit", "verify"],
    ] {
        let o = fx.cloche(&args);
        if let Some(w) = refused(&o, "no audit log") {
            panic!("{w}");
        }
    }
    assert!(!Path::new(&missing).exists());
    fx.finish();
}

fn batch_file(fx: &Fixture, project: &str, entries: usize) -> PathBuf {
    let entries: Vec<Value> = (0..entries).map(|i| serde_json::json!({"command": format!("echo {i}")})).collect();
    let b = serde_json::json!({"agent": "a1", "project": project, "entries": entries});
    let path = fx.out.path().join(format!("batch-{}.json", unique_tag()));
    std::fs::write(&path, serde_json::to_vec(&b).unwrap()).unwrap();
    path
}

#[test]
fn a_batch_over_the_limit_states_the_one_limit_and_a_missing_project_is_refused() {
    let fx = Fixture::new();
    let project = fx.dir().to_str().unwrap().to_string();
    let mut wrong = Vec::new();
    for n in [11, 10_000] {
        let f = batch_file(&fx, &project, n);
        let o = fx.cloche(&[OsStr::new("batch"), OsStr::new("submit"), f.as_os_str()]);
        wrong.extend(refused(&o, &format!("{n} entries; at most 10 are allowed (the policy's [batch] max_entries)")));
        if text(&o.stderr).contains("at most 1000") {
            wrong.push(format!("a second limit is stated: {}", o.describe()));
        }
    }
    let gone = format!("/nonexistent-{}/project", fx.tag);
    let f = batch_file(&fx, &gone, 1);
    let o = fx.cloche(&[OsStr::new("batch"), OsStr::new("submit"), f.as_os_str()]);
    wrong.extend(refused(&o, &format!("project {gone}: No such file or directory")));
    assert!(wrong.is_empty(), "{}", wrong.join("\n\n"));
    // Nothing was recorded.
    let o = fx.cloche(&["batch", "list", "--json"]);
    o.expect_code(0);
    let list: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(list["batches"].as_array().map(Vec::len), Some(0), "{list:#}");
    assert!(audit_events(&fx, "submitted").is_empty());
    // At the limit it is accepted.
    let f = batch_file(&fx, &project, 10);
    fx.cloche(&[OsStr::new("batch"), OsStr::new("submit"), f.as_os_str()]).expect_code(0);
    fx.finish();
}

/// Checks each (NAME, document) against docs/schemas/NAME.json with
/// Python's jsonschema (an implementation independent of the generator);
/// the errors, if any, each line led by its NAME.
fn schema_errors(docs: &[(&str, &Value)]) -> Vec<String> {
    // One Python for every document: importing jsonschema takes a fifth of
    // a second, and the test checks 30-odd documents.
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/schemas");
    let mut input = Vec::new();
    for (name, doc) in docs {
        let schema = dir.join(format!("{name}.json"));
        assert!(schema.is_file(), "no schema {}", schema.display());
        input.push(serde_json::json!([name, schema.to_str().unwrap(), doc]));
    }
    let script = "import json, sys, jsonschema\n\
        for name, path, doc in json.load(sys.stdin):\n    \
            schema = json.load(open(path))\n    \
            jsonschema.Draft202012Validator.check_schema(schema)\n    \
            for e in jsonschema.Draft202012Validator(schema).iter_errors(doc):\n        \
                print(name + ':', list(e.absolute_path), e.message)\n";
    let mut child = Command::new("python3")
        .args(["-c", script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 (with jsonschema: bash .ci/setup installs it)");
    use std::io::Write;
    child.stdin.take().unwrap().write_all(&serde_json::to_vec(&input).unwrap()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "the validator failed (is jsonschema installed? bash .ci/setup): {}",
        text(&out.stderr)
    );
    text(&out.stdout).lines().map(str::to_string).collect()
}

/// Runs `args` (expecting `code`) and parses its stdout as one document.
fn doc(fx: &Fixture, args: &[&str], code: i32) -> Value {
    let o = fx.cloche(args);
    o.expect_code(code);
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("not one JSON document ({e})\n{}", o.describe()))
}

#[test]
fn every_json_document_has_a_schema_version_and_matches_its_schema() {
    let fx = Fixture::new();
    let project = fx.dir().to_str().unwrap().to_string();
    fx.write("a.txt", b"hello\n", 0o644);
    let mut docs: Vec<(&str, Value)> = Vec::new();

    let o = fx.cloche(&["run", "--json", "--", "sh", "-c", "echo new > new.txt"]);
    o.expect_code(0);
    docs.push(("run-report", serde_json::from_slice(&o.stdout).expect("run --json prints the report")));
    let o = fx.run(&["--keep"], &["sh", "-c", "echo kept > kept.txt"]);
    o.expect_code(0);
    let kept = o.report();
    let kept_id = kept["world"].as_str().unwrap().to_string();
    docs.push(("run-report", kept));
    // A run that continues the kept world (its report says which run and
    // what it changed itself), and a fork of the world.
    let o = fx.cloche(&["run", "--world", &kept_id, "--json", "--", "sh", "-c", "echo again >> kept.txt"]);
    o.expect_code(0);
    let continued: Value = serde_json::from_slice(&o.stdout).expect("run --world --json prints the report");
    assert_eq!((continued["world"].as_str(), continued["world_run"].as_u64()), (Some(kept_id.as_str()), Some(2)));
    docs.push(("run-report", continued));
    let fork = doc(&fx, &["worlds", "fork", &kept_id, "--json"], 0);
    let fork_id = fork["world"].as_str().unwrap().to_string();
    docs.push(("fork", fork));
    docs.push(("doctor", doc(&fx, &["doctor", "--json"], 0)));
    docs.push(("policy-check", doc(&fx, &["policy", "check", "--json", "rm -rf /"], 0)));
    docs.push(("policy-show", doc(&fx, &["policy", "show", "--json"], 0)));
    let policy = fx.out.path().join("p.toml");
    std::fs::write(&policy, policy_text(300, "")).unwrap();
    let p = policy.to_str().unwrap();
    docs.push(("policy-binding", doc(&fx, &["policy", "set", "--json", "--project", &project, p], 0)));
    docs.push(("policy-list", doc(&fx, &["policy", "list", "--json"], 0)));
    docs.push(("policy-binding", doc(&fx, &["policy", "unset", "--json", "--project", &project], 0)));

    // A batch through its whole life, then one rejected and one cancelled.
    let b = serde_json::json!({"agent": "a1", "project": project,
        "entries": [{"command": "cat a.txt"}, {"command": "echo changed > a.txt"}]});
    let f = fx.out.path().join("b.json");
    std::fs::write(&f, serde_json::to_vec(&b).unwrap()).unwrap();
    let submitted = doc(&fx, &["batch", "submit", "--json", f.to_str().unwrap()], 0);
    let id = submitted["id"].as_str().unwrap().to_string();
    docs.push(("batch", submitted));
    docs.push(("batch-dry-run", doc(&fx, &["batch", "run", &id, "--dry-run", "--json"], 0)));
    docs.push(("batch", doc(&fx, &["batch", "approve", &id, "--json"], 0)));
    let o = fx.cloche(&["batch", "run", &id, "--json"]);
    o.expect_code(0);
    assert!(text(&o.stderr).contains("hello"), "with --json the entries' output is on stderr: {}", o.describe());
    let ran: Value = serde_json::from_slice(&o.stdout).expect("batch run --json: one document on stdout");
    assert_eq!(ran["state"], "completed", "{ran:#}");
    docs.push(("batch", ran));
    docs.push(("batch", doc(&fx, &["batch", "show", &id, "--json"], 0)));
    docs.push(("batch-list", doc(&fx, &["batch", "list", "--json"], 0)));
    docs.push(("history", doc(&fx, &["history", "--json"], 0)));
    docs.push(("agents", doc(&fx, &["agents", "--json"], 0)));
    docs.push(("agent", doc(&fx, &["agents", "show", "a1", "--json"], 0)));
    docs.push(("agent", doc(&fx, &["agents", "register", "a2", "--json"], 0)));
    docs.push(("history-stats", doc(&fx, &["history", "--stats", "--json"], 0)));
    docs.push(("diff", doc(&fx, &["diff", &id, "--json"], 0)));
    docs.push(("commit", doc(&fx, &["commit", &id, "--json"], 0)));
    for verb in [&["reject", "--reason=no"][..], &["cancel"][..]] {
        let f = batch_file(&fx, &project, 1);
        let o = fx.cloche(&["batch", "submit", f.to_str().unwrap()]);
        o.expect_code(0);
        let other = text(&o.stdout).trim().to_string();
        let mut args = vec!["batch", verb[0], other.as_str(), "--json"];
        args.extend(&verb[1..]);
        docs.push(("batch", doc(&fx, &args, 0)));
    }
    docs.push(("worlds", doc(&fx, &["worlds", "list", "--json"], 0)));
    docs.push(("world", doc(&fx, &["worlds", "show", &kept_id, "--json"], 0)));
    docs.push(("worlds-gc", doc(&fx, &["worlds", "gc", "--dry-run", "--json"], 0)));
    docs.push(("discard", doc(&fx, &["discard", &kept_id, "--json"], 0)));
    docs.push(("discard", doc(&fx, &["discard", &fork_id, "--json"], 0)));
    docs.push(("discard", doc(&fx, &["discard", &id, "--json"], 0)));
    docs.push(("worlds-gc", doc(&fx, &["worlds", "gc", "--json"], 0)));
    docs.push(("autonomy", doc(&fx, &["autonomy", "enable", &project, "--json"], 0)));
    docs.push(("autonomy", doc(&fx, &["autonomy", "disable", &project, "--json"], 0)));
    docs.push(("audit-verify", doc(&fx, &["audit", "verify", "--json"], 0)));
    // A damaged copy of the log: verify names the line, recover sets it aside.
    let log = std::fs::read(fx.state.path().join("audit.jsonl")).unwrap();
    let copy = fx.out.path().join("audit.jsonl");
    std::fs::write(&copy, &log[..log.len() - 20]).unwrap();
    let c = copy.to_str().unwrap();
    docs.push(("audit-verify", doc(&fx, &["audit", "verify", "--json", "--file", c], 1)));
    docs.push(("audit-recover", doc(&fx, &["audit", "recover", "--json", "--file", c], 0)));

    let mut wrong = Vec::new();
    for (name, d) in &docs {
        if d["schema_version"] != 1 {
            wrong.push(format!("{name}: schema_version {}", d["schema_version"]));
        }
    }
    wrong.extend(schema_errors(&docs.iter().map(|(n, d)| (*n, d)).collect::<Vec<_>>()));
    // Every schema is exercised, and the schemas can fail.
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/schemas");
    for f in std::fs::read_dir(&dir).unwrap().flatten() {
        let name = f.file_name().to_string_lossy().trim_end_matches(".json").to_string();
        if !docs.iter().any(|(n, _)| *n == name) {
            wrong.push(format!("docs/schemas/{name}.json: no real output was checked against it"));
        }
    }
    let mut broken = docs[0].1.clone();
    broken.as_object_mut().unwrap().remove("exit_code");
    broken["fs_diff"]["added"][0]["kind"] = "nonsense".into();
    let errors = schema_errors(&[("run-report", &broken)]).join("\n");
    assert!(
        errors.contains("'exit_code' is a required property") && errors.contains("'nonsense'"),
        "the schema must catch a missing field and a bad kind: {errors}"
    );
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    discard_kept(&fx);
    fx.finish();
}

/// Runs cloche with stdout on a terminal of `rows` x `cols` (stdin null,
/// stderr piped); returns what the terminal showed and the exit status.
fn on_terminal(fx: &Fixture, args: &[&str], env: &[(&str, &str)], rows: u16, cols: u16) -> (String, Option<i32>) {
    use std::os::fd::AsRawFd;
    let ws = nix::pty::Winsize { ws_row: rows, ws_col: cols, ws_xpixel: 0, ws_ypixel: 0 };
    let pty = nix::pty::openpty(Some(&ws), None).expect("openpty");
    let mut c = fx.command();
    c.args(args).envs(env.iter().copied()).stdout(Stdio::from(pty.slave)).stderr(Stdio::null());
    let mut child = HostChild::spawn(&mut c);
    drop(c); // the slave's last copy in this process
    let mut master = std::fs::File::from(pty.master);
    let mut seen = Vec::new();
    let start = Instant::now();
    let status = loop {
        let mut pfd = libc::pollfd { fd: master.as_raw_fd(), events: libc::POLLIN, revents: 0 };
        // SAFETY: one valid pollfd.
        if unsafe { libc::poll(&mut pfd, 1, 20) } > 0 {
            let mut buf = [0u8; 65536];
            match master.read(&mut buf) {
                Ok(n) if n > 0 => seen.extend_from_slice(&buf[..n]),
                _ => {}
            }
        }
        if let Some(st) = child.0.try_wait().unwrap() {
            // What is still buffered.
            let mut buf = [0u8; 65536];
            let mut pfd = libc::pollfd { fd: master.as_raw_fd(), events: libc::POLLIN, revents: 0 };
            // SAFETY: one valid pollfd.
            while unsafe { libc::poll(&mut pfd, 1, 50) } > 0 {
                match master.read(&mut buf) {
                    Ok(n) if n > 0 => seen.extend_from_slice(&buf[..n]),
                    _ => break,
                }
            }
            break st;
        }
        assert!(start.elapsed() < DEADLINE, "cloche {args:?} on a terminal did not end");
    };
    (text(&seen), status.code())
}

#[test]
fn colour_follows_color_and_no_color() {
    let fx = Fixture::new();
    let red_or_green = |s: &str| s.contains("\x1b[");
    let piped = |args: &[&str], env: &[(&str, &str)]| {
        let mut c = fx.command();
        c.args(args).envs(env.iter().copied());
        let o = run_cmd(&mut c, DEADLINE);
        o.expect_code(0);
        text(&o.stdout)
    };
    assert!(!red_or_green(&piped(&["doctor"], &[])), "no colour into a pipe by default");
    assert!(red_or_green(&piped(&["doctor", "--color=always"], &[])), "--color=always colours a pipe");
    assert!(red_or_green(&piped(&["--color", "always", "doctor"], &[("NO_COLOR", "1")])), "--color=always wins");
    assert!(red_or_green(&piped(&["doctor"], &[("CLICOLOR_FORCE", "1")])));
    assert!(!red_or_green(&piped(&["doctor"], &[("CLICOLOR_FORCE", "1"), ("NO_COLOR", "1")])));
    let (shown, code) = on_terminal(&fx, &["doctor"], &[("TERM", "xterm")], 50, 200);
    assert!(code == Some(0) && red_or_green(&shown), "a terminal gets colour: {shown:?}");
    let (shown, _) = on_terminal(&fx, &["doctor"], &[("TERM", "xterm"), ("NO_COLOR", "1")], 50, 200);
    assert!(!red_or_green(&shown), "NO_COLOR: {shown:?}");
    let (shown, _) = on_terminal(&fx, &["doctor", "--color=never"], &[("TERM", "xterm")], 50, 200);
    assert!(!red_or_green(&shown), "--color=never: {shown:?}");
    fx.finish();
}

#[test]
fn the_pager_starts_with_its_arguments_when_the_text_is_taller_than_the_terminal() {
    let fx = Fixture::new();
    let paged = fx.out.path().join("paged");
    let pager = format!("tee -a {}", paged.display());
    let env = [("PAGER", pager.as_str()), ("TERM", "xterm")];
    let o = fx.cloche(&["policy", "show"]);
    o.expect_code(0);
    let full = text(&o.stdout);
    let lines = full.lines().count();
    assert!(lines > 20, "policy show is long enough to page");
    // The rows it takes at 200 columns, long lines wrapped.
    let rows_at_200: usize = full.lines().map(|l| l.chars().count().max(1).div_ceil(200)).sum();

    // Taller than the terminal: through `$PAGER` with its arguments.
    let (_, code) = on_terminal(&fx, &["policy", "show"], &env, 10, 200);
    assert_eq!(code, Some(0));
    assert_eq!(std::fs::read_to_string(&paged).ok().as_deref(), Some(full.as_str()), "the pager got the text");
    std::fs::remove_file(&paged).unwrap();
    // The same text on a terminal tall enough, with --no-pager, or into a pipe: no pager.
    let tall = u16::try_from(rows_at_200 + 5).unwrap();
    for (args, rows) in [(&["policy", "show"][..], tall), (&["--no-pager", "policy", "show"][..], 10)] {
        let (shown, code) = on_terminal(&fx, args, &env, rows, 200);
        assert_eq!(code, Some(0));
        assert!(!paged.exists(), "{args:?} on {rows} rows started the pager");
        assert!(shown.contains("strictest wins"), "{shown:?}");
    }
    // Long lines wrap: the rows that hold the text at 200 columns do not at 20.
    let (_, code) = on_terminal(&fx, &["policy", "show"], &env, tall, 20);
    assert_eq!(code, Some(0));
    assert!(paged.exists(), "wrapped lines count as rows");
    fx.finish();
}

#[test]
fn completions_man_page_help_and_environment() {
    let fx = Fixture::new();
    // bash: the generated script completes subcommands and the new flags.
    let o = fx.cloche(&["completions", "bash"]);
    o.expect_code(0);
    let script = fx.out.path().join("cloche.bash");
    std::fs::write(&script, &o.stdout).unwrap();
    let complete = |words: &str| {
        let probe = format!(
            "source {}; COMP_WORDS=({words}); COMP_CWORD=$((${{#COMP_WORDS[@]}} - 1)); _cloche cloche; \
             printf '%s\\n' \"${{COMPREPLY[@]}}\"",
            script.display()
        );
        let out = Command::new("bash").args(["-c", &probe]).output().unwrap();
        assert!(out.status.success(), "{}", text(&out.stderr));
        text(&out.stdout)
    };
    assert!(complete("cloche ru").lines().any(|l| l == "run"), "{}", complete("cloche ru"));
    assert!(complete("cloche run --work").lines().any(|l| l == "--workdir"), "{}", complete("cloche run --work"));
    for shell in ["zsh", "fish", "elvish", "powershell"] {
        let o = fx.cloche(&["completions", shell]);
        o.expect_code(0);
        assert!(text(&o.stdout).contains("env-file"), "{shell}: {}", o.describe());
    }
    // The man pages, rendered by man(1).
    let o = fx.cloche(&["man"]);
    o.expect_code(0);
    assert!(text(&o.stdout).contains(".TH cloche 1"), "{}", o.describe());
    let dir = fx.out.path().join("man1");
    std::fs::create_dir(&dir).unwrap();
    fx.cloche(&[OsStr::new("man"), OsStr::new("--dir"), dir.as_os_str()]).expect_code(0);
    for page in ["cloche.1", "cloche-run.1", "cloche-batch-submit.1", "cloche-audit-verify.1"] {
        assert!(dir.join(page).is_file(), "{page} missing: {:?}", listing(&dir));
    }
    let out = Command::new("man").arg("-l").arg(dir.join("cloche-run.1")).env("MANPAGER", "cat").output().unwrap();
    let page = text(&out.stdout);
    assert!(out.status.success() && page.contains("--cwd") && page.contains("--env-file"), "{page}");
    // --help lists the environment variables cloche reads.
    let o = fx.cloche(&["--help"]);
    o.expect_code(0);
    let help = text(&o.stdout);
    for var in
        ["CLOCHE_STATE_DIR", "CLOCHE_AUTONOMY_TOKEN", "CLOCHE_DNS_UPSTREAM", "CLOCHE_PROFILE", "NO_COLOR", "PAGER"]
    {
        assert!(help.contains(var), "{var} not in --help:\n{help}");
    }
    let o = fx.cloche(&["run", "--help"]);
    for flag in ["-e, --env", "--env-file", "-w, --cwd", "[alias: --workdir]", "-m, --memory", "--pids-limit", "--rm"] {
        assert!(text(&o.stdout).contains(flag), "{flag} not in run --help:\n{}", text(&o.stdout));
    }
    fx.finish();
}

/// cloche's own diagnostics: nothing unless CLOCHE_LOG (or RUST_LOG) asks,
/// then events on stderr (stdout keeps the result alone).
#[test]
fn diagnostics_are_off_unless_asked_for() {
    let fx = Fixture::new();
    let f = batch_file(&fx, fx.dir().to_str().unwrap(), 1);
    let submit = |env: Option<&str>| {
        let mut cmd = fx.command();
        cmd.env_remove("RUST_LOG").env_remove("CLOCHE_LOG");
        if let Some(v) = env {
            cmd.env("CLOCHE_LOG", v);
        }
        cmd.args(["batch", "submit", f.to_str().unwrap()]);
        let o = run_cmd(&mut cmd, std::time::Duration::from_secs(60));
        o.expect_code(0);
        assert_eq!(text(&o.stdout).trim().len(), 16, "stdout is the id alone: {}", o.describe());
        text(&o.stderr)
    };
    assert_eq!(submit(None), "", "no diagnostics by default");
    let err = submit(Some("info"));
    assert!(err.contains("batch submitted") && err.contains("INFO"), "{err}");
    let err = submit(Some("cloche_service=debug"));
    assert!(err.contains("broker open") && err.contains("DEBUG"), "{err}");
    fx.finish();
}
