//! The reviewer's page (docs/web.md): HTML over HTTP on a loopback TCP
//! port, off unless the operator turns it on (`cloched --web ADDR`, or
//! `[web] listen`).
//!
//! A thin front end: every page and every action is a request to the same
//! `/v1/` router the Unix socket serves ([`Web::call`]), made in process
//! with the [`Caller`] of the browser's session (the uid, gid and groups
//! its login token was made for, the roles the configuration gives them
//! now). Who may see or do what is decided there, never here.
//!
//! - [`tokens`]: login tokens and sessions;
//! - [`guard`]: the Host header, the security headers, sessions, CSRF;
//! - [`pages`], [`review`], [`more`]: the views, rendered with `maud`
//!   (every interpolation escaped); [`actions`]: the forms' POSTs;
//! - [`output`]: batch entries' output as the event bus carries it, kept
//!   for the page (head, tail and download);
//! - `static/`: the page's script and style, served from the binary.

pub mod actions;
pub mod guard;
pub mod layout;
pub mod more;
pub mod output;
pub mod pages;
pub mod review;
pub mod tokens;

use crate::api::App;
use crate::identity::Caller;
use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::sync::Semaphore;

pub use tokens::Tokens;

/// What the socket's `/v1/web/login` needs of the page.
pub struct WebInfo {
    pub tokens: Tokens,
    /// The page's address (`http://127.0.0.1:8790/`).
    pub url: String,
    pub addr: SocketAddr,
}

/// The page's state.
pub struct Web {
    pub app: App,
    /// The `/v1/` router: every page and action goes through it.
    api: Router,
    pub info: Arc<WebInfo>,
    /// The Host header values the page answers to.
    hosts: Vec<String>,
    pub output: output::Store,
}

pub type W = Arc<Web>;

/// An answer of the `/v1/` router.
pub struct Reply {
    pub status: StatusCode,
    pub json: serde_json::Value,
    pub bytes: axum::body::Bytes,
}

impl Reply {
    pub fn ok(&self) -> bool {
        self.status.is_success()
    }

    /// The API's `error`, or the status.
    pub fn error(&self) -> String {
        self.json["error"].as_str().map(str::to_string).unwrap_or_else(|| format!("HTTP {}", self.status))
    }
}

impl Web {
    /// A request to the `/v1/` router as `c`: the same handlers, checks
    /// and audit as a client of the Unix socket gets.
    pub async fn call(&self, c: &Caller, method: Method, uri: &str, body: Option<serde_json::Value>) -> Reply {
        let mut req = Request::builder().method(method).uri(uri);
        if body.is_some() {
            req = req.header(header::CONTENT_TYPE, "application/json");
        }
        let body = body.map(|b| Body::from(b.to_string())).unwrap_or_else(Body::empty);
        let mut req = match req.body(body) {
            Ok(r) => r,
            Err(e) => {
                let json = serde_json::json!({"error": format!("bad request {uri}: {e}")});
                return Reply { status: StatusCode::BAD_REQUEST, json, bytes: Default::default() };
            }
        };
        req.extensions_mut().insert(c.clone());
        let resp = match tower::ServiceExt::oneshot(self.api.clone(), req).await {
            Ok(r) => r,
            Err(e) => match e {},
        };
        let status = resp.status();
        let bytes = http_body_util::BodyExt::collect(resp.into_body()).await.map(|c| c.to_bytes()).unwrap_or_default();
        let json = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
        Reply { status, json, bytes }
    }

    /// The `/v1/` router's streaming answer as it is (the event stream).
    pub async fn pass(&self, c: &Caller, uri: &str) -> Response {
        let mut req = match Request::builder().uri(uri).body(Body::empty()) {
            Ok(r) => r,
            Err(_) => return StatusCode::BAD_REQUEST.into_response(),
        };
        req.extensions_mut().insert(c.clone());
        match tower::ServiceExt::oneshot(self.api.clone(), req).await {
            Ok(r) => r,
            Err(e) => match e {},
        }
    }
}

