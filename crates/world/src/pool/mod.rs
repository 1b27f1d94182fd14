//! The disk pool: where worlds' upper layers live by default.
//!
//! One btrfs filesystem per state directory, in a sparse image file
//! (`<state>/pool.img`) on the state directory's own filesystem, bound to a
//! loop device and mounted (nosuid, nodev, noexec) on `<state>/worlds`.
//! Each world is a subvolume there, `worlds/<id>`, whose `fs/` holds its
//! `upper/` and `work/` directories; a btrfs quota group caps the bytes the
//! subvolume may hold (`EDQUOT` in the world past it), independently of the
//! world's memory limit. A subvolume is deleted in one call whatever it
//! holds (the kernel frees its extents afterwards), so a world that wrote
//! 10,000 files costs no more to discard than one that wrote none.
//!
//! Why a pool of our own: per-directory caps need quotas, and the state
//! directory's filesystem may have none (ext4 mounted without `prjquota`,
//! a kernel without `QFMT_V2`); a loop-mounted filesystem per world costs
//! 20 ms to mount and 60 ms to unmount here, a subvolume 0.1 ms.
//!
//! The pool is made on first use (`mkfs.btrfs`, about 0.2 s) and mounted
//! again by the next cloche after a reboot. Its image is sized as the
//! filesystem it lives on (sparse: it takes only what worlds write, and
//! btrfs' discard gives freed space back to that filesystem).

pub(crate) mod btrfs;
mod loopdev;

use std::ffi::CString;
use std::fs;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// The pool's image, in the state directory.
pub const IMAGE: &str = "pool.img";
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
    let image_path = root.join(IMAGE);
    let fresh = !image_path.exists();
    if fresh {
        make_image(root, &image_path)?;
    }
    let mounted = mount(&image_path, &worlds, fresh);
    if mounted.is_err() && fresh {
        let _ = fs::remove_file(&image_path);
    }
    mounted
}

/// Creates the sparse image, sized as the filesystem it lives on, and
/// formats it (single copies of data and metadata: a world's upper is
/// disposable).
fn make_image(root: &Path, image_path: &Path) -> Result<(), PoolError> {
    let st = statfs(root).map_err(at("statfs the state directory"))?;
    let size = (st.f_blocks as u64 * st.f_frsize as u64).max(MIN_IMAGE);
    let f = fs::OpenOptions::new()
        .create_new(true)
        .write(true)
        .mode(0o600)
        .custom_flags(libc::O_CLOEXEC)
        .open(image_path)
        .map_err(at("create pool.img"))?;
    let made = f.set_len(size).map_err(at("size pool.img")).and_then(|()| {
        let mkfs = mkfs_path().ok_or_else(|| {
            at("mkfs.btrfs")(io::Error::new(io::ErrorKind::NotFound, "not found: install btrfs-progs"))
        })?;
        let out = std::process::Command::new(&mkfs)
            .args(["-q", "-f", "-m", "single", "-d", "single", "-K", "-L", "cloche-pool"])
            .arg(image_path)
            .stdin(std::process::Stdio::null())
            .output()
            .map_err(at("run mkfs.btrfs"))?;
        if !out.status.success() {
            let msg = String::from_utf8_lossy(&out.stderr).trim().to_string();
            return Err(at("mkfs.btrfs")(io::Error::other(msg)));
        }
        Ok(())
    });
    if made.is_err() {
        let _ = fs::remove_file(image_path);
    }
    made
}

/// `mkfs.btrfs` on PATH or in the usual sbin directories.
pub fn mkfs_path() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"].map(PathBuf::from))
        .map(|d| d.join("mkfs.btrfs"))
        .find(|p| p.is_file())
}

