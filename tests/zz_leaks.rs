//! Runs last (alphabetically): many worlds of every kind back to back, then
//! checks that the host has no new mount, cgroup, process, network interface,
//! loop device or world state dir.

mod common;

use common::*;

#[test]
fn many_worlds_leave_nothing_behind() {
    let fx = Fixture::new();
    let marker = fx.dir().join(format!("leak-marker-{}", fx.tag));
    let marker = marker.to_str().unwrap();
    let probe = probe_bin();
    let probe = probe.to_str().unwrap();
    for round in 0..3 {
        let runs: Vec<(Vec<&str>, Vec<&str>)> = vec![
            (vec![], vec!["true"]),
            (vec![], vec!["/bin/sh", "-c", "echo x > f; mkdir -p d/e; rm -f g; exit 3"]),
            (vec![], vec!["cloche-no-such-command"]),
            (vec!["--timeout", "1"], vec!["sleep", "30"]),
            (vec!["--pids", "32"], vec![probe, "forkbomb", "500"]),
            (vec!["--memory", "33554432"], vec![probe, "alloc", "256"]),
            (vec![], vec![probe, "sleep-bg", marker, "2"]),
            (vec![], vec!["/bin/sh", "-c", "sleep 20 & sleep 20 & exit 0"]),
            (vec!["--net", "none"], vec![probe, "status"]),
        ];
        for (opts, cmd) in &runs {
            let o = fx.run(opts, cmd);
            assert!(o.code.is_some(), "round {round}: cloche itself was killed by a signal\n{}", o.describe());
            assert!(
                fx.worlds().is_empty(),
                "round {round}: world state left after `{}`: {:?}",
                cmd.join(" "),
                fx.worlds()
            );
        }
        // A refused invocation makes no world at all.
        let o = fx.cloche(&["run", "--memory", "abc", "--", "true"]);
        assert_eq!(o.code, Some(125), "{}", o.describe());
    }
    let left = processes_left_with(&fx.tag);
    assert!(left.is_empty(), "world processes survive: {left:?}");
    // Not even cloche's parent cgroup directories stay behind once the last
    // world is gone (whatever existed before this test).
    let parents: Vec<String> = ["memory", "pids", "cpu", "unified"]
        .iter()
        .map(|c| format!("/sys/fs/cgroup/{c}/cloche"))
        .filter(|p| std::path::Path::new(p).exists())
        .collect();
    assert!(parents.is_empty(), "cgroup directories left: {parents:?}");
    fx.finish();
}

/// The leak check itself: a mount, a cgroup and a process in another pid
/// namespace, made by hand the way a broken world would leave them, are all
/// reported; once they are gone, nothing is.
#[test]
fn the_leak_check_sees_mounts_cgroups_and_processes() {
    let fx = Fixture::new();

    let mnt = fx.state.path().join("worlds/fake/merged");
    std::fs::create_dir_all(&mnt).unwrap();
    let status = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=1m", "cloche-test-fake"])
        .arg(&mnt)
        .status()
        .unwrap();
    assert!(status.success(), "mount a tmpfs for the self-check");

    let cg = std::path::PathBuf::from(format!("/sys/fs/cgroup/pids/cloche-selfcheck-{}", fx.tag));
    std::fs::create_dir(&cg).unwrap();
    struct RmCgroup(std::path::PathBuf);
    impl Drop for RmCgroup {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir(&self.0);
        }
    }
    let cg_guard = RmCgroup(cg.clone());

    let mut cmd = std::process::Command::new("unshare");
    cmd.args(["--pid", "--fork", "--kill-child", "sleep", "60"]).current_dir(fx.dir());
    let child = HostChild::spawn(&mut cmd);
    std::thread::sleep(std::time::Duration::from_millis(200));

    let leaks = fx.leaks();
    let has = |prefix: &str, needle: &str| leaks.iter().any(|l| l.starts_with(prefix) && l.contains(needle));
    assert!(has("mount:", mnt.to_str().unwrap()), "mount not seen: {leaks:?}");
    assert!(has("cgroup:", cg.to_str().unwrap()), "cgroup not seen: {leaks:?}");
    assert!(has("process", "sleep 60"), "process not seen: {leaks:?}");

    // Clean up by hand; the Scratch guard of the state dir would detach the mount too.
    let status = std::process::Command::new("umount").arg(&mnt).status().unwrap();
    assert!(status.success());
    std::fs::remove_dir_all(fx.worlds_dir()).unwrap();
    drop(cg_guard);
    drop(child);
    std::thread::sleep(std::time::Duration::from_millis(200));
    fx.finish();
}

/// `kill -9` of cloche while its world runs: the world dies with it (no
/// process survives), and the next run sweeps the cgroup the crash left.
#[test]
fn a_crashed_run_is_swept_by_the_next() {
    let fx = Fixture::new();
    // An unusual duration marks the world's process; cloche's own argv
    // holds it too, so match the exact command line of the sleep.
    let sleeping = || processes_with("sleep 31.7").into_iter().filter(|(_, c)| c.trim() == "sleep 31.7").count();
    let mut cmd = fx.command();
    cmd.args(["run", "--", "sleep", "31.7"]);
    cmd.stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null());
    let mut child = HostChild::spawn(&mut cmd);
    // Wait until the world's command runs.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while sleeping() == 0 {
        assert!(std::time::Instant::now() < deadline, "the world never started");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let world_cgroups = || -> Vec<String> {
        std::fs::read_dir("/sys/fs/cgroup/pids/cloche")
            .map(|rd| {
                rd.flatten()
                    .filter(|e| e.path().is_dir())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default()
    };
    let before: Vec<String> = world_cgroups();
    assert!(!before.is_empty(), "no world cgroup while the world runs");
    // SAFETY: kill with a pid and a signal.
    unsafe { libc::kill(child.pid(), libc::SIGKILL) };
    let _ = child.0.wait();
    // The world dies with cloche (PR_SET_PDEATHSIG on its pid 1).
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while sleeping() != 0 {
        assert!(std::time::Instant::now() < deadline, "the world outlived cloche");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    // Its cgroup is left (cloche had no chance to remove it) ...
    let stale: Vec<String> = world_cgroups().into_iter().filter(|c| before.contains(c)).collect();
    assert!(!stale.is_empty(), "expected the crashed world's cgroup to remain until the next run");
    // ... until the next run sweeps it.
    fx.run(&[] as &[&str], &["true"]).expect_code(0);
    let left: Vec<String> = world_cgroups().into_iter().filter(|c| stale.contains(c)).collect();
    assert!(left.is_empty(), "stale world cgroups not swept: {left:?}");
    fx.finish();
}