/// The page's script and style (served from the binary; no build step).
const APP_JS: &str = include_str!("static/app.js");
const APP_CSS: &str = include_str!("static/app.css");

fn asset(ctype: &'static str, body: &'static str) -> Response {
    ([(header::CONTENT_TYPE, ctype), (header::CACHE_CONTROL, "no-cache")], body).into_response()
}

/// Every route of the page. The POST ones are the state-changing ones
/// (each refused without a session, its CSRF token and a same-origin
/// `Origin`; `/login` without the last): tests/web.rs walks them all.
pub fn router(w: W) -> Router {
    Router::new()
        .route("/", get(pages::batches))
        .route("/login", get(guard::login_form).post(guard::login))
        .route("/logout", post(guard::logout))
        .route("/batches/{id}", get(pages::batch))
        .route("/batches/{id}/diff", get(review::diff))
        .route("/batches/{id}/output/{entry}/{stream}", get(pages::output))
        .route("/batches/{id}/{action}", post(actions::batch))
        .route("/worlds", get(more::worlds))
        .route("/audit", get(more::audit))
        .route("/policy", get(more::policy))
        .route("/history", get(more::history))
        .route("/events", get(pages::events))
        .route("/static/app.js", get(|| async { asset("text/javascript; charset=utf-8", APP_JS) }))
        .route("/static/app.css", get(|| async { asset("text/css; charset=utf-8", APP_CSS) }))
        .fallback(|| async { layout::error_page(StatusCode::NOT_FOUND, "no such page") })
        .layer(axum::middleware::from_fn_with_state(w.clone(), guard::outer))
        .with_state(w)
}

/// The Host values a page at `addr` answers to: the address as a browser
/// writes it, and `localhost:PORT` for a loopback one.
pub fn hosts_of(addr: SocketAddr) -> Vec<String> {
    let mut v = vec![addr.to_string()];
    if addr.ip().is_loopback() {
        v.push(format!("localhost:{}", addr.port()));
    }
    v
}

/// Binds the page's listener (before the runtime starts: a refused
/// address stops the daemon's start with the reason).
pub fn bind(
    addr: SocketAddr,
    state: &std::path::Path,
    ttl: std::time::Duration,
) -> Result<(std::net::TcpListener, Arc<WebInfo>), String> {
    let l = std::net::TcpListener::bind(addr).map_err(|e| format!("the web page's address {addr}: {e}"))?;
    let addr = l.local_addr().map_err(|e| format!("the web page's address: {e}"))?;
    let info = WebInfo { tokens: Tokens::open(state, ttl), url: format!("http://{addr}/"), addr };
    Ok((l, Arc::new(info)))
}

/// Serves the page until the task is dropped: connections as the socket's
/// (a deadline for the head, at most `max_connections` at once).
pub async fn serve(listener: std::net::TcpListener, app: App, info: Arc<WebInfo>) {
    let (Ok(()), Ok(listener)) = (listener.set_nonblocking(true), listener.try_clone()) else { return };
    let Ok(listener) = tokio::net::TcpListener::from_std(listener) else { return };
    let output = output::Store::start(&app.state, &app.bus);
    let w = Arc::new(Web {
        api: crate::api::router(app.clone()),
        hosts: hosts_of(info.addr),
        info,
        output,
        app: app.clone(),
    });
    let router = router(w);
    let limits = app.cfg.limits.clone();
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    loop {
        let stream = match listener.accept().await {
            Ok((s, _)) => s,
            Err(e) => {
                tracing::warn!(error = %e, "web: accept");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tracing::warn!("web: too many connections: one refused");
            continue;
        };
        let router = router.clone();
        let header_timeout = limits.header_timeout;
        tokio::spawn(async move {
            if let Err(e) = crate::server::serve_connection(stream, router, header_timeout, None).await {
                tracing::debug!(error = %e, "web connection ended");
            }
            drop(slot);
        });
    }
}
