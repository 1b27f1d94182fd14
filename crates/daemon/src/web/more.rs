//! Kept worlds, the audit chain's state, the policy in force, history
//! search: each the API's answer as a page.

use super::guard::Auth;
use super::layout::{self, shown_line};
use super::pages::{enc, refused};
use super::W;
use axum::extract::State;
use axum::http::{Method, Uri};
use axum::response::Response;
use maud::{html, Markup};
use serde_json::Value;

fn query(uri: &Uri, k: &str) -> Option<String> {
    form_urlencoded::parse(uri.query().unwrap_or("").as_bytes()).find(|(n, _)| n == k).map(|(_, v)| v.into_owned())
}

/// A value as one line of text (an object's or list's JSON).
fn text(v: &Value) -> String {
    match v {
        Value::String(s) => shown_line(s),
        Value::Null => "—".into(),
        v => shown_line(&v.to_string()),
    }
}

/// A table of objects: one column per key of `keys`.
fn table(rows: &[Value], keys: &[&str]) -> Markup {
    html! {
        table {
            thead { tr { @for k in keys { th { (k) } } } }
            tbody { @for r in rows { tr { @for k in keys { td { (text(&r[*k])) } } } } }
        }
    }
}

/// `GET /worlds`: kept worlds the caller may see.
pub async fn worlds(State(w): State<W>, auth: Auth) -> Response {
    let r = w.call(&auth.caller, Method::GET, "/v1/worlds", None).await;
    if !r.ok() {
        return refused(&r);
    }
    let list = r.json["worlds"].as_array().cloned().unwrap_or_default();
    let main = html! {
        h1 { "Kept worlds (" (list.len()) ")" }
        table {
            thead { tr { th { "World" } th { "Owner" } th { "Created" } th { "Review" } } }
            tbody {
                @for x in &list {
                    @let owner = x["owner"].as_str().unwrap_or("");
                    tr {
                        td { code { (text(&x["id"])) } }
                        td { (shown_line(owner)) }
                        td { (text(&x["created"])) }
                        td { @if let Some(b) = owner.strip_prefix("batch:") { a href={"/batches/" (enc(b)) "/diff"} { "review" } } }
                    }
                }
            }
        }
    };
    layout::page(&auth, "Worlds", main)
}

/// `GET /audit`: whether the hash chain holds (or its first bad line),
/// and its last records (a reviewer's).
pub async fn audit(State(w): State<W>, auth: Auth) -> Response {
    let v = w.call(&auth.caller, Method::GET, "/v1/audit/verify", None).await;
    let t = w.call(&auth.caller, Method::GET, "/v1/audit/tail?lines=50", None).await;
    let records = t.json["records"].as_array().cloned().unwrap_or_default();
    let main = html! {
        h1 { "Audit log" }
        @if v.ok() {
            @if v.json["ok"] == true {
                p.ok { "The hash chain verifies: " (v.json["entries"]) " records, head " code { (text(&v.json["head"])) } }
            } @else {
                p.error role="alert" { "The chain breaks at line " (v.json["line"]) ": " (text(&v.json["why"])) }
            }
        } @else { p { (shown_line(&v.error())) } }
        h2 { "Last records" }
        @if t.ok() {
            (table(&records.iter().rev().cloned().collect::<Vec<_>>(), &["time", "event", "actor", "batch", "details"]))
        } @else { p { (shown_line(&t.error())) } }
    };
    layout::page(&auth, "Audit", main)
}

/// `GET /policy[?project=P]`: the policy in force (the built-in one, or a project's).
pub async fn policy(State(w): State<W>, auth: Auth, uri: Uri) -> Response {
    let project = query(&uri, "project").filter(|p| !p.is_empty());
    let q = project.as_deref().map(|p| format!("?project={}", enc(p))).unwrap_or_default();
    let r = w.call(&auth.caller, Method::GET, &format!("/v1/policy{q}"), None).await;
    let rules = r.json["rules"].as_array().cloned().unwrap_or_default();
    let keys: Vec<String> =
        rules.first().and_then(|r| r.as_object()).map(|o| o.keys().cloned().collect()).unwrap_or_default();
    let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
    let main = html! {
        h1 { "Policy" }
        form method="get" action="/policy" {
            label for="project" { "Project" }
            input #project name="project" value=(project.clone().unwrap_or_default()) placeholder="/path/to/project";
            button type="submit" { "Show" }
        }
        @if r.ok() {
            p { "In force: " code { (text(&r.json["policy"])) } " · unknown commands: " (text(&r.json["unknown"]))
                " · unresolved: " (text(&r.json["unresolved"])) }
            (table(&rules, &keys))
        } @else { p.error { (shown_line(&r.error())) } }
    };
    layout::page(&auth, "Policy", main)
}

/// `GET /history[?q=TEXT]`: past commands.
pub async fn history(State(w): State<W>, auth: Auth, uri: Uri) -> Response {
    let text_q = query(&uri, "q").unwrap_or_default();
    let r = w.call(&auth.caller, Method::GET, &format!("/v1/history?limit=100&q={}", enc(&text_q)), None).await;
    let entries = r.json["entries"].as_array().cloned().unwrap_or_default();
    let keys: Vec<String> =
        entries.first().and_then(|r| r.as_object()).map(|o| o.keys().cloned().collect()).unwrap_or_default();
    let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
    let main = html! {
        h1 { "History" }
        form method="get" action="/history" role="search" {
            label for="q" { "Search" }
            input #q name="q" value=(text_q);
            button type="submit" { "Search" }
        }
        @if r.ok() { (table(&entries, &keys)) } @else { p.error { (shown_line(&r.error())) } }
    };
    layout::page(&auth, "History", main)
}
