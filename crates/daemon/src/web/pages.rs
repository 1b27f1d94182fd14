//! The batch list, a batch (its entries, the actions the caller may take,
//! the output), an entry's whole output, and the event stream for the
//! script.

use super::guard::Auth;
use super::layout::{self, age, badge, csrf, shown, shown_line, state_badge, until};
use super::W;
use crate::identity::Caller;
use axum::extract::{Path, State};
use axum::http::{header, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use maud::{html, Markup};
use serde_json::Value;

/// The batches the list fetches the entries of (for their risk): the
/// pending ones first, at most this many.
const RISK_LOOKUPS: usize = 100;

fn s(v: &Value) -> &str {
    v.as_str().unwrap_or("")
}

/// A refusal of the API as a page.
pub fn refused(r: &super::Reply) -> Response {
    layout::error_page(r.status, &r.error())
}

/// `GET /`: the batches, pending review first, then the newest.
pub async fn batches(State(w): State<W>, auth: Auth) -> Response {
    let r = w.call(&auth.caller, Method::GET, "/v1/batches?limit=500", None).await;
    if !r.ok() {
        return refused(&r);
    }
    let mut list: Vec<Value> = r.json["batches"].as_array().cloned().unwrap_or_default();
    list.sort_by_key(|b| s(&b["state"]) != "pending");
    // The risk of a batch is its entries' highest.
    let mut risks = std::collections::HashMap::new();
    for b in list.iter().take(RISK_LOOKUPS) {
        let id = s(&b["id"]);
        let v = w.call(&auth.caller, Method::GET, &format!("/v1/batches/{id}"), None).await;
        let max =
            v.json["entries"].as_array().and_then(|e| e.iter().filter_map(|e| e["decision"]["risk"].as_u64()).max());
        risks.insert(id.to_string(), max);
    }
    let pending = list.iter().filter(|b| s(&b["state"]) == "pending").count();
    layout::page(
        &auth,
        "Batches",
        html! {
            h1 { "Batches" }
            p { (pending) " waiting for review · " (list.len()) " in all" }
            table.batches {
                thead { tr { th { "Batch" } th { "State" } th { "Decision" } th { "Risk" } th { "Agent" } th { "Project" }
                    th { "Entries" } th { "Age" } th { "Approval" } } }
                tbody {
                    @for b in &list {
                        @let id = s(&b["id"]);
                        tr class=(if s(&b["state"]) == "pending" { "pending" } else { "" }) {
                            td { a href={"/batches/" (id)} { code { (id) } } }
                            td { (state_badge(s(&b["state"]))) }
                            td { (badge(s(&b["decision"]))) }
                            td { (risks.get(id).copied().flatten().map(|r| r.to_string()).unwrap_or_else(|| "—".into())) }
                            td { (shown_line(b["agent"].as_str().unwrap_or("—"))) }
                            td.path { (shown_line(s(&b["project"]))) }
                            td { (b["entries"].as_u64().unwrap_or(0)) }
                            td { (age(s(&b["created"]))) }
                            td { (approval(b)) }
                        }
                    }
                }
            }
        },
    )
}

/// An approval's time limit: when a given one expires, else how long one would last.
fn approval(b: &Value) -> String {
    match (b["expires_at"].as_str(), b["approval_ttl"].as_u64()) {
        (Some(e), _) => format!("expires {}", until(e)),
        (None, Some(t)) => format!("valid {} min once given", t.div_ceil(60)),
        _ => "—".into(),
    }
}

/// Whether the page offers `caller` the reviewer's actions on batch `b`:
/// a reviewer's, not its own. Only what is shown: the API decides.
fn reviews(c: &Caller, b: &Value) -> bool {
    c.roles.reviewer && s(&b["submitter"]) != c.actor()
}

/// `GET /batches/{id}`.
pub async fn batch(State(w): State<W>, auth: Auth, Path(id): Path<String>) -> Response {
    let r = w.call(&auth.caller, Method::GET, &format!("/v1/batches/{}", enc(&id)), None).await;
    if !r.ok() {
        return refused(&r);
    }
    let b = &r.json;
    let id = s(&b["id"]).to_string();
    let state = s(&b["state"]);
    let reviewer = reviews(&auth.caller, b);
    let live = matches!(state, "pending" | "approved" | "running");
    let spans = w.call(&auth.caller, Method::GET, &format!("/v1/batches/{id}/trace"), None).await;
    let network = spans.json["spans"]
        .as_array()
        .and_then(|a| a.iter().find(|s| s["entry"].is_null() || s["kind"] == "batch"))
        .map(|s| s["network"].clone())
        .unwrap_or(Value::Null);
    let entries = b["entries"].as_array().cloned().unwrap_or_default();
    let approvable = entries.iter().any(|e| s(&e["state"]) == "pending" && s(&e["decision"]["effect"]) != "deny");
    let main = html! {
        h1 { "Batch " code { (id) } }
        div #batch data-batch=(id) data-live=(if live { "1" } else { "0" }) {
            p { (state_badge(state)) " " (badge(s(&b["decision"]))) " · agent "
                (shown_line(b["agent"].as_str().unwrap_or("—"))) " · submitted by " (s(&b["submitter"]))
                " · " (age(s(&b["created"]))) " ago · policy " code { (shown_line(s(&b["policy"]))) } }
            p { "Project " code.path { (shown_line(s(&b["project"]))) } }
            @if let (Some(e), "approved") = (b["expires_at"].as_str(), state) {
                p { "Approved by " (s(&b["approved_by"])) "; the run must start " (until(e)) }
            } @else if let Some(by) = b["approved_by"].as_str() { p { "Approved by " (by) } }
            @if let Some(why) = b["reason"].as_str() { p.note { "Reason: " (shown_line(why)) } }
            (actions(&auth, b, reviewer, approvable))
            h2 { "Entries" }
            ol.entries {
                @for e in &entries { li.entry #{"entry-" (s(&e["id"]))} tabindex="-1" { (entry(&w, &auth, b, e, reviewer)) } }
            }
            @if !network.is_null() {
                h2 { "Network" }
                (network_scope(&network))
            }
            @if b["world"].is_string() && !live {
                p { a.button href={"/batches/" (id) "/diff"} { "Review the world's changes" } }
            }
            p #live-status role="status" aria-live="polite" {}
        }
    };
    layout::page(&auth, &format!("Batch {id}"), main)
}

/// The batch's actions the caller may take: approve all, reject (a
/// reviewer's, not on its own batch), run, cancel.
fn actions(auth: &Auth, b: &Value, reviewer: bool, approvable: bool) -> Markup {
    let id = s(&b["id"]);
    let state = s(&b["state"]);
    html! {
        div.actions {
            @if reviewer && state == "pending" && approvable {
                form #approve-all method="post" action={"/batches/" (id) "/approve"} {
                    (csrf(auth))
                    button type="submit" accesskey="a" { "Approve all (a)" }
                }
            }
            @if reviewer && state == "pending" {
                form #reject method="post" action={"/batches/" (id) "/reject"} {
                    (csrf(auth))
                    label for="reason" { "Reason" }
                    input #reason name="reason" maxlength="1000";
                    button type="submit" accesskey="r" { "Reject (r)" }
                }
            }
            @if state == "approved" {
                form #run method="post" action={"/batches/" (id) "/run"} {
                    (csrf(auth))
                    button type="submit" { "Run" }
                }
            }
            @if matches!(state, "pending" | "approved" | "running") {
                form #cancel method="post" action={"/batches/" (id) "/cancel"} {
                    (csrf(auth))
                    button type="submit" { "Cancel" }
                }
            }
        }
    }
}

