//! Batches end to end: `cloche batch submit|approve|run|cancel|show` and
//! `cloche autonomy`, with real worlds (root).

use crate::common;

use common::*;
use serde_json::Value;
use std::time::{Duration, Instant};

/// Starts `cloche batch run ID` and waits until entry `index` is running.
fn run_in_background(fx: &Fixture, id: &str, index: usize) -> HostChild {
    let mut cmd = fx.command();
    cmd.args(["batch", "run", id]).stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null());
    let runner = HostChild::spawn(&mut cmd);
    let deadline = Instant::now() + Duration::from_secs(10);
    while show(fx, id)["entries"][index]["state"] != "running" {
        assert!(Instant::now() < deadline, "entry {index} never started");
        std::thread::sleep(Duration::from_millis(50));
    }
    runner
}

fn entry_states(v: &Value) -> Vec<String> {
    v["entries"].as_array().unwrap().iter().map(|e| e["state"].as_str().unwrap_or("?").to_string()).collect()
}

#[test]
fn a_mixed_batch_needs_a_reviewer_skips_the_denied_entry_and_leaves_the_host_alone() {
    let fx = Fixture::new();
    fx.write("a.txt", b"hello\n", 0o644);
    let project = fx.dir().to_str().unwrap().to_string();
    let before = tree_snapshot(fx.dir());
    let batch = serde_json::json!({"agent": "a1", "project": project, "stop_on_failure": false, "entries": [
        {"command": "ls"},
        {"command": "rm -rf ~/important"},
        {"command": "echo new > b.txt && cat a.txt"},
        {"command": "cp a.txt c.txt"}]});
    let id = submit(&fx, &batch, None);
    let v = show(&fx, &id);
    assert_eq!(v["state"], "pending", "{v:#}");
    let effects: Vec<&str> =
        v["entries"].as_array().unwrap().iter().map(|e| e["decision"]["effect"].as_str().unwrap()).collect();
    assert_eq!(effects[1], "deny", "{v:#}");
    assert!(effects.iter().all(|e| ["allow", "review", "deny"].contains(e)));
    // Nothing runs before approval.
    let o = fx.cloche(&["batch", "run", &id]);
    assert_eq!(o.code, Some(125), "{}", o.describe());
    fx.cloche(&["batch", "approve", &id]).expect_code(0);
    let o = fx.cloche(&["batch", "run", &id]);
    o.expect_code(0);
    assert!(String::from_utf8_lossy(&o.stdout).contains("hello"), "{}", o.describe());
    let v = show(&fx, &id);
    assert_eq!(v["state"], "completed", "{v:#}");
    assert_eq!(entry_states(&v), vec!["succeeded", "skipped", "succeeded", "succeeded"], "{v:#}");
    for (i, e) in v["entries"].as_array().unwrap().iter().enumerate() {
        if i != 1 {
            assert_eq!((e["exit_code"].as_i64(), e["category"].as_str()), (Some(0), Some("ok")), "{e:#}");
        }
    }
    // The host project is untouched: the changes wait in the kept world.
    assert_same_tree(fx.dir(), &before, &tree_snapshot(fx.dir()));
    assert_eq!(fx.worlds().len(), 1, "the batch's world is kept for review");
    // The audit log holds the whole story and verifies.
    fx.cloche(&["audit", "verify"]).expect_code(0);
    let audit = std::fs::read_to_string(fx.state.path().join("audit.jsonl")).unwrap();
    for ev in ["\"submitted\"", "\"approved\"", "\"started\"", "\"entry_finished\""] {
        assert!(audit.contains(ev), "{ev} missing from the audit log");
    }
    // History: full-text search over past commands, and statistics.
    let o = fx.cloche(&["history", "cat a.txt", "--json"]);
    o.expect_code(0);
    let hits: Value = serde_json::from_slice(&o.stdout).unwrap();
    let hits = &hits["entries"];
    assert_eq!(hits.as_array().map(Vec::len), Some(1), "{hits:#}");
    assert_eq!(hits[0]["command"], "echo new > b.txt && cat a.txt");
    let o = fx.cloche(&["history", "rm -rf", "--json"]); // query syntax characters are text
    o.expect_code(0);
    let o = fx.cloche(&["history", "--stats", "--json"]);
    o.expect_code(0);
    let stats: Value = serde_json::from_slice(&o.stdout).unwrap();
    let stats = &stats["commands"];
    let ls = stats.as_array().unwrap().iter().find(|s| s["command"] == "ls").expect("ls in the stats");
    assert_eq!((ls["runs"].as_u64(), ls["success_rate"].as_f64()), (Some(1), Some(1.0)), "{stats:#}");
    // Spans: the batch and each entry that ran, with decision, exit and diff.
    let o = fx.cloche(&["trace", "show", &id, "--json"]);
    o.expect_code(0);
    let spans: Vec<Value> = o.lines();
    let kinds: Vec<&str> = spans.iter().map(|s| s["kind"].as_str().unwrap_or("?")).collect();
    assert_eq!(kinds.iter().filter(|k| **k == "entry").count(), 3, "{spans:#?}");
    assert_eq!(kinds.iter().filter(|k| **k == "batch").count(), 1, "{spans:#?}");
    let batch_span = spans.iter().find(|s| s["kind"] == "batch").unwrap();
    for s in spans.iter().filter(|s| s["kind"] == "entry") {
        assert_eq!(s["trace_id"], batch_span["trace_id"]);
        assert_eq!(s["parent_span_id"], batch_span["span_id"]);
        assert_eq!(s["exit_code"], 0);
        assert!(s["policy"]["decision"].is_string() && s["fs_diff"]["totals"].is_object(), "{s:#}");
        assert_eq!(s["network"]["mode"], "none", "{s:#}");
        assert!(s["layers"].as_array().is_some_and(|l| l.iter().any(|x| x == "seccomp")), "{s:#}");
    }
    // The audit names the world, the layers it enforced and its user
    // namespace's mapping.
    let started = audit_events(&fx, "world_started");
    assert_eq!(started.len(), 1);
    assert_eq!(started[0]["details"]["world"], show(&fx, &id)["world"]);
    let layers = &started[0]["details"]["layers"];
    assert!(layers.as_array().is_some_and(|l| l.iter().any(|x| x == "net") && l.iter().any(|x| x == "userns")));
    let userns = &started[0]["details"]["userns"];
    assert!(userns["uid"].as_u64().is_some_and(|u| u >= 65536) && userns["count"] == 65536, "{userns}");
    discard_kept(&fx);
    fx.finish();
}

