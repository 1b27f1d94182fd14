//! A world's home directory and the toolchains installed under homes
//! (issue 11, items 1 and 2), end to end: the tools an agent runs first
//! (`git config --global`, `pip install --user`, `npm config set`, `mkdir
//! ~/.cache/x`) write the world's own home, whose writes are in the fs_diff
//! and never reach the host; a toolchain the world's PATH names runs from a
//! home, read-only, its credential files masked; a PATH entry hidden anyway
//! is said once on stderr with the `--expose` that shows it.
//!
//! Each test makes its own home under /home (every directory there is a
//! home), with the files it needs, so it runs the same on a fresh machine.
//! The programs are the machine's own (git, pip, npm from `.ci/setup`; the
//! cargo that builds these tests).

use crate::common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use serde_json::Value;

/// A home of the test's own, `/home/cloche-test-<tag>`, removed on drop.
struct Home {
    dir: Scratch,
}

impl Home {
    fn new(fx: &Fixture) -> Home {
        let path = PathBuf::from(format!("/home/cloche-test-{}", fx.tag));
        fs::create_dir_all(&path).unwrap();
        Home { dir: Scratch::adopt(path) }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn at(&self, rel: &str) -> PathBuf {
        self.path().join(rel)
    }

    /// Writes `rel` (parents made) with `mode`.
    fn write(&self, rel: &str, content: &[u8], mode: u32) -> PathBuf {
        let p = self.at(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(&p, content).unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(mode)).unwrap();
        p
    }

    /// Everything about the home and what is in it (the home's own
    /// directory included), to compare before and after.
    fn snapshot(&self) -> (Option<Node>, std::collections::BTreeMap<Vec<u8>, Node>) {
        (node_of(self.path()), tree_snapshot(self.path()))
    }

    fn assert_unchanged(&self, before: &(Option<Node>, std::collections::BTreeMap<Vec<u8>, Node>)) {
        let after = self.snapshot();
        assert_eq!(before.0, after.0, "the home directory {} itself changed on the host", self.path().display());
        assert_same_tree(self.path(), &before.1, &after.1);
    }
}

/// `cloche run` with `HOME` (and `PATH`, when given) set for cloche and so
/// for the world.
fn run_in(fx: &Fixture, home: &Home, path: Option<&str>, opts: &[&str], script: &str) -> Outcome {
    let mut cmd = fx.command();
    cmd.env("HOME", home.path());
    if let Some(p) = path {
        cmd.env("PATH", p);
    }
    fx.run_with(cmd, opts, &["/bin/sh", "-c", script])
}

fn stdout(o: &Outcome) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Outcome) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Paths of an fs_diff list below `under`.
fn changed_under(report: &Value, list: &str, under: &Path) -> Vec<PathBuf> {
    diff_list(report, list)
        .iter()
        .map(|e| PathBuf::from(String::from_utf8_lossy(&entry_path(e)).into_owned()))
        .filter(|p| p.starts_with(under))
        .collect()
}

/// Whether `program` is found in the test's own PATH.
fn on_path(program: &str) -> bool {
    Command::new("sh").args(["-c", &format!("command -v {program}")]).output().is_ok_and(|o| o.status.success())
}

