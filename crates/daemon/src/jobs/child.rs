//! The job process (forked by the spawner, one thread): reads its request,
//! does it with the service, says what happens, exits.

use super::{Envelope, Job, Msg};
use crate::error::{one_line, ApiError};
use axum::http::StatusCode;
use base64::Engine;
use cloche_service::batch_run::{BatchEnd, BatchEvent, BatchObserver, Stream};
use cloche_service::commit::{CommitRequest, CommitStatus};
use cloche_service::{Context, HostUser, Options};
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::path::Path;

/// Most bytes of a request (a batch file is at most the daemon's body limit).
const MAX_REQUEST: u64 = 64 << 20;

/// The job's messages to the daemon.
pub struct Out(UnixStream);

impl Out {
    pub fn send(&mut self, m: &Msg) {
        // The daemon may be gone: the job goes on to its end all the same.
        if let Ok(mut line) = serde_json::to_vec(m) {
            line.push(b'\n');
            let _ = self.0.write_all(&line);
        }
    }
}

/// Runs the job of `ctl`; returns the process's exit code.
pub fn main(ctl: OwnedFd) -> i32 {
    let stream = UnixStream::from(ctl);
    let Ok(w) = stream.try_clone() else { return 1 };
    let mut out = Out(w);
    let mut line = String::new();
    let read = BufReader::new(Read::take(&stream, MAX_REQUEST)).read_line(&mut line);
    let env: Envelope =
        match read.map_err(|e| e.to_string()).and_then(|_| serde_json::from_str(&line).map_err(|e| e.to_string())) {
            Ok(e) => e,
            Err(e) => {
                out.send(&Msg::Failed { status: 500, error: format!("job request: {e}"), extra: None });
                return 1;
            }
        };
    out.send(&Msg::Started { pid: std::process::id(), runner: Some(cloche_broker::runner_tag()) });
    if let Job::Recover { after } = &env.job {
        match recover(&env.state, after.as_deref()) {
            Ok(value) => out.send(&Msg::Done { value }),
            Err(e) => out.send(&Msg::Failed { status: 500, error: one_line(&e), extra: None }),
        }
        return 0;
    }
    let ctx = Context::new(Options { state_dir: Some(env.state), env: Some(Vec::new()) });
    let r = match env.job {
        Job::Submit { batch, token, caller } => submit(&ctx, batch, token.as_deref(), &caller),
        Job::Run { run, caller, stream } => super::run::job(&ctx, run, &caller, stream),
        Job::Standby { run, caller } => {
            // It says all it has to say itself (`done` before its world ends).
            super::premade::standby(&ctx, run, &caller, &stream, &mut out);
            return 0;
        }
        Job::RunBatch { batch, owner } => run_batch(&ctx, &batch, owner.as_ref(), &mut out),
        Job::Commit { id, paths, exclude, force, actor, owner } => {
            commit(&ctx, &id, CommitRequest { paths, exclude, force, owner }, &actor)
        }
        Job::Recover { .. } => unreachable!("answered above"),
    };
    match r {
        Ok(value) => out.send(&Msg::Done { value }),
        Err(e) => out.send(&Msg::Failed { status: e.status.as_u16(), error: one_line(&e.message), extra: e.extra }),
    }
    0
}

/// Waits until the job that died (runner tag `after`) is gone, its
/// descriptors with it (its worlds' liveness locks), then recovers.
fn recover(state: &Path, after: Option<&str>) -> Result<Value, String> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while cloche_broker::runner_alive(after) && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let r = crate::recovery::recover(state, "job", 0)?;
    serde_json::to_value(&r).map_err(|e| e.to_string())
}

fn to_value(v: &impl serde::Serialize) -> Result<Value, ApiError> {
    serde_json::to_value(v).map_err(|e| ApiError::internal(e.to_string()))
}

fn submit(
    ctx: &Context,
    batch: cloche_broker::BatchFile,
    token: Option<&str>,
    caller: &HostUser,
) -> Result<Value, ApiError> {
    let check = |p: &Path| match caller.is_root() {
        true => Ok(()),
        false => caller.check_readable("project", p),
    };
    // Root cannot be told apart from another root: a batch root submits
    // under an agent's name is that agent's, as `cloche batch submit`
    // records it without a daemon, so that root can review what an agent
    // running as root (`cloche mcp`'s private daemon) submitted. Every
    // other caller is its uid, whatever name its batch carries.
    let submitter = match (&batch.agent, caller.is_root()) {
        (Some(agent), true) => format!("agent:{agent}"),
        _ => caller.actor(),
    };
    let view = ctx.submit_as(batch, token, &caller.actor(), &submitter, check)?;
    let state = ctx.state()?;
    crate::owners::write(&state.root, &view.id, caller)
        .map_err(|e| ApiError::internal(format!("batch {}: recording its owner: {e}", view.id)))?;
    to_value(&view)
}

