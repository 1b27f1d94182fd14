//! `diff`, `request_commit`, `discard`, `policy_check`, `history` and the
//! resources (the policy in force, the audit chain's state).

use crate::client::{q, Failure};
use crate::run::{diff_line, project_query};
use crate::server::{done, failed, Server};
use crate::summary;
use hyper::Method;
use rmcp::model::CallToolResult;
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{json, Value};

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DiffParams {
    /// The batch id whose world to show. Without it: the session's world (what your `run` calls changed).
    #[serde(default)]
    pub batch: Option<String>,
    /// "summary" (default: the changed paths and flags) or "full" (a git-like text diff of one page of paths).
    #[serde(default)]
    pub format: Option<DiffFormat>,
    /// With "full": the page of changed paths to show, from 1 (default 1).
    #[serde(default)]
    pub page: Option<usize>,
    /// With "full": paths per page (default 20, at most 200).
    #[serde(default)]
    pub page_size: Option<usize>,
}

#[derive(Debug, Clone, Copy, Deserialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum DiffFormat {
    Summary,
    Full,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CommitParams {
    /// The batch id whose world is ready to be committed. Without it: the session's world.
    #[serde(default)]
    pub batch: Option<String>,
    /// A word for the reviewer: what the change is and why.
    #[serde(default)]
    pub note: Option<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DiscardParams {
    /// The batch to cancel (one that has not ended). Without it: the session's world is discarded (its changes
    /// are lost) and the next `run` starts a new one.
    #[serde(default)]
    pub batch: Option<String>,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CheckParams {
    /// The shell command line to judge.
    pub command: String,
}

#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HistoryParams {
    /// Words to search for in past commands (empty: the newest).
    #[serde(default)]
    pub query: Option<String>,
    /// At most this many (default 20, at most 200).
    #[serde(default)]
    pub limit: Option<usize>,
}

fn batch_id(id: &str) -> Result<&str, CallToolResult> {
    let id = id.trim();
    match id.len() == 16 && id.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
        true => Ok(id),
        false => Err(done(
            format!("batch {id:?}: not a batch id (16 lower-case hex digits)"),
            json!({"status": "invalid"}),
            true,
        )),
    }
}

/// Every changed path of a diff document, in its order.
fn changed_paths(d: &Value) -> Vec<String> {
    ["added", "modified", "deleted"]
        .iter()
        .flat_map(|k| d[k].as_array().cloned().unwrap_or_default())
        .filter_map(|e| e["path"].as_str().map(str::to_string))
        .collect()
}

/// What a review tool acts on: a batch's world (`/v1/batches/ID`), or the
/// session's (`/v1/worlds/ID`); its name in the text.
struct Target {
    route: String,
    name: String,
    id: String,
}

async fn target(srv: &Server, batch: Option<&str>) -> Result<Target, CallToolResult> {
    if let Some(b) = batch {
        let id = batch_id(b)?;
        return Ok(Target { route: format!("/v1/batches/{id}"), name: format!("batch {id}"), id: id.to_string() });
    }
    match srv.session.lock().await.world.clone() {
        Some(w) => Ok(Target { route: format!("/v1/worlds/{w}"), name: format!("the session's world {w}"), id: w }),
        None => Err(done(
            "the session has no world yet: `run` makes it; or name a batch".into(),
            json!({"status": "invalid"}),
            true,
        )),
    }
}

pub async fn diff(srv: &Server, p: DiffParams) -> CallToolResult {
    let t = match target(srv, p.batch.as_deref()).await {
        Ok(t) => t,
        Err(r) => return r,
    };
    let name = &t.name;
    let d = match srv.daemon.json(Method::GET, &format!("{}/diff", t.route), None).await {
        Ok(d) => d,
        Err(f) => return failed(f),
    };
    let s = summary::fs_diff(&d);
    if p.format != Some(DiffFormat::Full) {
        let mut text = format!("{name} (world {}): {}", d["world"].as_str().unwrap_or("?"), diff_line(&s));
        for f in d["flags"].as_array().into_iter().flatten() {
            text.push_str(&format!(
                "\nflag: {} ({})",
                f["path"].as_str().unwrap_or("?"),
                f["why"].as_str().unwrap_or("")
            ));
        }
        text.push_str("\nFor the text of the changes: diff with format \"full\".");
        return done(text, json!({"batch": p.batch, "world": d["world"], "summary": s}), false);
    }
    let paths = changed_paths(&d);
    let size = p.page_size.unwrap_or(20).clamp(1, 200);
    let pages = paths.len().div_ceil(size).max(1);
    let page = p.page.unwrap_or(1).clamp(1, pages);
    let chunk: Vec<&String> = paths.iter().skip((page - 1) * size).take(size).collect();
    let text = match chunk.is_empty() {
        true => String::from("(no changes)"),
        false => {
            let query: Vec<String> = chunk.iter().map(|p| format!("path={}", q(p))).collect();
            match srv.daemon.text(&format!("{}/diff?format=full&{}", t.route, query.join("&"))).await {
                Ok(t) => t,
                Err(f) => return failed(f),
            }
        }
    };
    let head = format!("{name}: page {page} of {pages} ({} changed paths, {size} per page)\n", paths.len());
    done(
        format!("{head}{text}"),
        json!({"batch": p.batch, "world": d["world"], "page": page, "pages": pages, "paths": chunk, "text": text}),
        false,
    )
}

