//! The pool's image, `<state>/pool.img`: made by the first world on disk,
//! attached again (loop device and mount on `<state>/worlds`) by the first
//! command that finds it detached, after a reboot for example.
//!
//! The image is a sparse file sized as the filesystem it lives on (it takes
//! only what the pool holds; btrfs' asynchronous discard, and `cloche worlds
//! gc`'s trim, give freed blocks back to that filesystem). It is made
//! without a name (`O_TMPFILE`) and linked as `pool.img` only once it holds
//! a formatted pool with quotas on, so a name always means a usable pool.
//!
//! No world may read it: it holds every world's files. The state
//! directories a world knows of are masked in it, but another state
//! directory inside its view is not, and a world is uid 0 (without
//! capabilities) over a lower layer where root's files are its own: a
//! root-owned file of mode 0000 would be refused, but the world could change
//! its mode (as its owner) and read the copy the overlay makes. So the image
//! belongs to uid and gid [`OWNER`] (65534, `nobody`, which no world runs as)
//! with mode 0000: a world can neither open it nor change its mode or owner
//! (no `CAP_DAC_OVERRIDE`, `CAP_FOWNER`, `CAP_CHOWN`); cloche, root with its
//! capabilities, opens it.

use super::{at, btrfs, cpath, is_mounted, loopdev, statfs, PoolError, MIN_IMAGE};
use crate::raw;
use std::fs;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// The image's name in the state directory.
pub const IMAGE: &str = "pool.img";
/// Owner (uid and gid) of the image: `nobody`, never a world's.
pub const OWNER: u32 = 65534;
/// Taken while the pool is being made or mounted.
const LOCK: &str = "pool.lock";

/// Makes sure the pool of state directory `root` is mounted on
/// `root/worlds`: attaches its image, or makes one if there is none. Costs
/// two `stat`s when it is mounted already.
pub fn ensure(root: &Path) -> Result<(), PoolError> {
    mount(root, true).map(drop)
}

/// Attaches the pool of state directory `root` again if it has one and it
/// is not mounted (after a reboot, or an `umount`); never makes one.
/// Returns whether the pool is mounted. Costs three `stat`s when nothing
/// is to be done.
pub fn reattach(root: &Path) -> Result<bool, PoolError> {
    mount(root, false)
}

fn mount(root: &Path, make: bool) -> Result<bool, PoolError> {
    let worlds = root.join("worlds");
    if is_mounted(&worlds) {
        return Ok(true);
    }
    let image = root.join(IMAGE);
    if !make && fs::symlink_metadata(&image).is_err() {
        return Ok(false);
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
        return Ok(true); // another cloche mounted it meanwhile
    }
    // Mounting the pool on `worlds/` would hide what is there.
    let left: Vec<String> = fs::read_dir(&worlds)
        .map_err(at("read the worlds directory"))?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    if !left.is_empty() {
        let msg = format!(
            "{} holds {} (worlds kept on tmpfs uppers by an older cloche, lost when the machine restarted): \
             remove them before worlds on disk",
            worlds.display(),
            left.join(", ")
        );
        return Err(PoolError { step: "mount the pool".into(), source: io::Error::other(msg) });
    }
    let file =
        fs::OpenOptions::new().read(true).write(true).custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW).open(&image);
    match file {
        Ok(file) => attach(root, &worlds, file)?,
        Err(e) if e.kind() == io::ErrorKind::NotFound && make => make_and_mount(root, &worlds)?,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(at(format!("open the pool's image {}", image.display()))(e)),
    }
    Ok(true)
}

/// Mounts the existing image `file` on `worlds`, through the loop device
/// that still has it if one does, else a new one.
fn attach(root: &Path, worlds: &Path, file: fs::File) -> Result<(), PoolError> {
    let image = root.join(IMAGE);
    let st = file.metadata().map_err(at("stat the pool's image"))?;
    if !st.is_file() {
        let msg = format!("{} is not a regular file", image.display());
        return Err(PoolError { step: "open the pool's image".into(), source: io::Error::other(msg) });
    }
    let (dev, devfd) = match loopdev::find(st.dev(), st.ino()) {
        Some(found) => found,
        None => loopdev::attach(&file, &loop_name(root)).map_err(at("bind the pool's image to a loop device"))?,
    };
    drop(file);
    let mnt = mount_device(&dev)?;
    drop(devfd);
    raw::move_mount_to(mnt.as_fd(), &cpath(worlds).map_err(at("pool path"))?)
        .map_err(at(format!("attach the pool on {}", worlds.display())))
}

