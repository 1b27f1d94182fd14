//! "Allow means safe to run unseen", checked by running. Every command line
//! the default policy classifies allow — the classification table's rows and
//! generated variants that put options, environment variables and builtins
//! that could run programs in front of, inside and around allowed commands —
//! runs in a real world under an exec tracer (`cloche-probe exec-trace`:
//! ptrace with PTRACE_O_TRACEEXEC|TRACEFORK|TRACEVFORK|TRACECLONE). None may
//! execute a program other than those the line names, as the classifier
//! found them (through wrappers and `sh -c` strings), and their known
//! helpers (zcat runs gzip, git its own helpers).
//!
//! `CLOCHE_EXEC_TEST_POLICY=FILE` classifies with another policy file, to
//! see what the test finds in an older default policy.

use crate::common;

#[allow(dead_code)]
#[path = "../crates/policy/tests/classify_table/base.rs"]
mod base;
#[path = "policy_exec/corpus.rs"]
mod corpus;
#[path = "../crates/policy/tests/classify_table/unseen.rs"]
mod unseen;

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use cloche_policy::{Effect, Policy};
use common::*;
use corpus::{BASES, ENVS, HELPERS, KNOWN, OPTIONS, PREFIXES, SHIM_HELPERS};
use serde_json::{json, Value};

/// Lines per world: each world must finish well within the harness deadline
/// (2,500 lines take about 10 s here); a world waits for its slowest line
/// while the tracer's other slots idle, so fewer worlds waste less (400
/// lines a world, 19 worlds, took 35-39 s in all; 3 worlds, 31 s).
const CHUNK: usize = 2500;
/// Lines traced at once in a world.
const JOBS: &str = "4";
/// Milliseconds a traced line may run.
const LINE_TIMEOUT_MS: u64 = 1500;

fn policy() -> Policy {
    match std::env::var_os("CLOCHE_EXEC_TEST_POLICY") {
        Some(p) => Policy::load(Path::new(&p)).unwrap_or_else(|e| panic!("{e}")),
        None => Policy::builtin(),
    }
}

/// Every command line to try: the table, the known holes, and variants.
fn corpus() -> Vec<String> {
    let mut out: Vec<String> = base::TABLE.iter().chain(unseen::UNSEEN).map(|r| r.0.to_string()).collect();
    out.extend(base::OBFUSCATED.iter().map(|r| r.0.to_string()));
    out.extend(KNOWN.iter().map(|s| s.to_string()));
    for b in BASES {
        let (prog, rest) = b.split_once(' ').unwrap_or((b, ""));
        for o in OPTIONS {
            out.push(format!("{prog} {o} {rest}"));
            if prog == "git" {
                let (sub, args) = rest.split_once(' ').unwrap_or((rest, ""));
                out.push(format!("git {sub} {o} {args}"));
            }
        }
        for e in ENVS {
            out.push(format!("{e} {b}"));
        }
        for p in PREFIXES {
            out.push(format!("{p}{b}"));
        }
    }
    // Builtin tricks again in bash (the world's sh is dash; bash has hash -p,
    // BASH_CMDS, arithmetic on strings, ${x@P} …).
    let bash: Vec<String> = BASES
        .iter()
        .flat_map(|b| PREFIXES.iter().filter(|p| bash_only(p)).map(move |p| format!("{p}{b}")))
        .chain(KNOWN.iter().map(|k| k.to_string()))
        .filter(|l| !l.contains('\''))
        .map(|l| format!("bash -c '{}'", l.replace('\n', "; ")))
        .collect();
    out.extend(bash);
    out.sort();
    out.dedup();
    out
}

