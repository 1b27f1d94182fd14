//! Where a world's writes go: the `upper/` and `work/` directories of its
//! overlays (and `layers/<k>/{upper,work}` for each host data mount).
//!
//! - **disk** (the default): a subvolume of the state directory's disk pool
//!   (`pool/`), capped at `upper_size` by a quota of its own, so that a
//!   world's files take neither its memory limit nor the host's RAM.
//!   Discarded when the world ends (moved to the pool's trash, emptied by
//!   the next run off its critical path: `pool/subvol.rs`), unless kept.
//! - **tmpfs**: a detached tmpfs capped at `upper_size` (its pages are
//!   charged to the world's memory limit), never attached to the host's
//!   tree while the world runs: it vanishes with its last descriptor, even
//!   if cloche is killed.

use crate::child::Store;
use crate::error::WorldError;
use crate::pool;
use crate::raw;
use crate::spec::{Spec, UpperStore};
use crate::state::StateDir;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;

/// A world's upper directories.
pub(crate) struct Upper {
    /// The directory holding `upper/`, `work/`, `scratch/` and `layers/`:
    /// the detached tmpfs, or the subvolume's `fs/` (the child opens that
    /// again in its own mount namespace: `child::Store`).
    fd: OwnedFd,
    disk: Option<Disk>,
    /// A world without root's: `<state>/worlds/<id>` (its upper in `fs/`),
    /// a plain directory of its user's, and whether it was handed over.
    plain: Option<(std::path::PathBuf, bool)>,
    /// A world without root's tmpfs store, until its child hands it over.
    handed: Option<Handed>,
}

/// A world without root's tmpfs store (`Upper::rootless`) on its way.
struct Handed {
    /// Its cap (bytes) and its host data mounts' slots.
    size: u64,
    layers: usize,
    /// The child's end of the socket it hands the store over on (taken by
    /// `Upper::for_child`), and ours.
    send: Option<OwnedFd>,
    ours: OwnedFd,
}

/// A disk upper: the pool and the world's subvolume in it.
struct Disk {
    pool: OwnedFd,
    id: String,
    /// `<state>/worlds/<id>/fs`.
    path: std::path::PathBuf,
    /// Host data mounts (spares are made with as many layer directories).
    layers: usize,
    /// Handed over to `worlds/<id>` (kept, or attached for review): no
    /// longer deleted on drop.
    handed_over: bool,
}

impl Upper {
    /// Makes world `id`'s upper directories as `spec.upper` asks, with
    /// `layers` host data mounts.
    pub(crate) fn make(spec: &Spec, state: &StateDir, id: &str, layers: usize) -> Result<Upper, WorldError> {
        let upper = match spec.upper {
            UpperStore::Tmpfs => Upper {
                fd: tmpfs(spec.upper_size).map_err(WorldError::Scratch)?,
                disk: None,
                plain: None,
                handed: None,
            },
            UpperStore::Disk => {
                pool::ensure(&state.root)?;
                crate::profile::mark("pool mounted");
                let cap = pool::cap(&state.root, spec.upper_size)?;
                let p = pool::open(&state.worlds_dir()).map_err(WorldError::state("open the disk pool"))?;
                // A spare subvolume if there is one (`fs/` and its
                // directories made already), else a new one.
                let fd = pool::create_world(p.as_fd(), id, cap, layers)?;
                let path = state.world_path(id).join("fs");
                Upper {
                    fd,
                    disk: Some(Disk { pool: p, id: id.to_string(), path, layers, handed_over: false }),
                    plain: None,
                    handed: None,
                }
            }
        };
        dirs(&upper.fd, layers).map_err(WorldError::Scratch)?;
        Ok(upper)
    }

