//! The fs_diff data model and its JSON form (the field names are a contract).

use std::ffi::OsStr;
use std::fmt;
use std::os::unix::ffi::OsStrExt;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use serde::de::Error as _;
use serde::ser::SerializeMap;
use serde::{Deserialize, Serialize, Serializer};

/// Raw bytes of a path (or a symlink target) as the kernel gave them.
///
/// In JSON it is written as a string under its field name when it is valid
/// UTF-8, and otherwise as standard base64 of the bytes under `<field>_b64`.
#[derive(Clone, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RawPath(Vec<u8>);

impl RawPath {
    /// Wraps raw bytes.
    pub fn from_bytes(bytes: impl Into<Vec<u8>>) -> Self {
        RawPath(bytes.into())
    }
    /// The exact bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
    /// The bytes as an `OsStr` (lossless on Unix).
    pub fn as_os_str(&self) -> &OsStr {
        OsStr::from_bytes(&self.0)
    }
    /// A display form; invalid UTF-8 is replaced.
    pub fn to_string_lossy(&self) -> String {
        String::from_utf8_lossy(&self.0).into_owned()
    }
    /// Consumes into the bytes.
    pub fn into_bytes(self) -> Vec<u8> {
        self.0
    }

    fn put<M: SerializeMap>(&self, m: &mut M, key: &str, key_b64: &str) -> Result<(), M::Error> {
        match std::str::from_utf8(&self.0) {
            Ok(s) => m.serialize_entry(key, s),
            Err(_) => m.serialize_entry(key_b64, &B64.encode(&self.0)),
        }
    }

    fn take<E: serde::de::Error>(plain: Option<String>, b64: Option<String>, key: &str) -> Result<Option<RawPath>, E> {
        match (plain, b64) {
            (Some(_), Some(_)) => Err(E::custom(format!("both {key} and {key}_b64 given"))),
            (Some(s), None) => Ok(Some(RawPath(s.into_bytes()))),
            (None, Some(b)) => {
                B64.decode(b.as_bytes()).map(|v| Some(RawPath(v))).map_err(|e| E::custom(format!("{key}_b64: {e}")))
            }
            (None, None) => Ok(None),
        }
    }
}

impl fmt::Debug for RawPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&String::from_utf8_lossy(&self.0), f)
    }
}

impl fmt::Display for RawPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&String::from_utf8_lossy(&self.0))
    }
}

impl From<&str> for RawPath {
    fn from(s: &str) -> Self {
        RawPath(s.as_bytes().to_vec())
    }
}

/// The type of a filesystem entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    File,
    Dir,
    Symlink,
    Char,
    Block,
    Fifo,
    Socket,
}

impl Kind {
    /// The kind encoded in an `st_mode`.
    pub fn from_mode(mode: u32) -> Kind {
        match mode & libc::S_IFMT {
            libc::S_IFDIR => Kind::Dir,
            libc::S_IFLNK => Kind::Symlink,
            libc::S_IFCHR => Kind::Char,
            libc::S_IFBLK => Kind::Block,
            libc::S_IFIFO => Kind::Fifo,
            libc::S_IFSOCK => Kind::Socket,
            _ => Kind::File,
        }
    }
}

/// What changed in a `modified` entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Change {
    /// Bytes of a regular file, or the device number of a device node.
    Content,
    /// The kind changed (e.g. file → symlink); the entry gives the new kind.
    Type,
    /// Permission bits (including setuid/setgid/sticky).
    Mode,
    /// uid or gid.
    Owner,
    /// The mtime (content, type, mode, owner and target equal). Only in
    /// `touched` entries: such a path is not `modified`.
    Mtime,
    /// The target of a symlink.
    Target,
}

/// Why a path is flagged for a reviewer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum FlagKind {
    #[serde(rename = "setuid")]
    Setuid,
    #[serde(rename = "setgid")]
    Setgid,
    #[serde(rename = "device node")]
    DeviceNode,
    #[serde(rename = "fifo")]
    Fifo,
    #[serde(rename = "socket")]
    Socket,
    #[serde(rename = "executable")]
    Executable,
    #[serde(rename = "hard link")]
    HardLink,
    #[serde(rename = "git hook")]
    GitHook,
    #[serde(rename = "under .git")]
    UnderGit,
    #[serde(rename = "world-writable")]
    WorldWritable,
    /// A regular file with so many holes that it was not hashed.
    #[serde(rename = "sparse")]
    Sparse,
}

