//! The host is never modified by a world, and the report's fs_diff says
//! exactly what the world changed: a table of cases, each in its own world.

use crate::common;

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use common::*;
use serde_json::Value;

const KINDS: [&str; 7] = ["file", "dir", "symlink", "char", "block", "fifo", "socket"];

/// Runs `script` in a world from the project dir, checks that the project dir
/// is unchanged on the host, checks the general shape of the fs_diff, and
/// returns the report.
fn run_case(fx: &Fixture, script: &str) -> Value {
    let before = tree_snapshot(fx.dir());
    let o = fx.sh::<&str>(&[], &format!("set -e\numask 022\n{script}"));
    o.expect_code(0);
    assert_same_tree(fx.dir(), &before, &tree_snapshot(fx.dir()));
    let r = o.report();
    check_shape(&r);
    r
}

/// Every entry: an absolute path (or path_b64), a known kind, a 4-digit octal
/// mode when given, sha256 and size for files that exist in the world
/// (touched entries: path, kind and at most `changes: ["mtime"]`); totals
/// that match the lists.
fn check_shape(r: &Value) {
    for e in diff_list(r, "touched") {
        assert!(entry_path(e).starts_with(b"/"), "touched: path not absolute: {e}");
        assert!(KINDS.contains(&e["kind"].as_str().unwrap_or("")), "touched: bad kind: {e}");
        let keys: BTreeSet<&str> = e.as_object().unwrap().keys().map(String::as_str).collect();
        assert!(keys.is_subset(&["path", "path_b64", "kind", "changes"].into()), "touched: unexpected fields: {e}");
        assert!(string_list(&e["changes"]).iter().all(|c| c == "mtime"), "touched: {e}");
    }
    for list in ["added", "modified", "deleted"] {
        for e in diff_list(r, list) {
            let p = entry_path(e);
            assert!(p.starts_with(b"/"), "{list}: path not absolute: {e}");
            if e.get("path").is_some_and(|v| !v.is_null()) {
                assert!(!matches!(e.get("path_b64"), Some(v) if !v.is_null()), "{list}: both path and path_b64: {e}");
            }
            let kind = e["kind"].as_str().unwrap_or("");
            assert!(KINDS.contains(&kind), "{list}: bad kind: {e}");
            if let Some(mode) = e.get("mode").and_then(Value::as_str) {
                assert!(
                    mode.len() == 4 && mode.chars().all(|c| ('0'..='7').contains(&c)),
                    "{list}: mode must be 4 octal digits: {e}"
                );
            }
            if list != "deleted" && kind == "file" {
                let sha = e["sha256"].as_str().unwrap_or("");
                assert!(
                    sha.len() == 64 && sha.chars().all(|c| c.is_ascii_hexdigit()),
                    "{list}: a file needs its sha256: {e}"
                );
                assert!(e["size"].is_u64(), "{list}: a file needs its size: {e}");
            }
        }
    }
    let d = &r["fs_diff"];
    if d["truncated"] == false {
        for list in ["added", "modified", "deleted", "touched"] {
            assert_eq!(
                d["totals"][list].as_u64(),
                Some(diff_list(r, list).len() as u64),
                "fs_diff.totals.{list} does not match the list: {d:#}"
            );
        }
    }
    assert!(d["totals"]["bytes"].is_u64(), "fs_diff.totals.bytes: {d:#}");
}

