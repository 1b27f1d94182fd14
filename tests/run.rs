//! `cloche run` as a command-line tool: exit codes, pass-through of output,
//! environment, cwd, the report's shape, `--keep`, a broken policy, and
//! `cloche doctor`.

use crate::common;

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fs;

use serde_json::Value;

use common::*;

#[test]
fn exit_code_passes_through() {
    let fx = Fixture::new();
    for code in [0, 3, 42] {
        let o = fx.run::<&str, _>(&[], &["/bin/sh", "-c", &format!("exit {code}")]);
        o.expect_code(code);
        let r = o.report();
        assert_eq!(r["exit_code"], code, "report.exit_code\n{}", o.describe());
        assert_eq!(r["timed_out"], false, "report.timed_out\n{}", o.describe());
    }
    fx.finish();
}

#[test]
fn killed_by_signal_is_128_plus_n() {
    let fx = Fixture::new();
    for (sig, name) in [(15, "TERM"), (9, "KILL")] {
        let o = fx.run::<&str, _>(&[], &["/bin/sh", "-c", &format!("kill -{name} $$")]);
        o.expect_code(128 + sig);
        assert_eq!(o.report()["exit_code"], 128 + sig, "{}", o.describe());
    }
    fx.finish();
}

#[test]
fn missing_command_is_127() {
    let fx = Fixture::new();
    let bare = format!("cloche-no-such-command-{}", fx.tag);
    let abs = format!("/nonexistent-{}/cmd", fx.tag);
    for cmd in [bare.as_str(), abs.as_str()] {
        let o = fx.run::<&str, _>(&[], &[cmd]);
        o.expect_code(127);
        assert!(o.stdout.is_empty(), "stdout must be empty\n{}", o.describe());
    }
    fx.finish();
}

#[test]
fn non_executable_command_is_126() {
    let fx = Fixture::new();
    fx.write("notes.txt", b"echo should not run\n", 0o644);
    fx.mkdir("adir");
    for cmd in ["./notes.txt", "./adir"] {
        let o = fx.run::<&str, _>(&[], &[cmd]);
        o.expect_code(126);
        assert!(o.stdout.is_empty(), "stdout must be empty\n{}", o.describe());
    }
    fx.finish();
}

