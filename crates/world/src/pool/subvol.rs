//! Worlds' subvolumes in the pool, with their making and deleting kept off
//! a run's critical path.
//!
//! Making a subvolume (create, chmod, `fs/upper`, `fs/work`, the scratch
//! directory) and deleting one that an overlay has used cost a few tenths
//! of a millisecond each here, a measurable share of `cloche run -- true`.
//! So:
//! - a run *takes* a **spare** (`.spare-<k>`, made ahead by an earlier run)
//!   by renaming it to its world id, then sets the world's cap; it makes a
//!   subvolume itself only when no spare is left;
//! - a run that ends *moves* its subvolume to the **trash**
//!   (`.trash-<id>`, one rename) instead of deleting it;
//! - [`housekeep`], called once the world runs (its init executed: beside
//!   the child's setup, its btrfs work slowed the child's overlay mount and
//!   copy-ups), makes the spares again and empties the trash.
//!
//! Names starting with a dot are never world ids (`state::valid_id`), so
//! the lists and sweeps of kept worlds skip them. A run killed half-way
//! through making a spare leaves `.making-<id>`, and one killed while it
//! moved a kept world off its tmpfs `.moving-<id>` (`adopt.rs`), and one
//! killed while it forked a kept world `.forking-<new id>`
//! (`continued::fork`): all are removed by the next housekeeping once `id`
//! is no longer live.

use super::{at, btrfs, cpath, PoolError};
use crate::rename::{renameat2, RenameFlags};
use nix::fcntl::OFlag;
use nix::sys::stat::{mkdirat, Mode};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::path::Path;

/// Spares kept ready (two runs starting together each find one).
const SPARES: usize = 2;
const SPARE: &str = ".spare-";
const TRASH: &str = ".trash-";
const MAKING: &str = ".making-";
/// A fork being made (`worlds/.forking-<new id>`): a snapshot of a kept
/// world, renamed to its id once its description is its own.
pub const FORKING: &str = ".forking-";

/// Directories a world's `fs/` starts with, parents first: the upper and
/// work directories of its root overlay, its scratch directories (`/tmp`,
/// `/var/tmp`, `/run`: `plan.rs`), and `layers/<k>/{upper,work}` for each
/// of `layers` host data mounts.
pub fn fs_dirs(layers: usize) -> Vec<String> {
    let mut dirs: Vec<String> = ["upper", "work", "scratch"].map(String::from).to_vec();
    if layers > 0 {
        dirs.push("layers".into());
    }
    for k in 0..layers {
        dirs.extend([format!("layers/{k}"), format!("layers/{k}/upper"), format!("layers/{k}/work")]);
    }
    dirs
}

fn open_dir_at(dir: BorrowedFd<'_>, name: &str) -> io::Result<OwnedFd> {
    let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    nix::fcntl::openat(dir, name, flags, Mode::empty()).map_err(io::Error::from)
}