#[test]
fn cancel_kills_a_running_entry_within_a_second() {
    let fx = Fixture::new();
    let project = fx.dir().to_str().unwrap().to_string();
    let batch = serde_json::json!({"agent": "a1", "project": project, "entries": [{"command": "sleep 600"}, {"command": "echo never"}]});
    let id = submit(&fx, &batch, None);
    fx.cloche(&["batch", "approve", &id]).expect_code(0);
    let mut runner = run_in_background(&fx, &id, 0);
    let t = Instant::now();
    fx.cloche(&["batch", "cancel", &id]).expect_code(0);
    let status = loop {
        if let Some(s) = runner.0.try_wait().unwrap() {
            break s;
        }
        assert!(t.elapsed() < Duration::from_secs(5), "the runner did not stop");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(t.elapsed() < Duration::from_secs(2), "cancel took {:?}", t.elapsed());
    assert!(!status.success());
    let v = show(&fx, &id);
    assert_eq!(v["state"], "cancelled", "{v:#}");
    assert!(processes_with("sleep 600").iter().all(|(_, c)| c.trim() != "sleep 600"), "the entry survived");
    fx.cloche(&["audit", "verify"]).expect_code(0);
    discard_kept(&fx);
    fx.finish();
}

#[test]
fn autonomy_approves_all_allow_batches_and_audits_the_token_fingerprint() {
    let fx = Fixture::new();
    fx.write("a.txt", b"x\n", 0o644);
    let project = fx.dir().to_str().unwrap().to_string();
    let o = fx.cloche(&["autonomy", "enable", &project]);
    o.expect_code(0);
    let token = String::from_utf8(o.stdout.clone()).unwrap().trim().to_string();
    assert!(token.len() >= 32, "{}", o.describe());
    let batch = serde_json::json!({"agent": "a1", "project": project, "entries": [{"command": "ls"}, {"command": "cat a.txt"}]});
    let id = submit(&fx, &batch, Some(&token));
    let v = show(&fx, &id);
    assert_eq!(v["state"], "approved", "{v:#}");
    let audit = std::fs::read_to_string(fx.state.path().join("audit.jsonl")).unwrap();
    assert!(audit.contains("token:"), "the approval names the token's fingerprint");
    assert!(!audit.contains(&token), "the token itself is never written");
    fx.cloche(&["batch", "run", &id]).expect_code(0);
    assert_eq!(show(&fx, &id)["state"], "completed");
    fx.cloche(&["audit", "verify"]).expect_code(0);
    discard_kept(&fx);
    fx.finish();
}

#[test]
fn a_submitter_cannot_approve_its_own_review_batch() {
    let fx = Fixture::new();
    let project = fx.dir().to_str().unwrap().to_string();
    // No agent: the submitter is this uid, the same as the would-be reviewer.
    let batch = serde_json::json!({"project": project, "entries": [{"command": "make install"}]});
    let id = submit(&fx, &batch, None);
    let v = show(&fx, &id);
    assert_ne!(v["decision"], "allow", "{v:#}");
    let o = fx.cloche(&["batch", "approve", &id]);
    assert_eq!(o.code, Some(125), "{}", o.describe());
    assert_eq!(show(&fx, &id)["state"], "pending");
    fx.cloche(&["audit", "verify"]).expect_code(0);
    fx.finish();
}

/// `kill -9` of `cloche batch run` in the middle of a batch: the next
/// cloche marks the batch failed (interrupted), the world's processes died
/// with its runner, its upper is kept for review (the default) or swept (as
/// the project policy says), and the audit chain still holds.
#[test]
fn a_batch_whose_runner_is_killed_is_failed_as_interrupted() {
    let fx = Fixture::new();
    let id = kill_runner_mid_batch(&fx);
    // Kept for review, with what the first entry wrote.
    let o = fx.cloche(&["worlds", "list", "--json"]);
    o.expect_code(0);
    let worlds: Value = serde_json::from_slice(&o.stdout).unwrap();
    let w = &worlds["worlds"][0];
    assert_eq!((w["state"].as_str(), w["owner"].as_str()), (Some("interrupted"), Some(format!("batch:{id}").as_str())));
    let upper = fx.worlds_dir().join(w["id"].as_str().unwrap()).join("fs/upper");
    let first = upper.join(fx.dir().strip_prefix("/").unwrap()).join("first.txt");
    assert_eq!(std::fs::read_to_string(&first).unwrap(), "first\n");
    assert_eq!(show(&fx, &id)["world"], w["id"]);
    // Discarded by batch id, audited.
    fx.cloche(&["discard", &id]).expect_code(0);
    assert!(fx.worlds().is_empty(), "{:?}", fx.worlds());
    let gone = audit_events(&fx, "discarded");
    assert_eq!((gone.len(), gone[0]["batch"].as_str()), (1, Some(id.as_str())), "{gone:#?}");
    assert_eq!(fx.cloche(&["discard", &id]).code, Some(125), "nothing left to discard");
    fx.cloche(&["audit", "verify"]).expect_code(0);
    fx.finish();
}

/// The same with `keep_interrupted = false`: the world is swept.
#[test]
fn an_interrupted_batch_world_is_swept_when_the_policy_says_so() {
    let fx = Fixture::new();
    let file = fx.out.path().join("p.toml");
    std::fs::write(&file, policy_text(300, "").replace("keep_interrupted = true", "keep_interrupted = false")).unwrap();
    fx.cloche(&["policy", "set", "--project", fx.dir().to_str().unwrap(), file.to_str().unwrap()]).expect_code(0);
    kill_runner_mid_batch(&fx);
    fx.cloche(&["worlds", "list"]).expect_code(0);
    assert!(fx.worlds().is_empty(), "{:?}", fx.worlds());
    fx.cloche(&["audit", "verify"]).expect_code(0);
    fx.finish();
}

/// Submits a batch, kills its runner with -9 during its second entry and
/// checks what the issue asks of a crash; returns the batch id.
fn kill_runner_mid_batch(fx: &Fixture) -> String {
    let project = fx.dir().to_str().unwrap().to_string();
    let batch = serde_json::json!({"agent": "a1", "project": project,
        "entries": [{"command": "echo first > first.txt"}, {"command": "sleep 31.9"}, {"command": "echo never"}]});
    let id = submit(fx, &batch, None);
    fx.cloche(&["batch", "approve", &id]).expect_code(0);
    let mut runner = run_in_background(fx, &id, 1);
    // SAFETY: kill with a pid and a signal.
    unsafe { libc::kill(runner.pid(), libc::SIGKILL) };
    let _ = runner.0.wait();
    let sleeping = || processes_with("sleep 31.9").into_iter().filter(|(_, c)| c.trim() == "sleep 31.9").count();
    let deadline = Instant::now() + Duration::from_secs(5);
    while sleeping() != 0 {
        assert!(Instant::now() < deadline, "the world outlived its runner");
        std::thread::sleep(Duration::from_millis(20));
    }
    let v = show(fx, &id);
    assert_eq!((v["state"].as_str(), v["reason"].as_str()), (Some("failed"), Some("interrupted")), "{v:#}");
    assert_eq!(entry_states(&v)[0], "succeeded", "{v:#}");
    assert_ne!(entry_states(&v)[1], "running", "{v:#}");
    fx.cloche(&["audit", "verify"]).expect_code(0);
    // The next world sweeps the dead one's cgroup.
    fx.run(&[] as &[&str], &["true"]).expect_code(0);
    assert!(!fx.dir().join("first.txt").exists(), "nothing reached the host");
    id
}

/// The retention limit of the batch's policy discards the oldest kept
/// worlds after each run, audited with the limit as the actor.
#[test]
fn kept_batch_worlds_are_held_to_the_retention_limit() {
    let fx = Fixture::new();
    let file = fx.out.path().join("p.toml");
    std::fs::write(&file, policy_text(300, "").replace("max_worlds = 20", "max_worlds = 2")).unwrap();
    fx.cloche(&["policy", "set", "--project", fx.dir().to_str().unwrap(), file.to_str().unwrap()]).expect_code(0);
    let batch = serde_json::json!({"agent": "a1", "project": fx.dir().to_str().unwrap(), "entries": [{"command": "echo x > x.txt"}]});
    let mut batches = Vec::new();
    for _ in 0..3 {
        let id = submit(&fx, &batch, None);
        fx.cloche(&["batch", "approve", &id]).expect_code(0);
        fx.cloche(&["batch", "run", &id]).expect_code(0);
        batches.push(id);
    }
    let o = fx.cloche(&["worlds", "list", "--json"]);
    let worlds: Value = serde_json::from_slice(&o.stdout).unwrap();
    let owners: Vec<&str> = worlds["worlds"].as_array().unwrap().iter().map(|w| w["owner"].as_str().unwrap()).collect();
    assert_eq!(owners, [format!("batch:{}", batches[1]), format!("batch:{}", batches[2])], "{worlds:#}");
    let gone = audit_events(&fx, "discarded");
    assert_eq!(gone.len(), 1, "{gone:#?}");
    assert_eq!(
        (gone[0]["actor"].as_str(), gone[0]["batch"].as_str()),
        (Some("policy:retention"), Some(batches[0].as_str()))
    );
    // `worlds gc` with the default policy (20) keeps both.
    let o = fx.cloche(&["worlds", "gc"]);
    o.expect_code(0);
    assert!(o.stdout.is_empty(), "{}", o.describe());
    discard_kept(&fx);
    fx.finish();
}

#[test]
fn malformed_batch_files_are_refused_with_their_position_and_change_nothing() {
    let fx = Fixture::new();
    let project = fx.dir().to_str().unwrap().to_string();
    let cases: Vec<(String, &str)> = vec![
        ("{\"project\": \"/x\", \"entries\": [{\"command\": \"ls\"}".to_string(), "line"),
        (format!("{{\"project\": \"{project}\", \"entries\": [{{\"command\": \"ls\", \"comand\": 1}}]}}"), "comand"),
        ("{\"project\": \"relative/dir\", \"entries\": [{\"command\": \"ls\"}]}".to_string(), "project"),
        (format!("{{\"project\": \"{project}\", \"entries\": [{{\"command\": \"ls\", \"cwd\": \"/etc\"}}]}}"), "cwd"),
        (format!("{{\"project\": \"{project}\", \"entries\": []}}"), "entries"),
    ];
    for (text, needle) in cases {
        let path = fx.out.path().join("bad.json");
        std::fs::write(&path, &text).unwrap();
        let o = fx.cloche(&["batch", "submit", path.to_str().unwrap()]);
        assert_eq!(o.code, Some(125), "{text}\n{}", o.describe());
        let err = String::from_utf8_lossy(&o.stderr).to_string();
        assert_eq!(err.lines().count(), 1, "one line: {err}");
        assert!(err.contains(needle), "{needle} not named in: {err}");
        assert!(o.stdout.is_empty());
    }
    // Nothing was recorded.
    let o = fx.cloche(&["batch", "list", "--json"]);
    o.expect_code(0);
    let list: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(list["batches"].as_array().map(Vec::len), Some(0), "{list:#}");
    assert!(
        !fx.state.path().join("audit.jsonl").exists()
            || std::fs::read_to_string(fx.state.path().join("audit.jsonl")).unwrap().is_empty()
    );
    fx.finish();
}

/// A batch whose world cannot start (its project is gone) ends `failed`,
/// with the reason, instead of staying `running`.
#[test]
fn a_batch_whose_world_cannot_start_fails_with_the_reason() {
    let fx = Fixture::new();
    let sub = fx.mkdir("gone");
    let batch = serde_json::json!({"agent": "a1", "project": sub.to_str().unwrap(), "entries": [{"command": "ls"}]});
    let id = submit(&fx, &batch, None);
    fx.cloche(&["batch", "approve", &id]).expect_code(0);
    std::fs::remove_dir(&sub).unwrap();
    let o = fx.cloche(&["batch", "run", &id]);
    assert_eq!(o.code, Some(125), "{}", o.describe());
    let v = show(&fx, &id);
    assert_eq!(v["state"], "failed", "{v:#}");
    // Checked again at run: the reason names the project that is gone.
    assert!(v["reason"].as_str().unwrap_or("").contains(&format!("project {}: ", sub.display())), "{v:#}");
    fx.cloche(&["audit", "verify"]).expect_code(0);
    fx.finish();
}

/// A project policy (`cloche policy set --project`) decides its batches and
/// their approval lifetime; an approval not run in time expires end to end.
#[test]
fn a_project_policy_applies_to_its_batches_and_approvals_expire() {
    let fx = Fixture::new();
    let project = fx.dir().to_str().unwrap().to_string();
    let file = fx.out.path().join("project.toml");
    let deny_ls = "\n[[commands.rule]]\nname = \"no-frobnicate\"\neffect = \"deny\"\nrisk = 50\n\
                   reason = \"this project forbids frobnicate\"\nprograms = [\"frobnicate\"]\nexamples = [\"frobnicate -l\"]\n\
                   counterexamples = [\"cat x\"]\n";
    std::fs::write(&file, policy_text(1, deny_ls)).unwrap();
    fx.cloche(&["policy", "set", "--project", &project, file.to_str().unwrap()]).expect_code(0);
    let o = fx.cloche(&["policy", "list", "--json"]);
    o.expect_code(0);
    let list: Value = serde_json::from_slice(&o.stdout).unwrap();
    let id = list["projects"][&project].as_str().unwrap_or_else(|| panic!("{list:#}")).to_string();
    assert_eq!(list["default"], "builtin");
    // The change was audited, with the actor and both versions.
    let changed = audit_events(&fx, "policy_changed");
    assert_eq!(changed.len(), 1, "{changed:#?}");
    assert_eq!(
        (changed[0]["details"]["from"].as_str(), changed[0]["details"]["to"].as_str()),
        (Some("unbound"), Some(id.as_str()))
    );
    assert!(changed[0]["actor"].as_str().unwrap().starts_with("uid:"));
    // `policy check --project` uses it; a subdirectory inherits it.
    let sub = fx.mkdir("sub");
    let o = fx.cloche(&["policy", "check", "--json", "--project", sub.to_str().unwrap(), "frobnicate"]);
    o.expect_code(0);
    let d: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!((d["effect"].as_str(), d["rule"].as_str()), (Some("deny"), Some("no-frobnicate")), "{d:#}");

    let batch = serde_json::json!({"agent": "a1", "project": project, "entries": [{"command": "frobnicate"}, {"command": "echo hi"}]});
    let b = submit(&fx, &batch, None);
    let v = show(&fx, &b);
    assert_eq!(v["policy"], id.as_str(), "{v:#}");
    assert_eq!(v["entries"][0]["decision"]["rule"], "no-frobnicate", "{v:#}");
    // Approved, then left longer than the policy's 1 s: it expires.
    fx.cloche(&["batch", "approve", &b]).expect_code(0);
    std::thread::sleep(Duration::from_millis(1300));
    let o = fx.cloche(&["batch", "run", &b]);
    assert_eq!(o.code, Some(125), "{}", o.describe());
    assert!(String::from_utf8_lossy(&o.stderr).contains("expired"), "{}", o.describe());
    let v = show(&fx, &b);
    assert_eq!(v["state"], "expired", "{v:#}");
    assert!(entry_states(&v).iter().all(|s| s == "skipped" || s == "pending"), "nothing ran: {v:#}");
    assert!(audit_events(&fx, "expired").iter().any(|r| r["batch"] == b.as_str()));
    assert!(fx.worlds().is_empty(), "an expired batch never ran");
    // Unbinding is audited too; new batches get the built-in policy again.
    fx.cloche(&["policy", "unset", "--project", &project]).expect_code(0);
    assert_eq!(audit_events(&fx, "policy_changed").len(), 2);
    let b2 = submit(&fx, &batch, None);
    assert_eq!(show(&fx, &b2)["policy"], "builtin");
    assert_eq!(show(&fx, &b2)["entries"][0]["decision"]["effect"], "review");
    fx.cloche(&["audit", "verify"]).expect_code(0);
    fx.finish();
}

/// `batch submit --policy FILE` can tighten decisions, never relax them.
#[test]
fn a_submitted_policy_only_tightens() {
    let fx = Fixture::new();
    let project = fx.dir().to_str().unwrap().to_string();
    let text = policy_text(300, "");
    let commands = text.find("\n[commands]\n").unwrap();
    // Relaxing: its only rule allows brew, ls and sudo.
    let loose = text[..commands].to_string()
        + "\n[commands]\nunknown = { effect = \"review\", risk = 0, reason = \"r\" }\n\n[[commands.rule]]\n\
           name = \"anything\"\neffect = \"allow\"\nrisk = 0\nreason = \"anything goes\"\n\
           programs = [\"brew\", \"ls\", \"sudo\"]\nexamples = [\"brew install x\"]\n";
    let loose_file = fx.out.path().join("loose.toml");
    std::fs::write(&loose_file, loose).unwrap();
    let tight_file = fx.out.path().join("tight.toml");
    std::fs::write(
        &tight_file,
        text[..commands].to_string()
            + "\n[commands]\nunknown = { effect = \"deny\", risk = 90, reason = \"nothing goes\" }\n",
    )
    .unwrap();
    let batch = serde_json::json!({"project": project, "entries": [{"command": "ls"}, {"command": "brew install x"}, {"command": "sudo id"}]});
    let path = fx.out.path().join("b.json");
    std::fs::write(&path, serde_json::to_vec(&batch).unwrap()).unwrap();
    let effects = |file: &std::path::Path| {
        let o = fx.cloche(&["batch", "submit", path.to_str().unwrap(), "--policy", file.to_str().unwrap()]);
        o.expect_code(0);
        let v = show(&fx, String::from_utf8_lossy(&o.stdout).trim());
        let e: Vec<String> = v["entries"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["decision"]["effect"].as_str().unwrap().to_string())
            .collect();
        (e, v["policy"].as_str().unwrap().to_string())
    };
    let (loose, id) = effects(&loose_file);
    assert_eq!(loose, ["allow", "review", "deny"], "nothing relaxed");
    assert!(id.starts_with("builtin+sha256:"), "{id}");
    let (tight, _) = effects(&tight_file);
    assert_eq!(tight, ["deny", "deny", "deny"]);
    fx.finish();
}

/// A policy file with an error is refused with its line and changes nothing.
#[test]
fn a_bad_policy_file_is_refused_and_changes_nothing() {
    let fx = Fixture::new();
    let file = fx.out.path().join("bad.toml");
    std::fs::write(&file, policy_text(300, "").replace("pids = 1024", "pids = 1024\nbogus = 1")).unwrap();
    let o = fx.cloche(&["policy", "set", file.to_str().unwrap()]);
    assert_eq!(o.code, Some(125), "{}", o.describe());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("line") && err.contains("bogus"), "{err}");
    // A wrong example is a load error too.
    std::fs::write(&file, policy_text(300, "\n[[commands.rule]]\nname = \"x\"\neffect = \"deny\"\nrisk = 1\nreason = \"r\"\nprograms = [\"ls\"]\nexamples = [\"cat\"]\n")).unwrap();
    let o = fx.cloche(&["policy", "set", file.to_str().unwrap()]);
    assert_eq!(o.code, Some(125), "{}", o.describe());
    let o = fx.cloche(&["policy", "list", "--json"]);
    let list: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(list, serde_json::json!({"schema_version": 1, "default": "builtin", "projects": {}}));
    assert!(audit_events(&fx, "policy_changed").is_empty());
    let o = fx.cloche(&["policy", "unset"]);
    assert_eq!(o.code, Some(125), "nothing to unset: {}", o.describe());
    fx.finish();
}

