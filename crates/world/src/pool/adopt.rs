//! A kept world moved off its tmpfs into the pool, so that no kept world
//! holds memory while it waits for a person, and every kept world outlives
//! a reboot.
//!
//! A world whose upper is a tmpfs (`--upper tmpfs`, or a policy's `[world]
//! upper = "tmpfs"`) is kept as before, its tmpfs attached on
//! `worlds/<id>/fs` of a plain directory in the pool; then, before it is
//! marked kept, [`adopt`] copies its upper layers (what `cloche diff` and
//! `cloche commit` read: `fs/upper`, `fs/layers/<k>/upper`) and its records
//! into a new subvolume `.moving-<id>`, syncs the pool, and exchanges the
//! two names in one `renameat2(RENAME_EXCHANGE)`: `worlds/<id>` is either
//! the tmpfs world or its copy on disk, never neither. The tmpfs is then
//! detached; its pages go back to the host with its last reference. What is
//! not copied: the world's `/tmp`, `/var/tmp`, `/run` (scratch, never
//! reviewed) and the overlays' work directories.
//!
//! Whoever adopts holds the world's id (its run, or the sweep that settles
//! it), so no other cloche touches `.moving-<id>` meanwhile; a run killed
//! half-way leaves `.moving-<id>`, removed by the next housekeeping (a
//! subvolume before the exchange, the tmpfs world's directory after it).

use super::{at, btrfs, copy, is_mounted, statfs, subvol, PoolError};
use crate::rename::{renameat2, RenameFlags};
use nix::fcntl::OFlag;
use nix::sys::stat::Mode;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::Path;

/// Prefix of a world being moved into the pool (never a world id).
pub const MOVING: &str = ".moving-";

/// Files of a world's directory besides `fs/`: its description, its
/// marker and the review's records (`crate::continued`: its runs and its
/// last fs_diff).
const RECORDS: [&str; 6] = ["world.json", "kept", "changes.jsonl", "base.jsonl", "runs.jsonl", "fs_diff.json"];

/// True if `fsdir` is a tmpfs mounted there (a world kept on tmpfs).
pub fn on_tmpfs(fsdir: &Path) -> bool {
    super::is_mount_root(fsdir) && statfs(fsdir).is_ok_and(|s| s.f_type as i64 == libc::TMPFS_MAGIC)
}

/// Bytes in use on the tmpfs at `fsdir`, and its size.
fn tmpfs_usage(fsdir: &Path) -> io::Result<(u64, u64)> {
    let s = statfs(fsdir)?;
    let bs = s.f_bsize as u64;
    Ok(((s.f_blocks - s.f_bfree) as u64 * bs, s.f_blocks as u64 * bs))
}

fn open_dir(dir: impl AsFd, name: &str) -> io::Result<OwnedFd> {
    let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    nix::fcntl::openat(dir, name, flags, Mode::empty()).map_err(io::Error::from)
}

