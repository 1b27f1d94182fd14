//! The HTTP API (`/v1/`, docs/api/openapi.json): the routes, the request
//! parts every handler shares (the caller, a JSON body read with a size
//! limit and a deadline, an id, a query), and who may see which batch.

mod agents;
mod batches;
mod diff;
pub mod events;
mod other;
mod run_stream;
mod web_login;

use crate::config::Config;
use crate::error::ApiError;
use crate::events::Bus;
use crate::identity::Caller;
use crate::jobs::Jobs;
use crate::pool::Pool;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use axum::routing::{get, post, MethodRouter};
use axum::Router;
use cloche_broker::BatchView;
use cloche_service::{Context, HostUser};
use http_body_util::BodyExt;
use serde::de::DeserializeOwned;
use std::path::PathBuf;
use std::sync::Arc;

/// What every handler works with.
pub struct AppState {
    pub cfg: Config,
    pub pool: Pool,
    pub jobs: Jobs,
    pub bus: Bus,
    /// The `GET /v1/events` streams open.
    pub streams: Arc<events::Streams>,
    /// The state directory (canonical).
    pub state: PathBuf,
    /// Worlds made ahead for `POST /v1/run`.
    pub premade: Arc<crate::premade::Premade>,
    /// The reviewer's page, when it is on (`cloched --web`).
    pub web: Option<Arc<crate::web::WebInfo>>,
}

pub type App = Arc<AppState>;

/// Every route: method, path (OpenAPI's syntax, which is axum's), handler.
/// `tests` check this list against docs/api/openapi.json.
pub fn routes() -> Vec<(&'static str, &'static str, MethodRouter<App>)> {
    vec![
        ("GET", "/v1/whoami", get(other::whoami)),
        ("GET", "/v1/batches", get(batches::list)),
        ("POST", "/v1/batches", post(batches::submit)),
        ("GET", "/v1/batches/{id}", get(batches::show)),
        ("POST", "/v1/batches/{id}/approve", post(batches::approve)),
        ("POST", "/v1/batches/{id}/reject", post(batches::reject)),
        ("POST", "/v1/batches/{id}/run", post(batches::run)),
        ("POST", "/v1/batches/{id}/cancel", post(batches::cancel)),
        ("POST", "/v1/batches/{id}/commit", post(batches::commit)),
        ("POST", "/v1/batches/{id}/discard", post(batches::discard)),
        ("POST", "/v1/batches/{id}/request-commit", post(batches::request_commit)),
        ("GET", "/v1/batches/{id}/diff", get(diff::diff)),
        ("GET", "/v1/batches/{id}/trace", get(batches::trace)),
        ("POST", "/v1/run", post(other::run)),
        ("POST", "/v1/policy/check", post(other::policy_check)),
        ("GET", "/v1/policy", get(other::policy_show)),
        ("GET", "/v1/audit/verify", get(other::audit_verify)),
        ("GET", "/v1/audit/tail", get(other::audit_tail)),
        ("GET", "/v1/worlds", get(other::worlds)),
        ("GET", "/v1/worlds/{id}", get(other::world)),
        ("GET", "/v1/worlds/{id}/diff", get(diff::world_diff)),
        ("POST", "/v1/worlds/{id}/commit", post(batches::commit_world)),
        ("POST", "/v1/worlds/{id}/discard", post(other::discard)),
        ("POST", "/v1/worlds/{id}/fork", post(other::fork)),
        ("POST", "/v1/worlds/{id}/request-commit", post(batches::request_commit_world)),
        ("GET", "/v1/history", get(other::history)),
        ("GET", "/v1/events", get(events::events)),
        ("GET", "/v1/agents", get(agents::list)),
        ("POST", "/v1/agents", post(agents::register)),
        ("POST", "/v1/web/login", post(web_login::login)),
        ("POST", "/v1/web/logout", post(web_login::logout)),
    ]
}

/// The router of [`routes`], answering JSON for unknown paths and methods.
pub fn router(app: App) -> Router {
    let mut r: Router<App> = Router::new();
    for (_, path, handler) in routes() {
        r = r.route(path, handler);
    }
    r.fallback(|| async { ApiError::not_found("no such route (see docs/api/openapi.json)") })
        .method_not_allowed_fallback(|| async {
            ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "this route does not take that method")
        })
        .with_state(app)
}

/// Refuses a caller without any role.
pub fn need_role(c: &Caller) -> Result<(), ApiError> {
    match c.roles.any() {
        true => Ok(()),
        false => Err(ApiError::forbidden(format!("uid {} has no role in this daemon's configuration", c.uid))),
    }
}

/// Refuses a caller that is not a reviewer.
pub fn need_reviewer(c: &Caller, what: &str) -> Result<(), ApiError> {
    match c.roles.reviewer {
        true => Ok(()),
        false => {
            Err(ApiError::forbidden(format!("{what} needs the reviewer role; uid {} has {:?}", c.uid, c.roles.names())))
        }
    }
}

/// A batch the caller may see: its own, or any for a reviewer. Another
/// agent's batch is answered as one that does not exist.
pub fn visible_batch(ctx: &Context, c: &Caller, id: &str) -> Result<BatchView, ApiError> {
    let hidden = || ApiError::not_found(format!("no batch {id}"));
    let v = ctx.broker()?.get(id).map_err(|e| match e {
        cloche_broker::BrokerError::NoSuchBatch(_) => hidden(),
        e => e.into(),
    })?;
    if c.sees_all() || v.submitter == c.actor() {
        return Ok(v);
    }
    Err(hidden())
}

