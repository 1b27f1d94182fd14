//! `cloched` end to end: a real daemon on a temporary socket, real clients
//! (`curl --unix-socket`, Python's http.client and raw sockets over
//! AF_UNIX) running as different uids, real worlds.
//!
//! Run as root after `cargo build --workspace` (cloched is built next to
//! cloche).

use crate::common;

use common::*;
use serde_json::{json, Value};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

fn batch(project: &Path, cmd: &str) -> Value {
    json!({"project": project, "entries": [{"command": cmd}]})
}

fn path(id: &str, what: &str) -> String {
    match what {
        "" => format!("/v1/batches/{id}"),
        w => format!("/v1/batches/{id}/{w}"),
    }
}

fn owner(p: &Path) -> u32 {
    std::fs::symlink_metadata(p).unwrap_or_else(|e| panic!("{}: {e}", p.display())).uid()
}

/// The daemon's whole path for two agents and a reviewer: an agent submits;
/// another agent can neither see, list, run nor cancel it; the agent may not
/// approve; a reviewer approves; the agent runs it (its world runs as the
/// agent); the reviewer commits and the files are the agent's; every step's
/// actor is in the audit log, whose chain verifies.
#[test]
fn an_agent_submits_a_reviewer_approves_the_agent_runs_and_the_files_are_its() {
    let fx = Fixture::new();
    let proj = owned_dir(&fx, "a", AGENT_A);
    let d = Daemon::start(&fx, None);
    assert_eq!(d.get(Some(AGENT_A), "/v1/whoami").expect(200)["roles"], json!(["agent"]));
    assert_eq!(d.get(Some(AGENT_A), "/v1/whoami").expect(200)["uid"], AGENT_A);
    assert_eq!(d.get(None, "/v1/whoami").expect(200)["roles"], json!(["admin", "reviewer", "agent"]));

    // A file of root's the agent may not read, in its own directory: its
    // world may delete it (the directory is the agent's), and the diff must
    // not show the agent what it held.
    let secret = proj.join("secret");
    std::fs::write(&secret, "TOPSECRET-daemon-test\n").unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    let script = "id -u > who; id -g >> who; mkdir sub; echo x > sub/y; rm -f secret";
    let v = d.post(Some(AGENT_A), "/v1/batches", &batch(&proj, script)).expect(201).clone();
    let id = v["id"].as_str().expect("the batch's id").to_string();
    assert_eq!(v["submitter"], format!("uid:{AGENT_A}"));
    assert_eq!((v["state"].as_str(), v["decision"].as_str()), (Some("pending"), Some("review")), "{v}");

    // Another agent: as if the batch did not exist.
    for (method, what) in [("GET", ""), ("POST", "cancel"), ("POST", "run"), ("GET", "diff"), ("GET", "trace")] {
        let a = d.curl(Some(AGENT_B), method, &path(&id, what), None);
        assert_eq!(a.status, 404, "{method} {what} by another agent: {}", a.text);
        assert!(a.json["error"].is_string(), "{}", a.text);
    }
    let theirs = d.get(Some(AGENT_B), "/v1/batches").expect(200).clone();
    assert_eq!(theirs["batches"], json!([]), "another agent lists nothing");
    assert_eq!(d.get(Some(AGENT_A), "/v1/batches").expect(200)["batches"][0]["id"], id.as_str());

    // The agent may not approve, commit or discard: 403, nothing changed.
    for what in ["approve", "commit", "discard", "reject"] {
        let a = d.curl(Some(AGENT_A), "POST", &path(&id, what), None);
        assert_eq!(a.status, 403, "{what} by the agent: {}", a.text);
    }
    assert_eq!(d.get(Some(AGENT_A), &path(&id, "")).expect(200)["state"], "pending");

    let v = d.curl(None, "POST", &path(&id, "approve"), None).expect(200).clone();
    assert_eq!((v["state"].as_str(), v["approved_by"].as_str()), (Some("approved"), Some("uid:0")), "{v}");

    let v = d.curl(Some(AGENT_A), "POST", &format!("{}?wait=true", path(&id, "run")), None).expect(200).clone();
    assert_eq!(v["state"], "completed", "{v}");
    assert_eq!(v["entries"][0]["exit_code"], 0, "{v}");

    let diff = d.get(Some(AGENT_A), &path(&id, "diff")).expect(200).clone();
    let added: Vec<&str> = diff["added"].as_array().unwrap().iter().filter_map(|e| e["path"].as_str()).collect();
    assert!(added.iter().any(|p| p.ends_with("/a/who")), "{diff}");

    let full = d.get(Some(AGENT_A), &format!("{}?format=full", path(&id, "diff")));
    assert_eq!(full.status, 200, "{}", full.text);
    assert!(full.text.contains("/a/secret") && !full.text.contains("TOPSECRET"), "{}", full.text);
    let full = d.get(None, &format!("{}?format=full", path(&id, "diff")));
    assert!(full.text.contains("TOPSECRET"), "a reviewer that is root sees the host's version: {}", full.text);

    let c = d.curl(None, "POST", &path(&id, "commit"), None).expect(200).clone();
    assert_eq!(c["status"], "applied", "{c}");
    // The world ran as the agent, and what was committed is the agent's.
    assert_eq!(std::fs::read_to_string(proj.join("who")).unwrap(), format!("{AGENT_A}\n{AGENT_A}\n"));
    for p in ["who", "sub", "sub/y"] {
        assert_eq!(owner(&proj.join(p)), AGENT_A, "{p} is owned by the agent");
    }
    assert!(!secret.exists());

    let actor = |event: &str| audit_events(&fx, event).iter().map(|r| r["actor"].clone()).collect::<Vec<_>>();
    assert_eq!(actor("submitted"), [json!(format!("uid:{AGENT_A}"))]);
    assert_eq!(actor("approved"), [json!("uid:0")]);
    assert!(actor("committed").contains(&json!("uid:0")), "{:?}", actor("committed"));
    let verify = d.get(Some(AGENT_B), "/v1/audit/verify").expect(200).clone();
    assert_eq!(verify["ok"], true, "{verify}");

    d.curl(None, "POST", &path(&id, "discard"), None).expect(200);
    drop(d);
    fx.finish();
}

