//! `cloche run`: one world, one command.

use crate::fail;
use crate::remote::Via;
use clap::Args;
use cloche_policy::Policy;
use cloche_service::error::io_reason;
use cloche_service::values::{expose_path, parse_cpus, parse_memory, parse_pids, parse_timeout};
use cloche_service::{Context, Error, Options, RunOutcome, RunRequest};
use cloche_world::spec::{parse_env_pair, Terminal};
use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

// `cloche run [OPTIONS] [--] CMD [ARGS...]` (no doc comment: the variant's says what it does in --help).
// Default: every option unset, as `plain_run` (main.rs) gives them.
#[derive(Args, Default, Debug)]
#[command(after_help = "\
The world gets PATH, HOME, LANG, LC_*, TERM, TZ and USER from your environment, plus -e/--env and
--env-file. `--` before CMD is needed only when CMD starts with `-`: `cloche run ls -la` runs `ls -la`.

Exit status: CMD's; 124 timeout; 125 cloche failed (one line on stderr); 126 CMD not executable;
127 CMD not found; 128+N CMD killed by signal N.")]
pub struct RunArgs {
    /// Network: `none` (loopback only) or `allow=DEST[,DEST...]` (IP, CIDR or NAME, each with an
    /// optional :PORT); default: the policy's `[network]` (loopback only in the built-in policy).
    #[arg(long, visible_alias = "network", value_name = "none|allow=DEST,...")]
    pub(crate) net: Option<String>,
    /// Kill the whole world after SECS seconds, fractions allowed (exit code 124).
    #[arg(long, value_name = "SECS", allow_hyphen_values = true)]
    pub(crate) timeout: Option<String>,
    /// Memory limit: bytes, or 512M, 2GiB, ... (binary units).
    #[arg(short = 'm', long, value_name = "BYTES", allow_hyphen_values = true)]
    pub(crate) memory: Option<String>,
    /// Limit on processes and threads.
    #[arg(long, visible_alias = "pids-limit", value_name = "N", allow_hyphen_values = true)]
    pub(crate) pids: Option<String>,
    /// CPU bandwidth in cores (e.g. 0.5).
    #[arg(long, value_name = "CORES", allow_hyphen_values = true)]
    pub(crate) cpus: Option<String>,
    /// Set a variable in the world: K=V, or K alone to pass your own value of K (nothing when
    /// you have none); repeatable.
    #[arg(short = 'e', long = "env", value_name = "K[=V]")]
    pub(crate) env: Vec<OsString>,
    /// Read variables from FILE, one K=V (taken as is, no quotes) or K per line; blank lines and
    /// lines starting with # are skipped; repeatable; -e/--env wins.
    #[arg(long = "env-file", value_name = "FILE")]
    pub(crate) env_file: Vec<PathBuf>,
    /// Keep PATH visible through the masks (repeatable).
    #[arg(long = "expose", value_name = "PATH")]
    pub(crate) expose: Vec<PathBuf>,
    /// Working directory inside the world (default: the current one); a relative DIR is taken
    /// from the current directory.
    #[arg(short = 'w', long, visible_alias = "workdir", value_name = "DIR")]
    pub(crate) cwd: Option<PathBuf>,
    /// Write the world's JSON report to FILE (`-`: stdout, after the command's output); its
    /// directory is checked before the world starts.
    #[arg(long, value_name = "FILE")]
    pub(crate) report: Option<PathBuf>,
    /// Print the report on stdout after the command's own output (as `--report -`).
    #[arg(long, conflicts_with = "report")]
    pub(crate) json: bool,
    /// Keep the world for inspection (its id is printed on stderr).
    #[arg(long)]
    pub(crate) keep: bool,
    /// Continue the kept world ID: the command runs on top of what its earlier runs left (an
    /// `npm install`'s files for the `npm test` after it), in its project (the default working
    /// directory), and the world stays kept (continuing implies --keep). `cloche diff ID` and
    /// `cloche commit ID` then see every run. One run at a time per world; your own worlds only.
    #[arg(long, value_name = "ID", conflicts_with_all = ["rm", "upper"])]
    pub(crate) world: Option<String>,
    /// Discard the world when the command ends: the default, accepted as in Docker.
    #[arg(long, conflicts_with = "keep")]
    pub(crate) rm: bool,
    /// Without root and without a delegated cgroup: run the world with no memory, process or CPU
    /// limit (said on stderr and in the report's `limits.none`). Refused for root.
    #[arg(long)]
    pub(crate) no_limits: bool,
    /// Where the world's writes live: `disk` (a capped subvolume of the
    /// state directory's pool) or `tmpfs` (in memory, counted against
    /// --memory); default: the policy's `[world] upper` (disk).
    #[arg(long, value_name = "disk|tmpfs")]
    pub(crate) upper: Option<String>,
    /// Policy file (default: the built-in policies/default.toml).
    #[arg(long, value_name = "FILE")]
    pub(crate) policy: Option<PathBuf>,
    /// Skip sha256 of changed files in the fs_diff.
    #[arg(long)]
    pub(crate) no_hash: bool,
    /// Give the world a pseudo-terminal of its own (job control; ^C and ^Z
    /// reach its foreground job; the window size follows). Your terminal is
    /// raw while it runs and restored after.
    #[arg(short = 't', long)]
    pub(crate) tty: bool,
    /// Copy your terminal's input into the world's stdin (without -t the
    /// world never reads your terminal: its stdin is then empty).
    #[arg(short = 'i', long)]
    pub(crate) interactive: bool,
    /// The command and its arguments (`--` first when the command starts with `-`).
    #[arg(required = true, trailing_var_arg = true, value_name = "CMD")]
    pub(crate) cmd: Vec<OsString>,
}

