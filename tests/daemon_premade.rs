//! `cloched`'s pre-made worlds (`[premade]`): a run of a shape served
//! before is served by a world made ahead, with the same answer as a world
//! made on the spot, sharing nothing with the run before; never for
//! another uid; nothing left when the daemon stops.
//!
//! Run as root after `cargo build --workspace`.

use crate::common;

use common::*;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

const PREMADE: &str = "[premade]\nworlds = 2\nidle_secs = 120\n";

/// The world ids of the standbys the daemon made, from its log.
fn standbys(d: &Daemon) -> Vec<String> {
    d.log_text()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["fields"]["message"] == "a pre-made world is ready")
        .filter_map(|v| v["fields"]["world"].as_str().map(str::to_string))
        .collect()
}

/// Waits until the daemon has made `n` standbys in all.
fn wait_standbys(d: &Daemon, n: usize) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while standbys(d).len() < n {
        assert!(Instant::now() < deadline, "no pre-made world within 30 s: {}", d.log_text());
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// What the world says of itself: its namespaces and whether a file of
/// an earlier run is there.
const LOOK: &str = "readlink /proc/self/ns/pid /proc/self/ns/net /proc/self/ns/mnt; id -u; \
                    test -e left-by-run && echo SEEN; echo x > left-by-run; echo err >&2; exit 3";

#[test]
fn a_second_run_of_a_shape_takes_a_premade_world_that_shares_nothing_with_the_first() {
    let fx = Fixture::new();
    let proj = owned_dir(&fx, "p", AGENT_A);
    let mut d = Daemon::start(&fx, Some(PREMADE));
    let body = json!({"argv": ["sh", "-c", LOOK], "cwd": proj, "env": {"WHO": "one"}});

    let first = d.post(Some(AGENT_A), "/v1/run", &body).expect(200).clone();
    assert_eq!(first["premade"], false, "{first}");
    assert_eq!(first["exit_code"], 3, "{first}");
    wait_standbys(&d, 1);

    // Another command, env and timeout: the same shape.
    let body2 = json!({"argv": ["sh", "-c", format!("echo $WHO; {LOOK}")], "cwd": proj,
        "env": {"WHO": "two"}, "timeout": 30});
    let second = d.post(Some(AGENT_A), "/v1/run", &body2).expect(200).clone();
    assert_eq!(second["premade"], true, "the second run of a shape is served by a pre-made world: {second}");
    assert_eq!(second["exit_code"], 3, "{second}");
    assert_eq!(second["report"]["exit_code"], 3, "{second}");
    assert_eq!(second["stderr"], "err\n", "{second}");
    assert_eq!(second["report"]["limits"]["timeout_secs"], 30.0, "{second}");
    let out: Vec<&str> = second["stdout"].as_str().unwrap().lines().collect();
    let one: Vec<&str> = first["stdout"].as_str().unwrap().lines().collect();
    assert_eq!(out[0], "two", "the run's own env: {second}");
    assert_eq!(out[4], AGENT_A.to_string(), "runs as the caller: {second}");
    assert!(!out.contains(&"SEEN"), "a file of the first run is visible in the second: {second}");
    // Its own namespaces: the first world is gone by now, so the kernel may
    // give a new namespace the inode number one of the first's had; the
    // file it left (above) and the world ids (below) tell the worlds apart.
    for (i, ns) in ["pid", "net", "mnt"].iter().enumerate() {
        assert!(out[1 + i].starts_with(ns) && one[i].starts_with(ns), "{first} {second}");
    }
    assert_ne!(first["report"]["world"], second["report"]["world"]);
    assert!(standbys(&d).contains(&second["report"]["world"].as_str().unwrap().to_string()));
    let paths: Vec<&str> =
        second["report"]["fs_diff"]["added"].as_array().unwrap().iter().filter_map(|e| e["path"].as_str()).collect();
    assert!(paths.iter().any(|p| p.ends_with("left-by-run")), "the run's own fs_diff: {second}");

    // Another uid with the same body: never a world made for the first.
    wait_standbys(&d, 2);
    let b = d.post(Some(AGENT_B), "/v1/run", &body).expect(200).clone();
    assert_eq!(b["premade"], false, "a world made for uid {AGENT_A} served uid {AGENT_B}: {b}");
    assert_eq!(b["stdout"].as_str().unwrap().lines().nth(3), Some(AGENT_B.to_string().as_str()), "{b}");

    // A streamed run takes one too, and says so in its result.
    let a = d.curl(Some(AGENT_A), "POST", "/v1/run?stream=true", Some(&serde_json::to_vec(&body).unwrap()));
    assert_eq!(a.status, 200, "{}", a.text);
    let result = a.text.split("event: result\ndata: ").nth(1).expect("a result frame").lines().next().unwrap();
    let result: Value = serde_json::from_str(result).unwrap();
    assert_eq!((result["premade"].as_bool(), result["exit_code"].as_i64()), (Some(true), Some(3)), "{result}");

    let made = standbys(&d);
    d.stop();
    for w in &made {
        fx.track_world(w);
    }
    fx.finish();
}

/// A standby's masks were decided when it was made: a secret created in the
/// project since (a `.npmrc`, masked under the cwd) makes the run decline
/// it, and the world made on the spot masks the secret. (Before the check,
/// the standby served the run and showed the secret.)
#[test]
fn a_premade_world_is_declined_when_the_host_changed_since_it_was_made() {
    let fx = Fixture::new();
    let proj = owned_dir(&fx, "p", AGENT_A);
    let mut d = Daemon::start(&fx, Some(PREMADE));
    let body = json!({"argv": ["sh", "-c", "cat .npmrc 2>&1; true"], "cwd": proj});
    let first = d.post(Some(AGENT_A), "/v1/run", &body).expect(200).clone();
    assert_eq!(first["premade"], false, "{first}");
    wait_standbys(&d, 1);

    std::fs::write(proj.join(".npmrc"), "//registry/:_authToken=SECRET-42\n").unwrap();
    let second = d.post(Some(AGENT_A), "/v1/run", &body).expect(200).clone();
    assert!(!second["stdout"].as_str().unwrap().contains("SECRET-42"), "a secret made after the standby: {second}");
    assert_eq!(second["premade"], false, "served by a world made before the secret: {second}");
    assert!(d.log_text().contains("mount plan differs"), "the standby says why it declined: {}", d.log_text());

    let made = standbys(&d);
    d.stop();
    for w in &made {
        fx.track_world(w);
    }
    fx.finish();
}
