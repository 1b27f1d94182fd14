//! `RealSys`: the kernel behind the child's [`Sys`](crate::child::Sys) seam.
//! Each method is one step with one reason, noted where it is not obvious.

use crate::child::Sys;
use crate::raw;
use crate::seccomp::Program;
use crate::sys_overlay::{escape_lowerdir, overlay};
use nix::mount::{mount, MsFlags};
use std::ffi::{CString, OsStr};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::DirBuilderExt;
use std::path::Path;

pub struct RealSys<'a> {
    /// Read end of the parent's go pipe.
    pub go: &'a OwnedFd,
    /// v1 cgroup `tasks` files to write "0" into.
    pub cgroup_tasks: Vec<std::path::PathBuf>,
    /// A world without root (`rootless.rs`): this child is in its caller's
    /// new user namespace, where host mounts are locked to their flags and
    /// no device node can be made.
    pub rootless: bool,
}

impl RealSys<'_> {
    /// One `[u32 length][body]` message from the go pipe (`what`, for the
    /// error), at most 16 MiB.
    fn receive_framed(&mut self, what: &str) -> io::Result<Vec<u8>> {
        let mut len = [0u8; 4];
        read_exact(self.go, &mut len)?;
        let n = u32::from_le_bytes(len) as usize;
        if n > 16 << 20 {
            return Err(io::Error::other(format!("{what} too large")));
        }
        let mut body = vec![0u8; n];
        read_exact(self.go, &mut body)?;
        Ok(body)
    }
}

/// Sets mount attributes of the mount at `path` (its root), leaving every
/// other (a lock on the atime flags of a mount copied from the host
/// refuses a `MS_REMOUNT` that would change them).
fn set_mount_attrs(path: &Path, set: u64) -> io::Result<()> {
    let fd = open_nofollow(path)?;
    raw::mount_setattr(fd.as_fd(), set, 0)
}