/// Opens the mounted pool (`<state>/worlds`).
pub fn open(worlds: &Path) -> io::Result<OwnedFd> {
    let c = cpath(worlds)?;
    // SAFETY: a NUL-terminated path; the result is checked.
    let fd = unsafe { libc::open(c.as_ptr(), libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a descriptor we just opened.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Makes subvolume `name` as a world starts it: 0700, with `fs/` (0700)
/// and its [`fs_dirs`] for `layers` host data mounts. Nothing is left on
/// error.
pub(super) fn make(pool: BorrowedFd<'_>, name: &str, layers: usize) -> Result<(), PoolError> {
    btrfs::subvol_create(pool, name).map_err(at("create the world's subvolume"))?;
    let made = (|| {
        let world = open_dir_at(pool, name).map_err(at("open the world's subvolume"))?;
        // SAFETY: fchmod on a descriptor we own.
        if unsafe { libc::fchmod(world.as_raw_fd(), 0o700) } != 0 {
            return Err(at("chmod the world's subvolume")(io::Error::last_os_error()));
        }
        mkdirat(&world, "fs", Mode::from_bits_truncate(0o700)).map_err(|e| at("mkdir fs")(e.into()))?;
        let fs = open_dir_at(world.as_fd(), "fs").map_err(at("open fs"))?;
        for d in fs_dirs(layers) {
            mkdirat(&fs, d.as_str(), Mode::from_bits_truncate(0o755))
                .map_err(|e| at(format!("mkdir fs/{d}"))(e.into()))?;
        }
        Ok(())
    })();
    if made.is_err() {
        let _ = btrfs::subvol_destroy(pool, name);
    }
    made
}

/// Gives world `id` its subvolume, capped at `cap` bytes: a spare renamed
/// to `id` if there is one, else a new one (with the directories for
/// `layers` host data mounts). Returns its `fs/`, opened. Nothing is left
/// on error.
pub fn create_world(pool: BorrowedFd<'_>, id: &str, cap: u64, layers: usize) -> Result<OwnedFd, PoolError> {
    let taken = (0..SPARES).any(|k| {
        // RENAME_NOREPLACE: a world id is never overwritten. ENOENT: that
        // spare was taken (by another run) or is not made yet.
        renameat2(pool, format!("{SPARE}{k}").as_str(), pool, id, RenameFlags::RENAME_NOREPLACE).is_ok()
    });
    if !taken {
        make(pool, id, layers)?;
    }
    let fs = (|| {
        let world = open_dir_at(pool, id).map_err(at("open the world's subvolume"))?;
        let sid = btrfs::subvol_id(world.as_fd()).map_err(at("the world's subvolume id"))?;
        btrfs::limit(world.as_fd(), sid, cap).map_err(at("cap the world's subvolume (btrfs qgroup)"))?;
        open_dir_at(world.as_fd(), "fs").map_err(at("open fs"))
    })();
    if fs.is_err() {
        let _ = btrfs::subvol_destroy(pool, id);
    }
    fs
}

/// Gives the kept world `id` back to a run that continues it: its cap set
/// to `cap` (the policy's now), its `fs/` opened. Nothing is changed on
/// error but the cap.
pub fn resume_world(pool: BorrowedFd<'_>, id: &str, cap: u64) -> Result<OwnedFd, PoolError> {
    let world = open_dir_at(pool, id).map_err(at("open the world's subvolume"))?;
    let sid = btrfs::subvol_id(world.as_fd()).map_err(at("the world's subvolume id"))?;
    btrfs::limit(world.as_fd(), sid, cap).map_err(at("cap the world's subvolume (btrfs qgroup)"))?;
    open_dir_at(world.as_fd(), "fs").map_err(at("open fs"))
}

/// Snapshots the kept world `src` as `.forking-<new>`; returns that
/// subvolume's root, opened. Nothing is left on error.
pub fn snapshot_world(pool: BorrowedFd<'_>, src: &str, new: &str) -> Result<OwnedFd, PoolError> {
    let from = open_dir_at(pool, src).map_err(at("open the world's subvolume"))?;
    let name = format!("{FORKING}{new}");
    btrfs::snapshot(pool, &name, from.as_fd()).map_err(at("snapshot the world's subvolume"))?;
    open_dir_at(pool, &name).map_err(|e| {
        let _ = btrfs::subvol_destroy(pool, &name);
        at("open the snapshot")(e)
    })
}

/// Deletes world `id`'s subvolume at once.
pub fn destroy(pool: BorrowedFd<'_>, id: &str) -> io::Result<()> {
    btrfs::subvol_destroy(pool, id)
}

/// Discards world `id`'s subvolume without waiting: moved to the trash,
/// which [`housekeep`] empties (deleted at once if the move fails).
pub fn discard(pool: BorrowedFd<'_>, id: &str) -> io::Result<()> {
    let trash = format!("{TRASH}{id}");
    match renameat2(pool, id, pool, trash.as_str(), RenameFlags::RENAME_NOREPLACE) {
        Ok(()) => Ok(()),
        Err(_) => btrfs::subvol_destroy(pool, id),
    }
}

/// A world's subvolume to be moved to the trash after cloche has answered
/// (by the child of `Teardown::in_background`, which makes the same
/// rename with a raw system call, or by [`ToTrash::now`]): the pool (a
/// descriptor of its own), the world's name and its name in the trash.
/// Dropped unused, it moves nothing: the world's directory is then the
/// next sweep's (`state::settle_dead`: no `kept`, its claim free).
#[derive(Debug)]
pub struct ToTrash {
    pub pool: OwnedFd,
    pub id: std::ffi::CString,
    pub trash: std::ffi::CString,
}

impl ToTrash {
    /// World `id`'s subvolume in `pool`.
    pub fn new(pool: BorrowedFd<'_>, id: &str) -> io::Result<ToTrash> {
        let c = |s: String| std::ffi::CString::new(s).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL));
        Ok(ToTrash { pool: pool.try_clone_to_owned()?, id: c(id.to_string())?, trash: c(format!("{TRASH}{id}"))? })
    }

    /// Moves it now ([`discard`]).
    pub fn now(self) {
        if let Ok(id) = self.id.to_str() {
            let _ = discard(self.pool.as_fd(), id);
        }
    }
}

/// Deletes the subvolume at `path` (a world directory in the pool).
pub fn destroy_path(path: &Path) -> io::Result<()> {
    let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    };
    let dir = open(parent)?;
    btrfs::subvol_destroy(dir.as_fd(), &name.to_string_lossy())
}

