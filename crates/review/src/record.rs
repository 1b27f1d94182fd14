//! What a kept world remembers for its review, next to its `world.json`:
//!
//! - `changes.jsonl`: after each batch entry, one line `{"entry": ID,
//!   "paths": [...]}` naming the paths that entry changed or touched (its
//!   fs_diff delta): `cloche diff` shows, per path, the entries that did.
//! - `base.jsonl`: for every path the world changed or touched, the **host**
//!   state of that path when the world first wrote it (recorded at the end of the
//!   entry that did): absent, a file's size, times, inode and sha256, a
//!   directory (with a digest of its whole tree when the world deleted or
//!   replaced it), a symlink's target. `cloche commit` compares the host
//!   with it: a path the host changed since is a conflict.
//!
//! The world's lower layer is the live host root, so a host path's state
//! right after the entry is its state as the world saw it, unless the host
//! changed it during that very entry (which the comparison then reports as
//! a conflict at commit: the safe side).

use cloche_world::diff::{Change, FsDiff, RawPath};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs;
use std::io::{self, BufRead, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// Files above this size are compared by metadata only (no sha256).
pub const HASH_LIMIT: u64 = 64 << 20;
/// A deleted directory tree with more entries than this is recorded
/// without a tree digest (its deletion then always needs `--force`).
pub const TREE_LIMIT: usize = 200_000;

/// A host path's state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum HostState {
    Absent,
    File {
        size: u64,
        mtime_ns: i64,
        ctime_ns: i64,
        ino: u64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        sha256: Option<String>,
    },
    Dir {
        /// sha256 over the sorted (path, kind, size, mtime) of the tree.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        tree: Option<String>,
    },
    Symlink {
        target_hex: String,
    },
    Other {
        mode: u32,
    },
}

impl HostState {
    /// Reads the state of host path `path` (the last component is not
    /// followed). `tree`: digest a directory's whole tree.
    pub fn read(path: &Path, tree: bool) -> io::Result<HostState> {
        let md = match fs::symlink_metadata(path) {
            Ok(m) => m,
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT) | Some(libc::ENOTDIR)) => {
                return Ok(HostState::Absent)
            }
            Err(e) => return Err(e),
        };
        let ft = md.file_type();
        Ok(if ft.is_file() {
            let sha256 = if md.len() <= HASH_LIMIT { Some(hash_file(path, &md)?) } else { None };
            HostState::File {
                size: md.len(),
                mtime_ns: ns(md.mtime(), md.mtime_nsec()),
                ctime_ns: ns(md.ctime(), md.ctime_nsec()),
                ino: md.ino(),
                sha256,
            }
        } else if ft.is_dir() {
            HostState::Dir { tree: if tree { tree_digest(path)? } else { None } }
        } else if ft.is_symlink() {
            HostState::Symlink { target_hex: hex(fs::read_link(path)?.as_os_str().as_bytes()) }
        } else {
            HostState::Other { mode: md.mode() }
        })
    }

    /// True when `now` is the same host state as `self` (the recorded base):
    /// a file with the same identity and times, or else the same content.
    pub fn same_as_base(&self, now: &HostState) -> bool {
        match (self, now) {
            (
                HostState::File { size, mtime_ns, ctime_ns, ino, sha256 },
                HostState::File { size: s2, mtime_ns: m2, ctime_ns: c2, ino: i2, sha256: h2 },
            ) => {
                (size, mtime_ns, ctime_ns, ino) == (s2, m2, c2, i2) || (size == s2 && sha256.is_some() && sha256 == h2)
            }
            // A directory that is only modified (not deleted) carries no
            // tree digest: its kind is what matters.
            (HostState::Dir { tree: Some(a) }, HostState::Dir { tree: b }) => b.as_ref() == Some(a),
            (HostState::Dir { tree: None }, HostState::Dir { .. }) => true,
            (a, b) => a == b,
        }
    }
}

fn ns(s: i64, n: i64) -> i64 {
    s.saturating_mul(1_000_000_000).saturating_add(n)
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// sha256 of a host file opened without following a symlink, checked to be
/// the file `md` describes.
fn hash_file(path: &Path, md: &fs::Metadata) -> io::Result<String> {
    let mut f = fs::OpenOptions::new().read(true).custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK).open(path)?;
    let fmd = f.metadata()?;
    if (fmd.dev(), fmd.ino()) != (md.dev(), md.ino()) {
        return Err(io::Error::other("changed while being read"));
    }
    let mut h = Sha256::new();
    let mut buf = vec![0u8; crate::commit::read_buf_len(fmd.len())];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex(&h.finalize()))
}