    /// A world without root's upper (`rootless.rs`): `<state>/worlds/<id>/fs`,
    /// a directory of the caller's on their own disk. A world kept
    /// (`tmpfs` None) has its upper there: the child opens it in its
    /// namespace, with the upper and work directories of each overlay
    /// piece made here once they are listed ([`Upper::make_piece_uppers`]),
    /// and no cap of its own (the user's disk quota, if
    /// any). Any other gets a tmpfs capped at `tmpfs` bytes, which its
    /// child mounts there in its own mount namespace, fills with those
    /// directories and hands back (SCM_RIGHTS) for the fs_diff: nothing of
    /// it touches the disk (docs/security.md, *Worlds without root*).
    pub(crate) fn rootless(state: &StateDir, id: &str, layers: usize, tmpfs: Option<u64>) -> Result<Upper, WorldError> {
        use std::os::unix::fs::DirBuilderExt;
        let dir = state.world_path(id);
        let fsdir = dir.join("fs");
        let made = std::fs::DirBuilder::new().mode(0o700).create(&dir);
        made.map_err(WorldError::state("make the world's directory"))?;
        let upper = (|| {
            std::fs::DirBuilder::new().mode(0o700).create(&fsdir)?;
            let fd: OwnedFd = std::fs::File::open(&fsdir)?.into();
            let Some(size) = tmpfs else {
                dirs(&fd, layers)?;
                return Ok((fd, None));
            };
            use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};
            let flags = SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK;
            let (ours, theirs) = socketpair(AddressFamily::Unix, SockType::SeqPacket, None, flags)?;
            Ok((fd, Some(Handed { size, layers, send: Some(theirs), ours })))
        })();
        match upper {
            Ok((fd, handed)) => Ok(Upper { fd, disk: None, plain: Some((dir, false)), handed }),
            Err(e) => {
                let _ = crate::rootless::remove_tree(&dir);
                Err(WorldError::state("make the world's upper")(e))
            }
        }
    }

    /// The upper of the kept world `id`, for a run that continues it (its
    /// id held: `continued::take`): its subvolume, capped at the spec's
    /// `upper_size` (the policy in force now), with what its last run left
    /// of no use to this one set aside: the overlays' work directories
    /// removed (overlayfs' `volatile` marker refuses a second mount of the
    /// same work directory until it is gone; the pool was synced when the
    /// world was kept), the scratch directories renamed to `scratch.old`
    /// (this run's `/tmp`, `/var/tmp` and `/run` are fresh; the old ones
    /// are removed when the run ends, off its start: [`Upper::drop_old_scratch`]).
    /// Never discarded on drop: the world stays kept.
    pub(crate) fn resume(spec: &Spec, state: &StateDir, id: &str, layers: usize) -> Result<Upper, WorldError> {
        let cap = pool::cap(&state.root, spec.upper_size)?;
        let p = pool::open(&state.worlds_dir()).map_err(WorldError::state("open the disk pool"))?;
        let fd = pool::resume_world(p.as_fd(), id, cap)?;
        let fail = |what: &'static str| move |e: nix::Error| WorldError::State { what, source: e.into() };
        let works = crate::continued::work_dirs(fd.as_fd()).map_err(WorldError::state("list its work directories"))?;
        for w in works {
            let flags = nix::fcntl::OFlag::O_RDONLY | nix::fcntl::OFlag::O_DIRECTORY | nix::fcntl::OFlag::O_NOFOLLOW;
            match nix::fcntl::openat(&fd, w.as_str(), flags, nix::sys::stat::Mode::empty()) {
                Ok(wd) => pool::tree::remove(wd.as_fd(), "work").map_err(fail("clear a work directory"))?,
                Err(nix::Error::ENOENT) => {}
                Err(e) => return Err(fail("open a work directory")(e)),
            }
        }
        // A run that died left its old scratch: removed now (rare).
        pool::tree::remove(fd.as_fd(), OLD_SCRATCH).map_err(fail("remove an old scratch"))?;
        match nix::fcntl::renameat(&fd, "scratch", &fd, OLD_SCRATCH) {
            Ok(()) | Err(nix::Error::ENOENT) => {}
            Err(e) => return Err(fail("set the last run's scratch aside")(e)),
        }
        let path = state.world_path(id).join("fs");
        let upper = Upper {
            fd,
            disk: Some(Disk { pool: p, id: id.to_string(), path, layers, handed_over: true }),
            plain: None,
            handed: None,
        };
        dirs(&upper.fd, layers).map_err(WorldError::Scratch)?;
        Ok(upper)
    }

    /// Removes the scratch directories an earlier run of a continued world
    /// left (`scratch.old`), once this run ended. Best effort: the next
    /// run removes what is left.
    pub(crate) fn drop_old_scratch(&self) {
        let _ = pool::tree::remove(self.fd.as_fd(), OLD_SCRATCH);
    }

    /// Off the critical path (the world released, its child finishing its
    /// setup): makes the pool's spares again and empties its trash.
    pub(crate) fn housekeep(&self, me: &str, state: &StateDir) {
        if let Some(d) = &self.disk {
            pool::housekeep(d.pool.as_fd(), &state.root, Some(me), d.layers, &|id| state.is_live(id));
        }
    }

    /// A world without root kept on disk: the upper and work directories
    /// of its overlay `pieces`, made before they are sent to its child.
    /// (A tmpfs store's are the child's to make: nothing here.)
    pub(crate) fn make_piece_uppers(&self, pieces: &[crate::rootless::Piece]) -> io::Result<()> {
        match (&self.plain, &self.handed) {
            (Some((dir, _)), None) => crate::rootless::make_uppers(&dir.join("fs"), pieces),
            _ => Ok(()),
        }
    }

    /// The store as the world's child reaches it (once).
    pub(crate) fn for_child(&mut self) -> io::Result<Store> {
        if let (Some((dir, _)), Some(h)) = (&self.plain, self.handed.as_mut()) {
            let send = h.send.take().ok_or_else(|| io::Error::other("the store was handed to a child already"))?;
            return Ok(Store::Tmpfs { path: dir.join("fs"), size: h.size, layers: h.layers, send });
        }
        Ok(match (&self.disk, &self.plain) {
            (Some(d), _) => Store::Path(d.path.clone()),
            (None, Some((dir, _))) => Store::Path(dir.join("fs")),
            (None, None) => Store::Mount(self.fd.try_clone()?),
        })
    }

    /// A world without root's tmpfs store, as its child handed it over
    /// (before the world's init was executed): from now on `fd`.
    pub(crate) fn receive(&mut self) -> io::Result<()> {
        let Some(Handed { ours, .. }) = &self.handed else { return Ok(()) };
        use std::os::fd::AsFd;
        self.fd = crate::fdpass::receive(ours.as_fd(), "store from the world's child")?;
        self.handed = None;
        Ok(())
    }

    /// The directory holding `upper/` and `work/`.
    pub(crate) fn fd(&self) -> &OwnedFd {
        &self.fd
    }

    /// Places the upper at `fsdir` (`worlds/<id>/fs`) for keeping: a tmpfs
    /// is attached there (nosuid, nodev, noexec as made; moved to disk when
    /// the world is marked kept); a disk upper already is that directory.
    pub(crate) fn place(&self, fsdir: &Path) -> io::Result<()> {
        if self.disk.is_some() || self.plain.is_some() {
            return Ok(());
        }
        let target = std::ffi::CString::new(std::os::unix::ffi::OsStrExt::as_bytes(fsdir.as_os_str()))
            .map_err(|_| io::Error::other("NUL in path"))?;
        raw::move_mount_to(self.fd.as_fd(), &target)
    }

    /// A world without root's directory (`worlds/<id>`) not handed over:
    /// no longer removed on drop; its remover is the caller.
    pub(crate) fn discard_later(&mut self) -> Option<std::path::PathBuf> {
        match self.plain.as_mut() {
            Some((dir, handed_over @ false)) => {
                *handed_over = true;
                Some(dir.clone())
            }
            _ => None,
        }
    }

    /// A disk upper not handed over: no longer moved to the trash on drop;
    /// the returned move is the caller's (`Teardown::trash`). `None` when
    /// there is none, or no descriptor for it (then drop moves it).
    pub(crate) fn trash_later(&mut self) -> Option<pool::ToTrash> {
        let d = self.disk.as_mut().filter(|d| !d.handed_over)?;
        let t = pool::ToTrash::new(d.pool.as_fd(), &d.id).ok()?;
        d.handed_over = true;
        Some(t)
    }

    /// From now on `worlds/<id>` owns the upper (a kept world, or one the
    /// sweep settles): dropping this no longer deletes it.
    pub(crate) fn hand_over(&mut self) {
        if let Some(d) = self.disk.as_mut() {
            d.handed_over = true;
        }
        if let Some((_, handed_over)) = self.plain.as_mut() {
            *handed_over = true;
        }
    }
}