#[test]
fn git_npm_and_mkdir_write_the_worlds_home_and_the_host_home_is_unchanged() {
    assert!(on_path("git") && on_path("npm"), "git and npm are needed (bash .ci/setup installs them)");
    let fx = Fixture::new();
    let home = Home::new(&fx);
    let secret = format!("secret-{}", fx.tag);
    home.write(".gitconfig", format!("[user]\n\tname = host-{secret}\n").as_bytes(), 0o644);
    home.write(".npmrc", format!("//registry.example/:_authToken={secret}\n").as_bytes(), 0o600);
    home.write("notes.txt", secret.as_bytes(), 0o644);
    home.write(".ssh/id_test", secret.as_bytes(), 0o600);
    let before = home.snapshot();

    // The world's home starts empty and is the world's to write: none of
    // the host's files is read, each write lands in the world. A whiteout
    // (a char device 0:0, by mknod or by renameat2(RENAME_WHITEOUT)) would
    // record the deletion of a host file the world cannot see: refused.
    let script = r#"
        set -e
        git config --global user.name "world-$TAG"
        echo "git: $(git config --global --list | tr '\n' ' ')"
        mkdir -p ~/.cache/x && echo made > ~/.cache/x/f
        npm config set fund false
        echo "npmrc: $(cat ~/.npmrc | tr '\n' ' ')"
        echo "listing: $(ls -A ~ | sort | tr '\n' ' ')"
        echo "notes: $(cat ~/notes.txt 2>/dev/null || echo none)"
        if mknod ~/notes.txt c 0 0 2>/dev/null; then echo "mknod: made"; else echo "mknod: refused"; fi
        echo x > ~/moved
        python3 -c 'import ctypes, os; l = ctypes.CDLL(None, use_errno=True); r = l.syscall(316, -100, b"moved", -100, b".ssh", 4); print("whiteout:", "made" if r == 0 else os.strerror(ctypes.get_errno()))'
    "#;
    let o = run_in(&fx, &home, None, &["--env", &format!("TAG={}", fx.tag)], &format!("cd ~ && {{ {script} }}"));
    o.expect_code(0);
    let out = stdout(&o);
    assert!(out.contains(&format!("git: user.name=world-{} ", fx.tag)), "git config --global in the world\n{out}");
    assert!(out.contains("npmrc: fund=false "), "npm config set in the world\n{out}");
    assert!(!out.contains(&secret), "a host file of the home was read in the world\n{out}");
    assert!(out.contains("listing: .cache .gitconfig .npm"), "the world's home holds only its own writes\n{out}");
    assert!(!out.contains("notes.txt") && !out.contains(".ssh"), "host names of the home shown\n{out}");
    assert!(out.contains("notes: none"), "{out}");
    assert!(out.contains("mknod: refused"), "a whiteout was made in the home\n{out}");
    assert!(out.contains("whiteout: Operation not permitted"), "RENAME_WHITEOUT in the home\n{out}");

    // The fs_diff lists the writes, and no deletion of a host file.
    let r = o.report();
    let added = changed_under(&r, "added", home.path());
    let modified = changed_under(&r, "modified", home.path());
    for want in [".cache", ".cache/x", ".cache/x/f", "moved"] {
        assert!(added.contains(&home.at(want)), "{want} not added in the fs_diff: {added:?}");
    }
    // The host has its own .gitconfig and .npmrc: the world's replace them.
    for want in [".gitconfig", ".npmrc"] {
        assert!(modified.contains(&home.at(want)), "{want} not modified in the fs_diff: {modified:?}");
    }
    assert!(changed_under(&r, "deleted", home.path()).is_empty(), "{:#}", r["fs_diff"]);
    home.assert_unchanged(&before);
    fx.finish();
}

/// A wheel of one module and a console script, built here (no index, no
/// network): `name-1.0-py3-none-any.whl` in `dir`.
fn build_wheel(dir: &Path, name: &str, marker: &str) -> PathBuf {
    let script = r#"
import sys, zipfile
out, name, marker = sys.argv[1], sys.argv[2], sys.argv[3]
info = f"{name}-1.0.dist-info"
files = {
    f"{name}/__init__.py": f"X = {marker!r}\ndef main():\n    print(X)\n",
    f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n",
    f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: cloche-test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    f"{info}/entry_points.txt": f"[console_scripts]\n{name}-hello = {name}:main\n",
}
with zipfile.ZipFile(out, "w") as z:
    for k, v in files.items():
        z.writestr(k, v)
    z.writestr(f"{info}/RECORD", "".join(f"{k},,\n" for k in files) + f"{info}/RECORD,,\n")
"#;
    let wheel = dir.join(format!("{name}-1.0-py3-none-any.whl"));
    let o = Command::new("python3").arg("-c").arg(script).arg(&wheel).args([name, marker]).output().expect("python3");
    assert!(o.status.success(), "building the wheel: {}", String::from_utf8_lossy(&o.stderr));
    wheel
}

