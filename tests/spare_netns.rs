//! The spare network namespace (docs/security.md, *The spare network
//! namespace*): each world's end makes the next world's network namespace
//! ahead, and the next world takes it. Checked from outside and inside:
//! no world gets the host's namespace; each has `lo` alone and up (and its
//! `eth0` when scoped); the spare a world's end made is the namespace the
//! next world gets (loopback only or scoped), the same object (it stays
//! mounted until that world is gone). (Namespace numbers are reused once
//! a namespace is freed, so two worlds apart in time may show the same
//! `net:[N]`; that a spare is given at most once is `netns_spare`'s unit
//! test.)

use crate::common;

use common::*;
use std::time::{Duration, Instant};

/// The namespace mounted on `<state>/netns/spare` once a world's teardown
/// made it (it runs after cloche answered: waited for), as `net:[N]`.
fn spare(fx: &Fixture) -> String {
    let path = fx.state.path().join("netns/spare");
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mounted = mount_points().iter().any(|m| m == &path);
        let ino = nix::sys::stat::stat(&path).map(|s| s.st_ino).ok();
        let free = std::fs::read(fx.state.path().join("netns/.lock")).is_ok_and(|b| b == b"f");
        if let (true, Some(ino), true) = (mounted, ino, free) {
            return format!("net:[{ino}]");
        }
        assert!(Instant::now() < deadline, "no spare network namespace made at {}", path.display());
        std::thread::sleep(Duration::from_millis(20));
    }
}

const SCRIPT: &str =
    "readlink /proc/self/ns/net; tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' ' | sort | tr '\\n' ' '; echo; \
     python3 -c 'import socket; s = socket.socket(); s.bind((\"127.0.0.1\", 0)); s.listen(); \
     socket.create_connection(s.getsockname()).close(); print(\"lo up\")'";

#[test]
fn each_world_takes_the_network_namespace_the_last_ones_end_made() {
    let fx = Fixture::new();
    let host = std::fs::read_link("/proc/self/ns/net").unwrap().to_string_lossy().into_owned();
    let mut made: Option<String> = None;
    let runs: [(&[&str], &str); 4] =
        [(&[], "lo"), (&[], "lo"), (&["--net", "allow=198.51.100.10:80"], "eth0 lo"), (&[], "lo")];
    for (i, (opts, links)) in runs.iter().enumerate() {
        let o = fx.run(opts, &["/bin/sh", "-c", SCRIPT]);
        o.expect_code(0);
        let out = String::from_utf8_lossy(&o.stdout).into_owned();
        let lines: Vec<&str> = out.lines().collect();
        let ns = lines.first().copied().unwrap_or_default().to_string();
        assert!(ns.starts_with("net:["), "run {i}: {out}");
        assert_ne!(ns, host, "run {i} was given the host's network namespace");
        assert_eq!(lines.get(1).map(|l| l.trim()), Some(*links), "run {i}: {out}");
        assert_eq!(lines.get(2).copied(), Some("lo up"), "run {i}: {out}");
        // From the second on, the world took what the last one's end made.
        if let Some(m) = &made {
            assert_eq!(&ns, m, "run {i} did not take the spare made before it");
        }
        let next = spare(&fx);
        assert_ne!(next, host, "a spare that is the host's namespace");
        made = Some(next);
    }
    fx.finish();
}

/// `cloche worlds gc` releases the spare: its mount and its file go (only
/// the disk pool stays mounted), and the next world, which has none to
/// take, makes its own namespace; its end makes a spare again.
#[test]
fn worlds_gc_releases_the_spare() {
    let fx = Fixture::new();
    fx.run(&[] as &[&str], &["true"]).expect_code(0);
    spare(&fx); // the first world's end made one (else `spare` fails)
    fx.cloche(&["worlds", "gc"]).expect_code(0);
    let path = fx.state.path().join("netns/spare");
    let state = fx.state.path().to_path_buf();
    let ours: Vec<_> = mount_points().into_iter().filter(|m| m.starts_with(&state)).collect();
    assert_eq!(ours, [state.join("worlds")], "mounts of the state directory after gc");
    assert!(!path.exists(), "the spare's file stays");
    let o = fx.run(&[] as &[&str], &["/bin/sh", "-c", SCRIPT]);
    o.expect_code(0);
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(out.starts_with("net:[") && out.contains("lo up"), "{out}");
    // Its end makes a spare again (`spare` fails the test if none comes).
    spare(&fx);
    fx.finish();
}
