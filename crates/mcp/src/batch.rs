//! `submit_batch` and `wait`: a batch submitted with its decisions, then
//! waited for (a bounded time per call), run once approved, its live
//! output sent as progress notifications, its end read back.

use crate::client::{Events, Failure};
use crate::run::RunParams;
use crate::server::{done, failed, Progress, Server};
use crate::summary::{self, Capped};
use base64::Engine;
use hyper::Method;
use rmcp::model::CallToolResult;
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EntryParams {
    /// The shell command line.
    pub command: String,
    /// The working directory: an absolute path inside your project. Default: the project.
    #[serde(default)]
    pub cwd: Option<String>,
    /// Kill the command after this many seconds.
    #[serde(default)]
    pub timeout_secs: Option<u64>,
    /// Environment variables for the command.
    #[serde(default)]
    pub env: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SubmitParams {
    /// The commands, run in this order in one world (each sees the files of those before it).
    pub entries: Vec<EntryParams>,
    /// Skip the rest after a command fails (default true).
    #[serde(default)]
    pub stop_on_failure: Option<bool>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WaitParams {
    /// The batch id (16 hex digits) that `run` or `submit_batch` returned.
    pub batch: String,
    /// Return after at most this many seconds (default and maximum: the server's bound, about 25).
    #[serde(default)]
    pub timeout_secs: Option<u64>,
}

/// The batch file for `entries` in the agent's project, continuing the
/// session's world when it has one (docs/mcp.md, *Session worlds*).
async fn batch_file(srv: &Server, entries: &[EntryParams], stop_on_failure: Option<bool>) -> Value {
    let entries: Vec<Value> = entries
        .iter()
        .map(|e| {
            let mut v = json!({"command": e.command});
            if let Some(c) = &e.cwd {
                v["cwd"] = json!(c);
            }
            if let Some(t) = e.timeout_secs {
                v["timeout"] = json!(t);
            }
            if let Some(env) = &e.env {
                v["env"] = json!(env);
            }
            v
        })
        .collect();
    let mut b = json!({"project": srv.settings.project.to_string_lossy(), "entries": entries});
    if let Some(s) = stop_on_failure {
        b["stop_on_failure"] = json!(s);
    }
    if let Some(a) = &srv.settings.agent {
        b["agent"] = json!(a);
    }
    if let Some(w) = &srv.session.lock().await.world {
        b["world"] = json!(w);
    }
    b
}

pub async fn submit(srv: &Server, p: SubmitParams) -> CallToolResult {
    let body = batch_file(srv, &p.entries, p.stop_on_failure).await;
    let v = match srv.daemon.json(Method::POST, "/v1/batches", Some(&body)).await {
        Ok(v) => v,
        Err(f) => return failed(f),
    };
    let out = submitted(&v);
    let mut text = format!("batch {}: {} (decision {})\n", v["id"].as_str().unwrap_or("?"), v["state"], v["decision"]);
    for e in out["entries"].as_array().into_iter().flatten() {
        text.push_str(&format!("[{}] {}: {}\n", e["index"], e["command"], summary::decision_line(&e["decision"])));
    }
    text.push_str(&next_step(&v));
    done(text, out, false)
}

/// `run`'s review path: the command held in a batch of its own.
pub async fn hold(srv: &Server, p: &RunParams, decision: Value) -> CallToolResult {
    let entry = EntryParams {
        command: p.command.clone(),
        cwd: p.cwd.clone(),
        timeout_secs: p.timeout_secs,
        env: p.env.clone(),
    };
    let body = batch_file(srv, &[entry], None).await;
    let v = match srv.daemon.json(Method::POST, "/v1/batches", Some(&body)).await {
        Ok(v) => v,
        Err(f) => return failed(f),
    };
    let id = v["id"].as_str().unwrap_or("?");
    let text = format!(
        "held for review, not run yet: {}\nbatch {id}: call wait with batch \"{id}\" (again while it says still_waiting); \
         it runs once a reviewer approves it.",
        summary::decision_line(&decision)
    );
    done(text, json!({"status": "held_for_review", "batch": id, "decision": decision, "state": v["state"]}), false)
}

/// A submitted batch: its id, state and each entry's decision.
fn submitted(v: &Value) -> Value {
    let entries: Vec<Value> = v["entries"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| json!({"index": e["index"], "entry": e["id"], "command": e["command"], "decision": e["decision"]}))
        .collect();
    json!({"batch": v["id"], "state": v["state"], "decision": v["decision"], "entries": entries,
        "approval_ttl_secs": v["approval_ttl"], "expires_at": v["expires_at"]})
}

/// The approval's time limit, as the batch says it: how long an approval
/// will last once given (pending), or when it ends (approved).
fn approval_limit(v: &Value) -> String {
    match (v["state"].as_str(), v["expires_at"].as_str(), v["approval_ttl"].as_u64()) {
        (Some("approved"), Some(t), _) => format!(" The approval expires at {t}: run it before then."),
        (Some("pending"), _, Some(ttl)) => format!(" An approval, once given, lasts {ttl} s."),
        _ => String::new(),
    }
}

fn next_step(v: &Value) -> String {
    let id = v["id"].as_str().unwrap_or("?");
    match v["state"].as_str() {
        Some("approved") => format!("Approved: call wait with batch \"{id}\" to run it.{}", approval_limit(v)),
        Some("pending") => format!(
            "Waiting for a reviewer: call wait with batch \"{id}\" (again while it says still_waiting).{}",
            approval_limit(v)
        ),
        _ => String::new(),
    }
}

/// How often a pending batch's state is read.
const POLL: Duration = Duration::from_millis(250);

/// How long a stream of a batch that already ended is read for its replay.
const REPLAY_IDLE: Duration = Duration::from_millis(300);

pub async fn wait(srv: &Server, p: WaitParams, mut progress: Progress) -> CallToolResult {
    let id = p.batch.trim().to_string();
    if id.len() != 16 || !id.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
        return done(
            format!("batch {id:?}: not a batch id (16 lower-case hex digits)"),
            json!({"status": "invalid"}),
            true,
        );
    }
    let bound = srv.settings.wait.min(Duration::from_secs(p.timeout_secs.unwrap_or(u64::MAX)));
    let deadline = Instant::now() + bound;
    let path = format!("/v1/batches/{id}");
    let mut told = false;
    loop {
        let v = match srv.daemon.json(Method::GET, &path, None).await {
            Ok(v) => v,
            Err(f) => return failed(f),
        };
        match v["state"].as_str().unwrap_or("") {
            "pending" => {
                if !told {
                    progress.say(format!("batch {id}: waiting for a reviewer's approval")).await;
                    told = true;
                }
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return still_waiting(&v, "waiting for a reviewer's approval");
                }
                tokio::time::sleep(POLL.min(left)).await;
            }
            "approved" | "running" => return follow(srv, &id, deadline, &mut progress).await,
            _ => return follow(srv, &id, Instant::now() + REPLAY_IDLE, &mut progress).await,
        }
    }
}