impl Drop for Upper {
    /// A disk upper not handed over goes to the pool's trash (a tmpfs goes
    /// with its fd).
    fn drop(&mut self) {
        if let Some(d) = &self.disk {
            if !d.handed_over {
                let _ = pool::discard(d.pool.as_fd(), &d.id);
            }
        }
        if let Some((dir, false)) = &self.plain {
            let _ = crate::rootless::remove_tree(dir);
        }
    }
}

/// Where a continued world's last scratch directories wait for their
/// removal (inside its `fs/`, never seen by a world).
const OLD_SCRATCH: &str = "scratch.old";

/// Before a world is kept: the disk pool, where every kept world ends up
/// (a tmpfs upper is attached in it, then moved into a subvolume when the
/// world is marked kept: `pool::adopt`).
pub(crate) fn prepare_keep(spec: &Spec, state: &StateDir) -> Result<(), WorldError> {
    if spec.keep && spec.upper == UpperStore::Tmpfs {
        pool::ensure(&state.root)?;
    }
    Ok(())
}

/// A detached tmpfs (nosuid, nodev, noexec, 0700) capped at `size`.
fn tmpfs(size: u64) -> io::Result<OwnedFd> {
    let fs = raw::fsopen("tmpfs")?;
    raw::fsconfig_str(fs.as_fd(), "size", &size.to_string())?;
    raw::fsconfig_str(fs.as_fd(), "mode", "0700")?;
    raw::fsconfig_create(fs.as_fd())?;
    let attrs = libc::MOUNT_ATTR_NOSUID | libc::MOUNT_ATTR_NODEV | libc::MOUNT_ATTR_NOEXEC;
    raw::fsmount(fs.as_fd(), attrs)
}

/// The store's directories for `layers` host data mounts (`pool::fs_dirs`):
/// all of them in a fresh tmpfs; in a subvolume, those its spare was not
/// made with (another count of host data mounts).
pub(crate) fn dirs(at: &OwnedFd, layers: usize) -> io::Result<()> {
    for d in pool::fs_dirs(layers) {
        match nix::sys::stat::mkdirat(at, d.as_str(), nix::sys::stat::Mode::from_bits_truncate(0o755)) {
            Ok(()) | Err(nix::Error::EEXIST) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}