/// Whatever its roles, an agent never approves its own review-level
/// batch; the socket takes the configured mode and group, and a user
/// outside the group cannot even connect.
#[test]
fn an_agent_with_the_reviewer_role_cannot_approve_its_own_batch() {
    let fx = Fixture::new();
    let proj = owned_dir(&fx, "a", AGENT_A);
    let config = format!(
        "[socket]\nmode = \"0660\"\ngroup = \"{AGENT_A}\"\n[roles]\nadmin = [\"uid:0\"]\nreviewer = [\"uid:{AGENT_A}\"]\n"
    );
    let d = Daemon::start(&fx, Some(&config));
    let md = std::fs::metadata(&d.socket).unwrap();
    assert_eq!((md.permissions().mode() & 0o777, md.gid()), (0o660, AGENT_A));
    assert_eq!(d.get(Some(AGENT_A), "/v1/whoami").expect(200)["roles"], json!(["reviewer", "agent"]));
    let refused = std::os::unix::net::UnixStream::connect(&d.socket).map(|_| ());
    assert!(refused.is_ok(), "root connects");
    let b = d.curl(Some(AGENT_B), "GET", "/v1/whoami", None);
    assert_eq!(b.status, 0, "a user outside the socket's group cannot connect: {}", b.text);

    let v = d.post(Some(AGENT_A), "/v1/batches", &batch(&proj, "echo x > f")).expect(201).clone();
    let id = v["id"].as_str().unwrap();
    assert_eq!(v["decision"], "review");
    let a = d.curl(Some(AGENT_A), "POST", &path(id, "approve"), None);
    assert_eq!(a.status, 403, "{}", a.text);
    assert!(a.json["error"].as_str().unwrap().contains("needs another approver"), "{}", a.text);
    assert_eq!(d.get(Some(AGENT_A), &path(id, "")).expect(200)["state"], "pending");
    assert!(audit_events(&fx, "approved").is_empty());
    d.curl(None, "POST", &path(id, "approve"), None).expect(200);
    drop(d);
    fx.finish();
}

