//! Snapshots of host file trees, to prove that a world did not modify the host.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::lossy_head;

// ---------------------------------------------------------------------------
// Host file trees, to prove the host was not modified

/// Everything about one host file that a world could change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    pub kind: &'static str,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    pub mtime_ns: i128,
    pub ctime_ns: i128,
    pub nlink: u64,
    pub ino: u64,
    pub content: Vec<u8>,
    pub target: Option<PathBuf>,
}

pub fn node_of(path: &Path) -> Option<Node> {
    let m = fs::symlink_metadata(path).ok()?;
    let ft = m.file_type();
    use std::os::unix::fs::FileTypeExt;
    let kind = if ft.is_symlink() {
        "symlink"
    } else if ft.is_dir() {
        "dir"
    } else if ft.is_file() {
        "file"
    } else if ft.is_char_device() {
        "char"
    } else if ft.is_block_device() {
        "block"
    } else if ft.is_fifo() {
        "fifo"
    } else {
        "socket"
    };
    Some(Node {
        kind,
        mode: m.mode() & 0o7777,
        uid: m.uid(),
        gid: m.gid(),
        size: m.size(),
        mtime_ns: m.mtime() as i128 * 1_000_000_000 + m.mtime_nsec() as i128,
        ctime_ns: m.ctime() as i128 * 1_000_000_000 + m.ctime_nsec() as i128,
        nlink: m.nlink(),
        ino: m.ino(),
        content: if ft.is_file() { fs::read(path).unwrap_or_default() } else { Vec::new() },
        target: if ft.is_symlink() { fs::read_link(path).ok() } else { None },
    })
}

/// The whole tree under `root` (root itself included, as ""), never following symlinks.
pub fn tree_snapshot(root: &Path) -> BTreeMap<Vec<u8>, Node> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<Vec<u8>, Node>) {
        let Ok(rd) = fs::read_dir(dir) else { return };
        for e in rd.flatten() {
            let p = e.path();
            if let Some(n) = node_of(&p) {
                let rel = p.strip_prefix(root).unwrap().as_os_str().as_bytes().to_vec();
                let is_dir = n.kind == "dir";
                out.insert(rel, n);
                if is_dir {
                    walk(root, &p, out);
                }
            }
        }
    }
    let mut out = BTreeMap::new();
    if let Some(n) = node_of(root) {
        out.insert(Vec::new(), n);
    }
    walk(root, root, &mut out);
    out
}

/// Panics with the list of paths that differ between two snapshots of `root`.
pub fn assert_same_tree(root: &Path, before: &BTreeMap<Vec<u8>, Node>, after: &BTreeMap<Vec<u8>, Node>) {
    let mut diffs = Vec::new();
    for (k, b) in before {
        match after.get(k) {
            None => diffs.push(format!("deleted on the host: {}", String::from_utf8_lossy(k))),
            Some(a) if a != b => diffs.push(format!(
                "changed on the host: {:?}\n    before {:?}\n    after  {:?}",
                String::from_utf8_lossy(k),
                brief(b),
                brief(a)
            )),
            _ => {}
        }
    }
    for k in after.keys().filter(|k| !before.contains_key(*k)) {
        diffs.push(format!("added on the host: {}", String::from_utf8_lossy(k)));
    }
    assert!(diffs.is_empty(), "the host tree {} was modified by a world:\n  {}", root.display(), diffs.join("\n  "));
}

fn brief(n: &Node) -> String {
    format!(
        "{} mode {:04o} uid {} gid {} size {} mtime {} ctime {} nlink {} ino {} content {:?}",
        n.kind,
        n.mode,
        n.uid,
        n.gid,
        n.size,
        n.mtime_ns,
        n.ctime_ns,
        n.nlink,
        n.ino,
        lossy_head(&n.content, 60)
    )
}