/// A batch runs with the policy version it was classified with, even when
/// the project's binding changes before it runs.
#[test]
fn a_batch_runs_with_the_policy_it_was_submitted_under() {
    let fx = Fixture::new();
    let project = fx.dir().to_str().unwrap().to_string();
    let bind = |host: &str| {
        let file = fx.out.path().join(format!("{host}.toml"));
        std::fs::write(&file, policy_text(300, "").replace("hostname = \"cloche\"", &format!("hostname = \"{host}\"")))
            .unwrap();
        fx.cloche(&["policy", "set", "--project", &project, file.to_str().unwrap()]).expect_code(0);
    };
    bind("alpha");
    let batch = serde_json::json!({"agent": "a1", "project": project, "entries": [{"command": "hostname"}]});
    let id = submit(&fx, &batch, None);
    bind("beta");
    fx.cloche(&["batch", "approve", &id]).expect_code(0);
    let o = fx.cloche(&["batch", "run", &id]);
    o.expect_code(0);
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), "alpha", "{}", o.describe());
    discard_kept(&fx);
    fx.finish();
}

/// `batch run` says each entry as it starts (`[1/2] running: CMD`, control
/// characters escaped) and shows an entry's output while it runs, not
/// once it has ended.
#[test]
fn batch_run_says_each_entry_and_shows_its_output_as_it_comes() {
    use std::io::{BufRead, Read};
    let fx = Fixture::new();
    let project = fx.dir().to_str().unwrap().to_string();
    let batch = serde_json::json!({"agent": "a1", "project": project, "entries": [
        {"command": "echo first; sleep 2; echo second"},
        {"command": "true # \u{1b}[2J"}]});
    let id = submit(&fx, &batch, None);
    fx.cloche(&["batch", "approve", &id]).expect_code(0);
    let mut cmd = fx.command();
    cmd.args(["batch", "run", &id]).stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped());
    let mut runner = HostChild::spawn(&mut cmd);
    let mut out = std::io::BufReader::new(runner.0.stdout.take().unwrap());
    let mut first = String::new();
    out.read_line(&mut first).unwrap();
    assert_eq!(first, "first\n");
    assert!(runner.0.try_wait().unwrap().is_none(), "the first line came only when the run was over");
    let mut rest = String::new();
    out.read_to_string(&mut rest).unwrap();
    let mut err = String::new();
    runner.0.stderr.take().unwrap().read_to_string(&mut err).unwrap();
    assert!(runner.0.wait().unwrap().success(), "{err}");
    assert_eq!(rest, "second\n");
    assert!(err.contains("[1/2] running: echo first; sleep 2; echo second\n"), "{err}");
    assert!(err.contains("[2/2] running: true # \\x1b[2J\n"), "escaped: {err}");
    assert!(!err.contains('\u{1b}'), "{err:?}");
    discard_kept(&fx);
    fx.finish();
}
