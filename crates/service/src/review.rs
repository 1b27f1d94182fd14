//! A kept world for a reviewer (by world id or batch id): what it changed,
//! flagged and attributed to the batch's entries, and the contents of its
//! files beside the host's (the host's secrets withheld).

use crate::context::Context;
use crate::error::{Error, Result};
use cloche_broker::BatchView;
use cloche_review::commit::fsx;
use cloche_review::render::Contents;
use cloche_review::{flags, record, Review};
use cloche_world::diff::DiffOptions;
use cloche_world::kept::{self, KeptWorld};
use nix::fcntl::OFlag;
use serde_json::{json, Value};
use std::io::Read;
use std::os::fd::AsFd;
use std::path::PathBuf;

/// A kept world ready for review: the world, its batch, its commit roots and
/// whether setuid bits are refused.
pub struct Target {
    pub world: KeptWorld,
    pub batch: Option<BatchView>,
    /// The commit roots: the project (or the world's cwd), then the policy's.
    pub roots: Vec<PathBuf>,
    pub refuse_setuid: bool,
    /// The host's secret locations under the policy: a review never shows
    /// what they hold on the host.
    pub secrets: Vec<PathBuf>,
}

impl Context {
    /// What a review of `id` (a kept world's id, or a batch id: its world)
    /// is about; refused while the world still runs.
    pub fn review_target(&self, id: &str) -> Result<Target> {
        let broker = self.broker()?;
        let state = self.kept_state()?;
        state.sweep();
        let (world, batch) = match kept::get(state, id) {
            Some(w) => {
                let batch = w.owner.as_deref().and_then(|o| o.strip_prefix("batch:")).and_then(|b| broker.get(b).ok());
                (w, batch)
            }
            None => {
                let view = broker.get(id).map_err(|_| Error::NotFound(format!("no kept world or batch {id}")))?;
                let w = kept::owned_by(state, &format!("batch:{}", view.id)).ok_or_else(|| {
                    Error::NotFound(format!("batch {id} has no kept world (discarded, or it never ran)"))
                })?;
                (w, Some(view))
            }
        };
        if state.is_live(&world.id) {
            return Err(Error::Busy(format!("world {} is still running", world.id)));
        }
        // The batch's own policy version, else the default one.
        let policy = match &batch {
            Some(b) => self.load_version(b.policy.split('+').next().unwrap_or("builtin"))?,
            None => self.store()?.resolve("/").map_err(|e| Error::Policy(e.to_string()))?.1,
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
pub fn world_diff(t: &Target, hash: bool) -> Result<cloche_world::diff::FsDiff> {
    let opts = DiffOptions { hash, max_entries: 10_000_000, ..DiffOptions::default() };
    t.world.fs_diff(&opts).map_err(|e| Error::Diff(e.to_string()))
}

/// What a reviewer reads: the diff, its flags, which entry changed what.
pub fn review_of(t: &Target, hash: bool) -> Result<Review> {
    let diff = world_diff(t, hash)?;
    let flags = flags::review_flags(&diff, &t.roots);
    let attribution = record::read_attribution(&t.world.path).map_err(|e| Error::Records(e.to_string()))?;
    Ok(Review { diff, flags, attribution, roots: t.roots.clone() })
}

/// The fs_diff object with review flags and per-entry attribution.
/// `paths` (absolute, normalized: [`abs_bytes`]) keeps only those paths and
/// what is below them.
pub fn diff_json(t: &Target, review: &Review, paths: &[Vec<u8>]) -> Result<Value> {
    let mut v = serde_json::to_value(&review.diff).map_err(|e| Error::Diff(e.to_string()))?;
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
    v["flags"] = serde_json::to_value(&review.flags).map_err(|e| Error::Diff(e.to_string()))?;
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

/// A path given by a reviewer, absolute and normalized, as the diff's bytes.
pub fn abs_bytes(p: &std::path::Path) -> Result<Vec<u8>> {
    let abs = std::path::absolute(p).map_err(|e| Error::Invalid(format!("{}: {e}", p.display())))?;
    let s = abs.to_str().ok_or_else(|| Error::Invalid(format!("{}: not UTF-8", abs.display())))?;
    Ok(cloche_broker::normalize_abs(s).map_err(|e| Error::Invalid(format!("{}: {e}", p.display())))?.into_bytes())
}

/// File contents for the text diff: the world's from its upper, the base
/// from the host; neither read follows a symlink. The upper directories and
/// `/` are opened once.
pub struct WorldContents<'w> {
    world: &'w KeptWorld,
    uppers: Vec<Option<std::os::fd::OwnedFd>>,
    root: Option<std::os::fd::OwnedFd>,
    /// Paths whose base is never read (the host's secrets).
    secrets: &'w [PathBuf],
}

impl<'w> WorldContents<'w> {
    pub fn new(world: &'w KeptWorld, secrets: &'w [PathBuf]) -> WorldContents<'w> {
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