/// Makes the missing spares (with `me`, the calling run's world id: as
/// `.making-<me>`, renamed into place, so a spare is never seen half made;
/// with the directories for `layers` host data mounts, as the next run on
/// this host will most likely have),
/// empties the trash and refreshes the bound on all worlds
/// ([`super::bound_all`], `root`: the state directory). `is_live` tells
/// whether a run is alive (a dead run's `.making-` is removed). Errors are
/// left for a later run: nothing here is needed by the world that calls it.
pub fn housekeep(pool: BorrowedFd<'_>, root: &Path, me: Option<&str>, layers: usize, is_live: &dyn Fn(&str) -> bool) {
    let making = me.map(|id| format!("{MAKING}{id}"));
    for k in 0..SPARES {
        let Some(making) = &making else { break };
        let spare = format!("{SPARE}{k}");
        if nix::sys::stat::fstatat(pool, spare.as_str(), nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW).is_ok() {
            continue;
        }
        if make(pool, making, layers).is_err() {
            break;
        }
        if renameat2(pool, making.as_str(), pool, spare.as_str(), RenameFlags::RENAME_NOREPLACE).is_err() {
            let _ = btrfs::subvol_destroy(pool, making); // another run made it meanwhile
        }
    }
    // A description of its own: reading entries moves its offset.
    let Ok(fresh) = open_dir_at(pool, ".") else { return };
    let Ok(mut dir) = nix::dir::Dir::from_fd(fresh) else { return };
    let dead = |id: &str| Some(id) != me && !is_live(id);
    let names: Vec<String> = dir
        .iter()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| {
            n.starts_with(TRASH)
                || n.strip_prefix(MAKING).is_some_and(dead)
                || n.strip_prefix(FORKING).is_some_and(dead)
                || n.strip_prefix(super::adopt::MOVING).is_some_and(dead)
        })
        .collect();
    for n in names {
        if n.starts_with(super::adopt::MOVING) {
            // A subvolume, or a tmpfs world's directory once exchanged.
            super::adopt::remove(root, &n);
        } else {
            let _ = btrfs::subvol_destroy(pool, &n);
        }
    }
    let _ = super::bound_all(pool, root);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn housekeeping_names_are_never_world_ids() {
        for n in [SPARE, TRASH, MAKING, FORKING, super::super::adopt::MOVING] {
            assert!(n.starts_with('.'));
            assert!(!crate::state::valid_id(&format!("{n}0123456789abcdef")));
        }
    }
}
