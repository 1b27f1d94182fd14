//! `cloche mcp` end to end with a real MCP client nobody here wrote: the
//! official Python SDK (`mcp`, pinned, installed by .ci/setup into
//! target/mcp-venv) runs tests/mcp/client.py, which starts `cloche mcp`
//! over stdio, lists the tools, runs a command that writes a file (the
//! host unchanged, the diff naming it), is refused a denied one with its
//! reason, gets MCP errors for malformed arguments and goes on, submits a
//! batch held for review and waits while a reviewer approves it through
//! the CLI from another process, receives the entry's output as progress,
//! reads the diff and requests the commit. Real daemon, real worlds.

use crate::common;

use common::*;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// The client's Python (a venv of .ci/setup's).
fn python() -> PathBuf {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/mcp-venv/bin/python");
    assert!(p.is_file(), "{} is missing: run `bash .ci/setup` (it installs the MCP Python SDK)", p.display());
    p
}

fn client_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/mcp/client.py")
}

fn client(fx: &Fixture, args: &[&str]) -> Outcome {
    let mut c = Command::new(python());
    c.arg(client_script()).args(args).env("CLOCHE_STATE_DIR", fx.state.path()).env_remove("CLOCHE_SOCKET");
    run_cmd(&mut c, Duration::from_secs(120))
}

#[test]
fn an_agent_runs_is_refused_waits_for_a_reviewer_and_asks_for_a_commit() {
    let fx = Fixture::new();
    let proj = owned_dir(&fx, "proj", AGENT_A);
    bind_review_policy(&fx, &proj);
    let mut d = Daemon::start(&fx, None);
    let cloche = cloche_bin();
    let uid = AGENT_A.to_string();
    let o =
        client(&fx, &["daemon", cloche.to_str().unwrap(), proj.to_str().unwrap(), d.socket.to_str().unwrap(), &uid]);
    assert_eq!(o.code, Some(0), "the MCP client failed:\n{}\ncloched:\n{}", o.describe(), d.log_text());
    let summary: serde_json::Value =
        serde_json::from_str(String::from_utf8_lossy(&o.stdout).lines().last().unwrap_or("")).unwrap();
    let batch = summary["batch"].as_str().unwrap();
    // The host is as it was; the request is in the audit log, by the agent.
    assert!(!proj.join("note.txt").exists() && !proj.join("b.txt").exists());
    let asked = audit_events(&fx, "commit_requested");
    assert!(
        asked.iter().any(|r| r["batch"] == batch && r["actor"] == format!("uid:{AGENT_A}")),
        "no commit_requested record for {batch}: {asked:?}"
    );
    // The session's world was offered (by the agent) and discarded by it.
    let world = summary["session_world"].as_str().unwrap();
    assert!(
        asked.iter().any(|r| r["details"]["world"] == world && r["actor"] == format!("uid:{AGENT_A}")),
        "no commit_requested record for the session's world {world}: {asked:?}"
    );
    assert!(!fx.worlds().iter().any(|w| w == world), "the session's world {world} is still kept");
    d.stop();
    discard_kept(&fx);
    fx.finish();
}

/// Root without a daemon: `cloche mcp` starts a private `cloched` on a
/// socket of its own for the session and ends it (and its directory)
/// when the client closes stdin. Its batches are the session's agent's, so
/// root reviews them (fails on 3f3228b: root was their submitter).
#[test]
fn without_a_daemon_root_gets_a_private_one_for_the_session() {
    let fx = Fixture::new();
    let proj = fx.dir().to_path_buf();
    bind_review_policy(&fx, &proj);
    assert!(
        std::os::unix::net::UnixStream::connect("/run/cloche/cloche.sock").is_err(),
        "a daemon answers at /run/cloche/cloche.sock: this test needs none there"
    );
    let cloche = cloche_bin();
    let o = client(&fx, &["private", cloche.to_str().unwrap(), proj.to_str().unwrap()]);
    assert_eq!(o.code, Some(0), "the MCP client failed:\n{}", o.describe());
    let err = String::from_utf8_lossy(&o.stderr);
    let line = err.lines().find(|l| l.contains("a private cloched")).unwrap_or_else(|| panic!("{}", o.describe()));
    let socket = line.split(" at ").nth(1).and_then(|s| s.split_whitespace().next()).unwrap();
    let pid: i32 = line.split("(pid ").nth(1).and_then(|s| s.split(')').next()).unwrap().parse().unwrap();
    let socket = Path::new(socket);
    assert!(!socket.exists() && !socket.parent().unwrap().exists(), "{} left behind", socket.display());
    assert!(!Path::new(&format!("/proc/{pid}")).exists(), "the private cloched (pid {pid}) outlived the session");
    // Root reviewed root's agent: the batch ran, and it is the agent's.
    let summary: serde_json::Value =
        serde_json::from_str(String::from_utf8_lossy(&o.stdout).lines().last().unwrap_or("")).unwrap();
    let batch = summary["batch"].as_str().unwrap();
    let shown = fx.cloche(&["--no-daemon", "batch", "show", batch, "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&shown.stdout).unwrap_or_else(|_| panic!("{}", shown.describe()));
    assert_eq!(v["submitter"], "agent:mcp", "{v}");
    assert!(!proj.join("r.txt").exists(), "the host changed");
    discard_kept(&fx);
    fx.finish();
}
