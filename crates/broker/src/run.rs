//! Running approved batches, driven from outside: the engine claims a batch,
//! reports each entry's start and end, and finishes the run. Also
//! cancellation, approval expiry and crash recovery.

use std::collections::BTreeMap;

use cloche_trace::audit::events;
use rusqlite::params;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::broker::{batch_state, Broker, Ctx};
use crate::decision::Category;
use crate::error::BrokerError;
use crate::state::{BatchState, EntryState};
use crate::util::{rfc3339, runner_alive, runner_tag};

/// An approved entry handed to the engine, in run order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunnableEntry {
    pub id: String,
    pub index: usize,
    pub command: String,
    /// Absolute, inside the project (the project when the file gave none).
    pub cwd: String,
    pub env: BTreeMap<String, String>,
    /// Seconds.
    pub timeout: Option<u64>,
}

/// What the engine reports for a finished entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntryResult {
    pub exit_code: i32,
    pub category: Category,
    pub duration_ms: u64,
    pub stdout_sha256: String,
    pub stderr_sha256: String,
    pub stdout_truncated: bool,
    pub timed_out: bool,
}

impl Broker {
    /// Claims an `approved` batch for running: it becomes `running` and its
    /// approved entries are returned in order. An approval older than
    /// [`crate::Config::approval_ttl`] moves the batch to `expired` and is
    /// refused ([`BrokerError::Expired`]).
    pub fn start_run(&mut self, batch: &str) -> Result<Vec<RunnableEntry>, BrokerError> {
        let outcome = self.change(|c| {
            let b = c.batch_in(batch, &[BatchState::Approved], "start a run")?;
            // The submitter's budgets (its worlds running now, what its
            // batches used in the last hour): refused, the batch stays approved.
            c.check_run(&b.submitter)?;
            let entries = c.entries(batch)?;
            if !matches!(b.expires_ms, Some(t) if c.now < t) {
                expire(c, batch, &entries)?;
                return Ok(Err(BrokerError::Expired(batch.into())));
            }
            let runnable: Vec<RunnableEntry> = entries
                .into_iter()
                .filter(|e| e.state == EntryState::Pending)
                .map(|e| RunnableEntry {
                    index: e.pos as usize,
                    env: serde_json::from_str(&e.env).unwrap_or_default(),
                    timeout: e.timeout.map(|t| t as u64),
                    id: e.id,
                    command: e.command,
                    cwd: e.cwd,
                })
                .collect();
            c.tx.execute(
                "UPDATE batches SET state = 'running', runner = ?2, updated_ms = ?3 WHERE id = ?1",
                params![batch, runner_tag(), c.now],
            )?;
            let ids: Vec<&str> = runnable.iter().map(|e| e.id.as_str()).collect();
            let actor = c.cfg.system_actor.clone();
            c.audit(events::STARTED, &actor, Some(batch), None, json!({"entries": ids}))?;
            Ok(Ok(runnable))
        })?;
        outcome
    }

    /// The same as [`Broker::start_run`].
    pub fn claim_for_run(&mut self, batch: &str) -> Result<Vec<RunnableEntry>, BrokerError> {
        self.start_run(batch)
    }

    /// Moves every `approved` batch whose approval expired to `expired`;
    /// returns their ids.
    pub fn expire_stale(&mut self) -> Result<Vec<String>, BrokerError> {
        self.change(|c| {
            let mut st = c.tx.prepare("SELECT id FROM batches WHERE state = 'approved' AND expires_ms <= ?1")?;
            let ids = st.query_map([c.now], |r| r.get::<_, String>(0))?.collect::<Result<Vec<_>, _>>()?;
            drop(st);
            for id in &ids {
                let entries = c.entries(id)?;
                expire(c, id, &entries)?;
            }
            Ok(ids)
        })
    }

    /// The world of running batch `batch` is up, enforcing `layers`, in the
    /// user namespace `userns` (its id mapping as the report has it; null:
    /// none).
    pub fn world_started(
        &mut self,
        batch: &str,
        world: &str,
        layers: &[String],
        userns: serde_json::Value,
    ) -> Result<(), BrokerError> {
        self.change(|c| {
            c.batch_in(batch, &[BatchState::Running], "attach a world")?;
            let actor = c.cfg.system_actor.clone();
            let details = json!({"world": world, "layers": layers, "userns": userns});
            c.audit("world_started", &actor, Some(batch), None, details)?;
            c.tx.execute("UPDATE batches SET world = ?2 WHERE id = ?1", params![batch, world])?;
            Ok(())
        })
    }

