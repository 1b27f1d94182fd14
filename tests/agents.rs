//! Agents and their budgets end to end: `cloche agents [register|show]`,
//! an agent's status from its batches (waiting, running, idle), and the
//! `[budgets]` of a project's policy refusing what goes over them (entries
//! per batch and batches per hour at submit; worlds at once and CPU time at
//! run), with the budget's name, changing nothing.

use crate::common;

use common::*;
use serde_json::Value;
use std::time::{Duration, Instant};

fn agent(fx: &Fixture, name: &str) -> Value {
    let o = fx.cloche(&["agents", "show", name, "--json"]);
    o.expect_code(0);
    serde_json::from_slice(&o.stdout).unwrap()
}

fn submit_file(fx: &Fixture, batch: &Value) -> Outcome {
    let path = fx.out.path().join(format!("batch-{}.json", unique_tag()));
    std::fs::write(&path, serde_json::to_vec(batch).unwrap()).unwrap();
    fx.cloche(&["batch", "submit", path.to_str().unwrap()])
}

fn batch_count(fx: &Fixture) -> usize {
    let o = fx.cloche(&["batch", "list", "--json"]);
    o.expect_code(0);
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    v["batches"].as_array().unwrap().len()
}

#[test]
fn an_agent_is_registered_and_its_status_follows_its_batches() {
    let fx = Fixture::new();
    let project = fx.dir().to_str().unwrap().to_string();
    let o = fx.cloche(&["agents", "register", "bot1"]);
    o.expect_code(0);
    let id = String::from_utf8(o.stdout.clone()).unwrap().trim().to_string();
    assert_eq!(id.len(), 16, "register prints the id: {}", o.describe());
    // Registering again finds the same agent.
    assert_eq!(agent(&fx, "bot1")["id"], id.as_str());
    fx.cloche(&["agents", "register", "bot1"]).expect_code(0);
    assert_eq!(agent(&fx, "bot1")["id"], id.as_str());
    assert_eq!(agent(&fx, "bot1")["status"], "idle");
    let bad = fx.cloche(&["agents", "register", "bad name"]);
    assert_eq!(bad.code, Some(125), "{}", bad.describe());
    assert!(fx.cloche(&["agents", "show", "nobody"]).code == Some(125));

    // A review-level batch waits for a person: the agent is waiting. (The
    // push fails outside a repository: the sleep runs all the same.)
    let b = serde_json::json!({"agent": "bot1", "project": project, "stop_on_failure": false,
        "entries": [{"command": "git push origin main"}, {"command": "sleep 3"}]});
    let id1 = submit(&fx, &b, None);
    assert_eq!(agent(&fx, "bot1")["status"], "waiting");
    fx.cloche(&["batch", "approve", &id1]).expect_code(0);
    assert_eq!(agent(&fx, "bot1")["status"], "idle");
    // Running: seen from another process while the entry sleeps.
    let mut cmd = fx.command();
    cmd.args(["batch", "run", &id1]).stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null());
    let mut runner = HostChild::spawn(&mut cmd);
    let deadline = Instant::now() + Duration::from_secs(10);
    while agent(&fx, "bot1")["status"] != "running" {
        assert!(Instant::now() < deadline, "never running: {:#}", agent(&fx, "bot1"));
        std::thread::sleep(Duration::from_millis(50));
    }
    runner.0.wait().unwrap();
    assert_eq!(agent(&fx, "bot1")["status"], "idle");
    // An agent named by its first batch is registered by it (audited).
    let b2 = serde_json::json!({"agent": "bot2", "project": project, "entries": [{"command": "ls"}]});
    submit(&fx, &b2, None);
    let o = fx.cloche(&["agents", "--json"]);
    o.expect_code(0);
    let list: Value = serde_json::from_slice(&o.stdout).unwrap();
    let names: Vec<&str> = list["agents"].as_array().unwrap().iter().map(|a| a["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["bot1", "bot2"]);
    assert_eq!(audit_events(&fx, "agent_registered").len(), 2);
    fx.cloche(&["audit", "verify"]).expect_code(0);
    discard_kept(&fx);
    fx.finish();
}

#[test]
fn budgets_refuse_what_goes_over_them_by_name_and_change_nothing() {
    let fx = Fixture::new();
    let project = fx.dir().to_str().unwrap().to_string();
    let policy = fx.out.path().join("p.toml");
    let text = policy_text(300, "")
        .replace("batches_per_hour = 120", "batches_per_hour = 3")
        .replace("entries_per_batch = 0", "entries_per_batch = 2")
        .replace("cpu_seconds_per_hour = 7200", "cpu_seconds_per_hour = 1")
        .replace("concurrent_worlds = 4", "concurrent_worlds = 1");
    std::fs::write(&policy, text).unwrap();
    fx.cloche(&["policy", "set", "--project", &project, policy.to_str().unwrap()]).expect_code(0);
    let batch = |cmds: &[&str]| {
        let entries: Vec<Value> = cmds.iter().map(|c| serde_json::json!({"command": c})).collect();
        serde_json::json!({"agent": "x", "project": project, "entries": entries})
    };

    // At submit: entries per batch, then batches per hour.
    let o = submit_file(&fx, &batch(&["ls", "ls", "ls"]));
    assert_eq!(o.code, Some(125), "{}", o.describe());
    assert!(text_of(&o.stderr).contains("budget entries_per_batch (3 used, at most 2)"), "{}", o.describe());
    assert_eq!(batch_count(&fx), 0, "a refused batch is not recorded");
    // About 1.5 s of CPU in the world, then a long and a short one.
    let burn = submit(&fx, &batch(&["i=0; while [ $i -lt 1500000 ]; do i=$((i+1)); done"]), None);
    let long = submit(&fx, &batch(&["sleep 3"]), None);
    let short = submit(&fx, &batch(&["echo short"]), None);
    let o = submit_file(&fx, &batch(&["ls"]));
    assert_eq!(o.code, Some(125), "{}", o.describe());
    assert!(text_of(&o.stderr).contains("budget batches_per_hour (3 used, at most 3)"), "{}", o.describe());
    assert_eq!(batch_count(&fx), 3);
    for id in [&burn, &long, &short] {
        fx.cloche(&["batch", "approve", id]).expect_code(0);
    }

    // At run: one world at a time.
    let mut cmd = fx.command();
    cmd.args(["batch", "run", &long]).stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null());
    let mut runner = HostChild::spawn(&mut cmd);
    let deadline = Instant::now() + Duration::from_secs(10);
    while show(&fx, &long)["state"] != "running" {
        assert!(Instant::now() < deadline, "the long batch never ran");
        std::thread::sleep(Duration::from_millis(50));
    }
    let o = fx.cloche(&["batch", "run", &short]);
    assert_eq!(o.code, Some(125), "{}", o.describe());
    assert!(text_of(&o.stderr).contains("budget concurrent_worlds (1 used, at most 1)"), "{}", o.describe());
    assert_eq!(show(&fx, &short)["state"], "approved", "a refused run leaves the batch approved");
    assert!(runner.0.wait().unwrap().success());

    // CPU time: the burn uses the hour's second; the next run is refused.
    fx.cloche(&["batch", "run", &burn]).expect_code(0);
    let used = agent(&fx, "x")["usage"]["cpu_ms_last_hour"].as_u64().unwrap();
    assert!(used >= 1000, "the world's CPU time is counted: {used} ms");
    let o = fx.cloche(&["batch", "run", &short]);
    assert_eq!(o.code, Some(125), "{}", o.describe());
    assert!(text_of(&o.stderr).contains("budget cpu_seconds_per_hour"), "{}", o.describe());
    assert_eq!(show(&fx, &short)["state"], "approved");
    assert_eq!(agent(&fx, "x")["usage"]["batches_last_hour"], 3);
    fx.cloche(&["audit", "verify"]).expect_code(0);
    discard_kept(&fx);
    fx.finish();
}

fn text_of(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}