/// Binds the image to a loop device and mounts it on `worlds`.
fn mount(image_path: &Path, worlds: &Path, fresh: bool) -> Result<(), PoolError> {
    use crate::raw;
    let image = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_CLOEXEC)
        .open(image_path)
        .map_err(at("open pool.img"))?;
    let (dev, devfd) =
        loopdev::attach(&image, &image_path.to_string_lossy()).map_err(at("bind pool.img to a loop device"))?;
    let fsfd = raw::fsopen("btrfs").map_err(at("btrfs (fsopen)"))?;
    raw::fsconfig_str(fsfd.as_fd(), "source", &dev.to_string_lossy()).map_err(at("btrfs source"))?;
    raw::fsconfig_create(fsfd.as_fd()).map_err(at(format!("mount {} (btrfs)", dev.display())))?;
    let attrs = libc::MOUNT_ATTR_NOSUID | libc::MOUNT_ATTR_NODEV | libc::MOUNT_ATTR_NOEXEC;
    let mnt = raw::fsmount(fsfd.as_fd(), attrs).map_err(at("fsmount the pool"))?;
    // The mounted filesystem holds the device now: ours can go (the device
    // detaches itself when the pool is unmounted).
    drop((devfd, image));
    let root = nix::fcntl::openat(&mnt, ".", nix::fcntl::OFlag::O_RDONLY | nix::fcntl::OFlag::O_DIRECTORY, {
        nix::sys::stat::Mode::empty()
    })
    .map_err(|e| at("open the pool")(io::Error::from(e)))?;
    if fresh {
        btrfs::enable_quota(root.as_fd()).map_err(at("enable btrfs quotas"))?;
    }
    // SAFETY: fchmod on a descriptor we own.
    if unsafe { libc::fchmod(root.as_raw_fd(), 0o700) } != 0 {
        return Err(at("chmod the pool")(io::Error::last_os_error()));
    }
    raw::move_mount_to(mnt.as_fd(), &cpath(worlds).map_err(at("pool path"))?)
        .map_err(at(format!("attach the pool on {}", worlds.display())))
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

fn open_dir_at(dir: BorrowedFd<'_>, name: &str) -> io::Result<OwnedFd> {
    use nix::fcntl::OFlag;
    let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    nix::fcntl::openat(dir, name, flags, nix::sys::stat::Mode::empty()).map_err(io::Error::from)
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

/// Makes world `id`'s subvolume, capped at `cap` bytes, with an empty
/// `fs/` (0700) in it; returns `fs/` opened. Nothing is left on error.
pub fn create_world(pool: BorrowedFd<'_>, id: &str, cap: u64) -> Result<OwnedFd, PoolError> {
    btrfs::subvol_create(pool, id).map_err(at("create the world's subvolume"))?;
    let made = (|| {
        let world = open_dir_at(pool, id).map_err(at("open the world's subvolume"))?;
        // SAFETY: fchmod on a descriptor we own.
        if unsafe { libc::fchmod(world.as_raw_fd(), 0o700) } != 0 {
            return Err(at("chmod the world's subvolume")(io::Error::last_os_error()));
        }
        let sid = btrfs::subvol_id(world.as_fd()).map_err(at("the world's subvolume id"))?;
        btrfs::limit(world.as_fd(), sid, cap).map_err(at("cap the world's subvolume (btrfs qgroup)"))?;
        nix::sys::stat::mkdirat(&world, "fs", nix::sys::stat::Mode::from_bits_truncate(0o700))
            .map_err(|e| at("mkdir fs")(io::Error::from(e)))?;
        open_dir_at(world.as_fd(), "fs").map_err(at("open fs"))
    })();
    if made.is_err() {
        let _ = btrfs::subvol_destroy(pool, id);
    }
    made
}

/// Deletes world `id`'s subvolume.
pub fn destroy(pool: BorrowedFd<'_>, id: &str) -> io::Result<()> {
    btrfs::subvol_destroy(pool, id)
}

/// Deletes the subvolume at `path` (a world directory in the pool).
pub fn destroy_path(path: &Path) -> io::Result<()> {
    let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    };
    let dir = open(parent)?;
    btrfs::subvol_destroy(dir.as_fd(), &name.to_string_lossy())
}

/// What `cloche doctor` says of a state directory's pool.
#[derive(Debug)]
pub struct Status {
    pub image: PathBuf,
    /// The image's apparent size, if it exists.
    pub size: Option<u64>,
    /// Bytes the image takes on disk.
    pub allocated: u64,
    pub mounted: bool,
    pub read_only: bool,
    /// Free bytes on the state directory's filesystem.
    pub host_free: u64,
    /// That filesystem's type (statfs magic).
    pub host_fs: i64,
}

pub fn status(root: &Path) -> Status {
    use std::os::unix::fs::MetadataExt;
    let image = root.join(IMAGE);
    let meta = fs::metadata(&image).ok();
    let worlds = root.join("worlds");
    let mounted = is_mounted(&worlds);
    let read_only = mounted
        && nix::sys::statvfs::statvfs(&worlds).is_ok_and(|s| s.flags().contains(nix::sys::statvfs::FsFlags::ST_RDONLY));
    let host = statfs(root).ok();
    Status {
        size: meta.as_ref().map(|m| m.len()),
        allocated: meta.as_ref().map(|m| m.blocks() * 512).unwrap_or(0),
        image,
        mounted,
        read_only,
        host_free: host.map(|s| s.f_bavail as u64 * s.f_frsize as u64).unwrap_or(0),
        host_fs: host.map(|s| s.f_type).unwrap_or(0),
    }
}
