//! Nothing lost: a kept world is work waiting for a person. It outlives
//! the process that made it and a reboot of the machine (its mounts gone,
//! its loop device detached, `/run/cloche` emptied: `simulate_reboot`),
//! after which `cloche worlds list`, `diff` and `commit` work as before and
//! give the same fs_diff; it holds no tmpfs memory while it waits (a world
//! kept with `--upper tmpfs` is moved to the disk pool); a run or a batch
//! killed with -9 leaves its world kept as interrupted or swept, as its
//! policy's `keep_interrupted` says, and nothing else behind.

use crate::common;

use common::*;
use serde_json::Value;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// `cloche worlds list --json`'s worlds.
fn listed(fx: &Fixture) -> Vec<Value> {
    let o = fx.cloche(&["worlds", "list", "--json"]);
    o.expect_code(0);
    let v: Value = serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}\n{}", o.describe()));
    v["worlds"].as_array().cloned().unwrap_or_else(|| panic!("no worlds array: {v}"))
}

/// `cloche diff ID --json`, as printed.
fn diff_json(fx: &Fixture, id: &str) -> Vec<u8> {
    let o = fx.cloche(&["diff", id, "--json"]);
    o.expect_code(0);
    o.stdout
}

/// tmpfs mounts under `dir`.
fn tmpfs_under(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter_map(|l| {
            let (left, right) = l.split_once(" - ")?;
            let m = PathBuf::from(left.split(' ').nth(4)?);
            (right.starts_with("tmpfs ") && m.starts_with(dir)).then_some(m)
        })
        .collect()
}

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

/// A world's changes in directory `d` of the project: new files, a hard
/// link, a symlink, a deleted base file (a whiteout), a replaced base
/// directory (opaque), a mode change, random data, a sparse file.
fn script(d: &str) -> String {
    format!(
        "cd {d} && echo new > n && mkdir -p e/f && echo deep > e/f/g && ln e/f/g e/link && ln -s n sym && \
         rm gone && rm -r dir && mkdir dir && echo y > dir/y && chmod 600 mode && \
         head -c 300000 /dev/urandom > r && truncate -s 64M sparse && echo tail >> sparse"
    )
}

fn base(fx: &Fixture, d: &str) {
    fx.write(&format!("{d}/gone"), b"old\n", 0o644);
    fx.write(&format!("{d}/dir/x"), b"x\n", 0o644);
    fx.write(&format!("{d}/mode"), b"m\n", 0o644);
}

fn committed(fx: &Fixture, d: &str) {
    let p = |r: &str| fx.dir().join(d).join(r);
    assert_eq!(std::fs::read_to_string(p("n")).unwrap(), "new\n");
    assert_eq!(std::fs::read_to_string(p("e/link")).unwrap(), "deep\n");
    assert_eq!(std::fs::read_link(p("sym")).unwrap(), Path::new("n"));
    assert!(!p("gone").exists() && !p("dir/x").exists(), "deletions not committed in {d}");
    assert_eq!(std::fs::read_to_string(p("dir/y")).unwrap(), "y\n");
    assert_eq!(std::fs::metadata(p("mode")).unwrap().permissions().mode() & 0o777, 0o600);
    assert_eq!(std::fs::metadata(p("r")).unwrap().len(), 300_000);
    assert_eq!(std::fs::metadata(p("sparse")).unwrap().len(), (64 << 20) + 5);
}

