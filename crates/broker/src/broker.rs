//! The broker: opening, the transaction discipline, submission and approval.
//!
//! Every state change runs in one `BEGIN IMMEDIATE` transaction that reads
//! the current state, checks the transition, writes the new rows, appends
//! the audit record(s) (each fsynced) and only then commits. If a check or an
//! audit append fails the transaction rolls back: nothing changes.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use cloche_trace::audit::{events, AuditLog};
use rusqlite::{params, Connection, OptionalExtension, Transaction, TransactionBehavior};
use serde_json::{json, Value};

use crate::batch_file::{normalize_abs, BatchFile, Limits};
use crate::decision::{Classifier, Effect};
use crate::error::BrokerError;
use crate::state::{BatchState, EntryState};
use crate::util::{random_hex, rfc3339, sha256_hex, Clock, SystemClock};
use crate::view::BatchView;

/// Default for [`Config::approval_ttl`].
pub const DEFAULT_APPROVAL_TTL: Duration = Duration::from_secs(300);

/// Actor of the `decided` records.
pub const POLICY_ACTOR: &str = "policy";

pub struct Config {
    /// Most entries a batch may hold (default 10).
    pub max_entries: usize,
    /// How long an approval stays valid before the run starts (default 5 min).
    pub approval_ttl: Duration,
    /// How long to wait for another process's write lock (default 5 s).
    pub busy_timeout: Duration,
    pub clock: Arc<dyn Clock>,
    /// Actor of the records the broker writes on its own (run progress,
    /// crash recovery); default `broker`.
    pub system_actor: String,
    /// What each agent (submitter) may use; default: no limits.
    pub budgets: crate::agents::Budgets,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            max_entries: crate::batch_file::DEFAULT_MAX_ENTRIES,
            approval_ttl: DEFAULT_APPROVAL_TTL,
            busy_timeout: Duration::from_secs(5),
            clock: Arc::new(SystemClock),
            system_actor: "broker".into(),
            budgets: Default::default(),
        }
    }
}

impl Config {
    pub fn limits(&self) -> Limits {
        Limits { max_entries: self.max_entries }
    }
}

pub struct Broker {
    pub(crate) conn: Connection,
    pub(crate) audit: AuditLog,
    pub(crate) config: Config,
    classifier: Box<dyn Classifier + Send + Sync>,
    dir: PathBuf,
    recovered: Vec<String>,
}

/// One state change in progress (see the module docs).
pub(crate) struct Ctx<'a, 't> {
    pub tx: &'a Transaction<'t>,
    audit: &'a mut AuditLog,
    pub now: i64,
    pub cfg: &'a Config,
}

pub(crate) struct BatchRow {
    pub id: String,
    pub state: BatchState,
    pub agent: Option<String>,
    pub submitter: String,
    pub stop_on_failure: bool,
    pub decision: Effect,
    pub expires_ms: Option<i64>,
    pub runner: Option<String>,
}

pub(crate) struct EntryRow {
    pub id: String,
    pub pos: i64,
    pub state: EntryState,
    pub effect: Effect,
    pub rule: String,
    pub command: String,
    pub cwd: String,
    pub env: String,
    pub timeout: Option<i64>,
}

fn corrupt(what: &str, v: &str) -> rusqlite::Error {
    rusqlite::Error::InvalidColumnType(0, format!("{what} {v:?}"), rusqlite::types::Type::Text)
}

pub(crate) fn batch_state(v: String) -> rusqlite::Result<BatchState> {
    BatchState::parse(&v).ok_or_else(|| corrupt("batch state", &v))
}
pub(crate) fn entry_state(v: String) -> rusqlite::Result<EntryState> {
    EntryState::parse(&v).ok_or_else(|| corrupt("entry state", &v))
}
pub(crate) fn effect(v: String) -> rusqlite::Result<Effect> {
    Effect::parse(&v).ok_or_else(|| corrupt("effect", &v))
}

fn check_actor(actor: &str) -> Result<(), BrokerError> {
    if actor.is_empty() || actor.len() > 256 || actor.chars().any(char::is_control) {
        return Err(BrokerError::Invalid(format!("actor {actor:?}: 1 to 256 characters without control characters")));
    }
    Ok(())
}

