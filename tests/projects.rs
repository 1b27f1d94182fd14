//! Projects the operator allowed, end to end with real worlds (root): a
//! batch's project and `cloche run`'s cwd are never `/`, a home itself, a
//! masked path or inside one, nor cloche's state directory or a parent of
//! it; masks below an exposed project stay in force; the state directory is
//! masked in every world; a project swapped for a symlink after submit is
//! refused at run.

use crate::common;

use common::*;
use serde_json::{json, Value};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The default policy's `fs.home_secrets`.
const SECRETS: [&str; 8] =
    [".ssh", ".aws", ".gnupg", ".netrc", ".config/gh", ".docker/config.json", ".kube/config", ".git-credentials"];

/// A home of the test's own (every directory in /home is a home), each
/// default home secret in it as a directory holding a secret file, a
/// project inside it, and a directory of the test's own in `fs.mask`.
struct Setup {
    home: Scratch,
    masked: Scratch,
    /// The default policy plus the masked directory in `fs.mask`.
    policy: PathBuf,
}

impl Setup {
    fn new(fx: &Fixture) -> Setup {
        let home = Scratch::adopt(PathBuf::from(format!("/home/cloche-test-{}", fx.tag)));
        for s in SECRETS {
            let d = home.path().join(s).join("sub");
            fs::create_dir_all(&d).unwrap();
            fs::write(home.path().join(s).join("secret"), secret(fx, s)).unwrap();
        }
        fs::create_dir_all(home.path().join("app")).unwrap();
        fs::write(home.path().join("notes.txt"), secret(fx, "notes")).unwrap();
        let masked = Scratch::new_in("/tmp", &format!("cloche-test-masked-{}-", fx.tag));
        fs::create_dir_all(masked.path().join("sub")).unwrap();
        fs::write(masked.path().join("secret"), secret(fx, "fs.mask")).unwrap();
        let text = policy_text(300, "");
        for s in SECRETS {
            assert!(text.contains(&format!("\"{s}\"")), "the default policy no longer lists {s}");
        }
        let text = text.replacen("mask = [\n", &format!("mask = [\n  \"{}\",\n", masked.path().display()), 1);
        let policy = fx.out.path().join("masked.toml");
        fs::write(&policy, text).unwrap();
        Setup { home, masked, policy }
    }

    /// Every project that must be refused, with what its one line must say.
    fn refused(&self, fx: &Fixture) -> Vec<(PathBuf, String)> {
        let home = self.home.path();
        let m = self.masked.path();
        let state = fx.state.path();
        let mut v = vec![
            (m.to_path_buf(), format!("is the masked path {} (fs.mask)", m.display())),
            (m.join("sub"), format!("lies inside the masked path {} (fs.mask)", m.display())),
            (state.to_path_buf(), format!("is the masked path {} (cloche's state directory)", state.display())),
            (
                state.join("worlds"),
                format!("lies inside the masked path {} (cloche's state directory)", state.display()),
            ),
            (state.parent().unwrap().to_path_buf(), format!("contains cloche's state directory {}", state.display())),
            (home.to_path_buf(), "is a home directory".into()),
            (PathBuf::from("/root"), "is a home directory".into()),
            (PathBuf::from("/"), "is the root directory".into()),
        ];
        for s in SECRETS {
            let at = home.join(s);
            v.push((at.join("sub"), format!("lies inside the masked path {} (fs.home_secrets {s})", at.display())));
        }
        v
    }
}

fn secret(fx: &Fixture, what: &str) -> String {
    format!("secret-{what}-{}", fx.tag)
}

/// stderr must be exactly one line, starting `cloche: {what} {path} ` and
/// containing `want`.
fn one_line(o: &Outcome, what: &str, path: &Path, want: &str) {
    let err = String::from_utf8_lossy(&o.stderr);
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 1, "one line expected\n{}", o.describe());
    assert!(lines[0].starts_with(&format!("cloche: {what} {} ", path.display())), "{}", o.describe());
    assert!(lines[0].contains(want), "{want:?} missing\n{}", o.describe());
}