#[test]
fn bad_options_are_125_with_a_one_line_reason() {
    let fx = Fixture::new();
    let missing_cwd = format!("/nonexistent-{}", fx.tag);
    let cases: Vec<Vec<&str>> = vec![
        vec!["run", "--memory", "abc", "--", "true"],
        vec!["run", "--timeout", "abc", "--", "true"],
        vec!["run", "--pids", "abc", "--", "true"],
        vec!["run", "--cloche-no-such-flag", "--", "true"],
        vec!["run", "--cwd", &missing_cwd, "--", "true"],
    ];
    let mut wrong = Vec::new();
    for args in cases {
        let o = fx.cloche(&args);
        let err = String::from_utf8_lossy(&o.stderr);
        let lines = err.lines().filter(|l| !l.trim().is_empty()).count();
        if o.code != Some(125) || !o.stdout.is_empty() || lines != 1 {
            wrong.push(format!(
                "want exit 125, empty stdout, one line on stderr; got {} line(s):\n{}",
                lines,
                o.describe()
            ));
        }
        if !fx.worlds().is_empty() {
            wrong.push(format!("a refused run left world state {:?}: {}", fx.worlds(), o.describe()));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n\n"));
    fx.finish();
}

#[test]
fn stdout_and_stderr_pass_through_byte_exact() {
    let fx = Fixture::new();
    // NUL, invalid UTF-8, CR, no final newline; repeated to about 1.5 MiB.
    let out_chunk: &[u8] = b"out\x00\xff\xfe\r\n\tline \x1b[0m end";
    let err_chunk: &[u8] = b"ERR\xc3\x28\x00|";
    let n = 50_000;
    let o = fx.probe::<&str, _>(&[], &["emit", &hex(out_chunk), &hex(err_chunk), &n.to_string()]);
    o.expect_code(0);
    let want_out = out_chunk.repeat(n);
    let want_err = err_chunk.repeat(n);
    assert!(
        o.stdout == want_out,
        "stdout differs: {} bytes, expected {} (first difference at {:?})",
        o.stdout.len(),
        want_out.len(),
        o.stdout.iter().zip(&want_out).position(|(a, b)| a != b)
    );
    assert!(
        o.stderr.windows(want_err.len()).any(|w| w == want_err),
        "the command's stderr ({} bytes expected) is not found intact in cloche's stderr ({} bytes)",
        want_err.len(),
        o.stderr.len()
    );
    fx.finish();
}

#[test]
fn environment_comes_from_the_allowlist_plus_env_flags() {
    let fx = Fixture::new();
    let secret = format!("hunter2-{}", fx.tag);
    let mut cmd = fx.command();
    cmd.env("SECRET_TOKEN", &secret)
        .env("AWS_SECRET_ACCESS_KEY", &secret)
        .env("LANG", "C.UTF-8")
        .env("LC_ALL", "C")
        .env("TZ", "UTC")
        .env("TERM", "dumb");
    let o = fx.run_with(cmd, &["--env", "FOO=bar", "--env", "WITH_EQ=a=b"], &[probe_bin().to_str().unwrap(), "env"]);
    o.expect_code(0);
    let v = o.one();
    let env: BTreeMap<String, String> = serde_json::from_value(v["env"].clone()).unwrap();

    assert!(!env.contains_key("SECRET_TOKEN"), "SECRET_TOKEN leaked: {env:?}");
    assert!(!env.values().any(|v| v.contains(&secret)), "the secret value leaked: {env:?}");
    let allowed = ["PATH", "HOME", "LANG", "TERM", "TZ", "USER", "FOO", "WITH_EQ"];
    let stray: Vec<&String> = env.keys().filter(|k| !allowed.contains(&k.as_str()) && !k.starts_with("LC_")).collect();
    assert!(stray.is_empty(), "variables outside the allowlist reached the command: {stray:?}\n{env:?}");
    assert_eq!(env.get("FOO").map(String::as_str), Some("bar"), "{env:?}");
    assert_eq!(env.get("WITH_EQ").map(String::as_str), Some("a=b"), "{env:?}");
    assert_eq!(env.get("LANG").map(String::as_str), Some("C.UTF-8"), "{env:?}");
    assert_eq!(env.get("LC_ALL").map(String::as_str), Some("C"), "{env:?}");
    assert_eq!(env.get("TZ").map(String::as_str), Some("UTC"), "{env:?}");
    assert_eq!(env.get("TERM").map(String::as_str), Some("dumb"), "{env:?}");
    assert!(env.get("PATH").is_some_and(|p| !p.is_empty()), "PATH is missing: {env:?}");
    fx.finish();
}

#[test]
fn cwd_defaults_to_the_callers_and_follows_cwd_flag() {
    let fx = Fixture::new();
    fx.write("hello.txt", b"hello from the host\n", 0o644);
    let sub = fx.mkdir("sub/deeper");

    let o = fx.probe::<&str, _>(&[], &["cwd"]);
    o.expect_code(0);
    assert_eq!(o.one()["cwd"], fx.dir().to_str().unwrap(), "{}", o.describe());

    let o = fx.probe::<&str, _>(&[], &["read", "hello.txt"]);
    o.expect_code(0);
    assert_eq!(o.one()["text"], "hello from the host\n", "{}", o.describe());

    let o = fx.probe(&["--cwd", sub.to_str().unwrap()], &["cwd"]);
    o.expect_code(0);
    assert_eq!(o.one()["cwd"], sub.to_str().unwrap(), "{}", o.describe());
    fx.finish();
}

#[test]
fn report_has_the_documented_shape() {
    let fx = Fixture::new();
    let o = fx.run::<&str, _>(&[], &["true"]);
    o.expect_code(0);
    let r = o.report();
    let d = o.describe();

    let id = r["world"].as_str().unwrap_or_default();
    assert!(!id.is_empty(), "report.world must be the world id: {r:#}\n{d}");
    assert_eq!(r["exit_code"], 0, "{r:#}");
    assert_eq!(r["timed_out"], false, "{r:#}");

    // A command that changes nothing has an empty fs_diff: the engine's own
    // mount points and masks are not changes of the world.
    let fs_diff = &r["fs_diff"];
    for list in ["added", "modified", "deleted", "flags"] {
        assert!(
            fs_diff[list].as_array().is_some_and(|a| a.is_empty()),
            "`true` changed nothing, yet fs_diff.{list} = {}\n{d}",
            fs_diff[list]
        );
    }
    for t in ["added", "modified", "deleted", "bytes"] {
        assert_eq!(fs_diff["totals"][t], 0, "fs_diff.totals.{t}: {fs_diff:#}");
    }
    assert_eq!(fs_diff["truncated"], false, "{fs_diff:#}");

    assert!(r["network"]["allowed"].is_array(), "network.allowed: {r:#}");
    assert!(r["network"]["denied"].is_array(), "network.denied: {r:#}");

    let layers = string_list(&r["layers"]);
    for l in ["mnt", "pid", "net", "ipc", "uts", "cgroupns", "overlay", "seccomp", "caps", "no_new_privs", "cgroup"] {
        assert!(layers.iter().any(|x| x == l), "layer {l:?} missing from report.layers {layers:?}");
    }
    assert!(r["limits_hit"].as_array().is_some_and(|a| a.is_empty()), "limits_hit of `true`: {}", r["limits_hit"]);
    let total = &r["timings"]["total_ms"];
    assert!(total.as_f64().is_some_and(|t| t >= 0.0), "timings.total_ms: {}", r["timings"]);
    assert!(!fx.worlds_dir().join(id).exists(), "the world's state dir survived a run without --keep");
    fx.finish();
}

#[test]
fn keep_leaves_the_world_and_the_default_discards_it() {
    let fx = Fixture::new();

    // Default: nothing stays.
    let o = fx.run::<&str, _>(&[], &["/bin/sh", "-c", "echo x > created.txt"]);
    o.expect_code(0);
    let id = o.report()["world"].as_str().unwrap_or_default().to_string();
    assert!(!id.is_empty(), "no world id in the report\n{}", o.describe());
    assert!(fx.worlds().is_empty(), "a run without --keep left {:?}", fx.worlds());

    // --keep: $STATE/worlds/<id> stays, and the id is printed on stderr.
    let o = fx.run(&["--keep"], &["/bin/sh", "-c", "echo x > created.txt"]);
    let _discard: Vec<KeptWorld> = fx.worlds().into_iter().map(|id| KeptWorld { fx: &fx, id }).collect();
    o.expect_code(0);
    let id = o.report()["world"].as_str().unwrap_or_default().to_string();
    assert_eq!(fx.worlds(), vec![id.clone()], "--keep must leave exactly $STATE/worlds/<id>\n{}", o.describe());
    assert!(fx.worlds_dir().join(&id).is_dir());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains(&id),
        "--keep must print the world id on stderr\n{}",
        o.describe()
    );
    assert!(!fx.dir().join("created.txt").exists(), "a kept world wrote to the host");
}

/// Discards a kept world at the end of the test (best effort: `cloche discard`,
/// then the state dir's own clean-up detaches whatever is still mounted).
struct KeptWorld<'a> {
    fx: &'a Fixture,
    id: String,
}