fn still_waiting(v: &Value, why: &str) -> CallToolResult {
    let id = v["id"].as_str().unwrap_or("?");
    let text = format!(
        "still_waiting: batch {id} is {} ({why}); call wait again with batch \"{id}\".{}",
        v["state"].as_str().unwrap_or("?"),
        approval_limit(v)
    );
    let out = json!({"status": "still_waiting", "batch": id, "state": v["state"], "why": why,
        "approval_ttl_secs": v["approval_ttl"], "expires_at": v["expires_at"]});
    done(text, out, false)
}

/// The output seen of each entry.
#[derive(Default)]
struct Seen {
    out: HashMap<String, (Capped, Capped)>,
    ended: bool,
}

/// Follows a batch's events (those the daemon still holds, then live ones)
/// until its run ended or the deadline; starts its run when it is approved.
async fn follow(srv: &Server, id: &str, deadline: Instant, progress: &mut Progress) -> CallToolResult {
    let mut seen = Seen::default();
    let mut events = match srv.daemon.events(Method::GET, &format!("/v1/events?batch={id}&since=0"), None).await {
        Ok(e) => e,
        Err(f) => return failed(f),
    };
    let path = format!("/v1/batches/{id}");
    let state = match srv.daemon.json(Method::GET, &path, None).await {
        Ok(v) => v["state"].as_str().unwrap_or("").to_string(),
        Err(f) => return failed(f),
    };
    let ended_before = !matches!(state.as_str(), "approved" | "running");
    if state == "approved" {
        // Subscribed first: none of the run's events is missed.
        let run = srv.daemon.json(Method::POST, &format!("/v1/batches/{id}/run"), None).await;
        if let Err(f) = run {
            // Another caller may have started it (409): its events come all the same.
            if f.status != Some(409) {
                return failed(f);
            }
        }
    }
    let cap = srv.settings.output_cap;
    let deadline = if ended_before { Instant::now() + REPLAY_IDLE } else { deadline };
    while !seen.ended {
        let left = deadline.saturating_duration_since(Instant::now());
        let next = match tokio::time::timeout(left, events.next()).await {
            Err(_) => break,
            Ok(Err(f)) => return failed(f),
            Ok(Ok(None)) => break,
            Ok(Ok(Some(e))) => e,
        };
        observe(&mut seen, &next.kind, &next.data["data"], cap, progress).await;
    }
    drop::<Events>(events);
    let v = match srv.daemon.json(Method::GET, &path, None).await {
        Ok(v) => v,
        Err(f) => return failed(f),
    };
    match v["state"].as_str() {
        Some("approved") | Some("running") if !seen.ended => {
            still_waiting(&v, "running; its output so far came as progress")
        }
        _ => {
            // A session without a world yet takes the world its batch ran
            // in (kept for review): later calls continue it.
            if let Some(w) = v["world"].as_str() {
                srv.session.lock().await.world.get_or_insert_with(|| w.to_string());
            }
            finished(&v, &mut seen)
        }
    }
}

