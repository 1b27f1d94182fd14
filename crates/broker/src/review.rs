//! After a run: the review of a batch's kept world. Its commit and its
//! discard are audited here, and move the batch to `committed`,
//! `partially_committed` or `discarded`.

use serde_json::{json, Value};

use crate::broker::Broker;
use crate::error::BrokerError;
use crate::state::BatchState;
use cloche_trace::audit::events;

/// States a batch's world can be reviewed in.
pub const REVIEWABLE: &[BatchState] = &[
    BatchState::Completed,
    BatchState::Failed,
    BatchState::Cancelled,
    BatchState::PartiallyCommitted,
    BatchState::Committed,
];

impl Broker {
    /// Audits a review step that changes no state (`committing` before the
    /// first write of a commit, `commit_refused`), for a batch or for a
    /// world of its own (`batch` None).
    pub fn review_event(
        &mut self,
        event: &str,
        batch: Option<&str>,
        actor: &str,
        details: Value,
    ) -> Result<(), BrokerError> {
        self.change(|c| {
            if let Some(b) = batch {
                c.batch(b)?;
            }
            c.audit(event, actor, batch, None, details)
        })
    }

    /// A commit of the batch's world ended: audited `committed` (with what
    /// was applied), then the batch is `committed`, or `partially_committed`
    /// when only some paths were taken or the commit stopped half-way.
    pub fn committed(&mut self, batch: &str, actor: &str, partial: bool, details: Value) -> Result<(), BrokerError> {
        self.change(|c| {
            c.batch_in(batch, REVIEWABLE, "commit")?;
            let state = if partial { BatchState::PartiallyCommitted } else { BatchState::Committed };
            let mut details = details;
            details["state"] = json!(state);
            c.audit(events::COMMITTED, actor, Some(batch), None, details)?;
            c.set_batch(batch, state, None)
        })
    }

    /// Audits that kept world `world` (of `batch`, if any) is about to be
    /// discarded by `actor`, and why; a reviewable batch becomes
    /// `discarded`. The caller discards the world afterwards.
    pub fn world_discarded(
        &mut self,
        world: &str,
        batch: Option<&str>,
        actor: &str,
        why: &str,
    ) -> Result<(), BrokerError> {
        self.change(|c| {
            let reviewable = match batch {
                Some(b) => REVIEWABLE.contains(&c.batch(b)?.state),
                None => false,
            };
            c.audit(events::DISCARDED, actor, batch, None, json!({"world": world, "why": why}))?;
            match (batch, reviewable) {
                (Some(b), true) => c.set_batch(b, BatchState::Discarded, None),
                _ => Ok(()),
            }
        })
    }
}