#[test]
fn pip_install_user_installs_into_the_worlds_home() {
    assert!(on_path("pip") && on_path("python3"), "pip and python3 are needed (bash .ci/setup installs them)");
    let fx = Fixture::new();
    let home = Home::new(&fx);
    // ~/.local/bin exists and is on PATH: a toolchain, shown, and pip's
    // programs go there (copy-on-write: `fs.toolchain_writable`).
    home.write(".local/bin/host-tool", b"#!/bin/sh\necho host-tool\n", 0o755);
    let before = home.snapshot();
    let name = format!("clochetest{}", fx.tag.replace(|c: char| !c.is_ascii_alphanumeric(), ""));
    let marker = format!("installed-{}", fx.tag);
    let wheel = build_wheel(fx.dir(), &name, &marker);

    // `pip` as PATH finds it (through pyenv's shims where the machine has
    // them, whose rehash after an install writes ~/.pyenv/shims); Debian's
    // pip wants PIP_BREAK_SYSTEM_PACKAGES for --user.
    let script = format!(
        "set -e; pip install --user --no-index --no-deps -q {wheel}; \
         {name}-hello; host-tool; python3 -c 'import {name}; print({name}.__file__)'",
        wheel = wheel.display()
    );
    let env = ["--env", "PIP_BREAK_SYSTEM_PACKAGES=1", "--env", "PIP_DISABLE_PIP_VERSION_CHECK=1"];
    let path = format!("{}/.local/bin:{}", home.path().display(), std::env::var("PATH").unwrap());
    let o = run_in(&fx, &home, Some(&path), &env, &script);
    o.expect_code(0);
    let out = stdout(&o);
    assert!(out.contains(&marker), "the console script ran\n{}", o.describe());
    assert!(out.contains("host-tool\n"), "the host's ~/.local/bin is shown\n{out}");
    assert!(out.contains(&format!("{}/.local/lib/python", home.path().display())), "imported from ~/.local\n{out}");

    let added = changed_under(&o.report(), "added", home.path());
    let module = added.iter().find(|p| p.ends_with(format!("site-packages/{name}/__init__.py")));
    assert!(module.is_some(), "the module is not in the fs_diff: {added:?}");
    assert!(added.contains(&home.at(&format!(".local/bin/{name}-hello"))), "{added:?}");
    home.assert_unchanged(&before);
    fx.finish();
}

/// The cargo that builds these tests, copied into a fake home's
/// `~/.cargo/bin` beside credentials; `~/.rustup` comes along with it,
/// `~/.pyenv` (not on PATH) does not; `~/bin` is on PATH but not a
/// toolchain: hidden, and said once.
#[test]
fn a_home_toolchain_on_path_runs_read_only_with_its_credentials_masked() {
    let fx = Fixture::new();
    let home = Home::new(&fx);
    let secret = format!("secret-{}", fx.tag);
    let cargo = home.at(".cargo/bin/cargo");
    fs::create_dir_all(cargo.parent().unwrap()).unwrap();
    fs::copy(env!("CARGO"), &cargo).unwrap();
    home.write(".cargo/credentials.toml", format!("[registry]\ntoken = \"{secret}\"\n").as_bytes(), 0o600);
    home.write(".cargo/credentials", format!("[registry]\ntoken = \"{secret}\"\n").as_bytes(), 0o600);
    home.write(".cargo/config.toml", b"[term]\nverbose = false\n", 0o644);
    home.write(".rustup/settings.toml", b"version = \"12\"\n", 0o644);
    home.write(".pyenv/shims/python", b"#!/bin/sh\necho pyenv\n", 0o755);
    home.write("bin/hello", b"#!/bin/sh\necho hello-from-bin\n", 0o755);
    // ~/.nvm is a symlink to a directory the world shows (here inside the
    // project): the world's home gets the link.
    let nvm = fx.write("nvm-real/bin/nvm-hello", b"#!/bin/sh\necho hello-from-nvm\n", 0o755);
    std::os::unix::fs::symlink(nvm.parent().unwrap().parent().unwrap(), home.at(".nvm")).unwrap();
    home.write(".gitconfig", secret.as_bytes(), 0o644);
    let before = home.snapshot();
    let want = Command::new(&cargo).arg("--version").output().unwrap();
    assert!(want.status.success());
    let want = String::from_utf8_lossy(&want.stdout).trim().to_string();

    let h = home.path().display().to_string();
    let path = format!("{h}/.cargo/bin:{h}/bin:{h}/.nvm/bin:{h}/bin:/usr/local/bin:/usr/bin:/bin");
    let script = r#"
        echo "version: $(cargo --version)"
        echo "which: $(command -v cargo)"
        echo "credentials.toml: [$(cat ~/.cargo/credentials.toml)]"
        echo "credentials: [$(cat ~/.cargo/credentials)]"
        echo "config: $(cat ~/.cargo/config.toml | head -1)"
        echo "rustup: $(ls -A ~/.rustup)"
        echo home-file > ~/own
        echo "listing: $(ls -A ~ | sort | tr '\n' ' ')"
        touch ~/.cargo/bin/x 2>/dev/null && echo "bin: written" || echo "bin: read-only"
        echo x > ~/.cargo/credentials.toml 2>/dev/null; echo "after: [$(cat ~/.cargo/credentials.toml)]"
        hello 2>/dev/null || echo "hello: not found"
        nvm-hello
    "#;
    let o = run_in(&fx, &home, Some(&path), &[], script);
    o.expect_code(0);
    let out = stdout(&o);
    assert!(
        out.contains(&format!("version: {want}\n")),
        "cargo --version through the home toolchain\n{}",
        o.describe()
    );
    assert!(out.contains(&format!("which: {h}/.cargo/bin/cargo\n")), "{out}");
    assert!(!out.contains(&secret), "a credential (or a host file of the home) was read in the world\n{out}");
    assert!(out.contains("credentials.toml: []") && out.contains("credentials: []"), "{out}");
    assert!(out.contains("config: [term]"), "the toolchain's own files are shown\n{out}");
    assert!(out.contains("rustup: settings.toml"), "~/.rustup comes along with ~/.cargo\n{out}");
    assert!(out.contains("listing: .cargo .nvm .rustup own "), "only the toolchains and the world's own files\n{out}");
    assert!(out.contains("hello-from-nvm\n"), "a toolchain through a symlink of the home\n{out}");
    assert!(out.contains("bin: read-only"), "the toolchain is writable\n{out}");
    assert!(out.contains("after: []"), "{out}");
    assert!(out.contains("hello: not found"), "~/bin is not a toolchain\n{out}");

    // The hint: once, naming ~/bin (twice on PATH) and the --expose for it.
    let note = format!("cloche: note: PATH entry {h}/bin is hidden in the world; --expose {h}/bin shows it");
    let notes: Vec<&str> = o.stderr.split(|b| *b == b'\n').filter_map(|l| std::str::from_utf8(l).ok()).collect();
    let n = notes.iter().filter(|l| l.starts_with("cloche: note: PATH")).count();
    assert!(notes.contains(&note.as_str()) && n == 1, "want once: {note}\n{}", o.describe());

    // What cloche itself copies up for the plan (the home, the toolchains'
    // mount points, the ~/.nvm link) is no change of the world's: a world
    // that writes nothing has nothing under the home in any list, touched
    // included.
    let o = run_in(&fx, &home, Some(&path), &[], "true");
    o.expect_code(0);
    let r = o.report();
    for list in ["added", "modified", "deleted", "touched"] {
        assert_eq!(changed_under(&r, list, home.path()), Vec::<PathBuf>::new(), "{list}: {:#}", r["fs_diff"]);
    }

    // What it says works: ~/bin is shown (and then no note).
    let o = run_in(&fx, &home, Some(&path), &["--expose", &format!("{h}/bin")], "hello");
    o.expect_code(0);
    assert_eq!(stdout(&o), "hello-from-bin\n", "{}", o.describe());
    assert!(!stderr(&o).contains("cloche: note: PATH"), "{}", o.describe());

    // Nothing of it reached the host.
    home.assert_unchanged(&before);
    fx.finish();
}