/// A world for a caller is the caller's: it runs as the caller (it cannot
/// write where the caller cannot), a cwd or a project the caller could not
/// read is refused before anything is recorded, and a commit of a path
/// the caller may no longer write is refused whole, nothing written.
#[test]
fn worlds_and_commits_of_a_caller_are_limited_to_what_it_may_do() {
    let fx = Fixture::new();
    let proj = owned_dir(&fx, "a", AGENT_A);
    let sub = proj.join("sub");
    std::fs::create_dir(&sub).unwrap();
    std::os::unix::fs::chown(&sub, Some(AGENT_A), Some(AGENT_A)).unwrap();
    let private = fx.mkdir("private");
    std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o700)).unwrap();
    let d = Daemon::start(&fx, None);

    // POST /v1/run: the world runs as the caller.
    let run = json!({"argv": ["sh", "-c", "id -u; echo x > mine; echo y > /etc/cloche-daemon-test || echo refused >&2"],
        "cwd": proj});
    let r = d.post(Some(AGENT_A), "/v1/run", &run).expect(200).clone();
    assert_eq!(r["stdout"], format!("{AGENT_A}\n"), "{r}");
    assert!(r["stderr"].as_str().unwrap().contains("refused"), "{r}");
    assert_eq!(r["exit_code"], 0);
    let added: Vec<&str> =
        r["report"]["fs_diff"]["added"].as_array().unwrap().iter().filter_map(|e| e["path"].as_str()).collect();
    assert!(added.iter().any(|p| p.ends_with("/a/mine")) && !added.iter().any(|p| p.starts_with("/etc")), "{added:?}");
    assert!(!proj.join("mine").exists(), "a run's world is discarded");
    // ... and as root (the daemon's own caller), it runs as root.
    let r = d.post(None, "/v1/run", &json!({"argv": ["id", "-u"], "cwd": proj})).expect(200).clone();
    assert_eq!(r["stdout"], "0\n", "{r}");

    // A cwd, an exposure, a project the caller could not read: 403, nothing recorded.
    let a = d.post(Some(AGENT_A), "/v1/run", &json!({"argv": ["true"], "cwd": private}));
    assert_eq!(a.status, 403, "{}", a.text);
    let a = d.post(Some(AGENT_A), "/v1/run", &json!({"argv": ["true"], "cwd": proj, "expose": [private]}));
    assert_eq!(a.status, 403, "{}", a.text);
    let missing = fx.dir().join("private/nothing-here");
    for p in [&private, &missing] {
        let a = d.post(Some(AGENT_A), "/v1/batches", &batch(p, "true"));
        assert_eq!(a.status, 403, "{}: {}", p.display(), a.text);
    }
    assert!(a_batch_list(&d).is_empty(), "a refused submission records nothing");
    assert!(audit_events(&fx, "submitted").is_empty());

    // A batch writes in sub/ and at the top; the host then takes sub/ away
    // from the agent: the commit is refused whole.
    let v = d.post(Some(AGENT_A), "/v1/batches", &batch(&proj, "echo x > sub/f; echo y > top")).expect(201).clone();
    let id = v["id"].as_str().unwrap();
    d.curl(None, "POST", &path(id, "approve"), None).expect(200);
    d.curl(Some(AGENT_A), "POST", &format!("{}?wait=true", path(id, "run")), None).expect(200);
    std::os::unix::fs::chown(&sub, Some(0), Some(0)).unwrap();
    let before = tree_snapshot(&proj);
    let a = d.curl(None, "POST", &path(id, "commit"), None);
    assert_eq!(a.status, 403, "{}", a.text);
    let refused = a.json["refused"].as_array().unwrap();
    assert!(
        refused.iter().any(|i| i["path"].as_str().unwrap().ends_with("/sub/f")
            && i["why"].as_str().unwrap().contains(&format!("uid {AGENT_A} may not write"))),
        "{}",
        a.text
    );
    assert_same_tree(&proj, &before, &tree_snapshot(&proj));
    assert_eq!(audit_events(&fx, "commit_refused").len(), 1);
    // Without the path it may not write, the rest goes, as the agent's.
    let c = d.post(None, &path(id, "commit"), &json!({"exclude": [sub]})).expect(200).clone();
    assert_eq!(c["status"], "applied", "{c}");
    assert_eq!(owner(&proj.join("top")), AGENT_A);
    assert!(!sub.join("f").exists());
    d.curl(None, "POST", &path(id, "discard"), None).expect(200);
    drop(d);
    fx.finish();
}

