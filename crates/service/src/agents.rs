//! Agents: registered by name (an id each), their status (idle, running,
//! waiting for approval) and what they used against the budgets of the
//! policy (`[budgets]`), which the broker enforces when a batch is
//! submitted and when it starts.

use crate::context::Context;
use crate::error::{Error, Result};
use crate::output::Version;
use cloche_broker::{AgentView, Budgets};
use cloche_policy::Policy;
use schemars::JsonSchema;
use serde::Serialize;

/// `cloche agents --json`: every registered agent.
#[derive(Debug, Serialize, JsonSchema)]
pub struct AgentList {
    pub schema_version: Version,
    pub agents: Vec<AgentView>,
    /// The budgets of the default policy, 0: no limit (those of a
    /// project's own policy apply to its batches).
    pub budgets: Budgets,
}

/// `cloche agents register|show --json`: one agent.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Agent {
    pub schema_version: Version,
    #[serde(flatten)]
    pub agent: AgentView,
}

/// The broker's view of a policy's `[budgets]`.
pub fn budgets_of(policy: &Policy) -> Budgets {
    let b = &policy.budgets;
    Budgets {
        batches_per_hour: b.batches_per_hour,
        entries_per_batch: b.entries_per_batch,
        cpu_seconds_per_hour: b.cpu_seconds_per_hour,
        egress_bytes_per_hour: b.egress_bytes_per_hour,
        concurrent_worlds: b.concurrent_worlds,
    }
}

impl Context {
    /// Registers agent `name` (or finds it): its id, status and usage.
    pub fn register_agent(&self, name: &str, actor: &str) -> Result<Agent> {
        let agent = self.broker()?.register_agent(name, actor)?;
        Ok(Agent { schema_version: Version, agent })
    }

    /// One registered agent.
    pub fn agent(&self, name: &str) -> Result<Agent> {
        match self.broker()?.agent(name) {
            Ok(agent) => Ok(Agent { schema_version: Version, agent }),
            Err(cloche_broker::BrokerError::NoSuchAgent(n)) => Err(Error::NotFound(format!("no agent {n}"))),
            Err(e) => Err(e.into()),
        }
    }

    /// Every registered agent, and the default policy's budgets.
    pub fn agents(&self) -> Result<AgentList> {
        let agents = self.broker()?.agents()?;
        let (_, policy) = self.store()?.resolve("/").map_err(|e| Error::Policy(e.to_string()))?;
        Ok(AgentList { schema_version: Version, agents, budgets: budgets_of(&policy) })
    }
}
