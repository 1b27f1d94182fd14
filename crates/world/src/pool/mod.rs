//! The disk pool: where worlds' upper layers live by default.
//!
//! One btrfs filesystem per state directory, in a sparse image on the state
//! directory's own filesystem, bound to a loop device and mounted (nosuid,
//! nodev, noexec) on `<state>/worlds`. Each world is a subvolume there,
//! `worlds/<id>`, whose `fs/` holds its `upper/`, `work/` and `scratch/`
//! directories; a btrfs quota group caps the bytes the subvolume may hold
//! (`EDQUOT` in the world past it), independently of the world's memory
//! limit. A subvolume is deleted in one call whatever it holds (the kernel
//! frees its extents afterwards), so a world that wrote 10,000 files costs
//! no more to discard than one that wrote none.
//!
//! The image has no name: it is made with `O_TMPFILE` in the state
//! directory and held only by its loop device, which the mounted pool holds.
//! No path reaches it, so no world (whatever its state directory, whatever
//! it exposes) can read other worlds' files through it; it cannot be left
//! behind, and its blocks go back to the host when the pool is unmounted,
//! at the latest at reboot. Like the tmpfs uppers before it, the pool, and
//! the worlds kept in it, do not outlive a reboot.
//!
//! Why a pool of our own: per-directory caps need quotas, and the state
//! directory's filesystem may have none (ext4 mounted without `prjquota`,
//! a kernel without `QFMT_V2`); a loop-mounted filesystem per world costs
//! 20 ms to mount and 60 ms to unmount here, a subvolume 0.1 ms.
//!
//! The pool is made by the first world on disk (`mkfs.btrfs`, about 0.2 s).
//! Its image is sized as the filesystem it lives on (sparse: it takes only
//! what worlds write, and btrfs' discard gives freed space back to that
//! filesystem); the per-world caps, not the image's size, bound what
//! worlds may write.

pub(crate) mod btrfs;
mod loopdev;
mod subvol;

pub use subvol::{create_world, destroy, destroy_path, discard, fs_dirs, housekeep, open};

use std::ffi::CString;
use std::fs;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// Taken while the pool is being made or mounted.
const LOCK: &str = "pool.lock";
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
    statfs(p).is_ok_and(|s| s.f_type == libc::BTRFS_SUPER_MAGIC)
}

/// True if `p` is the root of a mount (statx's `STATX_ATTR_MOUNT_ROOT`).
fn is_mount_root(p: &Path) -> bool {
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

/// Makes sure the pool of state directory `root` is mounted on
/// `root/worlds`: mounts the image if there is one, makes it first if not.
/// Costs two `stat`s when it is mounted already.
pub fn ensure(root: &Path) -> Result<(), PoolError> {
    let worlds = root.join("worlds");
    if is_mounted(&worlds) {
        return Ok(());
    }
    let lock = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .custom_flags(libc::O_CLOEXEC)
        .open(root.join(LOCK))
        .map_err(at("open pool.lock"))?;
    // SAFETY: flock on a descriptor we own; released when it closes.
    if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) } != 0 {
        return Err(at("lock pool.lock")(io::Error::last_os_error()));
    }
    if is_mounted(&worlds) {
        return Ok(()); // another cloche mounted it meanwhile
    }
    // Mounting the pool on `worlds/` would hide what is there.
    let left: Vec<String> = fs::read_dir(&worlds)
        .map_err(at("read the worlds directory"))?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    if !left.is_empty() {
        let msg = format!(
            "{} holds {} (worlds kept on tmpfs uppers): discard them (`cloche discard ID`) before worlds on disk",
            worlds.display(),
            left.join(", ")
        );
        return Err(PoolError { step: "mount the pool".into(), source: io::Error::other(msg) });
    }
    make_and_mount(root, &worlds)
}

