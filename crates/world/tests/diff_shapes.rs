//! fs_diff against a real overlay (root, real kernel): symlinks, type changes,
//! hard links, special modes and files, non-UTF-8 names, flags, and upper trees
//! built directly with hostile shapes. The helpers are in `support/mod.rs`.

mod support;

use std::fs::File;
use std::os::fd::AsFd;
use std::sync::mpsc;
use std::time::Duration;

use base64::Engine as _;
use cloche_world::diff::{compute, DiffError, DiffOptions, FsDiff, RawPath};
use serde_json::json;

use support::*;

#[test]
fn symlinks_target_and_type() {
    let w = World::new("ln -s a lnk; echo f > f");
    w.run("ln -sfn b lnk; rm f; ln -s /etc f; ln -s target newlink");
    let sl = |p: &str, t: &str| json!({"path": p, "kind": "symlink", "size": t.len(), "uid": 0, "gid": 0, "target": t});
    expect(
        &w.diff(),
        json!([sl("/newlink", "target")]),
        json!([changed(sl("/f", "/etc"), &["type"]), changed(sl("/lnk", "b"), &["target"])]),
        empty(),
        empty(),
        0,
    );
}

#[test]
fn symlink_to_etc_is_not_followed() {
    // /d was a lower dir; the world replaces it with a symlink to the host's
    // /etc, and adds more links to / and /etc. Nothing behind them is listed.
    let w = World::new("mkdir d; echo x > d/x");
    w.run("rm -rf d; ln -s /etc d; ln -s / root; ln -s ../../../../etc up");
    let sl = |p: &str, t: &str| json!({"path": p, "kind": "symlink", "size": t.len(), "uid": 0, "gid": 0, "target": t});
    expect(
        &w.diff(),
        json!([sl("/root", "/"), sl("/up", "../../../../etc")]),
        json!([changed(sl("/d", "/etc"), &["type"])]),
        empty(),
        empty(),
        0,
    );
}

#[test]
fn lower_symlink_is_not_followed_either() {
    // lower /lnk -> sub (a dir holding passwd); the world makes /lnk a real
    // dir with the same passwd. Following the lower link would hide it.
    let w = World::new("mkdir sub; printf x > sub/passwd; ln -s sub lnk");
    w.run("rm lnk; mkdir lnk; printf x > lnk/passwd; touch -d @978307200 lnk/passwd");
    expect(
        &w.diff(),
        json!([file("/lnk/passwd", b"x", "0644")]),
        json!([changed(dir("/lnk"), &["type"])]),
        empty(),
        empty(),
        1,
    );
}

#[test]
fn type_change_file_to_dir() {
    let w = World::new("echo f > f; mkdir d; echo x > d/x");
    w.run("rm f; mkdir f; echo x > f/x; rm -rf d; echo nowfile > d");
    expect(
        &w.diff(),
        json!([file("/f/x", b"x\n", "0644")]),
        json!([changed(file("/d", b"nowfile\n", "0644"), &["type"]), changed(dir("/f"), &["type"]),]),
        empty(),
        empty(),
        10,
    );
}

#[test]
fn hard_links() {
    let w = World::new("echo lower > l1");
    w.run("echo hi > n1; ln n1 n2; ln l1 l1b");
    let l1b = with(file("/l1b", b"lower\n", "0644"), json!({"links_to": "/l1"}));
    let n2 = with(file("/n2", b"hi\n", "0644"), json!({"links_to": "/n1"}));
    expect_touched(
        &w.diff(),
        json!([l1b, file("/n1", b"hi\n", "0644"), n2]),
        empty(),
        empty(),
        // the link copied l1 up, as it was
        json!([touched("/l1", "file", false)]),
        json!([flag("/l1b", "hard link"), flag("/n1", "hard link"), flag("/n2", "hard link")]),
        // each inode counted once
        6 + 3,
    );
}

