//! Agents: who asks for batches. A batch submitted with `"agent": NAME` is
//! that agent's (submitter `agent:NAME`); the name is registered with an id
//! the first time it is seen (or by `register_agent`). An agent's status
//! comes from its batches; its budgets (what the policy lets each agent
//! use, [`Budgets`]) are checked inside the transactions that submit and
//! start its batches, so concurrent requests cannot overrun them.

use rusqlite::{params, OptionalExtension};
use serde::Serialize;
use serde_json::json;

use crate::broker::{Broker, Ctx};
use crate::error::BrokerError;
use crate::util::random_hex;
use cloche_trace::audit::events;

/// One hour, the window of the hourly budgets.
const HOUR_MS: i64 = 3_600_000;

/// What each agent may use (0: no limit). Windows are the last hour.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct Budgets {
    pub batches_per_hour: u64,
    pub entries_per_batch: u64,
    pub cpu_seconds_per_hour: u64,
    pub egress_bytes_per_hour: u64,
    pub concurrent_worlds: u64,
}

/// What an agent is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum AgentStatus {
    /// No batch of its running or waiting.
    Idle,
    /// A batch of its is running.
    Running,
    /// A batch of its waits for a reviewer's approval.
    Waiting,
}

/// What an agent used (the hourly ones: in the last hour).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, schemars::JsonSchema)]
pub struct Usage {
    pub batches_last_hour: u64,
    pub running: u64,
    pub cpu_ms_last_hour: u64,
    pub egress_bytes_last_hour: u64,
}

/// A registered agent.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct AgentView {
    pub name: String,
    pub id: String,
    pub status: AgentStatus,
    pub registered_by: String,
    pub registered_ms: i64,
    pub usage: Usage,
}

/// What one submitter (`agent:NAME`, or `uid:N` for a daemon's caller,
/// whose batches are submitted as itself) is doing and used: what its
/// budgets are checked against.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
pub struct SubmitterUsage {
    pub submitter: String,
    pub status: AgentStatus,
    pub usage: Usage,
}

/// An agent name, as a batch file's `agent`: 1 to 64 of
/// `A-Z a-z 0-9 . _ - @ :`.
pub fn check_name(name: &str) -> Result<(), BrokerError> {
    let ok = (1..=64).contains(&name.len()) && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-@:".contains(&b));
    match ok {
        true => Ok(()),
        false => Err(BrokerError::Invalid(format!("agent name {name:?}: 1 to 64 of A-Z a-z 0-9 . _ - @ :"))),
    }
}

/// What `submitter` (`agent:NAME`, `uid:N`, ...) used, as of `now`.
fn usage(tx: &rusqlite::Connection, submitter: &str, now: i64) -> rusqlite::Result<Usage> {
    let since = now - HOUR_MS;
    tx.query_row(
        "SELECT
           (SELECT COUNT(*) FROM batches WHERE submitter = ?1 AND created_ms > ?2),
           (SELECT COUNT(*) FROM batches WHERE submitter = ?1 AND state = 'running'),
           (SELECT COALESCE(SUM(cpu_ms), 0) FROM batches WHERE submitter = ?1 AND usage_ms > ?2),
           (SELECT COALESCE(SUM(egress_bytes), 0) FROM batches WHERE submitter = ?1 AND usage_ms > ?2)",
        params![submitter, since],
        |r| {
            Ok(Usage {
                batches_last_hour: r.get::<_, i64>(0)? as u64,
                running: r.get::<_, i64>(1)? as u64,
                cpu_ms_last_hour: r.get::<_, i64>(2)? as u64,
                egress_bytes_last_hour: r.get::<_, i64>(3)? as u64,
            })
        },
    )
}