/// One changed path. Which fields are present depends on the list and kind:
/// `deleted` entries carry only `path` and `kind`; `changes` only appears in
/// `modified`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(try_from = "EntryRepr")]
pub struct Entry {
    /// Absolute path inside the world.
    pub path: RawPath,
    /// Kind of the entry (the new kind for `added`/`modified`, the old one for `deleted`).
    pub kind: Kind,
    /// For `modified` entries: what changed, in a fixed order. Empty otherwise.
    pub changes: Vec<Change>,
    /// Regular files: size in bytes; symlinks: length of the target.
    pub size: Option<u64>,
    /// Permission bits (`st_mode & 0o7777`); absent for symlinks and deleted entries.
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    /// Lowercase hex SHA-256 of a regular file's content (when hashing was asked).
    pub sha256: Option<String>,
    /// Symlink target, never resolved.
    pub target: Option<RawPath>,
    /// Device number of char/block devices, as (major, minor).
    pub rdev: Option<(u32, u32)>,
    /// Hard links: the first path (sorted by bytes) of the upper inode, when it is not this one.
    pub links_to: Option<RawPath>,
}

impl Entry {
    /// An entry with only path and kind.
    pub fn new(path: RawPath, kind: Kind) -> Entry {
        Entry {
            path,
            kind,
            changes: Vec::new(),
            size: None,
            mode: None,
            uid: None,
            gid: None,
            sha256: None,
            target: None,
            rdev: None,
            links_to: None,
        }
    }
}

/// `mode` is written as 4 octal digits ("0644", "4755").
pub fn format_mode(mode: u32) -> String {
    format!("{:04o}", mode & 0o7777)
}

impl Serialize for Entry {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(None)?;
        self.path.put(&mut m, "path", "path_b64")?;
        m.serialize_entry("kind", &self.kind)?;
        if !self.changes.is_empty() {
            m.serialize_entry("changes", &self.changes)?;
        }
        if let Some(v) = self.size {
            m.serialize_entry("size", &v)?;
        }
        if let Some(v) = self.mode {
            m.serialize_entry("mode", &format_mode(v))?;
        }
        if let Some(v) = self.uid {
            m.serialize_entry("uid", &v)?;
        }
        if let Some(v) = self.gid {
            m.serialize_entry("gid", &v)?;
        }
        if let Some(v) = &self.sha256 {
            m.serialize_entry("sha256", v)?;
        }
        if let Some(t) = &self.target {
            t.put(&mut m, "target", "target_b64")?;
        }
        if let Some((ma, mi)) = self.rdev {
            m.serialize_entry("rdev", &format!("{ma}:{mi}"))?;
        }
        if let Some(l) = &self.links_to {
            l.put(&mut m, "links_to", "links_to_b64")?;
        }
        m.end()
    }
}

#[derive(Deserialize)]
struct EntryRepr {
    path: Option<String>,
    path_b64: Option<String>,
    kind: Kind,
    #[serde(default)]
    changes: Vec<Change>,
    size: Option<u64>,
    mode: Option<String>,
    uid: Option<u32>,
    gid: Option<u32>,
    sha256: Option<String>,
    target: Option<String>,
    target_b64: Option<String>,
    rdev: Option<String>,
    links_to: Option<String>,
    links_to_b64: Option<String>,
}

impl TryFrom<EntryRepr> for Entry {
    type Error = serde_json::Error;
    fn try_from(r: EntryRepr) -> Result<Entry, serde_json::Error> {
        type E = serde_json::Error;
        let path = RawPath::take::<E>(r.path, r.path_b64, "path")?
            .ok_or_else(|| E::custom("entry without path or path_b64"))?;
        let mode = match r.mode {
            None => None,
            Some(s) => Some(
                u32::from_str_radix(&s, 8)
                    .ok()
                    .filter(|m| *m <= 0o7777 && s.len() == 4)
                    .ok_or_else(|| E::custom(format!("bad mode {s:?}")))?,
            ),
        };
        let rdev = match r.rdev {
            None => None,
            Some(s) => Some(
                s.split_once(':')
                    .and_then(|(a, b)| Some((a.parse().ok()?, b.parse().ok()?)))
                    .ok_or_else(|| E::custom(format!("bad rdev {s:?}")))?,
            ),
        };
        Ok(Entry {
            path,
            kind: r.kind,
            changes: r.changes,
            size: r.size,
            mode,
            uid: r.uid,
            gid: r.gid,
            sha256: r.sha256,
            target: RawPath::take::<E>(r.target, r.target_b64, "target")?,
            rdev,
            links_to: RawPath::take::<E>(r.links_to, r.links_to_b64, "links_to")?,
        })
    }
}

/// A path a reviewer must look at, and why. One object per (path, why).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
#[serde(try_from = "FlagRepr")]
pub struct Flag {
    pub path: RawPath,
    pub why: FlagKind,
}

impl Serialize for Flag {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(2))?;
        self.path.put(&mut m, "path", "path_b64")?;
        m.serialize_entry("why", &self.why)?;
        m.end()
    }
}

#[derive(Deserialize)]
struct FlagRepr {
    path: Option<String>,
    path_b64: Option<String>,
    why: FlagKind,
}

