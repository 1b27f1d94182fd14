//! The disk pool: where worlds' upper layers live by default.
//!
//! One btrfs filesystem per state directory, in a sparse image on the state
//! directory's own filesystem, bound to a loop device and mounted (nosuid,
//! nodev, noexec, noatime) on `<state>/worlds`. Each world is a subvolume there,
//! `worlds/<id>`, whose `fs/` holds its `upper/`, `work/` and `scratch/`
//! directories; a btrfs quota group caps the bytes the subvolume may hold
//! (`EDQUOT` in the world past it), independently of the world's memory
//! limit. A subvolume is deleted in one call whatever it holds (the kernel
//! frees its extents afterwards), so a world that wrote 10,000 files costs
//! no more to discard than one that wrote none.
//!
//! The image is `<state>/pool.img` (`image.rs`): it outlives the process,
//! the pool's mount and a reboot, and the first command that finds it
//! detached attaches it again, so kept worlds wait on disk for a person as
//! long as they need. It belongs to `nobody`, mode 0000: no world can open
//! it, whatever its state directory or exposures.
//!
//! Why a pool of our own: per-directory caps need quotas, and the state
//! directory's filesystem may have none (ext4 mounted without `prjquota`,
//! a kernel without `QFMT_V2`); a loop-mounted filesystem per world costs
//! 20 ms to mount and 60 ms to unmount here, a subvolume 0.1 ms.
//!
//! The pool is made by the first world on disk (`mkfs.btrfs`, about 0.2 s),
//! or the first world kept. Its image is sized as the filesystem it lives on
//! (sparse: it takes only what worlds write, and btrfs' discard gives freed
//! space back to that filesystem); the per-world caps and the bound on all
//! worlds, not the image's size, bound what worlds may write.

mod adopt;
pub(crate) mod btrfs;
mod copy;
mod image;
mod loopdev;
mod subvol;
pub(crate) mod tree;

pub use adopt::{adopt, on_tmpfs};
pub use image::{ensure, mkfs_path, reattach, IMAGE, OWNER};
pub use subvol::{
    create_world, destroy, destroy_path, discard, fs_dirs, housekeep, open, resume_world, snapshot_world, ToTrash,
    FORKING,
};

use std::ffi::CString;
use std::fs;
use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// Free space on the state directory's filesystem that worlds leave alone.
pub const RESERVE: u64 = 1 << 30;
/// The smallest cap a world starts with.
pub const MIN_CAP: u64 = 16 << 20;
/// Smallest image btrfs accepts (with margin).
const MIN_IMAGE: u64 = 1 << 30;

/// A failed step of the pool, named.
#[derive(Debug, thiserror::Error)]
#[error("{step}: {source}")]
pub struct PoolError {
    pub step: String,
    #[source]
    pub source: io::Error,
}

fn at(step: impl Into<String>) -> impl FnOnce(io::Error) -> PoolError {
    let step = step.into();
    move |source| PoolError { step, source }
}

