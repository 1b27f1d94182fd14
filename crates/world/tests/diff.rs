//! fs_diff against a real overlay (root, real kernel): contents, metadata,
//! deletions, renames, order, truncation and the JSON contract. Links, file
//! types, special files and hostile upper trees are in `diff_shapes.rs`.
//!
//! Each test populates a lower directory, then runs a shell script in a child
//! process that enters a private mount namespace, mounts the overlay (the
//! engine's options) and works through the merged directory. The child's
//! mounts die with it; the parent then diffs the upper against the lower.

mod support;

use std::os::fd::AsFd;

use cloche_world::diff::{compute, DiffOptions, FsDiff};
use serde_json::{json, Value};

use support::*;

#[test]
fn create_file() {
    let w = World::new("mkdir -p srv/app");
    w.run("echo hello > srv/app/new.txt");
    let d = w.diff();
    expect(&d, json!([file("/srv/app/new.txt", b"hello\n", "0644")]), empty(), empty(), empty(), 6);
}

#[test]
fn create_then_delete_is_absent() {
    let w = World::new("mkdir srv");
    w.run("echo x > srv/t; rm srv/t; mkdir -p srv/a/b; rmdir srv/a/b srv/a; echo y > top; rm top");
    let d = w.diff();
    assert!(d.is_empty());
    // srv was copied up and its mtime changed, nothing below it is left
    expect_touched(&d, empty(), empty(), empty(), json!([touched("/srv", "dir", true)]), empty(), 0);
}

#[test]
fn modify_content() {
    let w = World::new("mkdir etc; printf 'a\\n' > etc/hosts");
    w.run("echo b >> etc/hosts");
    expect(
        &w.diff(),
        empty(),
        json!([changed(file("/etc/hosts", b"a\nb\n", "0644"), &["content"])]),
        empty(),
        empty(),
        4,
    );
}

#[test]
fn same_size_content_change() {
    let w = World::new("mkdir etc; printf 'aaaa' > etc/f");
    w.run("printf 'aaab' > etc/f; touch -d @978307200 etc/f");
    expect(&w.diff(), empty(), json!([changed(file("/etc/f", b"aaab", "0644"), &["content"])]), empty(), empty(), 4);
}

#[test]
fn chmod_only() {
    let w = World::new("mkdir etc; printf 'a\\n' > etc/hosts; printf 'b' > etc/tool");
    w.run("chmod 600 etc/hosts; chmod 755 etc/tool");
    expect(
        &w.diff(),
        empty(),
        json!([
            changed(file("/etc/hosts", b"a\n", "0600"), &["mode"]),
            changed(file("/etc/tool", b"b", "0755"), &["mode"]),
        ]),
        empty(),
        json!([flag("/etc/tool", "executable")]),
        3,
    );
}

#[test]
fn chown_only() {
    let w = World::new("mkdir etc; printf 'a' > etc/f");
    w.run("chown 1000:1001 etc/f etc");
    expect(
        &w.diff(),
        empty(),
        json!([
            changed(with(dir("/etc"), json!({"uid": 1000, "gid": 1001})), &["owner"]),
            changed(with(file("/etc/f", b"a", "0644"), json!({"uid": 1000, "gid": 1001})), &["owner"]),
        ]),
        empty(),
        empty(),
        1,
    );
}

#[test]
fn touch_only() {
    let w = World::new("mkdir etc; printf 'a\\n' > etc/hosts");
    w.run("touch etc/hosts");
    let t = json!([touched("/etc/hosts", "file", true)]);
    expect_touched(&w.diff(), empty(), empty(), empty(), t, empty(), 0);
}

#[test]
fn open_for_write_without_writing_is_touched() {
    let w = World::new("mkdir etc; printf 'a\\n' > etc/hosts");
    w.run(": >> etc/hosts");
    assert!(w.upper.join("etc/hosts").exists(), "copy-up expected");
    let t = json!([touched("/etc/hosts", "file", false)]);
    expect_touched(&w.diff(), empty(), empty(), empty(), t, empty(), 0);
}

