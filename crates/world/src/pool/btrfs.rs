//! The btrfs ioctls the pool uses, one function each (the structures are
//! those of `linux/btrfs.h`; `nix` and `libc` have none of them).

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

const MAGIC: u8 = 0x94;
/// The inode number of every subvolume's root directory.
pub const SUBVOL_ROOT_INO: u64 = 256;
/// `BTRFS_QUOTA_CTL_ENABLE` and `..._ENABLE_SIMPLE_QUOTA`.
const QUOTA_ENABLE: u64 = 1;
const QUOTA_ENABLE_SIMPLE: u64 = 4;
const LIMIT_MAX_RFER: u64 = 1 << 0;
const LIMIT_MAX_EXCL: u64 = 1 << 1;
/// `BTRFS_SUBVOL_QGROUP_INHERIT`.
const SUBVOL_QGROUP_INHERIT: u64 = 1 << 2;
/// Qgroup `1/0`: every world's subvolume is in it, so its limit bounds
/// what all worlds together hold.
pub const ALL_WORLDS: u64 = 1 << 48;

/// `struct btrfs_ioctl_vol_args`.
#[repr(C)]
struct VolArgs {
    fd: i64,
    name: [u8; 4088],
}

/// `struct btrfs_ioctl_vol_args_v2` (its first union as `size` and
/// `qgroup_inherit`, its second as `name`).
#[repr(C)]
struct VolArgsV2 {
    fd: i64,
    transid: u64,
    flags: u64,
    size: u64,
    qgroup_inherit: *const Inherit,
    unused: [u64; 2],
    name: [u8; 4040],
}

/// `struct btrfs_qgroup_inherit` with one qgroup.
#[repr(C)]
struct Inherit {
    flags: u64,
    num_qgroups: u64,
    num_ref_copies: u64,
    num_excl_copies: u64,
    lim: [u64; 5],
    qgroups: [u64; 1],
}

/// `struct btrfs_ioctl_qgroup_create_args`.
#[repr(C)]
struct QgroupCreate {
    create: u64,
    qgroupid: u64,
}

/// `struct btrfs_ioctl_fs_info_args`.
#[repr(C)]
struct FsInfo {
    max_id: u64,
    num_devices: u64,
    fsid: [u8; 16],
    rest: [u8; 992],
}

/// `struct btrfs_ioctl_ino_lookup_args`.
#[repr(C)]
struct InoLookup {
    treeid: u64,
    objectid: u64,
    name: [u8; 4080],
}

/// `struct btrfs_ioctl_qgroup_limit_args` (with its `btrfs_qgroup_limit`).
#[repr(C)]
struct QgroupLimit {
    qgroupid: u64,
    flags: u64,
    max_rfer: u64,
    max_excl: u64,
    rsv_rfer: u64,
    rsv_excl: u64,
}

/// `struct btrfs_ioctl_quota_ctl_args`.
#[repr(C)]
struct QuotaCtl {
    cmd: u64,
    status: u64,
}

/// `struct fstrim_range` (`linux/fs.h`).
#[repr(C)]
struct TrimRange {
    start: u64,
    len: u64,
    minlen: u64,
}

nix::ioctl_readwrite!(ioc_fitrim, b'X', 121, TrimRange);
nix::ioctl_write_ptr!(ioc_subvol_create_v2, MAGIC, 24, VolArgsV2);
nix::ioctl_write_ptr!(ioc_snap_create_v2, MAGIC, 23, VolArgsV2);
nix::ioctl_read!(ioc_fs_info, MAGIC, 31, FsInfo);
nix::ioctl_write_ptr!(ioc_qgroup_create, MAGIC, 42, QgroupCreate);
nix::ioctl_write_ptr!(ioc_snap_destroy, MAGIC, 15, VolArgs);
nix::ioctl_readwrite!(ioc_ino_lookup, MAGIC, 18, InoLookup);
nix::ioctl_readwrite!(ioc_quota_ctl, MAGIC, 40, QuotaCtl);
nix::ioctl_read!(ioc_qgroup_limit, MAGIC, 43, QgroupLimit);