fn entry(w: &W, auth: &Auth, b: &Value, e: &Value, reviewer: bool) -> Markup {
    let (bid, eid) = (s(&b["id"]), s(&e["id"]));
    let d = &e["decision"];
    html! {
        div.head {
            (badge(s(&d["effect"]))) " "
            span.state { (s(&e["state"])) }
            @if let Some(x) = e["exit_code"].as_i64() { " · exit " (x) }
            @if let Some(ms) = e["duration_ms"].as_u64() { " · " (ms) " ms" }
        }
        pre.command { (shown(s(&e["command"]))) }
        p.why { "Rule " code { (shown_line(d["rule"].as_str().unwrap_or("—"))) } " · risk " (d["risk"].as_u64().unwrap_or(0))
            " · " (shown_line(s(&d["reason"]))) }
        p.cwd { "in " code.path { (shown_line(s(&e["cwd"]))) } }
        @if let Some(n) = e["note"].as_str() { p.note { (shown_line(n)) } }
        @if reviewer && s(&b["state"]) == "pending" && s(&e["state"]) == "pending" && s(&d["effect"]) != "deny" {
            form.approve-one method="post" action={"/batches/" (bid) "/approve"} {
                (csrf(auth))
                input type="hidden" name="entry" value=(eid);
                button type="submit" { "Approve this entry" }
            }
        }
        // While it runs, the script shows the output as it comes.
        @if !matches!(s(&b["state"]), "approved" | "running") {
            @for stream in ["stdout", "stderr"] {
                (output_excerpt(w, bid, eid, stream))
            }
        }
        pre.live hidden data-entry=(eid) {}
    }
}

