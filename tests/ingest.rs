//! Tool calls submitted as a batch through the real `cloche` (in process
//! and through a real `cloched`), and a reviewer told of a batch waiting:
//! `batch list --pending`, the `review_needed` event, the daemon's hook.
//! No world starts: nothing here runs a batch.

use crate::common;

use common::*;
use serde_json::{json, Value};
use std::path::Path;
use std::time::{Duration, Instant};

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// `cloche ARGS` as `uid` (root: `None`) in `cwd`, through the daemon at
/// `socket`, or in process (`--no-daemon`) without one.
fn cloche(fx: &Fixture, uid: Option<u32>, cwd: &Path, socket: Option<&Path>, args: &[&str]) -> Outcome {
    use std::os::unix::process::CommandExt;
    let mut c = fx.command();
    c.current_dir(cwd);
    match socket {
        Some(s) => c.env("CLOCHE_SOCKET", s),
        None => c.env_remove("CLOCHE_SOCKET").arg("--no-daemon"),
    };
    if let Some(u) = uid {
        c.uid(u).gid(u).env("HOME", "/nonexistent");
    }
    run_cmd(c.args(args), DEADLINE)
}

fn json_of(o: &Outcome) -> Value {
    assert_eq!(o.code, Some(0), "{}", o.describe());
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", o.describe()))
}

fn commands(v: &Value) -> Vec<(String, String)> {
    let e = v["entries"].as_array().unwrap();
    e.iter().map(|e| (e["command"].as_str().unwrap().into(), e["cwd"].as_str().unwrap().into())).collect()
}

/// An OpenAI chat completion with two calls becomes a batch of two entries
/// (quoting and newlines kept, a relative directory under the project);
/// calls that do not map are refused naming the call, and nothing is
/// recorded; the pending batch shows its approval's time limit.
#[test]
fn tool_calls_become_a_batch_or_are_refused_whole() {
    let fx = Fixture::new();
    fx.mkdir("web");
    let dir = fx.dir().to_str().unwrap().to_string();
    let script = "printf '%s\\n' \"a b\" > x.txt\ncat x.txt";
    let call = |id: &str, name: &str, args: Value| json!({"id": id, "type": "function", "function": {"name": name, "arguments": args.to_string()}});
    let completion = json!({"id": "chatcmpl-1", "object": "chat.completion", "choices": [{"index": 0,
        "message": {"role": "assistant", "content": null, "tool_calls": [
            call("call_1", "bash", json!({"command": script})),
            call("call_2", "run_shell_command", json!({"command": "npm install", "directory": "web"}))]}}]});
    fx.write("calls.json", completion.to_string().as_bytes(), 0o644);
    let v = json_of(&cloche(&fx, None, fx.dir(), None, &["batch", "submit", "calls.json", "--agent", "m1", "--json"]));
    assert_eq!(commands(&v), [(script.into(), dir.clone()), ("npm install".into(), format!("{dir}/web"))], "{v:#}");
    assert_eq!((v["agent"].as_str(), v["project"].as_str()), (Some("m1"), Some(dir.as_str())));
    let id = v["id"].as_str().unwrap().to_string();

    // Anthropic blocks, the second a tool that is no shell command; then
    // arguments that are not JSON: one line naming the call, no batch.
    let blocks = json!([{"type": "text", "text": "ok"},
        {"type": "tool_use", "id": "toolu_1", "name": "bash", "input": {"command": "ls"}},
        {"type": "tool_use", "id": "toolu_2", "name": "python", "input": {"code": "1"}}]);
    fx.write("bad.json", blocks.to_string().as_bytes(), 0o644);
    let o = cloche(&fx, None, fx.dir(), None, &["batch", "submit", "bad.json"]);
    let err = text(&o.stderr);
    assert!(
        o.code == Some(125) && err.contains("tool call 1 (id \"toolu_2\", tool \"python\") at [2]"),
        "{}",
        o.describe()
    );
    let broken = json!({"role": "assistant", "tool_calls": [{"id": "call_9", "type": "function",
        "function": {"name": "bash", "arguments": "{\"command\": \"ls"}}]});
    fx.write("broken.json", broken.to_string().as_bytes(), 0o644);
    let o = cloche(&fx, None, fx.dir(), None, &["batch", "submit", "broken.json"]);
    assert!(
        o.code == Some(125) && text(&o.stderr).contains("tool call 0 (id \"call_9\", tool \"bash\")"),
        "{}",
        o.describe()
    );
    let list = json_of(&cloche(&fx, None, fx.dir(), None, &["batch", "list", "--json"]));
    assert_eq!(list["batches"].as_array().unwrap().len(), 1, "nothing partial recorded: {list:#}");

    // Waiting for review: the approval's limit, in list --pending and show.
    let pending = cloche(&fx, None, fx.dir(), None, &["batch", "list", "--pending"]);
    let line = text(&pending.stdout);
    assert!(line.starts_with(&id) && line.contains("approval valid 5m once given"), "{}", pending.describe());
    let pj = json_of(&cloche(&fx, None, fx.dir(), None, &["batch", "list", "--pending", "--json"]));
    assert_eq!(pj["batches"][0]["approval_ttl"], 300, "{pj:#}");
    let show = cloche(&fx, None, fx.dir(), None, &["batch", "show", &id]);
    assert!(text(&show.stdout).contains("\n  approval valid 5m once given\n"), "{}", show.describe());
    fx.finish();
}

