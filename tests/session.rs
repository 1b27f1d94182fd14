//! Worlds that last across calls (an agent's session): a kept world
//! continued by later runs (`cloche run --world ID`, `POST /v1/run
//! {"world"}`, a batch's `"world"`), each seeing what the ones before it
//! left; forked to try another way; reviewed and committed as one world
//! whose fs_diff is relative to the base; refused, in one line and without
//! any change, when it is missing, in use, someone else's or discarded.

use crate::common;

use common::*;
use serde_json::{json, Value};
use std::os::unix::process::CommandExt;
use std::path::Path;

/// Discards the kept worlds `ids` on drop (also when the test fails).
struct Discard<'a>(&'a Fixture, Vec<String>);

impl Drop for Discard<'_> {
    fn drop(&mut self) {
        for id in &self.1 {
            let o = self.0.cloche(&["discard", id]);
            assert!(o.code == Some(0) || std::thread::panicking(), "{}", o.describe());
        }
    }
}

/// `cloche run --world ID [OPTS] -- sh -c SCRIPT`, its report.
fn cont(fx: &Fixture, id: &str, opts: &[&str], script: &str) -> (Outcome, Value) {
    let mut all = vec!["--world", id];
    all.extend(opts);
    let o = fx.run(&all, &["sh", "-c", script]);
    let r = o.report();
    (o, r)
}

/// One list of an fs_diff object (a report's `fs_diff`, a review).
fn list<'a>(diff: &'a Value, list: &str) -> &'a [Value] {
    diff[list].as_array().map(Vec::as_slice).unwrap_or_else(|| panic!("no {list} list in {diff:#}"))
}

/// The paths (relative to `dir`) of a diff's list.
fn paths(diff: &Value, which: &str, dir: &Path) -> Vec<String> {
    let prefix = format!("{}/", dir.display());
    let mut v: Vec<String> = list(diff, which)
        .iter()
        .filter_map(|e| e["path"].as_str()?.strip_prefix(&prefix).map(str::to_string))
        .collect();
    v.sort();
    v
}

/// `cloche diff ID --json`.
fn review(fx: &Fixture, id: &str) -> Value {
    let o = fx.cloche(&["diff", id, "--json"]);
    o.expect_code(0);
    serde_json::from_slice(&o.stdout).unwrap()
}

/// `cloche worlds show ID --json`.
fn shown(fx: &Fixture, id: &str) -> Value {
    let o = fx.cloche(&["worlds", "show", id, "--json"]);
    o.expect_code(0);
    serde_json::from_slice(&o.stdout).unwrap()
}

/// Which runs changed `rel` (the review's attribution).
fn by(diff: &Value, which: &str, dir: &Path, rel: &str) -> Vec<String> {
    let p = dir.join(rel);
    let e = list(diff, which).iter().find(|e| e["path"].as_str() == p.to_str());
    e.map(|e| string_list(&e["entries"])).unwrap_or_default()
}

