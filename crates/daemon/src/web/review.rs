//! A kept world's review, page by page: its flags first, then its paths
//! ([`PER_PAGE`] a page, each with a box to commit it alone) and the
//! unified diff of that page's files (the API's text, asked for those
//! paths only; binary and large files summarised by it), commit (the
//! selected paths, or everything) and discard; and what a commit did
//! (applied, conflicts with the host, refused).

use super::guard::Auth;
use super::layout::{self, csrf, shown, shown_line};
use super::pages::{enc, refused};
use super::W;
use axum::extract::{Path, State};
use axum::http::{Method, StatusCode, Uri};
use axum::response::Response;
use base64::Engine;
use maud::{html, Markup};
use serde_json::Value;

/// Paths a page shows.
pub const PER_PAGE: usize = 100;
/// Flags shown before "and N more".
const MAX_FLAGS: usize = 500;

/// One changed path.
struct Change {
    path: String,
    /// Not UTF-8: shown lossily, never selectable nor diffed by name.
    raw: bool,
    status: char,
    kind: String,
    size: Option<u64>,
}

fn path_of(v: &Value) -> (String, bool) {
    match (v["path"].as_str(), v["path_b64"].as_str()) {
        (Some(p), _) => (p.to_string(), false),
        (None, Some(b)) => {
            let bytes = base64::engine::general_purpose::STANDARD.decode(b).unwrap_or_default();
            (String::from_utf8_lossy(&bytes).into_owned(), true)
        }
        _ => (String::new(), true),
    }
}

/// `GET /batches/{id}/diff[?page=N]`.
pub async fn diff(State(w): State<W>, auth: Auth, Path(id): Path<String>, uri: Uri) -> Response {
    let page: usize = uri
        .query()
        .and_then(|q| form_urlencoded::parse(q.as_bytes()).find(|(k, _)| k == "page").and_then(|(_, v)| v.parse().ok()))
        .unwrap_or(1)
        .max(1);
    let id = enc(&id);
    let r = w.call(&auth.caller, Method::GET, &format!("/v1/batches/{id}/diff"), None).await;
    if !r.ok() {
        return refused(&r);
    }
    let d = &r.json;
    let mut changes: Vec<Change> = Vec::new();
    for (list, status) in [("added", 'A'), ("modified", 'M'), ("deleted", 'D')] {
        for e in d[list].as_array().into_iter().flatten() {
            let (path, raw) = path_of(e);
            changes.push(Change {
                path,
                raw,
                status,
                kind: e["kind"].as_str().unwrap_or("").into(),
                size: e["size"].as_u64(),
            });
        }
    }
    changes.sort_by(|a, b| a.path.cmp(&b.path));
    let pages = changes.len().div_ceil(PER_PAGE).max(1);
    let page = page.min(pages);
    let these = &changes[(page - 1) * PER_PAGE..(page * PER_PAGE).min(changes.len())];
    // The unified diff of this page's files (directories would bring
    // everything below them).
    let files: Vec<&Change> = these.iter().filter(|c| !c.raw && c.kind != "dir").collect();
    let text = match files.is_empty() {
        true => String::new(),
        false => {
            let q: String = files.iter().map(|c| format!("&path={}", enc(&c.path))).collect();
            let t = w.call(&auth.caller, Method::GET, &format!("/v1/batches/{id}/diff?format=full{q}"), None).await;
            match t.ok() {
                true => String::from_utf8_lossy(&t.bytes).into_owned(),
                false => format!("(the diff could not be shown: {})", t.error()),
            }
        }
    };
    let flags = d["flags"].as_array().cloned().unwrap_or_default();
    let reviewer = auth.caller.roles.reviewer;
    let batch = d["batch"].as_str().unwrap_or(&id).to_string();
    let totals = &d["totals"];
    let main = html! {
        h1 { "Review of " code { (batch) } }
        p { "World " code { (d["world"].as_str().unwrap_or("")) } " · added " (totals["added"]) " · modified "
            (totals["modified"]) " · deleted " (totals["deleted"]) " · " (totals["bytes"]) " bytes"
            " · " a href={"/batches/" (batch)} { "back to the batch" } }
        p { "Commit roots: " @for r in d["roots"].as_array().into_iter().flatten() { code.path { (shown_line(r.as_str().unwrap_or(""))) } " " } }
        h2 #flags { "Flags (" (flags.len()) ")" }
        @if flags.is_empty() { p { "None." } }
        ul.flags {
            @for f in flags.iter().take(MAX_FLAGS) {
                li { span.flag { (shown_line(f["why"].as_str().unwrap_or(""))) } " " code.path { (shown_line(&path_of(f).0)) } }
            }
        }
        @if flags.len() > MAX_FLAGS { p { "… and " (flags.len() - MAX_FLAGS) " more flags" } }
        h2 { "Paths (" (changes.len()) ")" }
        (pager(&batch, page, pages))
        form #commit method="post" action={"/batches/" (batch) "/commit"} {
            (csrf(&auth))
            table.paths {
                thead { tr { th { "Commit" } th { "" } th { "Path" } th { "Kind" } th { "Size" } } }
                tbody {
                    @for c in these {
                        tr {
                            td { @if !c.raw { input type="checkbox" name="path" value=(c.path) aria-label={"select " (shown_line(&c.path))}; } }
                            td.status { (c.status) }
                            td.path { (shown_line(&c.path)) @if c.raw { " (not UTF-8)" } }
                            td { (c.kind) }
                            td { (c.size.map(|s| s.to_string()).unwrap_or_default()) }
                        }
                    }
                }
            }
            @if reviewer {
                p.actions {
                    label { input type="checkbox" name="force" value="1"; " apply over conflicts (each audited)" }
                    button type="submit" name="which" value="selected" { "Commit the selected paths" }
                    button type="submit" name="which" value="all" { "Commit everything" }
                }
            }
        }
        @if reviewer {
            form #discard method="post" action={"/batches/" (batch) "/discard"} {
                (csrf(&auth))
                button type="submit" { "Discard the world" }
            }
        }
        h2 { "Diff of this page's files" }
        (unified(&text))
        (pager(&batch, page, pages))
    };
    layout::page(&auth, &format!("Review {batch}"), main)
}

