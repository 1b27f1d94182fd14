//! `batch run`: an approved batch in one world, entry by entry, each
//! result recorded (broker, the world's records, spans), the world kept for
//! review, then the retention limit of the batch's policy applied.
//!
//! A [`BatchObserver`] hears every step as it happens: a front end prints
//! them, a daemon can stream them.

use crate::batch_net::NetTally;
use crate::context::Context;
use crate::error::{Error, Result};
use cloche_broker::{categorize, BatchState, BatchView, Broker, Decision, EntryResult, RunnableEntry};
use cloche_policy::Policy;
use cloche_trace::span::{FsTotals, Span, SpanFsDiff, SpanNetwork, SpanPolicy, SpanWriter};
use cloche_world::batch::{Entry, Io, OutStream, World};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Which of an entry's output streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

/// A step of a batch's run, in the order they happen.
#[derive(Debug)]
pub enum BatchEvent<'a> {
    /// What the world's exposures unmask (one line each, `cloche: note: ...`).
    Note(&'a str),
    /// The world started.
    WorldStarted { world: &'a str },
    /// An entry is about to run (`index` of `of`, from 0).
    EntryStarted { entry: &'a RunnableEntry, index: usize, of: usize },
    /// Output of a running entry, as it is read: every chunk, all of it
    /// (the record keeps the policy's `output_cap` of each stream), each
    /// stream in order (between the two, as their pipes delivered them).
    Output { entry: &'a str, stream: Stream, bytes: &'a [u8] },
    /// An entry ended and its result is recorded.
    EntryFinished { entry: &'a str, result: &'a EntryResult },
    /// The batch was cancelled (or its runner asked to stop) during an entry.
    Cancelled { entry: &'a str },
    /// The world is kept for review at `path`.
    WorldKept { world: &'a str, path: &'a Path },
    /// The retention limit discarded a kept world.
    Discarded { world: &'a str, why: &'a str },
    /// The retention limit could not be applied (the batch's end stands).
    RetentionFailed { error: &'a str },
}

/// Hears a batch's run as it happens.
pub trait BatchObserver {
    fn event(&mut self, event: BatchEvent<'_>);
}

/// A closure hears them too.
impl<F: FnMut(BatchEvent<'_>)> BatchObserver for F {
    fn event(&mut self, event: BatchEvent<'_>) {
        self(event)
    }
}

/// How a batch's run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BatchEnd {
    /// Every entry that ran exited 0.
    Completed,
    /// An entry exited non-zero.
    Failed,
    /// Cancelled, or the runner was stopped by a signal.
    Cancelled,
}

impl Context {
    /// Runs an approved batch: one world, entries in order. A failure once
    /// the batch is `running` ends it as failed with the reason, instead of
    /// leaving it to the next start's recovery.
    pub fn run_batch(&self, id: &str, obs: &mut dyn BatchObserver) -> Result<BatchEnd> {
        self.run_batch_as(id, None, obs)
    }

    /// [`Context::run_batch`] with the world's processes running as `user`
    /// (`cloched`: the batch's submitter, when it is not root).
    pub fn run_batch_as(
        &self,
        id: &str,
        user: Option<&cloche_world::spec::WorldUser>,
        obs: &mut dyn BatchObserver,
    ) -> Result<BatchEnd> {
        let view = self.broker()?.get(id)?;
        // A batch that continues a kept world holds it before it starts: a
        // world that is gone or in use refuses the run at once, and the
        // batch stays approved. (Whose the world is was judged when the
        // batch was submitted; the world's frame is checked below.)
        let taken = match &view.continues {
            Some(w) => Some(cloche_world::continued::take(self.kept_state()?, w).map_err(crate::session::kept_error)?),
            None => None,
        };
        let mut broker = self.broker()?;
        let broker = &mut *broker;
        // Fail closed before the batch starts if its policy version is gone.
        let policy = self.batch_policy(&view.policy)?;
        // The budgets of the batch's own policy decide whether it may start.
        broker.set_budgets(crate::agents::budgets_of(&policy));
        let runnable = broker.start_run(id).inspect_err(|e| tracing::info!(batch = id, error = %e, "run refused"))?;
        tracing::info!(batch = id, entries = runnable.len(), "batch running");
        self.run_started(broker, &policy, &view, &runnable, user, taken, obs).inspect_err(|e| {
            let _ = broker.finish_run(id, BatchState::Failed, Some(&e.to_string()));
        })
    }

    /// The body of `batch run` once the broker has marked the batch running.
    #[allow(clippy::too_many_arguments)]
    fn run_started(
        &self,
        broker: &mut Broker,
        policy: &Policy,
        view: &BatchView,
        runnable: &[RunnableEntry],
        user: Option<&cloche_world::spec::WorldUser>,
        taken: Option<cloche_world::continued::Taken>,
        obs: &mut dyn BatchObserver,
    ) -> Result<BatchEnd> {
        let id = view.id.as_str();
        let state = self.state()?;
        let project = crate::project::recheck(&view.project)?;
        let mut spec = crate::run::policy_spec(self, policy, state, project)?;
        for n in crate::project::check_world(&spec, state, "project")? {
            obs.event(BatchEvent::Note(&n));
        }
        spec.keep = true; // kept for review (diff, commit, discard)
        spec.owner = Some(format!("batch:{id}"));
        spec.user = user.cloned();
        let started_ms = crate::session::now_ms();
        let mut world = match taken {
            None => World::start(&spec, state).map_err(Error::WorldStart)?,
            Some(t) => {
                // What a continuation keeps (a refusal changes nothing),
                // then audited before the world changes.
                t.check(&spec, state).map_err(|e| match e {
                    cloche_world::WorldError::Kept(k) => crate::session::kept_error(k),
                    e => Error::WorldStart(e),
                })?;
                let details = serde_json::json!({"world": t.id(), "run": t.next_run(), "what": {"batch": id}});
                broker.review_event("world_continued", Some(id), &view.submitter, details)?;
                World::continue_in(&spec, state, t).map_err(|e| match e {
                    cloche_world::WorldError::Kept(k) => crate::session::kept_error(k),
                    e => Error::WorldStart(e),
                })?
            }
        };
        tracing::debug!(batch = id, world = world.id(), "world started");
        let userns = serde_json::to_value(world.userns().map(crate::report::UsernsMap::from)).unwrap_or_default();
        broker.world_started(id, world.id(), &world.layers(), userns)?;
        obs.event(BatchEvent::WorldStarted { world: world.id() });
        // Per entry: which paths it changed, and the host state of each path
        // the first time (conflict detection at commit).
        let mut recorder = cloche_review::record::Recorder::open(&state.world_path(world.id()))
            .map_err(|e| Error::Records(e.to_string()))?;
        let cap = usize::try_from(policy.batch.output_cap).unwrap_or(usize::MAX);
        // Spans: one for the batch, one per entry (JSONL, `cloche trace show`).
        let mut spans = SpanWriter::open(state.root.join("spans.jsonl")).map_err(|e| Error::Spans(e.to_string()))?;
        let mut bspan = Span::new_batch(id);
        bspan.world = Some(world.id().to_string());
        bspan.agent = view.agent.clone();
        bspan.cwd = Some(view.project.clone());
        bspan.approved_by = view.approved_by.clone();
        let decisions: std::collections::HashMap<&str, &Decision> =
            view.entries.iter().map(|e| (e.id.as_str(), &e.decision)).collect();
        let mut failed = false;
        let mut cancelled = false;
        let world_scoped = spec.net.is_some();
        let mut net_tally = NetTally::default();
        for (index, en) in runnable.iter().enumerate() {
            let mut espan = bspan.new_entry(&en.id);
            espan.cmd = Some(en.command.clone());
            espan.cwd = Some(en.cwd.clone());
            espan.policy = decisions.get(en.id.as_str()).map(|d| span_policy(d));
            broker.entry_started(id, &en.id)?;
            obs.event(BatchEvent::EntryStarted { entry: en, index, of: runnable.len() });
            let extra: Vec<_> = en.env.iter().map(|(k, v)| (k.into(), v.into())).collect();
            let entry = Entry {
                argv: vec!["/bin/sh".into(), "-c".into(), en.command.clone().into()],
                env: self.world_env(&extra),
                cwd: PathBuf::from(&en.cwd),
                timeout: en.timeout.map(Duration::from_secs),
            };
            let mut live = |s: OutStream, bytes: &[u8]| {
                let stream = match s {
                    OutStream::Stdout => Stream::Stdout,
                    OutStream::Stderr => Stream::Stderr,
                };
                obs.event(BatchEvent::Output { entry: &en.id, stream, bytes });
            };
            let out = world.run_entry_live(&entry, Io::Capture { cap }, &mut live)?;
            if out.interrupted.is_some() || broker.state(id)? == BatchState::Cancelled {
                cancelled = true;
                obs.event(BatchEvent::Cancelled { entry: &en.id });
                break;
            }
            let result = EntryResult {
                exit_code: out.exit_code,
                category: categorize(out.exit_code, out.timed_out, &out.stderr),
                duration_ms: out.duration_ms as u64,
                stdout_sha256: sha256_hex(&out.stdout),
                stderr_sha256: sha256_hex(&out.stderr),
                stdout_truncated: out.stdout_total > out.stdout.len() as u64,
                timed_out: out.timed_out,
            };
            broker.entry_finished(id, &en.id, &result)?;
            tracing::debug!(batch = id, entry = %en.id, exit_code = out.exit_code, ms = result.duration_ms, "entry finished");
            recorder.entry(&en.id, &out.fs_delta).map_err(|e| Error::Records(e.to_string()))?;
            espan.exit_code = Some(out.exit_code);
            espan.layers = world.layers();
            espan.fs_diff = span_fs_diff(&out.fs_delta);
            espan.network = Some(match world.network_scope() {
                Some(s) => net_tally.entry(&s),
                None => no_network(),
            });
            espan.finish();
            let _ = spans.write(&espan);
            obs.event(BatchEvent::EntryFinished { entry: &en.id, result: &result });
            if out.exit_code != 0 {
                failed = true;
                if view.stop_on_failure {
                    break;
                }
            }
        }
        let outcome = world.finish()?;
        // What the world used, for its submitter's budgets.
        let egress: u64 = match world_scoped {
            true => net_tally.total().allowed.iter().map(|a| a.bytes).sum(),
            false => 0,
        };
        broker.record_usage(id, outcome.cpu_ms.unwrap_or(0), egress)?;
        tracing::info!(batch = id, world = %outcome.world, cpu_ms = outcome.cpu_ms, egress, "batch world ended");
        bspan.exit_code = Some(if cancelled {
            130
        } else if failed {
            1
        } else {
            0
        });
        bspan.layers = outcome.layers.clone();
        // What this batch changed itself (a world it continued had changes
        // of earlier runs already).
        let own = outcome.run_diff.as_ref().unwrap_or(&outcome.fs_diff);
        bspan.fs_diff = span_fs_diff(own);
        bspan.network = Some(match world_scoped {
            true => net_tally.total(),
            false => no_network(),
        });
        bspan.policy =
            Some(SpanPolicy { decision: view.decision.as_str().to_string(), rule: None, reason: None, risk: None });
        bspan.finish();
        let _ = spans.write(&bspan);
        if let (Some(k), Some(n)) = (&outcome.kept, outcome.run) {
            // The run in the world's own records (its changes were recorded
            // entry by entry).
            let r = cloche_world::continued::RunRecord {
                run: n,
                kind: "batch".into(),
                batch: Some(id.to_string()),
                command: runnable.iter().map(|e| e.command.clone()).collect(),
                actor: Some(view.submitter.clone()),
                policy: Some(view.policy.clone()),
                started_ms,
                ended_ms: crate::session::now_ms(),
                exit_code: bspan.exit_code.unwrap_or(0),
                changes: own.totals,
            };
            cloche_world::continued::append_run(state, &outcome.world, &r)
                .map_err(|e| Error::Records(e.to_string()))?;
            obs.event(BatchEvent::WorldKept { world: &outcome.world, path: k });
        }
        // The retention limit of this batch's policy; a failure here does
        // not change how the batch ended.
        let r = cloche_world::kept::Retention {
            max_worlds: policy.retention.max_worlds,
            max_age: policy.retention.max_age,
        };
        match crate::worlds::gc(state, broker, r, false) {
            Ok(gone) => gone.iter().for_each(|(w, why)| obs.event(BatchEvent::Discarded { world: w, why })),
            Err(err) => obs.event(BatchEvent::RetentionFailed { error: &err.to_string() }),
        }
        if cancelled {
            return Ok(BatchEnd::Cancelled);
        }
        let end = if failed { BatchState::Failed } else { BatchState::Completed };
        broker.finish_run(id, end, None)?;
        Ok(if failed { BatchEnd::Failed } else { BatchEnd::Completed })
    }
}

/// The span summary of an fs_diff: totals, the first paths, a digest.
fn span_fs_diff(d: &cloche_world::diff::FsDiff) -> Option<SpanFsDiff> {
    let v = serde_json::to_value(d).ok()?;
    let sample: Vec<serde_json::Value> = ["added", "modified", "deleted"]
        .iter()
        .flat_map(|k| v[*k].as_array().cloned().unwrap_or_default())
        .take(10)
        .collect();
    Some(SpanFsDiff {
        totals: FsTotals {
            added: d.totals.added,
            modified: d.totals.modified,
            deleted: d.totals.deleted,
            bytes: d.totals.bytes,
        },
        sample,
        digest: cloche_trace::span::digest(&v).ok(),
    })
}

/// The network scope of a world without network (loopback only): nothing
/// allowed; attempts are refused by the kernel (no route) and not counted.
fn no_network() -> SpanNetwork {
    SpanNetwork { mode: Some("none".into()), ..Default::default() }
}

fn span_policy(d: &Decision) -> SpanPolicy {
    SpanPolicy {
        decision: d.effect.as_str().to_string(),
        rule: Some(d.rule.clone()),
        reason: Some(d.reason.clone()),
        risk: Some(u32::from(d.risk)),
    }
}

fn sha256_hex(b: &[u8]) -> String {
    Sha256::digest(b).iter().map(|x| format!("{x:02x}")).collect()
}
