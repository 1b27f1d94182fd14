//! `cloche batch submit|list|show|approve|reject|run|cancel` and
//! `cloche autonomy enable|disable`: the broker from the command line
//! (no daemon yet: the CLI opens the broker's database itself).
//!
//! Identity without the daemon: the submitter is `agent:<agent>` when the
//! batch names an agent, else `uid:<uid>`; a reviewer is `uid:<uid>`. The
//! broker refuses a review-level approval by the submitter or the batch's
//! agent. Local root can always act as a reviewer; per-caller identity
//! (SO_PEERCRED) comes with `cloched`.

use crate::fail;
use crate::output::{emit, Autonomy, DryRun, DryRunEntry, Version};
use crate::policy_store_cmd::{load_version, open_store, resolve, uid_actor};
use crate::run::{open_state, policy_spec};
use clap::Subcommand;
use cloche_broker::{categorize, BatchFile, BatchState, Broker, Classifier, Config, Decision, EntryResult, Limits};
use cloche_policy::store::BUILTIN;
use cloche_policy::Policy;
use cloche_trace::span::{FsTotals, Span, SpanFsDiff, SpanPolicy, SpanWriter};
use cloche_world::batch::{Entry, Io, World};
use cloche_world::spec::build_env;
use sha2::{Digest, Sha256};
use std::io::{Read, Write};
use std::path::PathBuf;
use std::time::Duration;