/// Asserts that the fs_diff holds exactly `expected` (list, absolute path) pairs,
/// tolerating only directories that are ancestors of an expected path and are
/// reported as modified with no change but their mtime (copied up because a
/// child changed).
fn assert_exact(r: &Value, expected: &[(&str, PathBuf)]) {
    let want: BTreeSet<(String, Vec<u8>)> =
        expected.iter().map(|(l, p)| (l.to_string(), p.as_os_str().as_bytes().to_vec())).collect();
    let ancestors: BTreeSet<Vec<u8>> =
        expected.iter().flat_map(|(_, p)| p.ancestors().skip(1).map(|a| a.as_os_str().as_bytes().to_vec())).collect();
    let mut got = BTreeSet::new();
    for list in ["added", "modified", "deleted"] {
        for e in diff_list(r, list) {
            let p = entry_path(e);
            let key = (list.to_string(), p.clone());
            let changes = string_list(&e["changes"]);
            let tolerated = !want.contains(&key)
                && list == "modified"
                && e["kind"] == "dir"
                && ancestors.contains(&p)
                && changes.iter().all(|c| c == "mtime");
            if !tolerated {
                got.insert(key);
            }
        }
    }
    let show = |s: &BTreeSet<(String, Vec<u8>)>| -> Vec<String> {
        s.iter().map(|(l, p)| format!("{l} {}", String::from_utf8_lossy(p))).collect()
    };
    let missing: BTreeSet<_> = want.difference(&got).cloned().collect();
    let extra: BTreeSet<_> = got.difference(&want).cloned().collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "fs_diff is not exactly right\n  missing: {:?}\n  unexpected: {:?}\n  fs_diff: {:#}",
        show(&missing),
        show(&extra),
        r["fs_diff"]
    );
}

fn entry<'a>(r: &'a Value, list: &str, path: &Path) -> &'a Value {
    find_entry(r, list, path).unwrap_or_else(|| panic!("no {list} entry for {}: {:#}", path.display(), r["fs_diff"]))
}

fn changes(e: &Value) -> Vec<String> {
    let mut c = string_list(&e["changes"]);
    c.sort();
    c
}

#[test]
fn a_file_created_then_deleted_leaves_no_trace() {
    let fx = Fixture::new();
    fx.write("keep.txt", b"keep", 0o644);
    let r = run_case(
        &fx,
        "echo x > tmpfile; rm tmpfile\n\
         mkdir d; echo y > d/f; rm -r d\n\
         ln -s keep.txt l; rm l",
    );
    assert_exact(&r, &[]);
    fx.finish();
}

#[test]
fn rm_rf_then_mkdir_of_a_lower_dir() {
    let fx = Fixture::new();
    fx.write("tree/x", b"x", 0o644);
    fx.write("tree/y", b"y", 0o644);
    fx.write("tree/sub/z", b"z", 0o644);
    for d in ["tree", "tree/sub"] {
        fs::set_permissions(fx.dir().join(d), fs::Permissions::from_mode(0o755)).unwrap();
    }
    let r = run_case(&fx, "rm -rf tree && mkdir tree && echo n > tree/new");
    let t = fx.dir().join("tree");
    assert_exact(
        &r,
        &[("deleted", t.join("x")), ("deleted", t.join("y")), ("deleted", t.join("sub")), ("added", t.join("new"))],
    );
    assert_eq!(entry(&r, "deleted", &t.join("sub"))["kind"], "dir");
    assert_eq!(entry(&r, "deleted", &t.join("x"))["kind"], "file");
    let new = entry(&r, "added", &t.join("new"));
    assert_eq!(new["kind"], "file");
    assert_eq!(new["size"], 2);
    assert_eq!(new["sha256"], sha256_hex(b"n\n"));
    fx.finish();
}

#[test]
fn rename_of_a_lower_dir() {
    let fx = Fixture::new();
    fx.write("ren/f1", b"first file\n", 0o644);
    fx.write("ren/sub/f2", b"second file\n", 0o600);
    let r = run_case(&fx, "mv ren ren2");
    let (old, new) = (fx.dir().join("ren"), fx.dir().join("ren2"));
    assert_exact(
        &r,
        &[
            ("deleted", old.clone()),
            ("added", new.clone()),
            ("added", new.join("f1")),
            ("added", new.join("sub")),
            ("added", new.join("sub/f2")),
        ],
    );
    assert_eq!(entry(&r, "deleted", &old)["kind"], "dir");
    assert_eq!(entry(&r, "added", &new)["kind"], "dir");
    assert_eq!(entry(&r, "added", &new.join("sub"))["kind"], "dir");
    let f1 = entry(&r, "added", &new.join("f1"));
    assert_eq!(f1["sha256"], sha256_hex(b"first file\n"));
    assert_eq!(f1["size"], 11);
    let f2 = entry(&r, "added", &new.join("sub/f2"));
    assert_eq!(f2["sha256"], sha256_hex(b"second file\n"));
    assert_eq!(f2["mode"], "0600");
    fx.finish();
}

