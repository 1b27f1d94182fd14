//! `cloche batch ...`, `diff`, `commit` and `discard` through the daemon:
//! its routes (`/v1/batches/...`), printed by the same functions as the
//! service's answers in this process; a batch's run followed on the
//! daemon's event stream (`GET /v1/events?batch=ID`) and shown as
//! `cloche batch run` shows it here.

use super::{enc, here_hint, refusal, Client};
use crate::batch_cmd::{
    end_code, print_dry_run, print_list, print_show, submission, BatchCommand, Printer, Submission,
};
use crate::output::emit;
use crate::review_cmd::{CommitArgs, DiffArgs};
use crate::worlds_cmd::DiscardArgs;
use base64::Engine;
use cloche_broker::{BatchView, EntryResult, RunnableEntry};
use cloche_service::batch_run::{BatchEnd, BatchEvent, BatchObserver, Stream};
use cloche_service::commit::CommitStatus;
use cloche_service::review::abs_bytes;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};

fn batch_path(id: &str, what: &str) -> String {
    match what {
        "" => format!("/v1/batches/{}", enc(id)),
        w => format!("/v1/batches/{}/{w}", enc(id)),
    }
}

fn view(v: Value) -> Result<BatchView, String> {
    serde_json::from_value(v).map_err(|e| format!("the daemon's batch: {e}"))
}

pub fn main(mut c: Client, cmd: BatchCommand) -> Result<i32, String> {
    match cmd {
        BatchCommand::Submit { file, tools, project, agent, token, policy, json } => {
            if policy.is_some() {
                return Err(format!(
                    "--policy cannot go through the daemon at {} (it classifies with the policy bound to the \
                     project: cloche policy set){}",
                    c.socket().display(),
                    here_hint()
                ));
            }
            // Tool calls go as they are: the daemon makes them a batch.
            let body = match submission(&file, tools.as_deref(), project.as_deref(), agent.as_deref())? {
                Submission::Batch(b) => serde_json::to_value(&b),
                Submission::ToolCalls(s) => serde_json::to_value(&s),
            };
            let body = body.map_err(|e| format!("json: {e}"))?;
            let headers = token.into_iter().map(|t| ("X-Cloche-Autonomy-Token", t)).collect();
            let (status, v) = c.request_with("POST", "/v1/batches", Some(&body), headers)?;
            if !(200..300).contains(&status) {
                return Err(refusal(status, &v));
            }
            match json {
                true => emit(&v)?,
                false => println!("{}", v["id"].as_str().unwrap_or_default()),
            }
        }
        BatchCommand::List { pending, json } => {
            let state = if pending { "&state=pending" } else { "" };
            print_list(&c.call("GET", &format!("/v1/batches?limit=1000000{state}"), None)?, json)?
        }
        BatchCommand::Show { id, json } => print_show(&view(c.call("GET", &batch_path(&id, ""), None)?)?, json)?,
        BatchCommand::Approve { id, entries, json } => {
            let body = json!({ "entries": entries });
            let v = view(c.call("POST", &batch_path(&id, "approve"), Some(&body))?)?;
            eprintln!("cloche: batch {} {}", v.id, v.state);
            if json {
                emit(&v)?;
            }
        }
        BatchCommand::Reject { id, reason, json } => {
            let v = c.call("POST", &batch_path(&id, "reject"), Some(&json!({ "reason": reason })))?;
            if json {
                emit(&v)?;
            }
        }
        BatchCommand::Cancel { id, json } => {
            let v = c.call("POST", &batch_path(&id, "cancel"), None)?;
            if json {
                emit(&v)?;
            }
        }
        BatchCommand::Run { id, dry_run: true, json } => {
            print_dry_run(&c.call("POST", &format!("{}?dry_run=true", batch_path(&id, "run")), None)?, json)?
        }
        BatchCommand::Run { id, dry_run: false, json } => return run(c, &id, json),
    }
    Ok(0)
}

