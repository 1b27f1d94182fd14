//! `/v1/agents`: agents' names, and what the caller uses of its budgets.
//!
//! A daemon's caller submits its batches as itself (`uid:N`): its budgets
//! are checked against what that identity used, shown as `caller`. An
//! agent name is a label its batches may carry (`"agent"` of a batch
//! file); registering one (`POST`) gives it an id and makes it the
//! caller's: nobody else may register it again. An agent caller sees the
//! names it registered; a reviewer every name (with the usage of batches
//! submitted as `agent:NAME`, as `cloche agents` shows them).

use super::{need_role, App, Json};
use crate::error::ApiError;
use crate::identity::Caller;
use axum::extract::{Extension, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

type Answer = Result<Response, ApiError>;

/// `GET /v1/agents`.
pub async fn list(State(app): State<App>, Extension(c): Extension<Caller>) -> Answer {
    need_role(&c)?;
    let (actor, all) = (c.actor(), c.sees_all());
    let v = app
        .pool
        .run(move |ctx| {
            let mut list = ctx.agents()?;
            if !all {
                list.agents.retain(|a| a.registered_by == actor);
            }
            let caller = ctx.broker()?.submitter_usage(&actor)?;
            Ok(json!({"schema_version": 1, "agents": list.agents, "budgets": list.budgets, "caller": caller}))
        })
        .await?;
    Ok(axum::Json(v).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegisterBody {
    /// 1 to 64 of `A-Z a-z 0-9 . _ - @ :`.
    name: String,
}

/// `POST /v1/agents`: 201 with the new agent, 200 with the caller's own
/// agent of that name, 409 when another caller registered it.
pub async fn register(
    State(app): State<App>,
    Extension(c): Extension<Caller>,
    Json(body): Json<RegisterBody>,
) -> Answer {
    need_role(&c)?;
    let actor = c.actor();
    let (made, agent) = app
        .pool
        .run(move |ctx| {
            cloche_broker::check_agent_name(&body.name)?;
            let known = ctx.broker()?.agent(&body.name).is_ok();
            let a = ctx.register_agent(&body.name, &actor)?;
            // The first registration stands (the broker's transaction):
            // a name another caller holds is not given to this one.
            if a.agent.registered_by != actor {
                let why = format!("agent {}: registered by another caller", body.name);
                return Err(ApiError::new(StatusCode::CONFLICT, why));
            }
            Ok((!known, a))
        })
        .await?;
    tracing::info!(uid = c.uid, pid = c.pid, agent = %agent.agent.name, made, "agent registered");
    let status = if made { StatusCode::CREATED } else { StatusCode::OK };
    Ok((status, axum::Json(agent)).into_response())
}
