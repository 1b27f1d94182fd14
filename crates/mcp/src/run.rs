//! The `run` tool: one command, judged by the project's policy, then run
//! in the session's world (allow), held in a batch for a reviewer
//! (review), or refused with its reason (deny).

use crate::client::q;
use crate::server::{done, failed, Progress, Server, Session};
use crate::summary::{self, Capped};
use base64::Engine;
use hyper::Method;
use rmcp::model::CallToolResult;
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::BTreeMap;

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RunParams {
    /// The shell command line, run with /bin/sh -c (pipes, &&, redirections work).
    pub command: String,
    /// The working directory: an absolute path inside your project. Default: the project.
    #[serde(default)]
    pub cwd: Option<String>,
    /// Kill the command after this many seconds (exit code 124).
    #[serde(default)]
    pub timeout_secs: Option<u64>,
    /// Environment variables for the command (names: letters, digits, _).
    #[serde(default)]
    pub env: Option<BTreeMap<String, String>>,
}

/// The session's part of a run's body: the first run keeps its world (the
/// session's), every later one continues it (docs/mcp.md, *Session worlds*).
fn session_fields(s: &Session, body: &mut Value) {
    match &s.world {
        None => body["keep"] = json!(true),
        Some(w) => body["world"] = json!(w),
    }
}

pub async fn run(srv: &Server, p: RunParams, mut progress: Progress) -> CallToolResult {
    if p.command.trim().is_empty() {
        return done("command: empty; give a shell command line".into(), json!({"status": "invalid"}), true);
    }
    let project = srv.settings.project.to_string_lossy().into_owned();
    let check = json!({"command": p.command, "project": project});
    let decision = match srv.daemon.json(Method::POST, "/v1/policy/check", Some(&check)).await {
        Ok(d) => d,
        Err(f) => return failed(f),
    };
    match decision["effect"].as_str() {
        Some("allow") => {}
        Some("review") => return crate::batch::hold(srv, &p, decision).await,
        _ => {
            let text = format!(
                "denied, not run: {}\nThis command will not be allowed as it is; choose another way.",
                summary::decision_line(&decision)
            );
            return done(text, json!({"status": "denied", "decision": decision}), true);
        }
    }
    let cwd = p.cwd.clone().unwrap_or_else(|| project.clone());
    let mut body = json!({"argv": ["/bin/sh", "-c", p.command], "cwd": cwd});
    if let Some(t) = p.timeout_secs {
        body["timeout"] = json!(t);
    }
    if let Some(env) = &p.env {
        body["env"] = json!(env);
    }
    // One command at a time in the session's world: the lock is held for the run.
    let mut session = srv.session.lock().await;
    session_fields(&session, &mut body);
    let mut events = match srv.daemon.events(Method::POST, "/v1/run?stream=true", Some(&body)).await {
        Ok(e) => e,
        Err(f) => return failed(gone(&mut session, f)),
    };
    let cap = srv.settings.output_cap;
    let (mut out, mut err) = (Capped::new(cap), Capped::new(cap));
    let result = loop {
        match events.next().await {
            Err(f) => return failed(f),
            Ok(None) => {
                return failed(crate::client::Failure {
                    status: None,
                    message: "cloched's stream ended without a result".into(),
                })
            }
            Ok(Some(e)) => match e.kind.as_str() {
                "output" => {
                    let bytes = base64::engine::general_purpose::STANDARD
                        .decode(e.data["data_b64"].as_str().unwrap_or(""))
                        .unwrap_or_default();
                    let stream = e.data["stream"].as_str().unwrap_or("stdout").to_string();
                    match stream.as_str() {
                        "stderr" => err.push(&bytes),
                        _ => out.push(&bytes),
                    }
                    progress.say(format!("[{stream}] {}", String::from_utf8_lossy(&bytes))).await;
                }
                "result" => break e.data,
                "error" => {
                    let status = e.data["status"].as_u64().map(|s| s as u16);
                    let message = e.data["error"].as_str().unwrap_or("the run failed").to_string();
                    return failed(gone(&mut session, crate::client::Failure { status, message }));
                }
                _ => {}
            },
        }
    };
    let report = &result["report"];
    let session_diff = report["fs_diff"].clone();
    // A continued run's report says what it changed itself; the first run's
    // whole diff is its own.
    let this = match &report["run_fs_diff"] {
        Value::Null => summary::fs_diff(&session_diff),
        own => summary::fs_diff(own),
    };
    if let Some(w) = report["world"].as_str() {
        session.world = Some(w.to_string());
    }
    let world = session.world.clone();
    drop(session);
    let v = json!({
        "status": "ran",
        "exit_code": result["exit_code"],
        "timed_out": report["timed_out"],
        "limits_hit": report["limits_hit"],
        "stdout": out.value(),
        "stderr": err.value(),
        "fs_diff": this,
        "session_diff": summary::fs_diff(&session_diff),
        "network": report["network"],
        "world": report["world"],
        "session": {"world": world, "run": report["world_run"]},
    });
    let text = ran_text(&v);
    done(text, v, false)
}