#[test]
fn kept_worlds_outlive_a_reboot_and_hold_no_memory() {
    let fx = Fixture::new();
    base(&fx, "a");
    base(&fx, "b");
    // (Each run's report is read before the next run writes its own.)
    let id = |o: &Outcome| o.report()["world"].as_str().map(str::to_string);
    let disk = fx.sh(&["--keep"], &script("a"));
    let disk_id = id(&disk);
    let tmpfs = fx.sh(&["--keep", "--upper", "tmpfs"], &script("b"));
    let tmpfs_report = tmpfs.report();
    let ids: Vec<String> = [disk_id, id(&tmpfs)].into_iter().flatten().collect();
    let _discard = Discard(&fx, ids.clone());
    disk.expect_code(0);
    tmpfs.expect_code(0);
    assert_eq!(ids.len(), 2);
    // No kept world holds memory: nothing under the state dir is a tmpfs,
    // and both are in the disk pool.
    assert_eq!(tmpfs_under(fx.state.path()), Vec::<PathBuf>::new(), "a kept world is on a tmpfs");
    let before = listed(&fx);
    assert_eq!(before.len(), 2, "{before:#?}");
    for w in &before {
        assert_eq!(w["store"], "disk", "{w:#}");
        assert_eq!(std::fs::metadata(fx.worlds_dir().join(w["id"].as_str().unwrap())).unwrap().ino(), 256);
    }
    let diffs: Vec<Vec<u8>> = ids.iter().map(|id| diff_json(&fx, id)).collect();
    // The tmpfs world's diff is the one its run reported.
    let reported = &tmpfs_report["fs_diff"];
    let reviewed: Value = serde_json::from_slice(&diffs[1]).unwrap();
    for k in ["added", "modified", "deleted"] {
        let paths = |v: &Value| -> Vec<Value> { v[k].as_array().unwrap().iter().map(|e| e["path"].clone()).collect() };
        assert_eq!(paths(reported), paths(&reviewed), "{k}");
    }
    assert_eq!(reported["totals"], reviewed["totals"]);

    simulate_reboot(&fx);
    assert!(!mount_points().contains(&fx.worlds_dir()), "the pool is still mounted");
    assert!(fx.state.path().join("pool.img").is_file(), "the pool's image is not in the state dir");
    // Any command attaches the pool again: the same worlds, the same diffs.
    let after = listed(&fx);
    assert!(mount_points().contains(&fx.worlds_dir()), "worlds list did not attach the pool");
    assert_eq!(before, after);
    for (id, d) in ids.iter().zip(&diffs) {
        assert_eq!(String::from_utf8_lossy(&diff_json(&fx, id)), String::from_utf8_lossy(d), "world {id}");
    }
    assert_eq!(tmpfs_under(fx.state.path()), Vec::<PathBuf>::new());
    // And commit brings the changes to the host.
    for (id, d) in ids.iter().zip(["a", "b"]) {
        let o = fx.cloche(&["commit", id, "--json"]);
        o.expect_code(0);
        let c: Value = serde_json::from_slice(&o.stdout).unwrap();
        assert!(c["refused"].as_array().is_some_and(|r| r.is_empty()), "{c:#}");
        assert!(c["conflicts"].as_array().is_some_and(|r| r.is_empty()), "{c:#}");
        committed(&fx, d);
    }
    drop(_discard);
    fx.finish();
}

/// Starts `cloche batch run ID` and waits until entry `index` is running.
fn run_in_background(fx: &Fixture, id: &str, index: usize) -> HostChild {
    let mut cmd = fx.command();
    cmd.args(["batch", "run", id]).stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null());
    let runner = HostChild::spawn(&mut cmd);
    let deadline = Instant::now() + Duration::from_secs(20);
    while show(fx, id)["entries"][index]["state"] != "running" {
        assert!(Instant::now() < deadline, "entry {index} never started");
        std::thread::sleep(Duration::from_millis(50));
    }
    runner
}