fn a_batch_list(d: &Daemon) -> Vec<Value> {
    d.get(None, "/v1/batches").expect(200)["batches"].as_array().unwrap().clone()
}

/// Raw HTTP over AF_UNIX from Python: what curl cannot send (a path kept
/// as written, requests that never end). Prints one JSON line per case.
const RAW: &str = r#"
import json, socket, sys, threading, time
sock = sys.argv[1]
def exchange(data, wait=20.0):
    s = socket.socket(socket.AF_UNIX); s.connect(sock); s.settimeout(wait)
    t = time.time(); s.sendall(data); out = b""
    try:
        while True:
            b = s.recv(65536)
            if not b: break
            out += b
    except socket.timeout:
        out += b"<still open>"
    return out.decode("latin-1"), time.time() - t
res = {}
def case(name, data):
    res[name] = exchange(data)
slow = [threading.Thread(target=case, args=("slow_head", b"GET /v1/whoami HTTP/1.1\r\nHost: x\r\n")),
        threading.Thread(target=case, args=("slow_body", b"POST /v1/batches HTTP/1.1\r\nHost: x\r\nContent-Length: 200\r\n\r\n{\"pro"))]
for t in slow: t.start()
time.sleep(0.3)
res["meanwhile"] = exchange(b"GET /v1/whoami HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
res["dotdot"] = exchange(b"GET /v1/batches/../../etc/passwd HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
res["bad_request_line"] = exchange(b"\x00\x01garbage\r\n\r\n")
for t in slow: t.join()
print(json.dumps(res))
"#;

/// Bad input and slow clients get a 4xx with `{"error"}` or a timeout;
/// nothing changes (no batch, no audit record); others are served
/// meanwhile.
#[test]
fn bad_requests_and_slow_clients_change_nothing() {
    let fx = Fixture::new();
    let proj = owned_dir(&fx, "a", AGENT_A);
    let config = "[limits]\nmax_body_bytes = 4096\nheader_timeout_secs = 2\nbody_timeout_secs = 2\n";
    let d = Daemon::start(&fx, Some(config));
    let good = batch(&proj, "true");
    let id = d.post(Some(AGENT_A), "/v1/batches", &good).expect(201)["id"].as_str().unwrap().to_string();
    let audit_before = std::fs::read(fx.state.path().join("audit.jsonl")).unwrap();
    let list_before = a_batch_list(&d);
    let big = json!({"project": proj, "entries": [{"command": "x".repeat(5000)}]});
    let cases: Vec<(&str, String, Vec<u8>, u16)> = vec![
        ("POST", "/v1/batches".into(), b"{\"project\": ".to_vec(), 400),
        ("POST", "/v1/batches".into(), b"not json at all".to_vec(), 400),
        (
            "POST",
            "/v1/batches".into(),
            serde_json::to_vec(&json!({"project": proj, "entries": [], "x": 1})).unwrap(),
            422,
        ),
        ("POST", "/v1/batches".into(), serde_json::to_vec(&json!({"project": 5, "entries": []})).unwrap(), 422),
        ("POST", "/v1/batches".into(), serde_json::to_vec(&big).unwrap(), 413),
        ("POST", "/v1/batches".into(), serde_json::to_vec(&batch(&proj.join("../a"), "true")).unwrap(), 422),
        (
            "POST",
            "/v1/batches".into(),
            serde_json::to_vec(&json!({"project": "rel", "entries": [{"command": "true"}]})).unwrap(),
            422,
        ),
        ("GET", "/v1/batches/zzzz".into(), vec![], 400),
        ("GET", "/v1/batches/%2e%2e".into(), vec![], 400),
        ("GET", format!("/v1/batches/{}", "a".repeat(5000)), vec![], 400),
        ("GET", "/v1/batches?nope=1".into(), vec![], 400),
        ("POST", path(&id, "approve"), serde_json::to_vec(&json!({"entries": "x"})).unwrap(), 422),
        ("POST", "/v1/run".into(), serde_json::to_vec(&json!({"argv": [], "cwd": proj})).unwrap(), 400),
        ("POST", "/v1/run".into(), serde_json::to_vec(&json!({"argv": ["true"], "cwd": "/tmp/../etc"})).unwrap(), 400),
        (
            "POST",
            "/v1/run".into(),
            serde_json::to_vec(&json!({"argv": ["true"], "cwd": proj, "memory": []})).unwrap(),
            422,
        ),
        ("POST", "/v1/policy/check".into(), serde_json::to_vec(&json!({"command": "ls", "extra": 1})).unwrap(), 422),
        ("DELETE", "/v1/batches".into(), vec![], 405),
        ("GET", "/v2/anything".into(), vec![], 404),
    ];
    for (method, p, body, want) in &cases {
        let a = d.curl(Some(AGENT_A), method, p, (!body.is_empty()).then_some(body.as_slice()));
        assert_eq!(a.status, *want, "{method} {p}: {}", a.text);
        assert!(
            a.json["error"].as_str().is_some_and(|e| !e.is_empty() && !e.contains('\n')),
            "{method} {p}: {}",
            a.text
        );
    }
    let a = d.post(None, &path(&id, "commit"), &json!({"paths": ["/tmp/../etc"]}));
    assert_eq!(a.status, 400, "{}", a.text);
    let out = std::process::Command::new("python3").arg("-c").arg(RAW).arg(&d.socket).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let raw: Value = serde_json::from_slice(&out.stdout).unwrap();
    let (text, secs) = (|k: &str| raw[k][0].as_str().unwrap().to_string(), |k: &str| raw[k][1].as_f64().unwrap());
    assert!(text("meanwhile").starts_with("HTTP/1.1 200"), "served meanwhile: {raw}");
    assert!(secs("meanwhile") < 1.5, "{raw}");
    assert!(
        !text("slow_head").contains("<still open>") && secs("slow_head") < 6.0,
        "closed after the header timeout: {raw}"
    );
    assert!(text("slow_body").starts_with("HTTP/1.1 408") && text("slow_body").contains("\"error\""), "{raw}");
    assert!(text("dotdot").starts_with("HTTP/1.1 404"), "{raw}");
    assert!(text("bad_request_line").is_empty() || text("bad_request_line").starts_with("HTTP/1.1 400"), "{raw}");

    assert_eq!(a_batch_list(&d), list_before, "nothing recorded");
    assert_eq!(std::fs::read(fx.state.path().join("audit.jsonl")).unwrap(), audit_before, "nothing audited");
    assert_eq!(d.get(None, "/v1/whoami").status, 200, "still serving");
    drop(d);
    fx.finish();
}

/// One daemon per state directory; after a `kill -9`, a new daemon takes
/// the stale socket over.
#[test]
fn a_second_daemon_refuses_and_a_killed_one_is_replaced() {
    let fx = Fixture::new();
    // A lock file someone else planted (a symlink to a file of root's) is
    // refused, never truncated.
    let target = fx.out.path().join("precious");
    std::fs::write(&target, "keep me").unwrap();
    std::os::unix::fs::symlink(&target, fx.out.path().join("planted.sock.lock")).unwrap();
    let (mut planted, _, log) = Daemon::spawn(&fx, None, "planted.sock");
    assert!(!planted.wait().unwrap().success(), "{}", std::fs::read_to_string(&log).unwrap());
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "keep me");

    let mut d = Daemon::start(&fx, None);
    let (mut second, _, log) = Daemon::spawn(&fx, None, "second.sock");
    let st = second.wait().unwrap();
    assert!(!st.success());
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("already serves the state directory"), "{text}");
    assert!(!fx.out.path().join("second.sock").exists());
    assert_eq!(d.get(None, "/v1/whoami").status, 200);
    // SAFETY: kill(2) of our own child.
    unsafe { libc::kill(d.pid() as i32, libc::SIGKILL) };
    d.stop();
    assert!(d.socket.exists(), "a killed daemon leaves its socket");
    let d = Daemon::start(&fx, None);
    assert_eq!(d.get(Some(AGENT_B), "/v1/whoami").expect(200)["uid"], AGENT_B);
    drop(d);
    fx.finish();
}

