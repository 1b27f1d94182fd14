//! `/v1/batches`: submit, list, show, approve, reject, run, cancel, diff,
//! commit, discard, trace. An agent sees and acts on the batches it
//! submitted; approving, rejecting, committing and discarding need the
//! reviewer role, and the broker never lets a review-level batch be
//! approved by its submitter, whatever its roles.

use super::{need_reviewer, need_role, owner_of, visible_batch, App, Id, Json, OptJson, Query};
use crate::error::ApiError;
use crate::identity::Caller;
use crate::jobs::{ended, Job, Msg};
use axum::extract::{Extension, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use cloche_broker::{BatchState, ListFilter};
use cloche_service::commit::CommitRequest;
use serde::Deserialize;
use serde_json::json;
use std::path::PathBuf;

type Answer = Result<Response, ApiError>;

fn ok(status: StatusCode, v: impl serde::Serialize) -> Answer {
    Ok((status, axum::Json(v)).into_response())
}

pub async fn list(State(app): State<App>, Extension(c): Extension<Caller>, uri: Uri) -> Answer {
    need_role(&c)?;
    let q = Query::parse(&uri, &["state", "project", "limit"])?;
    let state = match q.get("state") {
        Some(s) => {
            Some(BatchState::parse(s).ok_or_else(|| ApiError::bad_request(format!("state={s:?}: no such state")))?)
        }
        None => None,
    };
    let filter = ListFilter {
        state,
        project: q.get("project").map(str::to_string),
        submitter: (!c.sees_all()).then(|| c.actor()),
        limit: Some(q.number("limit", 1000, 1_000_000)?),
        ..ListFilter::default()
    };
    let list = app.pool.run(move |ctx| Ok(ctx.broker()?.list(&filter)?)).await?;
    ok(StatusCode::OK, json!({ "batches": list }))
}

pub async fn submit(
    State(app): State<App>,
    Extension(c): Extension<Caller>,
    headers: HeaderMap,
    Json(body): Json<serde_json::Value>,
) -> Answer {
    need_role(&c)?;
    // A batch file, or tool calls made into one (`cloche_service::ingest`),
    // with the file's own checks (an absolute project without `..`,
    // entries, commands): the entry limit is the project policy's, checked
    // when the broker records it.
    let batch = cloche_service::ingest::submission(body)
        .map_err(|e| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, e.to_string()))?;
    let token = match headers.get("x-cloche-autonomy-token") {
        None => None,
        Some(v) => {
            Some(v.to_str().map_err(|_| ApiError::bad_request("x-cloche-autonomy-token: not text"))?.to_string())
        }
    };
    let v = app.jobs.call(Job::Submit { batch, token, caller: c.host_user() }).await?;
    let id = v["id"].as_str().map(str::to_string);
    app.bus.publish(
        id.as_deref(),
        Some(&c.actor()),
        "submitted",
        json!({"state": v["state"], "decision": v["decision"]}),
    );
    // Waiting for a person: said on the stream, and to the hook.
    if let Ok(view) = serde_json::from_value::<cloche_broker::BatchView>(v.clone()) {
        if crate::hook::needs_review(&view) {
            let review = view.entries.iter().filter(|e| e.decision.effect == cloche_broker::Effect::Review).count();
            let data = json!({"project": view.project, "agent": view.agent, "decision": view.decision,
                "entries": view.entries.len(), "review_entries": review, "approval_ttl": view.approval_ttl});
            app.bus.publish(Some(&view.id), Some(&c.actor()), "review_needed", data);
            crate::hook::review_needed(&app.cfg.hooks, &view);
        }
    }
    tracing::info!(uid = c.uid, pid = c.pid, batch = id.as_deref().unwrap_or(""), "batch submitted");
    ok(StatusCode::CREATED, v)
}

