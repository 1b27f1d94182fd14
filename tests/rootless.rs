//! Worlds without root (docs/security.md, *Worlds without root*): a user
//! who is not root runs `cloche run` with no daemon. The test makes a user
//! of its own (removed at the end, even on failure) and checks from
//! outside: the world runs in the caller's namespace, its writes are in
//! the fs_diff and not on the host, the home's secrets are not shown, a
//! kept world is diffed and discarded, what it cannot do is refused with
//! one line, and nothing is left behind.

use crate::common;

use common::*;
use serde_json::Value;
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

/// `cloche ARGS` as `user` in `cwd`: exit code, stdout, stderr.
fn cloche(user: &TempUser, cwd: &std::path::Path, args: &[&str]) -> Outcome {
    let bin = cloche_bin();
    run_cmd(&mut user.command(cwd, bin.to_str().unwrap(), args), Duration::from_secs(60))
}

fn has(report: &Value, list: &str, path: &std::path::Path) -> bool {
    find_entry(report, list, path).is_some()
}

#[test]
fn a_user_runs_a_world_without_root_and_without_a_daemon() {
    let fx = Fixture::new();
    let user = TempUser::new(&fx.tag);
    let proj = user.home.join("proj");
    user.write("proj/README", b"project\n");
    let secret = user.write(".ssh/id_test", b"the-user-secret\n");
    let state = user.home.join(".local/state/cloche");

    // This host has no delegated cgroup v2 subtree (controllers on v1):
    // refused with one line saying how to get one, nothing made.
    let o = cloche(&user, &proj, &["run", "--", "true"]);
    o.expect_code(125);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(err.lines().count(), 1, "{}", o.describe());
    assert!(err.contains("delegated") && err.contains("--no-limits"), "{}", o.describe());
    assert!(!state.exists(), "a refused run made the state directory");

    // A scoped network needs root on the host side: refused, naming the daemon.
    let o = cloche(&user, &proj, &["run", "--no-limits", "--net", "allow=198.51.100.1", "--", "true"]);
    o.expect_code(125);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(err.lines().count(), 1, "{}", o.describe());
    assert!(err.contains("cloched"), "{}", o.describe());

    // --no-limits runs (said on stderr): the world's root is the caller.
    let script = "cat /proc/self/uid_map; cat ~/.ssh/id_test; echo out > result; echo h > ~/made; \
                  echo t > /tmp/scratch; ip -o link | wc -l";
    let o = cloche(&user, &proj, &["run", "--no-limits", "--json", "--", "sh", "-c", script]);
    o.expect_code(0);
    assert!(String::from_utf8_lossy(&o.stderr).contains("--no-limits"), "{}", o.describe());
    let out = String::from_utf8_lossy(&o.stdout);
    let map: Vec<&str> = out.lines().next().unwrap_or("").split_whitespace().collect();
    assert_eq!(map, ["0", &user.uid.to_string(), "1"], "the caller's uid alone is the world's 0: {out}");
    assert!(!out.contains("the-user-secret"), "the home's secret was readable: {out}");
    assert_eq!(out.lines().nth(1), Some("1"), "loopback only: {out}");
    let report: Value = serde_json::from_str(&out[out.find('{').expect("a report")..]).unwrap();
    assert_eq!(report["userns"]["rootless"], true, "{report}");
    assert_eq!(report["userns"]["uid"], user.uid, "{report}");
    assert_eq!(report["userns"]["count"], 1, "{report}");
    assert_eq!(report["limits"]["none"], true, "{report}");
    assert_eq!(report["cgroup"], "none", "{report}");
    let layers = string_list(&report["layers"]);
    for l in ["rootless", "userns", "seccomp", "caps", "no_new_privs", "net", "masks"] {
        assert!(layers.iter().any(|x| x == l), "{l} not in {layers:?}");
    }
    assert!(has(&report, "added", &proj.join("result")), "{report}");
    assert!(has(&report, "added", &user.home.join("made")), "{report}");
    assert!(!proj.join("result").exists() && !user.home.join("made").exists(), "a write reached the host");
    assert_eq!(std::fs::read(&secret).unwrap(), b"the-user-secret\n");
    assert!(diff_list(&report, "touched").is_empty(), "{report}");

    // Where the caller may write outside its home, the world may too, and
    // only there (docs/security.md, *Which directories are overlays*): a
    // project of its own below a directory of root's (`/srv/X/proj`), a
    // directory of its group (`/srv/X/team`, root's, group-writable), a
    // directory of its own right below a system directory (`/opt/Y`);
    // its writes are in the fs_diff, never on the host. /usr and /etc,
    // where the caller may write nothing, refuse as on the host.
    let srv = Scratch::new_in("/srv", "cloche-rl-");
    let opt = Scratch::new_in("/opt", "cloche-rl-");
    let (sproj, team) = (srv.path().join("proj"), srv.path().join("team"));
    std::fs::set_permissions(srv.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    for (d, uid, mode) in [(&sproj, user.uid, 0o755), (&team, 0, 0o2775)] {
        std::fs::create_dir(d).unwrap();
        std::os::unix::fs::chown(d, Some(uid), Some(user.gid)).unwrap();
        std::fs::set_permissions(d, std::fs::Permissions::from_mode(mode)).unwrap();
    }
    std::os::unix::fs::chown(opt.path(), Some(user.uid), Some(user.gid)).unwrap();
    let script = format!(
        "echo p > made && echo g > ../team/made && echo o > {}/made || exit 3; \
         for d in /usr /etc /usr/bin; do touch $d/cloche-rl-x 2>/dev/null && echo wrote $d; done; true",
        opt.path().display()
    );
    let o = cloche(&user, &sproj, &["run", "--no-limits", "--json", "--", "sh", "-c", &script]);
    o.expect_code(0);
    let out = String::from_utf8_lossy(&o.stdout);
    let (said, json) = out.split_at(out.find('{').expect("a report"));
    assert!(said.is_empty(), "a write where the caller may not write: {said}");
    let report: Value = serde_json::from_str(json).unwrap();
    for made in [sproj.join("made"), team.join("made"), opt.path().join("made")] {
        assert!(has(&report, "added", &made), "{} not in the fs_diff: {report}", made.display());
        assert!(!made.exists(), "{} reached the host", made.display());
    }
    assert!(diff_list(&report, "touched").is_empty(), "{report}");
    assert!(!std::path::Path::new("/usr/cloche-rl-x").exists() && !std::path::Path::new("/etc/cloche-rl-x").exists());
    drop((srv, opt));

    // A mount the caller cannot reach (below a directory of root's, 0700,
    // as root's disk pool is): the directory above it is one read-only
    // recursive bind. The world runs, reads there, cannot write there nor
    // reach the mount.
    let ro = Scratch::new_in("/opt", "cloche-rl-ro-");
    std::fs::set_permissions(ro.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(ro.path().join("seen"), b"seen\n").unwrap();
    std::fs::set_permissions(ro.path().join("seen"), std::fs::Permissions::from_mode(0o644)).unwrap();
    let closed = ro.path().join("closed");
    std::fs::create_dir_all(closed.join("m")).unwrap();
    std::fs::set_permissions(&closed, std::fs::Permissions::from_mode(0o700)).unwrap();
    let _hidden = Mounted::tmpfs(&closed.join("m"), "64k", &fx.tag);
    let r = ro.path().display();
    let script = format!(
        "cat {r}/seen; touch {r}/made 2>/dev/null && echo wrote; ls {r}/closed/m 2>/dev/null && echo reached; \
         grep -c ' {r}/closed/m ' /proc/self/mountinfo"
    );
    let o = cloche(&user, &proj, &["run", "--no-limits", "--", "sh", "-c", &script]);
    assert_eq!(String::from_utf8_lossy(&o.stdout), "seen\n1\n", "{}", o.describe());
    assert!(!ro.path().join("made").exists());
    drop(_hidden);
    drop(ro);

    // --keep, then diff and discard, all as the user, with no daemon.
    let o = cloche(&user, &proj, &["run", "--no-limits", "--keep", "--", "sh", "-c", "echo k > kept"]);
    o.expect_code(0);
    let err = String::from_utf8_lossy(&o.stderr);
    let id = err.split("kept world ").nth(1).and_then(|r| r.split_whitespace().next()).expect("a kept world's id");
    fx.note_world(id);
    let o = cloche(&user, &proj, &["diff", id, "--name-status"]);
    o.expect_code(0);
    assert!(
        String::from_utf8_lossy(&o.stdout).contains(&format!("A\t{}", proj.join("kept").display())),
        "{}",
        o.describe()
    );
    let o = cloche(&user, &proj, &["worlds", "list"]);
    assert!(String::from_utf8_lossy(&o.stdout).contains(id), "{}", o.describe());
    cloche(&user, &proj, &["discard", id]).expect_code(0);
    let left: Vec<_> = std::fs::read_dir(state.join("worlds")).unwrap().flatten().map(|e| e.file_name()).collect();
    assert!(left.is_empty(), "worlds left in the user's state directory: {left:?}");

    // Nothing of the user's left running (a world's mounts are released by
    // a child of cloche's that exits at once: a moment); mounts and the
    // rest: the fixture.
    let deadline = std::time::Instant::now() + Duration::from_secs(3);
    while !user.processes().is_empty() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(user.processes().is_empty(), "the user's processes outlived their worlds: {:?}", user.processes());
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mounts.contains(&user.name), "a mount of the user's is left on the host");
    drop(user);
    fx.finish();
}