/// An `npm install`, then `npm test` on what it installed, then a fork
/// tried another way: each run sees the runs before it in its world (and
/// only those), each review is the world's whole history against the base,
/// the host is untouched until the commit, which applies every run.
#[test]
fn a_session_installs_tests_forks_and_commits_everything() {
    let fx = Fixture::new();
    let dir = fx.dir().to_path_buf();
    fx.write("package.json", b"{\"name\": \"app\"}\n", 0o644);
    let host = tree_snapshot(&dir);

    // 1. The install: a directory of many files, kept.
    let install = "mkdir -p node_modules/pkg && i=0; while [ $i -lt 300 ]; do echo $i > node_modules/pkg/f$i; \
                   i=$((i+1)); done; echo installed > node_modules/.installed";
    let o = fx.run(&["--keep"], &["sh", "-c", install]);
    o.expect_code(0);
    let r1 = o.report();
    let id = r1["world"].as_str().unwrap().to_string();
    let mut discard = Discard(&fx, vec![id.clone()]);
    assert_eq!((r1["world_run"].as_u64(), r1["run_fs_diff"].is_null()), (Some(1), true), "{r1:#}");

    // 2. The test, in the same world: it reads the install and adds to it.
    let test = "cat node_modules/.installed && ls node_modules/pkg | wc -l && echo pass > result.txt && \
                echo '// tested' >> package.json";
    let (o, r2) = cont(&fx, &id, &[], test);
    o.expect_code(0);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("installed") && out.contains("300"),
        "the second run did not see the first's files\n{}",
        o.describe()
    );
    assert_eq!((r2["world"].as_str(), r2["world_run"].as_u64()), (Some(id.as_str()), Some(2)));
    assert_eq!(r2["kept"], r1["kept"]);
    // Its own changes, and the world's whole change since the base.
    assert_eq!(paths(&r2["run_fs_diff"], "added", &dir), ["result.txt"]);
    assert_eq!(paths(&r2["run_fs_diff"], "modified", &dir), ["package.json"]);
    assert_eq!(r2["fs_diff"]["totals"]["added"].as_u64(), Some(304), "{:#}", r2["fs_diff"]["totals"]);
    assert_eq!(tree_snapshot(&dir), host, "the host changed before any commit");

    // 3. A fork tries another way; the original goes on: neither sees the other.
    let o = fx.cloche(&["worlds", "fork", &id, "--json"]);
    o.expect_code(0);
    let fork: Value = serde_json::from_slice(&o.stdout).unwrap();
    let fid = fork["world"].as_str().unwrap().to_string();
    discard.1.push(fid.clone());
    assert_eq!(fork["forked_from"], id.as_str());
    let (o, rf) = cont(&fx, &fid, &[], "rm -r node_modules/pkg && echo other > other.txt && test -e result.txt");
    o.expect_code(0);
    assert_eq!(rf["world_run"].as_u64(), Some(3), "a fork goes on from its original's history");
    let (o, _) = cont(&fx, &id, &[], "test ! -e other.txt && test -e node_modules/pkg/f0 && echo more > more.txt");
    o.expect_code(0);
    let (o, _) = cont(&fx, &fid, &[], "test ! -e more.txt && test ! -e node_modules/pkg");
    o.expect_code(0);

    // 4. Each review: its world's whole history against the base.
    let d = review(&fx, &id);
    let added = paths(&d, "added", &dir);
    assert!(added.contains(&"node_modules/pkg/f299".to_string()) && added.contains(&"more.txt".to_string()));
    assert!(!added.contains(&"other.txt".to_string()), "the fork's file is in the original");
    assert_eq!(paths(&d, "modified", &dir), ["package.json"]);
    assert_eq!(by(&d, "added", &dir, "node_modules/.installed"), ["run-1"]);
    assert_eq!(by(&d, "added", &dir, "result.txt"), ["run-2"]);
    assert_eq!(by(&d, "added", &dir, "more.txt"), ["run-3"]);
    let f = review(&fx, &fid);
    let fadded = paths(&f, "added", &dir);
    assert!(fadded.contains(&"other.txt".to_string()) && fadded.contains(&"result.txt".to_string()), "{fadded:?}");
    assert!(!fadded.iter().any(|p| p.starts_with("node_modules/pkg") || p == "more.txt"), "{fadded:?}");
    assert_eq!(by(&f, "added", &dir, "result.txt"), ["run-2"], "the fork keeps its original's records");
    // Every run is in each world's history.
    let runs = |w: &Value| w["runs"].as_array().unwrap().iter().map(|r| r["run"].as_u64().unwrap()).collect::<Vec<_>>();
    assert_eq!(runs(&shown(&fx, &id)), [1, 2, 3]);
    let fw = shown(&fx, &fid);
    assert_eq!((runs(&fw), fw["forked_from"].as_str()), (vec![1, 2, 3, 4], Some(id.as_str())));
    assert_eq!(tree_snapshot(&dir), host, "the host changed before any commit");

    // 5. The commit of the continued world applies every run.
    fx.cloche(&["commit", &id]).expect_code(0);
    assert_eq!(std::fs::read_dir(dir.join("node_modules/pkg")).unwrap().count(), 300);
    assert_eq!(std::fs::read_to_string(dir.join("result.txt")).unwrap(), "pass\n");
    assert_eq!(std::fs::read_to_string(dir.join("more.txt")).unwrap(), "more\n");
    assert!(std::fs::read_to_string(dir.join("package.json")).unwrap().ends_with("// tested\n"));
    assert!(!dir.join("other.txt").exists(), "the fork's file was committed with the original");
    drop(discard);
    fx.finish();
}