#[test]
fn setuid_setgid_world_writable() {
    let w = World::new("echo t > tool");
    w.run(
        "echo s > s; chmod 4755 s; echo g > g; chmod 2711 g; echo w > ww; chmod 666 ww
         mkdir pub; chmod 1777 pub; chmod 4755 tool",
    );
    expect(
        &w.diff(),
        json!([
            file("/g", b"g\n", "2711"),
            with(dir("/pub"), json!({"mode": "1777"})),
            file("/s", b"s\n", "4755"),
            file("/ww", b"w\n", "0666"),
        ]),
        json!([changed(file("/tool", b"t\n", "4755"), &["mode"])]),
        empty(),
        json!([
            flag("/g", "setgid"),
            flag("/g", "executable"),
            flag("/pub", "world-writable"),
            flag("/s", "setuid"),
            flag("/s", "executable"),
            flag("/tool", "setuid"),
            flag("/tool", "executable"),
            flag("/ww", "world-writable"),
        ]),
        8,
    );
}

#[test]
fn device_fifo_socket_do_not_block() {
    let w = World::new("mkfifo lf; echo x > f");
    w.run(
        "mknod cdev c 1 3; mknod bdev b 7 0; mkfifo ff; chmod 600 lf
         python3 -c 'import socket; socket.socket(socket.AF_UNIX).bind(\"sock\")'",
    );
    // the upper file "f" made a FIFO behind overlay's back: never opened
    sh(&w.upper, "mkfifo f");
    let (tx, rx) = mpsc::channel();
    let upper = w.upper.clone();
    let lower = w.lower.clone();
    std::thread::spawn(move || {
        let u = File::open(&upper).unwrap();
        let l = File::open(&lower).unwrap();
        let _ = tx.send(compute(u.as_fd(), l.as_fd(), &DiffOptions::default()));
    });
    let d = rx.recv_timeout(Duration::from_secs(20)).expect("diff blocked").expect("diff");
    let added = json!([
        json!({"path": "/bdev", "kind": "block", "mode": "0644", "uid": 0, "gid": 0, "rdev": "7:0"}),
        json!({"path": "/cdev", "kind": "char", "mode": "0644", "uid": 0, "gid": 0, "rdev": "1:3"}),
        json!({"path": "/ff", "kind": "fifo", "mode": "0644", "uid": 0, "gid": 0}),
        json!({"path": "/sock", "kind": "socket", "mode": "0755", "uid": 0, "gid": 0}),
    ]);
    let flags = json!([
        flag("/bdev", "device node"),
        flag("/cdev", "device node"),
        flag("/f", "fifo"),
        flag("/ff", "fifo"),
        flag("/lf", "fifo"),
        flag("/sock", "socket"),
    ]);
    expect(
        &d,
        added,
        json!([
            {"path": "/f", "kind": "fifo", "changes": ["type"], "mode": "0644", "uid": 0, "gid": 0},
            {"path": "/lf", "kind": "fifo", "changes": ["mode"], "mode": "0600", "uid": 0, "gid": 0},
        ]),
        empty(),
        flags,
        0,
    );
}

#[test]
fn non_utf8_names_are_lossless() {
    let w = World::new("mkdir srv");
    w.run("printf x > \"srv/$(printf 'caf\\351')\"; ln -s \"$(printf '\\377t')\" srv/badlink");
    let d = w.diff();
    let raw_path = b"/srv/caf\xe9".to_vec();
    let b64 = base64::engine::general_purpose::STANDARD.encode(&raw_path);
    let tb64 = base64::engine::general_purpose::STANDARD.encode(b"\xfft");
    expect(
        &d,
        json!([
            {"path": "/srv/badlink", "kind": "symlink", "size": 2, "uid": 0, "gid": 0, "target_b64": tb64},
            {"path_b64": b64, "kind": "file", "size": 1, "mode": "0644", "uid": 0, "gid": 0, "sha256": sha(b"x")},
        ]),
        empty(),
        empty(),
        empty(),
        1,
    );
    let back: FsDiff = serde_json::from_str(&serde_json::to_string(&d).unwrap()).unwrap();
    assert_eq!(back.added[1].path, RawPath::from_bytes(raw_path));
    assert_eq!(back.added[0].target.as_ref().unwrap().as_bytes(), b"\xfft");
}

