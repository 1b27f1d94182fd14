//! `cloche`: disposable, inspectable execution worlds.
//!
//! Exit codes of `cloche run`: the command's own; 124 on timeout; 125 when
//! cloche itself fails (one line on stderr saying why); 126/127 when the
//! command cannot be executed / is not found; 128+N when killed by signal N.

mod agents_cmd;
mod audit_cmd;
mod batch_cmd;
mod doctor;
mod history_cmd;
mod mcp_cmd;
mod output;
mod policy_cmd;
mod policy_store_cmd;
mod remote;
mod review_cmd;
mod run;
mod term;
mod web_cmd;
mod worlds_cmd;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

/// The environment variables cloche reads, for `--help` and the man page.
const ENVIRONMENT: &str = "\
Environment:
  CLOCHE_STATE_DIR       state directory (default /var/lib/cloche): kept worlds, broker database,
                         audit log, policy store; with a daemon, the one it must serve
  CLOCHE_SOCKET          the daemon's socket (default /run/cloche/cloche.sock): `run`, `batch`,
                         `diff`, `commit` and `discard` go through the daemon when it answers (root
                         without one works in this process); empty: never (as --no-daemon)
  CLOCHE_AUTONOMY_TOKEN  autonomy token for `batch submit` (as --token)
  CLOCHE_DNS_UPSTREAM    IP:PORT of the upstream nameserver for allowed names (else the policy's,
                         else /etc/resolv.conf)
  CLOCHE_PROFILE         1: per-step timings of `run` on stderr
  CLOCHE_LOG, RUST_LOG   cloche's own diagnostics on stderr, by level or filter (e.g. debug,
                         cloche_service=trace); off when neither is set
  NO_COLOR               set and not empty: no colour (as --color=never); CLICOLOR=0 too
  CLICOLOR_FORCE         set and not 0: colour even when not a terminal (with --color=auto)
  PAGER                  pager for long output on a terminal, run by sh -c (default: less, with
                         LESS=FRX unless LESS is set); empty or `cat`: none
  PATH, HOME, LANG, LC_*, TERM, TZ, USER
                         the only variables `run` and batches pass into a world (plus -e/--env)

Exit status: 0 success; 1 a check failed (doctor, audit verify, commit, batch run); 2 usage error
of `policy check|show`; 125 cloche failed or a usage error (one line on stderr); `run`: the
command's own status (124 timeout, 126/127 cannot run / not found, 128+N killed by signal N).";

/// What `cloche --help` says cloche is.
const ABOUT: &str = "Disposable, inspectable execution worlds for Linux";
/// What `cloche --help` says `run` does.
const RUN_ABOUT: &str = "Run one command in a new world; print nothing of cloche's own but errors";

#[derive(Parser)]
#[command(name = "cloche", version, about = ABOUT, after_help = ENVIRONMENT, max_term_width = 100)]
struct Cli {
    #[command(flatten)]
    globals: Globals,
    #[command(subcommand)]
    command: Command,
}

/// The options of every command.
#[derive(clap::Args, Debug)]
struct Globals {
    /// When to colour the output: auto (a terminal, unless NO_COLOR is set), always, never.
    #[arg(long, global = true, value_enum, value_name = "WHEN", default_value_t = term::ColorWhen::Auto)]
    color: term::ColorWhen,
    /// Never start a pager (long output on a terminal goes through $PAGER otherwise).
    #[arg(long, global = true)]
    no_pager: bool,
    /// Work in this process (as root), never through the daemon cloched (see CLOCHE_SOCKET).
    #[arg(long, global = true)]
    no_daemon: bool,
}

/// `cloche run ...` (`run` first) as [`Cli`] defines it, without the other
/// subcommands: the attributes of `Cli` and of its `Run`, the same global
/// options, `run`'s arguments. Building `Cli`'s definition costs about 130
/// KB of fresh memory for the subcommands' names alone, about 0.14 ms of a
/// run's start here (docs/architecture.md, *Start time*, ninth look);
/// `run_cli_parses_as_cli_does` checks that both give the same arguments,
/// help and errors.
#[derive(Parser)]
#[command(name = "cloche", version, about = ABOUT, after_help = ENVIRONMENT, max_term_width = 100)]
struct RunCli {
    #[command(flatten)]
    globals: Globals,
    #[command(subcommand)]
    command: RunOnly,
}