async fn observe(seen: &mut Seen, kind: &str, d: &Value, cap: usize, progress: &mut Progress) {
    match kind {
        "entry_started" => {
            let (i, of) = (d["index"].as_u64().unwrap_or(0) + 1, d["of"].as_u64().unwrap_or(0));
            progress.say(format!("[{i}/{of}] running: {}", d["command"].as_str().unwrap_or(""))).await;
        }
        "output" => {
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(d["data_b64"].as_str().unwrap_or(""))
                .unwrap_or_default();
            let entry = d["entry"].as_str().unwrap_or("").to_string();
            let stream = d["stream"].as_str().unwrap_or("stdout");
            let (out, err) = seen.out.entry(entry).or_insert_with(|| (Capped::new(cap), Capped::new(cap)));
            match stream {
                "stderr" => err.push(&bytes),
                _ => out.push(&bytes),
            }
            progress.say(format!("[{stream}] {}", String::from_utf8_lossy(&bytes))).await;
        }
        "entry_finished" => {
            progress.say(format!("entry finished: exit {}", d["result"]["exit_code"])).await;
        }
        "run_ended" => seen.ended = true,
        _ => {}
    }
}

/// A batch that ended (or was never run): each entry's state, exit code and output.
fn finished(v: &Value, seen: &mut Seen) -> CallToolResult {
    let id = v["id"].as_str().unwrap_or("?");
    let state = v["state"].as_str().unwrap_or("?");
    let mut text = format!("batch {id}: {state}");
    if let Some(r) = v["reason"].as_str() {
        text.push_str(&format!(" ({r})"));
    }
    text.push('\n');
    let mut entries = Vec::new();
    for e in v["entries"].as_array().into_iter().flatten() {
        let eid = e["id"].as_str().unwrap_or("");
        let (out, err) = match seen.out.get(eid) {
            Some((o, r)) => (o.value(), r.value()),
            None => (Value::Null, Value::Null),
        };
        text.push_str(&format!("[{}] {}: {}", e["index"], e["command"], e["state"].as_str().unwrap_or("?")));
        if !e["exit_code"].is_null() {
            text.push_str(&format!(", exit {}", e["exit_code"]));
        }
        if let Some(n) = e["note"].as_str() {
            text.push_str(&format!(" ({n})"));
        }
        if e["decision"]["effect"] == json!("deny") {
            text.push_str(&format!("\n    denied: {}", summary::decision_line(&e["decision"])));
        }
        text.push('\n');
        for (name, s) in [("stdout", &out), ("stderr", &err)] {
            if s["bytes"].as_u64().unwrap_or(0) > 0 {
                text.push_str(&format!(
                    "--- {name} ({} bytes) ---\n{}\n",
                    s["bytes"],
                    s["text"].as_str().unwrap_or("")
                ));
            }
        }
        entries.push(json!({"index": e["index"], "entry": eid, "command": e["command"], "state": e["state"],
            "exit_code": e["exit_code"], "category": e["category"], "note": e["note"], "decision": e["decision"],
            "stdout": out, "stderr": err}));
    }
    if v["world"].is_string() {
        text.push_str(&format!(
            "Its world is kept for review: diff with batch \"{id}\", then request_commit when it is ready."
        ));
    }
    let status = match state {
        "completed" | "failed" | "cancelled" | "rejected" | "expired" | "committed" => state,
        _ => "ended",
    };
    done(
        text,
        json!({"status": status, "batch": id, "state": state, "reason": v["reason"], "world": v["world"], "entries": entries}),
        false,
    )
}

impl From<Failure> for CallToolResult {
    fn from(f: Failure) -> CallToolResult {
        failed(f)
    }
}