#[test]
fn chmod_only_is_a_mode_change() {
    let fx = Fixture::new();
    fx.write("mode.sh", b"#!/bin/sh\necho hi\n", 0o644);
    let r = run_case(&fx, "chmod 0755 mode.sh");
    let p = fx.dir().join("mode.sh");
    assert_exact(&r, &[("modified", p.clone())]);
    let e = entry(&r, "modified", &p);
    assert_eq!(changes(e), vec!["mode"], "{e}");
    assert_eq!(e["mode"], "0755", "{e}");
    assert_eq!(e["kind"], "file", "{e}");
    assert_eq!(e["sha256"], sha256_hex(b"#!/bin/sh\necho hi\n"), "{e}");
    fx.finish();
}

/// The paths of the `touched` list, with their `changes`.
fn touched_of(r: &Value) -> BTreeMap<PathBuf, Vec<String>> {
    diff_list(r, "touched").iter().map(|e| (PathBuf::from(OsStr::from_bytes(&entry_path(e))), changes(e))).collect()
}

/// Content-identical rewrites (`sed -i` that changes nothing, `cp -p` of a
/// file over itself, `git checkout` rewriting identical files, `touch`,
/// `chmod` to the same mode, a directory whose only change is its mtime,
/// a symlink made again with its target) are not `modified`: each is in
/// `touched`, with `mtime` when its mtime moved; real changes next to them
/// still are modified.
#[test]
fn content_identical_rewrites_are_touched_not_modified() {
    let fx = Fixture::new();
    fx.write("sed.txt", b"x = 1\n", 0o644);
    fx.write("cp.txt", b"copy\n", 0o644);
    fx.write("t.txt", b"same\n", 0o644);
    fx.write("m.txt", b"mode\n", 0o644);
    fx.write("stamp/keep", b"k\n", 0o644);
    fx.write("real.txt", b"real\n", 0o644);
    fx.write("repo/a.txt", b"a\n", 0o644);
    fx.write("repo/src/b.txt", b"b\n", 0o644);
    std::os::unix::fs::symlink("t.txt", fx.dir().join("link")).unwrap();
    let git = |args: &[&str]| {
        let st = std::process::Command::new("git")
            .args(["-c", "user.name=t", "-c", "user.email=t@example.invalid"])
            .args(args)
            .current_dir(fx.dir().join("repo"))
            .stdout(std::process::Stdio::null())
            .status()
            .unwrap();
        assert!(st.success(), "git {args:?}");
    };
    git(&["init", "-q"]);
    git(&["add", "."]);
    git(&["commit", "-q", "-m", "base"]);
    let r = run_case(
        &fx,
        "sed -i s/x/x/ sed.txt\n\
         cp -p cp.txt /tmp/cp.txt && cp -p /tmp/cp.txt cp.txt\n\
         touch t.txt\n\
         chmod 644 m.txt\n\
         touch stamp\n\
         ln -sfn t.txt link\n\
         (cd repo && git ls-files -z | xargs -0 rm -f && git checkout -q -- . && git status --porcelain)\n\
         echo more >> real.txt",
    );
    let d = fx.dir();
    let mtime = || vec!["mtime".to_string()];
    let want: BTreeMap<PathBuf, Vec<String>> = [
        (d.join("cp.txt"), vec![]), // cp -p keeps the mtime
        (d.join("link"), mtime()),
        (d.join("m.txt"), vec![]),
        (d.join("repo/a.txt"), mtime()),
        (d.join("repo/src/b.txt"), mtime()),
        (d.join("sed.txt"), mtime()),
        (d.join("stamp"), mtime()),
        (d.join("t.txt"), mtime()),
    ]
    .into();
    assert_eq!(touched_of(&r), want, "{:#}", r["fs_diff"]);
    // git rewrote its index (new stat data): a real change, and the only one
    // besides real.txt
    assert_exact(&r, &[("modified", d.join("real.txt")), ("modified", d.join("repo/.git/index"))]);
    assert_eq!(changes(entry(&r, "modified", &d.join("real.txt"))), vec!["content"]);
    assert_eq!(r["fs_diff"]["totals"]["touched"], 8);
    fx.finish();
}