/// `batch run ID`: subscribed to the batch's events first, then the run
/// started, then its steps printed as they come, up to its end.
fn run(mut c: Client, id: &str, json: bool) -> Result<i32, String> {
    let sub = c.open("GET", &format!("/v1/events?batch={}", enc(id)), None, Vec::new(), None)?;
    let status = sub.status;
    if status == 404 && sub.is_json() {
        let v: Value = sub.bytes().map(|b| serde_json::from_slice(&b).unwrap_or(Value::Null)).unwrap_or(Value::Null);
        if !refusal(status, &v).contains("no such route") {
            return Err(refusal(status, &v));
        }
        // A daemon without an event stream: the run's end, without its output.
        eprintln!("cloche: this daemon has no event stream: the entries' output is not shown");
        let v = view(c.call("POST", &format!("{}?wait=true", batch_path(id, "run")), None)?)?;
        return finished(&mut c, id, json, Some(v));
    }
    if status != 200 {
        let v = sub.bytes().map(|b| serde_json::from_slice(&b).unwrap_or(Value::Null)).unwrap_or(Value::Null);
        return Err(refusal(status, &v));
    }
    let mut events = sub.events();
    c.call("POST", &batch_path(id, "run"), None)?;
    let mut printer = Printer { json };
    let end = loop {
        let e = match events.next_event() {
            Ok(Some(e)) => e,
            Ok(None) => return Err("the daemon closed the event stream before the run ended".into()),
            Err(e) => return Err(format!("the daemon's event stream: {e}")),
        };
        let frame: Value = serde_json::from_str(&e.data).unwrap_or(Value::Null);
        if frame["batch"].as_str().is_some_and(|b| b != id) {
            continue;
        }
        let (kind, data) = match (e.kind.as_str(), &frame["data"]) {
            // A step as the job process tells it, not yet named by the stream.
            ("run", d) => (d["event"].as_str().unwrap_or_default().to_string(), d.clone()),
            (k, d) => (k.to_string(), d.clone()),
        };
        if kind == "lagged" {
            step(&mut printer, &kind, &data);
            // Its end may be among what was skipped: a run that ended is
            // ended by its record.
            let v = view(c.call("GET", &batch_path(id, ""), None)?)?;
            if matches!(v.state.as_str(), "completed" | "failed" | "cancelled") {
                return finished(&mut c, id, json, Some(v));
            }
            continue;
        }
        if kind == "run_ended" {
            break match data["end"].as_str() {
                Some("completed") => BatchEnd::Completed,
                Some("failed") => BatchEnd::Failed,
                Some("cancelled") => BatchEnd::Cancelled,
                _ => return Err(refusal(500, &data)),
            };
        }
        step(&mut printer, &kind, &data);
    };
    let code = end_code(id, end);
    if json {
        finished(&mut c, id, json, None)?;
    }
    Ok(code)
}

/// One step of the run, printed as this process prints its own runs.
fn step(p: &mut Printer, kind: &str, d: &Value) {
    let s = |k: &str| d[k].as_str().unwrap_or_default().to_string();
    let n = |k: &str| d[k].as_u64().and_then(|n| usize::try_from(n).ok()).unwrap_or(0);
    match kind {
        "note" => p.event(BatchEvent::Note(&s("text"))),
        "world_started" => p.event(BatchEvent::WorldStarted { world: &s("world") }),
        "entry_started" => {
            let entry = RunnableEntry {
                id: s("entry"),
                index: n("index"),
                command: s("command"),
                cwd: String::new(),
                env: Default::default(),
                timeout: None,
            };
            p.event(BatchEvent::EntryStarted { entry: &entry, index: n("index"), of: n("of") })
        }
        "output" => {
            let bytes = base64::engine::general_purpose::STANDARD.decode(s("data_b64")).unwrap_or_default();
            let stream = if d["stream"] == "stdout" { Stream::Stdout } else { Stream::Stderr };
            p.event(BatchEvent::Output { entry: &s("entry"), stream, bytes: &bytes })
        }
        "entry_finished" => {
            if let Ok(result) = serde_json::from_value::<EntryResult>(d["result"].clone()) {
                p.event(BatchEvent::EntryFinished { entry: &s("entry"), result: &result })
            }
        }
        "cancelled" if d["entry"].is_string() => p.event(BatchEvent::Cancelled { entry: &s("entry") }),
        "world_kept" => p.event(BatchEvent::WorldKept { world: &s("world"), path: Path::new(&s("path")) }),
        "discarded" if d["why"].is_string() => p.event(BatchEvent::Discarded { world: &s("world"), why: &s("why") }),
        "retention_failed" => p.event(BatchEvent::RetentionFailed { error: &s("error") }),
        "lagged" => eprintln!("cloche: the daemon's event stream skipped events: the output shown is incomplete"),
        _ => {}
    }
}

/// The batch after its run (`--json`), and the exit code of a run whose
/// steps were not heard.
fn finished(c: &mut Client, id: &str, json: bool, ended: Option<BatchView>) -> Result<i32, String> {
    let v = match ended {
        Some(v) => v,
        None => view(c.call("GET", &batch_path(id, ""), None)?)?,
    };
    if json {
        emit(&v)?;
    }
    Ok(end_code(
        id,
        match v.state.as_str() {
            "cancelled" => BatchEnd::Cancelled,
            "completed" => BatchEnd::Completed,
            _ => BatchEnd::Failed,
        },
    ))
}

