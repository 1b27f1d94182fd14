//! `cloche diff` and `cloche commit`: a kept world (by world id or batch id)
//! for a reviewer, and its changes applied to the host.

use crate::batch_cmd::open_broker;
use crate::policy_store_cmd::{load_version, open_store, uid_actor};
use crate::run::open_state;
use cloche_broker::{BatchView, Broker};
use cloche_review::commit::{fsx, Commit, Options};
use cloche_review::render::{self, Contents, Format, RenderOptions};
use cloche_review::{flags, record, Review};
use cloche_world::diff::DiffOptions;
use cloche_world::kept::{self, KeptWorld};
use nix::fcntl::OFlag;
use serde_json::{json, Value};
use std::io::Read;
use std::os::fd::AsFd;
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

/// A kept world ready for review: the world, its batch, its commit roots and
/// whether setuid bits are refused.
struct Target {
    world: KeptWorld,
    batch: Option<BatchView>,
    roots: Vec<PathBuf>,
    refuse_setuid: bool,
    /// The host's secret locations under the policy: a review never shows
    /// what they hold on the host.
    secrets: Vec<PathBuf>,
}

fn target(broker: &Broker, id: &str) -> Result<Target, String> {
    let state = open_state()?;
    state.sweep();
    let (world, batch) = match kept::get(&state, id) {
        Some(w) => {
            let batch = w.owner.as_deref().and_then(|o| o.strip_prefix("batch:")).and_then(|b| broker.get(b).ok());
            (w, batch)
        }
        None => {
            let view = broker.get(id).map_err(|_| format!("no kept world or batch {id}"))?;
            let w = kept::owned_by(&state, &format!("batch:{}", view.id))
                .ok_or_else(|| format!("batch {id} has no kept world (discarded, or it never ran)"))?;
            (w, Some(view))
        }
    };
    if state.is_live(&world.id) {
        return Err(format!("world {} is still running", world.id));
    }
    // The batch's own policy version, else the default one.
    let policy = match &batch {
        Some(b) => load_version(b.policy.split('+').next().unwrap_or("builtin"))?,
        None => open_store()?.0.resolve("/").map_err(|e| e.to_string())?.1,
    };
    let project = match &batch {
        Some(b) => Some(b.project.clone()),
        None => world.cwd.clone(),
    };
    let mut roots: Vec<PathBuf> = project.into_iter().map(PathBuf::from).collect();
    roots.extend(policy.commit.roots.iter().cloned());
    let secrets = secret_paths(&policy, &state.root);
    Ok(Target { world, batch, roots, refuse_setuid: policy.commit.refuse_setuid, secrets })
}

/// Where the host keeps secrets under `policy`: its `fs.mask` paths, its
/// `fs.home_secrets` under every home (as written and with symlinks
/// resolved), cloche's state directories and `/run`. A world writes its own
/// `~/.npmrc` over the host's (its home starts empty): the review shows the
/// world's, never the host's.
fn secret_paths(policy: &cloche_policy::Policy, state_root: &std::path::Path) -> Vec<PathBuf> {
    use cloche_world::plan::{FsRequest, RealHost};
    let fs = &policy.fs;
    let req = FsRequest::new(std::path::Path::new("/"), &fs.mask, fs.mask_homes, &fs.home_secrets, &[], state_root);
    let masks = cloche_world::exposure::Masks::collect(&RealHost, &req);
    let mut out: Vec<PathBuf> =
        masks.list.into_iter().filter(|m| m.origin.is_secret()).map(|m| m.path).chain(fs.mask.clone()).collect();
    for h in &req.homes {
        out.extend(fs.home_secrets.iter().map(|s| h.join(s)));
    }
    out
}

/// The world's fs_diff, recomputed from its uppers (never truncated below
/// ten million paths: a commit refuses a truncated diff).
fn world_diff(t: &Target, hash: bool) -> Result<cloche_world::diff::FsDiff, String> {
    let opts = DiffOptions { hash, max_entries: 10_000_000 };
    t.world.fs_diff(&opts).map_err(|e| e.to_string())
}

/// What a reviewer reads: the diff, its flags, which entry changed what.
fn review_of(t: &Target, hash: bool) -> Result<Review, String> {
    let diff = world_diff(t, hash)?;
    let flags = flags::review_flags(&diff, &t.roots);
    let attribution = record::read_attribution(&t.world.path).map_err(|e| format!("world records: {e}"))?;
    Ok(Review { diff, flags, attribution, roots: t.roots.clone() })
}