/// The machine's own toolchains, where a home holds them (rustup's cargo
/// and pyenv's python on a developer machine): what PATH finds on the host
/// is what the world runs. Runs where the test's PATH resolves cargo (or
/// python3) inside a home; elsewhere only that is checked.
#[test]
fn the_machines_home_toolchains_run_as_on_the_host() {
    let fx = Fixture::new();
    let homes: Vec<PathBuf> = cloche_world::spec::home_dirs();
    let mut ran = 0;
    for program in ["cargo", "rustc", "python3"] {
        let host = Command::new("sh").args(["-c", &format!("command -v {program}")]).output().unwrap();
        let found = PathBuf::from(String::from_utf8_lossy(&host.stdout).trim());
        if !host.status.success() || !homes.iter().any(|h| found.starts_with(h)) {
            continue;
        }
        let want = Command::new(program).arg("--version").output().unwrap();
        let o = fx.run(&[] as &[&str], &[program, "--version"]);
        o.expect_code(0);
        assert_eq!(o.stdout, want.stdout, "{program} --version differs in the world\n{}", o.describe());
        ran += 1;
    }
    eprintln!("home toolchains compared with the host: {ran}");
    fx.finish();
}

/// What a world writes in its home is reviewed like any other path: outside
/// the commit roots by default (flagged, never committed), committed once
/// the policy's `[commit] roots` hold the home.
#[test]
fn home_writes_are_committed_only_inside_the_commit_roots() {
    let fx = Fixture::new();
    let home = Home::new(&fx);
    home.write(".gitconfig", b"[user]\n\tname = host\n", 0o644);
    let token = format!("token-{}", fx.tag);
    home.write(".npmrc", format!("//registry.example/:_authToken={token}\n").as_bytes(), 0o600);
    let before = home.snapshot();
    let script = "mkdir -p ~/.cache/x && echo c > ~/.cache/x/f && echo w > ~/.gitconfig && echo fund=false > ~/.npmrc";
    let o = run_in(&fx, &home, None, &["--keep"], script);
    o.expect_code(0);
    let id = fx.worlds().pop().expect("a kept world");

    // The review shows what the world wrote over a secret of the host's
    // home, never what the host's holds.
    for args in [vec!["diff", &id], vec!["diff", "--stat", &id], vec!["diff", "--json", &id]] {
        let d = fx.cloche(&args);
        d.expect_code(0);
        let out = String::from_utf8_lossy(&d.stdout);
        assert!(!out.contains(&token), "{args:?} shows the host's ~/.npmrc\n{}", d.describe());
    }
    let full = stdout(&fx.cloche(&["diff", &id]));
    assert!(full.contains("+fund=false") && full.contains("the host's version is a secret: not shown"), "{full}");
    assert!(full.contains("-\tname = host"), "the host's ~/.gitconfig (no secret) is diffed as usual\n{full}");

    let d = fx.cloche(&["diff", &id, "--json"]);
    d.expect_code(0);
    let d: Value = serde_json::from_slice(&d.stdout).unwrap();
    for rel in [".cache/x/f", ".gitconfig", ".npmrc"] {
        let p = home.at(rel);
        let flagged = d["flags"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["path"].as_str() == p.to_str() && f["why"] == "outside the commit roots");
        assert!(flagged, "{rel} is not flagged outside the commit roots: {d:#}");
    }
    let c = fx.cloche(&["commit", "--json", &id]);
    c.expect_code(0);
    let v: Value = serde_json::from_slice(&c.stdout).unwrap();
    assert_eq!(v["applied"].as_array().map(Vec::len), Some(0), "{v:#}");
    home.assert_unchanged(&before);

    // The home among the roots: the same world's writes are committed.
    let policy = fx.out.path().join("roots.toml");
    let text = policy_text(300, "").replace("roots = []", &format!("roots = [{:?}]", home.path()));
    fs::write(&policy, text).unwrap();
    fx.cloche(&["policy", "set", policy.to_str().unwrap()]).expect_code(0);
    let c = fx.cloche(&["commit", "--json", &id]);
    c.expect_code(0);
    assert_eq!(fs::read_to_string(home.at(".cache/x/f")).unwrap(), "c\n", "{}", c.describe());
    assert_eq!(fs::read_to_string(home.at(".gitconfig")).unwrap(), "w\n");
    fx.cloche(&["discard", &id]).expect_code(0);
    fx.finish();
}