/// Through the daemon: tool calls are made a batch by the daemon; each
/// batch that waits for a reviewer starts the configured hook once (with
/// its id in the environment) and a `review_needed` event; a batch with
/// nothing to approve starts neither; a hook that fails or hangs blocks
/// nothing (the hanging one is killed after its timeout); the approval's
/// limit is shown as an expiry once given.
#[test]
fn a_batch_waiting_for_review_runs_the_hook_once_and_is_not_held_by_it() {
    let fx = Fixture::new();
    let proj = owned_dir(&fx, "a", AGENT_A);
    let hook_dir = Scratch::new_in("/tmp", "cloche-test-hook-");
    let out = hook_dir.path().join("calls");
    let hook = hook_dir.path().join("hook.sh");
    let body = format!(
        "#!/bin/sh\necho \"$CLOCHE_BATCH_ID $CLOCHE_BATCH_AGENT $CLOCHE_BATCH_PROJECT $HOME\" >> {}\n\
         [ \"$CLOCHE_BATCH_AGENT\" = hang ] && exec sleep 31.25\nexit 3\n",
        out.display()
    );
    std::fs::write(&hook, body).unwrap();
    std::fs::set_permissions(&hook, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let config = format!("[hooks]\nreview_needed = [\"{}\"]\ntimeout_secs = 1\n", hook.display());
    let d = Daemon::start(&fx, Some(&config));
    let sock = Some(d.socket.as_path());
    let mut events = SseClient::open(&d.socket, None, "/v1/events", &[]);

    let submit = |name: &str, agent: &str, command: &str| {
        let payload = json!({"role": "assistant", "content": [
            {"type": "tool_use", "id": "toolu_1", "name": "bash", "input": {"command": command}}]});
        std::fs::write(proj.join(name), payload.to_string()).unwrap();
        let t = Instant::now();
        let v =
            json_of(&cloche(&fx, Some(AGENT_A), &proj, sock, &["batch", "submit", name, "--agent", agent, "--json"]));
        (v, t.elapsed())
    };
    let (hang, took) = submit("h.json", "hang", "npm install");
    assert!(took < Duration::from_secs(5), "the submission waited for the hook: {took:?}");
    let (fail, _) = submit("f.json", "fail", "curl https://example.com");
    let (denied, _) = submit("d.json", "deny", "rm -rf ~/important");
    assert_eq!(denied["decision"], "deny", "{denied:#}");
    let (hang, fail) = (hang["id"].as_str().unwrap().to_string(), fail["id"].as_str().unwrap().to_string());

    // The hung hook does not hold the batch: root approves it meanwhile.
    let o = cloche(&fx, None, &proj, sock, &["batch", "approve", &hang]);
    assert_eq!(o.code, Some(0), "{}", o.describe());
    let show = cloche(&fx, None, &proj, sock, &["batch", "show", &hang]);
    assert!(text(&show.stdout).contains("\n  approval expires "), "{}", show.describe());
    let pending = cloche(&fx, None, &proj, sock, &["batch", "list", "--pending"]);
    let lines: Vec<String> = text(&pending.stdout).lines().map(String::from).collect();
    assert!(lines.len() == 2 && lines.iter().all(|l| !l.starts_with(&hang)), "{}", pending.describe());
    assert!(lines.iter().any(|l| l.starts_with(&fail) && l.contains("approval valid 5m once given")), "{lines:?}");

    // The stream: review_needed for the two, not for the denied one.
    for id in [&hang, &fail] {
        let f = events.until(|f| f.is("review_needed") && f.json()["batch"] == id.as_str(), DEADLINE);
        assert_eq!(f.json()["data"]["approval_ttl"], 300, "{f:?}");
    }
    // The hook: once per batch waiting for review, with its id and an
    // environment of its own; the hanging one killed after 1 s.
    let deadline = Instant::now() + Duration::from_secs(10);
    let p = proj.to_str().unwrap();
    let want = [format!("{hang} hang {p} "), format!("{fail} fail {p} ")];
    loop {
        let got = std::fs::read_to_string(&out).unwrap_or_default();
        let mut got: Vec<&str> = got.lines().collect();
        got.sort();
        let mut w: Vec<&str> = want.iter().map(String::as_str).collect();
        w.sort();
        let killed = d.log_text().contains("review hook killed after its timeout");
        if got == w && killed && d.log_text().contains("review hook failed") {
            break;
        }
        assert!(Instant::now() < deadline, "hook calls {got:?}, want {w:?}; log:\n{}", d.log_text());
        std::thread::sleep(Duration::from_millis(50));
    }
    let sleeping = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .any(|e| std::fs::read(e.path().join("cmdline")).is_ok_and(|c| c.windows(5).any(|w| w == b"31.25")));
    assert!(!sleeping, "the hung hook was killed");
    drop(events);
    drop(d);
    fx.finish();
}