pub fn diff(a: DiffArgs) -> i32 {
    let r = (|| -> Result<(), String> {
        let broker = open_broker()?;
        let t = target(&broker, &a.id)?;
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

/// The fs_diff object with review flags and per-entry attribution.
fn diff_json(t: &Target, review: &Review, paths: &[Vec<u8>]) -> Result<Value, String> {
    let mut v = serde_json::to_value(&review.diff).map_err(|e| e.to_string())?;
    let keep = |p: &[u8]| paths.is_empty() || paths.iter().any(|x| cloche_review::at_or_below(p, x));
    for list in ["added", "modified", "deleted", "touched"] {
        let entries: Vec<Value> = review_list(&review.diff, list)
            .iter()
            .zip(v[list].as_array().cloned().unwrap_or_default())
            .filter(|(e, _)| keep(e.path.as_bytes()))
            .map(|(e, mut j)| {
                if let Some(ids) = review.attribution.get(e.path.as_bytes()) {
                    j["entries"] = json!(ids);
                }
                j
            })
            .collect();
        v[list] = Value::Array(entries);
    }
    v["flags"] = serde_json::to_value(&review.flags).map_err(|e| e.to_string())?;
    v["world"] = json!(t.world.id);
    v["batch"] = json!(t.batch.as_ref().map(|b| b.id.clone()));
    v["roots"] = json!(t.roots);
    Ok(v)
}

fn review_list<'d>(d: &'d cloche_world::diff::FsDiff, list: &str) -> &'d [cloche_world::diff::Entry] {
    match list {
        "added" => &d.added,
        "modified" => &d.modified,
        "touched" => &d.touched,
        _ => &d.deleted,
    }
}

fn abs_bytes(p: &std::path::Path) -> Result<Vec<u8>, String> {
    let abs = std::path::absolute(p).map_err(|e| format!("{}: {e}", p.display()))?;
    let s = abs.to_str().ok_or_else(|| format!("{}: not UTF-8", abs.display()))?;
    Ok(cloche_broker::normalize_abs(s).map_err(|e| format!("{}: {e}", p.display()))?.into_bytes())
}

/// File contents for the text diff: the world's from its upper, the base
/// from the host; neither read follows a symlink. The upper directories and
/// `/` are opened once.
struct WorldContents<'w> {
    world: &'w KeptWorld,
    uppers: Vec<Option<std::os::fd::OwnedFd>>,
    root: Option<std::os::fd::OwnedFd>,
    /// Paths whose base is never read (the host's secrets).
    secrets: &'w [PathBuf],
}

impl<'w> WorldContents<'w> {
    fn new(world: &'w KeptWorld, secrets: &'w [PathBuf]) -> WorldContents<'w> {
        let open = |p: &std::path::Path| {
            nix::fcntl::open(p, OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC, nix::sys::stat::Mode::empty())
                .ok()
        };
        let uppers = world.uppers.iter().map(|u| open(&u.upper)).collect();
        WorldContents { world, uppers, root: open(std::path::Path::new("/")), secrets }
    }
}

fn read_limited(fd: std::os::fd::OwnedFd, limit: u64) -> std::io::Result<Option<Vec<u8>>> {
    let mut f = std::fs::File::from(fd);
    let md = f.metadata()?;
    if !md.is_file() || md.len() > limit {
        return Ok(None);
    }
    let mut buf = Vec::with_capacity(md.len() as usize);
    Read::by_ref(&mut f).take(limit).read_to_end(&mut buf)?;
    Ok(Some(buf))
}