pub async fn show(State(app): State<App>, Extension(c): Extension<Caller>, Id(id): Id) -> Answer {
    need_role(&c)?;
    let v = app.pool.read(move |ctx| visible_batch(ctx, &c, &id)).await?;
    ok(StatusCode::OK, v)
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct ApproveBody {
    /// Only these entries (all the batch's allowed and reviewable ones when absent).
    entries: Option<Vec<String>>,
}

pub async fn approve(
    State(app): State<App>,
    Extension(c): Extension<Caller>,
    Id(id): Id,
    OptJson(body): OptJson<ApproveBody>,
) -> Answer {
    need_role(&c)?;
    need_reviewer(&c, "approving a batch")?;
    let actor = c.actor();
    let v = app
        .pool
        .run(move |ctx| {
            visible_batch(ctx, &c, &id)?;
            Ok(ctx.broker()?.approve(&id, body.entries, &actor)?)
        })
        .await?;
    app.bus.publish(Some(&v.id), Some(&v.submitter), "approved", json!({"by": v.approved_by}));
    ok(StatusCode::OK, v)
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RejectBody {
    reason: Option<String>,
}

pub async fn reject(
    State(app): State<App>,
    Extension(c): Extension<Caller>,
    Id(id): Id,
    OptJson(body): OptJson<RejectBody>,
) -> Answer {
    need_role(&c)?;
    need_reviewer(&c, "rejecting a batch")?;
    let actor = c.actor();
    let v = app
        .pool
        .run(move |ctx| {
            visible_batch(ctx, &c, &id)?;
            Ok(ctx.broker()?.reject(&id, &actor, body.reason.as_deref())?)
        })
        .await?;
    app.bus.publish(Some(&v.id), Some(&v.submitter), "rejected", json!({"reason": v.reason}));
    ok(StatusCode::OK, v)
}

pub async fn cancel(State(app): State<App>, Extension(c): Extension<Caller>, Id(id): Id) -> Answer {
    need_role(&c)?;
    let actor = c.actor();
    let v = app
        .pool
        .run(move |ctx| {
            visible_batch(ctx, &c, &id)?;
            Ok(ctx.cancel(&id, &actor)?)
        })
        .await?;
    app.bus.publish(Some(&v.id), Some(&v.submitter), "cancelled", json!({}));
    ok(StatusCode::OK, v)
}

/// `POST /v1/batches/{id}/run[?wait=true][?dry_run=true]`: starts the run
/// in a job process and answers 202 with the batch once its world is
/// starting (or at once with an error: an expired approval, a batch not
/// approved); with `wait`, answers 200 with the batch when the run ended.
pub async fn run(State(app): State<App>, Extension(c): Extension<Caller>, Id(id): Id, uri: Uri) -> Answer {
    need_role(&c)?;
    let q = Query::parse(&uri, &["wait", "dry_run"])?;
    let (wait, dry) = (q.flag("wait")?, q.flag("dry_run")?);
    let state = app.state.clone();
    let (view, owner) = {
        let id = id.clone();
        let c = c.clone();
        app.pool
            .run(move |ctx| {
                let v = visible_batch(ctx, &c, &id)?;
                let o = owner_of(&state, &v)?;
                Ok((v, o))
            })
            .await?
    };
    if dry {
        let d = app.pool.run(move |ctx| Ok(ctx.dry_run(&id)?)).await?;
        return ok(StatusCode::OK, d);
    }
    let mut job = app.jobs.start(Job::RunBatch { batch: id.clone(), owner }, false).await?;
    tracing::info!(uid = c.uid, pid = c.pid, batch = %id, job = job.pid, "batch run started");
    let (first_tx, first_rx) = tokio::sync::oneshot::channel::<Result<(), ApiError>>();
    let bus = app.bus.clone();
    let submitter = view.submitter.clone();
    let batch = id.clone();
    let runner = tokio::spawn(async move {
        let mut first = Some(first_tx);
        let end = loop {
            match job.next().await {
                Ok(Some(Msg::Event { event })) => {
                    let (kind, data) = step(event);
                    bus.publish(Some(&batch), Some(&submitter), kind, data);
                    if let Some(t) = first.take() {
                        let _ = t.send(Ok(()));
                    }
                }
                Ok(Some(Msg::Done { value })) => break Ok(value),
                Ok(other) => break Err(ended(other)),
                Err(e) => break Err(e),
            }
        };
        bus.publish(
            Some(&batch),
            Some(&submitter),
            "run_ended",
            match &end {
                Ok(v) => v.clone(),
                Err(e) => json!({"error": e.message}),
            },
        );
        if let Some(t) = first.take() {
            let _ = t.send(end.as_ref().map(drop).map_err(Clone::clone));
        }
        end
    });
    first_rx.await.map_err(|_| ApiError::internal("the run's reader ended"))??;
    let status = match wait {
        true => {
            runner.await.map_err(|e| ApiError::internal(format!("the run's reader: {e}")))??;
            StatusCode::OK
        }
        false => StatusCode::ACCEPTED,
    };
    let v = app.pool.run(move |ctx| Ok(ctx.broker()?.get(&id)?)).await?;
    ok(status, v)
}

/// A run's step as the job said it (`{"event": NAME, ...}`): its kind
/// (the step's name; `run` for a name the daemon does not know, the whole
/// step then kept as the data) and its data (the rest).
fn step(mut event: serde_json::Value) -> (&'static str, serde_json::Value) {
    let name = event.get("event").and_then(|n| n.as_str()).unwrap_or("");
    match crate::events::RUN_STEPS.iter().find(|k| **k == name) {
        Some(kind) => {
            if let Some(m) = event.as_object_mut() {
                m.remove("event");
            }
            (kind, event)
        }
        None => ("run", event),
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct CommitBody {
    /// Only these paths and what is below them.
    #[serde(default)]
    paths: Vec<String>,
    /// Leave out these paths and what is below them.
    #[serde(default)]
    exclude: Vec<String>,
    /// Apply over conflicts (each one audited).
    #[serde(default)]
    force: bool,
}

/// Absolute paths without `..`, as given to a commit.
pub(super) fn abs_paths(list: &[String], what: &str) -> Result<Vec<PathBuf>, ApiError> {
    list.iter()
        .map(|p| {
            cloche_broker::normalize_abs(p)
                .map(PathBuf::from)
                .map_err(|e| ApiError::bad_request(format!("{what} {p:?}: {e}")))
        })
        .collect()
}

pub async fn commit(
    State(app): State<App>,
    Extension(c): Extension<Caller>,
    Id(id): Id,
    OptJson(body): OptJson<CommitBody>,
) -> Answer {
    need_role(&c)?;
    need_reviewer(&c, "committing a batch's world")?;
    let req = CommitRequest {
        paths: abs_paths(&body.paths, "path")?,
        exclude: abs_paths(&body.exclude, "exclude")?,
        force: body.force,
        owner: None,
    };
    let state = app.state.clone();
    let view = {
        let (c, id) = (c.clone(), id.clone());
        app.pool.run(move |ctx| visible_batch(ctx, &c, &id)).await?
    };
    let owner = owner_of(&state, &view)?;
    let job = Job::Commit { id, paths: req.paths, exclude: req.exclude, force: req.force, actor: c.actor(), owner };
    let r = app.jobs.call(job).await;
    let (kind, data) = match &r {
        Ok(v) => ("committed", json!({"status": v["status"], "applied": v["applied"].as_array().map(Vec::len)})),
        Err(e) => ("commit_refused", json!({"error": e.message})),
    };
    app.bus.publish(Some(&view.id), Some(&view.submitter), kind, data);
    ok(StatusCode::OK, r?)
}

/// `POST /v1/worlds/{id}/commit`: a kept world committed by a reviewer (a
/// session's world, continued by runs), written as whom it belongs to.
pub async fn commit_world(
    State(app): State<App>,
    Extension(c): Extension<Caller>,
    Id(id): Id,
    OptJson(body): OptJson<CommitBody>,
) -> Answer {
    need_role(&c)?;
    need_reviewer(&c, "committing a world")?;
    let (paths, exclude) = (abs_paths(&body.paths, "path")?, abs_paths(&body.exclude, "exclude")?);
    let state = app.state.clone();
    let owner = {
        let (c, id) = (c.clone(), id.clone());
        app.pool
            .run(move |ctx| {
                let w = super::other::visible_world(ctx, &c, &id)?;
                world_owner(&state, &w)
            })
            .await?
    };
    let job = Job::Commit { id, paths, exclude, force: body.force, actor: c.actor(), owner };
    ok(StatusCode::OK, app.jobs.call(job).await?)
}

/// Whose a kept world is when its commit writes on the host: the caller
/// recorded for it when it is not root (`None`: root's).
fn world_owner(
    state: &std::path::Path,
    w: &cloche_world::kept::KeptWorld,
) -> Result<Option<cloche_service::HostUser>, ApiError> {
    let uid = w.owner.as_deref().and_then(|o| o.strip_prefix("uid:")).and_then(|u| u.parse::<u32>().ok());
    match uid {
        None | Some(0) => Ok(None),
        Some(uid) => match crate::owners::read(state, &w.id).filter(|u| u.uid == uid) {
            Some(u) => Ok(Some(u)),
            None => {
                Err(ApiError::conflict(format!("world {}: the identity of its owner uid {uid} is not known", w.id)))
            }
        },
    }
}

pub async fn discard(State(app): State<App>, Extension(c): Extension<Caller>, Id(id): Id) -> Answer {
    need_role(&c)?;
    need_reviewer(&c, "discarding a batch's world")?;
    let actor = c.actor();
    let (d, submitter) = app
        .pool
        .run(move |ctx| {
            let v = visible_batch(ctx, &c, &id)?;
            Ok((ctx.discard(&v.id, &actor)?, v.submitter))
        })
        .await?;
    app.bus.publish(d.batch.as_deref(), Some(&submitter), "discarded", json!({"world": d.world}));
    ok(StatusCode::OK, d)
}

pub async fn trace(State(app): State<App>, Extension(c): Extension<Caller>, Id(id): Id) -> Answer {
    need_role(&c)?;
    let spans = app
        .pool
        .run(move |ctx| {
            visible_batch(ctx, &c, &id)?;
            let path = ctx.state()?.root.join("spans.jsonl");
            cloche_trace::span::read_batch(&path, &id).map_err(|e| ApiError::internal(e.to_string()))
        })
        .await?;
    ok(StatusCode::OK, json!({ "spans": spans.spans }))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct RequestCommitBody {
    /// A word for the reviewer (at most 4 KiB).
    note: Option<String>,
}

impl RequestCommitBody {
    /// The note, checked: at most 4 KiB, no control characters but newlines.
    fn note(self) -> Result<String, ApiError> {
        let note = self.note.unwrap_or_default();
        if note.len() > 4096 || note.chars().any(|ch| ch.is_control() && ch != '\n') {
            return Err(ApiError::bad_request("note: at most 4 KiB, no control characters but newlines"));
        }
        Ok(note)
    }
}

/// `POST /v1/batches/{id}/request-commit`: the batch's submitter (or a
/// reviewer) says its kept world is ready to be committed. Audited
/// (`commit_requested`) and told on the event stream; nothing else
/// changes: committing stays a reviewer's.
pub async fn request_commit(
    State(app): State<App>,
    Extension(c): Extension<Caller>,
    Id(id): Id,
    OptJson(body): OptJson<RequestCommitBody>,
) -> Answer {
    need_role(&c)?;
    let note = body.note()?;
    let actor = c.actor();
    let (v, world) = app
        .pool
        .run(move |ctx| {
            let v = visible_batch(ctx, &c, &id)?;
            let ended = matches!(v.state, BatchState::Completed | BatchState::Failed | BatchState::Cancelled);
            let world = v.world.clone().filter(|w| ended && ctx.world(w).is_ok()).ok_or_else(|| {
                ApiError::conflict(format!(
                    "batch {id} is {}: only a batch that ran and whose world is still kept can be offered for commit",
                    v.state.as_str()
                ))
            })?;
            let details = json!({"world": world, "note": note});
            ctx.broker()?.review_event("commit_requested", Some(&v.id), &actor, details)?;
            Ok((v, world))
        })
        .await?;
    app.bus.publish(Some(&v.id), Some(&v.submitter), "commit_requested", json!({"world": world, "by": v.submitter}));
    tracing::info!(batch = %v.id, world = %world, "commit requested");
    ok(StatusCode::OK, json!({"batch": v.id, "world": world, "state": v.state}))
}

/// `POST /v1/worlds/{id}/request-commit`: the same for a kept world that no
/// batch ran (an agent's session world, `POST /v1/run` with `keep` or
/// `world`): its owner (or a reviewer) offers it for commit.
pub async fn request_commit_world(
    State(app): State<App>,
    Extension(c): Extension<Caller>,
    Id(id): Id,
    OptJson(body): OptJson<RequestCommitBody>,
) -> Answer {
    need_role(&c)?;
    let note = body.note()?;
    let actor = c.actor();
    let w = app
        .pool
        .run(move |ctx| {
            let w = super::other::visible_world(ctx, &c, &id)?;
            if !c.roles.reviewer && ctx.check_world_owner(&w, &actor).is_err() {
                return Err(ApiError::forbidden("offering another caller's world for commit needs the reviewer role"));
            }
            ctx.broker()?.review_event("commit_requested", None, &actor, json!({"world": w.id, "note": note}))?;
            Ok(w)
        })
        .await?;
    app.bus.publish(None, w.owner.as_deref(), "commit_requested", json!({"world": w.id, "by": w.owner}));
    tracing::info!(world = %w.id, "commit requested");
    ok(StatusCode::OK, json!({"world": w.id}))
}