#[test]
fn delete_lower_file_and_dir() {
    let w = World::new("mkdir -p etc d/sub; echo a > etc/hosts; echo x > d/x; echo z > d/sub/z");
    w.run("rm etc/hosts; rm -rf d");
    expect(
        &w.diff(),
        empty(),
        empty(),
        json!([{"path": "/d", "kind": "dir"}, {"path": "/etc/hosts", "kind": "file"}]),
        empty(),
        0,
    );
}

#[test]
fn opaque_dir_replaces_lower() {
    let w = World::new("mkdir -p d/sub; echo x > d/x; echo y > d/y; printf k > d/keep; echo z > d/sub/z");
    w.run(
        "rm -rf d && mkdir d && echo x > d/new
         printf k > d/keep && touch -d @978307200 d/keep
         mkdir d/sub && echo n > d/sub/n",
    );
    let opaque = xattr(&w.upper.join("d"), "trusted.overlay.opaque");
    assert_eq!(opaque.as_deref(), Some(&b"y"[..]), "overlay made d opaque");
    expect_touched(
        &w.diff(),
        json!([file("/d/new", b"x\n", "0644"), file("/d/sub/n", b"n\n", "0644")]),
        empty(),
        json!([
            {"path": "/d/sub/z", "kind": "file"},
            {"path": "/d/x", "kind": "file"},
            {"path": "/d/y", "kind": "file"},
        ]),
        // written again as it was
        json!([touched("/d/keep", "file", false)]),
        empty(),
        4,
    );
}

#[test]
fn rename_lower_dir() {
    let w = World::new("mkdir -p srv/old/b; echo a > srv/old/a; echo c > srv/old/b/c");
    w.run("mv srv/old srv/new");
    expect(
        &w.diff(),
        json!([
            dir("/srv/new"),
            file("/srv/new/a", b"a\n", "0644"),
            dir("/srv/new/b"),
            file("/srv/new/b/c", b"c\n", "0644"),
        ]),
        empty(),
        json!([{"path": "/srv/old", "kind": "dir"}]),
        empty(),
        4,
    );
}

#[test]
fn rename_file() {
    let w = World::new("mkdir etc; echo h > etc/hosts");
    w.run("mv etc/hosts etc/hosts2");
    expect(
        &w.diff(),
        json!([file("/etc/hosts2", b"h\n", "0644")]),
        empty(),
        json!([{"path": "/etc/hosts", "kind": "file"}]),
        empty(),
        2,
    );
}

#[test]
fn many_new_names_in_a_small_lower_dir() {
    // 40 upper names over a one-block lower dir: the lower dir is listed
    // once instead of looked up per name; results must be the same.
    let w = World::new("mkdir srv; echo a > srv/a; echo b > srv/b; echo c > srv/c");
    w.run("for i in $(seq 10 49); do echo $i > srv/n$i; done; echo more >> srv/a; chmod 700 srv/b; rm srv/c");
    let d = w.diff();
    let added: Vec<Value> =
        (10..50).map(|i| file(&format!("/srv/n{i}"), format!("{i}\n").as_bytes(), "0644")).collect();
    let flags = json!([flag("/srv/b", "executable")]);
    expect(
        &d,
        Value::Array(added),
        json!([
            changed(file("/srv/a", b"a\nmore\n", "0644"), &["content"]),
            changed(file("/srv/b", b"b\n", "0700"), &["mode"]),
        ]),
        json!([{"path": "/srv/c", "kind": "file"}]),
        flags,
        40 * 3 + 7 + 2,
    );
}

const MIXED_LOWER: &str = "mkdir -p etc srv/old a-b; echo h > etc/hosts; echo o > srv/old/o";
const MIXED_WORLD: &str = "echo x >> etc/hosts; mv srv/old srv/new; mkdir -p a/b z; \
    for i in 5 3 9 1 7; do echo $i > z/f$i; echo $i > a/b/g$i; done; echo q > a-b/q; ln z/f1 a/l";