/// The name `losetup -l` shows for the pool's device.
fn loop_name(root: &Path) -> String {
    format!("cloche pool of {}", root.display())
}

/// A detached mount (nosuid, nodev, noexec, noatime) of the btrfs on
/// `dev`. No access times: reading a file a world wrote (the fs_diff's
/// hashes, a commit's copy) would otherwise dirty its inode on btrfs, a
/// metadata write for every file read (about 3% of a 100,000-file
/// commit's time); the fs_diff never looks at access times.
fn mount_device(dev: &Path) -> Result<OwnedFd, PoolError> {
    let fsfd = raw::fsopen("btrfs").map_err(at("btrfs (fsopen)"))?;
    raw::fsconfig_str(fsfd.as_fd(), "source", &dev.to_string_lossy()).map_err(at("btrfs source"))?;
    raw::fsconfig_create(fsfd.as_fd()).map_err(at(format!("mount {} (btrfs)", dev.display())))?;
    let attrs = libc::MOUNT_ATTR_NOSUID | libc::MOUNT_ATTR_NODEV | libc::MOUNT_ATTR_NOEXEC | libc::MOUNT_ATTR_NOATIME;
    raw::fsmount(fsfd.as_fd(), attrs).map_err(at("fsmount the pool"))
}

/// Makes the image (unnamed, sparse, sized as the filesystem it lives on,
/// [`OWNER`]'s, mode 0000), binds it to a loop device, formats it (single
/// copies of data and metadata), turns quotas on, names it `pool.img` and
/// mounts it on `worlds`.
fn make_and_mount(root: &Path, worlds: &Path) -> Result<(), PoolError> {
    let st = statfs(root).map_err(at("statfs the state directory"))?;
    let size = (st.f_blocks as u64 * st.f_frsize as u64).max(MIN_IMAGE);
    let image = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .mode(0o000)
        .custom_flags(libc::O_TMPFILE | libc::O_CLOEXEC)
        .open(root)
        .map_err(at("create the pool's image (O_TMPFILE)"))?;
    image.set_len(size).map_err(at("size the pool's image"))?;
    // SAFETY: fchown and fchmod on a descriptor we own.
    if unsafe { libc::fchown(image.as_raw_fd(), OWNER, OWNER) } != 0
        || unsafe { libc::fchmod(image.as_raw_fd(), 0) } != 0
    {
        return Err(at("give the pool's image to nobody, mode 0000")(io::Error::last_os_error()));
    }
    // From here the loop device holds the image; our descriptor of the
    // device keeps it until the mount does (it detaches itself when the
    // pool is unmounted, or if we die first: an image not named yet goes
    // with it).
    let (dev, devfd) =
        loopdev::attach(&image, &loop_name(root)).map_err(at("bind the pool's image to a loop device"))?;
    mkfs(&dev)?;
    let mnt = mount_device(&dev)?;
    drop(devfd);
    let top = nix::fcntl::openat(&mnt, ".", nix::fcntl::OFlag::O_RDONLY | nix::fcntl::OFlag::O_DIRECTORY, {
        nix::sys::stat::Mode::empty()
    })
    .map_err(|e| at("open the pool")(io::Error::from(e)))?;
    btrfs::enable_quota(top.as_fd()).map_err(at("enable btrfs quotas"))?;
    btrfs::qgroup_create(top.as_fd(), btrfs::ALL_WORLDS).map_err(at("create the worlds' qgroup"))?;
    super::bound_all(top.as_fd(), root).map_err(at("cap all worlds (btrfs qgroup)"))?;
    // SAFETY: fchmod on a descriptor we own.
    if unsafe { libc::fchmod(top.as_raw_fd(), 0o700) } != 0 {
        return Err(at("chmod the pool")(io::Error::last_os_error()));
    }
    let name = cpath(&root.join(IMAGE)).map_err(at("pool path"))?;
    // SAFETY: an fd we own (an O_TMPFILE file, linkable), an empty path
    // with AT_EMPTY_PATH, and a NUL-terminated new name.
    if unsafe { libc::linkat(image.as_raw_fd(), c"".as_ptr(), libc::AT_FDCWD, name.as_ptr(), libc::AT_EMPTY_PATH) } != 0
    {
        return Err(at(format!("name the pool's image {}", root.join(IMAGE).display()))(io::Error::last_os_error()));
    }
    drop(image);
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
