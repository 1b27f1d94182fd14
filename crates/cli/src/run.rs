//! `cloche run`: one world, one command.

use crate::fail;
use clap::Args;
use cloche_policy::{parse_size, Policy};
use cloche_world::bpf_cache::program_for;
use cloche_world::cgroup::Limits;
use cloche_world::spec::{build_env, parse_env_pair, Terminal, UpperStore};
use cloche_world::{Outcome, Spec, StateDir};
use serde_json::json;
use std::ffi::{OsStr, OsString};
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// `cloche run [OPTIONS] [--] CMD [ARGS...]`.
#[derive(Args)]
#[command(after_help = "\
The world gets PATH, HOME, LANG, LC_*, TERM, TZ and USER from your environment, plus -e/--env and
--env-file. `--` before CMD is needed only when CMD starts with `-`: `cloche run ls -la` runs `ls -la`.

Exit status: CMD's; 124 timeout; 125 cloche failed (one line on stderr); 126 CMD not executable;
127 CMD not found; 128+N CMD killed by signal N.")]
pub struct RunArgs {
    /// Network: `none` (loopback only) or `allow=DEST[,DEST...]` (IP, CIDR or NAME, each with an
    /// optional :PORT); default: the policy's `[network]` (loopback only in the built-in policy).
    #[arg(long, visible_alias = "network", value_name = "none|allow=DEST,...")]
    net: Option<String>,
    /// Kill the whole world after SECS seconds, fractions allowed (exit code 124).
    #[arg(long, value_name = "SECS", allow_hyphen_values = true)]
    timeout: Option<String>,
    /// Memory limit: bytes, or 512M, 2GiB, ... (binary units).
    #[arg(short = 'm', long, value_name = "BYTES", allow_hyphen_values = true)]
    memory: Option<String>,
    /// Limit on processes and threads.
    #[arg(long, visible_alias = "pids-limit", value_name = "N", allow_hyphen_values = true)]
    pids: Option<String>,
    /// CPU bandwidth in cores (e.g. 0.5).
    #[arg(long, value_name = "CORES", allow_hyphen_values = true)]
    cpus: Option<String>,
    /// Set a variable in the world: K=V, or K alone to pass your own value of K (nothing when
    /// you have none); repeatable.
    #[arg(short = 'e', long = "env", value_name = "K[=V]")]
    env: Vec<OsString>,
    /// Read variables from FILE, one K=V (taken as is, no quotes) or K per line; blank lines and
    /// lines starting with # are skipped; repeatable; -e/--env wins.
    #[arg(long = "env-file", value_name = "FILE")]
    env_file: Vec<PathBuf>,
    /// Keep PATH visible through the masks (repeatable).
    #[arg(long = "expose", value_name = "PATH")]
    expose: Vec<PathBuf>,
    /// Working directory inside the world (default: the current one); a relative DIR is taken
    /// from the current directory.
    #[arg(short = 'w', long, visible_alias = "workdir", value_name = "DIR")]
    cwd: Option<PathBuf>,
    /// Write the world's JSON report to FILE (`-`: stdout, after the command's output); its
    /// directory is checked before the world starts.
    #[arg(long, value_name = "FILE")]
    report: Option<PathBuf>,
    /// Print the report on stdout after the command's own output (as `--report -`).
    #[arg(long, conflicts_with = "report")]
    json: bool,
    /// Keep the world for inspection (its id is printed on stderr).
    #[arg(long)]
    keep: bool,
    /// Discard the world when the command ends: the default, accepted as in Docker.
    #[arg(long, conflicts_with = "keep")]
    rm: bool,
    /// Where the world's writes live: `disk` (a capped subvolume of the
    /// state directory's pool) or `tmpfs` (in memory, counted against
    /// --memory); default: the policy's `[world] upper` (disk).
    #[arg(long, value_name = "disk|tmpfs")]
    upper: Option<String>,
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
    /// The command and its arguments (`--` first when the command starts with `-`).
    #[arg(required = true, trailing_var_arg = true, value_name = "CMD")]
    cmd: Vec<OsString>,
}