/// The text of `/proc/self/mountinfo`, as `std::fs::read_to_string` gives
/// it (an error for bytes that are not UTF-8), in one or two reads: a
/// procfs file says its size is 0, so `read_to_string` starts with 32 bytes
/// and doubles, nine reads for this host's 2 KB, each generating the table
/// again from where it stopped.
pub(crate) fn mountinfo() -> io::Result<String> {
    use std::io::Read;
    let mut text = Vec::with_capacity(16 * 1024);
    std::fs::File::open("/proc/self/mountinfo")?.read_to_end(&mut text)?;
    String::from_utf8(text).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

pub(crate) fn cpath(p: &Path) -> io::Result<CString> {
    CString::new(p.as_os_str().as_bytes()).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

pub(crate) fn nixerr(e: nix::Error) -> io::Error {
    io::Error::from_raw_os_error(e as i32)
}

/// An `O_PATH` descriptor of `path`, resolved without following any
/// symlink or magic link on the way, the last component included (ELOOP if
/// there is one). Not `O_NOFOLLOW`: with `O_PATH` that would return the
/// symlink itself.
fn open_nofollow(path: &Path) -> io::Result<OwnedFd> {
    use nix::fcntl::{openat2, OFlag, OpenHow, ResolveFlag};
    let how = OpenHow::new()
        .flags(OFlag::O_PATH | OFlag::O_CLOEXEC)
        .resolve(ResolveFlag::RESOLVE_NO_SYMLINKS | ResolveFlag::RESOLVE_NO_MAGICLINKS);
    openat2(nix::fcntl::AT_FDCWD, path, how).map_err(nixerr)
}

/// A detached clone of the one host mount at `path` (no submounts), seen
/// through the id mapping of the user namespace `userns`, with `attrs`.
fn idmapped_clone(path: &Path, userns: RawFd, attrs: u64) -> io::Result<OwnedFd> {
    let m = raw::open_tree_clone(libc::AT_FDCWD, &cpath(path)?, false)?;
    // SAFETY: the plan's descriptor, open for the child's life.
    raw::mount_setattr_idmap(m.as_fd(), unsafe { BorrowedFd::borrow_raw(userns) }, attrs)?;
    Ok(m)
}

impl Sys for RealSys<'_> {
    fn act_as_world_root(&mut self, ids: &crate::userns::WorldIds) -> io::Result<()> {
        // NO_SETUID_FIXUP first: a non-zero fsuid would otherwise clear the
        // file capabilities this child still needs (to read the host's
        // files for the overlay, to mount). Raw calls: glibc's setfsuid
        // cannot report an error.
        crate::caps::keep_caps_across_id_changes()?;
        // SAFETY: integer arguments only.
        unsafe {
            libc::syscall(libc::SYS_setfsgid, ids.gid);
            libc::syscall(libc::SYS_setfsuid, ids.uid);
        }
        // setfs*id return the previous value: check the new one took.
        // SAFETY: as above (-1: query only).
        let (u, g) =
            unsafe { (libc::syscall(libc::SYS_setfsuid, u32::MAX), libc::syscall(libc::SYS_setfsgid, u32::MAX)) };
        if (u as u32, g as u32) != (ids.uid, ids.gid) {
            return Err(io::Error::other(format!("fsuid/fsgid are {u}/{g}, not {}/{}", ids.uid, ids.gid)));
        }
        Ok(())
    }

    fn map_caller(&mut self, caller: &crate::rootless::Caller) -> io::Result<()> {
        // A process may map its own ids in the namespace it made, one each,
        // gid only after setgroups is denied (user_namespaces(7)).
        std::fs::write("/proc/self/setgroups", "deny")?;
        std::fs::write("/proc/self/uid_map", format!("0 {} 1", caller.uid))?;
        std::fs::write("/proc/self/gid_map", format!("0 {} 1", caller.gid))
    }

    fn mount_piece(&mut self, scratch: BorrowedFd<'_>, path: &Path, index: usize, target: &Path) -> io::Result<()> {
        let fd = scratch.as_raw_fd();
        let rel = path.strip_prefix("/").unwrap_or(path);
        let upper = Path::new(&format!("/proc/self/fd/{fd}/upper")).join(rel);
        let work = format!("/proc/self/fd/{fd}/work/{index}");
        overlay(true, &escape_lowerdir(path)?, &upper.to_string_lossy(), &work, target)
    }

    fn set_pdeathsig(&mut self) -> io::Result<()> {
        nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL).map_err(nixerr)
    }

    fn rearm_pdeathsig(&mut self) -> io::Result<()> {
        self.set_pdeathsig()?;
        // The parent holds the go pipe's write end until the init is
        // executed: a hang-up means it died before the signal was set again.
        let mut p = libc::pollfd { fd: self.go.as_raw_fd(), events: libc::POLLIN, revents: 0 };
        // SAFETY: one valid pollfd, no wait.
        if unsafe { libc::poll(&mut p, 1, 0) } < 0 {
            return Err(io::Error::last_os_error());
        }
        if p.revents & (libc::POLLHUP | libc::POLLERR) != 0 {
            return Err(io::Error::other("parent exited before the world started"));
        }
        Ok(())
    }

    fn receive_plan(&mut self) -> io::Result<Vec<crate::plan::Step>> {
        let body = self.receive_framed("mount plan")?;
        crate::plan_wire::decode(&body).map_err(io::Error::other)
    }

    fn receive_pieces(&mut self) -> io::Result<Vec<crate::rootless::Piece>> {
        let body = self.receive_framed("list of the root's pieces")?;
        crate::plan_wire::decode_pieces(&body).map_err(io::Error::other)
    }

    fn await_parent(&mut self) -> io::Result<()> {
        let mut b = [0u8; 1];
        match nix::unistd::read(self.go, &mut b).map_err(nixerr)? {
            1 => Ok(()),
            _ => Err(io::Error::other("parent exited before releasing the world")),
        }
    }

    fn join_cgroups(&mut self) -> io::Result<()> {
        crate::cgroup::join_self(&self.cgroup_tasks)
    }

    fn unshare_cgroupns(&mut self) -> io::Result<()> {
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWCGROUP).map_err(nixerr)
    }

    fn unshare_netns(&mut self) -> io::Result<()> {
        nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).map_err(nixerr)
    }

    fn tell_netns_made(&mut self, fd: RawFd) -> io::Result<()> {
        // SAFETY: `fd` is the write end of a pipe the plan holds open.
        let fd = unsafe { BorrowedFd::borrow_raw(fd) };
        nix::unistd::write(fd, b"n").map(drop).map_err(nixerr)
    }

    fn join_netns(&mut self, from: RawFd) -> io::Result<()> {
        // SAFETY: `from` is the child's end of a socket the plan holds open.
        let from = unsafe { BorrowedFd::borrow_raw(from) };
        let ns = crate::fdpass::receive(from, "network namespace from the parent")?;
        nix::sched::setns(ns, nix::sched::CloneFlags::CLONE_NEWNET).map_err(nixerr)
    }

    fn make_rprivate(&mut self) -> io::Result<()> {
        // On systemd hosts / is shared: without this our mounts would appear
        // on the host.
        mount(None::<&str>, "/", None::<&str>, MsFlags::MS_REC | MsFlags::MS_PRIVATE, None::<&str>).map_err(nixerr)
    }

    fn mount_overlay(
        &mut self,
        scratch: BorrowedFd<'_>,
        dir: &str,
        lower: crate::child::Lower<'_>,
        target: &Path,
    ) -> io::Result<()> {
        // Lower: a host filesystem (read-only to the world: writes copy up);
        // upper/work: the world's capped upper (disk pool or tmpfs); the
        // options and why: `sys_overlay`.
        let fd = scratch.as_raw_fd();
        let lower = match lower {
            crate::child::Lower::Host(p) => escape_lowerdir(p)?,
            crate::child::Lower::Tree(t) => format!("/proc/self/fd/{}", t.as_raw_fd()),
        };
        let (upper, work) = (format!("/proc/self/fd/{fd}/{dir}upper"), format!("/proc/self/fd/{fd}/{dir}work"));
        // (A host data mount a world without root carries: as its root's
        // pieces are, `mount_piece`.)
        overlay(self.rootless, &lower, &upper, &work, target)
    }

    fn bind_ro(&mut self, src: &Path, dst: &Path, idmap: Option<RawFd>) -> io::Result<()> {
        if self.rootless {
            mount(Some(src), dst, None::<&str>, MsFlags::MS_BIND, None::<&str>).map_err(nixerr)?;
            let attrs = libc::MOUNT_ATTR_RDONLY | libc::MOUNT_ATTR_NOSUID | libc::MOUNT_ATTR_NODEV;
            return set_mount_attrs(dst, attrs);
        }
        if let Some(ns) = idmap {
            let attrs = libc::MOUNT_ATTR_RDONLY | libc::MOUNT_ATTR_NOSUID | libc::MOUNT_ATTR_NODEV;
            let m = idmapped_clone(src, ns, attrs)?;
            return raw::move_mount_to(m.as_fd(), &cpath(dst)?);
        }
        mount(Some(src), dst, None::<&str>, MsFlags::MS_BIND, None::<&str>).map_err(nixerr)?;
        let flags =
            MsFlags::MS_REMOUNT | MsFlags::MS_BIND | MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
        mount(None::<&str>, dst, None::<&str>, flags, None::<&str>).map_err(nixerr)
    }

    fn idmap_mount(&mut self, path: &Path, userns: RawFd) -> io::Result<OwnedFd> {
        idmapped_clone(path, userns, 0)
    }

    fn stash(&mut self, tree: BorrowedFd<'_>, at: &Path) -> io::Result<()> {
        raw::move_mount_to(tree, &cpath(at)?)
    }

    fn idmap_store(&mut self, store: BorrowedFd<'_>, userns: RawFd) -> io::Result<OwnedFd> {
        // A clone, never the store's own mount: a tmpfs store's detached
        // mount is the parent's too (it reads the fs_diff through it).
        let m = raw::open_tree_clone_one(store)?;
        // SAFETY: the plan's descriptor, open for the child's life.
        raw::mount_setattr_idmap(m.as_fd(), unsafe { BorrowedFd::borrow_raw(userns) }, 0)?;
        Ok(m)
    }

    fn grab(&mut self, path: &Path, read_only: bool) -> io::Result<OwnedFd> {
        // The exposure is the path the plan judged: a symlink swapped in
        // since (anywhere on the way) fails the world instead of cloning
        // what it points to.
        let tree = raw::open_tree_clone_fd(open_nofollow(path)?.as_fd())?;
        if read_only {
            // The whole detached tree, before it is attached (exec stays).
            raw::mount_setattr_tree(tree.as_fd(), libc::MOUNT_ATTR_RDONLY, 0)?;
        }
        Ok(tree)
    }

    fn copy_up(&mut self, path: &Path) -> io::Result<()> {
        // A change of owner to the same owner (-1, -1) is a metadata change
        // for the overlay: it copies the object and its parents up (modes,
        // owners, times, a file's content, a link's target; the parents'
        // times kept) and changes nothing else. A final symlink is the
        // object itself (O_NOFOLLOW: an O_PATH fd of the link); a symlink
        // on the way fails.
        use nix::fcntl::{openat2, AtFlags, OFlag, OpenHow, ResolveFlag};
        let how = OpenHow::new()
            .flags(OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC)
            .resolve(ResolveFlag::RESOLVE_NO_SYMLINKS | ResolveFlag::RESOLVE_NO_MAGICLINKS);
        let fd = openat2(nix::fcntl::AT_FDCWD, path, how).map_err(nixerr)?;
        let flags = AtFlags::AT_EMPTY_PATH | AtFlags::AT_SYMLINK_NOFOLLOW;
        nix::unistd::fchownat(&fd, "", None, None, flags).map_err(nixerr)
    }

    fn bind_upper(&mut self, scratch: BorrowedFd<'_>, dir: &Path, target: &Path) -> io::Result<()> {
        use nix::fcntl::{openat2, OFlag, OpenHow, ResolveFlag};
        let how = OpenHow::new().flags(OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC).resolve(
            ResolveFlag::RESOLVE_BENEATH
                | ResolveFlag::RESOLVE_NO_SYMLINKS
                | ResolveFlag::RESOLVE_NO_MAGICLINKS
                | ResolveFlag::RESOLVE_NO_XDEV,
        );
        let fd = openat2(scratch, dir, how).map_err(nixerr)?;
        let tree = raw::open_tree_clone_fd(fd.as_fd())?;
        // The scratch is noexec; a home holds programs (`pip install
        // --user`, `cargo install`).
        let (set, clear) = (libc::MOUNT_ATTR_NOSUID | libc::MOUNT_ATTR_NODEV, libc::MOUNT_ATTR_NOEXEC);
        raw::mount_setattr_tree(tree.as_fd(), set, clear)?;
        raw::move_mount_onto_fd(tree.as_fd(), open_nofollow(target)?.as_fd())
    }

    fn mark_planned(&mut self, scratch: BorrowedFd<'_>, path: &Path) -> io::Result<()> {
        use nix::fcntl::{openat2, OFlag, OpenHow, ResolveFlag};
        let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        };
        let how = OpenHow::new().flags(OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC).resolve(
            ResolveFlag::RESOLVE_BENEATH
                | ResolveFlag::RESOLVE_NO_SYMLINKS
                | ResolveFlag::RESOLVE_NO_MAGICLINKS
                | ResolveFlag::RESOLVE_NO_XDEV,
        );
        let dir = openat2(scratch, parent, how).map_err(nixerr)?;
        // lsetxattr has no directory-relative form before Linux 6.13: the
        // entry is named through the open parent (a final symlink is not
        // followed, so a copied-up link is marked itself).
        let mut p = format!("/proc/self/fd/{}/", dir.as_raw_fd()).into_bytes();
        p.extend_from_slice(name.as_bytes());
        let p = CString::new(p).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
        let name = crate::diff::PLANNED_XATTR;
        // SAFETY: NUL-terminated path and name, a value of the length given.
        match unsafe { libc::lsetxattr(p.as_ptr(), name.as_ptr(), b"1".as_ptr().cast(), 1, 0) } {
            0 => Ok(()),
            _ => Err(io::Error::last_os_error()),
        }
    }

    fn mount(&mut self, target: &Path, fstype: &str, flags: u64, data: &str) -> io::Result<()> {
        let flags = MsFlags::from_bits_truncate(flags as libc::c_ulong);
        // Without root, the world's devpts cannot name the host's tty
        // group (unmapped): its terminals are the world root's group.
        let data = match (self.rootless, fstype) {
            (true, "devpts") => data.replace(",gid=5", ""),
            _ => data.to_string(),
        };
        let data = (!data.is_empty()).then_some(data.as_str());
        mount(Some(fstype), target, Some(fstype), flags, data).map_err(nixerr)
    }

    fn make_store(&mut self, path: &Path, size: u64, layers: usize) -> io::Result<OwnedFd> {
        let flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
        let data = format!("size={size},mode=700");
        mount(Some("tmpfs"), path, Some("tmpfs"), flags, Some(data.as_str())).map_err(nixerr)?;
        let fd: OwnedFd = std::fs::File::open(path)?.into();
        crate::upper::dirs(&fd, layers)?;
        Ok(fd)
    }

    fn make_uppers(&mut self, path: &Path, pieces: &[crate::rootless::Piece]) -> io::Result<()> {
        crate::rootless::make_uppers(path, pieces)
    }

    fn send_store(&mut self, store: BorrowedFd<'_>, to: BorrowedFd<'_>) -> io::Result<()> {
        crate::fdpass::send(to, store, b's')
    }

    fn open_store(&mut self, path: &Path) -> io::Result<OwnedFd> {
        open_nofollow(path)
    }

    fn bind_scratch(&mut self, scratch: BorrowedFd<'_>, index: u32, mode: u32, target: &Path) -> io::Result<()> {
        use nix::sys::stat::{fchmodat, mkdirat, FchmodatFlags, Mode};
        let name = format!("scratch/{index}");
        let mode = Mode::from_bits_truncate(mode);
        mkdirat(scratch, name.as_str(), mode).map_err(nixerr)?;
        // Exactly `mode` (1777 for /tmp), whatever the umask.
        fchmodat(scratch, name.as_str(), mode, FchmodatFlags::FollowSymlink).map_err(nixerr)?;
        let c = CString::new(name).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
        let tree = raw::open_tree_clone(scratch.as_raw_fd(), &c, false)?;
        // The store's mount is noexec (the pool's is: kept worlds' files
        // sit there on the host); the world's /tmp keeps exec, as its tmpfs
        // had.
        let attr = libc::MOUNT_ATTR_NOSUID | libc::MOUNT_ATTR_NODEV;
        raw::mount_setattr(tree.as_fd(), attr, libc::MOUNT_ATTR_NOEXEC)?;
        raw::move_mount_onto_fd(tree.as_fd(), open_nofollow(target)?.as_fd())
    }

    fn mkdir_all(&mut self, path: &Path, mode: u32) -> io::Result<()> {
        std::fs::create_dir_all(path)?;
        std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(mode))
    }

    fn mkdir(&mut self, path: &Path, mode: Option<u32>) -> io::Result<()> {
        std::fs::DirBuilder::new().mode(0o755).create(path)?;
        match mode {
            Some(m) => std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(m)),
            None => Ok(()),
        }
    }

    fn read_only_tree(&mut self, path: &Path) -> io::Result<()> {
        let fd = open_nofollow(path)?;
        let attrs = libc::MOUNT_ATTR_RDONLY | libc::MOUNT_ATTR_NOSUID | libc::MOUNT_ATTR_NODEV;
        raw::mount_setattr_tree(fd.as_fd(), attrs, 0)
    }

    fn touch(&mut self, path: &Path) -> io::Result<()> {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(path).map(drop)
    }

    fn mknod(&mut self, path: &Path, major: u32, minor: u32) -> io::Result<()> {
        use nix::sys::stat::{makedev, mknod, Mode, SFlag};
        if self.rootless {
            // No device node can be made in a user's namespace: a bind of
            // the host's own (`/dev/null`, `/dev/zero`, ...), as bubblewrap
            // does; its number is checked first.
            let name = path.file_name().ok_or_else(|| io::Error::from_raw_os_error(libc::EINVAL))?;
            let host = Path::new("/dev").join(name);
            let st = nix::sys::stat::stat(&host).map_err(nixerr)?;
            let want = makedev(major as u64, minor as u64);
            if st.st_mode & libc::S_IFMT != libc::S_IFCHR || st.st_rdev != want {
                return Err(io::Error::other(format!("{} is not the device {major}:{minor}", host.display())));
            }
            self.touch(path)?;
            return mount(Some(&host), path, None::<&str>, MsFlags::MS_BIND, None::<&str>).map_err(nixerr);
        }
        let mode = Mode::from_bits_truncate(0o666);
        mknod(path, SFlag::S_IFCHR, mode, makedev(major as u64, minor as u64)).map_err(nixerr)?;
        // mknod applies the umask; the nodes must be 0666.
        std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o666))
    }

    fn symlink(&mut self, target: &Path, path: &Path) -> io::Result<()> {
        std::os::unix::fs::symlink(target, path)
    }

    fn bind(&mut self, src: &Path, dst: &Path) -> io::Result<()> {
        mount(Some(src), dst, None::<&str>, MsFlags::MS_BIND, None::<&str>).map_err(nixerr)
    }

    fn bind_tree(&mut self, src: &Path, dst: &Path) -> io::Result<()> {
        mount(Some(src), dst, None::<&str>, MsFlags::MS_BIND | MsFlags::MS_REC, None::<&str>).map_err(nixerr)
    }

    fn remount_ro(&mut self, target: &Path, nodev: bool) -> io::Result<()> {
        if self.rootless {
            let mut attrs = libc::MOUNT_ATTR_RDONLY | libc::MOUNT_ATTR_NOSUID | libc::MOUNT_ATTR_NOEXEC;
            if nodev {
                attrs |= libc::MOUNT_ATTR_NODEV;
            }
            return set_mount_attrs(target, attrs);
        }
        // A file mask is a bind of /dev/null: it must keep device access to
        // read as empty (with nodev it would be EACCES).
        let mut flags =
            MsFlags::MS_REMOUNT | MsFlags::MS_BIND | MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC;
        if nodev {
            flags |= MsFlags::MS_NODEV;
        }
        mount(None::<&str>, target, None::<&str>, flags, None::<&str>).map_err(nixerr)
    }

    fn attach(&mut self, tree: OwnedFd, path: &Path) -> io::Result<()> {
        raw::move_mount_onto_fd(tree.as_fd(), open_nofollow(path)?.as_fd())
    }

    fn pivot_root(&mut self, root: &Path) -> io::Result<()> {
        // pivot_root(".", ".") stacks the old root on top of the new one;
        // detaching "." then removes every host mount from the world.
        nix::unistd::chdir(root).map_err(nixerr)?;
        raw::pivot_root(c".", c".")?;
        nix::mount::umount2(".", nix::mount::MntFlags::MNT_DETACH).map_err(nixerr)?;
        nix::unistd::chdir("/").map_err(nixerr)
    }

    fn sethostname(&mut self, name: &str) -> io::Result<()> {
        nix::unistd::sethostname(name).map_err(nixerr)
    }

    fn loopback_up(&mut self) -> io::Result<()> {
        loopback_up()
    }

    fn set_rlimits(&mut self, nofile: u64) -> io::Result<()> {
        use nix::sys::resource::{setrlimit, Resource};
        setrlimit(Resource::RLIMIT_CORE, 0, 0).map_err(nixerr)?;
        setrlimit(Resource::RLIMIT_NOFILE, nofile, nofile).map_err(nixerr)
    }

    fn chdir_verified(&mut self, cwd: &Path) -> io::Result<()> {
        // After pivot_root the path resolves inside the world only; check the
        // kernel's view matches so no symlink moved us elsewhere.
        nix::unistd::chdir(cwd)
            .map_err(|e| io::Error::new(io::ErrorKind::NotFound, format!("not available inside the world ({e})")))?;
        let now = nix::unistd::getcwd().map_err(nixerr)?;
        if now != cwd {
            return Err(io::Error::other(format!("resolved to {} inside the world", now.display())));
        }
        Ok(())
    }

    fn open_console(&mut self, ptmx: &Path, size: Option<libc::winsize>, console: RawFd) -> io::Result<OwnedFd> {
        crate::sys_stdio::open_console(ptmx, size, console)
    }

    fn set_stdio(&mut self, fds: [Option<RawFd>; 3], owner: Option<(u32, u32)>) -> io::Result<()> {
        crate::sys_stdio::set_stdio(fds, owner)
    }

    fn enter_userns(&mut self, fd: RawFd) -> io::Result<()> {
        // SAFETY: setns with the plan's descriptor; the child is
        // single-threaded and shares no filesystem information (no CLONE_FS).
        if unsafe { libc::setns(fd, libc::CLONE_NEWUSER) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    fn setsid(&mut self) -> io::Result<()> {
        // A new session without a controlling terminal: the world cannot use
        // the host's tty to inject input (TIOCSTI is also refused by seccomp).
        nix::unistd::setsid().map(drop).map_err(nixerr)
    }

    fn drop_caps(&mut self, last_cap: u32, user: Option<&crate::spec::WorldUser>) -> io::Result<()> {
        crate::caps::drop_all(last_cap, user)
    }

    fn no_new_privs(&mut self) -> io::Result<()> {
        nix::sys::prctl::set_no_new_privs().map_err(nixerr)
    }

    fn cloexec_fds(&mut self) -> io::Result<()> {
        raw::cloexec_from(3)
    }

    fn keep_open(&mut self, fd: std::os::fd::RawFd) -> io::Result<()> {
        // SAFETY: fcntl F_SETFD on an fd this process holds.
        if unsafe { libc::fcntl(fd, libc::F_SETFD, 0) } < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    fn unblock_signals(&mut self) -> io::Result<()> {
        // Every disposition back to its default: an ignored signal survives
        // execve, and cloche's own (Rust ignores SIGPIPE; a caller under
        // nohup ignores SIGHUP) must not become the world's (a writer to a
        // closed pipe would see EPIPE instead of dying of SIGPIPE).
        for sig in 1..=libc::SIGRTMAX() {
            if sig != libc::SIGKILL && sig != libc::SIGSTOP {
                // SAFETY: SIG_DFL for a valid signal number; no handler runs.
                unsafe { libc::signal(sig, libc::SIG_DFL) };
            }
        }
        use nix::sys::signal::{sigprocmask, SigSet, SigmaskHow};
        sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None).map_err(nixerr)
    }

    fn load_seccomp(&mut self, prog: &Program) -> io::Result<()> {
        crate::seccomp::install(prog).map_err(io::Error::from)
    }

    fn exec(&mut self, init: BorrowedFd<'_>, argv: &[CString], envp: &[CString]) -> io::Error {
        raw::execveat_fd(init, argv, envp)
    }
}

/// Reads exactly `buf.len()` bytes from the parent (EOF: it died).
fn read_exact(fd: &OwnedFd, buf: &mut [u8]) -> io::Result<()> {
    let mut at = 0;
    while at < buf.len() {
        match nix::unistd::read(fd, &mut buf[at..]) {
            Ok(0) => return Err(io::Error::other("parent exited before releasing the world")),
            Ok(n) => at += n,
            Err(nix::Error::EINTR) => {}
            Err(e) => return Err(nixerr(e)),
        }
    }
    Ok(())
}

/// Brings `lo` up in the current network namespace (SIOCSIFFLAGS).
pub(crate) fn loopback_up() -> io::Result<()> {
    // SAFETY: a plain socket; closed below.
    let sock = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if sock < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: ifreq is plain data; zeroed is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (i, b) in OsStr::new("lo").as_bytes().iter().enumerate() {
        req.ifr_name[i] = *b as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS/SIOCSIFFLAGS read and write the ifreq we own.
    let r = unsafe {
        if libc::ioctl(sock, libc::SIOCGIFFLAGS as _, &mut req) < 0 {
            -1
        } else {
            req.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
            libc::ioctl(sock, libc::SIOCSIFFLAGS as _, &req)
        }
    };
    let err = io::Error::last_os_error();
    // SAFETY: closing the socket we opened.
    unsafe { libc::close(sock) };
    if r < 0 {
        Err(err)
    } else {
        Ok(())
    }
}