#[test]
fn git_hooks_flagged() {
    let w = World::new("mkdir app");
    w.run(
        "mkdir -p app/.git/hooks && printf '#!/bin/sh\\n' > app/.git/hooks/pre-commit
         chmod 755 app/.git/hooks/pre-commit && printf c > app/.git/config",
    );
    expect(
        &w.diff(),
        json!([
            dir("/app/.git"),
            file("/app/.git/config", b"c", "0644"),
            dir("/app/.git/hooks"),
            file("/app/.git/hooks/pre-commit", b"#!/bin/sh\n", "0755"),
        ]),
        empty(),
        empty(),
        json!([
            flag("/app/.git", "under .git"),
            flag("/app/.git/config", "under .git"),
            flag("/app/.git/hooks", "under .git"),
            flag("/app/.git/hooks/pre-commit", "executable"),
            flag("/app/.git/hooks/pre-commit", "git hook"),
        ]),
        11,
    );
}

// ---- upper trees built directly (no overlay): hostile shapes ----

#[test]
fn direct_whiteouts_and_opaque() {
    let w = World::new("mkdir -p o/s; echo a > o/a; echo b > o/s/b; echo g > gone; mkdir keep; echo k > keep/k");
    sh(&w.upper, "mknod ghost c 0 0; mknod gone c 0 0; mkdir -p o/s keep; echo n > o/s/n; mknod o/a c 0 0");
    sh(&w.upper, &format!("touch -d {OLD} o o/s keep"));
    set_xattr(&w.upper.join("o"), "trusted.overlay.opaque", b"y");
    // not opaque: "x" and other overlay attributes are ignored
    set_xattr(&w.upper.join("keep"), "trusted.overlay.opaque", b"x");
    set_xattr(&w.upper.join("keep"), "trusted.overlay.origin", b"\0junk");
    expect_touched(
        &w.diff(),
        json!([file("/o/s/n", b"n\n", "0644")]),
        empty(),
        json!([
            {"path": "/gone", "kind": "file"},
            {"path": "/o/a", "kind": "file"},
            {"path": "/o/s/b", "kind": "file"},
        ]),
        // not opaque, nothing below, as in the lower
        json!([touched("/keep", "dir", false)]),
        empty(),
        2,
    );
}

#[test]
fn deep_trees() {
    use nix::fcntl::{openat, OFlag};
    use nix::sys::stat::{mkdirat, Mode};
    let w = World::new("true");
    let mkchain = |name: &str, depth: usize| {
        let mut fd = nix::fcntl::open(&w.upper, OFlag::O_DIRECTORY, Mode::empty()).unwrap();
        for _ in 0..depth {
            mkdirat(&fd, name, Mode::from_bits_truncate(0o755)).unwrap();
            fd = openat(&fd, name, OFlag::O_DIRECTORY, Mode::empty()).unwrap();
        }
    };
    // deeper than PATH_MAX in bytes, within the depth limit
    mkchain("deep", 2000);
    let d = w.try_diff(&DiffOptions { hash: true, max_entries: 10, ..DiffOptions::default() }).unwrap();
    assert_eq!(d.totals.added, 2000);
    assert!(d.truncated);
    // beyond the depth limit: an error naming the path
    mkchain("x", cloche_world::diff::MAX_DEPTH + 1);
    match w.try_diff(&DiffOptions::default()) {
        Err(DiffError::TooDeep { path, .. }) => assert!(path.starts_with("/x/x/x")),
        other => panic!("expected TooDeep, got {other:?}"),
    }
}

#[test]
fn sparse_upper_is_compared_cheaply() {
    // 2 GiB sparse lower files, copied up by a touch (big) and by a write of
    // one byte at the end (big2): the comparison skips the holes; big is
    // only touched; big2 is modified and its hash refused (flagged) rather
    // than reading 2 GiB.
    let w =
        World::new("for f in big big2; do truncate -s 2G $f; printf data | dd of=$f conv=notrunc status=none; done");
    w.run("touch big; printf x | dd of=big2 bs=1 seek=2147483647 conv=notrunc status=none");
    let t = std::time::Instant::now();
    let d = w.diff();
    assert!(t.elapsed() < Duration::from_secs(10), "took {:?}", t.elapsed());
    let size = 2u64 << 30;
    expect_touched(
        &d,
        empty(),
        json!([{"path": "/big2", "kind": "file", "changes": ["content"], "size": size,
                "mode": "0644", "uid": 0, "gid": 0}]),
        empty(),
        json!([touched("/big", "file", true)]),
        json!([flag("/big2", "sparse")]),
        size,
    );
}
