//! cloche's state directory.
//!
//! ```text
//! <state>/            0700
//!   mnt/              the overlay mount point; each world mounts on it in
//!                     its own private mount namespace, so it stays empty on
//!                     the host and is shared by all worlds
//!   cache/            compiled seccomp programs
//!   pool.img          the disk pool's image (`pool/image.rs`): made by the
//!                     first world on disk or kept, attached again by
//!                     [`StateDir::open`] when found detached (a reboot)
//!   pool.lock         taken while the disk pool is made or attached
//!   worlds/           the pool's mount point (nosuid, nodev, noexec)
//!   worlds/<id>/      one world: a subvolume of the pool with `fs/`
//!                     (upper/, work/, scratch/) while it runs and, once
//!                     attached (`run --keep`, batches) or kept,
//!                     `world.json`, then `kept`; a world whose upper is a
//!                     tmpfs is a plain directory with the tmpfs on `fs/`
//!                     while it runs attached, and is moved into a
//!                     subvolume when it is kept (`pool/adopt.rs`)
//!                     (continued: its `runs.jsonl`, `fs_diff.json`;
//!                     `continued.rs`)
//!   worlds/.spare-*, .trash-*, .making-*, .moving-*, .forking-*   the pool's own
//! ```
//!
//! A running world creates nothing else on the host filesystem: its mounts
//! live in its own namespace, and a world on disk is one subvolume, moved
//! to the pool's trash when it ends (a crashed run's is swept, below). What it does own on the
//! host is its cgroup. To tell a live world's cgroup from a crashed run's,
//! each run holds an open-file-description lock (`F_OFD_SETLK`) on one byte
//! of [`LIVE_LOCK`] (one file for the machine, like the cgroups), at an
//! offset derived from its id; the kernel drops the lock
//! when the process dies, however it dies. A sweep removes cgroups and
//! world directories whose byte is unlocked, or keeps an attached world as
//! interrupted when its description asks for it; it takes the dead run's
//! byte while it does, so two sweeps never settle one world together. This
//! costs one open and one fcntl per run.

use std::fs;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// The default state directory when run as root.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/cloche";

/// `CLOCHE_STATE_DIR`, else /var/lib/cloche for root, and for any other
/// user their own (`rootless::user_state_dir`: `$XDG_STATE_HOME/cloche` or
/// `~/.local/state/cloche`).
pub fn state_dir_from_env() -> PathBuf {
    match std::env::var_os("CLOCHE_STATE_DIR") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ if crate::rootless::Caller::of_process().is_some() => {
            crate::rootless::user_state_dir().unwrap_or_else(|| PathBuf::from(DEFAULT_STATE_DIR))
        }
        _ => PathBuf::from(DEFAULT_STATE_DIR),
    }
}

#[derive(Debug)]
pub struct StateDir {
    pub root: PathBuf,
    worlds: PathBuf,
    /// An fd on live.lock used to query other runs' locks.
    query: fs::File,
    /// The liveness locks' file: [`LIVE_LOCK`], or for a user who is not
    /// root the state directory's own `live.lock` (such a user's worlds
    /// have no cgroup of the machine's to sweep: `rootless.rs`).
    lock_path: PathBuf,
    /// Opened by a user who is not root: its worlds are worlds without
    /// root (`rootless.rs`), their uppers plain directories.
    rootless: bool,
}

/// The worlds of dead runs [`StateDir::settle_dead`] settled.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Settled {
    /// Kept for review as `interrupted` (their policy's `keep_interrupted`).
    pub kept: Vec<String>,
    /// Removed.
    pub removed: Vec<String>,
}

/// A running world's claim on its id; dropping it releases the id.
#[derive(Debug)]
pub struct Claim {
    pub id: String,
    _lock: fs::File,
}