#[test]
fn deterministic_order() {
    let w = World::new(MIXED_LOWER);
    w.run(MIXED_WORLD);
    let a = serde_json::to_vec(&w.diff()).unwrap();
    let b = serde_json::to_vec(&w.diff()).unwrap();
    assert_eq!(a, b);
    // the same fds (even O_PATH ones) serve several diffs
    let u = nix::fcntl::open(&w.upper, nix::fcntl::OFlag::O_PATH, nix::sys::stat::Mode::empty());
    let l = nix::fcntl::open(&w.lower, nix::fcntl::OFlag::O_PATH, nix::sys::stat::Mode::empty());
    let (u, l) = (u.unwrap(), l.unwrap());
    for _ in 0..2 {
        let d = compute(u.as_fd(), l.as_fd(), &DiffOptions::default()).unwrap();
        assert_eq!(serde_json::to_vec(&d).unwrap(), a);
    }
    let d = w.diff();
    for list in [&d.added, &d.modified, &d.deleted] {
        let paths: Vec<_> = list.iter().map(|e| e.path.as_bytes().to_vec()).collect();
        let mut sorted = paths.clone();
        sorted.sort();
        assert_eq!(paths, sorted);
    }
    // "/a-b/q" sorts before "/a/..." in byte order ('-' < '/')
    assert_eq!(d.added[0].path.as_bytes(), b"/a");
    assert_eq!(d.added[1].path.as_bytes(), b"/a-b/q");
    // the smallest path of the hard-link pair is "/a/l"
    let f1 = d.added.iter().find(|e| e.path.as_bytes() == b"/z/f1").unwrap();
    assert_eq!(f1.links_to.as_ref().unwrap().as_bytes(), b"/a/l");
}

#[test]
fn max_entries_truncates_but_counts() {
    let w = World::new(MIXED_LOWER);
    w.run(MIXED_WORLD);
    let full = w.diff();
    assert!(!full.truncated);
    let opts = DiffOptions { hash: false, max_entries: 4, ..DiffOptions::default() };
    let d = w.try_diff(&opts).unwrap();
    assert!(d.truncated);
    assert_eq!(d.totals, full.totals);
    assert_eq!(d.added.len() + d.modified.len() + d.deleted.len(), 4);
    // the first four paths in byte order across the three lists
    let mut all: Vec<_> =
        full.added.iter().chain(&full.modified).chain(&full.deleted).map(|e| e.path.clone()).collect();
    all.sort();
    let mut kept: Vec<_> = d.added.iter().chain(&d.modified).chain(&d.deleted).map(|e| e.path.clone()).collect();
    kept.sort();
    assert_eq!(kept, all[..4].to_vec());
    assert!(d.added.iter().all(|e| e.sha256.is_none()));
    let zero = w.try_diff(&DiffOptions { hash: true, max_entries: 0, ..DiffOptions::default() }).unwrap();
    assert!(zero.truncated && zero.added.is_empty() && zero.flags.is_empty());
    assert_eq!(zero.totals, full.totals);
}

#[test]
fn json_contract_checks() {
    let ok = r#"{"added":[{"path":"/a","kind":"file","size":1,"mode":"4755","rdev":"1:3"}],
        "modified":[],"deleted":[],"flags":[{"path_b64":"L2Pp","why":"git hook"}],
        "totals":{"added":1,"modified":0,"deleted":0,"bytes":1},"truncated":false}"#;
    let d: FsDiff = serde_json::from_str(ok).unwrap();
    assert_eq!(d.added[0].mode, Some(0o4755));
    assert_eq!(d.added[0].rdev, Some((1, 3)));
    assert_eq!(d.flags[0].path.as_bytes(), b"/c\xe9");
    for bad in [
        r#"{"path":"/a","path_b64":"L2E=","kind":"file"}"#,
        r#"{"kind":"file"}"#,
        r#"{"path":"/a","kind":"file","mode":"644"}"#,
        r#"{"path":"/a","kind":"file","mode":"9999"}"#,
        r#"{"path":"/a","kind":"weird"}"#,
        r#"{"path_b64":"***","kind":"file"}"#,
    ] {
        assert!(serde_json::from_str::<cloche_world::diff::Entry>(bad).is_err(), "accepted {bad}");
    }
}
