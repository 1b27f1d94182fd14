//! cloche's state directory: one subdirectory per world.
//!
//! `<state>/worlds/<id>/` (mode 0700) holds:
//! - `root/`: the mount point of the world's overlay (used only inside the
//!   world's private mount namespace; empty on the host);
//! - while a run is live, an exclusive `flock` on the directory itself, held
//!   by the cloche process that runs it: a directory without the lock and
//!   without `kept` belongs to a crashed run and is swept;
//! - for kept worlds: `kept` (marker), `world.json` (what ran) and `fs/`, on
//!   which the world's tmpfs (upper/ and work/) stays mounted (nosuid, nodev,
//!   noexec) for later review.

use std::fs;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// The default state directory when run as root.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/cloche";

/// `CLOCHE_STATE_DIR`, else /var/lib/cloche.
pub fn state_dir_from_env() -> PathBuf {
    match std::env::var_os("CLOCHE_STATE_DIR") {
        Some(p) if !p.is_empty() => PathBuf::from(p),
        _ => PathBuf::from(DEFAULT_STATE_DIR),
    }
}

#[derive(Debug)]
pub struct StateDir {
    pub root: PathBuf,
    worlds: PathBuf,
}

/// A live world's directory; removed by `remove`, or swept after a crash.
#[derive(Debug)]
pub struct WorldDir {
    pub id: String,
    pub path: PathBuf,
    lock: fs::File,
}

impl StateDir {
    /// Opens (creating, mode 0700) the state directory. The path is made
    /// absolute so that mounts below it never depend on the cwd.
    pub fn open(root: &Path) -> io::Result<StateDir> {
        let root = if root.is_absolute() { root.to_path_buf() } else { std::env::current_dir()?.join(root) };
        let worlds = root.join("worlds");
        fs::DirBuilder::new().recursive(true).mode(0o700).create(&worlds)?;
        let root = fs::canonicalize(&root)?;
        let worlds = root.join("worlds");
        // A pre-existing directory keeps its mode: tighten it.
        for d in [&root, &worlds] {
            let mode = fs::metadata(d)?.permissions().mode() & 0o7777;
            if mode & 0o077 != 0 {
                fs::set_permissions(d, fs::Permissions::from_mode(0o700))?;
            }
        }
        Ok(StateDir { root, worlds })
    }

    /// Creates a new world directory with a fresh random id, locked.
    pub fn new_world(&self) -> io::Result<WorldDir> {
        let id = new_id()?;
        let path = self.worlds.join(&id);
        fs::DirBuilder::new().mode(0o700).create(&path)?;
        fs::DirBuilder::new().mode(0o755).create(path.join("root"))?;
        let lock = fs::File::open(&path)?;
        lock_nb(&lock)?;
        Ok(WorldDir { id, path, lock })
    }

    /// Path of world `id` (not checked).
    pub fn world_path(&self, id: &str) -> PathBuf {
        self.worlds.join(id)
    }

    /// Removes what crashed runs left behind: world directories that are
    /// neither locked by a live run nor kept. `release(id)` frees the
    /// world's other resources first (its cgroup); the directory is removed
    /// only when it returns true, so a failed release is retried next time.
    /// Returns the ids swept.
    pub fn sweep(&self, release: impl Fn(&str) -> bool) -> Vec<String> {
        let mut swept = Vec::new();
        let Ok(entries) = fs::read_dir(&self.worlds) else { return swept };
        for e in entries.flatten() {
            let path = e.path();
            let id = e.file_name().to_string_lossy().into_owned();
            if !valid_id(&id) || path.join("kept").exists() {
                continue;
            }
            let Ok(f) = fs::File::open(&path) else { continue };
            if lock_nb(&f).is_err() {
                continue; // a live run holds it
            }
            if release(&id) && remove_world_dir(&path).is_ok() {
                swept.push(id);
            }
        }
        swept
    }

    /// True if a world directory with this id exists (live, kept or stale).
    pub fn has_world(&self, id: &str) -> bool {
        valid_id(id) && self.worlds.join(id).is_dir()
    }
}

impl WorldDir {
    /// The overlay mount point.
    pub fn root(&self) -> PathBuf {
        self.path.join("root")
    }

    /// Removes the directory of a discarded world.
    pub fn remove(self) -> io::Result<()> {
        let r = remove_world_dir(&self.path);
        drop(self.lock);
        r
    }

    /// Marks the world kept; the lock is released so `discard`/gc can act.
    pub fn keep(self, meta: &serde_json::Value) -> io::Result<PathBuf> {
        let json = serde_json::to_vec_pretty(meta).map_err(io::Error::other)?;
        fs::write(self.path.join("world.json"), json)?;
        fs::write(self.path.join("kept"), b"")?;
        Ok(self.path)
    }
}

/// Removes a world directory: detaches a leftover `fs` mount, then removes
/// only the entries cloche creates (never a recursive delete through a
/// mount).
pub fn remove_world_dir(path: &Path) -> io::Result<()> {
    let fsdir = path.join("fs");
    if fsdir.exists() {
        let _ = nix::mount::umount2(&fsdir, nix::mount::MntFlags::MNT_DETACH);
        fs::remove_dir(&fsdir)?;
    }
    for f in ["world.json", "kept", "report.json"] {
        match fs::remove_file(path.join(f)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
    }
    match fs::remove_dir(path.join("root")) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    fs::remove_dir(path)
}

/// `flock(LOCK_EX | LOCK_NB)`; released when the file is closed.
fn lock_nb(f: &fs::File) -> io::Result<()> {
    // SAFETY: flock on an fd we own.
    if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
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
    fn worlds_are_created_locked_and_swept_only_when_stale() {
        let tmp = tempfile::tempdir().unwrap();
        let sd = StateDir::open(&tmp.path().join("s")).unwrap();
        let mode = fs::metadata(&sd.root).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
        let live = sd.new_world().unwrap();
        assert!(valid_id(&live.id));
        assert!(live.root().is_dir());
        // A stale world: created, then its lock dropped without removal.
        let stale = sd.new_world().unwrap();
        let stale_id = stale.id.clone();
        drop(stale);
        let kept = sd.new_world().unwrap();
        let kept_id = kept.id.clone();
        kept.keep(&serde_json::json!({"id": kept_id})).unwrap();
        assert_eq!(sd.sweep(|_| true), vec![stale_id.clone()]);
        assert!(!sd.has_world(&stale_id));
        assert!(sd.has_world(&live.id));
        assert!(sd.has_world(&kept_id));
        live.remove().unwrap();
        remove_world_dir(&sd.world_path(&kept_id)).unwrap();
        assert_eq!(fs::read_dir(sd.root.join("worlds")).unwrap().count(), 0);
    }

    #[test]
    fn ids() {
        assert!(valid_id("0123456789abcdef"));
        assert!(!valid_id("../../etc"));
        assert!(!valid_id("0123456789ABCDEF"));
    }
}