    /// Entry `entry` of running batch `batch` starts (`pending → running`);
    /// entries run one at a time.
    pub fn entry_started(&mut self, batch: &str, entry: &str) -> Result<(), BrokerError> {
        self.change(|c| {
            c.batch_in(batch, &[BatchState::Running], "start an entry")?;
            let entries = c.entries(batch)?;
            if let Some(busy) = entries.iter().find(|e| e.state == EntryState::Running) {
                return Err(BrokerError::WrongEntryState { entry: busy.id.clone(), state: busy.state, op: "overlap" });
            }
            let e = find(&entries, batch, entry)?;
            if e.state != EntryState::Pending {
                return Err(BrokerError::WrongEntryState { entry: entry.into(), state: e.state, op: "start" });
            }
            c.set_entry(entry, EntryState::Running, None)?;
            let actor = c.cfg.system_actor.clone();
            c.audit("entry_started", &actor, Some(batch), Some(entry), json!({"command": e.command, "cwd": e.cwd}))
        })
    }

    /// Records the result of a running entry: `succeeded` (exit 0),
    /// `timed_out` or `failed`. After a failure the batch's remaining entries
    /// are `skipped` when it has `stop_on_failure`. Returns the entry's state.
    pub fn entry_finished(
        &mut self,
        batch: &str,
        entry: &str,
        result: &EntryResult,
    ) -> Result<EntryState, BrokerError> {
        for h in [&result.stdout_sha256, &result.stderr_sha256] {
            if h.len() != 64 || !h.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
                return Err(BrokerError::Invalid(format!("output sha256 {h:?}: 64 lowercase hex digits expected")));
            }
        }
        self.change(|c| {
            let b = c.batch_in(batch, &[BatchState::Running], "finish an entry")?;
            let entries = c.entries(batch)?;
            let e = find(&entries, batch, entry)?;
            if e.state != EntryState::Running {
                return Err(BrokerError::WrongEntryState { entry: entry.into(), state: e.state, op: "finish" });
            }
            let state = match (result.timed_out, result.exit_code) {
                (true, _) => EntryState::TimedOut,
                (false, 0) => EntryState::Succeeded,
                _ => EntryState::Failed,
            };
            c.tx.execute(
                "UPDATE entries SET state = ?2, exit_code = ?3, category = ?4, duration_ms = ?5, stdout_sha256 = ?6,
                 stderr_sha256 = ?7, stdout_truncated = ?8, timed_out = ?9 WHERE id = ?1",
                params![
                    entry,
                    state.as_str(),
                    result.exit_code,
                    result.category.as_str(),
                    result.duration_ms as i64,
                    result.stdout_sha256,
                    result.stderr_sha256,
                    result.stdout_truncated,
                    result.timed_out
                ],
            )?;
            let skipped = if state != EntryState::Succeeded && b.stop_on_failure {
                c.skip_pending(&entries, &format!("stop_on_failure: entry {entry} {state}"))?
            } else {
                Vec::new()
            };
            c.tx.execute("UPDATE batches SET updated_ms = ?2 WHERE id = ?1", params![batch, c.now])?;
            let details = json!({"state": state, "exit_code": result.exit_code, "category": result.category,
                "duration_ms": result.duration_ms, "stdout_sha256": result.stdout_sha256,
                "stderr_sha256": result.stderr_sha256, "stdout_truncated": result.stdout_truncated,
                "timed_out": result.timed_out, "skipped": skipped});
            let actor = c.cfg.system_actor.clone();
            c.audit(events::ENTRY_FINISHED, &actor, Some(batch), Some(entry), details)?;
            Ok(state)
        })
    }

    /// Ends a run: `running → completed | failed` (`state` must be one of
    /// those). No entry may still be running; entries never started become
    /// `skipped`.
    pub fn finish_run(&mut self, batch: &str, state: BatchState, reason: Option<&str>) -> Result<(), BrokerError> {
        if !matches!(state, BatchState::Completed | BatchState::Failed) {
            return Err(BrokerError::Invalid(format!("finish_run: {state} is not completed or failed")));
        }
        self.change(|c| {
            c.batch_in(batch, &[BatchState::Running], "finish the run")?;
            let entries = c.entries(batch)?;
            if let Some(e) = entries.iter().find(|e| e.state == EntryState::Running) {
                return Err(BrokerError::WrongEntryState { entry: e.id.clone(), state: e.state, op: "finish the run" });
            }
            let skipped = c.skip_pending(&entries, "not run")?;
            let mut counts = BTreeMap::new();
            for e in c.entries(batch)? {
                *counts.entry(e.state.as_str()).or_insert(0u32) += 1;
            }
            c.set_batch(batch, state, reason)?;
            let actor = c.cfg.system_actor.clone();
            let details = json!({"state": state, "reason": reason, "skipped": skipped, "entries": counts});
            c.audit(state.as_str(), &actor, Some(batch), None, details)
        })
    }

    /// Cancels a `pending`, `approved` or `running` batch. A running entry
    /// becomes `cancelled`, the ones not started `skipped`. Returns the ids
    /// of the entries that were running (the engine must stop them).
    pub fn cancel(&mut self, batch: &str, actor: &str) -> Result<Vec<String>, BrokerError> {
        self.change(|c| {
            let ok = [BatchState::Pending, BatchState::Approved, BatchState::Running];
            let b = c.batch_in(batch, &ok, "cancel")?;
            let entries = c.entries(batch)?;
            let mut stopped = Vec::new();
            for e in entries.iter().filter(|e| e.state == EntryState::Running) {
                c.set_entry(&e.id, EntryState::Cancelled, Some(&format!("cancelled by {actor}")))?;
                stopped.push(e.id.clone());
            }
            let skipped = c.skip_pending(&entries, &format!("cancelled by {actor}"))?;
            c.set_batch(batch, BatchState::Cancelled, None)?;
            let details = json!({"from": b.state, "cancelled": stopped, "skipped": skipped});
            c.audit(events::CANCELLED, actor, Some(batch), None, details)?;
            Ok(stopped)
        })
    }

    /// Marks `failed` (reason `interrupted`) every `running` batch whose
    /// runner process is gone (crashed, killed, rebooted); its running entries
    /// become `failed`, the others `skipped`. Called by [`Broker::open`].
    pub fn recover_after_crash(&mut self) -> Result<Vec<String>, BrokerError> {
        let running: Vec<String> = {
            let mut st = self.conn.prepare("SELECT id FROM batches WHERE state = 'running'")?;
            let rows = st.query_map([], |r| r.get(0))?;
            rows.collect::<Result<_, _>>()?
        };
        let mut recovered = Vec::new();
        for id in running {
            let done = self.change(|c| {
                let b = c.batch(&id)?;
                if b.state != BatchState::Running || runner_alive(b.runner.as_deref()) {
                    return Ok(false);
                }
                let entries = c.entries(&id)?;
                let mut failed = Vec::new();
                for e in entries.iter().filter(|e| e.state == EntryState::Running) {
                    c.set_entry(&e.id, EntryState::Failed, Some("interrupted"))?;
                    failed.push(e.id.clone());
                }
                let skipped = c.skip_pending(&entries, "interrupted")?;
                c.set_batch(&id, BatchState::Failed, Some("interrupted"))?;
                let details =
                    json!({"reason": "interrupted", "runner": b.runner, "failed": failed, "skipped": skipped});
                let actor = c.cfg.system_actor.clone();
                c.audit(events::FAILED, &actor, Some(&id), None, details)?;
                Ok(true)
            })?;
            if done {
                recovered.push(id);
            }
        }
        Ok(recovered)
    }

    /// Audits, as the system actor, what a recovery after a crash settled
    /// outside the broker (`events::CRASH_RECOVERED`: processes killed,
    /// worlds kept or swept, and the batches [`Broker::recover_after_crash`]
    /// failed, each of which has its own `failed` record).
    pub fn crash_recovered(&mut self, details: serde_json::Value) -> Result<(), BrokerError> {
        self.change(|c| {
            let actor = c.cfg.system_actor.clone();
            c.audit(events::CRASH_RECOVERED, &actor, None, None, details)
        })
    }

    /// The current state of `batch`, without a view.
    pub fn state(&self, batch: &str) -> Result<BatchState, BrokerError> {
        let q = "SELECT state FROM batches WHERE id = ?1";
        match self.conn.query_row(q, [batch], |r| batch_state(r.get(0)?)) {
            Err(rusqlite::Error::QueryReturnedNoRows) => Err(BrokerError::NoSuchBatch(batch.into())),
            other => Ok(other?),
        }
    }
}

fn find<'e>(
    entries: &'e [crate::broker::EntryRow],
    batch: &str,
    entry: &str,
) -> Result<&'e crate::broker::EntryRow, BrokerError> {
    entries
        .iter()
        .find(|e| e.id == entry)
        .ok_or_else(|| BrokerError::NoSuchEntry { batch: batch.into(), entry: entry.into() })
}

fn expire(c: &mut Ctx<'_, '_>, batch: &str, entries: &[crate::broker::EntryRow]) -> Result<(), BrokerError> {
    let skipped = c.skip_pending(entries, "approval expired")?;
    c.set_batch(batch, BatchState::Expired, Some("approval expired"))?;
    let actor = c.cfg.system_actor.clone();
    c.audit(events::EXPIRED, &actor, Some(batch), None, json!({"skipped": skipped, "at": rfc3339(c.now)}))
}