fn vol_args(name: &str) -> io::Result<Box<VolArgs>> {
    let b = name.as_bytes();
    if b.is_empty() || b.len() >= 4088 || b.contains(&0) || b.contains(&b'/') {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    let mut a = Box::new(VolArgs { fd: 0, name: [0; 4088] });
    a.name[..b.len()].copy_from_slice(b);
    Ok(a)
}

fn errno(e: nix::Error) -> io::Error {
    io::Error::from_raw_os_error(e as i32)
}

/// Creates subvolume `name` in directory `dir`, in qgroup [`ALL_WORLDS`]
/// from its birth.
pub fn subvol_create(dir: BorrowedFd<'_>, name: &str) -> io::Result<()> {
    create_v2(dir, name, None)
}

/// Makes `name` in directory `dir` a snapshot of the subvolume `src` (a
/// descriptor of its root), writable, in qgroup [`ALL_WORLDS`] from its
/// birth. It shares every extent with `src` until either writes: the copy
/// costs no data.
pub fn snapshot(dir: BorrowedFd<'_>, name: &str, src: BorrowedFd<'_>) -> io::Result<()> {
    create_v2(dir, name, Some(src))
}

/// `BTRFS_IOC_SUBVOL_CREATE_V2`, or `BTRFS_IOC_SNAP_CREATE_V2` of `src`.
fn create_v2(dir: BorrowedFd<'_>, name: &str, src: Option<BorrowedFd<'_>>) -> io::Result<()> {
    let b = vol_args(name)?.name;
    let inherit =
        Inherit { flags: 0, num_qgroups: 1, num_ref_copies: 0, num_excl_copies: 0, lim: [0; 5], qgroups: [ALL_WORLDS] };
    let mut a = Box::new(VolArgsV2 {
        fd: src.map_or(0, |s| i64::from(s.as_raw_fd())),
        transid: 0,
        flags: SUBVOL_QGROUP_INHERIT,
        size: std::mem::size_of::<Inherit>() as u64,
        qgroup_inherit: &inherit,
        unused: [0; 2],
        name: [0; 4040],
    });
    let n = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    if n >= 4040 {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    }
    a.name[..n].copy_from_slice(&b[..n]);
    // SAFETY: a valid fd and a pointer to a vol_args_v2 we own, whose
    // qgroup_inherit points to `inherit` (alive until the call returns)
    // with `size` its size; `fd` is the snapshot's source, open meanwhile.
    let r = match src {
        None => unsafe { ioc_subvol_create_v2(dir.as_raw_fd(), &*a) },
        // SAFETY: as above.
        Some(_) => unsafe { ioc_snap_create_v2(dir.as_raw_fd(), &*a) },
    };
    r.map(drop).map_err(errno)
}

/// Creates qgroup `id` (e.g. [`ALL_WORLDS`]).
pub fn qgroup_create(fs: BorrowedFd<'_>, id: u64) -> io::Result<()> {
    let a = QgroupCreate { create: 1, qgroupid: id };
    // SAFETY: a valid fd and a pointer to a qgroup_create_args we own.
    unsafe { ioc_qgroup_create(fs.as_raw_fd(), &a) }.map(drop).map_err(errno)
}

/// The filesystem's UUID, as `/sys/fs/btrfs/<uuid>` names it.
pub fn fsid(fs: BorrowedFd<'_>) -> io::Result<String> {
    let mut a = Box::new(FsInfo { max_id: 0, num_devices: 0, fsid: [0; 16], rest: [0; 992] });
    // SAFETY: a valid fd and a pointer to an fs_info_args we own (flags 0:
    // the kernel fills the base fields only).
    unsafe { ioc_fs_info(fs.as_raw_fd(), &mut *a) }.map_err(errno)?;
    let h: String = a.fsid.iter().map(|b| format!("{b:02x}")).collect();
    Ok(format!("{}-{}-{}-{}-{}", &h[..8], &h[8..12], &h[12..16], &h[16..20], &h[20..]))
}

/// Deletes subvolume `name` of directory `dir`, whatever it holds (its
/// extents are freed by the kernel's cleaner, after the call returns).
pub fn subvol_destroy(dir: BorrowedFd<'_>, name: &str) -> io::Result<()> {
    let a = vol_args(name)?;
    // SAFETY: as above.
    unsafe { ioc_snap_destroy(dir.as_raw_fd(), &*a) }.map(drop).map_err(errno)
}

/// The id of the subvolume (tree) that `fd` is in.
pub fn subvol_id(fd: BorrowedFd<'_>) -> io::Result<u64> {
    let mut a = Box::new(InoLookup { treeid: 0, objectid: SUBVOL_ROOT_INO, name: [0; 4080] });
    // SAFETY: a valid fd and a pointer to an ino_lookup_args we own; the
    // kernel fills treeid (and a name, which we ignore).
    unsafe { ioc_ino_lookup(fd.as_raw_fd(), &mut *a) }.map_err(errno)?;
    Ok(a.treeid)
}

/// Caps the bytes qgroup `id` may hold (a subvolume's id is its qgroup
/// `0/id`).
pub fn limit(fs: BorrowedFd<'_>, id: u64, bytes: u64) -> io::Result<()> {
    let mut a = QgroupLimit {
        qgroupid: id,
        flags: LIMIT_MAX_RFER | LIMIT_MAX_EXCL,
        max_rfer: bytes,
        max_excl: bytes,
        rsv_rfer: 0,
        rsv_excl: 0,
    };
    // SAFETY: a valid fd and a pointer to a qgroup_limit_args we own. The
    // kernel declares this ioctl as _IOR but only reads the structure.
    unsafe { ioc_qgroup_limit(fs.as_raw_fd(), &mut a) }.map(drop).map_err(errno)
}

/// Discards the filesystem's free space (`FITRIM`, what `fstrim` does): on
/// the pool's loop device, holes punched in its image, so that blocks
/// freed by deleted worlds go back to the state directory's filesystem
/// now rather than when btrfs' asynchronous discard gets to them (and
/// those it had not reached when the pool was last unmounted). Returns the
/// bytes trimmed.
pub fn trim(fs: BorrowedFd<'_>) -> io::Result<u64> {
    let mut r = TrimRange { start: 0, len: u64::MAX, minlen: 0 };
    // SAFETY: a valid fd and a pointer to an fstrim_range we own.
    unsafe { ioc_fitrim(fs.as_raw_fd(), &mut r) }.map_err(errno)?;
    Ok(r.len)
}

/// Turns quotas on: simple quotas (kernel 6.7 and later: each extent is
/// charged to the subvolume that wrote it, without the backreference walks
/// of full qgroups), else full qgroups.
pub fn enable_quota(fs: BorrowedFd<'_>) -> io::Result<()> {
    for cmd in [QUOTA_ENABLE_SIMPLE, QUOTA_ENABLE] {
        let mut a = QuotaCtl { cmd, status: 0 };
        // SAFETY: a valid fd and a pointer to a quota_ctl_args we own.
        match unsafe { ioc_quota_ctl(fs.as_raw_fd(), &mut a) } {
            Ok(_) => return Ok(()),
            Err(nix::Error::EINVAL) if cmd == QUOTA_ENABLE_SIMPLE => continue,
            Err(e) => return Err(errno(e)),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn structures_have_the_kernel_sizes() {
        assert_eq!(std::mem::size_of::<VolArgs>(), 4096);
        assert_eq!(std::mem::size_of::<InoLookup>(), 4096);
        assert_eq!(std::mem::size_of::<QgroupLimit>(), 48);
        assert_eq!(std::mem::size_of::<QuotaCtl>(), 16);
        assert_eq!(std::mem::size_of::<VolArgsV2>(), 4096);
        assert_eq!(std::mem::size_of::<Inherit>(), 80);
        assert_eq!(std::mem::size_of::<QgroupCreate>(), 16);
        assert_eq!(std::mem::size_of::<FsInfo>(), 1024);
        assert_eq!(std::mem::size_of::<TrimRange>(), 24);
    }

    #[test]
    fn names_are_one_component() {
        assert!(vol_args("0123456789abcdef").is_ok());
        for bad in ["", "a/b", "a\0b"] {
            assert!(vol_args(bad).is_err(), "{bad:?}");
        }
    }
}
