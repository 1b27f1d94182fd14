//! Review and commit end to end: `cloche diff` and `cloche commit` of batch
//! worlds, against real hosts paths, with attacks from inside the world and
//! races from the host (root).

use crate::common;

use common::*;
use serde_json::Value;
use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// What a commit must reproduce of a path: kind, mode, bytes, link target.
type Seen = (String, u32, Vec<u8>, Option<std::path::PathBuf>);

/// [`Seen`] for every path of a tree.
fn view(root: &Path) -> BTreeMap<Vec<u8>, Seen> {
    tree_snapshot(root)
        .into_iter()
        .filter(|(k, _)| !k.is_empty())
        .map(|(k, n)| (k, (n.kind.to_string(), n.mode, n.content, n.target)))
        .collect()
}

/// Submits `commands` as one batch of `fx`'s project, approves and runs it;
/// returns the batch id.
fn run_batch(fx: &Fixture, commands: &[&str]) -> String {
    let entries: Vec<Value> = commands.iter().map(|c| serde_json::json!({"command": c})).collect();
    let batch = serde_json::json!({"agent": "a1", "project": fx.dir().to_str().unwrap(), "stop_on_failure": false,
        "entries": entries});
    let id = submit(fx, &batch, None);
    fx.cloche(&["batch", "approve", &id]).expect_code(0);
    fx.cloche(&["batch", "run", &id]);
    id
}

fn diff_json(fx: &Fixture, id: &str) -> Value {
    let o = fx.cloche(&["diff", id, "--json"]);
    o.expect_code(0);
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", o.describe()))
}

fn paths_of(d: &Value, list: &str) -> Vec<String> {
    d[list].as_array().unwrap().iter().map(|e| e["path"].as_str().unwrap().to_string()).collect()
}

fn flags_of(d: &Value, path: &str) -> Vec<String> {
    d["flags"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["path"] == path)
        .map(|f| f["why"].as_str().unwrap().to_string())
        .collect()
}

fn commit_json(fx: &Fixture, args: &[&str]) -> (Option<i32>, Value, String) {
    let mut all = vec!["commit", "--json"];
    all.extend_from_slice(args);
    let o = fx.cloche(&all);
    let v = serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", o.describe()));
    (o.code, v, String::from_utf8_lossy(&o.stderr).to_string())
}

const EDITS: &[&str] = &[
    "echo more >> a.txt",
    "rm b.txt",
    "mv c.txt d.txt",
    "mkdir -p new/deep && printf 'z\\n' > new/deep/z && ln -s deep/z new/link",
    "chmod 600 sub/f && rm -r gone",
    "printf 'bin\\0ary' > blob && chmod 755 blob",
];