/// A builtin trick that only bash has (or that works differently there).
fn bash_only(prefix: &str) -> bool {
    const BASH: &[&str] = &[
        "hash",
        "BASH_CMDS",
        "declare",
        "[[",
        "$[",
        "alias",
        "shopt",
        "enable",
        "set -k",
        "PS4",
        "command_not_found",
        "<<<",
        "printf -v",
        "set -T",
        "export -f",
        "a[",
        "jobs",
        "source",
    ];
    BASH.iter().any(|b| prefix.contains(b))
}

/// The project the lines run in: files, an executable marker script, a git
/// repository, and configuration files that only a changed HOME or
/// XDG_CONFIG_HOME would read.
fn populate(fx: &Fixture) {
    fx.write("a.txt", b"hello\nworld\n", 0o644);
    fx.write("b.txt", b"hello\nthere\n", 0o644);
    fx.write("names.txt", b"b\na\nb\n", 0o644);
    fx.write("data.json", br#"{"name": "x", "dependencies": {}}"#, 0o644);
    fx.write("src/main.rs", b"fn main() {}\n", 0o644);
    fx.write("x.sh", b"#!/bin/sh\ncat >/dev/null 2>&1 </dev/null\nexit 0\n", 0o755);
    fx.write("list0", b"a.txt\0", 0o644);
    fx.write("rg.conf", b"--pre=./x.sh\n", 0o644);
    let big: String = (0..20000).map(|i| format!("{}\n", 20000 - i)).collect();
    fx.write("big.txt", big.as_bytes(), 0o644);
    let gz = Command::new("gzip").arg("-c").arg(fx.dir().join("a.txt")).output().expect("gzip");
    fx.write("a.gz", &gz.stdout, 0o644);
    let git = |args: &[&str]| {
        let o = Command::new("git")
            .args(["-c", "user.name=t", "-c", "user.email=t@example.com", "-c", "init.defaultBranch=main"])
            .args(args)
            .current_dir(fx.dir())
            .output()
            .expect("git");
        assert!(o.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&o.stderr));
    };
    git(&["init", "-q"]);
    git(&["add", "a.txt", "b.txt", "src/main.rs", "data.json"]);
    git(&["commit", "-qm", "first"]);
    // A change in the working tree, so that diffs have something to show.
    fx.write("a.txt", b"hello\nworld\nagain\n", 0o644);
    let hook = b"[core]\n\tfsmonitor = ./x.sh\n\tpager = ./x.sh\n[diff]\n\texternal = ./x.sh\n";
    fx.write(".gitconfig", hook, 0o644);
    fx.write("git/config", hook, 0o644);
}

/// Where a program name may resolve: a path from the project dir, or any
/// directory of PATH or of the default path (`command -p`; a world masks
/// some PATH directories, such as those under homes, that the host sees).
fn resolve_all(name: &str, dir: &Path) -> Vec<PathBuf> {
    if name.contains('/') {
        return dir.join(name).canonicalize().into_iter().collect();
    }
    let path =
        std::env::var("PATH").unwrap_or_default() + ":/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
    path.split(':')
        .map(|d| Path::new(d).join(name))
        .filter(|p| p.metadata().is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0))
        .filter_map(|p| p.canonicalize().ok())
        .collect()
}

fn resolve(name: &str, dir: &Path) -> Option<PathBuf> {
    resolve_all(name, dir).into_iter().next()
}

fn is_script(p: &Path) -> bool {
    std::fs::read(p).is_ok_and(|b| b.starts_with(b"#!"))
}

/// What an exec ran: the executable, or for an interpreter started on a
/// script (by the kernel's #! or by name), the script.
fn identity(e: &Value, dir: &Path) -> PathBuf {
    let exe = PathBuf::from(e["exe"].as_str().unwrap_or(""));
    let argv: Vec<&str> =
        e["argv"].as_array().map(|a| a.iter().filter_map(Value::as_str).collect()).unwrap_or_default();
    let base = exe.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let interpreter =
        ["dash", "bash", "sh", "perl", "python", "ruby", "node", "tclsh", "expect"].iter().any(|i| base.starts_with(i));
    if interpreter {
        for a in argv.iter().skip(1).take(2) {
            let p = if a.starts_with('/') { PathBuf::from(a) } else { dir.join(a) };
            if !a.starts_with('-') && is_script(&p) {
                return p.canonicalize().unwrap_or(p);
            }
        }
    }
    if exe.as_os_str().is_empty() {
        return argv.first().and_then(|a| resolve(a, dir)).unwrap_or_default();
    }
    exe.canonicalize().unwrap_or(exe)
}