#[derive(Subcommand)]
pub enum BatchCommand {
    /// Submit a batch file (JSON or TOML; `-` reads stdin); prints its id.
    Submit {
        /// The batch file: `.toml` is TOML, anything else JSON; `-` reads stdin (either).
        file: PathBuf,
        /// Autonomy token of the project.
        #[arg(long, env = "CLOCHE_AUTONOMY_TOKEN", hide_env_values = true)]
        token: Option<String>,
        /// A further policy that can only tighten: each entry gets the
        /// stricter decision of the project's policy and this one.
        #[arg(long, value_name = "FILE")]
        policy: Option<PathBuf>,
        /// Print the new batch as JSON instead of its id (docs/schemas/batch.json).
        #[arg(long)]
        json: bool,
    },
    /// List batches, newest first.
    List {
        /// Print them as one JSON document (docs/schemas/batch-list.json).
        #[arg(long)]
        json: bool,
    },
    /// Show one batch and its entries.
    Show {
        /// The batch id.
        id: String,
        /// Print it as one JSON document (docs/schemas/batch.json).
        #[arg(long)]
        json: bool,
    },
    /// Approve a batch (all allowed and reviewable entries, or those listed).
    Approve {
        /// The batch id.
        id: String,
        /// Comma-separated entry ids.
        #[arg(long, value_delimiter = ',')]
        entries: Option<Vec<String>>,
        /// Print the batch as it is now as JSON (docs/schemas/batch.json).
        #[arg(long)]
        json: bool,
    },
    /// Reject a batch.
    Reject {
        /// The batch id.
        id: String,
        /// Why (recorded in the batch and the audit log).
        #[arg(long)]
        reason: Option<String>,
        /// Print the batch as it is now as JSON (docs/schemas/batch.json).
        #[arg(long)]
        json: bool,
    },
    /// Run an approved batch in one world (kept afterwards for review).
    Run {
        /// The batch id.
        id: String,
        /// Show what would run, run nothing.
        #[arg(long)]
        dry_run: bool,
        /// Print the batch as it is after the run as JSON (docs/schemas/batch.json; with
        /// --dry-run batch-dry-run.json); the entries' output then goes to stderr.
        #[arg(long)]
        json: bool,
    },
    /// Kill switch: stop a batch; its running entry is killed at once.
    Cancel {
        /// The batch id.
        id: String,
        /// Print the batch as it is now as JSON (docs/schemas/batch.json).
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
pub enum AutonomyCommand {
    /// Auto-approve all-allow batches of PROJECT; prints the token once.
    Enable {
        /// The project directory.
        project: String,
        /// Print the project and the token as JSON (docs/schemas/autonomy.json).
        #[arg(long)]
        json: bool,
    },
    /// Stop auto-approving for PROJECT.
    Disable {
        /// The project directory.
        project: String,
        /// Print the result as JSON (docs/schemas/autonomy.json).
        #[arg(long)]
        json: bool,
    },
}

/// The policies that classify a batch, as the broker sees them: the
/// project's policy and, from `submit --policy`, one that can only tighten.
/// Its id is the project policy's, then `+` and the tightening one's.
struct PolicyClassifier {
    id: String,
    policies: Vec<Policy>,
}

impl Classifier for PolicyClassifier {
    fn classify(&self, command: &str) -> Decision {
        self.classify_entry(command, &[])
    }

    fn classify_entry(&self, command: &str, env: &[(String, String)]) -> Decision {
        let d = self
            .policies
            .iter()
            .map(|p| p.commands.classify_with_env(command, env))
            .reduce(|a, b| if (b.effect, b.risk) > (a.effect, a.risk) { b } else { a })
            .expect("at least one policy");
        let effect = match d.effect {
            cloche_policy::Effect::Allow => cloche_broker::Effect::Allow,
            cloche_policy::Effect::Review => cloche_broker::Effect::Review,
            cloche_policy::Effect::Deny => cloche_broker::Effect::Deny,
        };
        Decision { effect, rule: d.rule, reason: d.reason, risk: d.risk }
    }

    fn policy_id(&self) -> String {
        self.id.clone()
    }
}

/// The broker, classifying with `classifier` and sized by `policy` (entry
/// limit, approval lifetime of new batches).
fn open_broker_with(policy: &Policy, classifier: PolicyClassifier) -> Result<Broker, String> {
    let state = open_state()?;
    let config = Config {
        max_entries: policy.batch.max_entries,
        approval_ttl: Duration::from_secs(policy.batch.approval_ttl),
        ..Config::default()
    };
    Broker::open(&state.root, config, Box::new(classifier)).map_err(|e| e.to_string())
}

/// The broker for commands that classify nothing new.
pub(crate) fn open_broker() -> Result<Broker, String> {
    let builtin = Policy::builtin();
    open_broker_with(&builtin, PolicyClassifier { id: BUILTIN.into(), policies: vec![builtin.clone()] })
}

/// The policy version a batch runs with: the project policy it was
/// classified with (`id` up to a `+`).
fn batch_policy(id: &str) -> Result<Policy, String> {
    let base = id.split('+').next().unwrap_or(id);
    load_version(base).map_err(|e| format!("policy {base} of this batch: {e}"))
}

/// Parses a batch file, then opens the broker with the policy of its project
/// (and a tightening `extra` policy file).
fn submit(
    file: &std::path::Path,
    token: Option<String>,
    extra: Option<&std::path::Path>,
) -> Result<cloche_broker::BatchView, String> {
    // The entry limit is the project policy's `[batch] max_entries`, known
    // once the file names its project: the broker checks it (the one place
    // that states it), so the file is parsed without a count limit here.
    let loose = Limits { max_entries: usize::MAX };
    let mut batch = if file.as_os_str() == "-" {
        let mut text = String::new();
        std::io::stdin().read_to_string(&mut text).map_err(|e| format!("stdin: {e}"))?;
        let format =
            if text.trim_start().starts_with('{') { cloche_broker::Format::Json } else { cloche_broker::Format::Toml };
        BatchFile::parse(&text, format, &loose).map_err(|e| format!("batch: {e}"))?
    } else {
        BatchFile::from_path(file, &loose).map_err(|e| format!("{}: {e}", file.display()))?
    };
    // The project is judged where it really is (and the policy bound there
    // applies): canonical, then against the masks of its world. A refusal
    // records nothing.
    cloche_service::project::canonicalize(&mut batch)?;
    let (mut id, policy) = resolve(&batch.project)?;
    cloche_service::project::judge(&batch.project, &policy, &open_state()?)?;
    let mut policies = vec![policy.clone()];
    if let Some(f) = extra {
        let text = std::fs::read_to_string(f).map_err(|e| format!("--policy {}: {e}", f.display()))?;
        let base = f.parent().unwrap_or(std::path::Path::new("."));
        let p = Policy::from_toml(&text, &f.display().to_string(), Some(base)).map_err(|e| e.to_string())?;
        let (store, _) = open_store()?;
        id = format!("{id}+{}", store.add(&text, &p).map_err(|e| e.to_string())?);
        policies.push(p);
    }
    let mut broker = open_broker_with(&policy, PolicyClassifier { id, policies })?;
    let actor = batch.agent.as_ref().map(|a| format!("agent:{a}")).unwrap_or_else(uid_actor);
    broker.submit(&batch, &actor, token.as_deref()).map_err(|e| e.to_string())
}

pub fn main(cmd: BatchCommand) -> i32 {
    match run(cmd) {
        Ok(code) => code,
        Err(e) => fail(e),
    }
}

fn run(cmd: BatchCommand) -> Result<i32, String> {
    if let BatchCommand::Submit { file, token, policy, json } = &cmd {
        let view = submit(file, token.clone(), policy.as_deref())?;
        match json {
            true => crate::output::emit(&view)?,
            false => println!("{}", view.id),
        }
        return Ok(0);
    }
    let mut broker = open_broker()?;
    let e = |e: cloche_broker::BrokerError| e.to_string();
    match cmd {
        BatchCommand::Submit { .. } => unreachable!("handled above"),
        BatchCommand::List { json } => {
            let list = broker.list(&Default::default()).map_err(e)?;
            if json {
                crate::output::emit(&serde_json::json!({ "batches": list }))?;
            } else {
                for b in list {
                    let v = serde_json::to_value(&b).unwrap_or_default();
                    println!(
                        "{}  {:<10} {}",
                        v["id"].as_str().unwrap_or(""),
                        v["state"].as_str().unwrap_or(""),
                        v["project"].as_str().unwrap_or("")
                    );
                }
            }
        }
        BatchCommand::Show { id, json } => {
            let v = broker.get(&id).map_err(e)?;
            if json {
                crate::output::emit(&v)?;
            } else {
                println!("batch {}  {:?}  decision {}  project {}", v.id, v.state, v.decision, v.project);
                for en in &v.entries {
                    println!(
                        "  {} {:<10} {:<6} {:<20} exit {:<4} {}",
                        en.id,
                        format!("{:?}", en.state),
                        en.decision.effect,
                        en.decision.rule,
                        en.exit_code.map(|c| c.to_string()).unwrap_or_else(|| "-".into()),
                        en.command
                    );
                }
            }
        }
        BatchCommand::Approve { id, entries, json } => {
            let v = broker.approve(&id, entries, &uid_actor()).map_err(e)?;
            eprintln!("cloche: batch {} {}", v.id, v.state);
            if json {
                crate::output::emit(&v)?;
            }
        }
        BatchCommand::Reject { id, reason, json } => {
            broker.reject(&id, &uid_actor(), reason.as_deref()).map_err(e)?;
            if json {
                crate::output::emit(&broker.get(&id).map_err(e)?)?;
            }
        }
        BatchCommand::Cancel { id, json } => {
            let before = broker.get(&id).map_err(e)?;
            broker.cancel(&id, &uid_actor()).map_err(e)?;
            // The runner kills its world on SIGTERM (its stop signals).
            if let Some(pid) = runner_pid(before.runner.as_deref()) {
                // SAFETY: kill with a pid and a signal.
                unsafe { libc::kill(pid, libc::SIGTERM) };
            }
            if json {
                crate::output::emit(&broker.get(&id).map_err(e)?)?;
            }
        }
        BatchCommand::Run { id, dry_run, json } => {
            let code = run_batch(&mut broker, &id, dry_run, json)?;
            if json && !dry_run {
                crate::output::emit(&broker.get(&id).map_err(e)?)?;
            }
            return Ok(code);
        }
    }
    Ok(0)
}

/// The pid of the runner tag `pid:<pid>:<start>:<boot>`, only while that
/// very process lives (same boot, same start time): a recycled pid is never
/// signalled.
fn runner_pid(tag: Option<&str>) -> Option<i32> {
    let pid: i32 = tag?.strip_prefix("pid:")?.split(':').next()?.parse().ok()?;
    (pid > 1 && cloche_broker::runner_alive(tag)).then_some(pid)
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
fn no_network() -> cloche_trace::span::SpanNetwork {
    cloche_trace::span::SpanNetwork { mode: Some("none".into()), ..Default::default() }
}

fn span_policy(d: &cloche_broker::Decision) -> SpanPolicy {
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

/// Runs an approved batch: one world, entries in order.
fn run_batch(broker: &mut Broker, id: &str, dry_run: bool, json: bool) -> Result<i32, String> {
    let e = |e: cloche_broker::BrokerError| e.to_string();
    if dry_run {
        let v = broker.get(id).map_err(e)?;
        let runs = |en: &cloche_broker::EntryView| {
            matches!(en.state, cloche_broker::EntryState::Pending) && en.decision.effect != cloche_broker::Effect::Deny
        };
        if json {
            let entries = v
                .entries
                .iter()
                .map(|en| DryRunEntry { id: en.id.clone(), command: en.command.clone(), runs: runs(en) })
                .collect();
            crate::output::emit(&DryRun { schema_version: Version, batch: v.id.clone(), entries })?;
            return Ok(0);
        }
        for en in &v.entries {
            println!("{} {} {}", if runs(en) { "would run" } else { "skipped  " }, en.id, en.command);
        }
        return Ok(0);
    }
    let view = broker.get(id).map_err(e)?;
    // Fail closed before the batch starts if its policy version is gone.
    let policy = batch_policy(&view.policy)?;
    let runnable = broker.start_run(id).map_err(e)?;
    // From here on the batch is `running`: any failure ends it as failed,
    // with the reason, instead of leaving it to the next start's recovery.
    run_started(broker, &policy, &view, &runnable, json).inspect_err(|msg| {
        let _ = broker.finish_run(id, BatchState::Failed, Some(msg));
    })
}

/// The body of `batch run` once the broker has marked the batch running.
fn run_started(
    broker: &mut Broker,
    policy: &Policy,
    view: &cloche_broker::BatchView,
    runnable: &[cloche_broker::RunnableEntry],
    json: bool,
) -> Result<i32, String> {
    let e = |e: cloche_broker::BrokerError| e.to_string();
    let id = view.id.as_str();
    let state = open_state()?;
    let project = cloche_service::project::recheck(&view.project)?;
    let mut spec = policy_spec(policy, &state, project)?;
    for n in cloche_service::project::check_world(&spec, &state, "project")? {
        eprintln!("{n}");
    }
    spec.keep = true; // kept for review (diff, commit, discard)
    spec.owner = Some(format!("batch:{id}"));
    let mut world = World::start(&spec, &state).map_err(|err| format!("world: {err}"))?;
    broker.world_started(id, world.id(), &world.layers()).map_err(e)?;
    // Per entry: which paths it changed, and the host state of each path the
    // first time (conflict detection at commit).
    let mut recorder = cloche_review::record::Recorder::open(&state.world_path(world.id()))
        .map_err(|e| format!("world records: {e}"))?;
    let cap = usize::try_from(policy.batch.output_cap).unwrap_or(usize::MAX);
    // Spans: one for the batch, one per entry (JSONL, `cloche trace show`).
    let mut spans = SpanWriter::open(state.root.join("spans.jsonl")).map_err(|e| e.to_string())?;
    let mut bspan = Span::new_batch(id);
    bspan.world = Some(world.id().to_string());
    bspan.agent = view.agent.clone();
    bspan.cwd = Some(view.project.clone());
    bspan.approved_by = view.approved_by.clone();
    let decisions: std::collections::HashMap<&str, &cloche_broker::Decision> =
        view.entries.iter().map(|e| (e.id.as_str(), &e.decision)).collect();
    let mut failed = false;
    let mut cancelled = false;
    let world_scoped = spec.net.is_some();
    let mut net_tally = crate::batch_net::NetTally::default();
    for en in runnable {
        let mut espan = bspan.new_entry(&en.id);
        espan.cmd = Some(en.command.clone());
        espan.cwd = Some(en.cwd.clone());
        espan.policy = decisions.get(en.id.as_str()).map(|d| span_policy(d));
        broker.entry_started(id, &en.id).map_err(e)?;
        let extra: Vec<_> = en.env.iter().map(|(k, v)| (k.into(), v.into())).collect();
        let entry = Entry {
            argv: vec!["/bin/sh".into(), "-c".into(), en.command.clone().into()],
            env: build_env(std::env::vars_os(), &extra),
            cwd: PathBuf::from(&en.cwd),
            timeout: en.timeout.map(Duration::from_secs),
        };
        let out = world.run_entry(&entry, Io::Capture { cap }).map_err(|e| e.to_string())?;
        // With --json, stdout carries the document alone.
        let _ = match json {
            true => std::io::stderr().write_all(&out.stdout),
            false => std::io::stdout().write_all(&out.stdout),
        };
        let _ = std::io::stderr().write_all(&out.stderr);
        if out.interrupted.is_some() || broker.state(id).map_err(e)? == BatchState::Cancelled {
            cancelled = true;
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
        broker.entry_finished(id, &en.id, &result).map_err(e)?;
        recorder.entry(&en.id, &out.fs_delta).map_err(|e| format!("world records: {e}"))?;
        espan.exit_code = Some(out.exit_code);
        espan.layers = world.layers();
        espan.fs_diff = span_fs_diff(&out.fs_delta);
        espan.network = Some(match world.network_scope() {
            Some(s) => net_tally.entry(&s),
            None => no_network(),
        });
        espan.finish();
        let _ = spans.write(&espan);
        eprintln!("cloche: entry {} exit {} ({:?})", en.id, out.exit_code, result.category);
        if out.exit_code != 0 {
            failed = true;
            if view.stop_on_failure {
                break;
            }
        }
    }
    let outcome = world.finish().map_err(|e| e.to_string())?;
    bspan.exit_code = Some(if cancelled {
        130
    } else if failed {
        1
    } else {
        0
    });
    bspan.layers = outcome.layers.clone();
    bspan.fs_diff = span_fs_diff(&outcome.fs_diff);
    bspan.network = Some(match world_scoped {
        true => net_tally.total(),
        false => no_network(),
    });
    bspan.policy =
        Some(SpanPolicy { decision: view.decision.as_str().to_string(), rule: None, reason: None, risk: None });
    bspan.finish();
    let _ = spans.write(&bspan);
    if let Some(k) = &outcome.kept {
        eprintln!("cloche: world {} kept at {}", outcome.world, k.display());
    }
    // The retention limit of this batch's policy; a failure here does not
    // change how the batch ended.
    let r =
        cloche_world::kept::Retention { max_worlds: policy.retention.max_worlds, max_age: policy.retention.max_age };
    match crate::worlds_cmd::gc(&state, broker, r, false) {
        Ok(gone) => gone.iter().for_each(|(w, why)| eprintln!("cloche: world {w} discarded ({why})")),
        Err(err) => eprintln!("cloche: retention: {err}"),
    }
    if cancelled {
        eprintln!("cloche: batch {id} cancelled");
        return Ok(130);
    }
    let end = if failed { BatchState::Failed } else { BatchState::Completed };
    broker.finish_run(id, end, None).map_err(e)?;
    Ok(if failed { 1 } else { 0 })
}

/// Batches record their canonical project: so does autonomy (a path that
/// does not exist is kept as given, so a removed project can be disabled).
fn canonical_or_given(project: String) -> String {
    std::fs::canonicalize(&project).ok().and_then(|p| p.to_str().map(String::from)).unwrap_or(project)
}

pub fn autonomy(cmd: AutonomyCommand) -> i32 {
    let r = (|| -> Result<(), String> {
        let mut broker = open_broker()?;
        match cmd {
            AutonomyCommand::Enable { project, json } => {
                let project = canonical_or_given(project);
                let token = broker.enable_autonomy(&project, &uid_actor()).map_err(|e| e.to_string())?;
                match json {
                    true => emit(&Autonomy { schema_version: Version, project, enabled: true, token: Some(token) })?,
                    false => println!("{token}"),
                }
            }
            AutonomyCommand::Disable { project, json } => {
                let project = canonical_or_given(project);
                broker.disable_autonomy(&project, &uid_actor()).map_err(|e| e.to_string())?;
                if json {
                    emit(&Autonomy { schema_version: Version, project, enabled: false, token: None })?;
                }
            }
        }
        Ok(())
    })();
    match r {
        Ok(()) => 0,
        Err(e) => fail(e),
    }
}
