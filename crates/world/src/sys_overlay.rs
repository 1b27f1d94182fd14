//! The overlays of a world's child (`sys::RealSys::mount_overlay` and
//! `mount_piece`): their options, and a lower directory's path as overlayfs
//! reads it.

use crate::raw;
use crate::sys::cpath;
use std::io;
use std::os::fd::AsFd;
use std::path::Path;

/// An overlay (`lower`, `upper`, `work`: paths as the overlay takes them)
/// mounted on `target`, as host root, or inside a world without root's user
/// namespace (`user`).
pub(crate) fn overlay(user: bool, lower: &str, upper: &str, work: &str, target: &Path) -> io::Result<()> {
    // Lower: a host filesystem (read-only to the world: writes copy up).
    // Upper/work: in the world's capped upper store (disk pool or tmpfs).
    // index=on: a copied-up file keeps its lower inode number, so a
    // hard link made in the world is the same inode as its source
    // (`git clone` of a local repo, `cp -al`, tar and rsync hard-link
    // detection), and a file with several lower names stays one inode.
    // Off: redirect_dir and metacopy (an upper entry would then mean
    // "see elsewhere"; the fs_diff reads the upper as the content),
    // xino (every lower inode number would get bit 63 set: past 2^53,
    // a JavaScript number, and Node's realpath cache keyed by it, can
    // no longer tell inodes apart). The kernel turns index off by
    // itself (with a warning) on a lower filesystem without file handles.
    // volatile: no sync of the upper, ever (an upper on disk would
    // otherwise fsync each file it copies up: 4-8 ms a file here, and
    // the whole pool at unmount); a world's upper is disposable, and
    // none is mounted twice, which is all volatile asks.
    // With a user namespace the lower is an idmapped clone of that host
    // mount (host root's files are the world root's, as they are
    // without one), and the upper store an idmapped one: a copy-up writes
    // the host's ids. (The overlay acts with its mounter's credentials:
    // this child, fsuid the world's root.)
    // In a world without root's namespace: the markers are
    // `user.overlay.*` (`userxattr`), which asks `redirect_dir=nofollow`;
    // `index` is off (the kernel turns it off there anyway, warning in its
    // log: no file handles); `volatile` as for root.
    let fs = raw::fsopen("overlay")?;
    let fsb = fs.as_fd();
    raw::fsconfig_str(fsb, "lowerdir", lower)?;
    raw::fsconfig_str(fsb, "upperdir", upper)?;
    raw::fsconfig_str(fsb, "workdir", work)?;
    let options = match user {
        false => [("redirect_dir", "off"), ("metacopy", "off"), ("index", "on"), ("xino", "off")],
        true => {
            raw::fsconfig_flag(fsb, "userxattr")?;
            [("redirect_dir", "nofollow"), ("metacopy", "off"), ("index", "off"), ("xino", "off")]
        }
    };
    for (k, v) in options {
        raw::fsconfig_str(fsb, k, v)?;
    }
    raw::fsconfig_flag(fsb, "volatile")?;
    raw::fsconfig_create(fsb)?;
    let mnt = raw::fsmount(fsb, libc::MOUNT_ATTR_NOSUID | libc::MOUNT_ATTR_NODEV)?;
    raw::move_mount_to(mnt.as_fd(), &cpath(target)?)
}

/// overlayfs splits `lowerdir` on ':' and unescapes '\\'; a path is one layer.
pub(crate) fn escape_lowerdir(p: &Path) -> io::Result<String> {
    let s = p.to_str().ok_or_else(|| io::Error::other("a host mount path that is not UTF-8"))?;
    Ok(s.replace('\\', "\\\\").replace(':', "\\:"))
}