impl Drop for KeptWorld<'_> {
    fn drop(&mut self) {
        let mut cmd = self.fx.command();
        cmd.args(["discard", &self.id]).stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null());
        let _ = cmd.status();
    }
}

#[test]
fn doctor_exits_zero_on_this_machine() {
    let fx = Fixture::new();
    let o = fx.cloche(&["doctor"]);
    o.expect_code(0);
    assert!(!(o.stdout.is_empty() && o.stderr.is_empty()), "doctor must say what the machine offers\n{}", o.describe());
    // Networking is checked for real (netlink, a veth pair in a namespace
    // of its own, the pool against the host's routes, the resolver).
    let out = String::from_utf8_lossy(&o.stdout);
    for line in ["ok   nftables", "ok   veth", "ok   address pool", "ok   resolver", "ok   forwarding"] {
        assert!(out.contains(line), "{line:?} missing\n{out}");
    }
    fx.finish();
}

#[test]
fn a_broken_policy_refuses_to_start() {
    let fx = Fixture::new();
    let default_policy = include_str!("../policies/default.toml");
    let builtin = "\nprofile = \"builtin:default\"\n";
    assert!(default_policy.contains(builtin), "policies/default.toml no longer sets {builtin:?}");
    assert!(default_policy.contains("\n[limits]\n"), "policies/default.toml has no [limits] table");
    let dir = fx.out.path();
    fs::create_dir(dir.join("seccomp")).unwrap();
    let with_profile = |name: &str| default_policy.replace(builtin, &format!("\nprofile = \"seccomp/{name}\"\n"));

    // (a) an unknown key: a typo must never be ignored.
    fs::write(dir.join("unknown-key.toml"), default_policy.replace("\n[limits]\n", "\n[limits]\nmemroy = \"1GiB\"\n"))
        .unwrap();
    // (b) a profile that is not JSON.
    fs::write(dir.join("seccomp/bad.json"), "{ \"defaultAction\": \"SCMP_ACT_ERRNO\", \"syscalls\": [\n").unwrap();
    fs::write(dir.join("bad-json.toml"), with_profile("bad.json")).unwrap();
    // (c) the default profile, valid JSON, plus a syscall no kernel has.
    let unknown_syscall = "cloche_no_such_syscall";
    let mut profile: Value = serde_json::from_str(include_str!("../policies/seccomp/default.json")).unwrap();
    profile["syscalls"][0]["names"].as_array_mut().expect("syscalls[0].names").push(unknown_syscall.into());
    fs::write(dir.join("seccomp/unknown-syscall.json"), serde_json::to_vec_pretty(&profile).unwrap()).unwrap();
    fs::write(dir.join("unknown-syscall.toml"), with_profile("unknown-syscall.json")).unwrap();

    let cases: [(&str, &[&str]); 3] = [
        ("unknown-key.toml", &["memroy"]),
        ("bad-json.toml", &["bad.json"]),
        ("unknown-syscall.toml", &["unknown-syscall.json", unknown_syscall]),
    ];
    let mut wrong = Vec::new();
    for (file, names) in cases {
        let policy = dir.join(file);
        let o = fx.cloche(&[
            OsStr::new("run"),
            OsStr::new("--policy"),
            policy.as_os_str(),
            OsStr::new("--"),
            OsStr::new("true"),
        ]);
        let err = String::from_utf8_lossy(&o.stderr);
        let lines: Vec<&str> = err.lines().collect();
        if o.code != Some(125) || !o.stdout.is_empty() || lines.len() != 1 || lines[0].trim().is_empty() {
            wrong.push(format!(
                "{file}: want exit 125, empty stdout, exactly one line on stderr; got {} line(s):\n{}",
                lines.len(),
                o.describe()
            ));
        } else if let Some(missing) = names.iter().find(|n| !lines[0].contains(**n)) {
            wrong.push(format!("{file}: the error does not name {missing:?}:\n{}", o.describe()));
        }
        if !fx.worlds().is_empty() {
            wrong.push(format!("{file}: a refused run left world state {:?}: {}", fx.worlds(), o.describe()));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n\n"));
    fx.finish();
}

/// `cloche run` without `--policy` takes the policy bound to its directory
/// (`cloche policy set --project`), as batches do; `--policy` still wins,
/// and another directory keeps the built-in policy.
#[test]
fn run_takes_the_policy_bound_to_its_directory() {
    let fx = Fixture::new();
    let file = fx.out.path().join("bound.toml");
    fs::write(&file, policy_text(300, "").replace("hostname = \"cloche\"", "hostname = \"bound-policy\"")).unwrap();
    let project = fx.dir().to_str().unwrap().to_string();
    fx.cloche(&["policy", "set", "--project", &project, file.to_str().unwrap()]).expect_code(0);
    let host = |o: &Outcome| String::from_utf8_lossy(&o.stdout).trim().to_string();
    let o = fx.run::<&str, _>(&[], &["hostname"]);
    assert_eq!(host(o.expect_code(0)), "bound-policy", "{}", o.describe());
    // The first run kept the version's head beside it; the next reads it
    // (crates/policy/src/run_cache.rs).
    let versions = fx.state.path().join("policies/versions");
    let heads = |dir: &std::path::Path, prefix: &str| {
        let names = fs::read_dir(dir).map(|d| d.flatten().map(|e| e.path()).collect::<Vec<_>>()).unwrap_or_default();
        let files = names.iter().flat_map(|p| {
            if p.is_dir() {
                fs::read_dir(p).unwrap().flatten().map(|e| e.path()).collect()
            } else {
                vec![p.clone()]
            }
        });
        files.filter(|p| p.file_name().unwrap().to_string_lossy().starts_with(prefix)).count()
    };
    assert_eq!(heads(&versions, "head"), 1);
    // A subdirectory of the project inherits the binding.
    let sub = fx.mkdir("sub");
    let o = fx.run(&["--cwd", sub.to_str().unwrap()], &["hostname"]);
    assert_eq!(host(o.expect_code(0)), "bound-policy", "{}", o.describe());
    // --policy wins over the binding; its head is kept in the state's cache
    // by the first run and read by the second.
    let builtin = concat!(env!("CARGO_MANIFEST_DIR"), "/../../policies/default.toml");
    for _ in 0..2 {
        let o = fx.run(&["--policy", builtin], &["hostname"]);
        assert_eq!(host(o.expect_code(0)), "cloche", "{}", o.describe());
    }
    assert_eq!(heads(&fx.state.path().join("cache"), "policy-"), 1);
    // Elsewhere, the built-in policy.
    let o = fx.run(&["--cwd", fx.out.path().to_str().unwrap()], &["hostname"]);
    assert_eq!(host(o.expect_code(0)), "cloche", "{}", o.describe());
    fx.finish();
}

/// `--report` at something that is not a regular file: a link to stdout, a
/// character device, a link to a report file, a link to nothing. The
/// report goes through the link or into the device, which stay what they
/// are; a link to nothing is refused before the world starts. (Before,
/// the report was renamed over the path: `--report /dev/stdout` put a
/// regular file in place of the host's `/dev/stdout`.)
#[test]
fn a_report_into_a_device_or_through_a_link_leaves_them_in_place() {
    use std::os::unix::fs::FileTypeExt;
    let fx = Fixture::new();
    let dir = fx.mkdir("reports");
    let out = dir.join("stdout");
    std::os::unix::fs::symlink("/proc/self/fd/1", &out).unwrap();
    let o = fx.cloche(&["run".as_ref(), "--report".as_ref(), out.as_os_str(), "--".as_ref(), "true".as_ref()]);
    o.expect_code(0);
    let printed: serde_json::Value =
        serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", o.describe()));
    assert_eq!(printed["exit_code"], 0, "{}", o.describe());
    assert!(std::fs::symlink_metadata(&out).unwrap().file_type().is_symlink(), "the link to stdout was replaced");

    let null = dir.join("null");
    let dev = nix::sys::stat::makedev(1, 3);
    nix::sys::stat::mknod(&null, nix::sys::stat::SFlag::S_IFCHR, nix::sys::stat::Mode::from_bits_truncate(0o666), dev)
        .unwrap();
    fx.cloche(&["run".as_ref(), "--report".as_ref(), null.as_os_str(), "--".as_ref(), "true".as_ref()]).expect_code(0);
    assert!(std::fs::symlink_metadata(&null).unwrap().file_type().is_char_device(), "the device was replaced");

    let real = dir.join("real.json");
    std::fs::write(&real, "old").unwrap();
    let link = dir.join("link.json");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    fx.cloche(&["run".as_ref(), "--report".as_ref(), link.as_os_str(), "--".as_ref(), "true".as_ref()]).expect_code(0);
    assert!(std::fs::symlink_metadata(&link).unwrap().file_type().is_symlink(), "the link was replaced");
    let r: serde_json::Value = serde_json::from_slice(&std::fs::read(&real).unwrap()).unwrap();
    assert_eq!(r["exit_code"], 0);

    let dangling = dir.join("nowhere.json");
    std::os::unix::fs::symlink(dir.join("missing/r.json"), &dangling).unwrap();
    let o = fx.cloche(&["run".as_ref(), "--report".as_ref(), dangling.as_os_str(), "--".as_ref(), "true".as_ref()]);
    o.expect_code(125);
    assert!(String::from_utf8_lossy(&o.stderr).contains("cannot write to it"), "{}", o.describe());
    fx.finish();
}

/// `--report` through a link to stdout (as `/dev/stdout` is) with stdout a
/// file: the report comes after the command's output in that file (the
/// descriptor's file, written through, never replaced).
#[test]
fn a_report_to_stdout_follows_the_output_in_a_redirected_file() {
    let fx = Fixture::new();
    let file = fx.dir().join("out.txt");
    let link = fx.dir().join("stdout");
    std::os::unix::fs::symlink("/proc/self/fd/1", &link).unwrap();
    let mut cmd = fx.command();
    cmd.arg("run").arg("--report").arg(&link).args(["--", "echo", "hello"]);
    cmd.stdout(std::fs::File::create(&file).unwrap());
    let status = cmd.status().unwrap();
    assert!(status.success(), "{status}");
    let text = std::fs::read_to_string(&file).unwrap();
    let (first, rest) = text.split_once('\n').unwrap_or_default();
    assert_eq!(first, "hello", "{text}");
    let r: serde_json::Value = serde_json::from_str(rest).unwrap_or_else(|e| panic!("{e}: {text}"));
    assert_eq!(r["exit_code"], 0, "{text}");
    assert!(std::fs::symlink_metadata(&link).unwrap().file_type().is_symlink());
    fx.finish();
}