/// Continuing a world that does not exist, is being continued, was
/// discarded, or from elsewhere than its project: one line, exit 125,
/// nothing changed. A continuer killed with -9 leaves the world kept and
/// continuable. The upper's cap counts every run's files.
#[test]
fn refusals_change_nothing_and_the_cap_holds_across_runs() {
    let fx = Fixture::new();
    let default_policy = include_str!("../policies/default.toml");
    let line = "upper_size = \"16GiB\"";
    assert!(default_policy.contains(line), "policies/default.toml no longer says {line}");
    let policy = fx.out.path().join("small-upper.toml");
    std::fs::write(&policy, default_policy.replace(line, "upper_size = \"64MiB\"")).unwrap();
    let policy = policy.to_str().unwrap();
    let o = fx.run(&["--keep", "--policy", policy], &["sh", "-c", "fallocate -l 40M big1"]);
    o.expect_code(0);
    let id = o.report()["world"].as_str().unwrap().to_string();
    let discard = Discard(&fx, vec![id.clone()]);
    let before = (review(&fx, &id), shown(&fx, &id)["runs"].clone());
    let refused = |args: &[&str], want: &str| {
        let o = fx.cloche(args);
        o.expect_code(125);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains(want) && err.trim_end().lines().count() == 1, "{args:?}: {}", o.describe());
        assert_eq!((review(&fx, &id), shown(&fx, &id)["runs"].clone()), before, "{args:?} changed the world");
    };
    refused(&["run", "--world", "0123456789abcdef", "--", "true"], "no kept world 0123456789abcdef");
    refused(&["run", "--world", "../../etc", "--", "true"], "no kept world");
    refused(&["run", "--world", &id, "-w", "/usr", "--", "touch", "x"], "works in");
    // What it hides: a continuation exposes nothing the world did not.
    refused(&["run", "--world", &id, "--policy", policy, "--expose", "/usr/share", "--", "true"], "would be exposed");
    refused(&["worlds", "fork", "fedcba9876543210"], "no kept world");

    // In use: a run holds it; every other runner is refused at once.
    let mut holder = fx.command();
    holder.args(["run", "--world", &id, "--policy", policy, "--", "sh", "-c", "echo x > held; sleep 60"]);
    holder.stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null());
    let mut child = holder.spawn().unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while shown(&fx, &id)["state"] != "running" {
        assert!(std::time::Instant::now() < deadline, "the holding run never started");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    for args in [
        vec!["run", "--world", id.as_str(), "--", "touch", "y"],
        vec!["worlds", "fork", id.as_str()],
        vec!["commit", id.as_str()],
        vec!["discard", id.as_str()],
    ] {
        let o = fx.cloche(&args);
        o.expect_code(125);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains("in use") || err.contains("still running"), "{args:?}: {}", o.describe());
    }
    // Killed with -9: the world stays kept, and the next run continues it.
    child.kill().unwrap();
    child.wait().unwrap();
    // (The cap is the policy's in force for this run: the same file.)
    let (o, r) = cont(
        &fx,
        &id,
        &["--policy", policy],
        "fallocate -l 10M small && echo fits; fallocate -l 40M big2 2>&1; echo over $?",
    );
    o.expect_code(0);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("fits"), "10 MiB more did not fit\n{}", o.describe());
    // 40 + 10 + 40 MiB is past the 64 MiB cap: refused in the world.
    assert!(!out.contains("over 0"), "the cap did not count the first run's files\n{}", o.describe());
    assert!(out.contains("quota exceeded") || out.contains("No space left"), "{}", o.describe());
    assert_eq!(r["world_run"].as_u64(), Some(2), "the killed run left no record");

    // Discarded: gone for good.
    drop(discard);
    let o = fx.cloche(&["run", "--world", &id, "--", "true"]);
    o.expect_code(125);
    assert!(String::from_utf8_lossy(&o.stderr).contains(&format!("no kept world {id}")), "{}", o.describe());
    assert!(fx.worlds().is_empty(), "{:?}", fx.worlds());
    fx.finish();
}