#[test]
fn commit_makes_the_host_equal_to_the_world_and_a_second_commit_is_a_no_op() {
    let fx = Fixture::new();
    for (p, c) in [("a.txt", "one\n"), ("b.txt", "two\n"), ("c.txt", "three\n"), ("sub/f", "f\n"), ("gone/x", "x\n")] {
        fx.write(p, c.as_bytes(), 0o644);
    }
    // The reference: the same commands run in a copy of the project.
    let reference = fx.out.path().join("reference");
    assert!(std::process::Command::new("cp").arg("-a").arg(fx.dir()).arg(&reference).status().unwrap().success());
    for c in EDITS {
        let st = std::process::Command::new("sh").arg("-c").arg(c).current_dir(&reference).status().unwrap();
        assert!(st.success(), "{c}");
    }
    let before = tree_snapshot(fx.dir());
    let id = run_batch(&fx, EDITS);
    assert_eq!(show(&fx, &id)["state"], "completed");
    assert_same_tree(fx.dir(), &before, &tree_snapshot(fx.dir())); // nothing reached the host yet
    let p = |rel: &str| format!("{}/{rel}", fx.dir().display());
    let d = diff_json(&fx, &id);
    assert_eq!(paths_of(&d, "added"), [p("blob"), p("d.txt"), p("new"), p("new/deep"), p("new/deep/z"), p("new/link")]);
    assert_eq!(paths_of(&d, "modified"), [p("a.txt"), p("sub/f")]);
    assert_eq!(paths_of(&d, "deleted"), [p("b.txt"), p("c.txt"), p("gone")]);
    // Each path names the batch entry that changed it.
    let entry_ids: Vec<String> =
        show(&fx, &id)["entries"].as_array().unwrap().iter().map(|e| e["id"].as_str().unwrap().into()).collect();
    let a = d["modified"].as_array().unwrap().iter().find(|e| e["path"] == p("a.txt")).unwrap();
    assert_eq!(a["entries"], serde_json::json!([entry_ids[0]]));
    assert!(flags_of(&d, &p("blob")).iter().any(|f| f.contains("executable")), "{d:#}");
    // The text views.
    let o = fx.cloche(&["diff", &id, "--name-status"]);
    o.expect_code(0);
    let text = String::from_utf8_lossy(&o.stdout);
    for line in [format!("M\t{}", p("a.txt")), format!("A\t{}", p("d.txt")), format!("D\t{}", p("c.txt"))] {
        assert!(text.contains(&line), "{line} in\n{text}");
    }
    let o = fx.cloche(&["diff", &id]);
    o.expect_code(0);
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.contains("+more") && text.contains("-two") && text.contains("Binary files differ"), "{text}");

    let (code, v, err) = commit_json(&fx, &[&id]);
    assert_eq!(code, Some(0), "{err}\n{v:#}");
    assert_eq!(view(fx.dir()), view(&reference), "the host equals the reference run");
    let written = v["applied"].as_array().unwrap().iter().find(|x| x["path"] == p("d.txt")).unwrap();
    assert_eq!(written["sha256"], sha256_hex(b"three\n"));
    // New files belong to the project directory's owner.
    let owner = std::fs::metadata(fx.dir()).unwrap().uid();
    assert_eq!(std::fs::metadata(fx.dir().join("new/deep/z")).unwrap().uid(), owner);
    assert_eq!(show(&fx, &id)["state"], "committed");
    let paths = audit_events(&fx, "commit_paths");
    assert!(paths.iter().any(|r| r["details"]["paths"]
        .as_array()
        .unwrap()
        .iter()
        .any(|x| x["sha256"] == sha256_hex(b"three\n"))));
    assert_eq!(audit_events(&fx, "committed").len(), 1);

    // Again: nothing left to do, nothing written.
    let after = tree_snapshot(fx.dir());
    let (code, v, err) = commit_json(&fx, &[&id]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(v["applied"], serde_json::json!([]), "{v:#}");
    assert_same_tree(fx.dir(), &after, &tree_snapshot(fx.dir()));
    fx.cloche(&["discard", &id]).expect_code(0);
    assert_eq!(show(&fx, &id)["state"], "discarded");
    fx.cloche(&["audit", "verify"]).expect_code(0);
    fx.finish();
}

