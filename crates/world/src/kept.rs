//! Kept worlds: the worlds left under `<state>/worlds/<id>` for review
//! (batch worlds, `cloche run --keep`), listed, discarded, and collected
//! by a retention limit.

use crate::state::{remove_world_dir, valid_id, StateDir};
use serde::Serialize;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// One kept world, as `world.json` describes it. (`Default`: the fields a
/// test does not name, empty.)
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct KeptWorld {
    pub id: String,
    /// `kept` (its run ended), `interrupted` (its runner died) or
    /// `running` (a run continues it now).
    pub state: String,
    /// `batch:<id>` for a batch's world; `uid:N` for a world a daemon's
    /// caller kept or forked.
    pub owner: Option<String>,
    /// Batches that ran in it after the run that made it (`"world"` in a
    /// batch file): `cloche diff BATCH` finds it by any of them.
    pub batches: Vec<String>,
    /// The world it was forked from.
    pub forked_from: Option<String>,
    pub cwd: Option<String>,
    pub argv: Vec<String>,
    pub exit_code: Option<i32>,
    /// Seconds since the epoch.
    pub created: u64,
    /// The same in milliseconds (orders worlds made in the same second).
    pub created_ms: u64,
    /// When its last run ended (ms since the epoch): the retention limit's
    /// age counts from there.
    pub updated_ms: u64,
    /// Its runs, in order (`continued::RunRecord`; empty for a world kept
    /// before runs were recorded).
    pub runs: Vec<crate::continued::RunRecord>,
    /// Bytes its upper layers and work dirs hold (disk blocks or tmpfs
    /// pages).
    pub size: u64,
    /// Where its files are: `disk` (its subvolume of the state directory's
    /// disk pool), or `tmpfs` (memory: it could not be moved to disk, see
    /// `store_error`; lost if the machine restarts).
    pub store: String,
    /// Why a world kept on a tmpfs is still there.
    pub store_error: Option<String>,
    pub path: PathBuf,
    /// The world's upper directories: the root's first (`/`), then one per
    /// host data mount carried in as an overlay.
    pub uppers: Vec<Upper>,
    /// A world without root's (its state directory is a user's:
    /// `rootless.rs`): its fs_diff is read as such (`DiffOptions::rootless`).
    pub rootless: bool,
}

/// One overlay of a kept world: the host mount it covered and its upper
/// directory (absolute, inside the world's directory).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Upper {
    pub mount: PathBuf,
    pub upper: PathBuf,
}

impl KeptWorld {
    /// The upper directory holding host path `path` and the path relative to
    /// it: the overlay of the longest mount containing `path`.
    pub fn upper_for<'a>(&self, path: &'a [u8]) -> Option<(&Upper, &'a [u8])> {
        use std::os::unix::ffi::OsStrExt;
        self.uppers
            .iter()
            .filter_map(|u| {
                let m = u.mount.as_os_str().as_bytes();
                let rest = if m == b"/" { path.strip_prefix(b"/")? } else { path.strip_prefix(m)? };
                let rest =
                    if m == b"/" { rest } else { rest.strip_prefix(b"/").or(rest.is_empty().then_some(rest))? };
                Some((u, m.len(), rest))
            })
            .max_by_key(|(_, len, _)| *len)
            .map(|(u, _, rest)| (u, rest))
    }

    /// The world's fs_diff, computed again from its uppers against the host
    /// as it is now. The world must not be running.
    pub fn fs_diff(&self, opts: &crate::diff::DiffOptions) -> Result<crate::diff::FsDiff, crate::WorldError> {
        use nix::fcntl::OFlag;
        let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        let mut total = crate::diff::FsDiff::default();
        let opts = &crate::diff::DiffOptions { rootless: self.rootless, ..opts.clone() };
        for (i, u) in self.uppers.iter().enumerate() {
            let fd = nix::fcntl::open(&u.upper, flags, nix::sys::stat::Mode::empty())
                .map_err(crate::WorldError::nix("open a kept upper"))?;
            let d = crate::world::diff_upper(&fd, &u.mount, opts, &mut Default::default())?;
            if i == 0 {
                total = d;
            } else {
                total.merge(d.under(&u.mount), opts.max_entries);
            }
        }
        Ok(total)
    }
}