/// A digest of a host directory tree: every entry's relative path, kind,
/// size and mtime, in sorted order; symlinks are not followed. `None` when
/// the tree is larger than [`TREE_LIMIT`].
fn tree_digest(root: &Path) -> io::Result<Option<String>> {
    let mut lines: Vec<Vec<u8>> = Vec::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        for e in fs::read_dir(root.join(&rel))? {
            let e = e?;
            let md = e.metadata()?; // DirEntry::metadata does not follow symlinks
            let r = rel.join(e.file_name());
            let mut line = r.as_os_str().as_bytes().to_vec();
            line.extend_from_slice(
                format!("\0{:o}\0{}\0{}", md.mode(), md.len(), md.mtime_nsec() + md.mtime()).as_bytes(),
            );
            lines.push(line);
            if lines.len() > TREE_LIMIT {
                return Ok(None);
            }
            if md.is_dir() {
                stack.push(r);
            }
        }
    }
    lines.sort();
    let mut h = Sha256::new();
    for l in &lines {
        h.update(l);
        h.update(b"\n");
    }
    Ok(Some(hex(&h.finalize())))
}

#[derive(Serialize, Deserialize)]
struct BaseLine {
    path_hex: String,
    state: HostState,
}

#[derive(Serialize, Deserialize)]
struct ChangeLine {
    entry: String,
    /// Paths the entry changed (added, modified, deleted).
    paths_hex: Vec<String>,
    /// Paths the entry only wrote as they were (touched).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    touched_hex: Vec<String>,
}

/// Writes a kept world's records (see the module docs).
pub struct Recorder {
    dir: PathBuf,
    seen: HashSet<Vec<u8>>,
}

impl Recorder {
    /// Opens the records of the world directory `dir` (its `world.json` is
    /// there), remembering which paths already have a base.
    pub fn open(dir: &Path) -> io::Result<Recorder> {
        let seen = read_base(dir)?.into_keys().collect();
        Ok(Recorder { dir: dir.to_path_buf(), seen })
    }

    /// After entry `entry` changed `delta`: attributes its paths to it and
    /// records the host state of the paths changed for the first time.
    pub fn entry(&mut self, entry: &str, delta: &FsDiff) -> io::Result<()> {
        let mut base = Vec::new();
        let (mut paths, mut touched) = (Vec::new(), Vec::new());
        // Touched paths get a base too: never committed as such, but the
        // world's copy dates from then, so a later real change of the path
        // is checked against the host as it was when the world first wrote it.
        let lists = [(&delta.added, false), (&delta.modified, false), (&delta.deleted, true), (&delta.touched, false)];
        for (i, (list, deleted)) in lists.into_iter().enumerate() {
            let names = if i == 3 { &mut touched } else { &mut paths };
            for e in list.iter() {
                names.push(hex(e.path.as_bytes()));
                if !self.seen.insert(e.path.as_bytes().to_vec()) {
                    continue;
                }
                // The tree of a directory the world deleted or replaced is
                // digested: deleting it on the host must not lose files the
                // host added since.
                let replaced = deleted || e.changes.contains(&Change::Type);
                let state = HostState::read(Path::new(e.path.as_os_str()), replaced)?;
                base.push(BaseLine { path_hex: hex(e.path.as_bytes()), state });
            }
        }
        append_lines(&self.dir.join("base.jsonl"), &base)?;
        if !paths.is_empty() || !touched.is_empty() {
            append_lines(
                &self.dir.join("changes.jsonl"),
                &[ChangeLine { entry: entry.to_string(), paths_hex: paths, touched_hex: touched }],
            )?;
        }
        Ok(())
    }
}

fn append_lines<T: Serialize>(path: &Path, lines: &[T]) -> io::Result<()> {
    if lines.is_empty() {
        return Ok(());
    }
    let mut buf = Vec::new();
    for l in lines {
        serde_json::to_writer(&mut buf, l).map_err(io::Error::other)?;
        buf.push(b'\n');
    }
    let mut f = fs::OpenOptions::new().create(true).append(true).mode(0o600).open(path)?;
    f.write_all(&buf)?;
    f.sync_data()
}