#[test]
fn content_changes_of_host_files() {
    let fx = Fixture::new();
    fx.write("data.txt", b"line one\n", 0o644);
    let hostname = fs::read("/etc/hostname").unwrap();
    let hostname_node = node_of(Path::new("/etc/hostname"));
    let r = run_case(&fx, "printf 'line two\\n' >> data.txt\nprintf 'world\\n' >> /etc/hostname");
    let p = fx.dir().join("data.txt");
    assert_exact(&r, &[("modified", p.clone()), ("modified", "/etc/hostname".into())]);
    let e = entry(&r, "modified", &p);
    assert!(changes(e).contains(&"content".to_string()), "{e}");
    for c in ["type", "mode", "owner"] {
        assert!(!changes(e).contains(&c.to_string()), "{e}");
    }
    assert_eq!(e["size"], 18, "{e}");
    assert_eq!(e["sha256"], sha256_hex(b"line one\nline two\n"), "{e}");

    let h = entry(&r, "modified", Path::new("/etc/hostname"));
    let mut want = hostname.clone();
    want.extend_from_slice(b"world\n");
    assert!(changes(h).contains(&"content".to_string()), "{h}");
    assert_eq!(h["sha256"], sha256_hex(&want), "{h}");
    assert_eq!(node_of(Path::new("/etc/hostname")), hostname_node, "the host's /etc/hostname changed");
    fx.finish();
}

#[test]
fn deletions_of_a_file_and_a_dir() {
    let fx = Fixture::new();
    fx.write("del.txt", b"bye", 0o644);
    fx.write("deldir/a", b"a", 0o644);
    fx.write("deldir/b/c", b"c", 0o644);
    let r = run_case(&fx, "rm del.txt\nrm -r deldir");
    let (f, d) = (fx.dir().join("del.txt"), fx.dir().join("deldir"));
    assert_exact(&r, &[("deleted", f.clone()), ("deleted", d.clone())]);
    assert_eq!(entry(&r, "deleted", &f)["kind"], "file");
    assert_eq!(entry(&r, "deleted", &d)["kind"], "dir");
    fx.finish();
}

#[test]
fn symlinks_are_reported_not_followed() {
    let fx = Fixture::new();
    fx.write("target.txt", b"t", 0o644);
    std::os::unix::fs::symlink("a", fx.dir().join("old_link")).unwrap();
    let r = run_case(
        &fx,
        "ln -s target.txt rel_link\n\
         ln -s /etc/passwd abs_link\n\
         ln -s nowhere dangling\n\
         ln -sfn b old_link",
    );
    let d = fx.dir();
    assert_exact(
        &r,
        &[
            ("added", d.join("rel_link")),
            ("added", d.join("abs_link")),
            ("added", d.join("dangling")),
            ("modified", d.join("old_link")),
        ],
    );
    for (name, target) in [("rel_link", "target.txt"), ("abs_link", "/etc/passwd"), ("dangling", "nowhere")] {
        let e = entry(&r, "added", &d.join(name));
        assert_eq!(e["kind"], "symlink", "{e}");
        assert_eq!(e["target"], target, "{e}");
        assert!(
            e.get("sha256").and_then(Value::as_str) != Some(sha256_hex(b"t").as_str()),
            "a symlink was followed: {e}"
        );
    }
    let e = entry(&r, "modified", &d.join("old_link"));
    assert_eq!(e["kind"], "symlink", "{e}");
    assert_eq!(e["target"], "b", "{e}");
    assert!(changes(e).contains(&"target".to_string()), "{e}");
    fx.finish();
}