fn pager(batch: &str, page: usize, pages: usize) -> Markup {
    html! {
        nav.pager aria-label="pages" {
            @if page > 1 { a rel="prev" href={"/batches/" (batch) "/diff?page=" (page - 1)} { "← previous" } " " }
            "page " (page) " of " (pages)
            @if page < pages { " " a rel="next" href={"/batches/" (batch) "/diff?page=" (page + 1)} { "next →" } }
        }
    }
}

/// The API's diff text, line by line with a class for additions,
/// deletions, hunks and headers.
fn unified(text: &str) -> Markup {
    html! {
        pre.diff {
            @for line in text.lines() {
                @let class = if line.starts_with("diff --cloche") { "h" } else if line.starts_with("@@") { "hunk" }
                    else if line.starts_with('+') { "add" } else if line.starts_with('-') { "del" } else { "" };
                span class=(class) { (shown(line)) } "\n"
            }
        }
    }
}

/// What a commit answered: applied, conflicts, refused, left.
pub fn commit_result(auth: &Auth, batch: &str, r: &super::Reply) -> Response {
    let v = &r.json;
    let list = |k: &str| v[k].as_array().cloned().unwrap_or_default();
    let status = if r.ok() { StatusCode::OK } else { r.status };
    let main = html! {
        h1 { "Commit of " code { (batch) } ": " (v["status"].as_str().unwrap_or("refused")) }
        @if !r.ok() { p.error role="alert" { (shown(&r.error())) } }
        @for (title, key) in [("Conflicts: the host changed since the world started", "conflicts"), ("Refused", "refused"),
            ("Applied", "applied"), ("Not committed", "not_committed"), ("Forced over a conflict", "forced")] {
            @let l = list(key);
            @if !l.is_empty() {
                h2 { (title) " (" (l.len()) ")" }
                ul.commit {
                    @for x in l.iter().take(1000) {
                        li { code.path { (shown_line(&path_of(x).0)) } " " (shown_line(x["why"].as_str().or(x["action"].as_str()).unwrap_or(""))) }
                    }
                }
            }
        }
        p { a href={"/batches/" (batch) "/diff"} { "back to the review" } " · " a href={"/batches/" (batch)} { "the batch" } }
    };
    layout::page_status(auth, status, "Commit", main)
}