impl Claim {
    /// Another descriptor of the claim's lock: the id stays live until it
    /// is closed too (an open-file-description lock).
    pub(crate) fn hold(&self) -> io::Result<std::os::fd::OwnedFd> {
        Ok(self._lock.try_clone()?.into())
    }
}

impl StateDir {
    /// Opens (creating, mode 0700) the state directory. The path is made
    /// absolute so that mounts below it never depend on the cwd.
    pub fn open(root: &Path) -> io::Result<StateDir> {
        let root = std::path::absolute(root)?;
        let worlds = root.join("worlds");
        if !worlds.is_dir() {
            fs::DirBuilder::new().recursive(true).mode(0o700).create(&worlds)?;
        }
        let mnt = root.join("mnt");
        if !mnt.is_dir() {
            fs::DirBuilder::new().mode(0o755).create(&mnt)?;
        }
        let root = fs::canonicalize(&root)?;
        let worlds = root.join("worlds");
        // A pre-existing directory keeps its mode: tighten it.
        for d in [&root, &worlds] {
            let mode = fs::metadata(d)?.permissions().mode() & 0o7777;
            if mode & 0o077 != 0 {
                fs::set_permissions(d, fs::Permissions::from_mode(0o700))?;
            }
        }
        let rootless = crate::rootless::Caller::of_process().is_some();
        let lock_path = if rootless { root.join("live.lock") } else { PathBuf::from(LIVE_LOCK) };
        let query = open_lock_at(&lock_path)?;
        // After a reboot (or an `umount`) the pool's image is there but
        // not mounted: every command attaches it again, so that kept
        // worlds are where they were. A failure is said by what needs the
        // pool ([`StateDir::pool_ready`]); a world on tmpfs does not.
        let _ = crate::pool::reattach(&root);
        Ok(StateDir { root, worlds, query, lock_path, rootless })
    }

    /// Whether this state directory's worlds are worlds without root.
    pub fn rootless(&self) -> bool {
        self.rootless
    }

    /// Makes sure the disk pool, if the state directory has one, is
    /// attached (again, if it was unmounted since [`StateDir::open`]: a
    /// long-lived process); fails when it cannot be: kept worlds cannot be
    /// listed, reviewed or discarded then (an empty list would be a wrong
    /// answer). Two `stat`s when it is mounted.
    pub fn pool_ready(&self) -> io::Result<()> {
        crate::pool::reattach(&self.root).map(drop).map_err(|e| {
            io::Error::other(format!(
                "the disk pool {} cannot be attached: {e} (see `cloche doctor`)",
                self.root.join(crate::pool::IMAGE).display()
            ))
        })
    }

    /// The overlay mount point shared by all worlds (inside their own mount
    /// namespaces).
    pub fn mount_point(&self) -> PathBuf {
        self.root.join("mnt")
    }

    /// Claims a fresh random id for a new world.
    pub fn claim(&self) -> io::Result<Claim> {
        let lock = open_lock_at(&self.lock_path)?;
        for _ in 0..8 {
            let id = new_id()?;
            match ofd_lock(&lock, libc::F_OFD_SETLK, libc::F_WRLCK as i16, offset(&id)) {
                Ok(_) => return Ok(Claim { id, _lock: lock }),
                Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => continue, // id collision: draw again
                Err(e) => return Err(e),
            }
        }
        Err(io::Error::other("could not claim a world id"))
    }

