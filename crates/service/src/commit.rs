//! A kept world's changes applied to the host, inside its commit roots:
//! every step planned and checked first (`cloche_review::commit`), the
//! intent audited, then applied; every applied path audited with its hash.

use crate::context::Context;
use crate::error::{Error, Result};
use crate::host_user::HostUser;
use crate::review::{abs_bytes, world_diff};
use cloche_review::commit::{Applied, Commit, Item, Options};
use cloche_review::{record, Review};
use cloche_world::kept;
use serde::Serialize;
use serde_json::json;
use std::path::PathBuf;

/// What to commit.
#[derive(Debug, Default, Clone)]
pub struct CommitRequest {
    /// Only these paths and what is below them (all when empty).
    pub paths: Vec<PathBuf>,
    /// Leave out these paths and what is below them.
    pub exclude: Vec<PathBuf>,
    /// Apply over conflicts (each one is audited).
    pub force: bool,
    /// The caller the world belongs to, when it is not root (`cloched`):
    /// every step must be one it could make itself (each directory written
    /// in writable by it, modes changed only on its own files), else the
    /// whole commit is refused; what is written is owned by it.
    pub owner: Option<HostUser>,
}

/// How a commit ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommitStatus {
    /// Refused paths or conflicts: nothing was applied.
    Refused,
    /// Nothing to apply; `already` paths are already on the host as the world has them.
    Nothing { already: usize },
    /// Every step applied.
    Applied { steps: usize },
    /// Stopped by an error after `applied` of `steps` steps (listed in the audit log).
    Stopped { steps: usize },
}

/// What a commit applied, refused or left (`cloche commit --json`,
/// docs/schemas/commit.json).
#[derive(Debug, Serialize)]
pub struct CommitResult {
    /// The kept world.
    #[serde(skip)]
    pub world: String,
    #[serde(skip)]
    pub status: CommitStatus,
    pub applied: Vec<Applied>,
    pub refused: Vec<Item>,
    pub conflicts: Vec<Item>,
    pub not_committed: Vec<Item>,
    /// Set once steps were applied (or tried).
    #[serde(flatten)]
    pub done: Option<CommitDone>,
}

/// Of a commit that applied steps.
#[derive(Debug, Serialize)]
pub struct CommitDone {
    /// Paths applied over a conflict.
    pub forced: Vec<Item>,
    /// Paths whose setuid/setgid bits were removed.
    pub stripped: Vec<Item>,
    /// Why the commit stopped: `applied` is exactly what reached the host.
    pub error: Option<String>,
}

impl Context {
    /// Commits a kept world (by its id or its batch's id) as `actor`.
    pub fn commit(&self, id: &str, req: &CommitRequest, actor: &str) -> Result<CommitResult> {
        let r = self.commit_inner(id, req, actor);
        match &r {
            Ok(c) => tracing::info!(target_id = id, actor, applied = c.applied.len(), "commit"),
            Err(e) => tracing::info!(target_id = id, actor, error = %e, "commit refused"),
        }
        r
    }

    fn commit_inner(&self, id: &str, req: &CommitRequest, actor: &str) -> Result<CommitResult> {
        let t = self.review_target(id)?;
        let mut broker = self.broker()?;
        let batch = t.batch.as_ref().map(|b| b.id.clone());
        if let Some(b) = &t.batch {
            if !cloche_broker::REVIEWABLE.contains(&b.state) {
                return Err(Error::Commit(format!("batch {} is {}: nothing to commit", b.id, b.state)));
            }
        }
        // One commit at a time per world, and no discard under it.
        let _busy = kept::lock(&t.world.path, false).map_err(|e| Error::Busy(format!("world {}: {e}", t.world.id)))?;
        // A commit needs the changes and the roots, not the reviewer's flags.
        let review = Review { diff: world_diff(&t, false)?, roots: t.roots.clone(), ..Review::default() };
        let base = record::read_base(&t.world.path).map_err(|e| Error::Records(e.to_string()))?;
        let opts = Options {
            paths: req.paths.iter().map(|p| abs_bytes(p)).collect::<Result<_>>()?,
            exclude: req.exclude.iter().map(|p| abs_bytes(p)).collect::<Result<_>>()?,
            force: req.force,
            refuse_setuid: t.refuse_setuid,
            owner: req.owner.as_ref().map(|u| (u.uid, u.gid)),
        };
        let mut c = Commit::prepare(&review, &t.world, &base, &opts).map_err(|e| Error::Commit(e.to_string()))?;
        if let Some(u) = req.owner.as_ref().filter(|u| !u.is_root()) {
            u.with_identity(|| c.refuse_where(|step| crate::commit_owner::refusal(u, step)))
                .map_err(|e| Error::Commit(format!("the identity of uid {}: {e}", u.uid)))?;
        }
        let plan = c.plan.clone();
        let world = t.world.id.clone();
        let base_details = json!({"world": t.world.id, "roots": t.roots, "forced": plan.forced,
            "stripped": plan.stripped, "not_committed": plan.not_committed.len()});
        if !plan.ok() {
            let details = json!({"world": t.world.id, "refused": plan.refused, "conflicts": plan.conflicts});
            broker.review_event("commit_refused", batch.as_deref(), actor, details)?;
            return Ok(CommitResult {
                world,
                status: CommitStatus::Refused,
                applied: Vec::new(),
                refused: plan.refused,
                conflicts: plan.conflicts,
                not_committed: plan.not_committed,
                done: None,
            });
        }
        if plan.ops.is_empty() {
            return Ok(CommitResult {
                world,
                status: CommitStatus::Nothing { already: plan.already },
                applied: Vec::new(),
                refused: Vec::new(),
                conflicts: Vec::new(),
                not_committed: plan.not_committed,
                done: None,
            });
        }
        let mut intent = base_details.clone();
        intent["steps"] = json!(plan.ops.len());
        broker.review_event("committing", batch.as_deref(), actor, intent)?;
        let report = c.apply();
        // Every applied path with its hash, in audit records of bounded size.
        for (k, chunk) in report.applied.chunks(2000).enumerate() {
            let d = json!({"world": t.world.id, "part": k, "paths": chunk});
            broker.review_event("commit_paths", batch.as_deref(), actor, d)?;
        }
        let mut done = base_details;
        done["applied"] = json!(report.applied.len());
        done["error"] = json!(report.error);
        let partial = report.error.is_some() || !opts.paths.is_empty() || !opts.exclude.is_empty();
        match &batch {
            Some(b) => broker.committed(b, actor, partial, done)?,
            None => broker.review_event("committed", None, actor, done)?,
        }
        let steps = plan.ops.len();
        Ok(CommitResult {
            world,
            status: match report.error {
                Some(_) => CommitStatus::Stopped { steps },
                None => CommitStatus::Applied { steps },
            },
            applied: report.applied,
            refused: Vec::new(),
            conflicts: Vec::new(),
            not_committed: plan.not_committed,
            done: Some(CommitDone { forced: plan.forced, stripped: plan.stripped, error: report.error }),
        })
    }
}
