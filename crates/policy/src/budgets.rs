//! The policy's `[budgets]` section: how much each agent may ask of the
//! machine. Every agent gets the same budget; a budget of 0 means no limit
//! for that measure. Windows are the last hour, sliding.

use serde::Deserialize;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawBudgets {
    batches_per_hour: u64,
    entries_per_batch: u64,
    cpu_seconds_per_hour: u64,
    egress_bytes_per_hour: crate::SizeValue,
    concurrent_worlds: u64,
}

/// Per-agent budgets (`[budgets]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Budgets {
    /// Batches an agent may submit in the last hour.
    pub batches_per_hour: u64,
    /// Entries in one batch (besides `[batch] max_entries`, for everyone).
    pub entries_per_batch: u64,
    /// CPU time its batches' worlds used in the last hour, in seconds.
    pub cpu_seconds_per_hour: u64,
    /// Bytes its batches' worlds sent to allowed destinations in the last hour.
    pub egress_bytes_per_hour: u64,
    /// Its batches running at once (each is a world).
    pub concurrent_worlds: u64,
}

impl Default for Budgets {
    /// What an agent gets when the policy says nothing: enough for an agent
    /// at work, not enough for one loop gone wrong to take the machine.
    fn default() -> Self {
        Budgets {
            batches_per_hour: 120,
            entries_per_batch: 0,
            cpu_seconds_per_hour: 7200,
            egress_bytes_per_hour: 4 << 30,
            concurrent_worlds: 4,
        }
    }
}

pub(crate) fn section(raw: Option<RawBudgets>) -> Result<Budgets, String> {
    let Some(r) = raw else { return Ok(Budgets::default()) };
    Ok(Budgets {
        batches_per_hour: r.batches_per_hour,
        entries_per_batch: r.entries_per_batch,
        cpu_seconds_per_hour: r.cpu_seconds_per_hour,
        egress_bytes_per_hour: r.egress_bytes_per_hour.bytes("budgets.egress_bytes_per_hour")?,
        concurrent_worlds: r.concurrent_worlds,
    })
}