#[test]
fn non_utf8_names_round_trip_through_path_b64() {
    let fx = Fixture::new();
    let old_name: &[u8] = b"old-\xe9.txt"; // Latin-1, not UTF-8
    fs::write(fx.dir().join(OsStr::from_bytes(old_name)), b"old").unwrap();
    let new_name: &[u8] = b"bad-\xff\xfe-name.txt";
    let r = run_case(&fx, &format!("\"$PROBE\" create-bytes {} hello >/dev/null\nrm old-*.txt", hex(new_name)));
    let abs = |name: &[u8]| {
        let mut b = fx.dir().as_os_str().as_bytes().to_vec();
        b.push(b'/');
        b.extend_from_slice(name);
        PathBuf::from(OsStr::from_bytes(&b))
    };
    assert_exact(&r, &[("added", abs(new_name)), ("deleted", abs(old_name))]);
    for (list, name) in [("added", new_name), ("deleted", old_name)] {
        let e = entry(&r, list, &abs(name));
        assert!(e["path_b64"].is_string(), "a non-UTF-8 name must be given as path_b64: {e}");
        assert_eq!(
            b64_decode(e["path_b64"].as_str().unwrap()),
            abs(name).as_os_str().as_bytes(),
            "path_b64 must decode to the exact bytes: {e}"
        );
    }
    assert_eq!(entry(&r, "added", &abs(new_name))["sha256"], sha256_hex(b"hello"));
    fx.finish();
}

#[test]
fn hard_links_between_new_files() {
    let fx = Fixture::new();
    let r = run_case(&fx, "echo linked > n1\nln n1 n2");
    let (n1, n2) = (fx.dir().join("n1"), fx.dir().join("n2"));
    assert_exact(&r, &[("added", n1.clone()), ("added", n2.clone())]);
    let (e1, e2) = (entry(&r, "added", &n1), entry(&r, "added", &n2));
    assert_eq!(e1["kind"], "file");
    assert_eq!(e2["kind"], "file");
    let l1 = e1["links_to"].as_str() == n2.to_str();
    let l2 = e2["links_to"].as_str() == n1.to_str();
    assert!(l1 ^ l2, "exactly one of two hard-linked files must name the other in links_to: {e1} {e2}");
    fx.finish();
}

#[test]
fn type_changes_are_modifications() {
    let fx = Fixture::new();
    fx.write("t", b"was a file", 0o644);
    fx.mkdir("u");
    let r = run_case(&fx, "rm t && mkdir t\nrmdir u && echo now-a-file > u");
    let (t, u) = (fx.dir().join("t"), fx.dir().join("u"));
    assert_exact(&r, &[("modified", t.clone()), ("modified", u.clone())]);
    let et = entry(&r, "modified", &t);
    assert_eq!(et["kind"], "dir", "{et}");
    assert!(changes(et).contains(&"type".to_string()), "{et}");
    let eu = entry(&r, "modified", &u);
    assert_eq!(eu["kind"], "file", "{eu}");
    assert!(changes(eu).contains(&"type".to_string()), "{eu}");
    assert_eq!(eu["sha256"], sha256_hex(b"now-a-file\n"), "{eu}");
    fx.finish();
}

#[test]
fn fifos_are_kept_and_device_nodes_refused() {
    let fx = Fixture::new();
    let r = run_case(
        &fx,
        "mkfifo p\nchmod 0640 p\n\
         \"$PROBE\" mknod devnode c > mknod.out\n\
         \"$PROBE\" mknod blknode b >> mknod.out\n\
         test \"$(grep -c '\"ret\":-1' mknod.out)\" = 2\n\
         rm mknod.out",
    );
    let p = fx.dir().join("p");
    assert_exact(&r, &[("added", p.clone())]);
    let e = entry(&r, "added", &p);
    assert_eq!(e["kind"], "fifo", "{e}");
    assert_eq!(e["mode"], "0640", "{e}");
    fx.finish();
}

