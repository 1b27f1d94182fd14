//! Limits: pids, memory, timeout. Each limited run must end promptly and
//! leave nothing behind.

use crate::common;

use std::time::Duration;

use common::*;

const EAGAIN: i64 = 11;

#[test]
fn pids_limit_stops_a_fork_loop() {
    let fx = Fixture::new();

    // Control: with room to spare the loop reaches its own cap.
    let o = fx.probe(&["--pids", "2000"], &["forkbomb", "200"]);
    o.expect_code(0);
    let v = o.one();
    assert_eq!(v["forked"], 200, "control run could not fork 200 children: {v}");

    let o = fx.probe(&["--pids", "64"], &["forkbomb", "1000"]);
    o.expect_code(0);
    let v = o.one();
    let forked = v["forked"].as_u64().unwrap_or(u64::MAX);
    assert!(forked < 64, "--pids 64 let the command fork {forked} children: {v}");
    let limits = string_list(&o.report()["limits_hit"]);
    assert!(
        (v["fork_failed"] == true && v["errno"] == EAGAIN) || limits.iter().any(|l| l == "pids"),
        "the fork loop must end on EAGAIN, or the report must name the pids limit: {v} {limits:?}"
    );
    fx.finish();
}

#[test]
fn memory_limit_stops_an_allocation_loop() {
    let fx = Fixture::new();

    // Control: 128 MiB fit under 1 GiB.
    let o = fx.probe(&["--memory", "1073741824"], &["alloc", "128"]);
    o.expect_code(0);
    assert_eq!(o.one()["done"], true, "{}", o.describe());

    // 512 MiB do not fit under 64 MiB.
    let o = fx.probe(&["--memory", "67108864"], &["alloc", "512"]);
    let finished = json_lines(&o.stdout).unwrap_or_default().iter().any(|l| l["done"] == true);
    assert!(!finished, "--memory 64 MiB let the command allocate 512 MiB\n{}", o.describe());
    let limits = string_list(&o.report()["limits_hit"]);
    assert!(
        o.code == Some(137) || limits.iter().any(|l| l == "memory"),
        "the command must be killed (137) or the report must name the memory limit: {limits:?}\n{}",
        o.describe()
    );
    assert!(o.code != Some(0), "{}", o.describe());
    fx.finish();
}

#[test]
fn timeout_returns_124_and_leaves_nothing() {
    let fx = Fixture::new();
    let secs = format!("30.{}", std::process::id());
    let o = fx.run(&["--timeout", "1"], &["sleep", &secs]);
    o.expect_code(124);
    assert!(
        o.elapsed >= Duration::from_millis(900) && o.elapsed < Duration::from_secs(5),
        "--timeout 1 took {:?}",
        o.elapsed
    );
    let r = o.report();
    assert_eq!(r["timed_out"], true, "{r:#}");
    assert_eq!(r["exit_code"], 124, "{r:#}");
    assert!(string_list(&r["limits_hit"]).iter().any(|l| l == "timeout"), "limits_hit: {}", r["limits_hit"]);
    let left = processes_left_with(&format!("sleep {secs}"));
    assert!(left.is_empty(), "the timed-out command survives: {left:?}");
    fx.finish();
}

#[test]
fn timeout_also_ends_a_command_that_ignores_sigterm() {
    let fx = Fixture::new();
    let o = fx.probe(&["--timeout", "1"], &["sleep", "30", "--ignore-term"]);
    o.expect_code(124);
    assert!(o.elapsed < Duration::from_secs(5), "--timeout 1 took {:?} on a command ignoring SIGTERM", o.elapsed);
    assert_eq!(o.report()["timed_out"], true);
    fx.finish();
}

#[test]
fn a_command_within_its_timeout_is_not_timed_out() {
    let fx = Fixture::new();
    let o = fx.run(&["--timeout", "20"], &["/bin/sh", "-c", "exit 5"]);
    o.expect_code(5);
    let r = o.report();
    assert_eq!(r["timed_out"], false, "{r:#}");
    assert!(o.elapsed < Duration::from_secs(10), "a quick command took {:?}", o.elapsed);
    fx.finish();
}

/// cgroups are global to the machine and every cloche sweeps the cgroups of
/// dead worlds: a cloche using another state dir must not take a running
/// world for a dead one (it did, and killed it, when liveness was kept per
/// state dir).
#[test]
fn a_cloche_with_another_state_dir_leaves_running_worlds_alone() {
    let fx = Fixture::new();
    let mut cmd = fx.command();
    cmd.args(["run", "--", "sh", "-c", "sleep 2.7; echo survived"]).stdout(std::process::Stdio::piped());
    let mut running = HostChild::spawn(&mut cmd);
    std::thread::sleep(std::time::Duration::from_millis(700));
    let other = fx.out.path().join("other-state");
    for _ in 0..3 {
        let o = run_cmd(fx.command().env("CLOCHE_STATE_DIR", &other).args(["run", "--", "true"]), DEADLINE);
        o.expect_code(0);
    }
    let status = running.0.wait().unwrap();
    let mut out = String::new();
    std::io::Read::read_to_string(running.0.stdout.as_mut().unwrap(), &mut out).unwrap();
    assert_eq!((status.code(), out.trim()), (Some(0), "survived"));
    fx.finish();
}
