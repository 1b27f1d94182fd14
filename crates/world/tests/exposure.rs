//! The child grabs and attaches an exposure on the path the plan judged:
//! never through a symlink swapped in since (root: open_tree needs
//! CAP_SYS_ADMIN; the clone it makes is detached and dropped at once, so the
//! host's mount table does not change).

use cloche_world::child::{RealSys, Sys};
use std::os::unix::fs::symlink;

#[test]
fn grabbing_an_exposure_never_follows_a_symlink() {
    let dir = tempfile::tempdir_in("/tmp").unwrap();
    let root = std::fs::canonicalize(dir.path()).unwrap();
    let real = root.join("real");
    let secret = root.join("secret");
    std::fs::create_dir_all(real.join("sub")).unwrap();
    std::fs::create_dir_all(&secret).unwrap();
    symlink(&secret, root.join("swapped")).unwrap();
    symlink(&root, root.join("up")).unwrap();
    let (go, _w) = nix::unistd::pipe().unwrap();
    let mut sys = RealSys { go: &go, cgroup_tasks: vec![], rootless: false };
    assert!(sys.grab(&real, false).is_ok(), "a real directory is grabbed");
    assert!(sys.grab(&real.join("sub"), false).is_ok());
    for (p, ro) in [(root.join("swapped"), false), (root.join("up/real"), true), (root.join("up/secret"), false)] {
        let err = sys.grab(&p, ro).err().unwrap_or_else(|| panic!("{} was grabbed through a symlink", p.display()));
        assert_eq!(err.raw_os_error(), Some(libc::ELOOP), "{}: {err}", p.display());
    }
}

/// A toolchain is grabbed read-only: the detached clone itself is a
/// read-only mount (statvfs on it says so) before it is attached anywhere;
/// a copy-on-write exposure is not.
#[test]
fn a_read_only_grab_is_a_read_only_mount() {
    let dir = tempfile::tempdir_in("/tmp").unwrap();
    let (go, _w) = nix::unistd::pipe().unwrap();
    let mut sys = RealSys { go: &go, cgroup_tasks: vec![], rootless: false };
    let ro = |fd: std::os::fd::OwnedFd| {
        nix::sys::statvfs::fstatvfs(&fd).unwrap().flags().contains(nix::sys::statvfs::FsFlags::ST_RDONLY)
    };
    assert!(ro(sys.grab(dir.path(), true).unwrap()), "grab(read_only) gave a writable mount");
    assert!(!ro(sys.grab(dir.path(), false).unwrap()), "grab gave a read-only mount");
}