#[derive(Subcommand)]
enum RunOnly {
    #[command(about = RUN_ABOUT)]
    Run(Box<run::RunArgs>),
}

// Each subcommand's arguments are defined when it is the one invoked
// (`Command::defer`): a `cloche run` builds only `run`'s.
#[derive(Subcommand)]
#[command(defer = true)]
enum Command {
    #[command(about = RUN_ABOUT)]
    Run(Box<run::RunArgs>),
    /// Check what this machine offers and what is missing.
    Doctor(doctor::DoctorArgs),
    /// Classify commands and show the policy.
    #[command(subcommand)]
    Policy(policy_cmd::PolicyCommand),
    /// Verify or read the audit log.
    #[command(subcommand)]
    Audit(audit_cmd::AuditCommand),
    /// Submit, review and run batches of commands.
    #[command(subcommand)]
    Batch(batch_cmd::BatchCommand),
    /// Agents: who submits batches, their status, what they used of their budgets.
    Agents(agents_cmd::AgentsArgs),
    /// Auto-approval of all-allow batches per project.
    #[command(subcommand)]
    Autonomy(batch_cmd::AutonomyCommand),
    /// Trace spans of batches.
    #[command(subcommand)]
    Trace(history_cmd::TraceCommand),
    /// Search past commands; per-command statistics.
    History(history_cmd::HistoryArgs),
    /// Kept worlds: list, show, collect by the retention limit.
    #[command(subcommand)]
    Worlds(worlds_cmd::WorldsCommand),
    /// Discard a kept world (by world id or batch id); audited.
    Discard(worlds_cmd::DiscardArgs),
    /// What a kept world changed: review summary, flags, git-like diff.
    Diff(review_cmd::DiffArgs),
    /// Apply a kept world's changes inside the commit roots; audited.
    Commit(review_cmd::CommitArgs),
    /// Serve cloche's tools to an agent over the Model Context Protocol (stdio): run, submit_batch, wait,
    /// diff, request_commit, discard, policy_check, history.
    #[command(disable_help_flag = true)]
    Mcp(mcp_cmd::McpArgs),
    /// The reviewer's web page served by cloched --web: a login token for this user, or revoke them.
    #[command(subcommand)]
    Web(web_cmd::WebCommand),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions {
        /// The shell: `cloche completions bash > /etc/bash_completion.d/cloche`.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the man page (cloche.1), or write one page per command into a directory.
    Man {
        /// Write cloche.1, cloche-run.1, ... into DIR (e.g. /usr/local/share/man/man1).
        #[arg(long, value_name = "DIR")]
        dir: Option<std::path::PathBuf>,
    },
}

/// Exit code when cloche itself fails.
pub const EXIT_CLOCHE: i32 = 125;

/// The command line's definition (`C`'s), coloured as `--color` says.
fn definition<C: CommandFactory>(args: &[std::ffi::OsString]) -> clap::Command {
    let color = match term::color_from_args(args) {
        Some(term::ColorWhen::Always) => clap::ColorChoice::Always,
        Some(term::ColorWhen::Never) => clap::ColorChoice::Never,
        _ => clap::ColorChoice::Auto,
    };
    C::command().color(color)
}

/// The arguments as `C` defines them; help, the version or one line saying
/// what is wrong (and exit) otherwise.
fn parse<C: CommandFactory + FromArgMatches>(args: &[std::ffi::OsString]) -> C {
    match definition::<C>(args).try_get_matches_from(args).and_then(|mut m| C::from_arg_matches_mut(&mut m)) {
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
    }
}

/// cloche's own diagnostics (`tracing`), on stderr, only when CLOCHE_LOG or
/// RUST_LOG asks for them: otherwise no subscriber exists and every event
/// costs one check.
fn init_log() {
    let Some(filter) = ["CLOCHE_LOG", "RUST_LOG"].iter().find_map(|k| std::env::var(k).ok().filter(|v| !v.is_empty()))
    else {
        return;
    };
    let filter = tracing_subscriber::EnvFilter::try_new(&filter).unwrap_or_else(|e| {
        eprintln!("cloche: CLOCHE_LOG/RUST_LOG {filter:?}: {e} (logging at warn)");
        tracing_subscriber::EnvFilter::new("warn")
    });
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(false).try_init();
}

/// The allocator: Doug Lea's, not musl's. musl's (mallocng) maps and unmaps
/// its groups as they fill and empty: about 90 `mmap` and 90 `munmap` in
/// one `cloche run -- true` (clap's definition, the policy, the plan), each
/// a system call and fresh pages. dlmalloc keeps what it got (in 64 KiB
/// segments) for the next allocation: 0.35 ms less a run back to back
/// (docs/architecture.md, *Start time*). Only the CLI: the daemon and the
/// MCP server, which live long, keep musl's.
#[global_allocator]
static ALLOC: dlmalloc::GlobalDlmalloc = dlmalloc::GlobalDlmalloc;

fn main() {
    // First, the allocator's lock taken around fork(2) (pthread_atfork), so a child
    // forked while another thread allocates finds it free. cloche's forked
    // children do not allocate, and a world is cloned with no other thread
    // alive; this keeps it that way should either change.
    // SAFETY: called before any other thread exists, once, before
    // anything of cloche's allocates.
    unsafe { dlmalloc::enable_alloc_after_fork() };
    // Then the relocated read-only data made read-only (crates/relro).
    if let Err(e) = cloche_relro::protect() {
        eprintln!("cloche: making its read-only data read-only (mprotect): {e}");
        std::process::exit(125);
    }
    init_log();
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if let Some(run_args) = plain_run(&args) {
        // The defaults of the global options, as clap would give them.
        term::init(term::ColorWhen::Auto, false);
        remote::init(false);
        std::process::exit(run::main(run_args));
    }
    if args.get(1).is_some_and(|a| a == "run") {
        let RunCli { globals, command: RunOnly::Run(run_args) } = parse::<RunCli>(&args);
        term::init(globals.color, globals.no_pager);
        remote::init(globals.no_daemon);
        std::process::exit(run::main(*run_args));
    }
    let cli: Cli = parse(&args);
    term::init(cli.globals.color, cli.globals.no_pager);
    remote::init(cli.globals.no_daemon);
    let code = match cli.command {
        Command::Run(args) => run::main(*args),
        Command::Doctor(a) => doctor::main(a),
        Command::Policy(c) => policy_cmd::main(c),
        Command::Audit(c) => audit_cmd::main(c),
        Command::Batch(c) => batch_cmd::main(c),
        Command::Autonomy(c) => batch_cmd::autonomy(c),
        Command::Agents(a) => agents_cmd::main(a),
        Command::Trace(c) => history_cmd::trace(c),
        Command::History(a) => history_cmd::history(a),
        Command::Worlds(c) => worlds_cmd::main(c),
        Command::Discard(a) => worlds_cmd::discard(a),
        Command::Diff(a) => review_cmd::diff(a),
        Command::Commit(a) => review_cmd::commit(a),
        Command::Mcp(a) => mcp_cmd::main(a),
        Command::Web(c) => web_cmd::main(c),
        Command::Completions { shell } => completions(shell),
        Command::Man { dir } => man(dir.as_deref()),
    };
    std::process::exit(code);
}

/// `cloche run [--] CMD [ARGS...]` with no option at all, its arguments
/// read without clap: None for anything else (an option before the command,
/// a global option, `--help`, no command), which clap parses.
///
/// Why: building clap's definition of the command line and parsing with it
/// is cheap when warm (about 0.05 ms) but costs about 0.4 ms in a process
/// that lives 5 ms, its code and heap pages all touched for the first time
/// (docs/architecture.md, *Start time*, ninth look): 8% of `cloche run --
/// true`. For this form the outcome is known without it: the command is
/// the rest of the line, verbatim (clap's `trailing_var_arg`: a later `--`
/// or `-x` is the command's), and every option has its default.
/// `plain_run_parses_as_clap_does` checks both agree.
fn plain_run(args: &[std::ffi::OsString]) -> Option<run::RunArgs> {
    use std::os::unix::ffi::OsStrExt;
    let cmd = match args.get(1..)? {
        [run, dashes, cmd @ ..] if run == "run" && dashes == "--" && !cmd.is_empty() => cmd,
        [run, cmd @ ..] if run == "run" && cmd.first().is_some_and(|c| !c.as_bytes().starts_with(b"-")) => cmd,
        _ => return None,
    };
    Some(run::RunArgs { cmd: cmd.to_vec(), ..Default::default() })
}

/// `cloche completions SHELL`: the script, generated from the definition.
fn completions(shell: clap_complete::Shell) -> i32 {
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "cloche", &mut out);
    emit_bytes(&out)
}