    /// Claims the existing id `id` (of a world whose run died), so that no
    /// other cloche settles it meanwhile; `None` while it is live.
    pub fn claim_id(&self, id: &str) -> io::Result<Option<Claim>> {
        if !valid_id(id) {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        }
        let lock = open_lock_at(&self.lock_path)?;
        match ofd_lock(&lock, libc::F_OFD_SETLK, libc::F_WRLCK as i16, offset(id)) {
            Ok(_) => Ok(Some(Claim { id: id.to_string(), _lock: lock })),
            Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// True while the run that claimed `id` is alive.
    pub fn is_live(&self, id: &str) -> bool {
        if !valid_id(id) {
            return false;
        }
        match ofd_lock(&self.query, libc::F_OFD_GETLK, libc::F_WRLCK as i16, offset(id)) {
            Ok(l_type) => l_type != libc::F_UNLCK as i16,
            Err(_) => true, // cannot tell: never remove what might be live
        }
    }

    /// `<state>/worlds`: the pool's mount point, where worlds live.
    pub fn worlds_dir(&self) -> PathBuf {
        self.worlds.clone()
    }

    /// Path of kept world `id` (not checked).
    pub fn world_path(&self, id: &str) -> PathBuf {
        self.worlds.join(id)
    }

    /// True if a kept world with this id exists.
    pub fn has_world(&self, id: &str) -> bool {
        valid_id(id) && self.worlds.join(id).is_dir()
    }

    /// Settles world directories whose run ended without marking them kept
    /// (no `kept` marker, id not live: the process crashed or was killed).
    /// A world whose description says `"on_interrupt": "keep"` is marked
    /// kept with `"state": "interrupted"`; any other is removed. Returns the
    /// ids removed.
    pub fn sweep(&self) -> Vec<String> {
        self.settle_dead().removed
    }

    /// [`StateDir::sweep`], saying which worlds it kept as interrupted too.
    pub fn settle_dead(&self) -> Settled {
        let mut settled = Settled::default();
        let Ok(entries) = fs::read_dir(&self.worlds) else { return settled };
        for e in entries.flatten() {
            let id = e.file_name().to_string_lossy().into_owned();
            let path = e.path();
            if !valid_id(&id) || path.join("kept").exists() || self.is_live(&id) {
                continue;
            }
            // Held while it is settled: another cloche's sweep skips it.
            let Ok(Some(_held)) = self.claim_id(&id) else { continue };
            if path.join("kept").exists() {
                continue; // settled by another sweep meanwhile
            }
            if self.settle_interrupted(&id).is_ok() {
                settled.kept.push(id);
            } else if remove_world_dir(&path).is_ok() {
                settled.removed.push(id);
            }
        }
        settled
    }

    /// Marks an unmarked world kept as interrupted when its description
    /// asks for it; an error means "remove it instead".
    pub(crate) fn settle_interrupted(&self, id: &str) -> io::Result<()> {
        let path = self.world_path(id);
        let mut meta: serde_json::Value =
            serde_json::from_slice(&fs::read(path.join("world.json"))?).map_err(io::Error::other)?;
        if meta["on_interrupt"] != "keep" || !path.join("fs").is_dir() {
            return Err(io::Error::other("not to be kept"));
        }
        meta["state"] = "interrupted".into();
        self.mark_kept(id, &meta)
    }

    /// Attaches a world's upper at `worlds/<id>/fs` with `attach` and writes
    /// its description, without the `kept` marker: a world in progress,
    /// which [`StateDir::mark_kept`] or a later sweep settles. A world on
    /// disk is there already (its subvolume, with `fs/`).
    pub fn attach(
        &self,
        claim: &Claim,
        meta: &serde_json::Value,
        attach: impl FnOnce(&Path) -> io::Result<()>,
    ) -> io::Result<PathBuf> {
        let path = self.world_path(&claim.id);
        let made = match fs::DirBuilder::new().mode(0o700).create(&path) {
            Ok(()) => true,
            // A subvolume of the pool, or a world without root's directory
            // (made with its upper: `upper::Upper::make`).
            Err(e)
                if e.kind() == io::ErrorKind::AlreadyExists && (self.rootless || crate::pool::is_subvolume(&path)) =>
            {
                false
            }
            Err(e) => return Err(e),
        };
        let res = (|| {
            if made {
                fs::create_dir(path.join("fs"))?;
            }
            attach(&path.join("fs"))?;
            write_replace(&path.join("world.json"), meta)
        })();
        match res {
            Ok(()) => Ok(path),
            Err(e) => {
                let _ = remove_world_dir(&path);
                Err(e)
            }
        }
    }

    /// Rewrites an attached world's description and marks it kept; the
    /// caller holds its id. A world on a tmpfs is moved into the disk pool
    /// first (`pool::adopt`: a kept world holds no memory and outlives a
    /// reboot); if it cannot be, it stays on its tmpfs (nothing is lost)
    /// and its description says why (`store_error`). The pool is synced
    /// before the marker is written and after: a kept world is on disk,
    /// whole, once this returns.
    pub fn mark_kept(&self, id: &str, meta: &serde_json::Value) -> io::Result<()> {
        let path = self.world_path(id);
        write_replace(&path.join("world.json"), meta)?;
        if let Err(e) = crate::pool::adopt(&self.root, id) {
            let mut meta = meta.clone();
            meta["store_error"] = e.to_string().into();
            write_replace(&path.join("world.json"), &meta)?;
        }
        let synced = crate::pool::is_subvolume(&path);
        if synced {
            sync(&path)?;
        }
        fs::write(path.join("kept"), b"")?;
        if synced {
            sync(&path)?;
        }
        Ok(())
    }

    /// Drops the `store_error` of a kept world's description (it was
    /// moved to disk after all).
    pub(crate) fn forget_store_error(&self, id: &str) -> io::Result<()> {
        let path = self.world_path(id).join("world.json");
        let mut meta: serde_json::Value = serde_json::from_slice(&fs::read(&path)?).map_err(io::Error::other)?;
        if let Some(m) = meta.as_object_mut() {
            m.remove("store_error");
        }
        write_replace(&path, &meta)?;
        sync(&path)
    }

    /// Keeps a world at once: [`StateDir::attach`], then
    /// [`StateDir::mark_kept`].
    pub fn keep(
        &self,
        claim: &Claim,
        meta: &serde_json::Value,
        attach: impl FnOnce(&Path) -> io::Result<()>,
    ) -> io::Result<PathBuf> {
        let path = self.attach(claim, meta, attach)?;
        self.mark_kept(&claim.id, meta).inspect_err(|_| drop(remove_world_dir(&path)))?;
        Ok(path)
    }
}

/// `syncfs` of the filesystem holding `path`.
fn sync(path: &Path) -> io::Result<()> {
    let f = fs::File::open(path)?;
    // SAFETY: syncfs on a descriptor we hold.
    if unsafe { libc::syncfs(f.as_raw_fd()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Writes JSON to a temporary file beside `path` and renames it over.
pub(crate) fn write_replace(path: &Path, meta: &serde_json::Value) -> io::Result<()> {
    let json = serde_json::to_vec_pretty(meta).map_err(io::Error::other)?;
    let tmp = path.with_extension("json.tmp");
    fs::write(&tmp, json)?;
    fs::rename(&tmp, path)
}

/// The liveness locks of every world on this machine. cgroups are global to
/// the machine, and every cloche sweeps the cgroups of dead worlds: with a
/// lock file per state dir, a cloche using another state dir would take a
/// live world for a dead one and kill it. One file for the machine (on the
/// /run tmpfs, gone at reboot with the cgroups) keeps liveness as global as
/// the cgroups it guards.
pub const LIVE_LOCK: &str = "/run/cloche/live.lock";

pub(crate) fn open_lock_file() -> io::Result<fs::File> {
    open_lock_at(Path::new(LIVE_LOCK))
}

fn open_lock_at(path: &Path) -> io::Result<fs::File> {
    if let Some(dir) = path.parent() {
        fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
    }
    fs::OpenOptions::new().read(true).write(true).create(true).truncate(false).mode(0o600).open(path)
}

/// The byte of live.lock that stands for `id` (below 2^60: a valid off_t).
fn offset(id: &str) -> i64 {
    i64::from_str_radix(&id[..15], 16).unwrap_or(0)
}

/// The bytes of live.lock (start, length) that stand for the ids whose
/// first 12 hex digits are `prefix` (a world's veth carries those 12).
pub(crate) fn prefix_range(prefix: u64) -> (i64, i64) {
    (((prefix & 0xffff_ffff_ffff) << 12) as i64, 1 << 12)
}

/// `fcntl(F_OFD_SETLK | F_OFD_GETLK)` on one byte; returns the lock type the
/// kernel reports (GETLK) or the type set.
fn ofd_lock(f: &fs::File, cmd: libc::c_int, l_type: i16, at: i64) -> io::Result<i16> {
    // SAFETY: flock is plain data; zeroed is valid (l_pid must be 0 for OFD locks).
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = l_type;
    fl.l_whence = libc::SEEK_SET as i16;
    fl.l_start = at;
    fl.l_len = 1;
    // SAFETY: fcntl with a pointer to the flock we own.
    if unsafe { libc::fcntl(f.as_raw_fd(), cmd, &mut fl) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(fl.l_type)
}

/// Removes a world's directory: a subvolume of the pool is deleted whole
/// (its upper with it); otherwise its `fs` mount is detached and only the
/// entries cloche creates are removed (never a recursive delete through a
/// mount).
pub fn remove_world_dir(path: &Path) -> io::Result<()> {
    if crate::pool::is_subvolume(path) {
        return crate::pool::destroy_path(path);
    }
    let fsdir = path.join("fs");
    // A world without root's upper: a directory of its user's, on the
    // same filesystem as the world's directory (no mount to detach).
    if crate::rootless::Caller::of_process().is_some() && same_device(path, &fsdir) {
        crate::rootless::remove_tree(&fsdir)?;
    }
    if fsdir.exists() {
        let _ = nix::mount::umount2(&fsdir, nix::mount::MntFlags::MNT_DETACH);
        fs::remove_dir(&fsdir)?;
    }
    // world.json and its marker; the review's records (cloche-review:
    // per-entry changes, base states; `continued`: runs, the last fs_diff).
    for f in [
        "world.json",
        "world.json.tmp",
        "kept",
        "changes.jsonl",
        "base.jsonl",
        "runs.jsonl",
        "fs_diff.json",
        "fs_diff.json.tmp",
    ] {
        match fs::remove_file(path.join(f)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
    }
    fs::remove_dir(path)
}

/// Whether `b` exists, is a directory (no symlink) and is on `a`'s device.
fn same_device(a: &Path, b: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (fs::symlink_metadata(a), fs::symlink_metadata(b)) {
        (Ok(a), Ok(b)) => b.is_dir() && a.dev() == b.dev(),
        _ => false,
    }
}

/// World ids: 16 lowercase hex digits.
pub fn valid_id(id: &str) -> bool {
    id.len() == 16 && id.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn new_id() -> io::Result<String> {
    let mut b = [0u8; 8];
    // SAFETY: getrandom writes at most b.len() bytes into b.
    let n = unsafe { libc::getrandom(b.as_mut_ptr().cast(), b.len(), 0) };
    if n != b.len() as isize {
        return Err(io::Error::last_os_error());
    }
    Ok(b.iter().map(|x| format!("{x:02x}")).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claims_are_live_until_dropped() {
        let tmp = tempfile::tempdir().unwrap();
        let sd = StateDir::open(&tmp.path().join("s")).unwrap();
        let mode = fs::metadata(&sd.root).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
        assert!(sd.mount_point().is_dir());
        let a = sd.claim().unwrap();
        let b = sd.claim().unwrap();
        assert!(valid_id(&a.id) && a.id != b.id);
        assert!(sd.is_live(&a.id) && sd.is_live(&b.id));
        // A second StateDir (another cloche process) sees the same.
        let other = StateDir::open(&sd.root).unwrap();
        assert!(other.is_live(&a.id));
        let a_id = a.id.clone();
        drop(a);
        assert!(!sd.is_live(&a_id));
        let (start, len) = prefix_range(u64::from_str_radix(&b.id[..12], 16).unwrap());
        assert!((start..start + len).contains(&offset(&b.id)), "a veth's prefix covers its world's byte");
        assert!(!other.is_live(&a_id));
        assert!(sd.is_live(&b.id));
        assert!(!sd.is_live("../../etc/passwd"));
    }

    #[test]
    fn kept_worlds_stay_and_broken_keeps_are_swept() {
        let tmp = tempfile::tempdir().unwrap();
        let sd = StateDir::open(&tmp.path().join("s")).unwrap();
        let c = sd.claim().unwrap();
        let kept = sd.keep(&c, &serde_json::json!({"id": c.id}), |_| Ok(())).unwrap();
        assert!(kept.join("kept").exists() && kept.join("world.json").exists());
        // A keep that fails half-way leaves nothing.
        let c2 = sd.claim().unwrap();
        assert!(sd.keep(&c2, &serde_json::json!({}), |_| Err(io::Error::other("boom"))).is_err());
        assert!(!sd.has_world(&c2.id));
        // A directory left by a crashed keep (no marker, id not live) is swept.
        let stale = sd.world_path("0123456789abcdef");
        fs::create_dir_all(stale.join("fs")).unwrap();
        assert_eq!(sd.sweep(), vec!["0123456789abcdef".to_string()]);
        assert!(sd.has_world(&c.id));
        remove_world_dir(&kept).unwrap();
    }

    #[test]
    fn interrupted_worlds_are_kept_or_swept_as_they_asked() {
        let tmp = tempfile::tempdir().unwrap();
        let sd = StateDir::open(&tmp.path().join("s")).unwrap();
        let (keep, sweep) = (sd.claim().unwrap(), sd.claim().unwrap());
        let (keep_id, sweep_id) = (keep.id.clone(), sweep.id.clone());
        sd.attach(&keep, &serde_json::json!({"state": "running", "on_interrupt": "keep"}), |_| Ok(())).unwrap();
        sd.attach(&sweep, &serde_json::json!({"state": "running", "on_interrupt": "sweep"}), |_| Ok(())).unwrap();
        // Live: left alone.
        assert!(sd.sweep().is_empty());
        drop((keep, sweep)); // as if the runner died
        assert_eq!(sd.settle_dead(), Settled { kept: vec![keep_id.clone()], removed: vec![sweep_id.clone()] });
        assert!(!sd.has_world(&sweep_id));
        let p = sd.world_path(&keep_id);
        assert!(p.join("kept").exists());
        let meta: serde_json::Value = serde_json::from_slice(&fs::read(p.join("world.json")).unwrap()).unwrap();
        assert_eq!(meta["state"], "interrupted");
        assert!(sd.sweep().is_empty());
        remove_world_dir(&p).unwrap();
    }

    #[test]
    fn a_dead_runs_id_can_be_held_while_it_is_settled() {
        let tmp = tempfile::tempdir().unwrap();
        let sd = StateDir::open(&tmp.path().join("s")).unwrap();
        let live = sd.claim().unwrap();
        assert!(sd.claim_id(&live.id).unwrap().is_none(), "a live id is not taken");
        let id = live.id.clone();
        drop(live);
        let held = sd.claim_id(&id).unwrap().expect("a dead run's id");
        assert!(sd.is_live(&id) && sd.claim_id(&id).unwrap().is_none(), "held: another sweep skips it");
        drop(held);
        assert!(!sd.is_live(&id));
        assert!(sd.claim_id("../x").is_err());
    }

    #[test]
    fn ids() {
        assert!(valid_id("0123456789abcdef"));
        assert!(!valid_id("../../etc"));
        assert!(!valid_id("0123456789ABCDEF"));
    }
}