pub fn main(args: RunArgs) -> i32 {
    cloche_world::profile::init_from_env();
    cloche_world::profile::mark("cli: arguments parsed");
    match crate::remote::via_own() {
        Ok(Via::Embedded) => {}
        Ok(Via::Daemon(client)) => return crate::remote::run::main(client, args),
        Err(e) => return fail(e),
    }
    let report_path = report_path(&args);
    let ctx = Context::new(Options::default());
    // A policy file's head is cached in the state directory once it exists
    // (a refusal before then creates nothing).
    let cache = Some(ctx.state_path().join("cache")).filter(|d| d.is_dir());
    let prepared = match request(args, cache.as_deref()).and_then(|req| ctx.prepare_run(req)) {
        Ok(p) => p,
        Err(e) => return fail(e),
    };
    for n in &prepared.notes {
        eprintln!("{n}");
    }
    match ctx.run(prepared) {
        Err(e) => fail(e),
        Ok(done) => finish(report_path.as_deref(), &done),
    }
}

/// The request of the arguments, in the order they are checked: the
/// policy, each option; the service checks the report path and the rest
/// before anything is created. A policy file's head is read from, or
/// kept in, `policy_cache` when given (`Policy::load_for_run_cached`).
pub(crate) fn request(args: RunArgs, policy_cache: Option<&std::path::Path>) -> Result<RunRequest, Error> {
    let policy = match &args.policy {
        Some(p) => Some(Policy::load_for_run_cached(p, policy_cache).map_err(|e| Error::Policy(e.to_string()))?),
        None => None,
    };
    let memory = args.memory.as_deref().map(parse_memory).transpose()?;
    let timeout = args.timeout.as_deref().map(parse_timeout).transpose()?;
    let pids = args.pids.as_deref().map(parse_pids).transpose()?;
    let cpus = args.cpus.as_deref().map(parse_cpus).transpose()?;
    let env = env_options(&args.env_file, &args.env, |k| std::env::var_os(k)).map_err(Error::Invalid)?;
    let cwd = match &args.cwd {
        Some(c) if c.is_absolute() => c.clone(),
        // Relative: from the current directory, as `cd` would (and checked here).
        Some(c) => std::env::current_dir()
            .and_then(|d| std::fs::canonicalize(d.join(c)))
            .map_err(|e| Error::Invalid(format!("--cwd {}: {}", c.display(), io_reason(&e))))?,
        // Continuing a world: its own project.
        None if args.world.is_some() => PathBuf::new(),
        None => std::env::current_dir().map_err(|e| Error::Invalid(format!("current directory: {e}")))?,
    };
    let expose = args.expose.iter().map(|p| expose_path(p)).collect::<Result<Vec<_>, _>>()?;
    let report = report_path(&args);
    let upper =
        args.upper.as_deref().map(|u| u.parse().map_err(|e| Error::Invalid(format!("--upper {e}")))).transpose()?;
    let net = args.net.as_deref().map(str::parse).transpose()?;
    // Nothing of the world's outcome but its status is shown: no fs_diff.
    let unread = report.is_none() && !args.keep && args.world.is_none();
    Ok(RunRequest {
        argv: args.cmd,
        env,
        cwd,
        policy,
        memory,
        pids,
        cpus,
        timeout,
        expose,
        net,
        upper,
        keep: args.keep || args.world.is_some(),
        world: args.world,
        actor: None,
        user: None,
        owner: None,
        no_hash: args.no_hash,
        no_limits: args.no_limits,
        terminal: match (args.tty, args.interactive) {
            (true, _) => Terminal::Pty,
            (false, true) => Terminal::Interactive,
            (false, false) => Terminal::Pipes,
        },
        unread,
        report,
        path_note: Some(note_hidden_path),
    })
}

