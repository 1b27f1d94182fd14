//! Batches: several entries in one world (real kernel, as root).

use cloche_world::batch::{Entry, Io, OutStream, World};
use cloche_world::cgroup::Limits;
use cloche_world::seccomp::{Profile, Program};
use cloche_world::spec::{build_env, Spec};
use cloche_world::StateDir;
use std::ffi::OsString;
use std::path::Path;
use std::time::{Duration, Instant};

fn spec(cwd: &Path) -> Spec {
    Spec {
        argv: vec![],
        env: build_env(std::env::vars_os(), &[]),
        cwd: cwd.to_path_buf(),
        limits: Limits { memory: 512 << 20, pids: 256, cpus: 1.0 },
        timeout: None,
        upper: Default::default(), // on disk: the state dir's pool
        upper_size: 256 << 20,
        hostname: "cloche".into(),
        nofile: 1024,
        mask: vec!["/etc/shadow".into()],
        mask_homes: true,
        home_secrets: vec![".ssh".into()],
        toolchains: Default::default(),
        path_note: None,
        expose: vec![],
        seccomp: Program::compile(&Profile::builtin_default().unwrap()).unwrap(),
        keep: false,
        keep_interrupted: false,
        owner: None,
        net: None,
        require: vec![],
        hash: true,
        unread: false,
        terminal: Default::default(),
        user: None,
        // The host's reserved ids (.ci/setup makes them): a user namespace.
        userns: Some(cloche_world::userns::IdRange::from_system().expect("ids reserved for worlds")),
        rootless: None,
        no_limits: false,
        delegated: None,
    }
}

fn entry(cwd: &Path, script: &str, timeout: Option<Duration>) -> Entry {
    Entry {
        argv: vec!["/bin/sh".into(), "-c".into(), OsString::from(script)],
        env: build_env(std::env::vars_os(), &[]),
        cwd: cwd.to_path_buf(),
        timeout,
    }
}

fn paths(d: &cloche_world::diff::FsDiff) -> Vec<String> {
    d.added.iter().chain(&d.modified).chain(&d.deleted).map(|e| e.path.to_string_lossy()).collect()
}

/// Serializes with the other real-world tests of the suite.
fn lock() -> std::fs::File {
    let f =
        std::fs::OpenOptions::new().create(true).truncate(false).write(true).open("/tmp/cloche-tests.lock").unwrap();
    // SAFETY: flock on an fd we own.
    unsafe { libc::flock(std::os::fd::AsRawFd::as_raw_fd(&f), libc::LOCK_EX) };
    f
}

/// One test's host side: the suite lock, a project dir, a state dir, a spec.
struct Fixture {
    proj: tempfile::TempDir,
    _state_dir: tempfile::TempDir,
    state: StateDir,
    spec: Spec,
    _lock: std::fs::File,
}

impl Fixture {
    fn new() -> Fixture {
        let lock = lock();
        let proj = tempfile::tempdir_in("/tmp").unwrap();
        let state_dir = tempfile::tempdir_in("/tmp").unwrap();
        let state = StateDir::open(state_dir.path()).unwrap();
        let spec = spec(proj.path());
        Fixture { proj, _state_dir: state_dir, state, spec, _lock: lock }
    }
}

