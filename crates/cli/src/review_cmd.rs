//! `cloche diff` and `cloche commit`: a kept world (by world id or batch id)
//! for a reviewer (`cloche_service::review`), and its changes applied to
//! the host (`cloche_service::commit`), printed.

use cloche_review::render::{self, Format, RenderOptions};
use cloche_service::commit::{CommitRequest, CommitStatus};
use cloche_service::review::{abs_bytes, diff_json, review_of, WorldContents};
use cloche_service::uid_actor;
use serde_json::Value;
use std::path::PathBuf;

// `cloche diff ID [--stat] [--name-status] [--touched] [--json] [PATH...]`.
#[derive(clap::Args)]
pub struct DiffArgs {
    /// A kept world's id, or a batch id (its world).
    pub(crate) id: String,
    /// Per path the lines added and removed, and totals.
    #[arg(long, conflicts_with_all = ["name_status", "json"])]
    pub(crate) stat: bool,
    /// Per path a status letter (A, M, D, T) and the entries that changed it.
    #[arg(long, conflicts_with = "json")]
    pub(crate) name_status: bool,
    /// Also list the touched paths: written by the world but as the base has
    /// them (never committed; `--json` always lists them).
    #[arg(long)]
    pub(crate) touched: bool,
    /// The fs_diff object with review flags and, per path, the entries that changed it
    /// (docs/schemas/diff.json).
    #[arg(long)]
    pub(crate) json: bool,
    /// Only these paths (and below).
    pub(crate) paths: Vec<PathBuf>,
}

// `cloche commit ID [--path P]... [--exclude P]... [--force] [--json]`.
#[derive(clap::Args)]
pub struct CommitArgs {
    /// A kept world's id, or a batch id (its world).
    pub(crate) id: String,
    /// Commit only this path and what is below it (repeatable).
    #[arg(long = "path", value_name = "P")]
    pub(crate) paths: Vec<PathBuf>,
    /// Leave out this path and what is below it (repeatable).
    #[arg(long, value_name = "P")]
    pub(crate) exclude: Vec<PathBuf>,
    /// Apply over conflicts (each one is audited).
    #[arg(long)]
    pub(crate) force: bool,
    /// Print what was applied, refused or left as JSON (docs/schemas/commit.json).
    #[arg(long)]
    pub(crate) json: bool,
}

pub fn diff(a: DiffArgs) -> i32 {
    match crate::remote::via_own() {
        Ok(crate::remote::Via::Embedded) => {}
        Ok(crate::remote::Via::Daemon(c)) => return crate::remote::batch::diff(c, a).map_or_else(crate::fail, |()| 0),
        Err(e) => return crate::fail(e),
    }
    let r = (|| -> Result<(), String> {
        let ctx = crate::context();
        let t = ctx.review_target(&a.id)?;
        let full = !(a.stat || a.name_status);
        let review = review_of(&t, a.json || full)?;
        let paths: Vec<Vec<u8>> = a.paths.iter().map(|p| abs_bytes(p)).collect::<Result<_, _>>()?;
        if a.json {
            let v = diff_json(&t, &review, &paths)?;
            return crate::output::emit(&v);
        }
        let format = if a.stat {
            Format::Stat
        } else if a.name_status {
            Format::NameStatus
        } else {
            Format::Full
        };
        let opts = RenderOptions {
            format,
            color: crate::term::color_stdout(),
            paths,
            touched: a.touched,
            ..RenderOptions::default()
        };
        let mut out = Vec::new();
        render::render(&mut out, &review, &WorldContents::new(&t.world, &t.secrets), &opts)
            .map_err(|e| e.to_string())?;
        crate::term::page(&out).map_err(|e| format!("stdout: {e}"))
    })();
    r.map_or_else(crate::fail, |()| 0)
}

pub fn commit(a: CommitArgs) -> i32 {
    match crate::remote::via() {
        Ok(crate::remote::Via::Embedded) => {}
        Ok(crate::remote::Via::Daemon(c)) => return crate::remote::batch::commit(c, a),
        Err(e) => return crate::fail(e),
    }
    let req = CommitRequest { paths: a.paths, exclude: a.exclude, force: a.force, owner: None };
    match crate::context().commit(&a.id, &req, &uid_actor()) {
        Ok(r) => match serde_json::to_value(&r) {
            Ok(doc) => report(&doc, &r.world, &r.status, a.json),
            Err(e) => crate::fail(format!("json: {e}")),
        },
        Err(e) => crate::fail(e),
    }
}

/// Prints what a commit did (`doc`: docs/schemas/commit.json, also printed
/// with --json); returns the exit code.
pub(crate) fn report(doc: &Value, world: &str, status: &CommitStatus, json: bool) -> i32 {
    let items = |k: &str| -> Vec<(String, String)> {
        doc[k].as_array().into_iter().flatten().map(|i| (item_path(i), text(&i["why"]).to_string())).collect()
    };
    match status {
        CommitStatus::Refused => {
            for (path, why) in items("refused") {
                eprintln!("cloche: refused {path}: {why}");
            }
            for (path, why) in items("conflicts") {
                eprintln!("cloche: conflict {path}: {why} (--force to apply over it)");
            }
            print_json(json, doc);
            1
        }
        CommitStatus::Nothing { already } => {
            print_json(json, doc);
            for (path, why) in items("not_committed") {
                eprintln!("cloche: not committed {path}: {why}");
            }
            eprintln!("cloche: nothing to commit ({already} already on the host)");
            0
        }
        CommitStatus::Stopped { steps } => {
            print_json(json, doc);
            let applied = doc["applied"].as_array().map(Vec::as_slice).unwrap_or_default();
            eprintln!("cloche: commit stopped: {}", text(&doc["error"]));
            eprintln!("cloche: applied {} of {steps} steps (listed in the audit log):", applied.len());
            for x in applied {
                eprintln!("  {} {}", text(&x["action"]), item_path(x));
            }
            1
        }
        CommitStatus::Applied { .. } => {
            print_json(json, doc);
            for (path, _) in items("forced") {
                eprintln!("cloche: forced over a conflict: {path}");
            }
            for (path, why) in items("not_committed") {
                eprintln!("cloche: not committed {path}: {why}");
            }
            let n = doc["applied"].as_array().map_or(0, Vec::len);
            eprintln!("cloche: committed {n} paths from world {world}");
            0
        }
    }
}

/// A listed path: `path`, or the bytes of `path_b64` (lossy).
fn item_path(i: &Value) -> String {
    use base64::Engine;
    match (i["path"].as_str(), i["path_b64"].as_str()) {
        (Some(p), _) => p.to_string(),
        (None, Some(b)) => String::from_utf8_lossy(
            &base64::engine::general_purpose::STANDARD.decode(b).unwrap_or_else(|_| b.as_bytes().to_vec()),
        )
        .into_owned(),
        (None, None) => String::new(),
    }
}

fn text(v: &Value) -> &str {
    v.as_str().unwrap_or_default()
}

fn print_json(on: bool, doc: &Value) {
    if on {
        if let Err(e) = crate::output::emit(doc) {
            eprintln!("cloche: {e}");
        }
    }
}