fn run_batch(ctx: &Context, id: &str, owner: Option<&HostUser>, out: &mut Out) -> Result<Value, ApiError> {
    if let Some(u) = owner.filter(|u| !u.is_root()) {
        let project = ctx.broker()?.get(id)?.project;
        u.check_readable("project", Path::new(&project))?;
    }
    let user = owner.and_then(HostUser::world_user);
    let end = ctx.run_batch_as(id, user.as_ref(), &mut Forward { out })?;
    let end = match end {
        BatchEnd::Completed => "completed",
        BatchEnd::Failed => "failed",
        BatchEnd::Cancelled => "cancelled",
    };
    Ok(json!({ "end": end }))
}

/// A batch's steps, as events for the daemon.
struct Forward<'o> {
    out: &'o mut Out,
}

impl BatchObserver for Forward<'_> {
    fn event(&mut self, e: BatchEvent<'_>) {
        let event = match e {
            BatchEvent::Note(n) => json!({"event": "note", "text": n}),
            BatchEvent::WorldStarted { world } => json!({"event": "world_started", "world": world}),
            BatchEvent::EntryStarted { entry, index, of } => json!({"event": "entry_started", "entry": entry.id,
                "index": index, "of": of, "command": entry.command}),
            BatchEvent::Output { bytes: [], .. } => return,
            BatchEvent::Output { entry, stream, bytes } => json!({"event": "output", "entry": entry,
                "stream": match stream { Stream::Stdout => "stdout", Stream::Stderr => "stderr" },
                "data_b64": base64::engine::general_purpose::STANDARD.encode(bytes)}),
            BatchEvent::EntryFinished { entry, result } => {
                json!({"event": "entry_finished", "entry": entry, "result": result})
            }
            BatchEvent::Cancelled { entry } => json!({"event": "cancelled", "entry": entry}),
            BatchEvent::WorldKept { world, path } => json!({"event": "world_kept", "world": world, "path": path}),
            BatchEvent::Discarded { world, why } => json!({"event": "discarded", "world": world, "why": why}),
            BatchEvent::RetentionFailed { error } => json!({"event": "retention_failed", "error": error}),
        };
        self.out.send(&Msg::Event { event });
    }
}

fn commit(ctx: &Context, id: &str, req: CommitRequest, actor: &str) -> Result<Value, ApiError> {
    let r = ctx.commit(id, &req, actor)?;
    let mut v = to_value(&r)?;
    v["world"] = json!(r.world);
    v["status"] = json!(match r.status {
        CommitStatus::Refused => "refused",
        CommitStatus::Nothing { .. } => "nothing",
        CommitStatus::Applied { .. } => "applied",
        CommitStatus::Stopped { .. } => "stopped",
    });
    // What `cloche commit` says of it: the paths already on the host, the steps.
    match r.status {
        CommitStatus::Nothing { already } => v["already"] = json!(already),
        CommitStatus::Applied { steps } | CommitStatus::Stopped { steps } => v["steps"] = json!(steps),
        CommitStatus::Refused => {}
    }
    match r.status {
        CommitStatus::Refused => {
            let (status, why) = match r.refused.is_empty() {
                false => {
                    (StatusCode::FORBIDDEN, format!("commit refused: {} paths may not be committed", r.refused.len()))
                }
                true => (
                    StatusCode::CONFLICT,
                    format!("commit refused: {} conflicts (force to apply over them)", r.conflicts.len()),
                ),
            };
            Err(ApiError::new(status, why).with(v))
        }
        CommitStatus::Stopped { steps } => {
            let why = r.done.as_ref().and_then(|d| d.error.clone()).unwrap_or_default();
            Err(ApiError::internal(format!("commit stopped after {} of {steps} steps: {why}", r.applied.len())).with(v))
        }
        CommitStatus::Nothing { .. } | CommitStatus::Applied { .. } => Ok(v),
    }
}