impl Contents for WorldContents<'_> {
    fn world(&self, path: &[u8], limit: u64) -> std::io::Result<Option<Vec<u8>>> {
        let Some((upper, rel)) = self.world.upper_for(path) else { return Ok(None) };
        let i = self.world.uppers.iter().position(|u| u == upper).unwrap_or(0);
        let Some(dir) = self.uppers.get(i).and_then(Option::as_ref) else {
            return Err(std::io::Error::other("cannot open the world's upper"));
        };
        match fsx::open_beneath(dir.as_fd(), rel, OFlag::O_RDONLY | OFlag::O_NONBLOCK) {
            Ok(fd) => read_limited(fd, limit),
            Err(nix::errno::Errno::ENOENT) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    fn withheld(&self, path: &[u8]) -> bool {
        use std::os::unix::ffi::OsStrExt;
        let p = std::path::Path::new(std::ffi::OsStr::from_bytes(path));
        self.secrets.iter().any(|s| p.starts_with(s))
    }

    fn base(&self, path: &[u8], limit: u64) -> std::io::Result<Option<Vec<u8>>> {
        if self.withheld(path) {
            return Ok(None);
        }
        let Some(root) = self.root.as_ref() else { return Err(std::io::Error::other("cannot open /")) };
        match fsx::open_beneath(
            root.as_fd(),
            path.strip_prefix(b"/").unwrap_or(path),
            OFlag::O_RDONLY | OFlag::O_NONBLOCK,
        ) {
            Ok(fd) => read_limited(fd, limit),
            Err(nix::errno::Errno::ENOENT) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }
}

pub fn commit(a: CommitArgs) -> i32 {
    match commit_inner(&a) {
        Ok(code) => code,
        Err(e) => crate::fail(e),
    }
}

fn commit_inner(a: &CommitArgs) -> Result<i32, String> {
    let mut broker = open_broker()?;
    let t = target(&broker, &a.id)?;
    let batch = t.batch.as_ref().map(|b| b.id.clone());
    if let Some(b) = &t.batch {
        if !cloche_broker::REVIEWABLE.contains(&b.state) {
            return Err(format!("batch {} is {}: nothing to commit", b.id, b.state));
        }
    }
    // One commit at a time per world, and no discard under it.
    let _busy = kept::lock(&t.world.path, false).map_err(|e| format!("world {}: {e}", t.world.id))?;
    // A commit needs the changes and the roots, not the reviewer's flags.
    let review = Review { diff: world_diff(&t, false)?, roots: t.roots.clone(), ..Review::default() };
    let base = record::read_base(&t.world.path).map_err(|e| format!("world records: {e}"))?;
    let opts = Options {
        paths: a.paths.iter().map(|p| abs_bytes(p)).collect::<Result<_, _>>()?,
        exclude: a.exclude.iter().map(|p| abs_bytes(p)).collect::<Result<_, _>>()?,
        force: a.force,
        refuse_setuid: t.refuse_setuid,
    };
    let c = Commit::prepare(&review, &t.world, &base, &opts).map_err(|e| e.to_string())?;
    let plan = c.plan.clone();
    let actor = uid_actor();
    let base_details = json!({"world": t.world.id, "roots": t.roots, "forced": plan.forced, "stripped": plan.stripped,
        "not_committed": plan.not_committed.len()});
    if !plan.ok() {
        let details = json!({"world": t.world.id, "refused": plan.refused, "conflicts": plan.conflicts});
        broker.review_event("commit_refused", batch.as_deref(), &actor, details).map_err(|e| e.to_string())?;
        for i in &plan.refused {
            eprintln!("cloche: refused {}: {}", String::from_utf8_lossy(&i.path), i.why);
        }
        for i in &plan.conflicts {
            eprintln!("cloche: conflict {}: {} (--force to apply over it)", String::from_utf8_lossy(&i.path), i.why);
        }
        print_json(
            a.json,
            &json!({"applied": [], "refused": plan.refused, "conflicts": plan.conflicts,
            "not_committed": plan.not_committed}),
        );
        return Ok(1);
    }
    if plan.ops.is_empty() {
        print_json(
            a.json,
            &json!({"applied": [], "refused": [], "conflicts": [], "not_committed": plan.not_committed}),
        );
        for i in &plan.not_committed {
            eprintln!("cloche: not committed {}: {}", String::from_utf8_lossy(&i.path), i.why);
        }
        eprintln!("cloche: nothing to commit ({} already on the host)", plan.already);
        return Ok(0);
    }
    let mut intent = base_details.clone();
    intent["steps"] = json!(plan.ops.len());
    broker.review_event("committing", batch.as_deref(), &actor, intent).map_err(|e| e.to_string())?;
    let report = c.apply();
    // Every applied path with its hash, in audit records of bounded size.
    for (k, chunk) in report.applied.chunks(2000).enumerate() {
        let d = json!({"world": t.world.id, "part": k, "paths": chunk});
        broker.review_event("commit_paths", batch.as_deref(), &actor, d).map_err(|e| e.to_string())?;
    }
    let mut done = base_details;
    done["applied"] = json!(report.applied.len());
    done["error"] = json!(report.error);
    let partial = report.error.is_some() || !opts.paths.is_empty() || !opts.exclude.is_empty();
    match &batch {
        Some(b) => broker.committed(b, &actor, partial, done).map_err(|e| e.to_string())?,
        None => broker.review_event("committed", None, &actor, done).map_err(|e| e.to_string())?,
    }
    print_json(
        a.json,
        &json!({"applied": report.applied, "refused": [], "conflicts": [], "forced": plan.forced,
        "stripped": plan.stripped, "not_committed": plan.not_committed, "error": report.error}),
    );
    if let Some(e) = &report.error {
        eprintln!("cloche: commit stopped: {e}");
        eprintln!("cloche: applied {} of {} steps (listed in the audit log):", report.applied.len(), plan.ops.len());
        for x in &report.applied {
            eprintln!("  {} {}", x.action, String::from_utf8_lossy(&x.path));
        }
        return Ok(1);
    }
    for i in &plan.forced {
        eprintln!("cloche: forced over a conflict: {}", String::from_utf8_lossy(&i.path));
    }
    for i in &plan.not_committed {
        eprintln!("cloche: not committed {}: {}", String::from_utf8_lossy(&i.path), i.why);
    }
    eprintln!("cloche: committed {} paths from world {}", report.applied.len(), t.world.id);
    Ok(0)
}

fn print_json(on: bool, v: &Value) {
    if on {
        if let Err(e) = crate::output::emit(v) {
            eprintln!("cloche: {e}");
        }
    }
}