fn wait_gone(marker: &str) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while processes_with(marker).into_iter().any(|(_, c)| c.trim() == marker) {
        assert!(Instant::now() < deadline, "the world outlived its runner");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A batch world on a tmpfs (the project's policy says `upper = "tmpfs"`)
/// whose runner is killed: the next command keeps it as interrupted, on
/// disk, and it outlives a reboot.
#[test]
fn a_killed_batch_on_tmpfs_is_kept_on_disk_and_outlives_a_reboot() {
    let fx = Fixture::new();
    let file = fx.out.path().join("p.toml");
    let text = policy_text(300, "");
    assert!(text.contains("upper = \"disk\""));
    std::fs::write(&file, text.replace("upper = \"disk\"", "upper = \"tmpfs\"")).unwrap();
    fx.cloche(&["policy", "set", "--project", fx.dir().to_str().unwrap(), file.to_str().unwrap()]).expect_code(0);
    let project = fx.dir().to_str().unwrap().to_string();
    let batch = serde_json::json!({"agent": "a1", "project": project,
        "entries": [{"command": "echo first > first.txt"}, {"command": "sleep 32.7"}]});
    let id = submit(&fx, &batch, None);
    fx.cloche(&["batch", "approve", &id]).expect_code(0);
    let mut runner = run_in_background(&fx, &id, 1);
    // While it runs, its upper is a tmpfs (attached for review).
    assert_eq!(tmpfs_under(&fx.worlds_dir()).len(), 1, "the batch's world is not on a tmpfs");
    // SAFETY: kill with a pid and a signal.
    unsafe { libc::kill(runner.pid(), libc::SIGKILL) };
    let _ = runner.0.wait();
    wait_gone("sleep 32.7");
    let before = listed(&fx);
    let _discard = Discard(&fx, vec![id.clone()]);
    assert_eq!(before.len(), 1, "{before:#?}");
    let w = &before[0];
    assert_eq!((w["state"].as_str(), w["store"].as_str()), (Some("interrupted"), Some("disk")), "{w:#}");
    assert_eq!(tmpfs_under(fx.state.path()), Vec::<PathBuf>::new(), "the interrupted world is still on a tmpfs");
    let diff = diff_json(&fx, &id);
    assert!(String::from_utf8_lossy(&diff).contains("first.txt"), "{}", String::from_utf8_lossy(&diff));
    simulate_reboot(&fx);
    assert_eq!(listed(&fx), before);
    assert_eq!(diff_json(&fx, &id), diff);
    drop(_discard);
    // The next world sweeps the dead runner's cgroup.
    fx.run(&[] as &[&str], &["true"]).expect_code(0);
    fx.finish();
}

/// `cloche run --keep` killed with -9 while its command runs (with a
/// scoped network: a veth and a ruleset): its world is kept as interrupted
/// (`keep_interrupted = true`, the default) or swept (`false`); no mount,
/// loop device, cgroup, network namespace, veth or process is left.
#[test]
fn a_killed_run_with_keep_is_kept_or_swept_as_its_policy_says() {
    for keep in [true, false] {
        let fx = Fixture::new();
        let file = fx.out.path().join("p.toml");
        let text = policy_text(300, "").replace("keep_interrupted = true", &format!("keep_interrupted = {keep}"));
        std::fs::write(&file, text).unwrap();
        let mut cmd = fx.command();
        cmd.args(["run", "--keep", "--policy", file.to_str().unwrap(), "--net", "allow=198.51.100.10:9"]);
        cmd.args(["--", "sh", "-c", "echo x > written; sleep 33.1"]);
        cmd.stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null());
        let mut running = HostChild::spawn(&mut cmd);
        let deadline = Instant::now() + Duration::from_secs(20);
        let rel = fx.dir().strip_prefix("/").unwrap().join("written");
        let written = || fx.worlds().iter().any(|id| fx.worlds_dir().join(id).join("fs/upper").join(&rel).exists());
        while !written() {
            assert!(Instant::now() < deadline, "no world wrote its file; worlds: {:?}", fx.worlds());
            assert!(running.alive(), "cloche ended early");
            std::thread::sleep(Duration::from_millis(50));
        }
        // SAFETY: kill(2) of the child we started.
        unsafe { libc::kill(running.pid(), libc::SIGKILL) };
        let _ = running.0.wait();
        wait_gone("sleep 33.1");
        let worlds = listed(&fx);
        let ids: Vec<String> = worlds.iter().filter_map(|w| w["id"].as_str().map(str::to_string)).collect();
        let _discard = Discard(&fx, ids.clone());
        if keep {
            assert_eq!(worlds.len(), 1, "{worlds:#?}");
            assert_eq!(worlds[0]["state"], "interrupted", "{worlds:#?}");
            let diff = String::from_utf8(diff_json(&fx, &ids[0])).unwrap();
            assert!(diff.contains("written"), "{diff}");
        } else {
            assert!(worlds.is_empty() && fx.worlds().is_empty(), "{worlds:#?} {:?}", fx.worlds());
        }
        drop(_discard);
        // The next world sweeps the dead run's cgroup and the host's
        // network table.
        fx.run(&[] as &[&str], &["true"]).expect_code(0);
        assert!(!fx.dir().join("written").exists());
        fx.finish();
    }
}