/// Agents through the daemon: a caller registers a name (201 and an id;
/// again, 200 and the same id); another caller cannot take it (409) and
/// sees only its own names; each sees what it used as itself (`caller`:
/// what its budgets are checked against); a reviewer sees every name.
#[test]
fn callers_register_agent_names_and_see_their_own() {
    let fx = Fixture::new();
    let proj = owned_dir(&fx, "a", AGENT_A);
    let d = Daemon::start(&fx, None);
    let a = d.post(Some(AGENT_A), "/v1/agents", &json!({"name": "builder-a"})).expect(201).clone();
    let id = a["id"].as_str().expect("an id").to_string();
    let who = format!("uid:{AGENT_A}");
    assert_eq!((a["name"].as_str(), a["registered_by"].as_str()), (Some("builder-a"), Some(who.as_str())), "{a}");
    assert_eq!(d.post(Some(AGENT_A), "/v1/agents", &json!({"name": "builder-a"})).expect(200)["id"], id.as_str());
    let taken = d.post(Some(AGENT_B), "/v1/agents", &json!({"name": "builder-a"}));
    assert_eq!(taken.status, 409, "another caller's name: {}", taken.text);
    d.post(Some(AGENT_B), "/v1/agents", &json!({"name": "builder-b"})).expect(201);
    let bad = [
        (json!({"name": "no spaces"}), 400),
        (json!({"name": ""}), 400),
        (json!({"name": "x", "extra": 1}), 422),
        (json!({}), 422),
    ];
    for (body, want) in bad {
        let r = d.post(Some(AGENT_A), "/v1/agents", &body);
        assert_eq!(r.status, want, "{body}: {}", r.text);
        assert!(r.json["error"].is_string(), "{}", r.text);
    }
    // A batch of A's, waiting for review: A's usage and status.
    let batch = json!({"project": proj, "agent": "builder-a", "entries": [{"command": "echo x > f"}]});
    d.post(Some(AGENT_A), "/v1/batches", &batch).expect(201);
    let names = |v: &Value| -> Vec<String> {
        v["agents"].as_array().unwrap().iter().map(|a| a["name"].as_str().unwrap().to_string()).collect()
    };
    let mine = d.get(Some(AGENT_A), "/v1/agents").expect(200).clone();
    assert_eq!(names(&mine), ["builder-a"], "{mine}");
    assert_eq!(
        (mine["caller"]["submitter"].as_str(), mine["caller"]["status"].as_str()),
        (Some(who.as_str()), Some("waiting"))
    );
    assert_eq!(mine["caller"]["usage"]["batches_last_hour"], 1, "{mine}");
    let theirs = d.get(Some(AGENT_B), "/v1/agents").expect(200).clone();
    assert_eq!(names(&theirs), ["builder-b"], "{theirs}");
    assert_eq!(
        (theirs["caller"]["status"].as_str(), &theirs["caller"]["usage"]["batches_last_hour"]),
        (Some("idle"), &json!(0))
    );
    let all = d.get(None, "/v1/agents").expect(200).clone();
    assert_eq!(names(&all), ["builder-a", "builder-b"], "{all}");
    assert!(all["budgets"]["batches_per_hour"].is_u64(), "{all}");
    let registered: Vec<Value> = audit_events(&fx, "agent_registered").iter().map(|r| r["actor"].clone()).collect();
    assert_eq!(registered, [json!(who), json!(format!("uid:{AGENT_B}"))]);
    drop(d);
    fx.finish();
}
