//! Helpers shared by the fs_diff tests against a real overlay (`diff.rs`,
//! `diff_shapes.rs`): a [`World`] of lower, upper, work and merged dirs, the
//! expected JSON entries, and extended attributes.
//!
//! Each test populates a lower directory, then runs a shell script in a child
//! process that enters a private mount namespace, mounts the overlay (the
//! engine's options) and works through the merged directory. The child's
//! mounts die with it; the parent then diffs the upper against the lower.

#![allow(dead_code)] // each test file uses a different part of the helpers

use std::ffi::CString;
use std::fs::File;
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use cloche_world::diff::{compute, DiffError, DiffOptions, FsDiff};
use nix::mount::{mount, MsFlags};
use nix::sched::{unshare, CloneFlags};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

/// Old fixed mtime for every lower entry (2001-01-01), so a `touch` shows.
pub const OLD: &str = "@978307200";

pub struct World {
    _dir: tempfile::TempDir,
    pub lower: PathBuf,
    pub upper: PathBuf,
    pub work: PathBuf,
    pub merged: PathBuf,
}

pub fn sh(cwd: &Path, script: &str) {
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
    pub fn new(setup: &str) -> World {
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
    pub fn run(&self, script: &str) {
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

    pub fn try_diff(&self, opts: &DiffOptions) -> Result<FsDiff, DiffError> {
        let u = File::open(&self.upper).unwrap();
        let l = File::open(&self.lower).unwrap();
        compute(u.as_fd(), l.as_fd(), opts)
    }

    pub fn diff(&self) -> FsDiff {
        self.try_diff(&DiffOptions::default()).expect("diff")
    }
}

pub fn sha(data: &[u8]) -> String {
    Sha256::digest(data).iter().map(|b| format!("{b:02x}")).collect()
}

pub fn file(path: &str, data: &[u8], mode: &str) -> Value {
    json!({"path": path, "kind": "file", "size": data.len(), "mode": mode,
           "uid": 0, "gid": 0, "sha256": sha(data)})
}

pub fn dir(path: &str) -> Value {
    json!({"path": path, "kind": "dir", "mode": "0755", "uid": 0, "gid": 0})
}

pub fn with(mut v: Value, extra: Value) -> Value {
    let m = v.as_object_mut().unwrap();
    for (k, x) in extra.as_object().unwrap() {
        m.insert(k.clone(), x.clone());
    }
    v
}

/// Modified file: `changes` goes right after `kind` in the output, but JSON
/// object comparison does not care about order.
pub fn changed(v: Value, changes: &[&str]) -> Value {
    with(v, json!({ "changes": changes }))
}

pub fn flag(path: &str, why: &str) -> Value {
    json!({"path": path, "why": why})
}

/// The whole diff is exactly this, with no touched path.
pub fn expect(diff: &FsDiff, added: Value, modified: Value, deleted: Value, flags: Value, bytes: u64) {
    expect_touched(diff, added, modified, deleted, empty(), flags, bytes)
}

/// The whole diff is exactly this, touched paths included.
pub fn expect_touched(
    diff: &FsDiff,
    added: Value,
    modified: Value,
    deleted: Value,
    touched: Value,
    flags: Value,
    bytes: u64,
) {
    let count = |v: &Value| v.as_array().unwrap().len();
    let want = json!({
        "added": added, "modified": modified, "deleted": deleted, "touched": touched, "flags": flags,
        "totals": {"added": count(&added), "modified": count(&modified),
                   "deleted": count(&deleted), "bytes": bytes, "touched": count(&touched)},
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

/// A touched entry: path, kind, and `changes: ["mtime"]` when `mtime`.
pub fn touched(path: &str, kind: &str, mtime: bool) -> Value {
    if mtime {
        json!({"path": path, "kind": kind, "changes": ["mtime"]})
    } else {
        json!({"path": path, "kind": kind})
    }
}

pub fn empty() -> Value {
    json!([])
}

pub fn xattr(path: &Path, name: &str) -> Option<Vec<u8>> {
    let p = CString::new(path.as_os_str().as_bytes()).unwrap();
    let n = CString::new(name).unwrap();
    let mut buf = [0u8; 64];
    // SAFETY: valid C strings and buffer.
    let r = unsafe { libc::lgetxattr(p.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    (r >= 0).then(|| buf[..r as usize].to_vec())
}

pub fn set_xattr(path: &Path, name: &str, val: &[u8]) {
    let p = CString::new(path.as_os_str().as_bytes()).unwrap();
    let n = CString::new(name).unwrap();
    // SAFETY: valid C strings and buffer.
    let r = unsafe { libc::lsetxattr(p.as_ptr(), n.as_ptr(), val.as_ptr().cast(), val.len(), 0) };
    assert_eq!(r, 0, "setxattr {name}: {}", std::io::Error::last_os_error());
}