/// Whose a batch is when its world writes on the host: its submitter when
/// that is a user other than root (`None`: root's, as with `cloche`).
pub fn owner_of(state: &std::path::Path, v: &BatchView) -> Result<Option<HostUser>, ApiError> {
    let Some(uid) = v.submitter.strip_prefix("uid:").and_then(|u| u.parse::<u32>().ok()) else { return Ok(None) };
    if uid == 0 {
        return Ok(None);
    }
    if let Some(u) = crate::owners::read(state, &v.id).filter(|u| u.uid == uid) {
        return Ok(Some(u));
    }
    match crate::config::Accounts::read().user_groups(uid) {
        Some((gid, groups)) => Ok(Some(HostUser { uid, gid, groups })),
        None => {
            Err(ApiError::conflict(format!("batch {}: the identity of its submitter uid {uid} is not known", v.id)))
        }
    }
}

/// A JSON body (the daemon's size limit and deadline; unknown fields
/// refused by the types).
pub struct Json<T>(pub T);

/// A JSON body that may be empty (its default then).
pub struct OptJson<T>(pub T);

impl<T: DeserializeOwned> FromRequest<App> for Json<T> {
    type Rejection = ApiError;
    async fn from_request(req: Request, app: &App) -> Result<Self, ApiError> {
        let bytes = read_body(req, app).await?;
        parse(&bytes).map(Json)
    }
}

impl<T: DeserializeOwned + Default> FromRequest<App> for OptJson<T> {
    type Rejection = ApiError;
    async fn from_request(req: Request, app: &App) -> Result<Self, ApiError> {
        let bytes = read_body(req, app).await?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(OptJson(T::default()));
        }
        parse(&bytes).map(OptJson)
    }
}

async fn read_body(req: Request, app: &App) -> Result<axum::body::Bytes, ApiError> {
    let limits = &app.cfg.limits;
    let max = limits.max_body_bytes;
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the request body is larger than {max} bytes (limits.max_body_bytes)"),
        )
    };
    let declared = req.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|n| n > max as u64) {
        return Err(too_large());
    }
    let body = http_body_util::Limited::new(req.into_body(), max);
    match tokio::time::timeout(limits.body_timeout, body.collect()).await {
        Err(_) => Err(ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            format!("the request body did not arrive within {} s", limits.body_timeout.as_secs()),
        )),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => Err(too_large()),
        Ok(Err(e)) => Err(ApiError::bad_request(format!("reading the request body: {e}"))),
        Ok(Ok(c)) => Ok(c.to_bytes()),
    }
}

fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    use serde_json::error::Category;
    serde_json::from_slice(bytes).map_err(|e| match e.classify() {
        Category::Data => ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, format!("invalid request: {e}")),
        _ => ApiError::bad_request(format!("malformed JSON: {e}")),
    })
}

/// A batch's or a world's id from the path: 16 lower-case hex digits.
pub struct Id(pub String);

impl FromRequestParts<App> for Id {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, app: &App) -> Result<Self, ApiError> {
        let axum::extract::Path(id) = axum::extract::Path::<String>::from_request_parts(parts, app)
            .await
            .map_err(|e| ApiError::bad_request(format!("invalid id: {e}")))?;
        if !cloche_world::state::valid_id(&id) {
            let shown: String = id.chars().take(40).collect();
            return Err(ApiError::bad_request(format!("invalid id {shown:?}: 16 lower-case hex digits")));
        }
        Ok(Id(id))
    }
}

/// The query string's pairs, only the names a route takes.
pub struct Query(Vec<(String, String)>);

impl Query {
    pub fn parse(uri: &axum::http::Uri, allowed: &[&str]) -> Result<Query, ApiError> {
        let q = uri.query().unwrap_or("");
        let pairs: Vec<(String, String)> =
            form_urlencoded::parse(q.as_bytes()).map(|(k, v)| (k.into_owned(), v.into_owned())).collect();
        if let Some((k, _)) = pairs.iter().find(|(k, _)| !allowed.contains(&k.as_str())) {
            return Err(ApiError::bad_request(format!("unknown query parameter {k:?} (this route takes {allowed:?})")));
        }
        Ok(Query(pairs))
    }

    pub fn get(&self, k: &str) -> Option<&str> {
        self.0.iter().rev().find(|(n, _)| n == k).map(|(_, v)| v.as_str())
    }

    pub fn all(&self, k: &str) -> Vec<&str> {
        self.0.iter().filter(|(n, _)| n == k).map(|(_, v)| v.as_str()).collect()
    }

    pub fn flag(&self, k: &str) -> Result<bool, ApiError> {
        match self.get(k) {
            None | Some("false") | Some("0") => Ok(false),
            Some("") | Some("true") | Some("1") => Ok(true),
            Some(v) => Err(ApiError::bad_request(format!("{k}={v:?}: true or false"))),
        }
    }

    pub fn number(&self, k: &str, default: usize, max: usize) -> Result<usize, ApiError> {
        match self.get(k) {
            None => Ok(default),
            Some(v) => v
                .parse::<usize>()
                .ok()
                .filter(|n| *n <= max)
                .ok_or_else(|| ApiError::bad_request(format!("{k}={v:?}: a whole number up to {max}"))),
        }
    }
}

#[cfg(test)]
mod tests;
