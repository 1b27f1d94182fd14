//! fs_diff against a real overlay (root, real kernel): paths the world wrote
//! but left as the base has them are `touched`, never `modified`; real
//! changes next to them still are. Helpers: `support/mod.rs`.

mod support;

use cloche_world::diff::{delta, DiffOptions};
use serde_json::json;

use support::*;

/// Content-identical rewrites of every usual kind: none is modified, each
/// is touched, with `mtime` when its mtime moved.
#[test]
fn identical_rewrites_are_touched() {
    let w = World::new(
        "mkdir -p src/sub; printf 'x = 1\\n' > src/sed.txt; printf 'cp\\n' > src/cp.txt; \
         printf 't\\n' > src/touch.txt; printf 'm\\n' > src/mode.txt; printf 'b\\n' > src/back.txt; \
         printf 'c\\n' > src/sub/c; ln -s sed.txt src/link; mkdir stamp; printf 'q\\n' > stamp/q",
    );
    w.run(
        "sed -i s/x/x/ src/sed.txt\n\
         cp -p src/cp.txt cp.tmp && mv cp.tmp src/cp.txt\n\
         touch src/touch.txt\n\
         chmod 644 src/mode.txt\n\
         chmod 600 src/back.txt && chmod 644 src/back.txt\n\
         ln -sfn sed.txt src/link\n\
         touch stamp",
    );
    expect_touched(
        &w.diff(),
        empty(),
        empty(),
        empty(),
        json!([
            touched("/src/back.txt", "file", false),
            // cp -p keeps the mtime
            touched("/src/cp.txt", "file", false),
            touched("/src/link", "symlink", true),
            touched("/src/mode.txt", "file", false),
            touched("/src/sed.txt", "file", true),
            touched("/src/touch.txt", "file", true),
            // a directory with nothing below it listed and a new mtime
            touched("/stamp", "dir", true),
        ]),
        empty(),
        0,
    );
}

/// Next to touched paths, real changes are reported as before: content of
/// the same size (hashed after the comparison found a difference, also past
/// the first buffer), mode, owner, symlink target; a directory that only
/// holds changes is not listed itself.
#[test]
fn real_changes_next_to_touched_ones() {
    let w = World::new(
        "mkdir d; head -c 200000 /dev/zero > d/big; cp d/big d/big_mode; printf 'aa' > d/same; \
         printf 'o' > d/own; ln -s a d/link; printf 'k' > d/keep",
    );
    w.run(
        "printf 'Z' | dd of=d/big bs=1 seek=150000 conv=notrunc status=none\n\
         printf 'Z' | dd of=d/big_mode bs=1 seek=150000 conv=notrunc status=none && chmod 600 d/big_mode\n\
         printf 'ab' > d/same\n\
         chown 1:2 d/own\n\
         ln -sfn b d/link\n\
         touch d/keep",
    );
    let mut big = vec![0u8; 200_000];
    big[150_000] = b'Z';
    expect_touched(
        &w.diff(),
        empty(),
        json!([
            changed(file("/d/big", &big, "0644"), &["content"]),
            changed(file("/d/big_mode", &big, "0600"), &["content", "mode"]),
            changed(
                json!({"path": "/d/link", "kind": "symlink", "size": 1, "uid": 0, "gid": 0, "target": "b"}),
                &["target"]
            ),
            changed(
                json!({"path": "/d/own", "kind": "file", "size": 1, "mode": "0644", "uid": 1, "gid": 2,
                           "sha256": sha(b"o")}),
                &["owner"]
            ),
            changed(file("/d/same", b"ab", "0644"), &["content"]),
        ]),
        empty(),
        json!([touched("/d/keep", "file", true)]),
        empty(),
        200_000 * 2 + 1 + 2,
    );
}

/// Without hashing, the same classification.
#[test]
fn touched_without_hashing() {
    let w = World::new("printf 'a' > a; printf 'b' > b");
    w.run("sed -i s/a/a/ a; printf 'c' > b");
    let d = w.try_diff(&DiffOptions { hash: false, max_entries: 100, ..DiffOptions::default() }).unwrap();
    let paths = |v: &[cloche_world::diff::Entry]| v.iter().map(|e| e.path.to_string()).collect::<Vec<_>>();
    assert_eq!(paths(&d.modified), ["/b"]);
    assert_eq!(paths(&d.touched), ["/a"]);
    assert!(d.modified[0].sha256.is_none());
}

/// A flood of touched paths has its own bound: it never truncates the real
/// changes (a commit refuses a truncated diff); `totals.touched` counts all.
#[test]
fn touched_paths_do_not_truncate_the_changes() {
    let w = World::new("mkdir t; cd t; for i in $(seq 50); do echo $i > f$i; done; echo z > ../z");
    w.run("touch t/*; echo changed > z");
    let d = w.try_diff(&DiffOptions { hash: true, max_entries: 10, ..DiffOptions::default() }).unwrap();
    assert!(!d.truncated, "{d:?}");
    assert_eq!(d.modified.len(), 1);
    assert_eq!(d.totals.touched, 50);
    assert_eq!(d.touched.len(), 10);
    // the smallest paths, in order
    let mut want: Vec<String> = (1..=50).map(|i| format!("/t/f{i}")).collect();
    want.sort();
    let got: Vec<String> = d.touched.iter().map(|e| e.path.to_string()).collect();
    assert_eq!(got, want[..10]);
}

/// Per-entry deltas of a batch: a file touched by one step and really
/// changed by the next is the next step's change; a change undone by a
/// content-identical rewrite is a change of the step that undid it.
#[test]
fn deltas_between_steps() {
    let w = World::new("printf 'one\\n' > f; printf 'two\\n' > g; mkdir d");
    w.run("touch f; chmod 600 g");
    let s1 = w.diff();
    w.run("echo more >> f; chmod 644 g; touch d");
    let s2 = w.diff();
    w.run("echo new > d/n");
    let s3 = w.diff();
    let names = |v: &[cloche_world::diff::Entry]| v.iter().map(|e| e.path.to_string()).collect::<Vec<_>>();
    let d1 = delta(&Default::default(), &s1);
    assert_eq!((names(&d1.modified), names(&d1.touched)), (vec!["/g".to_string()], vec!["/f".to_string()]));
    let d2 = delta(&s1, &s2);
    assert_eq!(names(&d2.modified), ["/f", "/g"], "{d2:?}");
    assert_eq!(json!(d2.modified[0].changes), json!(["content"]));
    // g went back to its base mode: the change undone is named
    assert_eq!(json!(d2.modified[1].changes), json!(["mode"]));
    assert_eq!(names(&d2.touched), ["/d"]);
    assert!(d2.added.is_empty() && d2.deleted.is_empty());
    // d is no longer touched (something below it changed): no change of d
    let d3 = delta(&s2, &s3);
    assert_eq!(names(&d3.added), ["/d/n"]);
    assert!(d3.modified.is_empty() && d3.touched.is_empty() && d3.deleted.is_empty(), "{d3:?}");
}