impl Ctx<'_, '_> {
    pub fn audit(
        &mut self,
        event: &str,
        actor: &str,
        batch: Option<&str>,
        entry: Option<&str>,
        details: Value,
    ) -> Result<(), BrokerError> {
        self.audit.append(event, actor, batch, entry, details)?;
        Ok(())
    }

    pub fn batch(&self, id: &str) -> Result<BatchRow, BrokerError> {
        self.tx
            .query_row(
                "SELECT id, state, agent, submitter, stop_on_failure, decision, expires_ms, runner
                 FROM batches WHERE id = ?1",
                [id],
                |r| {
                    Ok(BatchRow {
                        id: r.get(0)?,
                        state: batch_state(r.get(1)?)?,
                        agent: r.get(2)?,
                        submitter: r.get(3)?,
                        stop_on_failure: r.get(4)?,
                        decision: effect(r.get(5)?)?,
                        expires_ms: r.get(6)?,
                        runner: r.get(7)?,
                    })
                },
            )
            .optional()?
            .ok_or_else(|| BrokerError::NoSuchBatch(id.to_string()))
    }

    /// `id`'s batch, refused unless it is in one of `ok`.
    pub fn batch_in(&self, id: &str, ok: &[BatchState], op: &'static str) -> Result<BatchRow, BrokerError> {
        let b = self.batch(id)?;
        if !ok.contains(&b.state) {
            return Err(BrokerError::WrongState { batch: b.id, state: b.state, op });
        }
        Ok(b)
    }