impl Drop for Fixture {
    /// The state dir's disk pool (mounted on `worlds/`) goes with it: its
    /// loop device and image follow the mount.
    fn drop(&mut self) {
        let worlds = std::ffi::CString::new(self.state.worlds_dir().into_os_string().into_encoded_bytes()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        unsafe { libc::umount2(worlds.as_ptr(), libc::MNT_DETACH) };
    }
}

fn no_cgroup_left(id: &str) {
    for c in ["memory", "pids", "cpu"] {
        assert!(!Path::new(&format!("/sys/fs/cgroup/{c}/cloche/{id}")).exists(), "{c} cgroup of {id} left");
    }
}

#[test]
fn entries_share_one_world_and_each_has_its_status_and_output() {
    let f = Fixture::new();
    let proj = &f.proj;
    let mut w = World::start(&f.spec, &f.state).unwrap();
    let id = w.id().to_string();
    let cap = Io::Capture { cap: 1000 };
    let a = w.run_entry(&entry(proj.path(), "echo one > f; echo out; echo err >&2", None), cap).unwrap();
    assert_eq!((a.exit_code, a.stdout.as_slice(), a.stderr.as_slice()), (0, &b"out\n"[..], &b"err\n"[..]));
    assert!(paths(&a.fs_diff).iter().any(|p| p.ends_with("/f")), "{:?}", paths(&a.fs_diff));
    // The second entry sees the first one's file; the host does not.
    let b = w.run_entry(&entry(proj.path(), "cat f; echo two >> f; exit 3", None), cap).unwrap();
    assert_eq!((b.exit_code, b.stdout.as_slice()), (3, &b"one\n"[..]));
    // Its own change: f modified (it was added by the first entry).
    assert_eq!(paths(&b.fs_delta), paths(&a.fs_delta), "b changed exactly what a had added");
    assert_eq!((b.fs_delta.added.len(), b.fs_delta.modified.len()), (0, 1), "{:?}", paths(&b.fs_delta));
    assert!(!proj.path().join("f").exists());
    // Output past the cap is counted, not kept; the live view gets all of
    // it, each stream in order.
    let mut seen: Vec<(OutStream, Vec<u8>)> = Vec::new();
    let script = "head -c 100000 /dev/zero; echo late >&2";
    let c = w.run_entry_live(&entry(proj.path(), script, None), cap, &mut |s, b| seen.push((s, b.to_vec()))).unwrap();
    assert_eq!((c.stdout.len(), c.stdout_total), (1000, 100000));
    let live =
        |want: OutStream| -> Vec<u8> { seen.iter().filter(|(s, _)| *s == want).flat_map(|(_, b)| b.clone()).collect() };
    assert_eq!(live(OutStream::Stdout), vec![0u8; 100000]);
    assert_eq!(live(OutStream::Stderr), b"late\n");
    // A missing command and a missing cwd.
    let d = w.run_entry(&entry(proj.path(), "exec cloche-no-such-command", None), cap).unwrap();
    assert_eq!(d.exit_code, 127);
    let mut e = entry(proj.path(), "true", None);
    e.cwd = "/nonexistent-cwd".into();
    assert_eq!(w.run_entry(&e, cap).unwrap().exit_code, 125);
    // Its stdio are pipes of the world's own, not a host inode (not even
    // /dev/null's); and the init's own, which no entry can open, likewise.
    let g = w.run_entry(&entry(proj.path(), "readlink /proc/self/fd/0 /proc/self/fd/1 /proc/self/fd/2", None), cap);
    let g = String::from_utf8(g.unwrap().stdout).unwrap();
    assert_eq!(g.lines().filter(|l| l.starts_with("pipe:")).count(), 3, "{g}");
    let out = w.finish().unwrap();
    let f = out.fs_diff.added.iter().find(|e| e.path.to_string_lossy().ends_with("/f")).expect("f in the final diff");
    assert_eq!(f.size, Some(8));
    no_cgroup_left(&id);
}

#[test]
fn what_an_entry_leaves_running_is_killed_and_a_timeout_kills_only_that_entry() {
    let f = Fixture::new();
    let proj = &f.proj;
    let mut w = World::start(&f.spec, &f.state).unwrap();
    let id = w.id().to_string();
    let cap = Io::Capture { cap: 4096 };
    let a = w.run_entry(&entry(proj.path(), "sleep 60 >/dev/null 2>&1 & echo started", None), cap).unwrap();
    assert_eq!(a.exit_code, 0);
    // The sleep it left behind is gone in the next entry.
    let b = w.run_entry(&entry(proj.path(), "cat /proc/[0-9]*/comm", None), cap).unwrap();
    let comms = String::from_utf8_lossy(&b.stdout).to_string();
    assert!(comms.contains("cloche-init") && !comms.contains("sleep"), "{comms}");
    let t = Instant::now();
    let c = w.run_entry(&entry(proj.path(), "sleep 30", Some(Duration::from_millis(300))), cap).unwrap();
    assert!(c.timed_out && c.exit_code == 124, "{c:?}");
    assert!(t.elapsed() < Duration::from_secs(3), "timeout took {:?}", t.elapsed());
    assert_eq!(c.limits_hit, vec!["timeout".to_string()]);
    let d = w.run_entry(&entry(proj.path(), "echo still here", None), cap).unwrap();
    assert_eq!(d.stdout, b"still here\n");
    w.finish().unwrap();
    no_cgroup_left(&id);
}

#[test]
fn cancel_kills_the_running_entry_at_once() {
    let f = Fixture::new();
    let proj = &f.proj;
    let mut w = World::start(&f.spec, &f.state).unwrap();
    let id = w.id().to_string();
    let canceller = w.canceller().unwrap();
    let t = Instant::now();
    let killer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        canceller.cancel().unwrap();
    });
    let a = w.run_entry(&entry(proj.path(), "sleep 600", None), Io::Capture { cap: 100 }).unwrap();
    killer.join().unwrap();
    assert!(t.elapsed() < Duration::from_secs(2), "cancel took {:?}", t.elapsed());
    assert_eq!(a.exit_code, 137);
    assert!(
        w.run_entry(&entry(proj.path(), "true", None), Io::Capture { cap: 100 }).is_err(),
        "a cancelled world runs nothing"
    );
    w.finish().unwrap();
    no_cgroup_left(&id);
}