fn unhex(s: &str) -> io::Result<Vec<u8>> {
    let bad = || io::Error::new(io::ErrorKind::InvalidData, "bad hex in a world record");
    if !s.len().is_multiple_of(2) {
        return Err(bad());
    }
    (0..s.len())
        .step_by(2)
        .map(|i| s.get(i..i + 2).and_then(|h| u8::from_str_radix(h, 16).ok()).ok_or_else(bad))
        .collect()
}

fn read_lines<T: for<'de> Deserialize<'de>>(path: &Path) -> io::Result<Vec<T>> {
    let f = match fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut out = Vec::new();
    let mut lines = io::BufReader::new(f).lines().peekable();
    while let Some(line) = lines.next() {
        match serde_json::from_str(&line?) {
            Ok(v) => out.push(v),
            // A torn last line (a crash while appending) is ignored.
            Err(_) if lines.peek().is_none() => break,
            Err(e) => return Err(io::Error::new(io::ErrorKind::InvalidData, format!("{}: {e}", path.display()))),
        }
    }
    Ok(out)
}

/// The recorded base state per path (raw bytes).
pub fn read_base(dir: &Path) -> io::Result<HashMap<Vec<u8>, HostState>> {
    let mut out = HashMap::new();
    for l in read_lines::<BaseLine>(&dir.join("base.jsonl"))? {
        out.entry(unhex(&l.path_hex)?).or_insert(l.state);
    }
    Ok(out)
}

/// Per path (raw bytes), the entries that changed it, in order.
/// A path only ever touched is attributed to the entries that wrote it; any
/// other path only to the entries that changed it (not to one that merely
/// wrote it as it was before another changed it).
pub fn read_attribution(dir: &Path) -> io::Result<BTreeMap<Vec<u8>, Vec<String>>> {
    let mut changed: BTreeMap<Vec<u8>, Vec<String>> = BTreeMap::new();
    let mut touched: BTreeMap<Vec<u8>, Vec<String>> = BTreeMap::new();
    let add = |map: &mut BTreeMap<Vec<u8>, Vec<String>>, p: &str, entry: &String| -> io::Result<()> {
        let ids = map.entry(unhex(p)?).or_default();
        if ids.last() != Some(entry) {
            ids.push(entry.clone());
        }
        Ok(())
    };
    for l in read_lines::<ChangeLine>(&dir.join("changes.jsonl"))? {
        for p in &l.paths_hex {
            add(&mut changed, p, &l.entry)?;
        }
        for p in &l.touched_hex {
            add(&mut touched, p, &l.entry)?;
        }
    }
    for (path, ids) in touched {
        changed.entry(path).or_insert(ids);
    }
    Ok(changed)
}

