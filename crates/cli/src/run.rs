//! `cloche run`: one world, one command.

use crate::fail;
use clap::Args;
use cloche_policy::{parse_size, Policy};
use cloche_world::bpf_cache::program_for;
use cloche_world::cgroup::Limits;
use cloche_world::spec::{build_env, parse_env_pair, Terminal};
use cloche_world::{Outcome, Spec, StateDir};
use serde_json::json;
use std::ffi::OsString;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Args)]
pub struct RunArgs {
    /// Network: `none` (loopback only) or `allow=DEST[,DEST...]`; default:
    /// the policy's `[network]` (loopback only in the built-in policy).
    #[arg(long)]
    net: Option<String>,
    /// Kill the whole world after SECS seconds (exit code 124).
    #[arg(long, value_name = "SECS")]
    timeout: Option<String>,
    /// Memory limit (bytes, or 512M, 2GiB, ...).
    #[arg(long, value_name = "BYTES")]
    memory: Option<String>,
    /// Limit on processes and threads.
    #[arg(long, value_name = "N")]
    pids: Option<u64>,
    /// CPU bandwidth in cores (e.g. 0.5).
    #[arg(long, value_name = "CORES")]
    cpus: Option<f64>,
    /// Extra environment variable (repeatable).
    #[arg(long = "env", value_name = "K=V")]
    env: Vec<OsString>,
    /// Keep PATH visible through the masks (repeatable).
    #[arg(long = "expose", value_name = "PATH")]
    expose: Vec<PathBuf>,
    /// Working directory inside the world (default: the current one).
    #[arg(long, value_name = "DIR")]
    cwd: Option<PathBuf>,
    /// Write the world's JSON report to FILE (`-` for stdout, after the command).
    #[arg(long, value_name = "FILE")]
    report: Option<PathBuf>,
    /// Keep the world for inspection (its id is printed on stderr).
    #[arg(long)]
    keep: bool,
    /// Policy file (default: the built-in policies/default.toml).
    #[arg(long, value_name = "FILE")]
    policy: Option<PathBuf>,
    /// Skip sha256 of changed files in the fs_diff.
    #[arg(long)]
    no_hash: bool,
    /// Give the world a pseudo-terminal of its own (job control; ^C and ^Z
    /// reach its foreground job; the window size follows). Your terminal is
    /// raw while it runs and restored after.
    #[arg(short = 't', long)]
    tty: bool,
    /// Copy your terminal's input into the world's stdin (without -t the
    /// world never reads your terminal: its stdin is then empty).
    #[arg(short = 'i', long)]
    interactive: bool,
    /// The command and its arguments.
    #[arg(last = true, required = true, value_name = "CMD")]
    cmd: Vec<OsString>,
}

pub fn main(args: RunArgs) -> i32 {
    cloche_world::profile::init_from_env();
    cloche_world::profile::mark("cli: arguments parsed");
    match prepare(&args) {
        Err(msg) => fail(msg),
        Ok((spec, state)) => match cloche_world::run(&spec, &state) {
            Err(e) => fail(e),
            Ok(outcome) => finish(&args, &spec, &outcome),
        },
    }
}

/// Turns arguments and policy into a validated world spec.
fn prepare(args: &RunArgs) -> Result<(Spec, StateDir), String> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err("cloche run needs root (rootless worlds are not supported yet)".into());
    }
    let policy = match &args.policy {
        Some(p) => Policy::load(p).map_err(|e| e.to_string())?,
        None => Policy::builtin(),
    };
    let memory = match &args.memory {
        Some(m) => parse_size(m).map_err(|e| format!("--memory: {e}"))?,
        None => policy.limits.memory,
    };
    let timeout = match &args.timeout {
        Some(t) => Some(parse_timeout(t)?),
        None if policy.limits.timeout > 0 => Some(Duration::from_secs(policy.limits.timeout)),
        None => None,
    };
    let mut extra = Vec::new();
    for e in &args.env {
        extra.push(parse_env_pair(e).ok_or_else(|| format!("--env {}: expected K=V", e.to_string_lossy()))?);
    }
    let cwd = match &args.cwd {
        Some(c) if c.is_absolute() => c.clone(),
        Some(c) => return Err(format!("--cwd {}: must be absolute", c.display())),
        None => std::env::current_dir().map_err(|e| format!("current directory: {e}"))?,
    };
    let mut expose = policy.fs.expose.clone();
    for p in &args.expose {
        let abs = std::path::absolute(p).map_err(|e| format!("--expose {}: {e}", p.display()))?;
        if std::fs::symlink_metadata(&abs).is_err() {
            return Err(format!("--expose {}: no such file or directory", p.display()));
        }
        expose.push(abs);
    }
    let state = open_state()?;
    let mut spec = policy_spec(&policy, &state, cwd)?;
    cloche_world::profile::mark("cli: policy, state dir, seccomp program");
    spec.argv = args.cmd.clone();
    spec.env = build_env(std::env::vars_os(), &extra);
    spec.limits =
        Limits { memory, pids: args.pids.unwrap_or(policy.limits.pids), cpus: args.cpus.unwrap_or(policy.limits.cpus) };
    spec.timeout = timeout;
    spec.expose = expose;
    spec.keep = args.keep;
    if let Some(n) = &args.net {
        spec.net = crate::net_args::parse(n, &policy.network)?;
    }
    spec.hash = !args.no_hash;
    spec.terminal = match (args.tty, args.interactive) {
        (true, _) => Terminal::Pty,
        (false, true) => Terminal::Interactive,
        (false, false) => Terminal::Pipes,
    };
    spec.validate().map_err(|e| e.to_string())?;
    // The cwd is exposed: the world's plan refuses it if it is `/`, a home
    // itself or a secret. Exposures that unmask are said here.
    crate::project::note_exposures(&spec, &state)?;
    if let Some(c) = args.cpus {
        if !(c.is_finite() && c > 0.0) {
            return Err("--cpus: a number of cores above 0".into());
        }
    }
    Ok((spec, state))
}