impl TryFrom<FlagRepr> for Flag {
    type Error = serde_json::Error;
    fn try_from(r: FlagRepr) -> Result<Flag, serde_json::Error> {
        let path = RawPath::take::<serde_json::Error>(r.path, r.path_b64, "path")?
            .ok_or_else(|| serde_json::Error::custom("flag without path or path_b64"))?;
        Ok(Flag { path, why: r.why })
    }
}

/// Counts over the whole diff, including what `truncated` left out of the lists.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Totals {
    pub added: u64,
    pub modified: u64,
    pub deleted: u64,
    /// Sum of the sizes of added and modified regular files (each inode once).
    pub bytes: u64,
    /// Paths written but left as the base has them (every one, also those
    /// the `touched` list does not hold).
    #[serde(default)]
    pub touched: u64,
}

/// What a world changed compared with its base. Lists are sorted by raw path
/// bytes (flags by path, then by `why`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FsDiff {
    pub added: Vec<Entry>,
    pub modified: Vec<Entry>,
    pub deleted: Vec<Entry>,
    /// Paths the world wrote (copied up) that are as the base has them:
    /// same kind, content, mode, owner, symlink target and device number
    /// (a content-identical rewrite, `touch`, a `chmod` to the same mode),
    /// and directories copied up with nothing changed below them. Each
    /// carries `path`, `kind` and, when the mtime differs, `changes:
    /// ["mtime"]`. Not a change: never committed. Bounded by `max_entries`
    /// on its own (a cut here does not set `truncated`: `totals.touched`
    /// counts every one).
    #[serde(default)]
    pub touched: Vec<Entry>,
    pub flags: Vec<Flag>,
    pub totals: Totals,
    /// Some added, modified or deleted entries or some flags were left out
    /// (`max_entries` or the memory bound).
    pub truncated: bool,
}

impl FsDiff {
    /// True when the world changed nothing (touched paths are no change).
    pub fn is_empty(&self) -> bool {
        self.totals.added == 0 && self.totals.modified == 0 && self.totals.deleted == 0
    }

    /// Puts the diff of a filesystem mounted at `prefix` (its paths relative
    /// to that filesystem's root) at its place in the world. Symlink targets
    /// are left as written.
    pub fn under(mut self, prefix: &std::path::Path) -> FsDiff {
        use std::os::unix::ffi::OsStrExt;
        let pre = prefix.as_os_str().as_bytes();
        let pre = pre.strip_suffix(b"/").unwrap_or(pre);
        let fix = |p: &mut RawPath| {
            let mut b = pre.to_vec();
            b.extend_from_slice(&p.0);
            p.0 = b;
        };
        let lists = [&mut self.added, &mut self.modified, &mut self.deleted, &mut self.touched];
        for e in lists.into_iter().flat_map(|l| l.iter_mut()) {
            fix(&mut e.path);
            if let Some(l) = e.links_to.as_mut() {
                fix(l);
            }
        }
        for f in self.flags.iter_mut() {
            fix(&mut f.path);
        }
        self
    }

    /// Adds the diff of another layer: lists merged in path order, totals
    /// summed, at most `max_entries` entries and flags kept (the smallest
    /// paths, as within one layer), and at most `max_entries` touched paths.
    pub fn merge(&mut self, other: FsDiff, max_entries: usize) {
        let by_path = |a: &Entry, b: &Entry| a.path.cmp(&b.path);
        self.added.extend(other.added);
        self.added.sort_by(by_path);
        self.modified.extend(other.modified);
        self.modified.sort_by(by_path);
        self.deleted.extend(other.deleted);
        self.deleted.sort_by(by_path);
        self.touched.extend(other.touched);
        self.touched.sort_by(by_path);
        self.touched.truncate(max_entries);
        self.flags.extend(other.flags);
        self.flags.sort();
        self.totals.added += other.totals.added;
        self.totals.modified += other.totals.modified;
        self.totals.deleted += other.totals.deleted;
        self.totals.bytes += other.totals.bytes;
        self.totals.touched += other.totals.touched;
        self.truncated |= other.truncated;
        let total = self.added.len() + self.modified.len() + self.deleted.len();
        if total > max_entries && max_entries == 0 {
            self.added.clear();
            self.modified.clear();
            self.deleted.clear();
            self.truncated = true;
        } else if total > max_entries {
            // Keep the smallest paths across the three lists.
            let mut all: Vec<&RawPath> =
                self.added.iter().chain(&self.modified).chain(&self.deleted).map(|e| &e.path).collect();
            all.sort();
            let limit = all[max_entries - 1].clone();
            self.added.retain(|e| e.path <= limit);
            self.modified.retain(|e| e.path <= limit);
            self.deleted.retain(|e| e.path <= limit);
            self.truncated = true;
        }
        if self.flags.len() > max_entries {
            self.flags.truncate(max_entries);
            self.truncated = true;
        }
    }
}

/// Lowercase hex of a digest.
pub(crate) fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 15) as usize] as char);
    }
    s
}
