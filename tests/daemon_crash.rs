//! `cloched` killed with -9 (the daemon, one job, the spawner, the daemon
//! and its spawner at once) during a running batch: no process of it
//! outlives it, nothing of its worlds is left on the host (checked from
//! outside, as the world tests check), a request in flight gets an error,
//! and the batch ends `failed (interrupted)` in the broker and the audit
//! log (whose chain verifies), its world kept or swept as the policy's
//! `keep_interrupted` says. A second daemon on the same state refuses.
//!
//! Run as root after `cargo build --workspace`.

use crate::common;

use common::*;
use serde_json::{json, Value};
use std::path::Path;
use std::process::Child;
use std::time::{Duration, Instant};

fn batch_path(id: &str, what: &str) -> String {
    match what {
        "" => format!("/v1/batches/{id}"),
        w => format!("/v1/batches/{id}/{w}"),
    }
}

/// Processes whose whole command line is `cmd` (a world's command).
fn running(cmd: &str) -> Vec<i32> {
    processes_with(cmd).into_iter().filter(|(_, c)| c.trim() == cmd).map(|(p, _)| p).collect()
}

fn wait_for(what: &str, within: Duration, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !ok() {
        assert!(Instant::now() < deadline, "{what}: not within {within:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn kill(pid: i32, sig: i32) {
    // SAFETY: kill(2) with a pid and a signal.
    assert_eq!(unsafe { libc::kill(pid, sig) }, 0, "kill {pid}: {}", std::io::Error::last_os_error());
}

/// A batch whose second entry sleeps `secs` (a unique command line).
fn sleeping_batch(project: &Path, secs: &str) -> Value {
    json!({"project": project, "entries": [{"command": "echo one > one"}, {"command": format!("sleep {secs}")},
        {"command": "echo three > three"}]})
}

/// Submits (as `uid`) and approves (as root) a batch; returns its id.
fn submit_approved(d: &Daemon, uid: Option<u32>, batch: &Value) -> String {
    let id = d.post(uid, "/v1/batches", batch).expect(201)["id"].as_str().unwrap().to_string();
    d.curl(None, "POST", &batch_path(&id, "approve"), None).expect(200);
    id
}

/// The world of running batch `id`, once its command `cmd` runs.
fn world_of(fx: &Fixture, d: &Daemon, id: &str, cmd: &str) -> String {
    wait_for(&format!("`{cmd}` running"), Duration::from_secs(30), || !running(cmd).is_empty());
    let v = d.get(None, &batch_path(id, "")).expect(200).clone();
    let world = v["world"].as_str().unwrap_or_else(|| panic!("no world: {v}")).to_string();
    fx.note_world(&world);
    world
}

/// The answer of a request in flight: (status, body); status 0 when none came.
fn answer_of(client: (Child, std::thread::JoinHandle<()>)) -> (u16, String) {
    let out = client.0.wait_with_output().unwrap();
    client.1.join().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

/// The cgroups of world `id` on this host.
fn world_cgroups(id: &str) -> Vec<String> {
    ["memory", "pids", "cpu", "unified", ""]
        .iter()
        .map(|h| format!("/sys/fs/cgroup/{h}/cloche/{id}").replace("//", "/"))
        .filter(|p| Path::new(p).exists())
        .collect()
}

/// What is new on the host and this test's, but the state directory's
/// disk pool (its mount and loop device: state, not a world's) and the
/// processes of a daemon still running (`daemon`, then its children).
fn leaks_but_the_pool(fx: &Fixture, daemon: Option<&Daemon>) -> Vec<String> {
    let state = fx.state.path().display().to_string();
    let pool = format!(" {state}/worlds ");
    // A live daemon's own: its processes (the daemon, and everything in its
    // cgroup: the spawner and its jobs) and that cgroup with its parent.
    let mut live: Vec<String> = Vec::new();
    let mut own_cgroup = None;
    if let Some(d) = daemon {
        let cg = daemon_cgroup(&d.log_text());
        let procs = std::fs::read_to_string(format!("{cg}/cgroup.procs")).unwrap_or_default();
        let pids = procs.lines().filter_map(|l| l.trim().parse::<i32>().ok());
        let pid = d.pid() as i32;
        live = std::iter::once(pid).chain(children_of(pid)).chain(pids).map(|p| format!("process {p}:")).collect();
        own_cgroup = Some(cg);
    }
    let ours = |l: &String| {
        let pool_loop = l.starts_with("loop device:") && l.contains(&state);
        let daemon_process = live.iter().any(|p| l.starts_with(p.as_str()));
        let daemon_cgroup = own_cgroup.as_ref().is_some_and(|cg| {
            let parent = Path::new(cg).parent().map(|p| p.display().to_string()).unwrap_or_default();
            *l == format!("cgroup: {cg}") || *l == format!("cgroup: {parent}")
        });
        !(l.contains(&pool) || pool_loop || daemon_process || daemon_cgroup)
    };
    // What is exiting (its memory gone, its namespaces not yet) is
    // transient: a moment before judging, as `Fixture::finish` gives.
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let leaks: Vec<String> = fx.leaks().into_iter().filter(|l| ours(l)).collect();
        if leaks.is_empty() || Instant::now() >= deadline {
            return leaks;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The fields of the daemon's log lines whose message is `msg`.
fn log_lines(log: &str, msg: &str) -> Vec<Value> {
    json_lines(log.as_bytes())
        .unwrap_or_default()
        .into_iter()
        .filter(|l| l["fields"]["message"] == msg)
        .map(|l| l["fields"].clone())
        .collect()
}

/// The cgroup of the daemon's processes, as its log says.
fn daemon_cgroup(log: &str) -> String {
    let serving = log_lines(log, "cloched serving");
    let cg = serving[0]["cgroup"].as_str().unwrap_or_default().to_string();
    assert!(cg.contains("/cloched/state-"), "the daemon's cgroup: {serving:?}");
    cg
}

fn entry_states(v: &Value) -> Vec<String> {
    v["entries"].as_array().unwrap().iter().map(|e| e["state"].as_str().unwrap().to_string()).collect()
}

/// After the restart: the batch failed as interrupted (its first entry
/// done, the one cut short failed, the last never run), once in the audit
/// log, whose chain verifies.
fn check_failed_as_interrupted(fx: &Fixture, d: &Daemon, id: &str) {
    let v = d.get(None, &batch_path(id, "")).expect(200).clone();
    assert_eq!((v["state"].as_str(), v["reason"].as_str()), (Some("failed"), Some("interrupted")), "{v:#}");
    assert_eq!(entry_states(&v), ["succeeded", "failed", "skipped"], "{v:#}");
    let failed: Vec<Value> = audit_events(fx, "failed")
        .into_iter()
        .filter(|r| r["batch"] == id && r["details"]["reason"] == "interrupted")
        .collect();
    assert_eq!(failed.len(), 1, "{failed:#?}");
    let recovered = audit_events(fx, "crash_recovered");
    assert!(
        recovered.iter().any(|r| r["details"]["batches"].as_array().unwrap().contains(&json!(id))),
        "{recovered:#?}"
    );
    assert_eq!(d.get(Some(AGENT_B), "/v1/audit/verify").expect(200)["ok"], true);
}

/// `kill -9` of the daemon while a batch (an agent's: its world runs as
/// the agent) and a one-command world (another agent's) run, each with
/// its client waiting: every process of the daemon dies with it (the
/// spawner, both jobs, both worlds), the clients get no answer (never a
/// success), nothing of the worlds is left but the batch's, kept as
/// interrupted; a restart finds the batch failed as interrupted, and a
/// second daemon on the same state refuses to start.
#[test]
fn a_killed_daemon_leaves_nothing_running_and_its_batch_fails_as_interrupted() {
    let fx = Fixture::new();
    let proj = owned_dir(&fx, "a", AGENT_A);
    let other = owned_dir(&fx, "b", AGENT_B);
    let mut d = Daemon::start(&fx, None);
    let id = submit_approved(&d, Some(AGENT_A), &sleeping_batch(&proj, "37.1"));
    let run = d.curl_spawn(Some(AGENT_A), "POST", &format!("{}?wait=1", batch_path(&id, "run")), None);
    let one = serde_json::to_vec(&json!({"argv": ["sleep", "38.3"], "cwd": other})).unwrap();
    let one = d.curl_spawn(Some(AGENT_B), "POST", "/v1/run", Some(&one));
    let world = world_of(&fx, &d, &id, "sleep 37.1");
    wait_for("the one-command world", Duration::from_secs(30), || !running("sleep 38.3").is_empty());
    let family = living_descendants(d.pid() as i32);
    assert!(family.len() >= 5, "the spawner, two jobs, their worlds: {family:?}");

    kill(d.pid() as i32, libc::SIGKILL);
    let t0 = Instant::now();
    d.stop();
    wait_for("every process of the daemon gone", Duration::from_secs(15), || {
        family.iter().all(|(p, s)| !still_runs(*p, *s))
    });
    eprintln!("measured: every process of the killed daemon gone {:?} after the kill", t0.elapsed());
    // The requests in flight: no answer, never a success.
    for (what, client) in [("run?wait=1", run), ("POST /v1/run", one)] {
        let (status, body) = answer_of(client);
        assert_eq!(status, 0, "{what} got an answer from a daemon killed before its end: {status} {body}");
    }
    // Nothing of the worlds on the host; the batch's world kept (the
    // default policy keeps interrupted worlds), settled already.
    assert!(world_cgroups(&world).is_empty(), "{:?}", world_cgroups(&world));
    let leaks = leaks_but_the_pool(&fx, None);
    assert!(leaks.is_empty(), "left on the host after the kill:\n  {}", leaks.join("\n  "));
    assert_eq!(fx.worlds(), std::slice::from_ref(&world));
    let meta: Value =
        serde_json::from_slice(&std::fs::read(fx.worlds_dir().join(&world).join("world.json")).unwrap()).unwrap();
    assert_eq!(meta["state"], "interrupted", "{meta:#}");
    assert!(fx.worlds_dir().join(&world).join("kept").exists());
    let log = d.log_text();
    let cgroup = daemon_cgroup(&log);
    assert!(!Path::new(&cgroup).exists(), "the daemon's cgroup {cgroup} is left");
    let recovered = log_lines(&log, "recovered after a crash");
    assert!(
        recovered.iter().any(|r| r["by"] == "spawner" && r["batches"].as_str().unwrap_or("").contains(&id)),
        "the spawner logs what it recovered: {log}"
    );

    let d = Daemon::start(&fx, None);
    check_failed_as_interrupted(&fx, &d, &id);
    let w = d.get(Some(AGENT_A), &format!("/v1/worlds/{world}")).expect(200).clone();
    assert_eq!((w["state"].as_str(), w["owner"].as_str()), (Some("interrupted"), Some(format!("batch:{id}").as_str())));
    // One daemon per state directory, whatever its socket.
    let (mut second, _, log) = Daemon::spawn(&fx, None, "second.sock");
    let st = second.wait().unwrap();
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(!st.success() && text.contains("already serves the state directory"), "{st}: {text}");
    assert!(!fx.out.path().join("second.sock").exists());
    d.curl(None, "POST", &batch_path(&id, "discard"), None).expect(200);
    let cgroup = daemon_cgroup(&d.log_text());
    drop(d);
    assert!(!Path::new(&cgroup).exists(), "a stopped daemon leaves its cgroup {cgroup}");
    fx.finish();
}

/// `kill -9` of the job running a batch (its world runs as an agent): the
/// waiting client gets an error at once, and by then the batch is failed
/// as interrupted and its world swept (`keep_interrupted = false`), its
/// processes and cgroups gone; the daemon goes on serving.
#[test]
fn a_killed_job_fails_its_batch_at_once_and_its_world_goes() {
    let fx = Fixture::new();
    let proj = owned_dir(&fx, "a", AGENT_A);
    let file = fx.out.path().join("p.toml");
    std::fs::write(&file, policy_text(300, "").replace("keep_interrupted = true", "keep_interrupted = false")).unwrap();
    fx.cloche(&["policy", "set", "--project", proj.to_str().unwrap(), file.to_str().unwrap()]).expect_code(0);
    let d = Daemon::start(&fx, None);
    let id = submit_approved(&d, Some(AGENT_A), &sleeping_batch(&proj, "37.2"));
    let run = d.curl_spawn(Some(AGENT_A), "POST", &format!("{}?wait=1", batch_path(&id, "run")), None);
    let world = world_of(&fx, &d, &id, "sleep 37.2");
    let spawner = children_of(d.pid() as i32);
    assert_eq!(spawner.len(), 1, "{spawner:?}");
    let job = children_of(spawner[0]);
    assert_eq!(job.len(), 1, "one job: {job:?}");
    let sleeper = running("sleep 37.2");

    kill(job[0], libc::SIGKILL);
    let t0 = Instant::now();
    let (status, body) = answer_of(run);
    assert_eq!(status, 500, "{body}");
    assert!(body.contains("ended without an answer"), "{body}");
    assert!(t0.elapsed() < Duration::from_secs(20), "the error came at once: {:?}", t0.elapsed());
    let v = d.get(Some(AGENT_A), &batch_path(&id, "")).expect(200).clone();
    assert_eq!((v["state"].as_str(), v["reason"].as_str()), (Some("failed"), Some("interrupted")), "{v:#}");
    assert!(sleeper.iter().all(|p| !Path::new(&format!("/proc/{p}")).exists()), "the world's command survives");
    assert!(world_cgroups(&world).is_empty(), "{:?}", world_cgroups(&world));
    assert!(fx.worlds().is_empty(), "swept as the policy says: {:?}", fx.worlds());
    let leaks = leaks_but_the_pool(&fx, Some(&d));
    assert!(leaks.is_empty(), "left on the host:\n  {}", leaks.join("\n  "));
    let recovered = audit_events(&fx, "crash_recovered");
    assert!(recovered.iter().any(|r| r["details"]["by"] == "job"), "{recovered:#?}");
    check_failed_as_interrupted(&fx, &d, &id);
    // Still serving, worlds included.
    let r = d.post(None, "/v1/run", &json!({"argv": ["true"], "cwd": proj})).expect(200).clone();
    assert_eq!(r["exit_code"], 0, "{r}");
    drop(d);
    fx.finish();
}

/// `kill -9` of the spawner: its job goes on (another spawner is started
/// at once). Then the daemon and that spawner are killed together (the
/// spawner stopped first, so that nothing of the daemon is left to act):
/// the job and its world are orphans until the next daemon, which waits
/// for them, kills them, recovers the batch and logs it.
#[test]
fn the_next_daemon_ends_what_a_daemon_and_its_spawner_killed_together_left() {
    let fx = Fixture::new();
    let proj = owned_dir(&fx, "a", AGENT_A);
    let mut d = Daemon::start(&fx, None);
    let id = submit_approved(&d, Some(AGENT_A), &sleeping_batch(&proj, "37.3"));
    d.curl(Some(AGENT_A), "POST", &batch_path(&id, "run"), None).expect(202);
    let world = world_of(&fx, &d, &id, "sleep 37.3");
    let first = children_of(d.pid() as i32);
    assert_eq!(first.len(), 1, "{first:?}");
    let family = living_descendants(d.pid() as i32);

    kill(first[0], libc::SIGKILL);
    wait_for("another spawner", Duration::from_secs(10), || children_of(d.pid() as i32).iter().any(|p| *p != first[0]));
    let spawner = children_of(d.pid() as i32).into_iter().find(|p| *p != first[0]).unwrap();
    let gone: Vec<_> = family.iter().filter(|(p, s)| *p != first[0] && !still_runs(*p, *s)).collect();
    assert!(gone.is_empty(), "the job goes on, but {gone:?} of {family:?} ended");
    assert_eq!(d.get(None, &batch_path(&id, "")).expect(200)["state"], "running");

    kill(spawner, libc::SIGSTOP);
    kill(d.pid() as i32, libc::SIGKILL);
    kill(spawner, libc::SIGKILL);
    d.stop();
    std::thread::sleep(Duration::from_millis(300));
    assert!(!running("sleep 37.3").is_empty(), "nothing of the daemon was left to end the world");

    let d = Daemon::start(&fx, None);
    wait_for("the orphans gone", Duration::from_secs(5), || family.iter().all(|(p, s)| !still_runs(*p, *s)));
    assert!(running("sleep 37.3").is_empty());
    assert!(world_cgroups(&world).is_empty(), "{:?}: {}", world_cgroups(&world), d.log_text());
    check_failed_as_interrupted(&fx, &d, &id);
    let recovered = log_lines(&d.log_text(), "recovered after a crash");
    let r = recovered.iter().find(|r| r["by"] == "cloched").unwrap_or_else(|| panic!("{}", d.log_text()));
    assert!(r["batches"].as_str().unwrap().contains(&id) && r["processes_killed"].as_u64() >= Some(1), "{r}");
    assert!(r["worlds_kept"].as_str().unwrap().contains(&world), "{r}");
    d.curl(None, "POST", &batch_path(&id, "discard"), None).expect(200);
    drop(d);
    fx.finish();
}

/// The descendants of `pid` that run: a zombie (a world's user namespace
/// helper that exited, reaped when its world ends) has ended already.
fn living_descendants(pid: i32) -> Vec<(i32, u64)> {
    descendants(pid).into_iter().filter(|(p, s)| still_runs(*p, *s)).collect()
}