/// A home that is a host mount of its own (as a separate `/home` is): the
/// world's home is that mount's own upper layer, writable, its writes in
/// the fs_diff; read-only on the host, it is an empty read-only directory.
#[test]
fn a_home_on_a_mount_of_its_own_is_writable_and_read_only_when_the_mount_is() {
    let fx = Fixture::new();
    let home = Home::new(&fx);
    let mount = Mounted::tmpfs(home.path(), "4m", &fx.tag);
    let secret = format!("secret-{}", fx.tag);
    home.write("notes.txt", secret.as_bytes(), 0o644);
    let before = home.snapshot();
    let script = "echo w > ~/.gitconfig && mkdir -p ~/.cache/x && echo \"listing: $(ls -A ~ | sort | tr '\\n' ' ')\"; \
                  cat ~/notes.txt 2>/dev/null; true";
    let o = run_in(&fx, &home, None, &[], script);
    o.expect_code(0);
    let out = stdout(&o);
    assert!(out.contains("listing: .cache .gitconfig \n"), "{}", o.describe());
    assert!(!out.contains(&secret), "{out}");
    let r = o.report();
    assert!(changed_under(&r, "added", home.path()).contains(&home.at(".cache/x")), "{:#}", r["fs_diff"]);
    assert!(changed_under(&r, "added", home.path()).contains(&home.at(".gitconfig")), "{:#}", r["fs_diff"]);
    home.assert_unchanged(&before);

    mount.remount_ro();
    let o = run_in(&fx, &home, None, &[], "touch ~/x 2>/dev/null && echo written; ls -A ~; cat ~/notes.txt; true");
    o.expect_code(0);
    assert_eq!(stdout(&o), "", "a read-only home mount: empty and read-only in the world\n{}", o.describe());
    drop(mount);
    fx.finish();
}
