//! fs_diff against a real overlay (root, real kernel).
//!
//! Each test populates a lower directory, then runs a shell script in a child
//! process that enters a private mount namespace, mounts the overlay (the
//! engine's options) and works through the merged directory. The child's
//! mounts die with it; the parent then diffs the upper against the lower.

use std::ffi::CString;
use std::fs::File;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use base64::Engine as _;
use cloche_world::diff::{compute, DiffError, DiffOptions, FsDiff, RawPath};
use nix::mount::{mount, MsFlags};
use nix::sched::{unshare, CloneFlags};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::os::fd::AsFd;

/// Old fixed mtime for every lower entry (2001-01-01), so a `touch` shows.
const OLD: &str = "@978307200";

struct World {
    _dir: tempfile::TempDir,
    lower: PathBuf,
    upper: PathBuf,
    work: PathBuf,
    merged: PathBuf,
}

fn sh(cwd: &Path, script: &str) {
    let st = Command::new("/bin/sh")
        .arg("-ec")
        .arg(format!("umask 022\n{script}"))
        .current_dir(cwd)
        .stdin(Stdio::null())
        .status()
        .expect("spawn sh");
    assert!(st.success(), "script failed ({st}):\n{script}");
}

impl World {
    /// A world whose lower is populated by `setup` (run in the lower dir).
    fn new(setup: &str) -> World {
        let dir = tempfile::tempdir().expect("tempdir");
        let w = World {
            lower: dir.path().join("lower"),
            upper: dir.path().join("upper"),
            work: dir.path().join("work"),
            merged: dir.path().join("merged"),
            _dir: dir,
        };
        for d in [&w.lower, &w.upper, &w.work, &w.merged] {
            std::fs::create_dir(d).unwrap();
        }
        std::fs::set_permissions(&w.upper, std::fs::Permissions::from_mode(0o755)).unwrap();
        sh(&w.lower, &format!("{setup}\nfind . -exec touch -h -d {OLD} {{}} +"));
        w
    }

    /// Runs `script` in the world (cwd = the merged root).
    fn run(&self, script: &str) {
        let opts = format!(
            "lowerdir={},upperdir={},workdir={},redirect_dir=off,metacopy=off,index=off,xino=off",
            self.lower.display(),
            self.upper.display(),
            self.work.display()
        );
        let opts = CString::new(opts).unwrap();
        let merged = CString::new(self.merged.as_os_str().as_bytes()).unwrap();
        let mut cmd = Command::new("/bin/sh");
        cmd.arg("-ec").arg(format!("umask 022\n{script}")).stdin(Stdio::null());
        // SAFETY: only system calls between fork and exec (no allocation).
        unsafe {
            cmd.pre_exec(move || {
                unshare(CloneFlags::CLONE_NEWNS)?;
                mount(None::<&str>, c"/", None::<&str>, MsFlags::MS_REC | MsFlags::MS_PRIVATE, None::<&str>)?;
                mount(Some(c"overlay"), merged.as_c_str(), Some(c"overlay"), MsFlags::empty(), Some(opts.as_c_str()))?;
                nix::unistd::chdir(merged.as_c_str())?;
                Ok(())
            });
        }
        let st = cmd.status().expect("spawn world");
        assert!(st.success(), "world script failed ({st}):\n{script}");
    }

    fn try_diff(&self, opts: &DiffOptions) -> Result<FsDiff, DiffError> {
        let u = File::open(&self.upper).unwrap();
        let l = File::open(&self.lower).unwrap();
        compute(u.as_fd(), l.as_fd(), opts)
    }

    fn diff(&self) -> FsDiff {
        self.try_diff(&DiffOptions::default()).expect("diff")
    }
}

fn sha(data: &[u8]) -> String {
    Sha256::digest(data).iter().map(|b| format!("{b:02x}")).collect()
}

fn file(path: &str, data: &[u8], mode: &str) -> Value {
    json!({"path": path, "kind": "file", "size": data.len(), "mode": mode,
           "uid": 0, "gid": 0, "sha256": sha(data)})
}

fn dir(path: &str) -> Value {
    json!({"path": path, "kind": "dir", "mode": "0755", "uid": 0, "gid": 0})
}

fn with(mut v: Value, extra: Value) -> Value {
    let m = v.as_object_mut().unwrap();
    for (k, x) in extra.as_object().unwrap() {
        m.insert(k.clone(), x.clone());
    }
    v
}

/// Modified file: `changes` goes right after `kind` in the output, but JSON
/// object comparison does not care about order.
fn changed(v: Value, changes: &[&str]) -> Value {
    with(v, json!({ "changes": changes }))
}

fn flag(path: &str, why: &str) -> Value {
    json!({"path": path, "why": why})
}

