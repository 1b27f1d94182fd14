//! `cloche`: disposable, inspectable execution worlds.
//!
//! Exit codes of `cloche run`: the command's own; 124 on timeout; 125 when
//! cloche itself fails (one line on stderr saying why); 126/127 when the
//! command cannot be executed / is not found; 128+N when killed by signal N.

mod audit_cmd;
mod batch_cmd;
mod batch_net;
mod doctor;
mod net_args;
mod policy_cmd;
mod policy_store_cmd;
mod project;
mod review_cmd;
mod run;
mod worlds_cmd;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cloche", version, about = "Disposable, inspectable execution worlds for Linux")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run one command in a new world; print nothing of cloche's own but errors.
    Run(Box<run::RunArgs>),
    /// Check what this machine offers and what is missing.
    Doctor,
    /// Classify commands and show the policy.
    #[command(subcommand)]
    Policy(policy_cmd::PolicyCommand),
    /// Verify or read the audit log.
    #[command(subcommand)]
    Audit(audit_cmd::AuditCommand),
    /// Submit, review and run batches of commands.
    #[command(subcommand)]
    Batch(batch_cmd::BatchCommand),
    /// Auto-approval of all-allow batches per project.
    #[command(subcommand)]
    Autonomy(batch_cmd::AutonomyCommand),
    /// Trace spans of batches.
    #[command(subcommand)]
    Trace(batch_cmd::TraceCommand),
    /// Search past commands; per-command statistics.
    History(batch_cmd::HistoryArgs),
    /// Kept worlds: list, show, collect by the retention limit.
    #[command(subcommand)]
    Worlds(worlds_cmd::WorldsCommand),
    /// Discard a kept world (by world id or batch id); audited.
    Discard { id: String },
    /// What a kept world changed: review summary, flags, git-like diff.
    Diff(review_cmd::DiffArgs),
    /// Apply a kept world's changes inside the commit roots; audited.
    Commit(review_cmd::CommitArgs),
}

/// Exit code when cloche itself fails.
pub const EXIT_CLOCHE: i32 = 125;

fn main() {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            use clap::error::ErrorKind;
            if matches!(
                e.kind(),
                ErrorKind::DisplayHelp
                    | ErrorKind::DisplayVersion
                    | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
            ) {
                let _ = e.print();
                std::process::exit(if e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
                    EXIT_CLOCHE
                } else {
                    0
                });
            }
            // One line, like every other cloche failure; `--help` has the rest.
            // The first paragraph of clap's message, joined into one line.
            let text = e.render().to_string();
            let para: Vec<&str> = text.lines().take_while(|l| !l.trim().is_empty()).map(str::trim).collect();
            let msg = para.join(" ");
            let msg = msg.strip_prefix("error: ").unwrap_or(&msg);
            std::process::exit(fail(format!("{msg} (see cloche --help)")));
        }
    };
    let code = match cli.command {
        Command::Run(args) => run::main(*args),
        Command::Doctor => doctor::main(),
        Command::Policy(c) => policy_cmd::main(c),
        Command::Audit(c) => audit_cmd::main(c),
        Command::Batch(c) => batch_cmd::main(c),
        Command::Autonomy(c) => batch_cmd::autonomy(c),
        Command::Trace(c) => batch_cmd::trace(c),
        Command::History(a) => batch_cmd::history(a),
        Command::Worlds(c) => worlds_cmd::main(c),
        Command::Discard { id } => worlds_cmd::discard(&id),
        Command::Diff(a) => review_cmd::diff(a),
        Command::Commit(a) => review_cmd::commit(a),
    };
    std::process::exit(code);
}

/// Prints `cloche: <message>` on stderr and returns the failure code.
pub fn fail(message: impl std::fmt::Display) -> i32 {
    eprintln!("cloche: {message}");
    EXIT_CLOCHE
}