/// `cloche man [--dir DIR]`: cloche(1) on stdout, or every page into DIR.
fn man(dir: Option<&std::path::Path>) -> i32 {
    let cmd = Cli::command();
    let Some(dir) = dir else {
        let mut out = Vec::new();
        return match clap_mangen::Man::new(cmd).render(&mut out) {
            Ok(()) => emit_bytes(&out),
            Err(e) => fail(format!("man page: {e}")),
        };
    };
    if !dir.is_dir() {
        return fail(format!("--dir {}: not a directory", dir.display()));
    }
    match clap_mangen::generate_to(cmd, dir) {
        Ok(()) => 0,
        Err(e) => fail(format!("man pages in {}: {e}", dir.display())),
    }
}

/// Writes to stdout; a reader that went away is not an error.
fn emit_bytes(b: &[u8]) -> i32 {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match out.write_all(b).and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => fail(format!("stdout: {e}")),
        _ => 0,
    }
}

/// A count given on the command line: a whole number of 1 or more
/// (`-1` is read as a value, and refused here with a reason).
pub fn whole_number(s: &str) -> Result<usize, String> {
    match s.trim().parse::<i128>() {
        Ok(n) if n >= 1 => usize::try_from(n).map_err(|_| "too large".to_string()),
        Ok(_) => Err("must be a positive whole number".into()),
        Err(_) => Err("expected a whole number".into()),
    }
}