/// Kept worlds, oldest first. A directory that is not a settled kept world
/// (in progress, or with an unreadable description) is not listed.
pub fn list(state: &StateDir) -> Vec<KeptWorld> {
    let Ok(entries) = fs::read_dir(state.world_path("")) else { return Vec::new() };
    let mut out: Vec<KeptWorld> =
        entries.flatten().filter_map(|e| get(state, &e.file_name().to_string_lossy())).collect();
    out.sort_by(|a, b| (a.created_ms, &a.id).cmp(&(b.created_ms, &b.id)));
    out
}

/// The kept world `id`, if there is one.
pub fn get(state: &StateDir, id: &str) -> Option<KeptWorld> {
    read(state, id, true)
}

/// The kept world `id` without its size (0): what a run that continues it
/// reads before its start, where walking a large world's tree would cost.
pub fn find(state: &StateDir, id: &str) -> Option<KeptWorld> {
    read(state, id, false)
}

fn read(state: &StateDir, id: &str, sized: bool) -> Option<KeptWorld> {
    if !valid_id(id) {
        return None;
    }
    let path = state.world_path(id);
    if !path.join("kept").exists() {
        return None;
    }
    let meta: serde_json::Value = serde_json::from_slice(&fs::read(path.join("world.json")).ok()?).ok()?;
    let text = |k: &str| meta[k].as_str().map(str::to_string);
    let disk = crate::pool::is_subvolume(&path);
    let mut uppers =
        vec![Upper { mount: "/".into(), upper: path.join(text("upper").unwrap_or_else(|| "fs/upper".into())) }];
    for l in meta["layers"].as_array().into_iter().flatten() {
        let (Some(m), Some(u)) = (l["path"].as_str(), l["upper"].as_str()) else { continue };
        // Only layers under the world's own fs/ directory.
        if !u.starts_with("fs/") || u.split('/').any(|c| c == "..") || !m.starts_with('/') {
            continue;
        }
        uppers.push(Upper { mount: m.into(), upper: path.join(u) });
    }
    let created_ms = meta["created_ms"].as_u64().unwrap_or(meta["created"].as_u64().unwrap_or(0) * 1000);
    Some(KeptWorld {
        id: id.to_string(),
        state: match state.is_live(id) {
            true => "running".into(),
            false => text("state").unwrap_or_else(|| "kept".into()),
        },
        owner: text("owner"),
        batches: meta["batches"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|b| b.as_str().map(str::to_string))
            .collect(),
        forked_from: text("forked_from"),
        cwd: text("cwd"),
        argv: meta["argv"].as_array().into_iter().flatten().filter_map(|a| a.as_str().map(str::to_string)).collect(),
        exit_code: meta["exit_code"].as_i64().and_then(|c| i32::try_from(c).ok()),
        created: meta["created"].as_u64().unwrap_or(0),
        created_ms,
        updated_ms: meta["updated_ms"].as_u64().unwrap_or(created_ms),
        runs: crate::continued::read_runs(&path),
        size: match (sized, disk) {
            (false, _) => 0,
            (true, true) => tree_bytes(&path.join("fs")),
            // A world without root's plain directory.
            (true, false) if state.rootless() => tree_bytes(&path.join("fs")),
            (true, false) => used_bytes(&path.join("fs")).unwrap_or(0),
        },
        store: if disk {
            "disk"
        } else if crate::pool::on_tmpfs(&path.join("fs")) {
            "tmpfs"
        } else {
            "directory"
        }
        .into(),
        store_error: if disk { None } else { text("store_error") },
        path,
        uppers,
        rootless: state.rootless(),
    })
}

/// The kept world of `owner` (`batch:<id>`), the newest if several; else
/// the world such a batch continued.
pub fn owned_by(state: &StateDir, owner: &str) -> Option<KeptWorld> {
    let all = list(state);
    let batch = owner.strip_prefix("batch:");
    let found = all.iter().rev().find(|w| w.owner.as_deref() == Some(owner));
    found.or_else(|| all.iter().rev().find(|w| batch.is_some_and(|b| w.batches.iter().any(|x| x == b)))).cloned()
}