/// A program found in a toolchain under a home (policy `fs.toolchains`,
/// shown read-only in a world whose PATH names it) is a version manager's
/// proxy or shim: rustup's run the selected toolchain's binary, pyenv's run
/// pyenv's own scripts and then the selected version. What it may run: the
/// programs of its toolchain group (the roots returned) and the utilities
/// shims use ([`SHIM_HELPERS`]).
fn toolchain_roots(program: &Path, policy: &Policy) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for h in cloche_world::spec::home_dirs() {
        for group in &policy.fs.toolchains {
            let paths: Vec<PathBuf> = group.iter().filter_map(|p| h.join(p).canonicalize().ok()).collect();
            if paths.iter().any(|p| program.starts_with(p)) {
                out.extend(paths);
            }
        }
    }
    out
}

/// The programs a classified line may run: `sh` (the line's own shell),
/// every command the classifier found, and their helpers.
fn expected(commands: &[cloche_policy::SimpleCommand], dir: &Path, git_exec: &Path) -> (BTreeSet<PathBuf>, bool) {
    let mut names: BTreeSet<String> = BTreeSet::from(["sh".to_string()]);
    for c in commands {
        if let Some(a0) = c.argv.first() {
            let n = if a0.contains('/') { a0.clone() } else { a0.rsplit('/').next().unwrap_or(a0).to_string() };
            names.insert(n);
        }
    }
    let git = names.contains("git");
    for (prog, helpers) in HELPERS {
        if names.contains(*prog) {
            names.extend(helpers.iter().map(|h| h.to_string()));
        }
    }
    let mut out: BTreeSet<PathBuf> = names.iter().flat_map(|n| resolve_all(n, dir)).collect();
    let policy = policy();
    if out.iter().any(|p| !toolchain_roots(p, &policy).is_empty()) {
        out.extend(SHIM_HELPERS.iter().flat_map(|n| resolve_all(n, dir)));
    }
    if git {
        out.insert(git_exec.to_path_buf());
    }
    (out, git)
}

