//! Batches: submitted with the policy of their project, cancelled with
//! their runner, shown as they would run; autonomy per project. The broker
//! keeps their state (`cloche_broker`); running one is [`crate::batch_run`].
//!
//! Identity without the daemon: the submitter is `agent:<agent>` when the
//! batch names an agent, else the caller; the broker refuses a
//! review-level approval by the submitter or the batch's agent.

use crate::classifier::PolicyClassifier;
use crate::context::Context;
use crate::error::{Error, Result};
use crate::output::{Autonomy, DryRun, DryRunEntry, Version};
use cloche_broker::{BatchFile, BatchView, EntryView, Limits};
use cloche_policy::Policy;
use std::path::Path;

/// Parses a batch given as text: JSON when it starts with `{`, else TOML.
pub fn parse_batch(text: &str) -> Result<BatchFile> {
    let loose = Limits { max_entries: usize::MAX };
    let format =
        if text.trim_start().starts_with('{') { cloche_broker::Format::Json } else { cloche_broker::Format::Toml };
    BatchFile::parse(text, format, &loose).map_err(|e| Error::BatchFile(format!("batch: {e}")))
}

impl Context {
    /// The policy version a batch runs with: the project policy it was
    /// classified with (`id` up to a `+`).
    pub fn batch_policy(&self, id: &str) -> Result<Policy> {
        let base = id.split('+').next().unwrap_or(id);
        self.load_version(base).map_err(|e| Error::Policy(format!("policy {base} of this batch: {e}")))
    }

    /// Submits a batch: its project made canonical and judged against the
    /// masks of its world (a refusal records nothing), classified by the
    /// policy bound to it and by a tightening `extra` policy file, recorded
    /// by the broker. `caller` submits unless the batch names an agent.
    pub fn submit(
        &self,
        mut batch: BatchFile,
        token: Option<&str>,
        extra: Option<&Path>,
        caller: &str,
    ) -> Result<BatchView> {
        crate::project::canonicalize(&mut batch)?;
        self.check_batch_world(&batch, caller)?;
        let (mut id, policy) = self.resolve(&batch.project)?;
        crate::project::judge(&batch.project, &policy, self.state()?)?;
        let mut policies = vec![policy.clone()];
        if let Some(f) = extra {
            let text =
                std::fs::read_to_string(f).map_err(|e| Error::Invalid(format!("--policy {}: {e}", f.display())))?;
            let base = f.parent().unwrap_or(Path::new("."));
            let p = Policy::from_toml(&text, &f.display().to_string(), Some(base))
                .map_err(|e| Error::Policy(e.to_string()))?;
            let added = self.store()?.add(&text, &p).map_err(|e| Error::Policy(e.to_string()))?;
            id = format!("{id}+{added}");
            policies.push(p);
        }
        let actor = batch.agent.as_ref().map(|a| format!("agent:{a}")).unwrap_or_else(|| caller.to_string());
        let mut broker = self.open_broker_with(&policy, PolicyClassifier { id, policies })?;
        let view = broker.submit(&batch, &actor, token).inspect_err(|e| {
            tracing::info!(submitter = %actor, project = %batch.project, error = %e, "batch refused");
        })?;
        tracing::info!(batch = %view.id, submitter = %actor, decision = view.decision.as_str(), entries = view.entries.len(), "batch submitted");
        Ok(view)
    }

    /// Submits a batch for a caller the daemon identified (`caller`, its
    /// actor, whose kept world a batch may continue): `submitter` is the
    /// actor recorded, which the broker's rule "never approved by its
    /// submitter" holds for (the caller, or for root the agent its batch
    /// names: the daemon decides). The project is made canonical and judged as
    /// by [`Context::submit`]; `check` sees the canonical project before
    /// anything is recorded (the daemon refuses one its caller could not
    /// read: asked with the project as given, then as made canonical).
    pub fn submit_as(
        &self,
        mut batch: BatchFile,
        token: Option<&str>,
        caller: &str,
        submitter: &str,
        mut check: impl FnMut(&Path) -> Result<()>,
    ) -> Result<BatchView> {
        // Before anything looks at the project as root: a caller learns
        // nothing about paths it could not read.
        check(Path::new(&batch.project))?;
        crate::project::canonicalize(&mut batch)?;
        check(Path::new(&batch.project))?;
        self.check_batch_world(&batch, caller)?;
        let (id, policy) = self.resolve(&batch.project)?;
        crate::project::judge(&batch.project, &policy, self.state()?)?;
        let mut broker = self.open_broker_with(&policy.clone(), PolicyClassifier { id, policies: vec![policy] })?;
        Ok(broker.submit(&batch, submitter, token)?)
    }

    /// What `batch run` would run, running nothing.
    pub fn dry_run(&self, id: &str) -> Result<DryRun> {
        let v = self.broker()?.get(id)?;
        let entries = v
            .entries
            .iter()
            .map(|en| DryRunEntry { id: en.id.clone(), command: en.command.clone(), runs: would_run(en) })
            .collect();
        Ok(DryRun { schema_version: Version, batch: v.id, entries })
    }

    /// Cancels a batch (the kill switch): the broker records it, and a
    /// runner still alive gets SIGTERM, on which it kills its world.
    pub fn cancel(&self, id: &str, actor: &str) -> Result<BatchView> {
        let mut broker = self.broker()?;
        let before = broker.get(id)?;
        broker.cancel(id, actor)?;
        if let Some(pid) = runner_pid(before.runner.as_deref()) {
            signal_runner(pid);
        }
        Ok(broker.get(id)?)
    }

    /// Turns auto-approval of all-allow batches of `project` on (with the
    /// token, shown once) or off.
    pub fn autonomy(&self, project: String, enable: bool, actor: &str) -> Result<Autonomy> {
        let mut broker = self.broker()?;
        let project = canonical_or_given(project);
        let token = match enable {
            true => Some(broker.enable_autonomy(&project, actor)?),
            false => {
                broker.disable_autonomy(&project, actor)?;
                None
            }
        };
        Ok(Autonomy { schema_version: Version, project, enabled: enable, token })
    }
}

/// Whether `batch run` runs an entry: pending and not denied.
pub fn would_run(en: &EntryView) -> bool {
    matches!(en.state, cloche_broker::EntryState::Pending) && en.decision.effect != cloche_broker::Effect::Deny
}

/// The pid of the runner tag `pid:<pid>:<start>:<boot>`, only while that
/// very process lives (same boot, same start time): a recycled pid is never
/// signalled.
fn runner_pid(tag: Option<&str>) -> Option<i32> {
    let pid: i32 = tag?.strip_prefix("pid:")?.split(':').next()?.parse().ok()?;
    (pid > 1 && cloche_broker::runner_alive(tag)).then_some(pid)
}

/// SIGTERM to a batch's runner (it kills its world on its stop signals).
fn signal_runner(pid: i32) {
    // SAFETY: kill with a pid and a signal touches no memory.
    unsafe { libc::kill(pid, libc::SIGTERM) };
}

/// Batches record their canonical project: so does autonomy (a path that
/// does not exist is kept as given, so a removed project can be disabled).
fn canonical_or_given(project: String) -> String {
    std::fs::canonicalize(&project).ok().and_then(|p| p.to_str().map(String::from)).unwrap_or(project)
}