fn submit_file(fx: &Fixture, batch: &Value) -> Outcome {
    let path = fx.out.path().join(format!("batch-{}.json", unique_tag()));
    fs::write(&path, serde_json::to_vec(batch).unwrap()).unwrap();
    fx.cloche(&["batch", "submit", path.to_str().unwrap()])
}

/// Submits, approves and runs one entry in `project`; returns the run.
fn run_batch(fx: &Fixture, project: &Path, command: &str) -> Outcome {
    let batch = json!({"agent": "a1", "project": project.to_str().unwrap(), "entries": [{"command": command}]});
    let id = submit(fx, &batch, None);
    fx.cloche(&["batch", "approve", &id]).expect_code(0);
    fx.cloche(&["batch", "run", &id])
}

#[test]
fn a_project_under_any_mask_is_refused_at_submit_naming_the_mask_and_nothing_is_recorded() {
    let fx = Fixture::new();
    let setup = Setup::new(&fx);
    fx.cloche(&["policy", "set", setup.policy.to_str().unwrap()]).expect_code(0);
    for (project, want) in setup.refused(&fx) {
        let o = submit_file(&fx, &json!({"project": project, "entries": [{"command": "cat secret"}]}));
        assert_eq!(o.code, Some(125), "project {} was accepted\n{}", project.display(), o.describe());
        if project == Path::new("/") {
            // Refused by the batch file's own rules, before any policy.
            assert!(
                String::from_utf8_lossy(&o.stderr).contains("project: / is the root directory"),
                "{}",
                o.describe()
            );
        } else {
            one_line(&o, "project", &project, &want);
        }
    }
    let o = fx.cloche(&["batch", "list", "--json"]);
    o.expect_code(0);
    assert_eq!(serde_json::from_slice::<Value>(&o.stdout).unwrap()["batches"], json!([]), "{}", o.describe());
    assert!(audit_events(&fx, "submitted").is_empty());
    fx.finish();
}

#[test]
fn cloche_run_refuses_such_a_cwd_in_one_line() {
    let fx = Fixture::new();
    let setup = Setup::new(&fx);
    for (cwd, want) in setup.refused(&fx) {
        let mut cmd = fx.command();
        cmd.current_dir(&cwd);
        let o = run_cmd(
            cmd.args(["run", "--policy", setup.policy.to_str().unwrap(), "--", "sh", "-c", "echo ran; cat secret"]),
            DEADLINE,
        );
        assert_eq!(o.code, Some(125), "cwd {} was exposed\n{}", cwd.display(), o.describe());
        assert!(o.stdout.is_empty(), "a world ran\n{}", o.describe());
        one_line(&o, "cwd", &cwd, &want);
    }
    fx.finish();
}

