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
            (
                vec![],
                vec!["/bin/sh", "-c", "echo x > f; mkdir -p d/e; rm -f g; exit 3"],
            ),
            (vec![], vec!["cloche-no-such-command"]),
            (vec!["--timeout", "1"], vec!["sleep", "30"]),
            (vec!["--pids", "32"], vec![probe, "forkbomb", "500"]),
            (vec!["--memory", "33554432"], vec![probe, "alloc", "256"]),
            (vec![], vec![probe, "sleep-bg", marker, "2"]),
            (
                vec![],
                vec!["/bin/sh", "-c", "sleep 20 & sleep 20 & exit 0"],
            ),
            (vec!["--net", "none"], vec![probe, "status"]),
        ];
        for (opts, cmd) in &runs {
            let o = fx.run(opts, cmd);
            assert!(
                o.code.is_some(),
                "round {round}: cloche itself was killed by a signal\n{}",
                o.describe()
            );
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
    let left = processes_with(&fx.tag);
    assert!(left.is_empty(), "world processes survive: {left:?}");
    fx.finish();
}