fn cpath(p: &Path) -> io::Result<CString> {
    CString::new(p.as_os_str().as_bytes()).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

fn statfs(p: &Path) -> io::Result<libc::statfs> {
    let c = cpath(p)?;
    // SAFETY: statfs is plain data; zeroed is a valid value to fill.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: a NUL-terminated path and a pointer to our struct.
    if unsafe { libc::statfs(c.as_ptr(), &mut st) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(st)
}

fn is_btrfs(p: &Path) -> bool {
    statfs(p).is_ok_and(|s| s.f_type as i64 == libc::BTRFS_SUPER_MAGIC)
}

/// True if `p` is the root of a mount (statx's `STATX_ATTR_MOUNT_ROOT`).
pub(crate) fn is_mount_root(p: &Path) -> bool {
    let Ok(c) = cpath(p) else { return false };
    // SAFETY: statx is plain data; zeroed is a valid value to fill.
    let mut st: libc::statx = unsafe { std::mem::zeroed() };
    // SAFETY: a NUL-terminated path and a pointer to our struct.
    let r = unsafe { libc::statx(libc::AT_FDCWD, c.as_ptr(), libc::AT_SYMLINK_NOFOLLOW, 0, &mut st) };
    r == 0
        && st.stx_attributes_mask & libc::STATX_ATTR_MOUNT_ROOT as u64 != 0
        && st.stx_attributes & libc::STATX_ATTR_MOUNT_ROOT as u64 != 0
}

/// True when the pool is mounted on `worlds`.
pub fn is_mounted(worlds: &Path) -> bool {
    is_mount_root(worlds) && is_btrfs(worlds)
}

/// True if `path` is a world's subvolume in the pool.
pub fn is_subvolume(path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    fs::symlink_metadata(path).is_ok_and(|m| m.is_dir() && m.ino() == btrfs::SUBVOL_ROOT_INO) && is_btrfs(path)
}

/// Caps what all worlds of the pool hold together (running, kept and in
/// the trash: qgroup [`btrfs::ALL_WORLDS`]) at what they hold now plus
/// what the state directory's filesystem has free beyond [`RESERVE`]:
/// worlds started together, each under its own cap, still cannot fill the
/// host's disk. Refreshed by every run's housekeeping.
pub fn bound_all(pool: BorrowedFd<'_>, root: &Path) -> io::Result<()> {
    let st = statfs(root)?;
    let free = (st.f_bavail as u64).saturating_mul(st.f_frsize as u64);
    let usage = format!("/sys/fs/btrfs/{}/qgroups/1_0/referenced", btrfs::fsid(pool)?);
    let used: u64 = fs::read_to_string(&usage)?.trim().parse().map_err(io::Error::other)?;
    btrfs::limit(pool, btrfs::ALL_WORLDS, used.saturating_add(free.saturating_sub(RESERVE)))
}

/// The pool's housekeeping outside a run (`cloche worlds gc`): the trash
/// emptied, the bound on all worlds refreshed, free space trimmed (given
/// back to the state directory's filesystem). Nothing to do when the pool
/// is not mounted.
pub fn tidy(state: &crate::state::StateDir) {
    let worlds = state.worlds_dir();
    if let (true, Ok(pool)) = (is_mounted(&worlds), subvol::open(&worlds)) {
        housekeep(pool.as_fd(), &state.root, None, 0, &|id| state.is_live(id));
        // The deleted subvolumes' extents are freed by btrfs' cleaner
        // after a transaction commit: commit first (syncfs), then trim.
        // SAFETY: syncfs on a descriptor we hold.
        unsafe { libc::syncfs(std::os::fd::AsRawFd::as_raw_fd(&pool)) };
        let _ = btrfs::trim(pool.as_fd());
    }
}

/// The cap of a new world: `want`, or less when the state directory's
/// filesystem has less than that free beyond [`RESERVE`]. Refused below
/// [`MIN_CAP`].
pub fn cap(root: &Path, want: u64) -> Result<u64, PoolError> {
    let st = statfs(root).map_err(at("statfs the state directory"))?;
    let free = (st.f_bavail as u64).saturating_mul(st.f_frsize as u64);
    let cap = want.min(free.saturating_sub(RESERVE));
    if cap < MIN_CAP.min(want) {
        let msg = format!(
            "{} MiB free on the filesystem of {}, {} MiB of it left to the host: no room for a world's upper \
             (free space, or run with --upper tmpfs)",
            free >> 20,
            root.display(),
            RESERVE >> 20
        );
        return Err(PoolError { step: "room for the upper".into(), source: io::Error::other(msg) });
    }
    Ok(cap)
}

/// What `cloche doctor` says of a state directory's pool.
#[derive(Debug, Default)]
pub struct Status {
    /// The pool is mounted on `worlds/`.
    pub mounted: bool,
    pub read_only: bool,
    /// Bytes in use in the pool, and its size (when mounted).
    pub used: u64,
    pub size: u64,
    /// `<state>/pool.img` when made: its size, and the bytes it takes on
    /// the state directory's filesystem (it is sparse).
    pub image: Option<(u64, u64)>,
    /// The mounted pool's loop device.
    pub device: Option<PathBuf>,
    /// The mounted pool is `pool.img` (false: an unnamed image made by an
    /// older cloche, which does not outlive a reboot).
    pub named: bool,
    /// btrfs' error counters of the pool's device (write, read, flush,
    /// corruption, generation), summed, when mounted.
    pub errors: Option<u64>,
    /// Free bytes on the state directory's filesystem.
    pub host_free: u64,
    /// That filesystem's type (statfs magic).
    pub host_fs: i64,
}

pub fn status(root: &Path) -> Status {
    use std::os::unix::fs::MetadataExt;
    let worlds = root.join("worlds");
    let mounted = is_mounted(&worlds);
    let mut st = Status { mounted, ..Status::default() };
    if let Ok(m) = fs::symlink_metadata(root.join(IMAGE)) {
        st.image = Some((m.len(), m.blocks() * 512));
    }
    if let Ok(host) = statfs(root) {
        st.host_free = host.f_bavail.saturating_mul(host.f_frsize);
        st.host_fs = host.f_type as i64;
    }
    if !mounted {
        return st;
    }
    if let Ok(p) = statfs(&worlds) {
        st.used = (p.f_blocks - p.f_bfree).saturating_mul(p.f_bsize);
        st.size = p.f_blocks.saturating_mul(p.f_bsize);
    }
    st.read_only =
        nix::sys::statvfs::statvfs(&worlds).is_ok_and(|s| s.flags().contains(nix::sys::statvfs::FsFlags::ST_RDONLY));
    st.device = mount_source(&worlds);
    let image = fs::symlink_metadata(root.join(IMAGE)).ok();
    st.named = match (&st.device, image) {
        (Some(dev), Some(img)) => {
            fs::File::open(dev).and_then(|f| loopdev::backing(&f)).is_ok_and(|b| b == (img.dev(), img.ino()))
        }
        _ => false,
    };
    st.errors = subvol::open(&worlds).ok().and_then(|p| btrfs::fsid(p.as_fd()).ok()).and_then(|fsid| {
        let text = fs::read_to_string(format!("/sys/fs/btrfs/{fsid}/devinfo/1/error_stats")).ok()?;
        Some(text.lines().filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok()).sum())
    });
    st
}

/// The source of the mount on `path` (the last one mounted there).
fn mount_source(path: &Path) -> Option<PathBuf> {
    let info = crate::sys::mountinfo().ok()?;
    info.lines().rev().find_map(|l| {
        let (left, right) = l.split_once(" - ")?;
        let mp = crate::cgroup::unescape(left.split(' ').nth(4)?);
        (mp == path).then(|| right.split(' ').nth(1).map(PathBuf::from)).flatten()
    })
}
