//! `cloche batch submit|list|show|approve|reject|run|cancel` and
//! `cloche autonomy enable|disable`: the service's batches
//! (`cloche_service::batch`, `batch_run`), printed. With a daemon
//! (`crate::remote`), `batch` goes through it and prints the same.
//!
//! Identity without the daemon: the submitter is `agent:<agent>` when the
//! batch names an agent, else `uid:<uid>`; a reviewer is `uid:<uid>`. The
//! broker refuses a review-level approval by the submitter or the batch's
//! agent. Local root can always act as a reviewer. Through the daemon the
//! caller is `uid:<uid>` as the kernel says (SO_PEERCRED), whatever the
//! batch's agent.

use crate::fail;
use crate::output::emit;
use clap::Subcommand;
use cloche_service::batch_run::{BatchEnd, BatchEvent, BatchObserver, Stream};
use cloche_service::uid_actor;
use std::io::Write;
use std::path::{Path, PathBuf};

#[derive(Subcommand)]
pub enum BatchCommand {
    /// Submit a batch file, or a model's tool calls (docs/tool-calls.md); prints its id.
    Submit {
        /// The batch file (`.toml` is TOML, anything else JSON; `-` reads stdin), or JSON
        /// tool calls: OpenAI `tool_calls` / responses `function_call`, Anthropic `tool_use`.
        file: PathBuf,
        /// Tool calls: which tools are shell commands (TOML or JSON; built-in names without it).
        #[arg(long, value_name = "FILE")]
        tools: Option<PathBuf>,
        /// Tool calls: the project they run in (default: the current directory).
        #[arg(long, value_name = "DIR")]
        project: Option<PathBuf>,
        /// Tool calls: the agent that made them (a batch file names its own).
        #[arg(long, value_name = "NAME")]
        agent: Option<String>,
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
        /// Only the batches waiting for a reviewer (state pending).
        #[arg(long)]
        pending: bool,
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

pub fn main(cmd: BatchCommand) -> i32 {
    let r = match crate::remote::via() {
        Ok(crate::remote::Via::Daemon(c)) => crate::remote::batch::main(c, cmd),
        Ok(crate::remote::Via::Embedded) => run(cmd),
        Err(e) => Err(e),
    };
    match r {
        Ok(code) => code,
        Err(e) => fail(e),
    }
}

fn run(cmd: BatchCommand) -> Result<i32, String> {
    let ctx = crate::context();
    if let BatchCommand::Submit { file, tools, project, agent, token, policy, json } = &cmd {
        let batch = match submission(file, tools.as_deref(), project.as_deref(), agent.as_deref())? {
            Submission::Batch(b) => b,
            Submission::ToolCalls(s) => {
                cloche_service::ingest::submission(serde_json::to_value(s).map_err(|e| format!("json: {e}"))?)?
            }
        };
        let view = ctx.submit(batch, token.as_deref(), policy.as_deref(), &uid_actor())?;
        match json {
            true => emit(&view)?,
            false => println!("{}", view.id),
        }
        return Ok(0);
    }
    // Every other command opens the broker first.
    drop(ctx.broker()?);
    match cmd {
        BatchCommand::Submit { .. } => unreachable!("handled above"),
        BatchCommand::List { pending, json } => {
            let state = pending.then_some(cloche_broker::BatchState::Pending);
            let list =
                ctx.broker()?.list(&cloche_broker::ListFilter { state, ..Default::default() }).map_err(broker_error)?;
            print_list(&serde_json::json!({ "batches": list }), json)?;
        }
        BatchCommand::Show { id, json } => {
            print_show(&ctx.broker()?.get(&id).map_err(broker_error)?, json)?;
        }
        BatchCommand::Approve { id, entries, json } => {
            let v = ctx.broker()?.approve(&id, entries, &uid_actor()).map_err(broker_error)?;
            eprintln!("cloche: batch {} {}", v.id, v.state);
            if json {
                emit(&v)?;
            }
        }
        BatchCommand::Reject { id, reason, json } => {
            ctx.broker()?.reject(&id, &uid_actor(), reason.as_deref()).map_err(broker_error)?;
            if json {
                emit(&ctx.broker()?.get(&id).map_err(broker_error)?)?;
            }
        }
        BatchCommand::Cancel { id, json } => {
            let v = ctx.cancel(&id, &uid_actor())?;
            if json {
                emit(&v)?;
            }
        }
        BatchCommand::Run { id, dry_run: true, json } => {
            let d = ctx.dry_run(&id)?;
            print_dry_run(&serde_json::to_value(&d).map_err(|e| format!("json: {e}"))?, json)?;
        }
        BatchCommand::Run { id, dry_run: false, json } => {
            let end = ctx.run_batch(&id, &mut Printer { json })?;
            let code = end_code(&id, end);
            if json {
                emit(&ctx.broker()?.get(&id).map_err(broker_error)?)?;
            }
            return Ok(code);
        }
    }
    Ok(0)
}

/// What `batch submit` sends: a batch file, or tool calls with the batch's
/// fields (made into a batch by the service, here or in the daemon).
pub(crate) enum Submission {
    Batch(cloche_broker::BatchFile),
    ToolCalls(cloche_service::ingest::ToolCallSubmission),
}

/// Reads `batch submit`'s input; `--tools`, `--project` and `--agent` are
/// for tool calls only (a batch file names its own project and agent).
pub(crate) fn submission(
    file: &Path,
    tools: Option<&Path>,
    project: Option<&Path>,
    agent: Option<&str>,
) -> Result<Submission, String> {
    use cloche_service::ingest::{read_input, Input, Mapping, ToolCallSubmission};
    match read_input(file)? {
        Input::Batch(b) => match (tools, project, agent) {
            (None, None, None) => Ok(Submission::Batch(b)),
            _ => Err(format!(
                "{}: a batch file names its own project and agent: --tools, --project and --agent are for tool calls",
                file.display()
            )),
        },
        Input::ToolCalls(payload) => {
            let tools = match tools {
                Some(f) => Some(serde_json::to_value(Mapping::from_path(f)?.to_file()).map_err(|e| e.to_string())?),
                None => None,
            };
            let dir = match project {
                Some(p) => std::path::absolute(p).map_err(|e| format!("--project {}: {e}", p.display()))?,
                None => std::env::current_dir().map_err(|e| format!("the current directory: {e}"))?,
            };
            let project = dir.to_str().ok_or_else(|| format!("project {}: not UTF-8", dir.display()))?.to_string();
            let agent = agent.map(String::from);
            Ok(Submission::ToolCalls(ToolCallSubmission {
                project,
                agent,
                stop_on_failure: true,
                tools,
                tool_calls: payload,
            }))
        }
    }
}

fn broker_error(e: cloche_broker::BrokerError) -> String {
    e.to_string()
}

/// `batch list`: `{"batches": [...]}` as JSON, or a line per batch.
pub(crate) fn print_list(doc: &serde_json::Value, json: bool) -> Result<(), String> {
    if json {
        return emit(doc);
    }
    for v in doc["batches"].as_array().into_iter().flatten() {
        let s = |k: &str| v[k].as_str().unwrap_or("").to_string();
        let mut line = format!("{}  {:<10} {:<6} {}", s("id"), s("state"), s("decision"), s("project"));
        if let Some(a) = v["agent"].as_str() {
            line.push_str(&format!("  agent {a}"));
        }
        line.push_str(&format!("  {} entries", v["entries"].as_u64().unwrap_or(0)));
        if let Some(limit) = approval_limit(&s("state"), v["approval_ttl"].as_u64(), v["expires_at"].as_str()) {
            line.push_str(&format!("  {limit}"));
        }
        println!("{line}");
    }
    Ok(())
}

/// The approval's time limit as shown: for a batch waiting for review, how
/// long an approval will last; for an approved one, when it runs out.
pub(crate) fn approval_limit(state: &str, ttl: Option<u64>, expires: Option<&str>) -> Option<String> {
    match (state, ttl, expires) {
        ("pending", Some(t), _) => Some(format!("approval valid {} once given", duration(t))),
        ("approved", _, Some(e)) => Some(format!("approval expires {e}")),
        _ => None,
    }
}

fn duration(secs: u64) -> String {
    match secs {
        s if s % 3600 == 0 => format!("{}h", s / 3600),
        s if s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}

/// `batch show`: the batch as JSON, or a line for it and one per entry.
pub(crate) fn print_show(v: &cloche_broker::BatchView, json: bool) -> Result<(), String> {
    if json {
        return emit(v);
    }
    println!("batch {}  {:?}  decision {}  project {}", v.id, v.state, v.decision, v.project);
    if let Some(limit) = approval_limit(v.state.as_str(), v.approval_ttl, v.expires_at.as_deref()) {
        println!("  {limit}");
    }
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
    Ok(())
}

/// `batch run --dry-run`: the document as JSON, or a line per entry.
pub(crate) fn print_dry_run(d: &serde_json::Value, json: bool) -> Result<(), String> {
    if json {
        return emit(d);
    }
    for en in d["entries"].as_array().into_iter().flatten() {
        let runs = en["runs"] == true;
        let (id, command) = (en["id"].as_str().unwrap_or(""), en["command"].as_str().unwrap_or(""));
        println!("{} {id} {command}", if runs { "would run" } else { "skipped  " });
    }
    Ok(())
}

/// The exit code of a batch's run (and the line of a cancelled one).
pub(crate) fn end_code(id: &str, end: BatchEnd) -> i32 {
    match end {
        BatchEnd::Cancelled => {
            eprintln!("cloche: batch {id} cancelled");
            130
        }
        BatchEnd::Failed => 1,
        BatchEnd::Completed => 0,
    }
}

/// Prints a batch's run as it goes: a line per entry (`[2/5] running: CMD`,
/// control characters escaped), its output as it comes, then its exit;
/// the world kept; what the retention limit discarded.
pub(crate) struct Printer {
    /// With --json, stdout carries the document alone: the entries' output
    /// goes to stderr.
    pub(crate) json: bool,
}

impl BatchObserver for Printer {
    fn event(&mut self, e: BatchEvent<'_>) {
        match e {
            BatchEvent::Note(n) => eprintln!("{n}"),
            BatchEvent::Output { stream: Stream::Stdout, bytes, .. } if !self.json => {
                // As it comes: a partial line (a progress bar) shows too.
                let mut out = std::io::stdout().lock();
                let _ = out.write_all(bytes).and_then(|()| out.flush());
            }
            BatchEvent::Output { bytes, .. } => {
                let _ = std::io::stderr().write_all(bytes);
            }
            BatchEvent::EntryFinished { entry, result } => {
                eprintln!("cloche: entry {entry} exit {} ({:?})", result.exit_code, result.category)
            }
            BatchEvent::WorldKept { world, path } => eprintln!("cloche: world {world} kept at {}", path.display()),
            BatchEvent::Discarded { world, why } => eprintln!("cloche: world {world} discarded ({why})"),
            BatchEvent::RetentionFailed { error } => eprintln!("cloche: retention: {error}"),
            BatchEvent::EntryStarted { entry, index, of } => {
                let cmd = cloche_review::escape::escape_path(entry.command.as_bytes());
                eprintln!("[{}/{of}] running: {cmd}", index + 1)
            }
            BatchEvent::WorldStarted { .. } | BatchEvent::Cancelled { .. } => {}
        }
    }
}

pub fn autonomy(cmd: AutonomyCommand) -> i32 {
    let r = (|| -> Result<(), String> {
        let ctx = crate::context();
        match cmd {
            AutonomyCommand::Enable { project, json } => {
                let a = ctx.autonomy(project, true, &uid_actor())?;
                match json {
                    true => emit(&a)?,
                    false => println!("{}", a.token.unwrap_or_default()),
                }
            }
            AutonomyCommand::Disable { project, json } => {
                let a = ctx.autonomy(project, false, &uid_actor())?;
                if json {
                    emit(&a)?;
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