/// A world's files on a host data mount (an overlay layer of its own) stay
/// over that mount when the host gains another mount beside it (which
/// would shift their order); a run is refused, changing nothing, once that
/// mount is gone.
#[test]
fn layers_follow_their_mount_whatever_mounts_come_and_go() {
    let fx = Fixture::new();
    let data = fx.mkdir("m1");
    let m1 = Mounted::tmpfs(&data, "16m", &format!("{}-m1", fx.tag));
    let o = fx.run(&["--keep"], &["sh", "-c", "echo one > m1/x"]);
    o.expect_code(0);
    let id = o.report()["world"].as_str().unwrap().to_string();
    let discard = Discard(&fx, vec![id.clone()]);
    // A mount that sorts before it appears on the host.
    let before = fx.mkdir("a0");
    let a0 = Mounted::tmpfs(&before, "16m", &format!("{}-a0", fx.tag));
    let (o, r) = cont(&fx, &id, &[], "cat m1/x && echo two > m1/y && echo a > a0/z");
    o.expect_code(0);
    assert_eq!(String::from_utf8_lossy(&o.stdout), "one\n", "{}", o.describe());
    assert_eq!(paths(&r["fs_diff"], "added", fx.dir()), ["a0/z", "m1/x", "m1/y"]);
    assert!(!data.join("y").exists() && !before.join("z").exists(), "the host changed");
    let d = review(&fx, &id);
    assert_eq!(paths(&d, "added", fx.dir()), ["a0/z", "m1/x", "m1/y"], "the review lost a layer");
    // The mount under the world's files is gone: refused, nothing changed.
    drop(m1);
    let o = fx.cloche(&["run", "--world", &id, "--", "true"]);
    o.expect_code(125);
    assert!(String::from_utf8_lossy(&o.stderr).contains("no longer mounted"), "{}", o.describe());
    assert_eq!(shown(&fx, &id)["runs"].as_array().map(Vec::len), Some(2));
    drop(discard);
    drop(a0);
    fx.finish();
}

