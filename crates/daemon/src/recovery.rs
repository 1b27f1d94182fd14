//! Settling what a crash left: the worlds of runs that died (their
//! processes killed, their cgroups removed, their directories kept as
//! `interrupted` or removed as their policy said) and the batches whose
//! runner is gone (`failed`, reason `interrupted`, in the broker and the
//! audit log). Run where one thread runs (the daemon before its runtime,
//! the spawner, a job process), by:
//! - the daemon at its start (what a daemon that died left);
//! - the spawner when the daemon is gone (the daemon's jobs, just killed);
//! - a job the daemon starts when another job ended without its answer.
//!
//! Each of them logs what it recovered (a JSON line); when anything was,
//! the audit log says so too (`crash_recovered`).

use cloche_service::{Context, Options};
use cloche_world::crashed::Swept;
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::path::Path;

/// What a recovery settled.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recovered {
    /// Who recovered: `cloched` (at its start), `spawner`, `job`.
    pub by: String,
    /// Daemon processes (jobs, the spawner of a daemon that died) killed.
    pub processes_killed: usize,
    /// Batches failed as interrupted.
    pub batches: Vec<String>,
    /// Worlds whose cgroups were removed, their processes killed.
    pub world_cgroups: Vec<String>,
    /// Worlds kept for review as `interrupted`.
    pub worlds_kept: Vec<String>,
    /// Worlds removed (their policy's `keep_interrupted = false`, or runs
    /// that were not to be kept).
    pub worlds_removed: Vec<String>,
}

impl Recovered {
    /// Nothing was left to settle.
    pub fn is_empty(&self) -> bool {
        self.processes_killed == 0
            && self.batches.is_empty()
            && self.world_cgroups.is_empty()
            && self.worlds_kept.is_empty()
            && self.worlds_removed.is_empty()
    }

    /// One log line: a warning when something was recovered.
    pub fn log(&self) {
        if self.is_empty() {
            tracing::info!(by = %self.by, "nothing to recover");
            return;
        }
        tracing::warn!(
            by = %self.by,
            processes_killed = self.processes_killed,
            batches = ?self.batches,
            world_cgroups = ?self.world_cgroups,
            worlds_kept = ?self.worlds_kept,
            worlds_removed = ?self.worlds_removed,
            "recovered after a crash"
        );
    }
}

/// Settles the worlds and runs of `state` that are gone; `killed` daemon
/// processes were killed before (they are counted and audited).
pub fn recover(state: &Path, by: &str, killed: usize) -> Result<Recovered, String> {
    let ctx = Context::new(Options { state_dir: Some(state.to_path_buf()), env: Some(Vec::new()) });
    let sd = ctx.state().map_err(|e| e.to_string())?;
    // Processes and worlds first: the runs' records change once nothing runs.
    let swept: Swept = cloche_world::crashed::sweep(sd);
    let mut broker = ctx.broker().map_err(|e| e.to_string())?;
    let mut batches = broker.recovered_at_open().to_vec();
    batches.extend(broker.recover_after_crash().map_err(|e| e.to_string())?);
    let r = Recovered {
        by: by.to_string(),
        processes_killed: killed,
        batches,
        world_cgroups: swept.cgroups,
        worlds_kept: swept.kept,
        worlds_removed: swept.removed,
    };
    if !r.is_empty() {
        let details = json!({"by": r.by, "processes_killed": r.processes_killed, "batches": r.batches,
            "world_cgroups": r.world_cgroups, "worlds_kept": r.worlds_kept, "worlds_removed": r.worlds_removed});
        broker.crash_recovered(details).map_err(|e| e.to_string())?;
    }
    Ok(r)
}