/// A batch route answered `status`: when it is 404 and `id` is a kept
/// world the caller may see (`cloche run --keep`'s, a session's), the
/// world's own route for `what` (`diff`, `commit`, `discard`).
fn world_route(c: &mut Client, id: &str, status: u16, what: &str) -> Option<String> {
    let world = format!("/v1/worlds/{}", enc(id));
    (status == 404 && c.request("GET", &world, None).is_ok_and(|(s, _)| s == 200)).then(|| format!("{world}/{what}"))
}

/// Absolute paths as the daemon takes them (relative ones from the
/// current directory, as `cloche` takes them).
fn abs_paths(list: &[PathBuf]) -> Result<Vec<String>, String> {
    list.iter().map(|p| Ok(String::from_utf8(abs_bytes(p)?).unwrap_or_default())).collect()
}

pub fn diff(mut c: Client, a: DiffArgs) -> Result<(), String> {
    let format = match (a.json, a.stat, a.name_status) {
        (true, _, _) => "json",
        (_, true, _) => "stat",
        (_, _, true) => "name-status",
        _ => "full",
    };
    let mut q = format!("format={format}");
    for p in abs_paths(&a.paths)? {
        q.push_str(&format!("&path={}", enc(&p)));
    }
    if a.touched && !a.json {
        q.push_str("&touched=true");
    }
    if !a.json && crate::term::color_stdout() {
        q.push_str("&color=true");
    }
    let mut path = batch_path(&a.id, "diff");
    let (status, is_json, bytes) = loop {
        let r = c.open("GET", &format!("{path}?{q}"), None, Vec::new(), None)?;
        let (status, is_json) = (r.status, r.is_json());
        let bytes = r.bytes().map_err(|e| format!("the daemon at {}: {e}", c.socket().display()))?;
        match world_route(&mut c, &a.id, status, "diff").filter(|_| path.starts_with("/v1/batches/")) {
            Some(w) => path = w,
            None => break (status, is_json, bytes),
        }
    };
    if status != 200 {
        return Err(refusal(status, &serde_json::from_slice(&bytes).unwrap_or(Value::Null)));
    }
    match a.json {
        true if is_json => {
            emit(&serde_json::from_slice::<Value>(&bytes).map_err(|e| format!("the daemon's diff: {e}"))?)
        }
        true => Err("the daemon's diff is not JSON".into()),
        false => crate::term::page(&bytes).map_err(|e| format!("stdout: {e}")),
    }
}

pub fn commit(mut c: Client, a: CommitArgs) -> i32 {
    let r = (|| -> Result<i32, String> {
        let body = json!({"paths": abs_paths(&a.paths)?, "exclude": abs_paths(&a.exclude)?, "force": a.force});
        let (mut status, mut v) = c.request("POST", &batch_path(&a.id, "commit"), Some(&body))?;
        if let Some(w) = world_route(&mut c, &a.id, status, "commit") {
            (status, v) = c.request("POST", &w, Some(&body))?;
        }
        let n = |k: &str| v[k].as_u64().and_then(|n| usize::try_from(n).ok()).unwrap_or(0);
        let ended = match v["status"].as_str() {
            Some("refused") => CommitStatus::Refused,
            Some("nothing") => CommitStatus::Nothing { already: n("already") },
            Some("stopped") => CommitStatus::Stopped { steps: n("steps") },
            Some("applied") => CommitStatus::Applied { steps: n("steps") },
            _ => return Err(refusal(status, &v)),
        };
        let world = v["world"].as_str().unwrap_or_default().to_string();
        // The document `cloche commit --json` prints, without what the
        // daemon adds beside it: its own fields, and the refusal's
        // `error` (in place of the commit's own when it stopped).
        if let Some(o) = v.as_object_mut() {
            for k in ["world", "status", "already", "steps"] {
                o.remove(k);
            }
            let done = o.contains_key("forced");
            match (done, &ended) {
                (false, _) => drop(o.remove("error")),
                (true, CommitStatus::Stopped { .. }) => {
                    let said = o.get("error").and_then(Value::as_str).unwrap_or_default();
                    let own = said.split_once(" steps: ").map_or(said, |(_, why)| why).to_string();
                    o.insert("error".into(), Value::String(own));
                }
                (true, _) => {}
            }
        }
        Ok(crate::review_cmd::report(&v, &world, &ended, a.json))
    })();
    r.unwrap_or_else(crate::fail)
}

pub fn discard(mut c: Client, a: DiscardArgs) -> Result<(), String> {
    let (mut status, mut v) = c.request("POST", &batch_path(&a.id, "discard"), None)?;
    if let Some(w) = world_route(&mut c, &a.id, status, "discard") {
        (status, v) = c.request("POST", &w, None)?;
    }
    if status != 200 {
        return Err(refusal(status, &v));
    }
    eprintln!("cloche: world {} discarded", v["world"].as_str().unwrap_or_default());
    if a.json {
        emit(&v)?;
    }
    Ok(())
}