#[test]
fn allowed_command_lines_run_only_what_they_name() {
    let started = std::time::Instant::now();
    let policy = policy();
    let all = corpus();
    let allowed: Vec<(String, cloche_policy::Decision)> =
        all.iter().map(|l| (l.clone(), policy.classify(l))).filter(|(_, d)| d.effect == Effect::Allow).collect();
    assert!(all.len() > 3000, "{} lines generated", all.len());
    assert!(
        allowed.len() > 500,
        "only {} of {} lines are allowed: the corpus no longer exercises allow",
        allowed.len(),
        all.len()
    );

    let fx = Fixture::new();
    populate(&fx);
    let dir = fx.dir().to_path_buf();
    let git_exec = Command::new("git").arg("--exec-path").output().expect("git --exec-path");
    let git_exec = PathBuf::from(String::from_utf8_lossy(&git_exec.stdout).trim()).canonicalize().unwrap();

    // The tracer itself must see what a program runs on its own: these are
    // not classified, only traced.
    let controls = [
        ("sort -S 1K --compress-program=gzip big.txt", "gzip"),
        ("git grep -Otrue hello", "true"),
        ("find . -name a.txt -exec cat {} +", "cat"),
    ];
    let mut lines: Vec<&str> = controls.iter().map(|c| c.0).collect();
    lines.extend(allowed.iter().map(|(l, _)| l.as_str()));

    let mut results: Vec<Value> = Vec::new();
    for (n, chunk) in lines.chunks(CHUNK).enumerate() {
        let file = format!("lines-{n}.json");
        let text: String = chunk.iter().map(|l| format!("{}\n", json!(l))).collect();
        fx.write(&file, text.as_bytes(), 0o644);
        let o = fx.probe::<&str, &str>(&[], &["exec-trace", &file, &LINE_TIMEOUT_MS.to_string(), JOBS]);
        o.expect_code(0);
        let got = o.lines();
        assert_eq!(got.len(), chunk.len(), "one result per line\n{}", o.describe());
        results.extend(got);
    }

    for (i, (line, prog)) in controls.iter().enumerate() {
        let ids: Vec<PathBuf> = results[i]["execs"].as_array().unwrap().iter().map(|e| identity(e, &dir)).collect();
        let want = resolve(prog, &dir).unwrap();
        assert!(ids.contains(&want), "the tracer missed {prog} in {line:?}: {}", results[i]);
    }

    let mut violations: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut timed_out = 0;
    for ((line, d), r) in allowed.iter().zip(&results[controls.len()..]) {
        assert!(r.get("error").is_none(), "{line:?}: tracer error {r}");
        timed_out += usize::from(r["timed_out"] == true);
        let (want, git) = expected(&d.commands, &dir, &git_exec);
        let tools: Vec<PathBuf> = want.iter().flat_map(|p| toolchain_roots(p, &policy)).collect();
        for e in r["execs"].as_array().unwrap() {
            let id = identity(e, &dir);
            let ok =
                want.contains(&id) || (git && id.starts_with(&git_exec)) || tools.iter().any(|t| id.starts_with(t));
            if !ok {
                violations.entry(line.clone()).or_default().push(format!("{} {}", id.display(), e["argv"]));
            }
        }
    }
    eprintln!(
        "policy_exec: {} lines generated, {} allowed and run in {} worlds ({} hit the {LINE_TIMEOUT_MS} ms limit), {:.1} s",
        all.len(),
        allowed.len(),
        lines.len().div_ceil(CHUNK),
        timed_out,
        started.elapsed().as_secs_f64()
    );
    let report: Vec<String> = violations.iter().map(|(l, v)| format!("{l:?} ran {}", v.join(", "))).collect();
    assert!(
        violations.is_empty(),
        "{} allowed lines ran programs they do not name:\n{}",
        violations.len(),
        report.join("\n")
    );
    fx.finish();
}

/// A batch entry's environment is part of what it runs: `GIT_PAGER` or a
/// value holding `$(…)` make an allowed command review. (A name that is not
/// a variable name, such as an exported function's `BASH_FUNC_ls%%`, is
/// refused by the batch file parser; the classifier makes it unresolved.)
#[test]
fn a_batch_entrys_environment_is_classified() {
    let fx = Fixture::new();
    let project = fx.dir().to_str().unwrap().to_string();
    let batch = json!({"agent": "a1", "project": project, "entries": [
        {"command": "git log"},
        {"command": "git log", "env": {"GIT_PAGER": "sh -c id"}},
        {"command": "bash -c 'echo $((X))'", "env": {"X": "a[$(id)]"}},
        {"command": "cat a.txt", "env": {"LANG": "C.UTF-8"}}]});
    let id = submit(&fx, &batch, None);
    let v = show(&fx, &id);
    let got: Vec<(String, String)> = v["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["decision"]["effect"].as_str().unwrap().into(), e["decision"]["rule"].as_str().unwrap().into()))
        .collect();
    let want = [("allow", "git-read"), ("review", "env-hijack"), ("review", "unresolved"), ("allow", "inspect")];
    let want: Vec<(String, String)> = want.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect();
    assert_eq!(got, want, "{v:#}");
    assert_eq!(v["state"], "pending", "{v:#}");
    fx.finish();
}
