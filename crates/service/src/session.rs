//! Kept worlds that last across calls (what agents call a session): a run
//! (`RunRequest::world`) or a batch (`"world"` in its file) continues one,
//! on top of what its earlier runs left; a fork copies one to try another
//! way. The engine's side is `cloche_world::continued`; here: who may, the
//! audit, and each run's record (docs/architecture.md, *Worlds that last*).
//!
//! Who may continue or fork a world: root, or the caller it belongs to
//! (its owner `uid:N`, or the submitter of the batch that made it). Anyone
//! else is told there is no such world. The world's processes always run
//! as the user it was made for (its frame): root continues a world made
//! for uid 1000 only as uid 1000, which `cloche` in the process cannot, so
//! it is refused.

use crate::context::Context;
use crate::error::{Error, Result};
use crate::output::{Fork, Version};
use cloche_world::continued::{self, KeptError, RunRecord, Taken};
use cloche_world::diff::FsDiff;
use cloche_world::kept::KeptWorld;
use serde_json::json;

/// The service's error for an engine's refusal of a kept world.
pub fn kept_error(e: KeptError) -> Error {
    match e {
        KeptError::NotFound(id) => Error::NotFound(format!("no kept world {id}")),
        KeptError::Busy(m) => Error::Busy(m),
        KeptError::Differs(m) => Error::Invalid(m),
        e @ KeptError::Io { .. } => Error::State { path: Default::default(), source: std::io::Error::other(e) },
    }
}

/// The label of a world's run `n` in its records (`changes.jsonl`: the
/// review's attribution), as a batch's entries are labelled by their ids.
pub fn run_label(n: u32) -> String {
    format!("run-{n}")
}

/// Milliseconds since the epoch.
pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

impl Context {
    /// Whether `actor` may continue or fork world `w`: root may; anyone
    /// else only a world of its own (its owner, or the submitter of the
    /// batch that made it). Refused as a world that does not exist.
    pub fn check_world_owner(&self, w: &KeptWorld, actor: &str) -> Result<()> {
        if actor == "uid:0" {
            return Ok(());
        }
        let hidden = || Error::NotFound(format!("no kept world {}", w.id));
        match w.owner.as_deref() {
            Some(o) if o == actor => Ok(()),
            Some(o) => match o.strip_prefix("batch:") {
                Some(b) => match self.broker()?.get(b) {
                    Ok(v) if v.submitter == actor => Ok(()),
                    _ => Err(hidden()),
                },
                None => Err(hidden()),
            },
            None => Err(hidden()),
        }
    }

    /// Holds kept world `id` for a run or a batch of `actor` (refused at
    /// once when it is missing, not `actor`'s, or in use).
    pub fn take_world(&self, id: &str, actor: &str) -> Result<Taken> {
        let state = self.kept_state()?;
        let taken = continued::take(state, id).map_err(kept_error)?;
        self.check_world_owner(taken.world(), actor)?;
        Ok(taken)
    }

    /// A batch that names a kept world to run in (`"world"`): a kept world
    /// `actor` may continue, whose project is the batch's. Checked when
    /// the batch is submitted (a refusal records nothing); its run holds
    /// the world and checks its frame.
    pub(crate) fn check_batch_world(&self, batch: &cloche_broker::BatchFile, actor: &str) -> Result<()> {
        let Some(id) = &batch.world else { return Ok(()) };
        let state = self.kept_state()?;
        let w = cloche_world::kept::find(state, id).ok_or_else(|| Error::NotFound(format!("no kept world {id}")))?;
        self.check_world_owner(&w, actor)?;
        if w.cwd.as_deref() != Some(batch.project.as_str()) {
            return Err(Error::Invalid(format!(
                "world {id} works in {}: a batch that continues it has that project, not {}",
                w.cwd.as_deref().unwrap_or("?"),
                batch.project
            )));
        }
        Ok(())
    }

    /// Audits that `actor` continues world `id` with its run `run` (before
    /// the run starts).
    pub(crate) fn audit_continue(
        &self,
        id: &str,
        run: u32,
        batch: Option<&str>,
        actor: &str,
        what: serde_json::Value,
    ) -> Result<()> {
        let details = json!({"world": id, "run": run, "what": what});
        self.broker()?.review_event("world_continued", batch, actor, details)?;
        Ok(())
    }

    /// Records run `r` of world `id` (`runs.jsonl`) and what it changed,
    /// for the review (`changes.jsonl`, `base.jsonl`: the first host state
    /// of each path it changed). Returns why it could not, if so.
    pub(crate) fn record_run(&self, id: &str, label: &str, delta: &FsDiff, r: &RunRecord) -> Option<String> {
        let state = self.state().ok()?;
        let dir = state.world_path(id);
        let recorded = cloche_review::record::Recorder::open(&dir)
            .and_then(|mut rec| rec.entry(label, delta))
            .and_then(|()| continued::append_run(state, id, r));
        recorded.err().map(|e| e.to_string())
    }

    /// Forks kept world `id` for `actor` (`cloche worlds fork`, `POST
    /// /v1/worlds/{id}/fork`): a new kept world, a copy of it as it is now
    /// (its files, its records and runs, its frame), which a run continues
    /// as it would the original; audited (`world_forked`). The copy belongs
    /// to `actor`, or, for root, to whom the original belongs (never to a
    /// batch: a batch's review finds its own world).
    pub fn fork_world(&self, id: &str, actor: &str) -> Result<Fork> {
        let state = self.kept_state()?;
        state.sweep();
        let w = cloche_world::kept::find(state, id).ok_or_else(|| Error::NotFound(format!("no kept world {id}")))?;
        self.check_world_owner(&w, actor)?;
        let owner = match actor {
            "uid:0" => w.owner.clone().filter(|o| !o.starts_with("batch:")),
            a => Some(a.to_string()),
        };
        let t = std::time::Instant::now();
        let new = continued::fork(state, id, owner.as_deref()).map_err(kept_error)?;
        let ms = t.elapsed().as_secs_f64() * 1e3;
        tracing::info!(world = id, fork = %new.id, actor, ms, "world forked");
        let details = json!({"world": id, "fork": new.id, "owner": owner});
        if let Err(e) = self.broker().and_then(|mut b| Ok(b.review_event("world_forked", None, actor, details)?)) {
            // Not recorded: the fork goes, as if never made.
            let _ = cloche_world::kept::discard(state, &new.id);
            return Err(e);
        }
        Ok(Fork { schema_version: Version, world: new.id, forked_from: id.to_string(), path: new.path, owner })
    }
}