/// The state directory (`CLOCHE_STATE_DIR` or /var/lib/cloche), created.
pub(crate) fn open_state() -> Result<StateDir, String> {
    let state_path = cloche_world::state::state_dir_from_env();
    StateDir::open(&state_path).map_err(|e| format!("state directory {}: {e}", state_path.display()))
}

/// A world spec with everything from the policy (limits, masks, seccomp,
/// layers) and no command yet.
pub(crate) fn policy_spec(policy: &Policy, state: &StateDir, cwd: PathBuf) -> Result<Spec, String> {
    let seccomp = program_for(&policy.seccomp_json, &state.root.join("cache"))
        .map_err(|e| format!("seccomp profile {}: {e}", policy.seccomp_origin))?;
    Ok(Spec {
        argv: Vec::new(),
        env: build_env(std::env::vars_os(), &[]),
        cwd,
        limits: Limits { memory: policy.limits.memory, pids: policy.limits.pids, cpus: policy.limits.cpus },
        timeout: (policy.limits.timeout > 0).then(|| Duration::from_secs(policy.limits.timeout)),
        upper_size: policy.world.upper_size,
        hostname: policy.world.hostname.clone(),
        nofile: policy.limits.nofile,
        mask: policy.fs.mask.clone(),
        mask_homes: policy.fs.mask_homes,
        home_secrets: policy.fs.home_secrets.clone(),
        expose: policy.fs.expose.clone(),
        seccomp,
        keep: false,
        keep_interrupted: policy.retention.keep_interrupted,
        owner: None,
        net: crate::net_args::from_policy(&policy.network)?,
        require: policy.layers.require.clone(),
        hash: true,
        terminal: Default::default(),
    })
}

fn parse_timeout(t: &str) -> Result<Duration, String> {
    let secs: f64 = t.trim().parse().map_err(|_| format!("--timeout {t}: expected seconds"))?;
    if !(secs.is_finite() && secs > 0.0 && secs < 1e9) {
        return Err(format!("--timeout {t}: expected a positive number of seconds"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// Writes the report, says what was kept, returns the exit code.
fn finish(args: &RunArgs, spec: &Spec, o: &Outcome) -> i32 {
    cloche_world::profile::dump("parent");
    if let Some(path) = &args.report {
        let report = json!({
            "world": o.world,
            "exit_code": o.exit_code,
            "timed_out": o.timed_out,
            "interrupted": o.interrupted,
            "command": spec.argv.iter().map(|a| a.to_string_lossy()).collect::<Vec<_>>(),
            "cwd": spec.cwd,
            "fs_diff": o.fs_diff,
            "network": o.network.as_ref().map(|n| serde_json::to_value(n).unwrap_or_default())
                .unwrap_or_else(|| json!({"mode": "none", "allowed": [], "denied": []})),
            "layers": o.layers,
            "cgroup": o.cgroup,
            "limits": {
                "memory": spec.limits.memory,
                "pids": spec.limits.pids,
                "cpus": spec.limits.cpus,
                "timeout_secs": spec.timeout.map(|t| t.as_secs_f64()),
            },
            "limits_hit": o.limits_hit,
            "timings": o.timings,
            "kept": o.kept,
            "output_error": o.output_error,
        });
        if let Err(e) = write_report(path, &report) {
            return fail(format!("--report {}: {e}", path.display()));
        }
    }
    if let Some(k) = &o.kept {
        // The base of each changed path, for `cloche commit` to detect
        // host changes made since.
        if let Err(e) = cloche_review::record::Recorder::open(k).and_then(|mut r| r.entry("run", &o.fs_diff)) {
            eprintln!("cloche: world {}: cannot record its base: {e} (a commit will report conflicts)", o.world);
        }
        eprintln!("cloche: kept world {} at {}", o.world, k.display());
    }
    if o.timed_out {
        eprintln!("cloche: timed out; world killed");
    }
    if let Some(e) = &o.output_error {
        eprintln!("cloche: the world's output was cut short: {e}");
    }
    match o.interrupted {
        Some(sig) => 128 + sig,
        // Never report success for output that did not all arrive.
        None if o.exit_code == 0 && o.output_error.is_some() => 125,
        None => o.exit_code,
    }
}

/// Writes atomically: a temporary file in the same directory, then rename.
fn write_report(path: &Path, report: &serde_json::Value) -> std::io::Result<()> {
    let mut text = serde_json::to_vec_pretty(report).map_err(std::io::Error::other)?;
    text.push(b'\n');
    if path == Path::new("-") {
        return std::io::stdout().write_all(&text);
    }
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = path.file_name().ok_or_else(|| std::io::Error::other("not a file name"))?;
    let mut tmp_name = OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(".{}.tmp", std::process::id()));
    let tmp = dir.join(tmp_name);
    let res = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&text)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if res.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    res
}