/// Through the daemon, as an agent's tools call it: `POST /v1/run` keeps
/// a world, the next call continues it by id, a fork and a batch continue
/// it too; another agent's call is answered 404 and changes nothing.
#[test]
fn through_the_daemon_an_agent_continues_its_own_worlds_only() {
    let fx = Fixture::new();
    let proj = owned_dir(&fx, "a", AGENT_A);
    let d = Daemon::start(&fx, None);
    let run = |uid: u32, body: Value| d.post(Some(uid), "/v1/run", &body);
    let a = run(AGENT_A, json!({"argv": ["sh", "-c", "mkdir dep && echo one > dep/a"], "cwd": proj, "keep": true}));
    let w = a.expect(200)["report"]["world"].as_str().unwrap().to_string();
    fx.track_world(&w);
    let a = run(AGENT_A, json!({"argv": ["sh", "-c", "cat dep/a && echo two > dep/b"], "world": w}));
    let v = a.expect(200);
    assert_eq!((v["stdout"].as_str(), v["report"]["world_run"].as_u64()), (Some("one\n"), Some(2)), "{v:#}");
    assert_eq!(paths(&v["report"]["run_fs_diff"], "added", &proj), ["dep/b"]);

    // The same through `cloche` as the agent (its remote path): a third run
    // in the world's project (the default cwd), then the review by the
    // world's id (not a batch's).
    let as_uid = |uid: u32, args: &[&str]| {
        let mut c = fx.command();
        c.current_dir("/").env("CLOCHE_SOCKET", &d.socket).uid(uid).gid(uid).env("HOME", "/nonexistent");
        run_cmd(c.args(args), DEADLINE)
    };
    let agent = |args: &[&str]| as_uid(AGENT_A, args);
    let o = agent(&["run", "--world", &w, "--json", "--", "sh", "-c", "cat dep/b; pwd"]);
    o.expect_code(0);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.starts_with(&format!("two\n{}\n", proj.display())), "{}", o.describe());
    let o = agent(&["diff", &w, "--json"]);
    o.expect_code(0);
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(paths(&v, "added", &proj), ["dep", "dep/a", "dep/b"], "{}", o.describe());

    // Another agent: no such world, whatever it asks.
    let world_of_a = d.get(Some(AGENT_A), &format!("/v1/worlds/{w}")).expect(200).clone();
    for args in [vec!["run", "--world", w.as_str(), "--", "true"], vec!["worlds", "fork", w.as_str()]] {
        let o = as_uid(AGENT_B, &args);
        o.expect_code(125);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.trim_end() == format!("cloche: no kept world {w}"), "{args:?}: {}", o.describe());
    }
    assert_eq!(run(AGENT_B, json!({"argv": ["touch", "x"], "world": w})).status, 404);
    assert_eq!(d.post(Some(AGENT_B), &format!("/v1/worlds/{w}/fork"), &json!({})).status, 404);
    let theirs = json!({"project": proj, "world": w, "entries": [{"command": "touch x"}]});
    assert_eq!(d.post(Some(AGENT_B), "/v1/batches", &theirs).status, 404);
    // Its own world, from another project: refused, nothing recorded.
    let elsewhere = owned_dir(&fx, "b", AGENT_A);
    let wrong = json!({"project": elsewhere, "world": w, "entries": [{"command": "touch x"}]});
    let a = d.post(Some(AGENT_A), "/v1/batches", &wrong);
    assert!(a.status == 400 && a.text.contains("works in"), "{}", a.text);
    assert_eq!(d.get(Some(AGENT_A), "/v1/batches").expect(200)["batches"], json!([]));
    assert_eq!(d.get(Some(AGENT_A), &format!("/v1/worlds/{w}")).expect(200).clone(), world_of_a);

    // The agent forks its world; a batch continues the fork.
    let f = d.post(Some(AGENT_A), &format!("/v1/worlds/{w}/fork"), &json!({})).expect(200).clone();
    let fid = f["world"].as_str().unwrap().to_string();
    fx.track_world(&fid);
    assert_eq!((f["forked_from"].as_str(), f["owner"].clone()), (Some(w.as_str()), json!(format!("uid:{AGENT_A}"))));
    let b = json!({"project": proj, "world": fid, "entries": [{"command": "cat dep/b > c"}]});
    let v = d.post(Some(AGENT_A), "/v1/batches", &b).expect(201).clone();
    let bid = v["id"].as_str().unwrap().to_string();
    assert_eq!(v["continues"], fid.as_str());
    if v["state"] == "pending" {
        d.curl(None, "POST", &format!("/v1/batches/{bid}/approve"), None).expect(200);
    }
    let v = d.curl(Some(AGENT_A), "POST", &format!("/v1/batches/{bid}/run?wait=true"), None).expect(200).clone();
    assert_eq!((v["state"].as_str(), v["world"].as_str()), (Some("completed"), Some(fid.as_str())), "{v:#}");
    let diff = d.get(Some(AGENT_A), &format!("/v1/batches/{bid}/diff")).expect(200).clone();
    assert_eq!(
        paths(&diff, "added", &proj),
        ["c", "dep", "dep/a", "dep/b"],
        "the batch's review is its world's history"
    );
    assert!(!proj.join("dep").exists(), "the host changed");
    for id in [&w, &fid] {
        fx.cloche(&["discard", id]).expect_code(0);
    }
    drop(d);
    fx.finish();
}
