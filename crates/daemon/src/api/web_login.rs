//! `POST /v1/web/login` and `POST /v1/web/logout`: login tokens of the
//! reviewer's page (docs/web.md) for the caller of the socket, as the
//! kernel identifies it. The token is answered once; the daemon keeps its
//! hash (`crate::web::tokens`).

use super::{need_role, App};
use crate::error::ApiError;
use crate::identity::Caller;
use crate::web::tokens::Identity;
use axum::extract::{Extension, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

fn page_off() -> ApiError {
    ApiError::conflict("the web page is off: start cloched with --web 127.0.0.1:PORT (or [web] listen)")
}

/// A token for the caller (any role): its uid, gid and groups; roles are
/// the configuration's when the page is used.
pub async fn login(State(app): State<App>, Extension(c): Extension<Caller>) -> Result<Response, ApiError> {
    need_role(&c)?;
    let web = app.web.as_ref().ok_or_else(page_off)?;
    let who = Identity { uid: c.uid, gid: c.gid, groups: c.groups.clone() };
    let (token, expires_ms) = web.tokens.issue(who).map_err(ApiError::internal)?;
    tracing::info!(uid = c.uid, pid = c.pid, "web: login token issued");
    let expires_at = crate::web::layout::rfc3339(expires_ms / 1000);
    Ok((
        StatusCode::CREATED,
        axum::Json(json!({"token": token, "url": web.url, "login": format!("{}login", web.url),
        "expires_at": expires_at, "uid": c.uid, "roles": c.roles.names()})),
    )
        .into_response())
}

/// Revokes every token of the caller's uid (and their browsers' sessions).
pub async fn logout(State(app): State<App>, Extension(c): Extension<Caller>) -> Result<Response, ApiError> {
    need_role(&c)?;
    let web = app.web.as_ref().ok_or_else(page_off)?;
    let n = web.tokens.revoke_uid(c.uid).map_err(ApiError::internal)?;
    tracing::info!(uid = c.uid, revoked = n, "web: login tokens revoked");
    Ok(axum::Json(json!({"revoked": n})).into_response())
}
