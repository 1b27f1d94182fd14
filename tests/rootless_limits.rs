//! A world without root takes its limits in a cgroup delegated to its user
//! (docs/security.md, *Worlds without root*). The test delegates one as an
//! administrator would, on whichever cgroup version carries the host's
//! memory, pids and cpu controllers: on v1, a directory of the user's in
//! each of the three hierarchies (below the test's own cgroup there); on
//! v2, a subtree whose controllers are enabled for its children. Then, as
//! the user: the limits hold (memory: killed; pids: a fork refused), the
//! world's cgroup is `<delegated>/cloche/<id>` while it runs and is gone
//! after it; a delegation that lacks a controller is refused with one line.
//! Everything is removed at the end, even on failure.

use crate::common;

use common::*;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// The delegated directories (v1: memory, pids, cpu; v2: one), removed on
/// drop with whatever is left below them (processes killed first).
struct Delegation {
    v1: bool,
    dirs: Vec<PathBuf>,
    /// Where the user's commands are started from (v2: a leaf of the
    /// subtree; v1: the delegated directories themselves).
    enter: Vec<PathBuf>,
}

impl Delegation {
    /// Delegates a cgroup named `name` to `user`; `controllers` on v1 (a
    /// subset: a delegation that lacks some).
    fn new(user: &TempUser, name: &str, controllers: &[&str]) -> Delegation {
        let layout = cloche_world::cgroup::Layout::detect();
        let chown = |p: &Path| std::os::unix::fs::chown(p, Some(user.uid), Some(user.gid)).unwrap();
        match layout {
            cloche_world::cgroup::Layout::V1 { memory, pids, cpu } => {
                let own = std::fs::read_to_string("/proc/self/cgroup").unwrap();
                let mut d = Delegation { v1: true, dirs: Vec::new(), enter: Vec::new() };
                for (c, mp) in [("memory", memory), ("pids", pids), ("cpu", cpu)] {
                    let rel = own
                        .lines()
                        .find_map(|l| {
                            let mut f = l.splitn(3, ':');
                            let (_, names, path) = (f.next()?, f.next()?, f.next()?);
                            names.split(',').any(|n| n == c).then_some(path)
                        })
                        .expect("the test's own cgroup in the hierarchy");
                    let dir = mp.join(rel.trim_start_matches('/')).join(name);
                    std::fs::create_dir(&dir).unwrap();
                    d.dirs.push(dir.clone());
                    if controllers.contains(&c) {
                        // What `cgcreate -t USER -a USER` gives: the directory
                        // (to make cgroups in) and its task lists (to enter it).
                        for p in [dir.clone(), dir.join("tasks"), dir.join("cgroup.procs")] {
                            chown(&p);
                        }
                    }
                    d.enter.push(dir);
                }
                d
            }
            cloche_world::cgroup::Layout::V2 { root } => {
                let dir = root.join(name);
                std::fs::create_dir(&dir).unwrap();
                let d = Delegation { v1: false, dirs: vec![dir.clone()], enter: vec![dir.join("leaf")] };
                std::fs::create_dir(dir.join("leaf")).unwrap();
                let on: Vec<String> = controllers.iter().map(|c| format!("+{c}")).collect();
                std::fs::write(dir.join("cgroup.subtree_control"), on.join(" ")).unwrap();
                // What systemd's Delegate=yes gives.
                for f in ["", "cgroup.procs", "cgroup.subtree_control", "cgroup.threads", "leaf", "leaf/cgroup.procs"] {
                    chown(&dir.join(f));
                }
                d
            }
            other => panic!("no cgroup controllers to delegate on this host: {other:?}"),
        }
    }

    /// `cloche ARGS` as `user`, started inside the delegation (root moves
    /// the shell there, then becomes the user).
    fn cloche(&self, user: &TempUser, cwd: &Path, args: &[&str]) -> Command {
        let inner = user.command(cwd, cloche_bin().to_str().unwrap(), args);
        let file = if self.v1 { "tasks" } else { "cgroup.procs" };
        let moves: Vec<String> =
            self.enter.iter().map(|d| format!("echo $$ > '{}' || exit 120", d.join(file).display())).collect();
        let mut c = Command::new("sh");
        c.arg("-c").arg(format!("{}; exec \"$@\"", moves.join("; "))).arg("sh").arg(inner.get_program());
        c.args(inner.get_args()).current_dir(cwd);
        c
    }

    /// The world cgroups below the delegation (`<dir>/cloche/<id>`).
    fn worlds(&self) -> Vec<PathBuf> {
        let rd = std::fs::read_dir(self.dirs[0].join("cloche")).into_iter().flatten().flatten();
        rd.map(|e| e.path()).filter(|p| p.is_dir()).collect()
    }
}