/// The service's context for this process: the state directory of
/// `CLOCHE_STATE_DIR`, opened when first needed.
pub fn context() -> cloche_service::Context {
    cloche_service::Context::new(cloche_service::Options::default())
}

/// Prints `cloche: <message>` on stderr and returns the failure code.
pub fn fail(message: impl std::fmt::Display) -> i32 {
    eprintln!("cloche: {message}");
    EXIT_CLOCHE
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Arguments and subcommands of `cmd` (and below) without help text.
    pub(crate) fn missing_help(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
        for a in cmd.get_arguments() {
            let id = a.get_id().as_str();
            if !matches!(id, "help" | "version") && a.get_help().is_none() && a.get_long_help().is_none() {
                missing.push(format!("{path} <{id}>"));
            }
        }
        for s in cmd.get_subcommands().filter(|s| s.get_name() != "help") {
            let sub = format!("{path} {}", s.get_name());
            if s.get_about().is_none() {
                missing.push(format!("{sub}: no description"));
            }
            missing_help(s, &sub, missing);
        }
    }

    #[test]
    fn the_definition_is_sound() {
        Cli::command().debug_assert();
    }

    #[test]
    fn every_argument_and_command_has_help() {
        let mut missing = Vec::new();
        missing_help(&Cli::command(), "cloche", &mut missing);
        assert!(missing.is_empty(), "without help text: {missing:#?}");
    }

    #[test]
    fn plain_run_parses_as_clap_does() {
        use std::ffi::OsString;
        use std::os::unix::ffi::OsStringExt;
        let line = |words: &[&str]| -> Vec<OsString> { words.iter().map(OsString::from).collect() };
        let mut taken = vec![
            line(&["cloche", "run", "--", "true"]),
            line(&["cloche", "run", "true"]),
            line(&["cloche", "run", "ls", "-la", "--", "--keep", "-e", "X=1"]),
            line(&["cloche", "run", "--", "--", "x"]),
            line(&["cloche", "run", "--", "-x", "--help"]),
            line(&["cloche", "run", "--", ""]),
            line(&["cloche", "run", "", "y"]),
            line(&["cloche", "run", "help"]),
            line(&["cloche", "run", "run", "--", "run"]),
        ];
        // Not UTF-8: an OsString, as clap takes it.
        taken.push(vec!["cloche".into(), "run".into(), OsString::from_vec(vec![0xff, b'a']), "b".into()]);
        for args in &taken {
            let fast = plain_run(args).unwrap_or_else(|| panic!("{args:?} is the plain form"));
            let cli = Cli::try_parse_from(args).unwrap_or_else(|e| panic!("{args:?}: {e}"));
            let g = &cli.globals;
            assert!(matches!(g.color, term::ColorWhen::Auto) && !g.no_pager && !g.no_daemon, "{args:?}");
            match cli.command {
                Command::Run(clap) => assert_eq!(format!("{fast:?}"), format!("{clap:?}"), "{args:?}"),
                _ => panic!("{args:?}: not run"),
            }
        }
        // Any option, a global option, help or no command: clap's.
        for words in [
            &["cloche", "run"][..],
            &["cloche", "run", "--"],
            &["cloche", "run", "--keep", "true"],
            &["cloche", "run", "-e", "X=1", "--", "true"],
            &["cloche", "run", "--help"],
            &["cloche", "run", "-"],
            &["cloche", "--no-daemon", "run", "true"],
            &["cloche", "--color=never", "run", "--", "true"],
            &["cloche", "runs", "true"],
            &["cloche", "diff", "x"],
            &["cloche"],
        ] {
            assert!(plain_run(&line(words)).is_none(), "{words:?}");
        }
    }

    #[test]
    fn run_cli_parses_as_cli_does() {
        let lines: &[&[&str]] = &[
            &["cloche", "run", "--", "true"],
            &["cloche", "run", "--no-limits", "--keep", "-e", "X=1", "-e", "Y", "--", "sh", "-c", "x"],
            &["cloche", "run", "-m", "64m", "--pids-limit", "8", "--cpus", "0.5", "--timeout", "3", "ls"],
            &["cloche", "run", "--network", "allow=198.51.100.1:80", "-w", "sub", "--report", "/r.json", "x"],
            &["cloche", "run", "--net", "none", "--upper", "tmpfs", "--no-hash", "-it", "bash"],
            &["cloche", "run", "--policy", "p.toml", "--expose", "/opt", "--env-file", "f", "--json", "x"],
            &["cloche", "run", "--world", "abc", "--", "make"],
            &["cloche", "run", "--color=never", "--no-pager", "--no-daemon", "--", "x"],
            &["cloche", "run", "--timeout", "-1", "x"],
            &["cloche", "run", "--help"],
            &["cloche", "run", "-h"],
            &["cloche", "run"],
            &["cloche", "run", "--bogus", "x"],
            &["cloche", "run", "--kep", "x"],
            &["cloche", "run", "--keep", "--rm", "x"],
            &["cloche", "run", "--json", "--report", "r", "x"],
            &["cloche", "run", "--world", "a", "--upper", "disk", "x"],
            &["cloche", "run", "--version"],
            &["cloche", "run", "--color", "sometimes", "x"],
            &["cloche", "run", "--net"],
        ];
        for words in lines {
            let args: Vec<std::ffi::OsString> = words.iter().map(Into::into).collect();
            let full = Cli::try_parse_from(&args);
            let alone = RunCli::try_parse_from(&args);
            match (full, alone) {
                (
                    Ok(Cli { globals: a, command: Command::Run(x) }),
                    Ok(RunCli { globals: b, command: RunOnly::Run(y) }),
                ) => {
                    assert_eq!(format!("{a:?} {x:?}"), format!("{b:?} {y:?}"), "{words:?}");
                }
                (Err(a), Err(b)) => {
                    assert_eq!(a.kind(), b.kind(), "{words:?}");
                    assert_eq!(a.render().to_string(), b.render().to_string(), "{words:?}");
                }
                (a, b) => panic!("{words:?}: {:?} against {:?}", a.err(), b.err()),
            }
        }
    }

    #[test]
    fn counts_are_whole_numbers_of_one_or_more() {
        assert_eq!(whole_number("3"), Ok(3));
        for bad in ["0", "-1", "-3", "x", "1.5", ""] {
            assert!(whole_number(bad).is_err(), "{bad}");
        }
    }
}