/// Moves world `id` of state directory `root` from the tmpfs attached on
/// `worlds/<id>/fs` into a subvolume of the pool (see the module's text).
/// Returns false when there is nothing to move (its `fs/` is not a tmpfs).
/// On error the world is left as it was, on its tmpfs.
pub fn adopt(root: &Path, id: &str) -> Result<bool, PoolError> {
    let worlds = root.join("worlds");
    let fsdir = worlds.join(id).join("fs");
    if !on_tmpfs(&fsdir) {
        return Ok(false);
    }
    if !is_mounted(&worlds) {
        let msg = format!("no disk pool mounted on {}", worlds.display());
        return Err(PoolError { step: "move the world to disk".into(), source: io::Error::other(msg) });
    }
    let (used, size) = tmpfs_usage(&fsdir).map_err(at("statfs the world's tmpfs"))?;
    let cap = super::cap(root, size)?;
    if used > cap {
        let msg = format!("it holds {} MiB, the pool has room for {} MiB", used >> 20, cap >> 20);
        return Err(PoolError { step: "move the world to disk".into(), source: io::Error::other(msg) });
    }
    let pool = subvol::open(&worlds).map_err(at("open the disk pool"))?;
    let tmp = format!("{MOVING}{id}");
    remove(root, &tmp); // an earlier attempt's
    subvol::make(pool.as_fd(), &tmp, 0)?;
    let moved = (|| {
        let world = open_dir(&pool, &tmp).map_err(at("open the new subvolume"))?;
        let sid = btrfs::subvol_id(world.as_fd()).map_err(at("the new subvolume's id"))?;
        btrfs::limit(world.as_fd(), sid, cap).map_err(at("cap the new subvolume (btrfs qgroup)"))?;
        let dst = open_dir(&world, "fs").map_err(at("open the new subvolume's fs"))?;
        let src = nix::fcntl::open(&fsdir, OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC, Mode::empty())
            .map_err(|e| at("open the world's tmpfs")(e.into()))?;
        copy_upper(src.as_fd(), dst.as_fd(), "upper")?;
        if let Ok(layers) = open_dir(&src, "layers") {
            let mut ks: Vec<String> = nix::dir::Dir::from_fd(layers)
                .map_err(|e| at("list the world's layers")(e.into()))?
                .iter()
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|k| k.parse::<usize>().is_ok())
                .collect();
            ks.sort();
            for k in ks {
                copy_upper(src.as_fd(), dst.as_fd(), &format!("layers/{k}/upper"))?;
            }
        }
        let from = open_dir(&pool, id).map_err(at("open the world's directory"))?;
        for name in RECORDS {
            copy_record(from.as_fd(), world.as_fd(), name)?;
        }
        // The copy is on disk before it takes the world's name.
        // SAFETY: syncfs on a descriptor we hold.
        if unsafe { libc::syncfs(world.as_raw_fd()) } != 0 {
            return Err(at("sync the disk pool")(io::Error::last_os_error()));
        }
        renameat2(&pool, tmp.as_str(), &pool, id, RenameFlags::RENAME_EXCHANGE)
            .map_err(|e| at("exchange the world with its copy on disk")(e.into()))
    })();
    // Before the exchange: the partial copy; after it: the tmpfs world.
    remove(root, &tmp);
    moved.map(|()| true)
}

/// Copies the upper directory at `rel` of the tmpfs into the same place of
/// the new subvolume's `fs/`.
fn copy_upper(src: std::os::fd::BorrowedFd<'_>, dst: std::os::fd::BorrowedFd<'_>, rel: &str) -> Result<(), PoolError> {
    let step = format!("copy {rel} to disk");
    let Ok(from) = nix::fcntl::openat(
        src,
        rel,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    ) else {
        return Ok(()); // not made (a layer the world did not have)
    };
    // `layers/<k>/upper`: its parents first.
    let mut made = String::new();
    for part in rel.split('/') {
        if !made.is_empty() {
            made.push('/');
        }
        made.push_str(part);
        match nix::sys::stat::mkdirat(dst, made.as_str(), Mode::from_bits_truncate(0o755)) {
            Ok(()) | Err(nix::Error::EEXIST) => {}
            Err(e) => return Err(at(step)(e.into())),
        }
    }
    let to = nix::fcntl::openat(
        dst,
        rel,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| at(step.clone())(e.into()))?;
    copy::tree(from.as_fd(), to.as_fd()).map(drop).map_err(at(step))
}

/// Copies the regular file `name` of the world's directory, if there is one.
fn copy_record(
    from: std::os::fd::BorrowedFd<'_>,
    to: std::os::fd::BorrowedFd<'_>,
    name: &str,
) -> Result<(), PoolError> {
    let step = format!("copy {name} to disk");
    let src =
        match nix::fcntl::openat(from, name, OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC, Mode::empty()) {
            Ok(fd) => std::fs::File::from(fd),
            Err(nix::Error::ENOENT) => return Ok(()),
            Err(e) => return Err(at(step)(e.into())),
        };
    if !src.metadata().map_err(at(step.clone()))?.is_file() {
        return Err(at(step)(io::Error::other("not a regular file")));
    }
    let dst = nix::fcntl::openat(
        to,
        name,
        OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::from_bits_truncate(0o644),
    )
    .map_err(|e| at(step.clone())(e.into()))?;
    std::io::copy(&mut &src, &mut std::fs::File::from(dst)).map(drop).map_err(at(step))
}

/// Removes `worlds/<name>`: a subvolume, or a world's plain directory with
/// its tmpfs detached (`state::remove_world_dir`).
pub(crate) fn remove(root: &Path, name: &str) {
    let path = root.join("worlds").join(name);
    if std::fs::symlink_metadata(&path).is_ok() {
        let _ = crate::state::remove_world_dir(&path);
    }
}
