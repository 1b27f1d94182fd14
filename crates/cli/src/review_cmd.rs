//! `cloche diff` and `cloche commit`: a kept world (by world id or batch id)
//! for a reviewer (`cloche_service::review`), and its changes applied to
//! the host (`cloche_service::commit`), printed.

use cloche_review::render::{self, Format, RenderOptions};
use cloche_service::commit::{CommitRequest, CommitResult, CommitStatus};
use cloche_service::review::{abs_bytes, diff_json, review_of, WorldContents};
use cloche_service::uid_actor;
use std::path::PathBuf;

/// `cloche diff ID [--stat] [--name-status] [--touched] [--json] [PATH...]`.
#[derive(clap::Args)]
pub struct DiffArgs {
    /// A kept world's id, or a batch id (its world).
    id: String,
    /// Per path the lines added and removed, and totals.
    #[arg(long, conflicts_with_all = ["name_status", "json"])]
    stat: bool,
    /// Per path a status letter (A, M, D, T) and the entries that changed it.
    #[arg(long, conflicts_with = "json")]
    name_status: bool,
    /// Also list the touched paths: written by the world but as the base has
    /// them (never committed; `--json` always lists them).
    #[arg(long)]
    touched: bool,
    /// The fs_diff object with review flags and, per path, the entries that changed it
    /// (docs/schemas/diff.json).
    #[arg(long)]
    json: bool,
    /// Only these paths (and below).
    paths: Vec<PathBuf>,
}

/// `cloche commit ID [--path P]... [--exclude P]... [--force] [--json]`.
#[derive(clap::Args)]
pub struct CommitArgs {
    /// A kept world's id, or a batch id (its world).
    id: String,
    /// Commit only this path and what is below it (repeatable).
    #[arg(long = "path", value_name = "P")]
    paths: Vec<PathBuf>,
    /// Leave out this path and what is below it (repeatable).
    #[arg(long, value_name = "P")]
    exclude: Vec<PathBuf>,
    /// Apply over conflicts (each one is audited).
    #[arg(long)]
    force: bool,
    /// Print what was applied, refused or left as JSON (docs/schemas/commit.json).
    #[arg(long)]
    json: bool,
}

pub fn diff(a: DiffArgs) -> i32 {
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
    let req = CommitRequest { paths: a.paths, exclude: a.exclude, force: a.force, owner: None };
    match crate::context().commit(&a.id, &req, &uid_actor()) {
        Ok(r) => report(&r, a.json),
        Err(e) => crate::fail(e),
    }
}

/// Prints what a commit did (and its JSON with --json); returns the exit code.
fn report(r: &CommitResult, json: bool) -> i32 {
    let lossy = |p: &[u8]| String::from_utf8_lossy(p).into_owned();
    match r.status {
        CommitStatus::Refused => {
            for i in &r.refused {
                eprintln!("cloche: refused {}: {}", lossy(&i.path), i.why);
            }
            for i in &r.conflicts {
                eprintln!("cloche: conflict {}: {} (--force to apply over it)", lossy(&i.path), i.why);
            }
            print_json(json, r);
            1
        }
        CommitStatus::Nothing { already } => {
            print_json(json, r);
            for i in &r.not_committed {
                eprintln!("cloche: not committed {}: {}", lossy(&i.path), i.why);
            }
            eprintln!("cloche: nothing to commit ({already} already on the host)");
            0
        }
        CommitStatus::Stopped { steps } => {
            print_json(json, r);
            let error = r.done.as_ref().and_then(|d| d.error.as_deref()).unwrap_or_default();
            eprintln!("cloche: commit stopped: {error}");
            eprintln!("cloche: applied {} of {steps} steps (listed in the audit log):", r.applied.len());
            for x in &r.applied {
                eprintln!("  {} {}", x.action, lossy(&x.path));
            }
            1
        }
        CommitStatus::Applied { .. } => {
            print_json(json, r);
            for i in r.done.iter().flat_map(|d| &d.forced) {
                eprintln!("cloche: forced over a conflict: {}", lossy(&i.path));
            }
            for i in &r.not_committed {
                eprintln!("cloche: not committed {}: {}", lossy(&i.path), i.why);
            }
            eprintln!("cloche: committed {} paths from world {}", r.applied.len(), r.world);
            0
        }
    }
}

fn print_json(on: bool, r: &CommitResult) {
    if on {
        if let Err(e) = crate::output::emit(r) {
            eprintln!("cloche: {e}");
        }
    }
}