/// `path` as a [`RawPath`] (for callers holding host paths).
pub fn raw_path(path: &Path) -> RawPath {
    RawPath::from_bytes(path.as_os_str().as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use cloche_world::diff::{Entry, Kind};

    fn diff(added: &[&Path], modified: &[&Path], deleted: &[(&Path, Kind)]) -> FsDiff {
        FsDiff {
            added: added.iter().map(|p| Entry::new(raw_path(p), Kind::File)).collect(),
            modified: modified
                .iter()
                .map(|p| {
                    let mut e = Entry::new(raw_path(p), Kind::File);
                    e.changes = vec![Change::Content];
                    e
                })
                .collect(),
            deleted: deleted.iter().map(|(p, k)| Entry::new(raw_path(p), *k)).collect(),
            ..FsDiff::default()
        }
    }

    #[test]
    fn records_the_first_base_and_every_entry() {
        let tmp = tempfile::tempdir().unwrap();
        let host = tmp.path().join("host");
        fs::create_dir_all(host.join("d/sub")).unwrap();
        fs::write(host.join("m.txt"), b"one").unwrap();
        fs::write(host.join("d/sub/f"), b"x").unwrap();
        let world = tmp.path().join("world");
        fs::create_dir(&world).unwrap();
        let (m, new, d) = (host.join("m.txt"), host.join("new.txt"), host.join("d"));
        let mut r = Recorder::open(&world).unwrap();
        r.entry("e1", &diff(&[&new], &[&m], &[])).unwrap();
        // The host file changes after the first record: e2's record of the
        // same path does not replace the first.
        fs::write(&m, b"two!").unwrap();
        r.entry("e2", &diff(&[], &[&m], &[(&d, Kind::Dir)])).unwrap();
        let base = read_base(&world).unwrap();
        let key = |p: &Path| p.as_os_str().as_bytes().to_vec();
        assert_eq!(base[&key(&new)], HostState::Absent);
        let first = &base[&key(&m)];
        assert!(matches!(first, HostState::File { size: 3, sha256: Some(_), .. }), "{first:?}");
        assert!(!first.same_as_base(&HostState::read(&m, false).unwrap()), "the host changed it since");
        let HostState::Dir { tree: Some(t) } = &base[&key(&d)] else { panic!("{:?}", base[&key(&d)]) };
        // A file added on the host inside the deleted tree changes its digest.
        fs::write(host.join("d/sub/g"), b"y").unwrap();
        let now = HostState::read(&d, true).unwrap();
        assert!(matches!(&now, HostState::Dir { tree: Some(t2) } if t2 != t));
        assert!(!base[&key(&d)].same_as_base(&now));
        let attr = read_attribution(&world).unwrap();
        assert_eq!(attr[&key(&m)], ["e1", "e2"]);
        assert_eq!(attr[&key(&new)], ["e1"]);
        // Reopened: the paths already recorded stay recorded once.
        let mut r = Recorder::open(&world).unwrap();
        r.entry("e3", &diff(&[], &[&m], &[])).unwrap();
        assert!(matches!(read_base(&world).unwrap()[&key(&m)], HostState::File { size: 3, .. }));
    }

    /// A path first only touched (written as it was), then really changed
    /// by a later entry: its base is the host state when it was touched, so
    /// a host edit in between is a conflict at commit.
    #[test]
    fn a_touched_path_records_its_base_when_first_touched() {
        let tmp = tempfile::tempdir().unwrap();
        let f = tmp.path().join("f");
        fs::write(&f, b"base").unwrap();
        let world = tmp.path().join("world");
        fs::create_dir(&world).unwrap();
        let mut r = Recorder::open(&world).unwrap();
        let touched = FsDiff { touched: vec![Entry::new(raw_path(&f), Kind::File)], ..FsDiff::default() };
        r.entry("e1", &touched).unwrap();
        fs::write(&f, b"host edit").unwrap();
        r.entry("e2", &diff(&[], &[&f], &[])).unwrap();
        let base = read_base(&world).unwrap();
        let b = &base[f.as_os_str().as_bytes()];
        assert!(matches!(b, HostState::File { size: 4, .. }), "{b:?}");
        assert!(!b.same_as_base(&HostState::read(&f, false).unwrap()));
        // the entry that changed it, not the one that only wrote it as it was
        assert_eq!(read_attribution(&world).unwrap()[f.as_os_str().as_bytes()], ["e2"]);
        // a path only ever touched: the entries that wrote it
        let g = tmp.path().join("g");
        r.entry("e3", &FsDiff { touched: vec![Entry::new(raw_path(&g), Kind::File)], ..FsDiff::default() }).unwrap();
        assert_eq!(read_attribution(&world).unwrap()[g.as_os_str().as_bytes()], ["e3"]);
    }

    #[test]
    fn same_content_touched_is_not_a_change() {
        let tmp = tempfile::tempdir().unwrap();
        let f = tmp.path().join("f");
        fs::write(&f, b"same").unwrap();
        let a = HostState::read(&f, false).unwrap();
        fs::write(&f, b"same").unwrap(); // new mtime and ctime, same bytes
        let b = HostState::read(&f, false).unwrap();
        assert!(a.same_as_base(&b));
        assert!(HostState::Absent.same_as_base(&HostState::read(&tmp.path().join("nope"), false).unwrap()));
        assert!(!HostState::Absent.same_as_base(&b));
    }

    #[test]
    fn a_torn_last_line_is_ignored() {
        let tmp = tempfile::tempdir().unwrap();
        fs::write(tmp.path().join("changes.jsonl"), b"{\"entry\":\"e1\",\"paths_hex\":[\"2f61\"]}\n{\"entr").unwrap();
        let attr = read_attribution(tmp.path()).unwrap();
        assert_eq!(attr[b"/a".as_slice()], ["e1"]);
        // A damaged line before the end is an error, not a silent cut.
        fs::write(tmp.path().join("changes.jsonl"), b"{\"ent\n{\"entry\":\"e1\",\"paths_hex\":[]}\n").unwrap();
        assert!(read_attribution(tmp.path()).is_err());
    }
}