    pub fn entries(&self, batch: &str) -> Result<Vec<EntryRow>, BrokerError> {
        let mut st = self.tx.prepare(
            "SELECT id, pos, state, effect, rule, command, cwd, env, timeout FROM entries WHERE batch = ?1 ORDER BY pos",
        )?;
        let rows = st.query_map([batch], |r| {
            Ok(EntryRow {
                id: r.get(0)?,
                pos: r.get(1)?,
                state: entry_state(r.get(2)?)?,
                effect: effect(r.get(3)?)?,
                rule: r.get(4)?,
                command: r.get(5)?,
                cwd: r.get(6)?,
                env: r.get(7)?,
                timeout: r.get(8)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    pub fn set_batch(&self, id: &str, state: BatchState, reason: Option<&str>) -> Result<(), BrokerError> {
        self.tx.execute(
            "UPDATE batches SET state = ?2, updated_ms = ?3, reason = COALESCE(?4, reason) WHERE id = ?1",
            params![id, state.as_str(), self.now, reason],
        )?;
        Ok(())
    }

    pub fn set_entry(&self, id: &str, state: EntryState, note: Option<&str>) -> Result<(), BrokerError> {
        self.tx.execute(
            "UPDATE entries SET state = ?2, note = COALESCE(?3, note) WHERE id = ?1",
            params![id, state.as_str(), note],
        )?;
        Ok(())
    }

    /// Marks every `pending` entry of `entries` `skipped` with `note`; returns their ids.
    pub fn skip_pending(&self, entries: &[EntryRow], note: &str) -> Result<Vec<String>, BrokerError> {
        let mut skipped = Vec::new();
        for e in entries.iter().filter(|e| e.state == EntryState::Pending) {
            self.set_entry(&e.id, EntryState::Skipped, Some(note))?;
            skipped.push(e.id.clone());
        }
        Ok(skipped)
    }
}

impl Broker {
    /// Opens (or creates) `<state_dir>/broker.db` and `<state_dir>/audit.jsonl`,
    /// then runs [`Broker::recover_after_crash`].
    pub fn open(
        state_dir: &Path,
        config: Config,
        classifier: Box<dyn Classifier + Send + Sync>,
    ) -> Result<Broker, BrokerError> {
        let conn = crate::db::open(state_dir, config.busy_timeout)?;
        let audit = AuditLog::open(state_dir.join("audit.jsonl"))?;
        let mut broker =
            Broker { conn, audit, config, classifier, dir: state_dir.to_path_buf(), recovered: Vec::new() };
        broker.recovered = broker.recover_after_crash()?;
        Ok(broker)
    }

    pub fn state_dir(&self) -> &Path {
        &self.dir
    }

    pub fn audit_path(&self) -> PathBuf {
        self.dir.join("audit.jsonl")
    }

    /// Batches that [`Broker::open`] found interrupted and marked `failed`.
    pub fn recovered_at_open(&self) -> &[String] {
        &self.recovered
    }

    pub(crate) fn change<T>(
        &mut self,
        f: impl FnOnce(&mut Ctx<'_, '_>) -> Result<T, BrokerError>,
    ) -> Result<T, BrokerError> {
        let Broker { conn, audit, config, .. } = self;
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let out = f(&mut Ctx { tx: &tx, audit, now: config.clock.now_ms(), cfg: config })?;
        tx.commit()?;
        Ok(out)
    }

    /// Validates, classifies and records a batch submitted by `actor`
    /// (`uid:N`, `agent:ID`, ...). With a valid autonomy `token` for the
    /// batch's project and every entry `allow`, the batch is approved at once
    /// (audit actor `token:<fingerprint>`). A token that is given but not
    /// valid is an error.
    pub fn submit(&mut self, batch: &BatchFile, actor: &str, token: Option<&str>) -> Result<BatchView, BrokerError> {
        check_actor(actor)?;
        let batch = batch.clone().validate(&self.config.limits())?;
        let decisions: Vec<_> = batch
            .entries
            .iter()
            .map(|e| {
                let env: Vec<(String, String)> = e.env.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
                self.classifier.classify_entry(&e.command, &env)
            })
            .collect();
        let decision = decisions.iter().map(|d| d.effect).max().unwrap_or(Effect::Deny);
        let source = serde_json::to_vec(&batch).map_err(|e| BrokerError::Invalid(e.to_string()))?;
        let id = random_hex(8).map_err(BrokerError::io("getrandom"))?;
        let entry_ids = (0..batch.entries.len()).map(|_| random_hex(8)).collect::<Result<Vec<_>, _>>();
        let entry_ids = entry_ids.map_err(BrokerError::io("getrandom"))?;
        let token_hash = token.map(|t| sha256_hex(t.as_bytes()));
        let policy = self.classifier.policy_id();
        let ttl_ms = self.config.approval_ttl.as_millis() as i64;
        self.change(|c| {
            // The submitter's budgets, counted in this transaction (two
            // submissions at once cannot both take the last one); an agent
            // seen for the first time is registered.
            c.check_submit(actor, batch.entries.len())?;
            if let Some(name) = actor.strip_prefix("agent:") {
                c.register_agent(name, actor)?;
            }
            let fingerprint = match &token_hash {
                None => None,
                Some(hash) => {
                    let row: Option<(String, String)> =
                        c.tx.query_row(
                            "SELECT token_sha256, fingerprint FROM autonomy WHERE project = ?1",
                            [&batch.project],
                            |r| Ok((r.get(0)?, r.get(1)?)),
                        )
                        .optional()?;
                    let (stored, fp) = row.ok_or_else(|| BrokerError::AutonomyOff(batch.project.clone()))?;
                    if !crate::util::same(&stored, hash) {
                        return Err(BrokerError::BadToken(batch.project.clone()));
                    }
                    Some(fp)
                }
            };
            c.tx.execute(
                "INSERT INTO batches (id, state, agent, submitter, project, stop_on_failure, decision, source_sha256,
                 created_ms, updated_ms, policy, approval_ttl_ms, continues) VALUES (?1, 'pending', ?2, ?3, ?4, ?5, ?6,
                 ?7, ?8, ?8, ?9, ?10, ?11)",
                params![
                    id,
                    batch.agent,
                    actor,
                    batch.project,
                    batch.stop_on_failure,
                    decision.as_str(),
                    sha256_hex(&source),
                    c.now,
                    policy,
                    ttl_ms,
                    batch.world
                ],
            )?;
            for (pos, ((e, d), eid)) in batch.entries.iter().zip(&decisions).zip(&entry_ids).enumerate() {
                let env = serde_json::to_string(&e.env).map_err(|e| BrokerError::Invalid(e.to_string()))?;
                c.tx.execute(
                    "INSERT INTO entries (id, batch, pos, command, cwd, env, timeout, state, effect, rule, reason, risk)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 'pending', ?8, ?9, ?10, ?11)",
                    params![
                        eid,
                        id,
                        pos as i64,
                        e.command,
                        e.cwd.as_deref().unwrap_or(&batch.project),
                        env,
                        e.timeout.map(|t| t as i64),
                        d.effect.as_str(),
                        d.rule,
                        d.reason,
                        d.risk
                    ],
                )?;
            }
            let mut details = json!({"project": batch.project, "agent": batch.agent, "entries": entry_ids,
                "stop_on_failure": batch.stop_on_failure, "decision": decision, "source_sha256": sha256_hex(&source),
                "policy": policy});
            if let Some(w) = &batch.world {
                details["world"] = json!(w);
            }
            c.audit(events::SUBMITTED, actor, Some(&id), None, details)?;
            for ((e, d), eid) in batch.entries.iter().zip(&decisions).zip(&entry_ids) {
                let details = json!({"command": e.command, "effect": d.effect, "rule": d.rule, "reason": d.reason,
                    "risk": d.risk});
                c.audit(events::DECIDED, POLICY_ACTOR, Some(&id), Some(eid), details)?;
            }
            if let (Some(fp), Effect::Allow) = (fingerprint, decision) {
                let approver = format!("token:{fp}");
                mark_approved(c, &id, &approver, &entry_ids, &[], true)?;
            }
            Ok(())
        })?;
        self.get(&id)
    }

    /// Approves a `pending` batch: all its entries that are not denied
    /// (`entries: None`) or just the listed ones; every other entry becomes
    /// `skipped`. Refused: an approver who submitted a review-level batch
    /// (the submitting actor, the agent id or `agent:<id>`), a token actor,
    /// a listed entry that is denied or unknown, nothing left to approve.
    pub fn approve(
        &mut self,
        batch: &str,
        entries: Option<Vec<String>>,
        actor: &str,
    ) -> Result<BatchView, BrokerError> {
        check_actor(actor)?;
        if actor.starts_with("token:") {
            return Err(BrokerError::TokenApprover { actor: actor.into() });
        }
        self.change(|c| {
            let b = c.batch_in(batch, &[BatchState::Pending], "approve")?;
            let own = actor == b.submitter
                || b.agent.as_deref().is_some_and(|a| actor == a || actor.strip_prefix("agent:") == Some(a));
            if own && b.decision >= Effect::Review {
                return Err(BrokerError::SelfApproval { batch: b.id, actor: actor.into() });
            }
            let all = c.entries(batch)?;
            let chosen: Vec<String> = match entries {
                None => all.iter().filter(|e| e.effect != Effect::Deny).map(|e| e.id.clone()).collect(),
                Some(list) => {
                    let mut chosen = Vec::new();
                    for id in list {
                        let e = all
                            .iter()
                            .find(|e| e.id == id)
                            .ok_or_else(|| BrokerError::NoSuchEntry { batch: batch.into(), entry: id.clone() })?;
                        if e.effect == Effect::Deny {
                            return Err(BrokerError::DeniedEntry { entry: id, rule: e.rule.clone() });
                        }
                        if !chosen.contains(&id) {
                            chosen.push(id);
                        }
                    }
                    chosen
                }
            };
            if chosen.is_empty() {
                return Err(BrokerError::NothingToApprove(batch.into()));
            }
            let mut skipped = Vec::new();
            for e in all.iter().filter(|e| !chosen.contains(&e.id)) {
                let note = if e.effect == Effect::Deny { format!("denied: {}", e.rule) } else { "not approved".into() };
                c.set_entry(&e.id, EntryState::Skipped, Some(&note))?;
                skipped.push(json!({"entry": e.id, "why": note}));
            }
            mark_approved(c, batch, actor, &chosen, &skipped, false)
        })?;
        self.get(batch)
    }

    /// Rejects a `pending` batch; its entries become `skipped`.
    pub fn reject(&mut self, batch: &str, actor: &str, reason: Option<&str>) -> Result<BatchView, BrokerError> {
        check_actor(actor)?;
        self.change(|c| {
            c.batch_in(batch, &[BatchState::Pending], "reject")?;
            let entries = c.entries(batch)?;
            let skipped = c.skip_pending(&entries, "rejected")?;
            c.set_batch(batch, BatchState::Rejected, reason)?;
            c.audit(events::REJECTED, actor, Some(batch), None, json!({"entries": skipped, "reason": reason}))
        })?;
        self.get(batch)
    }

    /// Enables autonomy for `project` and returns a new token (64 hex; shown
    /// once, stored only as its sha256). Replaces any previous token.
    pub fn enable_autonomy(&mut self, project: &str, actor: &str) -> Result<String, BrokerError> {
        check_actor(actor)?;
        let project = normalize_abs(project).map_err(|m| BrokerError::Invalid(format!("project: {m}")))?;
        let token = random_hex(32).map_err(BrokerError::io("getrandom"))?;
        let hash = sha256_hex(token.as_bytes());
        let fp = hash[..12].to_string();
        self.change(|c| {
            c.tx.execute(
                "INSERT INTO autonomy (project, token_sha256, fingerprint, enabled_by, enabled_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT(project) DO UPDATE SET token_sha256 = ?2,
                 fingerprint = ?3, enabled_by = ?4, enabled_ms = ?5",
                params![project, hash, fp, actor, c.now],
            )?;
            c.audit("autonomy_enabled", actor, None, None, json!({"project": project, "fingerprint": fp}))
        })?;
        Ok(token)
    }

    /// Disables autonomy for `project`; false when it was not enabled.
    pub fn disable_autonomy(&mut self, project: &str, actor: &str) -> Result<bool, BrokerError> {
        check_actor(actor)?;
        let project = normalize_abs(project).map_err(|m| BrokerError::Invalid(format!("project: {m}")))?;
        self.change(|c| {
            let fp: Option<String> =
                c.tx.query_row("SELECT fingerprint FROM autonomy WHERE project = ?1", [&project], |r| r.get(0))
                    .optional()?;
            let Some(fp) = fp else { return Ok(false) };
            c.tx.execute("DELETE FROM autonomy WHERE project = ?1", [&project])?;
            c.audit("autonomy_disabled", actor, None, None, json!({"project": project, "fingerprint": fp}))?;
            Ok(true)
        })
    }

    /// The fingerprint of `project`'s autonomy token, if autonomy is on.
    pub fn autonomy(&self, project: &str) -> Result<Option<String>, BrokerError> {
        let project = normalize_abs(project).map_err(|m| BrokerError::Invalid(format!("project: {m}")))?;
        let q = "SELECT fingerprint FROM autonomy WHERE project = ?1";
        Ok(self.conn.query_row(q, [&project], |r| r.get(0)).optional()?)
    }
}

fn mark_approved(
    c: &mut Ctx<'_, '_>,
    batch: &str,
    actor: &str,
    chosen: &[String],
    skipped: &[Value],
    auto: bool,
) -> Result<(), BrokerError> {
    let ttl: Option<i64> =
        c.tx.query_row("SELECT approval_ttl_ms FROM batches WHERE id = ?1", [batch], |r| r.get(0))?;
    let expires = c.now + ttl.unwrap_or(c.cfg.approval_ttl.as_millis() as i64);
    c.tx.execute(
        "UPDATE batches SET state = 'approved', approved_by = ?2, approved_ms = ?3, expires_ms = ?4, updated_ms = ?3
         WHERE id = ?1",
        params![batch, actor, c.now, expires],
    )?;
    let details = json!({"entries": chosen, "skipped": skipped, "auto": auto, "expires": rfc3339(expires)});
    c.audit(events::APPROVED, actor, Some(batch), None, details)
}