pub fn main(args: RunArgs) -> i32 {
    cloche_world::profile::init_from_env();
    cloche_world::profile::mark("cli: arguments parsed");
    match prepare(&args) {
        Err(msg) => fail(msg),
        Ok((spec, state)) => match cloche_world::run(&spec, &state) {
            Err(e) => fail(e),
            Ok(mut outcome) => {
                // Nothing after this clones a world: the world's mounts go
                // away on a thread of their own while the report is written.
                std::mem::take(&mut outcome.teardown).in_background();
                finish(&args, &spec, &outcome)
            }
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
    // Every option is checked before anything is created (the state
    // directory, the world): a refusal changes nothing.
    let memory = match &args.memory {
        Some(m) => parse_memory(m)?,
        None => policy.limits.memory,
    };
    let timeout = match &args.timeout {
        Some(t) => Some(parse_timeout(t)?),
        None if policy.limits.timeout > 0 => Some(Duration::from_secs(policy.limits.timeout)),
        None => None,
    };
    let pids = args.pids.as_deref().map(parse_pids).transpose()?.unwrap_or(policy.limits.pids);
    let cpus = args.cpus.as_deref().map(parse_cpus).transpose()?.unwrap_or(policy.limits.cpus);
    let extra = env_options(&args.env_file, &args.env, |k| std::env::var_os(k))?;
    let cwd = match &args.cwd {
        Some(c) if c.is_absolute() => c.clone(),
        // Relative: from the current directory, as `cd` would (and checked here).
        Some(c) => std::env::current_dir()
            .and_then(|d| std::fs::canonicalize(d.join(c)))
            .map_err(|e| format!("--cwd {}: {}", c.display(), io_reason(&e)))?,
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
    if let Some(r) = report_path(args) {
        check_report(&r)?;
    }
    let state = open_state()?;
    let mut spec = policy_spec(&policy, &state, cwd)?;
    cloche_world::profile::mark("cli: policy, state dir, seccomp program");
    spec.argv = args.cmd.clone();
    spec.env = build_env(std::env::vars_os(), &extra);
    spec.limits = Limits { memory, pids, cpus };
    spec.timeout = timeout;
    spec.expose = expose;
    spec.keep = args.keep;
    if let Some(u) = &args.upper {
        spec.upper = u.parse().map_err(|e| format!("--upper {e}"))?;
    }
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
    // The PATH entries the world hides are said by the world's parent,
    // from the view its mount plan is built from, off the critical path.
    spec.path_note = Some(crate::project::note_hidden_path);
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
        upper: match policy.world.upper {
            cloche_policy::UpperStore::Disk => UpperStore::Disk,
            cloche_policy::UpperStore::Tmpfs => UpperStore::Tmpfs,
        },
        upper_size: policy.world.upper_size,
        hostname: policy.world.hostname.clone(),
        nofile: policy.limits.nofile,
        mask: policy.fs.mask.clone(),
        mask_homes: policy.fs.mask_homes,
        home_secrets: policy.fs.home_secrets.clone(),
        expose: policy.fs.expose.clone(),
        toolchains: cloche_world::spec::Toolchains {
            groups: policy.fs.toolchains.clone(),
            writable: policy.fs.toolchain_writable.clone(),
        },
        path_note: None,
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
    let secs: f64 = t.trim().parse().map_err(|_| format!("--timeout {t}: expected a number of seconds"))?;
    if !(secs.is_finite() && secs > 0.0 && secs < 1e9) {
        return Err(format!("--timeout {t}: must be a positive number of seconds (below 1e9)"));
    }
    Ok(Duration::from_secs_f64(secs))
}

fn parse_memory(m: &str) -> Result<u64, String> {
    if m.trim().starts_with('-') {
        return Err(format!("--memory {m}: must be a positive size (bytes, or 512M, 2GiB, ...)"));
    }
    match parse_size(m) {
        Ok(0) => Err(format!("--memory {m}: must be a positive size")),
        Ok(n) => Ok(n),
        Err(e) => Err(format!("--memory {m}: {e}")),
    }
}

fn parse_pids(p: &str) -> Result<u64, String> {
    match p.trim().parse::<i128>() {
        Ok(n) if n > 0 => u64::try_from(n).map_err(|_| format!("--pids {p}: too large")),
        Ok(_) => Err(format!("--pids {p}: must be a positive whole number")),
        Err(_) => Err(format!("--pids {p}: expected a whole number")),
    }
}

fn parse_cpus(c: &str) -> Result<f64, String> {
    let n: f64 = c.trim().parse().map_err(|_| format!("--cpus {c}: expected a number of cores"))?;
    if !(n.is_finite() && n > 0.0 && n <= 1e6) {
        return Err(format!("--cpus {c}: must be a positive number of cores"));
    }
    Ok(n)
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

/// An I/O error without Rust's ` (os error N)` suffix.
fn io_reason(e: &std::io::Error) -> String {
    let s = e.to_string();
    match s.find(" (os error") {
        Some(i) => s[..i].to_string(),
        None => s,
    }
}

/// Where the report goes: `--report FILE`, or stdout with `--json`.
fn report_path(args: &RunArgs) -> Option<PathBuf> {
    args.report.clone().or_else(|| args.json.then(|| PathBuf::from("-")))
}

/// Refuses a report path that cannot be written, before the world starts:
/// its directory must exist and be writable, and it must name a file.
fn check_report(path: &Path) -> Result<(), String> {
    if path == Path::new("-") {
        return Ok(());
    }
    let bad = |why: String| Err(format!("--report {}: {why}", path.display()));
    if path.file_name().is_none() || path.as_os_str().as_encoded_bytes().ends_with(b"/") {
        return bad("not a file name".into());
    }
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    match std::fs::metadata(&dir) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => return bad(format!("{} is not a directory", dir.display())),
        Err(e) => return bad(format!("directory {}: {}", dir.display(), io_reason(&e))),
    }
    if let Err(e) = nix::unistd::access(&dir, nix::unistd::AccessFlags::W_OK | nix::unistd::AccessFlags::X_OK) {
        return bad(format!("cannot write in {}: {}", dir.display(), e.desc()));
    }
    if std::fs::metadata(path).is_ok_and(|m| m.is_dir()) {
        return bad("is a directory".into());
    }
    Ok(())
}

/// Writes the report, says what was kept, returns the exit code.
fn finish(args: &RunArgs, spec: &Spec, o: &Outcome) -> i32 {
    cloche_world::profile::dump("parent");
    let mut report_failed = false;
    if let Some(path) = report_path(args) {
        let report = json!({
            "schema_version": crate::output::SCHEMA_VERSION,
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
        // Checked before the world started; should it fail now all the
        // same, the command's own status still comes out (125 only in
        // place of a success).
        if let Err(e) = write_report(&path, &report) {
            fail(format!("--report {}: {e}", path.display()));
            report_failed = true;
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
        // Never report success for output (or a report) that did not all arrive.
        None if o.exit_code == 0 && (o.output_error.is_some() || report_failed) => crate::EXIT_CLOCHE,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_must_be_positive_values() {
        assert_eq!(parse_timeout("1.5").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_pids("64"), Ok(64));
        assert_eq!(parse_cpus("0.5"), Ok(0.5));
        assert_eq!(parse_memory("512M"), Ok(512 << 20));
        for (got, flag) in [
            (parse_timeout("-1").map(drop), "--timeout -1: must be a positive"),
            (parse_timeout("0").map(drop), "--timeout 0: must be a positive"),
            (parse_cpus("-3").map(drop), "--cpus -3: must be a positive"),
            (parse_cpus("nan").map(drop), "--cpus nan: must be a positive"),
            (parse_pids("-1").map(drop), "--pids -1: must be a positive"),
            (parse_pids("0").map(drop), "--pids 0: must be a positive"),
            (parse_memory("-1").map(drop), "--memory -1: must be a positive"),
            (parse_memory("0").map(drop), "--memory 0: must be a positive"),
        ] {
            assert!(got.as_ref().is_err_and(|e| e.starts_with(flag)), "{got:?} for {flag}");
        }
    }

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

    #[test]
    fn a_report_path_is_checked_before_the_world() {
        let dir = tempfile::tempdir().unwrap();
        assert!(check_report(Path::new("-")).is_ok());
        assert!(check_report(&dir.path().join("r.json")).is_ok());
        for bad in [
            dir.path().join("missing/r.json"),
            dir.path().to_path_buf(),
            dir.path().join("sub/"),
            PathBuf::from("/proc/version/r.json"),
        ] {
            let e = check_report(&bad).unwrap_err();
            assert!(e.starts_with("--report "), "{e}");
        }
        assert!(std::fs::read_dir(dir.path()).unwrap().next().is_none(), "the check wrote nothing");
    }
}