/// Makes the image (unnamed, sparse, sized as the filesystem it lives on),
/// binds it to a loop device, formats it (single copies of data and
/// metadata: a world's upper is disposable), turns quotas on and mounts it
/// on `worlds`.
fn make_and_mount(root: &Path, worlds: &Path) -> Result<(), PoolError> {
    use crate::raw;
    let st = statfs(root).map_err(at("statfs the state directory"))?;
    let size = (st.f_blocks as u64 * st.f_frsize as u64).max(MIN_IMAGE);
    let image = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .mode(0o600)
        .custom_flags(libc::O_TMPFILE | libc::O_CLOEXEC)
        .open(root)
        .map_err(at("create the pool's image (O_TMPFILE)"))?;
    image.set_len(size).map_err(at("size the pool's image"))?;
    let name = format!("cloche pool of {}", root.display());
    // From here the loop device holds the image; our descriptor of the
    // device keeps it until the mount does (it detaches itself when the
    // pool is unmounted, or if we die first).
    let (dev, devfd) = loopdev::attach(&image, &name).map_err(at("bind the pool's image to a loop device"))?;
    drop(image);
    mkfs(&dev)?;
    let fsfd = raw::fsopen("btrfs").map_err(at("btrfs (fsopen)"))?;
    raw::fsconfig_str(fsfd.as_fd(), "source", &dev.to_string_lossy()).map_err(at("btrfs source"))?;
    raw::fsconfig_create(fsfd.as_fd()).map_err(at(format!("mount {} (btrfs)", dev.display())))?;
    let attrs = libc::MOUNT_ATTR_NOSUID | libc::MOUNT_ATTR_NODEV | libc::MOUNT_ATTR_NOEXEC;
    let mnt = raw::fsmount(fsfd.as_fd(), attrs).map_err(at("fsmount the pool"))?;
    drop(devfd);
    let top = nix::fcntl::openat(&mnt, ".", nix::fcntl::OFlag::O_RDONLY | nix::fcntl::OFlag::O_DIRECTORY, {
        nix::sys::stat::Mode::empty()
    })
    .map_err(|e| at("open the pool")(io::Error::from(e)))?;
    btrfs::enable_quota(top.as_fd()).map_err(at("enable btrfs quotas"))?;
    btrfs::qgroup_create(top.as_fd(), btrfs::ALL_WORLDS).map_err(at("create the worlds' qgroup"))?;
    bound_all(top.as_fd(), root).map_err(at("cap all worlds (btrfs qgroup)"))?;
    // SAFETY: fchmod on a descriptor we own.
    if unsafe { libc::fchmod(top.as_raw_fd(), 0o700) } != 0 {
        return Err(at("chmod the pool")(io::Error::last_os_error()));
    }
    raw::move_mount_to(mnt.as_fd(), &cpath(worlds).map_err(at("pool path"))?)
        .map_err(at(format!("attach the pool on {}", worlds.display())))
}

/// `mkfs.btrfs` of the pool's loop device.
fn mkfs(dev: &Path) -> Result<(), PoolError> {
    let mkfs = mkfs_path()
        .ok_or_else(|| at("mkfs.btrfs")(io::Error::new(io::ErrorKind::NotFound, "not found: install btrfs-progs")))?;
    let out = std::process::Command::new(&mkfs)
        .args(["-q", "-f", "-m", "single", "-d", "single", "-K", "-L", "cloche-pool"])
        .arg(dev)
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(at("run mkfs.btrfs"))?;
    if !out.status.success() {
        let msg = String::from_utf8_lossy(&out.stderr).trim().to_string();
        return Err(at("mkfs.btrfs")(io::Error::other(msg)));
    }
    Ok(())
}

/// `mkfs.btrfs` on PATH or in the usual sbin directories.
pub fn mkfs_path() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from))
        .map(|d| d.join("mkfs.btrfs"))
        .find(|p| p.is_file())
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
/// emptied, the bound on all worlds refreshed. Nothing to
/// do when the pool is not mounted.
pub fn tidy(state: &crate::state::StateDir) {
    let worlds = state.worlds_dir();
    if let (true, Ok(pool)) = (is_mounted(&worlds), subvol::open(&worlds)) {
        housekeep(pool.as_fd(), &state.root, None, 0, &|id| state.is_live(id));
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
#[derive(Debug)]
pub struct Status {
    /// The pool is mounted on `worlds/`.
    pub mounted: bool,
    pub read_only: bool,
    /// Bytes the pool's worlds take (when mounted).
    pub used: u64,
    /// Free bytes on the state directory's filesystem.
    pub host_free: u64,
    /// That filesystem's type (statfs magic).
    pub host_fs: i64,
}

pub fn status(root: &Path) -> Status {
    let worlds = root.join("worlds");
    let mounted = is_mounted(&worlds);
    let pool = if mounted { statfs(&worlds).ok() } else { None };
    let host = statfs(root).ok();
    Status {
        mounted,
        read_only: mounted
            && nix::sys::statvfs::statvfs(&worlds)
                .is_ok_and(|s| s.flags().contains(nix::sys::statvfs::FsFlags::ST_RDONLY)),
        used: pool.map(|s| (s.f_blocks - s.f_bfree).saturating_mul(s.f_bsize as u64)).unwrap_or(0),
        host_free: host.map(|s| s.f_bavail.saturating_mul(s.f_frsize as u64)).unwrap_or(0),
        host_fs: host.map(|s| s.f_type).unwrap_or(0),
    }
}