/// Discards kept world `id`: detaches its tmpfs and removes its directory.
/// A world that is still running is refused.
pub fn discard(state: &StateDir, id: &str) -> io::Result<()> {
    if !valid_id(id) || !state.has_world(id) {
        return Err(io::Error::new(io::ErrorKind::NotFound, format!("no kept world {id}")));
    }
    if state.is_live(id) {
        return Err(io::Error::new(io::ErrorKind::ResourceBusy, format!("world {id} is still running")));
    }
    // Not while a commit reads it.
    let _busy = lock(&state.world_path(id), false)?;
    remove_world_dir(&state.world_path(id))
}

/// Kept worlds still on a tmpfs (their move to the disk pool failed when
/// they were kept: `StateDir::mark_kept`), moved into the pool now, each
/// while its id and its review lock are held (one in use is skipped).
/// Returns each one tried, with why it could not be moved.
pub fn move_to_disk(state: &StateDir) -> Vec<(String, Result<(), String>)> {
    let mut out = Vec::new();
    for w in list(state).into_iter().filter(|w| w.store == "tmpfs") {
        let Ok(Some(_held)) = state.claim_id(&w.id) else { continue };
        let Ok(_busy) = lock(&w.path, false) else { continue };
        let moved = crate::pool::ensure(&state.root)
            .and_then(|()| crate::pool::adopt(&state.root, &w.id))
            .map_err(|e| e.to_string())
            .and_then(|_| state.forget_store_error(&w.id).map_err(|e| format!("rewrite world.json: {e}")));
        out.push((w.id, moved));
    }
    out
}

/// Takes the review lock of a kept world's directory (flock on the
/// directory itself): a commit holds it while it reads the world, a discard
/// while it removes it. `wait`: block until it is free; else a world in use
/// is an error. Released when the returned fd closes.
pub fn lock(dir: &Path, wait: bool) -> io::Result<fs::File> {
    use std::os::fd::AsRawFd;
    let f = fs::File::open(dir)?;
    let op = if wait { libc::LOCK_EX } else { libc::LOCK_EX | libc::LOCK_NB };
    // SAFETY: flock on a descriptor we own.
    if unsafe { libc::flock(f.as_raw_fd(), op) } != 0 {
        let e = io::Error::last_os_error();
        if e.kind() == io::ErrorKind::WouldBlock {
            return Err(io::Error::new(io::ErrorKind::ResourceBusy, format!("{} is being committed", dir.display())));
        }
        return Err(e);
    }
    Ok(f)
}

/// How many kept worlds, how old (`[retention]` of the policy).
#[derive(Debug, Clone, Copy)]
pub struct Retention {
    pub max_worlds: usize,
    /// Seconds; 0 = no age limit.
    pub max_age: u64,
}

/// The worlds a retention limit discards, with why: every world unused
/// for longer than `max_age` (since its last run ended: a world that is
/// continued is in use), then the least recently used of the rest beyond
/// `max_worlds`. `now` is in seconds.
pub fn plan_gc(worlds: &[KeptWorld], r: Retention, now: u64) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut young = Vec::new();
    let used = |w: &KeptWorld| (w.updated_ms.max(w.created_ms).max(w.created * 1000), w.created_ms);
    for w in worlds {
        if r.max_age > 0 && now.saturating_sub(used(w).0 / 1000) > r.max_age {
            out.push((w.id.clone(), format!("older than {} s", r.max_age)));
        } else {
            young.push(w);
        }
    }
    young.sort_by_key(|w| used(w));
    let excess = young.len().saturating_sub(r.max_worlds);
    for w in &young[..excess] {
        out.push((w.id.clone(), format!("more than {} kept worlds", r.max_worlds)));
    }
    out
}

/// Bytes the files under `dir` take on disk, as `du` counts them (hard
/// links once; never following a symlink or leaving the filesystem). The
/// pool's own count (a quota group's) lags by up to a transaction commit.
fn tree_bytes(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let Ok(top) = fs::symlink_metadata(dir) else { return 0 };
    let mut seen = std::collections::HashSet::new();
    let mut total = top.blocks() * 512;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).into_iter().flatten().flatten() {
            let Ok(m) = e.metadata() else { continue };
            if m.dev() != top.dev() || (m.nlink() > 1 && !m.is_dir() && !seen.insert(m.ino())) {
                continue;
            }
            total += m.blocks() * 512;
            if m.is_dir() {
                stack.push(e.path());
            }
        }
    }
    total
}