fn status(tx: &rusqlite::Connection, submitter: &str) -> rusqlite::Result<AgentStatus> {
    let (running, pending): (i64, i64) = tx.query_row(
        "SELECT COUNT(*) FILTER (WHERE state = 'running'), COUNT(*) FILTER (WHERE state = 'pending')
         FROM batches WHERE submitter = ?1",
        [submitter],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    Ok(if running > 0 {
        AgentStatus::Running
    } else if pending > 0 {
        AgentStatus::Waiting
    } else {
        AgentStatus::Idle
    })
}

fn over(agent: &str, budget: &'static str, used: u64, limit: u64) -> BrokerError {
    BrokerError::Budget { agent: agent.to_string(), budget, used, limit }
}

impl Ctx<'_, '_> {
    /// Registers `name` if it is new (audited); returns its id.
    pub(crate) fn register_agent(&mut self, name: &str, actor: &str) -> Result<String, BrokerError> {
        check_name(name)?;
        let known: Option<String> =
            self.tx.query_row("SELECT id FROM agents WHERE name = ?1", [name], |r| r.get(0)).optional()?;
        if let Some(id) = known {
            return Ok(id);
        }
        let id = random_hex(8).map_err(BrokerError::io("getrandom"))?;
        self.tx.execute(
            "INSERT INTO agents (name, id, registered_by, registered_ms) VALUES (?1, ?2, ?3, ?4)",
            params![name, id, actor, self.now],
        )?;
        self.audit(events::AGENT_REGISTERED, actor, None, None, json!({"agent": name, "id": id}))?;
        Ok(id)
    }

    /// Refuses a batch of `entries` entries from `submitter` that its
    /// budgets do not allow (counted before this batch is recorded).
    pub(crate) fn check_submit(&self, submitter: &str, entries: usize) -> Result<(), BrokerError> {
        let b = &self.cfg.budgets;
        if b.entries_per_batch > 0 && entries as u64 > b.entries_per_batch {
            return Err(over(submitter, "entries_per_batch", entries as u64, b.entries_per_batch));
        }
        if b.batches_per_hour > 0 {
            let u = usage(self.tx, submitter, self.now)?;
            if u.batches_last_hour >= b.batches_per_hour {
                return Err(over(submitter, "batches_per_hour", u.batches_last_hour, b.batches_per_hour));
            }
        }
        Ok(())
    }

    /// Refuses to start a batch of `submitter` that its budgets do not
    /// allow now (this batch not yet counted as running).
    pub(crate) fn check_run(&self, submitter: &str) -> Result<(), BrokerError> {
        let b = &self.cfg.budgets;
        let u = usage(self.tx, submitter, self.now)?;
        if b.concurrent_worlds > 0 && u.running >= b.concurrent_worlds {
            return Err(over(submitter, "concurrent_worlds", u.running, b.concurrent_worlds));
        }
        if b.cpu_seconds_per_hour > 0 && u.cpu_ms_last_hour >= b.cpu_seconds_per_hour * 1000 {
            return Err(over(submitter, "cpu_seconds_per_hour", u.cpu_ms_last_hour / 1000, b.cpu_seconds_per_hour));
        }
        if b.egress_bytes_per_hour > 0 && u.egress_bytes_last_hour >= b.egress_bytes_per_hour {
            return Err(over(submitter, "egress_bytes_per_hour", u.egress_bytes_last_hour, b.egress_bytes_per_hour));
        }
        Ok(())
    }
}

impl Broker {
    /// The budgets checked from now on (those of the policy a batch runs
    /// under; the broker's own default: none).
    pub fn set_budgets(&mut self, budgets: Budgets) {
        self.config.budgets = budgets;
    }

    /// Registers agent `name` (or finds it): its view, with its id.
    pub fn register_agent(&mut self, name: &str, actor: &str) -> Result<AgentView, BrokerError> {
        self.change(|c| c.register_agent(name, actor).map(drop))?;
        self.agent(name)
    }

    /// Every registered agent, by name.
    pub fn agents(&self) -> Result<Vec<AgentView>, BrokerError> {
        let mut st = self.conn.prepare("SELECT name FROM agents ORDER BY name")?;
        let names = st.query_map([], |r| r.get::<_, String>(0))?.collect::<Result<Vec<_>, _>>()?;
        names.iter().map(|n| self.agent(n)).collect()
    }

    /// One agent: its id, status and usage.
    pub fn agent(&self, name: &str) -> Result<AgentView, BrokerError> {
        let row: Option<(String, String, i64)> = self
            .conn
            .query_row("SELECT id, registered_by, registered_ms FROM agents WHERE name = ?1", [name], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })
            .optional()?;
        let (id, registered_by, registered_ms) = row.ok_or_else(|| BrokerError::NoSuchAgent(name.to_string()))?;
        let submitter = format!("agent:{name}");
        Ok(AgentView {
            name: name.to_string(),
            id,
            status: status(&self.conn, &submitter)?,
            registered_by,
            registered_ms,
            usage: usage(&self.conn, &submitter, self.config.clock.now_ms())?,
        })
    }

    /// What `submitter` is doing and used (as of now).
    pub fn submitter_usage(&self, submitter: &str) -> Result<SubmitterUsage, BrokerError> {
        Ok(SubmitterUsage {
            submitter: submitter.to_string(),
            status: status(&self.conn, submitter)?,
            usage: usage(&self.conn, submitter, self.config.clock.now_ms())?,
        })
    }

    /// What running batch `batch`'s world used, for its submitter's budgets.
    pub fn record_usage(&mut self, batch: &str, cpu_ms: u64, egress_bytes: u64) -> Result<(), BrokerError> {
        self.change(|c| {
            c.tx.execute(
                "UPDATE batches SET cpu_ms = ?2, egress_bytes = ?3, usage_ms = ?4 WHERE id = ?1",
                params![batch, cpu_ms as i64, egress_bytes as i64, c.now],
            )?;
            Ok(())
        })
    }
}