#[test]
fn writes_through_planted_symlinks_never_leave_the_project() {
    let fx = Fixture::new();
    let target = format!("/etc/cloche-attack-{}", fx.tag);
    let cmds = [
        "ln -s /etc link".to_string(),
        format!("echo pwned > link/{}", target.trim_start_matches("/etc/")),
        "ln -s /etc/hostname x && echo evil > x".to_string(),
        // A hard link to a host file (one of the project's: the overlay
        // refuses links across its layers).
        "ln host.txt hl".to_string(),
        // A symlink to a host file, then replaced by a file of its own.
        "ln -s /etc/hostname y && rm y && echo data > y".to_string(),
        "echo ok > fine.txt".to_string(),
    ];
    fx.write("host.txt", b"host\n", 0o644);
    let hostname_before = node_of(Path::new("/etc/hostname")).unwrap();

    let cmds: Vec<&str> = cmds.iter().map(String::as_str).collect();
    let id = run_batch(&fx, &cmds);
    let p = |rel: &str| format!("{}/{rel}", fx.dir().display());
    let d = diff_json(&fx, &id);
    assert!(flags_of(&d, &p("link")).iter().any(|f| f == "symlink leaves the commit roots"), "{d:#}");
    assert!(flags_of(&d, &target).iter().any(|f| f == "outside the commit roots"), "{d:#}");
    assert!(flags_of(&d, &p("hl")).iter().any(|f| f == "hard link"), "{d:#}");
    // Refused as a whole: nothing written anywhere.
    let before = tree_snapshot(fx.dir());
    let (code, v, err) = commit_json(&fx, &[&id]);
    assert_eq!(code, Some(1), "{err}");
    let refused: Vec<&str> = v["refused"].as_array().unwrap().iter().map(|r| r["path"].as_str().unwrap()).collect();
    assert!(refused.contains(&p("link").as_str()) && refused.contains(&p("x").as_str()), "{v:#}");
    assert!(err.lines().any(|l| l.contains("refused") && l.contains("link")), "{err}");
    assert_same_tree(fx.dir(), &before, &tree_snapshot(fx.dir()));
    assert!(!Path::new(&target).exists());
    let refusal = audit_events(&fx, "commit_refused");
    assert_eq!(refusal.len(), 1);
    // Without the symlinks: the rest goes in, the outside never does.
    let (code, v, err) = commit_json(&fx, &[&id, "--exclude", &p("link"), "--exclude", &p("x")]);
    assert_eq!(code, Some(0), "{err}\n{v:#}");
    assert!(v["not_committed"].as_array().unwrap().iter().any(|n| n["path"] == target.as_str()), "{v:#}");
    assert!(!Path::new(&target).exists());
    assert_eq!(std::fs::read_to_string(fx.dir().join("fine.txt")).unwrap(), "ok\n");
    // The hard link arrived as a file of its own; the host files are untouched.
    assert_eq!(node_of(Path::new("/etc/hostname")).unwrap(), hostname_before);
    let hl = std::fs::metadata(fx.dir().join("hl")).unwrap();
    let host = std::fs::metadata(fx.dir().join("host.txt")).unwrap();
    assert!(hl.ino() != host.ino() && hl.nlink() == 1 && host.nlink() == 1);
    assert_eq!(std::fs::read(fx.dir().join("hl")).unwrap(), b"host\n");
    assert_eq!(node_of(&fx.dir().join("y")).unwrap().kind, "file");
    assert_eq!(std::fs::read(fx.dir().join("y")).unwrap(), b"data\n");

    assert_eq!(show(&fx, &id)["state"], "partially_committed");
    fx.cloche(&["discard", &id]).expect_code(0);
    fx.finish();
}

/// A setuid file, a FIFO, a device node and a git hook, made with `cloche
/// run --keep` (a batch would deny `chmod 4755`): the commit roots are the
/// run's working directory.
#[test]
fn fifos_are_refused_setuid_bits_stripped_and_git_hooks_flagged() {
    let fx = Fixture::new();
    let script = "mkfifo ff && cp /bin/true suid && chmod 4755 suid && { mknod dev c 1 3 2>/dev/null || true; } \
                  && mkdir -p .git/hooks && printf '#!/bin/sh\\n' > .git/hooks/post-checkout \
                  && chmod 755 .git/hooks/post-checkout";
    fx.run(&["--keep"], &["sh", "-c", script]).expect_code(0);
    let id = fx.worlds().pop().expect("a kept world");
    let p = |rel: &str| format!("{}/{rel}", fx.dir().display());
    let d = diff_json(&fx, &id);
    assert_eq!(d["batch"], Value::Null);
    assert!(flags_of(&d, &p("ff")).contains(&"fifo".to_string()), "{d:#}");
    assert!(flags_of(&d, &p("suid")).contains(&"setuid".to_string()), "{d:#}");
    assert!(flags_of(&d, &p(".git/hooks/post-checkout")).iter().any(|f| f.contains("git hook")), "{d:#}");
    let (code, v, _) = commit_json(&fx, &[&id]);
    assert_eq!(code, Some(1));
    assert!(v["refused"].as_array().unwrap().iter().any(|r| r["path"] == p("ff") && r["why"] == "fifo"), "{v:#}");
    assert!(!fx.dir().join("suid").exists(), "a refused commit writes nothing");
    let (code, v, err) = commit_json(&fx, &[&id, "--exclude", &p("ff"), "--exclude", &p("dev")]);
    assert_eq!(code, Some(0), "{err}\n{v:#}");
    let mode = std::fs::metadata(fx.dir().join("suid")).unwrap().mode() & 0o7777;
    assert_eq!(mode, 0o755, "setuid stripped");
    assert!(v["stripped"].as_array().unwrap().iter().any(|s| s["path"] == p("suid")));
    assert!(fx.dir().join(".git/hooks/post-checkout").exists());
    assert!(!fx.dir().join("ff").exists() && !fx.dir().join("dev").exists());
    assert_eq!(audit_events(&fx, "committed").len(), 1);
    fx.cloche(&["discard", &id]).expect_code(0);
    fx.finish();
}