/// Says once on stderr (one line) which PATH entries the world hides;
/// called by the world's parent before the world runs anything.
fn note_hidden_path(hidden: &[cloche_world::view::HiddenEntry]) {
    if let Some(line) = cloche_service::project::hidden_path_note(hidden) {
        eprintln!("{line}");
    }
}

/// The variables of `--env-file` (in order) then `-e/--env`; `K` alone
/// takes the caller's value (`lookup`), and is left out when there is none.
fn env_options(
    files: &[PathBuf],
    flags: &[OsString],
    lookup: impl Fn(&OsStr) -> Option<OsString>,
) -> Result<Vec<(OsString, OsString)>, String> {
    let mut out = Vec::new();
    let mut one = |item: &OsStr, what: &dyn Fn() -> String| -> Result<(), String> {
        let (k, v) = match parse_env_pair(item) {
            Some((k, v)) => (k, Some(v)),
            None => (item.to_owned(), None),
        };
        let bytes = k.as_encoded_bytes();
        if bytes.is_empty() || bytes.iter().any(|b| b.is_ascii_whitespace() || *b == b'=' || *b == 0) {
            return Err(format!("{}: expected K=V or K (a variable name)", what()));
        }
        if v.as_ref().is_some_and(|v| v.as_encoded_bytes().contains(&0)) {
            return Err(format!("{}: the value contains a NUL byte", what()));
        }
        // `K` that the caller does not have: not set, as in Docker.
        if let Some(v) = v.or_else(|| lookup(&k)) {
            out.push((k, v));
        }
        Ok(())
    };
    for f in files {
        let text = std::fs::read(f).map_err(|e| format!("--env-file {}: {}", f.display(), io_reason(&e)))?;
        for (n, line) in text.split(|b| *b == b'\n').enumerate() {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            let start = line.iter().position(|b| !b.is_ascii_whitespace()).unwrap_or(line.len());
            let line = &line[start..];
            if line.is_empty() || line[0] == b'#' {
                continue;
            }
            let item = OsStr::from_bytes(line);
            one(item, &|| format!("--env-file {} line {}", f.display(), n + 1))?;
        }
    }
    for e in flags {
        one(e, &|| format!("--env {}", e.to_string_lossy()))?;
    }
    Ok(out)
}