impl Drop for Delegation {
    fn drop(&mut self) {
        // Deepest first; a cgroup with a process left is emptied first.
        for dir in &self.dirs {
            let mut all: Vec<PathBuf> = Vec::new();
            let mut stack = vec![dir.clone()];
            while let Some(d) = stack.pop() {
                for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
                    if e.file_type().is_ok_and(|t| t.is_dir()) {
                        stack.push(e.path());
                    }
                }
                all.push(d);
            }
            for d in all.iter().rev() {
                for _ in 0..100 {
                    for f in ["cgroup.procs", "tasks"] {
                        for pid in std::fs::read_to_string(d.join(f)).unwrap_or_default().split_whitespace() {
                            let _ = Command::new("kill").args(["-KILL", pid]).status();
                        }
                    }
                    if std::fs::remove_dir(d).is_ok() || !d.exists() {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
        }
    }
}

fn report(o: &Outcome) -> Value {
    let out = String::from_utf8_lossy(&o.stdout);
    let at = out.find('{').unwrap_or_else(|| panic!("no report\n{}", o.describe()));
    serde_json::from_str(&out[at..]).unwrap_or_else(|e| panic!("{e}\n{}", o.describe()))
}

#[test]
fn a_world_without_root_takes_its_limits_in_a_delegated_cgroup() {
    let fx = Fixture::new();
    let user = TempUser::new(&fx.tag);
    let proj = user.home.join("proj");
    user.write("proj/README", b"project\n");
    let name = format!("cloche-rl-{}", fx.tag);
    let deleg = Delegation::new(&user, &name, &["memory", "pids", "cpu"]);
    let run = |args: &[&str]| run_cmd(&mut deleg.cloche(&user, &proj, args), Duration::from_secs(60));

    // doctor, as the user, names the delegation.
    let o = run(&["doctor"]);
    let out = String::from_utf8_lossy(&o.stdout);
    let line = out.lines().find(|l| l.contains("limits (delegated cgroup)")).unwrap_or_else(|| panic!("{out}"));
    assert!(line.starts_with("ok") && line.contains(&name), "{line}");

    // Memory: an allocation past the limit is killed, and the report says so.
    let o = run(&["run", "--json", "--memory", "64m", "--", "python3", "-c", "b = bytearray(400 << 20)"]);
    o.expect_code(137);
    let r = report(&o);
    assert_eq!(r["cgroup"], if deleg.v1 { "v1" } else { "v2" }, "{r}");
    assert_eq!(r["limits"]["none"], false, "{r}");
    assert_eq!(r["limits"]["memory"], 64u64 << 20, "{r}");
    assert!(string_list(&r["limits_hit"]).iter().any(|l| l == "memory"), "{r}");

    // Processes: the ninth is refused.
    let script = "n=0; for i in 1 2 3 4 5 6 7 8 9 10 11 12; do sleep 2 & n=$((n+1)); done 2>/dev/null; wait; echo $n";
    let o = run(&["run", "--json", "--pids-limit", "8", "--", "sh", "-c", script]);
    let r = report(&o);
    assert!(string_list(&r["limits_hit"]).iter().any(|l| l == "pids"), "{r}\n{}", o.describe());

    // While a world runs, its cgroup is below the delegation, with the
    // limits asked for; after it, nothing of cloche's is left there.
    let mut child = HostChild::spawn(
        deleg
            .cloche(&user, &proj, &["run", "--pids-limit", "50", "--", "sleep", "3"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null()),
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    let world = loop {
        let found = deleg
            .worlds()
            .into_iter()
            .next()
            .filter(|w| std::fs::read_to_string(w.join("cgroup.procs")).is_ok_and(|p| !p.trim().is_empty()));
        if let Some(w) = found {
            break w;
        }
        assert!(
            Instant::now() < deadline && child.alive(),
            "no world cgroup appeared under {}",
            deleg.dirs[0].display()
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let pids_dir = if deleg.v1 { deleg.dirs[1].join("cloche").join(world.file_name().unwrap()) } else { world.clone() };
    assert_eq!(std::fs::read_to_string(pids_dir.join("pids.max")).unwrap().trim(), "50");
    let st = child.0.wait().unwrap();
    assert!(st.success(), "{st:?}");
    let deadline = Instant::now() + Duration::from_secs(5);
    while deleg.dirs.iter().any(|d| d.join("cloche").exists()) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    for d in &deleg.dirs {
        assert!(!d.join("cloche").exists(), "cloche's cgroups left in {}", d.display());
    }
    drop(deleg);

    // A delegation that lacks a controller: refused with one line, run nothing.
    let partial = Delegation::new(&user, &format!("{name}-p"), &["memory", "pids"]);
    let o = run_cmd(&mut partial.cloche(&user, &proj, &["run", "--", "touch", "made"]), Duration::from_secs(60));
    o.expect_code(125);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(err.lines().count(), 1, "{}", o.describe());
    assert!(err.contains("delegated") && err.contains("--no-limits"), "{}", o.describe());
    if partial.v1 {
        assert!(err.contains("in the cpu hierarchies"), "{}", o.describe());
    }
    assert!(!proj.join("made").exists());
    drop(partial);
    drop(user);
    fx.finish();
}
