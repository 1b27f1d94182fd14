//! The rest of `/v1/`: who am I, a one-command world, the policy, the
//! audit log, kept worlds, history.

use super::{need_reviewer, need_role, App, Id, Json, Query};
use crate::error::ApiError;
use crate::identity::Caller;
use crate::jobs::run::RunBody;
use crate::jobs::{ended, read_capped, Msg};
use axum::extract::{Extension, State};
use axum::http::Uri;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use cloche_broker::ListFilter;
use cloche_policy::Policy;
use cloche_service::Context;
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::HashSet;
use std::time::Duration;

type Answer = Result<Response, ApiError>;

fn ok(v: impl serde::Serialize) -> Answer {
    Ok(axum::Json(v).into_response())
}

pub async fn whoami(State(app): State<App>, Extension(c): Extension<Caller>) -> Answer {
    ok(json!({"uid": c.uid, "gid": c.gid, "pid": c.pid, "groups": c.groups, "roles": c.roles.names(),
        "state_dir": app.state}))
}

/// `POST /v1/run`: the report, and the world's output (each stream up to
/// `limits.run_output_bytes`); with `?stream=true`, the output as it
/// comes, whole (`super::run_stream`).
pub async fn run(
    State(app): State<App>,
    Extension(c): Extension<Caller>,
    uri: Uri,
    Json(body): Json<RunBody>,
) -> Answer {
    need_role(&c)?;
    let stream = Query::parse(&uri, &["stream"])?.flag("stream")?;
    body.check()?;
    tracing::info!(uid = c.uid, pid = c.pid, argv0 = %body.argv[0], stream, "run");
    if stream {
        return super::run_stream::run(app, c, body).await;
    }
    let mut job = app.premade.start_run(&app.jobs, body, c.host_user(), false).await?;
    let cap = app.cfg.limits.run_output_bytes;
    let (Some(out), Some(err)) = (job.stdout.take(), job.stderr.take()) else {
        return Err(ApiError::internal("the run's output pipes are missing"));
    };
    let (out, err) = (tokio::spawn(read_capped(out, cap)), tokio::spawn(read_capped(err, cap)));
    let end = loop {
        match job.next().await {
            Ok(Some(Msg::Event { .. })) => continue,
            Ok(Some(Msg::Done { value })) => break Ok(value),
            Ok(other) => break Err(ended(other)),
            Err(e) => break Err(e),
        }
    };
    // The pipes end with the job process, right after its answer.
    let grace = Duration::from_secs(10);
    let (out, err) = match tokio::time::timeout(grace, async { (out.await, err.await) }).await {
        Ok((Ok(o), Ok(e))) => (o, e),
        _ => return Err(ApiError::internal("the world's output did not end with its job")),
    };
    let mut v = end?;
    for (name, (bytes, total)) in [("stdout", out), ("stderr", err)] {
        let text = String::from_utf8_lossy(&bytes);
        v[name] = json!(text);
        if matches!(text, std::borrow::Cow::Owned(_)) {
            v[format!("{name}_b64")] = json!(base64::engine::general_purpose::STANDARD.encode(&bytes));
        }
        v[format!("{name}_bytes")] = json!(total);
        v[format!("{name}_truncated")] = json!(total > bytes.len() as u64);
    }
    v["exit_code"] = v["report"]["exit_code"].clone();
    v["premade"] = json!(job.served.as_ref().is_some_and(|s| s.premade));
    ok(v)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckBody {
    /// The command line (shell).
    command: String,
    /// Classify with the policy bound to this project (default: the built-in policy).
    project: Option<String>,
}

/// The policy of `project` (its binding), or the built-in one.
fn policy_for(ctx: &Context, project: Option<&str>) -> Result<Policy, ApiError> {
    match project {
        None => Ok(Policy::builtin()),
        Some(p) => {
            let p =
                cloche_broker::normalize_abs(p).map_err(|e| ApiError::bad_request(format!("project {p:?}: {e}")))?;
            let key = cloche_service::policy_store::project_key(std::path::Path::new(&p))?;
            Ok(ctx.resolve(&key)?.1)
        }
    }
}

pub async fn policy_check(State(app): State<App>, Extension(c): Extension<Caller>, Json(b): Json<CheckBody>) -> Answer {
    need_role(&c)?;
    if b.command.len() > cloche_broker::batch_file::MAX_COMMAND || b.command.contains('\0') {
        return Err(ApiError::bad_request("command: at most 64 KiB, no NUL byte"));
    }
    let v = app
        .pool
        .run(move |ctx| {
            let policy = policy_for(ctx, b.project.as_deref())?;
            let d = policy.classify(&b.command);
            let mut v = serde_json::to_value(&d).map_err(|e| ApiError::internal(e.to_string()))?;
            v["policy"] = json!(policy.origin);
            Ok(v)
        })
        .await?;
    ok(v)
}

pub async fn policy_show(State(app): State<App>, Extension(c): Extension<Caller>, uri: Uri) -> Answer {
    need_role(&c)?;
    let q = Query::parse(&uri, &["project"])?;
    let project = q.get("project").map(str::to_string);
    let v = app
        .pool
        .run(move |ctx| {
            let policy = policy_for(ctx, project.as_deref())?;
            let rules = &policy.commands;
            Ok(json!({"policy": policy.origin, "unknown": rules.unknown(), "unresolved": rules.unresolved(),
                "rules": rules.rules()}))
        })
        .await?;
    ok(v)
}

pub async fn audit_verify(State(app): State<App>, Extension(c): Extension<Caller>) -> Answer {
    use cloche_service::output::{AuditVerify, Version};
    use cloche_trace::{audit, VerifyError};
    need_role(&c)?;
    let path = app.state.join("audit.jsonl");
    let log = path.display().to_string();
    let doc =
        move |ok| AuditVerify { schema_version: Version, log, ok, entries: None, head: None, line: None, why: None };
    let v = tokio::task::spawn_blocking(move || match audit::verify(&path) {
        Ok(r) => Ok(AuditVerify { entries: Some(r.lines), head: Some(r.head), ..doc(true) }),
        Err(VerifyError::Bad(b)) => {
            Ok(AuditVerify { line: Some(b.line), why: Some(crate::error::one_line(&b.why)), ..doc(false) })
        }
        Err(VerifyError::Io(e)) if e.is_not_found() => {
            Err(ApiError::not_found("there is no audit log yet: nothing to verify"))
        }
        Err(VerifyError::Io(e)) => Err(ApiError::internal(e.to_string())),
    })
    .await
    .map_err(|e| ApiError::internal(e.to_string()))??;
    ok(v)
}

pub async fn audit_tail(State(app): State<App>, Extension(c): Extension<Caller>, uri: Uri) -> Answer {
    need_role(&c)?;
    need_reviewer(&c, "reading the audit log")?;
    let q = Query::parse(&uri, &["lines"])?;
    let n = q.number("lines", 10, 100_000)?;
    let path = app.state.join("audit.jsonl");
    let records = tokio::task::spawn_blocking(move || match cloche_trace::audit::tail(&path, n) {
        Ok(r) => Ok(r),
        Err(e) if e.is_not_found() => Ok(Vec::new()),
        Err(e) => Err(ApiError::internal(e.to_string())),
    })
    .await
    .map_err(|e| ApiError::internal(e.to_string()))??;
    ok(json!({ "records": records }))
}

/// The batches `c` submitted (for an agent's view of worlds and history).
fn own_batches(ctx: &Context, c: &Caller) -> Result<HashSet<String>, ApiError> {
    let f = ListFilter { submitter: Some(c.actor()), ..ListFilter::default() };
    Ok(ctx.broker()?.list(&f)?.into_iter().map(|b| b.id).collect())
}

/// A kept world the caller may see (its own, or any for a reviewer);
/// another's is answered as one that does not exist.
pub(super) fn visible_world(ctx: &Context, c: &Caller, id: &str) -> Result<cloche_world::kept::KeptWorld, ApiError> {
    let hidden = || ApiError::not_found(format!("no kept world {id}"));
    let w = ctx.world_brief(id).map_err(|_| hidden())?;
    let own = if c.sees_all() { HashSet::new() } else { own_batches(ctx, c)? };
    match sees_world(c, w.owner.as_deref(), &own) {
        true => Ok(w),
        false => Err(hidden()),
    }
}

/// Whether an agent may see a kept world: its own run's, or its batch's.
fn sees_world(c: &Caller, owner: Option<&str>, own: &HashSet<String>) -> bool {
    match owner {
        _ if c.sees_all() => true,
        Some(o) if o == c.actor() => true,
        Some(o) => o.strip_prefix("batch:").is_some_and(|b| own.contains(b)),
        None => false,
    }
}

pub async fn worlds(State(app): State<App>, Extension(c): Extension<Caller>) -> Answer {
    need_role(&c)?;
    let list = app
        .pool
        .run(move |ctx| {
            let own = if c.sees_all() { HashSet::new() } else { own_batches(ctx, &c)? };
            let all = ctx.worlds()?;
            Ok(all.into_iter().filter(|w| sees_world(&c, w.owner.as_deref(), &own)).collect::<Vec<_>>())
        })
        .await?;
    ok(json!({ "worlds": list }))
}

pub async fn world(State(app): State<App>, Extension(c): Extension<Caller>, Id(id): Id) -> Answer {
    need_role(&c)?;
    let w = app
        .pool
        .run(move |ctx| {
            let hidden = || ApiError::not_found(format!("no kept world {id}"));
            let w = ctx.world(&id).map_err(|_| hidden())?;
            let own = if c.sees_all() { HashSet::new() } else { own_batches(ctx, &c)? };
            match sees_world(&c, w.owner.as_deref(), &own) {
                true => Ok(w),
                false => Err(hidden()),
            }
        })
        .await?;
    ok(w)
}

/// `POST /v1/worlds/{id}/discard`: a kept world discarded by its owner (an
/// agent's own session) or a reviewer; audited.
pub async fn discard(State(app): State<App>, Extension(c): Extension<Caller>, Id(id): Id) -> Answer {
    need_role(&c)?;
    let d = app
        .pool
        .run(move |ctx| {
            let w = visible_world(ctx, &c, &id)?;
            if !c.roles.reviewer && ctx.check_world_owner(&w, &c.actor()).is_err() {
                return Err(ApiError::forbidden("discarding another caller's world needs the reviewer role"));
            }
            Ok(ctx.discard(&w.id, &c.actor())?)
        })
        .await?;
    ok(d)
}

/// `POST /v1/worlds/{id}/fork`: a copy of a kept world of the caller's (root:
/// any), a new kept world of its own (`cloche worlds fork`). Another
/// caller's world is one that does not exist.
pub async fn fork(State(app): State<App>, Extension(c): Extension<Caller>, Id(id): Id) -> Answer {
    need_role(&c)?;
    let state = app.state.clone();
    let (uid, pid) = (c.uid, c.pid);
    let f = app
        .pool
        .run(move |ctx| {
            let f = ctx.fork_world(&id, &c.actor())?;
            // Whose it is, for a commit written as its owner: the
            // original's recorded owner, else the caller.
            let owner = crate::owners::read(&state, &id).or_else(|| (!c.host_user().is_root()).then(|| c.host_user()));
            if let Some(u) = owner {
                crate::owners::write(&state, &f.world, &u)
                    .map_err(|e| ApiError::internal(format!("world {}: recording its owner: {e}", f.world)))?;
            }
            Ok(f)
        })
        .await?;
    tracing::info!(uid, pid, world = %f.forked_from, fork = %f.world, "world forked");
    ok(f)
}

pub async fn history(State(app): State<App>, Extension(c): Extension<Caller>, uri: Uri) -> Answer {
    need_role(&c)?;
    let q = Query::parse(&uri, &["q", "limit", "stats"])?;
    let (text, limit, stats) = (q.get("q").unwrap_or("").to_string(), q.number("limit", 50, 10_000)?, q.flag("stats")?);
    if stats {
        need_reviewer(&c, "statistics over every caller's commands")?;
    }
    let v: Value = app
        .pool
        .run(move |ctx| {
            if stats {
                return Ok(json!({ "commands": ctx.broker()?.command_stats(limit)? }));
            }
            let items = ctx.broker()?.history(&text, if c.sees_all() { limit } else { limit.saturating_mul(20) })?;
            let items: Vec<_> = match c.sees_all() {
                true => items,
                false => {
                    let own = own_batches(ctx, &c)?;
                    items.into_iter().filter(|i| own.contains(&i.batch)).take(limit).collect()
                }
            };
            Ok(json!({ "entries": items }))
        })
        .await?;
    ok(v)
}