/// Where the report goes: `--report FILE`, or stdout with `--json`.
pub(crate) fn report_path(args: &RunArgs) -> Option<PathBuf> {
    args.report.clone().or_else(|| args.json.then(|| PathBuf::from("-")))
}

/// How a world ended, as `cloche run` tells it (from the report of a world
/// run here, or of one the daemon ran).
pub(crate) struct Ending<'a> {
    pub world: &'a str,
    pub exit_code: i32,
    pub timed_out: bool,
    pub interrupted: Option<i32>,
    pub kept: Option<&'a Path>,
    pub output_error: Option<&'a str>,
    pub record_error: Option<&'a str>,
}

/// Writes the report, says what was kept, returns the exit code.
fn finish(report_path: Option<&Path>, done: &RunOutcome) -> i32 {
    let o = &done.report;
    let written = report_path.map(|p| (p, o.write(p)));
    let ending = Ending {
        world: &o.world,
        exit_code: o.exit_code,
        timed_out: o.timed_out,
        interrupted: o.interrupted,
        kept: o.kept.as_deref(),
        output_error: o.output_error.as_deref(),
        record_error: done.record_error.as_deref(),
    };
    ended(written, &ending)
}

/// Says how the report's writing went (`written`: where, and how) and
/// what was kept; returns the exit code.
pub(crate) fn ended(written: Option<(&Path, std::io::Result<()>)>, e: &Ending<'_>) -> i32 {
    let mut report_failed = false;
    if let Some((path, Err(err))) = written {
        // Checked before the world started; should it fail now all the
        // same, the command's own status still comes out (125 only in
        // place of a success).
        fail(format!("--report {}: {err}", path.display()));
        report_failed = true;
    }
    if let Some(err) = e.record_error {
        eprintln!("cloche: world {}: cannot record its base: {err} (a commit will report conflicts)", e.world);
    }
    if let Some(k) = e.kept {
        eprintln!("cloche: kept world {} at {}", e.world, k.display());
    }
    if e.timed_out {
        eprintln!("cloche: timed out; world killed");
    }
    if let Some(err) = e.output_error {
        eprintln!("cloche: the world's output was cut short: {err}");
    }
    match e.interrupted {
        Some(sig) => 128 + sig,
        // Never report success for output (or a report) that did not all arrive.
        None if e.exit_code == 0 && (e.output_error.is_some() || report_failed) => crate::EXIT_CLOCHE,
        None => e.exit_code,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_flags_and_env_files() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("vars");
        std::fs::write(&file, "# a comment\n\n  A=from file\nB=x=y\r\nHOMEISH\nUNSET_ONE\nC=\n").unwrap();
        let lookup = |k: &OsStr| (k == "HOMEISH" || k == "D").then(|| OsString::from(format!("mine-{}", k.display())));
        let flags: Vec<OsString> = ["A=flag wins", "D", "UNSET_TWO"].iter().map(OsString::from).collect();
        let got = env_options(std::slice::from_ref(&file), &flags, lookup).unwrap();
        let got: Vec<(String, String)> =
            got.into_iter().map(|(k, v)| (k.into_string().unwrap(), v.into_string().unwrap())).collect();
        let want = [
            ("A", "from file"),
            ("B", "x=y"),
            ("HOMEISH", "mine-HOMEISH"),
            ("C", ""),
            ("A", "flag wins"),
            ("D", "mine-D"),
        ];
        let want: Vec<(String, String)> = want.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        assert_eq!(got, want);
        for bad in ["=x", "", "A B=1"] {
            let e = env_options(&[], &[OsString::from(bad)], |_| None).unwrap_err();
            assert!(e.starts_with("--env "), "{e}");
        }
        std::fs::write(&file, "OK=1\nBAD NAME=2\n").unwrap();
        let e = env_options(std::slice::from_ref(&file), &[], |_| None).unwrap_err();
        assert!(e.contains("line 2"), "{e}");
        let e = env_options(&[dir.path().join("missing")], &[], |_| None).unwrap_err();
        assert!(e.contains("No such file"), "{e}");
    }
}