/// The kept head and tail of an entry's stream, and its download.
fn output_excerpt(w: &W, batch: &str, entry: &str, stream: &str) -> Markup {
    let Some((size, head, tail)) = w.output.excerpt(batch, entry, stream) else { return html! {} };
    let href = format!("/batches/{batch}/output/{entry}/{stream}");
    let cut = size.saturating_sub((head.len() + tail.len()) as u64);
    html! {
        div.output {
            p { (stream) " · " (size) " bytes"
                @if size >= super::output::CAP { " (cut at the page's cap)" }
                " · " a href=(href) download { "download it whole (text)" } }
            pre.out { (shown(&String::from_utf8_lossy(&head))) }
            @if cut > 0 { p.cut { "… " (cut) " bytes not shown …" } }
            @if !tail.is_empty() { pre.out { (shown(&String::from_utf8_lossy(&tail))) } }
        }
    }
}

/// The network scope of a run: what it reached and what was refused.
fn network_scope(n: &Value) -> Markup {
    let list = |k: &str| n[k].as_array().cloned().unwrap_or_default();
    html! {
        p { "Mode " code { (s(&n["mode"])) } }
        @for (title, key) in [("Reached", "allowed"), ("Refused", "denied"), ("Refused names", "denied_names")] {
            @let l = list(key);
            @if !l.is_empty() {
                h3 { (title) }
                ul { @for x in &l { li { code { (shown_line(&x.to_string())) } } } }
            }
        }
    }
}

/// `GET /batches/{id}/output/{entry}/{stream}`: the kept stream, whole, as
/// plain text to save (never rendered: nosniff, attachment).
pub async fn output(
    State(w): State<W>,
    auth: Auth,
    Path((id, entry, stream)): Path<(String, String, String)>,
) -> Response {
    let r = w.call(&auth.caller, Method::GET, &format!("/v1/batches/{}", enc(&id)), None).await;
    if !r.ok() {
        return refused(&r);
    }
    let known = r.json["entries"].as_array().is_some_and(|a| a.iter().any(|e| s(&e["id"]) == entry));
    let Some((f, size)) = known.then(|| w.output.open(&id, &entry, &stream)).flatten() else {
        return layout::error_page(StatusCode::NOT_FOUND, "no output kept for that entry");
    };
    let body = axum::body::Body::from_stream(tokio_util_stream(f));
    let name = format!("attachment; filename=\"{id}-{entry}.{stream}.txt\"");
    (
        [
            (header::CONTENT_TYPE, "text/plain; charset=utf-8".to_string()),
            (header::CONTENT_DISPOSITION, name),
            (header::CONTENT_LENGTH, size.to_string()),
        ],
        body,
    )
        .into_response()
}

/// A file read in 64 KiB chunks on the blocking pool.
fn tokio_util_stream(f: std::fs::File) -> impl futures_util::Stream<Item = std::io::Result<Vec<u8>>> {
    futures_util::stream::unfold(Some(f), |f| async move {
        let mut f = f?;
        let r = tokio::task::spawn_blocking(move || {
            use std::io::Read;
            let mut buf = vec![0u8; 64 << 10];
            let n = f.read(&mut buf)?;
            buf.truncate(n);
            Ok::<_, std::io::Error>((buf, f))
        })
        .await;
        match r {
            Ok(Ok((buf, _))) if buf.is_empty() => None,
            Ok(Ok((buf, f))) => Some((Ok(buf), Some(f))),
            Ok(Err(e)) => Some((Err(e), None)),
            Err(e) => Some((Err(std::io::Error::other(e.to_string())), None)),
        }
    })
}

/// `GET /events?batch=ID`: the API's event stream, as this caller.
pub async fn events(State(w): State<W>, auth: Auth, uri: Uri) -> Response {
    let q = uri.query().map(|q| format!("?{q}")).unwrap_or_default();
    w.pass(&auth.caller, &format!("/v1/events{q}")).await
}

/// A path segment, percent-encoded (the API checks it is an id).
pub fn enc(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}