#[test]
fn a_directory_swapped_for_a_symlink_on_the_host_is_refused() {
    let fx = Fixture::new();
    fx.write("sub/keep", b"k\n", 0o644);
    let outside = fx.out.path().join("outside");
    std::fs::create_dir(&outside).unwrap();
    let id = run_batch(&fx, &["echo new > sub/f"]);
    diff_json(&fx, &id);
    // The race: between diff and commit the host replaces sub with a symlink.
    std::fs::rename(fx.dir().join("sub"), fx.dir().join("sub.real")).unwrap();
    std::os::unix::fs::symlink(&outside, fx.dir().join("sub")).unwrap();
    let (code, v, err) = commit_json(&fx, &[&id]);
    assert_eq!(code, Some(1), "{err}");
    let why = v["refused"][0]["why"].as_str().unwrap_or("");
    assert!(why.contains("symlink"), "{v:#}");
    assert_eq!(std::fs::read_dir(&outside).unwrap().count(), 0, "nothing written through the symlink");
    assert_eq!(audit_events(&fx, "commit_refused").len(), 1);
    fx.cloche(&["discard", &id]).expect_code(0);
    fx.finish();
}

#[test]
fn a_host_edit_since_the_world_changed_the_file_is_a_conflict_until_forced() {
    let fx = Fixture::new();
    fx.write("a.txt", b"base\n", 0o644);
    fx.write("b.txt", b"b\n", 0o644);
    let id = run_batch(&fx, &["echo world > a.txt && echo also > b.txt"]);
    std::fs::write(fx.dir().join("a.txt"), b"host edit\n").unwrap();
    let (code, v, err) = commit_json(&fx, &[&id]);
    assert_eq!(code, Some(1), "{err}");
    let p = |rel: &str| format!("{}/{rel}", fx.dir().display());
    assert_eq!(v["conflicts"][0]["path"], p("a.txt"), "{v:#}");
    assert!(err.lines().any(|l| l.contains("conflict") && l.contains("a.txt")), "{err}");
    assert_eq!(std::fs::read(fx.dir().join("b.txt")).unwrap(), b"b\n", "nothing applied");
    let (code, v, err) = commit_json(&fx, &[&id, "--force"]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(v["forced"][0]["path"], p("a.txt"));
    assert_eq!(std::fs::read(fx.dir().join("a.txt")).unwrap(), b"world\n");
    assert_eq!(std::fs::read(fx.dir().join("b.txt")).unwrap(), b"also\n");
    let committed = audit_events(&fx, "committed");
    assert_eq!(committed[0]["details"]["forced"][0]["path"], p("a.txt"));
    fx.cloche(&["discard", &id]).expect_code(0);
    fx.finish();
}

/// Unmounts (detached) on drop, also when the test fails.
struct Mounted(std::path::PathBuf);

impl Drop for Mounted {
    fn drop(&mut self) {
        let c = std::ffi::CString::new(self.0.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
    }
}

/// The host runs out of space while the commit stages its files: nothing
/// is applied, no temporary is left, and the error says so.
#[test]
fn a_commit_that_runs_out_of_space_applies_nothing() {
    let fx = Fixture::new();
    let small = fx.mkdir("small");
    let c = std::ffi::CString::new(small.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: mount(2) of a fresh tmpfs with NUL-terminated strings.
    let r = unsafe { libc::mount(c"tmpfs".as_ptr(), c.as_ptr(), c"tmpfs".as_ptr(), 0, c"size=1m".as_ptr().cast()) };
    assert_eq!(r, 0, "mount tmpfs: {}", std::io::Error::last_os_error());
    let _mounted = Mounted(small.clone());
    std::fs::write(small.join("keep.txt"), b"k\n").unwrap();
    let script = "head -c 700000 /dev/zero > small/a && head -c 700000 /dev/zero > small/b && echo x > top.txt";
    fx.run(&["--keep"], &["sh", "-c", script]).expect_code(0);
    let id = fx.worlds().pop().expect("a kept world");
    let before = tree_snapshot(fx.dir());
    let (code, v, err) = commit_json(&fx, &[&id]);
    assert_eq!(code, Some(1), "{err}\n{v:#}");
    assert!(err.contains("No space left") && err.contains("applied 0 of"), "{err}");
    assert_eq!(v["applied"], serde_json::json!([]), "{v:#}");
    // The same entries, sizes and contents (a directory's times moved: a
    // temporary came and went).
    let unchanged = |t: BTreeMap<Vec<u8>, Node>| {
        t.into_iter().map(|(k, n)| (k, n.kind, n.size * u64::from(n.kind != "dir"), n.content)).collect::<Vec<_>>()
    };
    assert_eq!(unchanged(tree_snapshot(fx.dir())), unchanged(before));
    // With the big files left out, the rest goes in.
    let (code, _, err) = commit_json(&fx, &[&id, "--exclude", small.join("b").to_str().unwrap()]);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(std::fs::metadata(small.join("a")).unwrap().len(), 700000);
    assert_eq!(std::fs::read(fx.dir().join("top.txt")).unwrap(), b"x\n");
    fx.cloche(&["discard", &id]).expect_code(0);
    drop(_mounted);
    fx.finish();
}

/// Paths a batch only wrote as they were (a `sed -i` that changes nothing,
/// `cp -p` over itself, `touch`, `chmod` to the same mode, a directory whose
/// only change is its mtime, a symlink made again) are not changes: `cloche
/// diff` leaves them out (a summary line counts them, `--touched` lists
/// them) and `cloche commit` never applies them: the host files keep their
/// inode and times. Real changes next to them (content, mode, symlink
/// target, and a file one entry touched and the next changed, attributed to
/// the latter) are reviewed and committed. A touched file the host edited
/// since is a conflict, as for any change.
#[test]
fn touched_paths_are_neither_shown_nor_committed() {
    let fx = Fixture::new();
    for (p, c) in [
        ("same.txt", "x = 1\n"),
        ("cp.txt", "c\n"),
        ("t.txt", "t\n"),
        ("m.txt", "m\n"),
        ("h.txt", "h\n"),
        ("stamp/keep", "k\n"),
        ("c.txt", "one\n"),
        ("x.sh", "#!/bin/sh\n"),
        ("later.txt", "l\n"),
    ] {
        fx.write(p, c.as_bytes(), 0o644);
    }
    std::os::unix::fs::symlink("t.txt", fx.dir().join("link")).unwrap();
    std::os::unix::fs::symlink("t.txt", fx.dir().join("link2")).unwrap();
    let id = run_batch(
        &fx,
        &[
            "sed -i s/x/x/ same.txt && cp -p cp.txt /tmp/c && cp -p /tmp/c cp.txt && touch t.txt later.txt \
             && chmod 644 m.txt h.txt && touch stamp && ln -sfn t.txt link",
            "echo two >> c.txt && chmod 755 x.sh && ln -sfn c.txt link2 && echo more >> later.txt",
        ],
    );
    assert_eq!(show(&fx, &id)["state"], "completed", "{:#}", show(&fx, &id));
    let p = |rel: &str| format!("{}/{rel}", fx.dir().display());
    let touched = ["cp.txt", "h.txt", "link", "m.txt", "same.txt", "stamp", "t.txt"].map(p);
    let d = diff_json(&fx, &id);
    assert_eq!(paths_of(&d, "modified"), ["c.txt", "later.txt", "link2", "x.sh"].map(p), "{d:#}");
    assert!(paths_of(&d, "added").is_empty() && paths_of(&d, "deleted").is_empty(), "{d:#}");
    assert_eq!(paths_of(&d, "touched"), touched, "{d:#}");
    assert_eq!(d["totals"]["touched"], 7);
    let entry_ids: Vec<String> =
        show(&fx, &id)["entries"].as_array().unwrap().iter().map(|e| e["id"].as_str().unwrap().into()).collect();
    let later = d["modified"].as_array().unwrap().iter().find(|e| e["path"] == p("later.txt")).unwrap();
    assert_eq!(later["entries"], serde_json::json!([entry_ids[1]]), "changed by the second entry only");
    // The text views: counted, not listed, unless asked for.
    for args in [vec!["diff", &id], vec!["diff", &id, "--name-status"], vec!["diff", &id, "--stat"]] {
        let o = fx.cloche(&args);
        o.expect_code(0);
        let text = String::from_utf8_lossy(&o.stdout);
        assert!(text.contains("touched: 7 paths written as the base has them"), "{args:?}: {text}");
        for t in &touched {
            let shown = text.lines().any(|l| l.split(['\t', ' ']).any(|w| w == t.as_str() || w == format!("a{t}")));
            assert!(!shown, "{args:?} shows touched {t}:\n{text}");
        }
        assert!(text.contains(&p("c.txt")), "{text}");
    }
    let o = fx.cloche(&["diff", &id, "--name-status", "--touched"]);
    o.expect_code(0);
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(text.contains(&format!("=\t{}\t{}", p("same.txt"), entry_ids[0])), "{text}");

    // The host edits a touched file: the world's copy is now older than the
    // host's, a conflict; nothing is applied.
    std::fs::write(fx.dir().join("h.txt"), b"host edit\n").unwrap();
    let nodes = || touched.iter().map(|t| node_of(Path::new(t))).collect::<Vec<_>>();
    let before = nodes();
    let (code, v, err) = commit_json(&fx, &[&id]);
    assert_eq!(code, Some(1), "{err}\n{v:#}");
    assert_eq!(v["conflicts"].as_array().unwrap().len(), 1, "{v:#}");
    assert_eq!(v["conflicts"][0]["path"], p("h.txt"), "{v:#}");
    assert_eq!(std::fs::read(fx.dir().join("c.txt")).unwrap(), b"one\n", "nothing applied");
    // Without it: exactly the real changes; touched host files untouched
    // (same inode, mtime, ctime, content).
    let (code, v, err) = commit_json(&fx, &[&id, "--exclude", &p("h.txt")]);
    assert_eq!(code, Some(0), "{err}\n{v:#}");
    let mut applied: Vec<String> =
        v["applied"].as_array().unwrap().iter().map(|x| x["path"].as_str().unwrap().to_string()).collect();
    applied.sort();
    assert_eq!(applied, ["c.txt", "later.txt", "link2", "x.sh"].map(p), "{v:#}");
    assert_eq!(nodes(), before, "a touched path reached the host");
    assert_eq!(std::fs::read(fx.dir().join("h.txt")).unwrap(), b"host edit\n");
    assert_eq!(std::fs::read(fx.dir().join("c.txt")).unwrap(), b"one\ntwo\n");
    assert_eq!(std::fs::read(fx.dir().join("later.txt")).unwrap(), b"l\nmore\n");
    assert_eq!(std::fs::metadata(fx.dir().join("x.sh")).unwrap().mode() & 0o7777, 0o755);
    assert_eq!(std::fs::read_link(fx.dir().join("link2")).unwrap(), Path::new("c.txt"));
    fx.cloche(&["discard", &id]).expect_code(0);
    fx.finish();
}