/// A continuation the daemon answers 404 is of a world that is gone (a
/// reviewer committed or discarded it, or the retention limit took it):
/// the session forgets it, and the failure says that the next `run`
/// starts a new world.
fn gone(session: &mut Session, mut f: crate::client::Failure) -> crate::client::Failure {
    // Only a 404 forgets the world: another failure (in use, a refusal, the
    // daemon's error) leaves the session's world as it was.
    if f.status == Some(404) {
        if let Some(w) = session.world.take() {
            f.message = format!("{}; the session's world {w} is gone: the next run starts a new world", f.message);
        }
    }
    f
}

/// The result as text: exit code, output, changes, network.
fn ran_text(v: &Value) -> String {
    let mut t = format!("exit code {}", v["exit_code"]);
    if v["timed_out"] == json!(true) {
        t.push_str(" (timed out)");
    }
    for name in ["stdout", "stderr"] {
        let s = &v[name];
        if s["bytes"] == json!(0) {
            continue;
        }
        let cut = match s["truncated"] == json!(true) {
            true => format!(", cut to {} bytes", s["cap_bytes"]),
            false => String::new(),
        };
        t.push_str(&format!("\n--- {name} ({} bytes{cut}) ---\n{}", s["bytes"], s["text"].as_str().unwrap_or("")));
        if !t.ends_with('\n') {
            t.push('\n');
        }
    }
    t.push_str(&format!("\nchanged by this command: {}", diff_line(&v["fs_diff"])));
    t.push_str(&format!("\nchanged in the session so far: {}", diff_line(&v["session_diff"])));
    t.push_str(&format!("\nnetwork: {}", network_line(&v["network"])));
    t.push_str("\nThe host is unchanged: a reviewer commits changes (request_commit).");
    t
}

/// `added 1 (/p/x), modified 0, deleted 0` with the first paths of each kind.
pub fn diff_line(s: &Value) -> String {
    if s.is_null() {
        return "nothing".into();
    }
    let parts: Vec<String> = ["added", "modified", "deleted"]
        .iter()
        .map(|k| {
            let paths: Vec<&str> =
                s[k]["paths"].as_array().into_iter().flatten().take(5).filter_map(|p| p["path"].as_str()).collect();
            let more = s[k]["count"].as_u64().unwrap_or(0).saturating_sub(paths.len() as u64);
            match (paths.is_empty(), more) {
                (true, _) => format!("{k} 0"),
                (false, 0) => format!("{k} {} ({})", paths.len(), paths.join(", ")),
                (false, m) => format!("{k} {} ({}, and {m} more)", paths.len() as u64 + m, paths.join(", ")),
            }
        })
        .collect();
    let flags = s["flags"].as_array().map(Vec::len).unwrap_or(0);
    match flags {
        0 => parts.join(", "),
        n => format!("{}; {n} flags for the reviewer", parts.join(", ")),
    }
}

fn network_line(n: &Value) -> String {
    match n["mode"].as_str() {
        Some("none") | None => "none (loopback only)".into(),
        Some(m) => format!("{m}: allowed {}, refused {}", n["allowed"], n["denied"]),
    }
}

/// The query of a project (for routes that take one).
pub fn project_query(srv: &Server) -> String {
    format!("project={}", q(&srv.settings.project.to_string_lossy()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::Failure;

    #[test]
    fn only_a_404_forgets_the_sessions_world() {
        let mut s = Session { world: Some("0123456789abcdef".into()) };
        let busy = gone(&mut s, Failure { status: Some(409), message: "world in use".into() });
        assert_eq!((busy.message.as_str(), s.world.as_deref()), ("world in use", Some("0123456789abcdef")));
        let failed = gone(&mut s, Failure { status: None, message: "connection closed".into() });
        assert_eq!((failed.message.as_str(), s.world.as_deref()), ("connection closed", Some("0123456789abcdef")));
        let lost = gone(&mut s, Failure { status: Some(404), message: "no kept world 0123456789abcdef".into() });
        assert!(lost.message.contains("the next run starts a new world"), "{}", lost.message);
        assert_eq!(s.world, None);
    }
}