fn expect(diff: &FsDiff, added: Value, modified: Value, deleted: Value, flags: Value, bytes: u64) {
    let count = |v: &Value| v.as_array().unwrap().len();
    let want = json!({
        "added": added, "modified": modified, "deleted": deleted, "flags": flags,
        "totals": {"added": count(&added), "modified": count(&modified),
                   "deleted": count(&deleted), "bytes": bytes},
        "truncated": false,
    });
    let got = serde_json::to_value(diff).unwrap();
    assert_eq!(
        got,
        want,
        "\n got: {}\nwant: {}",
        serde_json::to_string_pretty(&got).unwrap(),
        serde_json::to_string_pretty(&want).unwrap()
    );
    // the JSON form round-trips
    let back: FsDiff = serde_json::from_value(got).unwrap();
    assert_eq!(&back, diff);
}

fn empty() -> Value {
    json!([])
}

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
    expect(&d, empty(), empty(), empty(), empty(), 0);
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
    expect(&w.diff(), empty(), json!([changed(file("/etc/hosts", b"a\n", "0644"), &["mtime"])]), empty(), empty(), 2);
}

#[test]
fn open_for_write_without_writing_is_not_reported() {
    let w = World::new("mkdir etc; printf 'a\\n' > etc/hosts");
    w.run(": >> etc/hosts");
    assert!(w.upper.join("etc/hosts").exists(), "copy-up expected");
    expect(&w.diff(), empty(), empty(), empty(), empty(), 0);
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
    expect(
        &w.diff(),
        json!([file("/d/new", b"x\n", "0644"), file("/d/sub/n", b"n\n", "0644")]),
        empty(),
        json!([
            {"path": "/d/sub/z", "kind": "file"},
            {"path": "/d/x", "kind": "file"},
            {"path": "/d/y", "kind": "file"},
        ]),
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
    expect(
        &w.diff(),
        json!([l1b, file("/n1", b"hi\n", "0644"), n2]),
        empty(),
        empty(),
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
    let opts = DiffOptions { hash: false, max_entries: 4 };
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
    let zero = w.try_diff(&DiffOptions { hash: true, max_entries: 0 }).unwrap();
    assert!(zero.truncated && zero.added.is_empty() && zero.flags.is_empty());
    assert_eq!(zero.totals, full.totals);
}

// ---- upper trees built directly (no overlay): hostile shapes ----

fn xattr(path: &Path, name: &str) -> Option<Vec<u8>> {
    let p = CString::new(path.as_os_str().as_bytes()).unwrap();
    let n = CString::new(name).unwrap();
    let mut buf = [0u8; 64];
    // SAFETY: valid C strings and buffer.
    let r = unsafe { libc::lgetxattr(p.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    (r >= 0).then(|| buf[..r as usize].to_vec())
}

fn set_xattr(path: &Path, name: &str, val: &[u8]) {
    let p = CString::new(path.as_os_str().as_bytes()).unwrap();
    let n = CString::new(name).unwrap();
    // SAFETY: valid C strings and buffer.
    let r = unsafe { libc::lsetxattr(p.as_ptr(), n.as_ptr(), val.as_ptr().cast(), val.len(), 0) };
    assert_eq!(r, 0, "setxattr {name}: {}", std::io::Error::last_os_error());
}

#[test]
fn direct_whiteouts_and_opaque() {
    let w = World::new("mkdir -p o/s; echo a > o/a; echo b > o/s/b; echo g > gone; mkdir keep; echo k > keep/k");
    sh(&w.upper, "mknod ghost c 0 0; mknod gone c 0 0; mkdir -p o/s keep; echo n > o/s/n; mknod o/a c 0 0");
    sh(&w.upper, &format!("touch -d {OLD} o o/s keep"));
    set_xattr(&w.upper.join("o"), "trusted.overlay.opaque", b"y");
    // not opaque: "x" and other overlay attributes are ignored
    set_xattr(&w.upper.join("keep"), "trusted.overlay.opaque", b"x");
    set_xattr(&w.upper.join("keep"), "trusted.overlay.origin", b"\0junk");
    expect(
        &w.diff(),
        json!([file("/o/s/n", b"n\n", "0644")]),
        empty(),
        json!([
            {"path": "/gone", "kind": "file"},
            {"path": "/o/a", "kind": "file"},
            {"path": "/o/s/b", "kind": "file"},
        ]),
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
    let d = w.try_diff(&DiffOptions { hash: true, max_entries: 10 }).unwrap();
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
    // a 2 GiB sparse lower file, copied up by a touch: the comparison skips
    // the holes; the hash is refused (flagged) rather than reading 2 GiB.
    let w = World::new("truncate -s 2G big; printf data | dd of=big conv=notrunc status=none");
    w.run("touch big");
    let t = std::time::Instant::now();
    let d = w.diff();
    assert!(t.elapsed() < Duration::from_secs(10), "took {:?}", t.elapsed());
    let size = 2u64 << 30;
    expect(
        &d,
        empty(),
        json!([{"path": "/big", "kind": "file", "changes": ["mtime"], "size": size,
                "mode": "0644", "uid": 0, "gid": 0}]),
        empty(),
        json!([flag("/big", "sparse")]),
        size,
    );
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