#[test]
fn a_project_inside_a_home_works_and_the_home_secrets_stay_masked() {
    let fx = Fixture::new();
    let setup = Setup::new(&fx);
    let home = setup.home.path();
    let app = home.join("app");
    fs::write(app.join(".env"), "project-env\n").unwrap();
    fs::create_dir_all(app.join(".ssh")).unwrap();
    fs::write(app.join(".ssh/id_test"), secret(&fx, "app-ssh")).unwrap();
    // Entries run scripts of the project (review): what they read is the
    // masks' business, not the classifier's.
    let script = "cat .env; for f in .ssh/id_test ../.ssh/secret ../.aws/secret ../notes.txt; do cat $f; done; true";
    fs::write(app.join("check.sh"), script).unwrap();
    let secrets = |o: &Outcome, notes_visible: bool| {
        let out = String::from_utf8_lossy(&o.stdout);
        assert!(out.contains("project-env"), "the project's own .env must be visible\n{}", o.describe());
        for s in ["app-ssh", ".ssh", ".aws"] {
            assert!(!out.contains(&secret(&fx, s)), "{s} is readable\n{}", o.describe());
        }
        assert_eq!(out.contains(&secret(&fx, "notes")), notes_visible, "{}", o.describe());
    };
    // The default policy: the home is masked, the project shown through it.
    let o = run_batch(&fx, &app, "sh check.sh");
    o.expect_code(0);
    secrets(&o, false);
    // `mask_homes = false`: the home is visible, its secrets are not (they
    // were readable with the old plan, which masked them only in masked homes).
    let file = fx.out.path().join("open-homes.toml");
    fs::write(&file, policy_text(300, "").replace("mask_homes = true", "mask_homes = false")).unwrap();
    fx.cloche(&["policy", "set", "--project", app.to_str().unwrap(), file.to_str().unwrap()]).expect_code(0);
    let o = run_batch(&fx, &app, "sh check.sh");
    o.expect_code(0);
    secrets(&o, true);
    // An old policy listing /root in fs.mask: /root is still a home, and a
    // project inside it works.
    let root_app = Scratch::adopt(PathBuf::from(format!("/root/cloche-test-{}", fx.tag)));
    fs::create_dir_all(root_app.path().join(".aws")).unwrap();
    fs::write(root_app.path().join(".aws/k"), secret(&fx, "root-aws")).unwrap();
    fs::write(root_app.path().join(".env"), "project-env\n").unwrap();
    fs::write(root_app.path().join("check.sh"), "cat .env; cat .aws/k; true").unwrap();
    let file = fx.out.path().join("old.toml");
    fs::write(&file, policy_text(300, "").replacen("mask = [\n", "mask = [\n  \"/root\",\n", 1)).unwrap();
    fx.cloche(&["policy", "set", "--project", root_app.path().to_str().unwrap(), file.to_str().unwrap()])
        .expect_code(0);
    let o = run_batch(&fx, root_app.path(), "sh check.sh");
    o.expect_code(0);
    assert!(String::from_utf8_lossy(&o.stdout).contains("project-env"), "{}", o.describe());
    assert!(!String::from_utf8_lossy(&o.stdout).contains(&secret(&fx, "root-aws")), "{}", o.describe());
    discard_kept(&fx);
    fx.finish();
}

#[test]
fn masks_below_an_exposed_project_stay_in_force() {
    let fx = Fixture::new();
    fx.write("own.txt", b"own-file\n", 0o644);
    let key = fx.write("secret.key", secret(&fx, "key").as_bytes(), 0o600);
    let private = fx.mkdir("private");
    fs::write(private.join("k"), secret(&fx, "private")).unwrap();
    // The project's policy masks a file and a directory inside it, and
    // lists the project itself in fs.expose (which used to unmask both).
    let text = policy_text(300, "")
        .replacen("mask = [\n", &format!("mask = [\n  \"{}\",\n  \"{}\",\n", key.display(), private.display()), 1)
        .replacen("expose = []", &format!("expose = [\"{}\"]", fx.dir().display()), 1);
    let file = fx.out.path().join("p.toml");
    fs::write(&file, &text).unwrap();
    fx.cloche(&["policy", "set", "--project", fx.dir().to_str().unwrap(), file.to_str().unwrap()]).expect_code(0);
    fx.write("check.sh", b"cat own.txt secret.key private/k; ls private; true", 0o644);
    let o = run_batch(&fx, fx.dir(), "sh check.sh");
    o.expect_code(0);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("own-file"), "{}", o.describe());
    for s in ["key", "private"] {
        assert!(!out.contains(&secret(&fx, s)), "{s} is readable\n{}", o.describe());
    }
    // A project /etc: /etc/shadow stays masked.
    let shadow = fs::read_to_string("/etc/shadow").unwrap();
    assert!(shadow.contains("root:"), "precondition: host /etc/shadow");
    let o = run_batch(&fx, Path::new("/etc"), "f=shadow; cat \"$f\"; echo end");
    o.expect_code(0);
    assert_eq!(String::from_utf8_lossy(&o.stdout), "end\n", "{}", o.describe());
    // `--expose /etc` (containing the mask) no longer unmasks it either.
    let o = fx.sh(&["--expose", "/etc"], "cat /etc/shadow; echo end");
    o.expect_code(0);
    assert_eq!(String::from_utf8_lossy(&o.stdout), "end\n", "{}", o.describe());
    discard_kept(&fx);
    fx.finish();
}

