//! What stands before every page: the Host header (DNS rebinding), the
//! security headers of every answer, the session of a request (its
//! cookie), and for every state-changing one its CSRF token and a
//! same-origin `Origin`. Login and logout.

use super::layout;
use super::tokens::{same, Session};
use super::W;
use crate::identity::Caller;
use axum::extract::{FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use maud::html;

/// The session cookie's name.
pub const COOKIE: &str = "cloche_session";

/// The Content-Security-Policy of every answer: nothing but this page's
/// own script, style, images and requests; no frames, no base, forms only
/// to itself.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; \
     img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// The largest form body the page reads.
const MAX_FORM: usize = 1 << 20;

/// Every request: a Host the page answers to (else 421, nothing done);
/// every answer: the security headers, never cached.
pub async fn outer(State(w): State<W>, req: Request, next: Next) -> Response {
    let host = req.headers().get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or("");
    let mut resp = if w.hosts.iter().any(|h| h.eq_ignore_ascii_case(host)) {
        next.run(req).await
    } else {
        tracing::warn!(host, "web: a request for another host refused");
        (StatusCode::MISDIRECTED_REQUEST, "this page answers only to its own address\n").into_response()
    };
    let h = resp.headers_mut();
    for (k, v) in [
        ("content-security-policy", CSP),
        ("x-content-type-options", "nosniff"),
        ("referrer-policy", "same-origin"),
        ("x-frame-options", "DENY"),
        ("cross-origin-opener-policy", "same-origin"),
        ("cross-origin-resource-policy", "same-origin"),
    ] {
        h.insert(k, HeaderValue::from_static(v));
    }
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    resp
}

/// The session cookie's value of a request.
fn cookie(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE)
        .map(|(_, v)| v.to_string())
}

/// A request with a live session: its caller (roles asked of the
/// configuration now) and its session.
pub struct Auth {
    pub caller: Caller,
    pub session: Session,
    pub cookie: String,
}

impl FromRequestParts<W> for Auth {
    type Rejection = Response;
    async fn from_request_parts(parts: &mut Parts, w: &W) -> Result<Self, Response> {
        let session = cookie(&parts.headers).and_then(|c| w.info.tokens.session(&c).map(|s| (c, s)));
        let Some((cookie, session)) = session else {
            // A page asks to log in; anything else is refused.
            return Err(match parts.method == Method::GET && !parts.uri.path().starts_with("/events") {
                true => Redirect::to("/login").into_response(),
                false => layout::error_page(StatusCode::UNAUTHORIZED, "no valid session: log in again"),
            });
        };
        let who = &session.who;
        let roles = w.app.cfg.roles(who.uid, who.gid, &who.groups);
        let caller = Caller { uid: who.uid, gid: who.gid, pid: None, groups: who.groups.clone(), roles };
        Ok(Auth { caller, session, cookie })
    }
}

/// A form's fields, in order.
pub struct Form(pub Vec<(String, String)>);

impl Form {
    pub fn get(&self, k: &str) -> Option<&str> {
        self.0.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str())
    }

    pub fn all(&self, k: &str) -> Vec<String> {
        self.0.iter().filter(|(n, _)| n == k).map(|(_, v)| v.clone()).collect()
    }
}

/// Reads a urlencoded form (at most 1 MiB, within the daemon's body deadline).
pub async fn read_form(w: &W, body: axum::body::Body) -> Result<Form, Response> {
    let limited = http_body_util::Limited::new(body, MAX_FORM);
    let bytes =
        match tokio::time::timeout(w.app.cfg.limits.body_timeout, http_body_util::BodyExt::collect(limited)).await {
            Ok(Ok(c)) => c.to_bytes(),
            _ => return Err(layout::error_page(StatusCode::BAD_REQUEST, "the form could not be read (at most 1 MiB)")),
        };
    Ok(Form(form_urlencoded::parse(&bytes).map(|(k, v)| (k.into_owned(), v.into_owned())).collect()))
}

/// Whether a state-changing request comes from the page itself: its
/// `Origin` is the page's (a browser always sends one with a POST).
fn same_origin(w: &W, headers: &HeaderMap) -> bool {
    let origin = headers.get(header::ORIGIN).and_then(|o| o.to_str().ok()).unwrap_or("");
    w.hosts.iter().any(|h| origin.eq_ignore_ascii_case(&format!("http://{h}")))
}

/// The checks of a state-changing request with a session: same origin,
/// and the session's CSRF token in the form (`csrf`) or the
/// `X-CSRF-Token` header. Refused: 403, nothing done.
pub fn check_post(w: &W, headers: &HeaderMap, auth: &Auth, form: &Form) -> Result<(), Response> {
    if !same_origin(w, headers) {
        return Err(layout::error_page(StatusCode::FORBIDDEN, "refused: the request does not come from this page"));
    }
    let given = form
        .get("csrf")
        .map(str::to_string)
        .or_else(|| headers.get("x-csrf-token").and_then(|v| v.to_str().ok()).map(str::to_string))
        .unwrap_or_default();
    if !same(given.as_bytes(), auth.session.csrf.as_bytes()) {
        return Err(layout::error_page(
            StatusCode::FORBIDDEN,
            "refused: missing or wrong CSRF token (reload the page)",
        ));
    }
    Ok(())
}

/// `GET /login`: the form.
pub async fn login_form() -> Response {
    layout::bare(
        "Log in",
        html! {
            h1 { "cloche: log in" }
            p { "Paste the token printed by " code { "cloche web login" } " (run as the user you review as)." }
            form method="post" action="/login" {
                label for="token" { "Login token" }
                input #token type="password" name="token" autocomplete="off" required autofocus;
                button type="submit" { "Log in" }
            }
        },
    )
}

/// `POST /login`: a live token (same origin) gets a session cookie
/// (HttpOnly, SameSite=Strict); anything else 403.
pub async fn login(State(w): State<W>, headers: HeaderMap, body: axum::body::Body) -> Response {
    if !same_origin(&w, &headers) {
        return layout::error_page(StatusCode::FORBIDDEN, "refused: the request does not come from this page");
    }
    let form = match read_form(&w, body).await {
        Ok(f) => f,
        Err(r) => return r,
    };
    match w.info.tokens.login(form.get("token").unwrap_or("")) {
        Ok(Some((cookie, s))) => {
            tracing::info!(uid = s.who.uid, "web: logged in");
            let set = format!("{COOKIE}={cookie}; Path=/; HttpOnly; SameSite=Strict");
            let mut r = Redirect::to("/").into_response();
            if let Ok(v) = HeaderValue::from_str(&set) {
                r.headers_mut().insert(header::SET_COOKIE, v);
            }
            r
        }
        Ok(None) => layout::error_page(StatusCode::FORBIDDEN, "that token is not valid (expired, revoked or mistyped)"),
        Err(e) => layout::error_page(StatusCode::SERVICE_UNAVAILABLE, &e),
    }
}

/// `POST /logout`: ends this session (the token stays; `cloche web logout`
/// revokes it).
pub async fn logout(State(w): State<W>, auth: Auth, headers: HeaderMap, body: axum::body::Body) -> Response {
    let form = match read_form(&w, body).await {
        Ok(f) => f,
        Err(r) => return r,
    };
    if let Err(r) = check_post(&w, &headers, &auth, &form) {
        return r;
    }
    w.info.tokens.logout(&auth.cookie);
    let mut r = Redirect::to("/login").into_response();
    r.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_static("cloche_session=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0"),
    );
    r
}