/// Many operations in one world; the host (project dir, /etc/hostname,
/// /etc/debian_version) is byte- and metadata-identical afterwards, and the
/// report shows each change.
#[test]
fn host_files_are_never_modified() {
    let fx = Fixture::new();
    fx.write("edit.txt", b"edit me\n", 0o644);
    fx.write("del.txt", b"delete me\n", 0o644);
    fx.write("ren_src.txt", b"rename me\n", 0o644);
    fx.write("mode.txt", b"chmod me\n", 0o644);
    fx.write("hl.txt", b"hard link me\n", 0o644);
    fx.write("tree/a", b"a\n", 0o644);
    fx.write("dir_ren/inner", b"inner\n", 0o644);
    let etc = [Path::new("/etc/hostname"), Path::new("/etc/debian_version")];
    let etc_before: Vec<Option<Node>> = etc.iter().map(|p| node_of(p)).collect();
    let project_before = tree_snapshot(fx.dir());

    let o = fx.sh::<&str>(
        &[],
        "umask 022\n\
         echo new > added.txt\n\
         printf more >> edit.txt\n\
         rm del.txt\n\
         mv ren_src.txt ren_dst.txt\n\
         mv dir_ren dir_ren2\n\
         chmod 0755 mode.txt\n\
         ln hl.txt hl2.txt\n\
         rm -rf tree && mkdir tree\n\
         ln -s /etc/hostname via_link\n\
         echo through-a-symlink >> via_link\n\
         rm /etc/debian_version\n\
         \"$PROBE\" mknod devnode c\n\
         exit 0",
    );
    o.expect_code(0);
    let mknod = o.one();
    assert_eq!(mknod["ret"], -1, "mknod of a char device worked: {mknod}");

    assert_same_tree(fx.dir(), &project_before, &tree_snapshot(fx.dir()));
    for (p, before) in etc.iter().zip(&etc_before) {
        assert_eq!(&node_of(p), before, "host {} changed", p.display());
    }

    let r = o.report();
    check_shape(&r);
    let d = fx.dir();
    for (list, p) in [
        ("added", d.join("added.txt")),
        ("modified", d.join("edit.txt")),
        ("deleted", d.join("del.txt")),
        ("deleted", d.join("ren_src.txt")),
        ("added", d.join("ren_dst.txt")),
        ("deleted", d.join("dir_ren")),
        ("added", d.join("dir_ren2")),
        ("added", d.join("dir_ren2/inner")),
        ("modified", d.join("mode.txt")),
        ("added", d.join("hl2.txt")),
        ("deleted", d.join("tree/a")),
        ("added", d.join("via_link")),
        ("modified", "/etc/hostname".into()),
        ("deleted", "/etc/debian_version".into()),
    ] {
        assert!(find_entry(&r, list, &p).is_some(), "fs_diff lacks {list} {}: {:#}", p.display(), r["fs_diff"]);
    }
    for list in ["added", "modified", "deleted"] {
        assert!(find_entry(&r, list, &d.join("devnode")).is_none(), "a refused mknod shows in fs_diff.{list}");
    }
    fx.finish();
}

/// A separate host filesystem below `/` (here a tmpfs mounted inside the
/// project, like a data disk or a tmpfs /tmp): the world sees its content,
/// its writes there are captured in the fs_diff at the right paths, the host
/// filesystem is untouched, and a cwd inside it works.
#[test]
fn writes_on_another_host_filesystem_are_captured() {
    let fx = Fixture::new();
    let data = fx.mkdir("data");
    struct Unmount(PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let c = std::ffi::CString::new(self.0.as_os_str().as_encoded_bytes()).unwrap();
            // SAFETY: valid NUL-terminated path.
            unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
        }
    }
    let status = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=4m", "cloche-test-data"])
        .arg(&data)
        .status()
        .unwrap();
    assert!(status.success(), "mount a tmpfs for the test");
    let _unmount = Unmount(data.clone());
    std::fs::write(data.join("host.txt"), b"host\n").unwrap();
    let before = tree_snapshot(&data);

    let o = fx.sh(
        &[] as &[&str],
        "cat data/host.txt && echo new > data/new.txt && echo more >> data/host.txt && rm -f data/gone",
    );
    o.expect_code(0);
    assert_eq!(o.stdout, b"host\n");
    let r = o.report();
    assert!(find_entry(&r, "added", &data.join("new.txt")).is_some(), "{r:#}");
    let m = find_entry(&r, "modified", &data.join("host.txt")).expect("host.txt modified");
    assert_eq!(string_list(&m["changes"]), vec!["content"]);
    assert_eq!(r["fs_diff"]["totals"]["added"], 1);
    assert_eq!(r["fs_diff"]["totals"]["modified"], 1);
    assert_same_tree(&data, &before, &tree_snapshot(&data));

    // The world's cwd may lie on that filesystem.
    let mut cmd = fx.command();
    cmd.current_dir(&data);
    let o = fx.run_with(cmd, &[] as &[&str], &["pwd"]);
    o.expect_code(0);
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), data.to_str().unwrap());
    drop(_unmount);
    fx.finish();
}