#[test]
fn the_state_dir_is_masked_in_every_world_and_never_exposed() {
    let fx = Fixture::new();
    // A state dir one level down in a directory of the test's own.
    let parent = fx.out.path().join("p");
    let state = parent.join("state");
    fs::create_dir_all(&state).unwrap();
    let marker = state.join("marker.txt");
    fs::write(&marker, secret(&fx, "state")).unwrap();
    let cloche = |cwd: &Path, args: &[&str]| {
        let mut cmd = Command::new(cloche_bin());
        cmd.current_dir(cwd).env("CLOCHE_STATE_DIR", &state).stdin(std::process::Stdio::null());
        run_cmd(cmd.args(args), DEADLINE)
    };
    let read = format!("cat {}; ls -a {}; echo end", marker.display(), state.display());
    // The cwd its parent: refused.
    let o = cloche(&parent, &["run", "--", "sh", "-c", &read]);
    assert_eq!(o.code, Some(125), "{}", o.describe());
    one_line(&o, "cwd", &parent, &format!("contains cloche's state directory {}", state.display()));
    // An exposure of its parent (by --expose or fs.expose): it stays masked.
    let file = fx.out.path().join("expose.toml");
    fs::write(&file, policy_text(300, "").replacen("expose = []", &format!("expose = [{:?}]", parent), 1)).unwrap();
    for args in [vec!["--expose", parent.to_str().unwrap()], vec!["--policy", file.to_str().unwrap()]] {
        let mut all = vec!["run"];
        all.extend(args);
        all.extend(["--", "sh", "-c", &read]);
        let o = cloche(fx.dir(), &all);
        o.expect_code(0);
        assert_eq!(String::from_utf8_lossy(&o.stdout), ".\n..\nend\n", "{}", o.describe());
    }
    // An exposure inside it: refused.
    let o = cloche(fx.dir(), &["run", "--expose", marker.to_str().unwrap(), "--", "true"]);
    assert_eq!(o.code, Some(125), "{}", o.describe());
    one_line(&o, "exposure", &marker, "(cloche's state directory); no exposure reaches it");
    fx.finish();
}

#[test]
fn a_project_swapped_for_a_symlink_after_submit_is_refused_at_run() {
    let fx = Fixture::new();
    let setup = Setup::new(&fx);
    let app = setup.home.path().join("app");
    let aws = setup.home.path().join(".aws");
    let id = submit(&fx, &json!({"project": app, "entries": [{"command": "cat secret"}]}), None);
    fx.cloche(&["batch", "approve", &id]).expect_code(0);
    fs::remove_dir(&app).unwrap();
    std::os::unix::fs::symlink(&aws, &app).unwrap();
    let o = fx.cloche(&["batch", "run", &id]);
    assert_eq!(o.code, Some(125), "{}", o.describe());
    assert!(!String::from_utf8_lossy(&o.stdout).contains(&secret(&fx, ".aws")), "{}", o.describe());
    one_line(&o, "project", &app, &format!("now resolves to {}", aws.display()));
    let v = show(&fx, &id);
    assert_eq!(v["state"], "failed", "{v:#}");
    assert!(fx.worlds().is_empty(), "no world may have started: {:?}", fx.worlds());
    fx.finish();
}
