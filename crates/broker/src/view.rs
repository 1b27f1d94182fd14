//! Read-only views of batches (`get`, `list`), serialized as the CLI and the
//! daemon show them. Field names are a contract.

use std::collections::BTreeMap;

use rusqlite::{params_from_iter, types::Value as SqlValue, OptionalExtension};
use serde::{Deserialize, Serialize};

use crate::broker::{batch_state, effect, entry_state, Broker};
use crate::decision::{Category, Decision, Effect};
use crate::error::BrokerError;
use crate::state::{BatchState, EntryState};
use crate::util::rfc3339;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchView {
    pub id: String,
    pub state: BatchState,
    pub agent: Option<String>,
    /// The actor that submitted it.
    pub submitter: String,
    pub project: String,
    pub stop_on_failure: bool,
    pub created: String,
    pub updated: String,
    /// The strictest of the entries' effects.
    pub decision: Effect,
    pub approved_by: Option<String>,
    pub approved_at: Option<String>,
    pub expires_at: Option<String>,
    /// How long an approval stays valid before the run starts, in seconds
    /// (the policy's `[batch] approval_ttl` when it was submitted).
    #[serde(default)]
    pub approval_ttl: Option<u64>,
    /// Why it failed, was rejected or expired (`interrupted`, ...).
    pub reason: Option<String>,
    /// The process running it: `pid:<pid>:<start time>:<boot id>`.
    pub runner: Option<String>,
    /// The policy version the batch was classified with and runs with.
    pub policy: String,
    /// The world it ran in (kept for review until discarded).
    pub world: Option<String>,
    /// The kept world it continues (`"world"` in its file), if it names one.
    #[serde(default)]
    pub continues: Option<String>,
    pub entries: Vec<EntryView>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntryView {
    pub id: String,
    pub index: usize,
    pub command: String,
    pub cwd: String,
    pub env: BTreeMap<String, String>,
    pub timeout: Option<u64>,
    pub state: EntryState,
    pub decision: Decision,
    /// Why it was skipped, cancelled or failed without a result.
    pub note: Option<String>,
    pub exit_code: Option<i32>,
    pub category: Option<Category>,
    pub duration_ms: Option<u64>,
    pub stdout_sha256: Option<String>,
    pub stderr_sha256: Option<String>,
    pub stdout_truncated: Option<bool>,
    pub timed_out: Option<bool>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BatchSummary {
    pub id: String,
    pub state: BatchState,
    pub agent: Option<String>,
    pub project: String,
    pub created: String,
    pub decision: Effect,
    /// Number of entries.
    pub entries: usize,
    /// How long an approval stays valid before the run starts, in seconds.
    pub approval_ttl: Option<u64>,
    /// When an approval given expires (the run must start before).
    pub expires_at: Option<String>,
}

/// Which batches [`Broker::list`] returns (all fields optional; newest first).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListFilter {
    pub state: Option<BatchState>,
    pub project: Option<String>,
    pub agent: Option<String>,
    /// Only the batches this actor submitted.
    pub submitter: Option<String>,
    pub limit: Option<usize>,
}

impl Broker {
    pub fn get(&self, batch: &str) -> Result<BatchView, BrokerError> {
        let tx = self.conn.unchecked_transaction()?;
        let view = tx
            .query_row(
                "SELECT id, state, agent, submitter, project, stop_on_failure, created_ms, updated_ms, decision,
                 approved_by, approved_ms, expires_ms, reason, runner, policy, world, approval_ttl_ms, continues
                 FROM batches WHERE id = ?1",
                [batch],
                |r| {
                    Ok(BatchView {
                        id: r.get(0)?,
                        state: batch_state(r.get(1)?)?,
                        agent: r.get(2)?,
                        submitter: r.get(3)?,
                        project: r.get(4)?,
                        stop_on_failure: r.get(5)?,
                        created: rfc3339(r.get(6)?),
                        updated: rfc3339(r.get(7)?),
                        decision: effect(r.get(8)?)?,
                        approved_by: r.get(9)?,
                        approved_at: r.get::<_, Option<i64>>(10)?.map(rfc3339),
                        expires_at: r.get::<_, Option<i64>>(11)?.map(rfc3339),
                        reason: r.get(12)?,
                        runner: r.get(13)?,
                        policy: r.get(14)?,
                        world: r.get(15)?,
                        approval_ttl: r.get::<_, Option<i64>>(16)?.map(ttl_secs),
                        continues: r.get(17)?,
                        entries: Vec::new(),
                    })
                },
            )
            .optional()?;
        let mut view = view.ok_or_else(|| BrokerError::NoSuchBatch(batch.into()))?;
        let mut st = tx.prepare(
            "SELECT id, pos, command, cwd, env, timeout, state, effect, rule, reason, risk, note, exit_code, category,
             duration_ms, stdout_sha256, stderr_sha256, stdout_truncated, timed_out
             FROM entries WHERE batch = ?1 ORDER BY pos",
        )?;
        let rows = st.query_map([batch], |r| {
            let env: String = r.get(4)?;
            let category: Option<String> = r.get(13)?;
            Ok(EntryView {
                id: r.get(0)?,
                index: r.get::<_, i64>(1)? as usize,
                command: r.get(2)?,
                cwd: r.get(3)?,
                env: serde_json::from_str(&env).unwrap_or_default(),
                timeout: r.get::<_, Option<i64>>(5)?.map(|t| t as u64),
                state: entry_state(r.get(6)?)?,
                decision: Decision { effect: effect(r.get(7)?)?, rule: r.get(8)?, reason: r.get(9)?, risk: r.get(10)? },
                note: r.get(11)?,
                exit_code: r.get(12)?,
                category: category.as_deref().and_then(Category::parse),
                duration_ms: r.get::<_, Option<i64>>(14)?.map(|d| d as u64),
                stdout_sha256: r.get(15)?,
                stderr_sha256: r.get(16)?,
                stdout_truncated: r.get(17)?,
                timed_out: r.get(18)?,
            })
        })?;
        view.entries = rows.collect::<Result<_, _>>()?;
        Ok(view)
    }

    pub fn list(&self, filter: &ListFilter) -> Result<Vec<BatchSummary>, BrokerError> {
        let mut sql = String::from(
            "SELECT b.id, b.state, b.agent, b.project, b.created_ms, b.decision,
             (SELECT COUNT(*) FROM entries e WHERE e.batch = b.id), b.approval_ttl_ms, b.expires_ms
             FROM batches b WHERE 1 = 1",
        );
        let mut args: Vec<SqlValue> = Vec::new();
        if let Some(s) = filter.state {
            sql.push_str(" AND b.state = ?");
            args.push(SqlValue::Text(s.as_str().into()));
        }
        if let Some(p) = &filter.project {
            sql.push_str(" AND b.project = ?");
            args.push(SqlValue::Text(p.clone()));
        }
        if let Some(a) = &filter.agent {
            sql.push_str(" AND b.agent = ?");
            args.push(SqlValue::Text(a.clone()));
        }
        if let Some(s) = &filter.submitter {
            sql.push_str(" AND b.submitter = ?");
            args.push(SqlValue::Text(s.clone()));
        }
        sql.push_str(" ORDER BY b.created_ms DESC, b.id LIMIT ?");
        args.push(SqlValue::Integer(filter.limit.map(|l| l as i64).unwrap_or(-1)));
        let mut st = self.conn.prepare(&sql)?;
        let rows = st.query_map(params_from_iter(args), |r| {
            Ok(BatchSummary {
                id: r.get(0)?,
                state: batch_state(r.get(1)?)?,
                agent: r.get(2)?,
                project: r.get(3)?,
                created: rfc3339(r.get(4)?),
                decision: effect(r.get(5)?)?,
                entries: r.get::<_, i64>(6)? as usize,
                approval_ttl: r.get::<_, Option<i64>>(7)?.map(ttl_secs),
                expires_at: r.get::<_, Option<i64>>(8)?.map(rfc3339),
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

/// Milliseconds recorded → whole seconds shown (at least 1 when any).
fn ttl_secs(ms: i64) -> u64 {
    (ms.max(0) as u64).div_ceil(1000)
}
