//! Host filesystems below `/` that a world must see.
//!
//! The root overlay takes the root filesystem only: a separate `/home`,
//! `/srv`, a tmpfs `/tmp` or a data disk would appear as its empty mount
//! point. Each such *data* mount gets its own treatment inside the world:
//! - read-write: an overlay of its own (lower = the host mount, upper and
//!   work in the world's tmpfs under `layers/<k>/`), so writes there are
//!   captured like everywhere else and show in the fs_diff;
//! - read-only: a read-only bind (the world could not write there on the
//!   host either; no overlay needed).
//!
//! Kernel and runtime filesystems (proc, sysfs, cgroup, devpts, ...) are not
//! data: the world gets fresh ones. Mounts below /proc, /sys, /dev and /run,
//! below cloche's state directory, and overlays (nested overlays hit the
//! kernel's stacking limit) are left out, and so are other worlds' files
//! wherever their state directory is: a disk pool (`<state>/worlds`, btrfs
//! on a loop device) and a kept world's tmpfs (`<state>/worlds/<id>/fs`).

use std::path::{Path, PathBuf};

/// One host mount to carry into worlds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostMount {
    pub path: PathBuf,
    pub fstype: String,
    pub read_only: bool,
    /// Its directories in the world's upper store: `layers/<slot>/upper`
    /// and `work` (its position in the list; for a world that continues a
    /// kept one, the slot the world's earlier runs used for this path:
    /// `continued::Taken::assign_slots`).
    pub slot: usize,
}

/// Filesystem types that hold data a command may need.
const DATA_FS: &[&str] = &[
    "ext2", "ext3", "ext4", "xfs", "btrfs", "f2fs", "zfs", "bcachefs", "jfs", "reiserfs", "vfat", "exfat", "ntfs",
    "ntfs3", "tmpfs", "nfs", "nfs4", "cifs", "smb3", "9p", "virtiofs", "squashfs", "erofs", "iso9660",
];

/// Trees the world gets fresh or never sees, and container engines' own
/// trees (each container's shm and secrets mounts would otherwise cost a
/// layer in every world, and belong to other sandboxes).
const SKIP_UNDER: &[&str] =
    &["/proc", "/sys", "/dev", "/run", "/var/run", "/var/lib/docker", "/var/lib/containers", "/var/lib/kubelet"];

/// Data mounts of the current mount namespace, parents before children.
pub fn host_data_mounts(state_dir: &Path) -> Vec<HostMount> {
    let info = crate::sys::mountinfo().unwrap_or_default();
    data_mounts(&info, state_dir)
}

/// Pure part of `host_data_mounts`, for tests.
pub fn data_mounts(mountinfo: &str, state_dir: &Path) -> Vec<HostMount> {
    let mut out: Vec<HostMount> = Vec::new();
    for line in mountinfo.lines() {
        let Some((left, right)) = line.split_once(" - ") else { continue };
        let l: Vec<&str> = left.split(' ').collect();
        let (Some(mountpoint), Some(opts)) = (l.get(4), l.get(5)) else { continue };
        let mut r = right.split(' ');
        let (fstype, source) = (r.next().unwrap_or(""), r.next().unwrap_or(""));
        let path = crate::cgroup::unescape(mountpoint);
        // A later mount on the same path covers the earlier one.
        out.retain(|m| m.path != path);
        if path == Path::new("/")
            || !DATA_FS.contains(&fstype)
            || SKIP_UNDER.iter().any(|s| path.starts_with(s))
            || path.starts_with(state_dir)
            || worlds_store(&path, fstype, source)
        {
            continue;
        }
        let read_only = opts.split(',').any(|o| o == "ro");
        out.push(HostMount { path, fstype: fstype.to_string(), read_only, slot: 0 });
    }
    out.sort_by(|a, b| a.path.cmp(&b.path));
    for (k, m) in out.iter_mut().enumerate() {
        m.slot = k;
    }
    out
}

/// True for a mount that holds worlds' files: a disk pool or a kept world's
/// tmpfs, of any state directory.
fn worlds_store(path: &Path, fstype: &str, source: &str) -> bool {
    let name = |p: Option<&Path>| p.and_then(Path::file_name).and_then(|n| n.to_str()).unwrap_or("").to_string();
    let pool = fstype == "btrfs" && source.starts_with("/dev/loop") && name(Some(path)) == "worlds";
    let kept = fstype == "tmpfs"
        && name(Some(path)) == "fs"
        && crate::state::valid_id(&name(path.parent()))
        && name(path.parent().and_then(Path::parent)) == "worlds";
    pool || kept
}

#[cfg(test)]
mod tests {
    use super::*;

    const INFO: &str = "\
22 27 0:21 / /proc rw,relatime - proc proc rw
24 27 0:6 / /dev rw,relatime - devtmpfs devtmpfs rw
25 24 0:23 / /dev/shm rw,relatime - tmpfs tmpfs rw
27 1 254:0 / / rw,relatime - ext4 /dev/vda rw
28 27 0:25 / /mnt/tools ro,nosuid,nodev,relatime - tmpfs tools ro,size=4k
29 27 254:1 / /home rw,relatime - ext4 /dev/vdb rw
30 27 0:40 / /tmp rw,nosuid,nodev - tmpfs tmpfs rw
31 27 0:41 / /run rw,nosuid - tmpfs tmpfs rw
32 29 254:2 / /home/ann/data\\040disk rw - xfs /dev/vdc rw
33 27 0:42 / /var/lib/cloche/worlds/abc/fs rw - tmpfs tmpfs rw
34 27 0:43 / /var/lib/docker/overlay2/x/merged rw - overlay overlay rw
37 27 0:46 / /var/lib/docker/containers/x/mounts/shm rw - tmpfs shm rw
35 27 0:44 / /srv rw - tmpfs first rw
36 27 0:45 / /srv rw - ext4 /dev/vdd rw
38 27 0:47 / /srv/other-state/worlds rw,nosuid,nodev,noexec - btrfs /dev/loop3 rw,subvol=/
39 27 0:48 / /srv/old-state/worlds/0123456789abcdef/fs rw - tmpfs none rw
40 27 0:49 / /srv/worlds rw - btrfs /dev/vde rw
41 27 0:50 / /srv/img rw - btrfs /dev/loop4 rw
";

    #[test]
    fn only_data_mounts_outside_runtime_trees() {
        let m = data_mounts(INFO, Path::new("/var/lib/cloche"));
        let got: Vec<(&str, &str, bool)> =
            m.iter().map(|m| (m.path.to_str().unwrap(), m.fstype.as_str(), m.read_only)).collect();
        assert_eq!(
            got,
            vec![
                ("/home", "ext4", false),
                ("/home/ann/data disk", "xfs", false),
                ("/mnt/tools", "tmpfs", true),
                ("/srv", "ext4", false),
                ("/srv/img", "btrfs", false),
                ("/srv/worlds", "btrfs", false),
                ("/tmp", "tmpfs", false),
            ]
        );
    }
}