pub async fn request_commit(srv: &Server, p: CommitParams) -> CallToolResult {
    let t = match target(srv, p.batch.as_deref()).await {
        Ok(t) => t,
        Err(r) => return r,
    };
    let body = json!({"note": p.note});
    match srv.daemon.json(Method::POST, &format!("{}/request-commit", t.route), Some(&body)).await {
        Ok(v) => {
            let text = format!(
                "{}: commit requested; a reviewer sees it (the audit log, the event stream) and commits with \
                 `cloche commit {}` or discards it. Its world stays as it is until then.",
                t.name, t.id
            );
            done(text, json!({"status": "commit_requested", "batch": p.batch, "world": v["world"]}), false)
        }
        Err(f) => failed(f),
    }
}

pub async fn discard(srv: &Server, p: DiscardParams) -> CallToolResult {
    let Some(b) = p.batch else {
        let mut s = srv.session.lock().await;
        let Some(w) = s.world.clone() else {
            return done("the session has no world: the next run starts one".into(), json!({"status": "none"}), false);
        };
        if let Err(f) = srv.daemon.json(Method::POST, &format!("/v1/worlds/{w}/discard"), None).await {
            // Gone already (committed, discarded by a reviewer): forgotten too.
            if f.status != Some(404) {
                return failed(f);
            }
        }
        s.world = None;
        let text = format!("the session's world {w} is discarded; the next run starts a new one");
        return done(text, json!({"status": "discarded", "world": w}), false);
    };
    let id = match batch_id(&b) {
        Ok(id) => id,
        Err(r) => return r,
    };
    match srv.daemon.json(Method::POST, &format!("/v1/batches/{id}/cancel"), None).await {
        Ok(v) => done(
            format!("batch {id}: {}", v["state"].as_str().unwrap_or("cancelled")),
            json!({"status": "cancelled", "batch": id, "state": v["state"]}),
            false,
        ),
        Err(f) => failed(f),
    }
}

pub async fn policy_check(srv: &Server, p: CheckParams) -> CallToolResult {
    let body = json!({"command": p.command, "project": srv.settings.project.to_string_lossy()});
    match srv.daemon.json(Method::POST, "/v1/policy/check", Some(&body)).await {
        Ok(d) => done(summary::decision_line(&d), d, false),
        Err(f) => failed(f),
    }
}

pub async fn history(srv: &Server, p: HistoryParams) -> CallToolResult {
    let limit = p.limit.unwrap_or(20).clamp(1, 200);
    let path = format!("/v1/history?q={}&limit={limit}", q(p.query.as_deref().unwrap_or("")));
    match srv.daemon.json(Method::GET, &path, None).await {
        Ok(v) => {
            let mut text = String::new();
            for e in v["entries"].as_array().into_iter().flatten() {
                text.push_str(&format!(
                    "{} batch {}: {} -> {} {}\n",
                    e["created"].as_str().unwrap_or(""),
                    e["batch"].as_str().unwrap_or(""),
                    e["command"],
                    e["state"].as_str().unwrap_or(""),
                    e["exit_code"]
                ));
            }
            if text.is_empty() {
                text.push_str("(nothing)");
            }
            done(text, v, false)
        }
        Err(f) => failed(f),
    }
}

pub async fn policy_resource(srv: &Server) -> Result<Value, Failure> {
    srv.daemon.json(Method::GET, &format!("/v1/policy?{}", project_query(srv)), None).await
}

pub async fn audit_resource(srv: &Server) -> Result<Value, Failure> {
    srv.daemon.json(Method::GET, "/v1/audit/verify", None).await
}