/// Bytes in use on the filesystem mounted at `dir` (a world's tmpfs).
fn used_bytes(dir: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    // SAFETY: statvfs is plain data; zeroed is a valid value to fill.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: a NUL-terminated path and a pointer to our struct.
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return None;
    }
    Some((st.f_blocks - st.f_bfree) * st.f_frsize)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn world(id: &str, created: u64) -> KeptWorld {
        KeptWorld {
            id: id.into(),
            state: "kept".into(),
            exit_code: Some(0),
            created,
            created_ms: created * 1000,
            store: "disk".into(),
            ..KeptWorld::default()
        }
    }

    #[test]
    fn gc_drops_the_old_then_the_oldest_beyond_the_count() {
        let ws: Vec<_> = (0..5).map(|i| world(&format!("w{i}"), 100 + i)).collect();
        let ids = |v: Vec<(String, String)>| v.into_iter().map(|(id, _)| id).collect::<Vec<_>>();
        assert!(plan_gc(&ws, Retention { max_worlds: 5, max_age: 0 }, 1000).is_empty());
        assert_eq!(ids(plan_gc(&ws, Retention { max_worlds: 3, max_age: 0 }, 1000)), ["w0", "w1"]);
        // w0 and w1 are past the age limit; of the other three, one too many.
        assert_eq!(ids(plan_gc(&ws, Retention { max_worlds: 2, max_age: 898 }, 1000)), ["w0", "w1", "w2"]);
        assert!(plan_gc(&[], Retention { max_worlds: 1, max_age: 1 }, 1000).is_empty());
    }

    #[test]
    fn paths_map_to_the_upper_of_their_longest_mount() {
        let mut w = world("w", 0);
        w.uppers = vec![
            Upper { mount: "/".into(), upper: "/s/fs/upper".into() },
            Upper { mount: "/home".into(), upper: "/s/fs/layers/0/upper".into() },
        ];
        let got = |p: &str| w.upper_for(p.as_bytes()).map(|(u, rest)| (u.mount.clone(), rest.to_vec()));
        assert_eq!(got("/home/a/b"), Some(("/home".into(), b"a/b".to_vec())));
        assert_eq!(got("/home"), Some(("/home".into(), b"".to_vec())));
        assert_eq!(got("/homes/z"), Some(("/".into(), b"homes/z".to_vec())));
        assert_eq!(got("/etc/x"), Some(("/".into(), b"etc/x".to_vec())));
        assert_eq!(got("relative"), None);
    }

    #[test]
    fn listing_reads_settled_worlds_only() {
        let tmp = tempfile::tempdir().unwrap();
        let sd = StateDir::open(&tmp.path().join("s")).unwrap();
        let c = sd.claim().unwrap();
        let meta = serde_json::json!({"id": c.id, "state": "kept", "owner": "batch:b1", "created": 7, "exit_code": 3});
        sd.keep(&c, &meta, |_| Ok(())).unwrap();
        let running = sd.claim().unwrap();
        sd.attach(&running, &serde_json::json!({"state": "running"}), |_| Ok(())).unwrap();
        let got = list(&sd);
        assert_eq!(got.len(), 1, "{got:?}");
        assert_eq!((got[0].owner.as_deref(), got[0].exit_code, got[0].created), (Some("batch:b1"), Some(3), 7));
        assert_eq!(owned_by(&sd, "batch:b1").map(|w| w.id), Some(c.id.clone()));
        // The claim is still held: a live world is not discarded.
        assert!(discard(&sd, &c.id).is_err());
        drop(c);
        // Nor while a commit holds its review lock.
        let busy = lock(&got[0].path, false).unwrap();
        assert!(lock(&got[0].path, false).is_err());
        assert!(discard(&sd, &got[0].id).is_err());
        drop(busy);
        discard(&sd, &got[0].id).unwrap();
        assert!(list(&sd).is_empty());
        assert!(discard(&sd, "../../../etc").is_err());
        remove_world_dir(&sd.world_path(&running.id)).unwrap();
    }
}
