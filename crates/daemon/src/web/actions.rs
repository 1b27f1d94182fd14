//! The forms' POSTs: each checked (session, same origin, CSRF token), then
//! made into the API's request for the same action as this caller, whose
//! answer decides: a refusal is shown with the API's status and reason.

use super::guard::{check_post, read_form, Auth};
use super::pages::{enc, refused};
use super::{layout, W};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use serde_json::json;

/// The actions on a batch (`POST /batches/{id}/{action}`).
pub const ACTIONS: &[&str] = &["approve", "reject", "run", "cancel", "commit", "discard"];

pub async fn batch(
    State(w): State<W>,
    auth: Auth,
    Path((id, action)): Path<(String, String)>,
    headers: HeaderMap,
    body: axum::body::Body,
) -> Response {
    let form = match read_form(&w, body).await {
        Ok(f) => f,
        Err(r) => return r,
    };
    if let Err(r) = check_post(&w, &headers, &auth, &form) {
        return r;
    }
    if !ACTIONS.contains(&action.as_str()) {
        return layout::error_page(StatusCode::NOT_FOUND, "no such action");
    }
    let body = match action.as_str() {
        "approve" => {
            let entries = form.all("entry");
            Some(match entries.is_empty() {
                true => json!({}),
                false => json!({ "entries": entries }),
            })
        }
        "reject" => Some(json!({ "reason": form.get("reason").filter(|r| !r.is_empty()) })),
        "commit" => {
            let paths = match form.get("which") {
                Some("all") => Vec::new(),
                _ => {
                    let p = form.all("path");
                    if p.is_empty() {
                        return layout::error_page(StatusCode::BAD_REQUEST, "no path selected: nothing committed");
                    }
                    p
                }
            };
            Some(json!({ "paths": paths, "force": form.get("force") == Some("1") }))
        }
        _ => None,
    };
    let id = enc(&id);
    let r = w.call(&auth.caller, Method::POST, &format!("/v1/batches/{id}/{action}"), body).await;
    tracing::info!(uid = auth.caller.uid, batch = %id, action, status = r.status.as_u16(), "web: action");
    match action.as_str() {
        "commit" => super::review::commit_result(&auth, &id, &r),
        _ if !r.ok() => refused(&r),
        "discard" => Redirect::to("/").into_response(),
        _ => Redirect::to(&format!("/batches/{id}")).into_response(),
    }
}
