//! The child side of a world: everything between clone3 and execve, as one
//! linear function you can audit in one screen (`setup`).
//!
//! All privileged calls go through the [`Sys`] trait, so the order of the
//! steps and their error paths are unit-tested without root
//! (`child_tests.rs`); [`RealSys`] is the kernel.

use crate::layers::HostMount;
use crate::plan::Step;
use crate::seccomp::Program;
use crate::stdio::WorldStdio;
use std::ffi::CString;
use std::io;
use std::os::fd::{BorrowedFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};

/// Everything the child needs, prepared by the parent before clone3.
pub struct ChildPlan<'a> {
    /// Host path of the directory the overlay is mounted on (the new root).
    pub root: PathBuf,
    /// The world's upper store, holding `upper/`, `work/`, `scratch/` (and
    /// `layers/<k>/...`).
    pub scratch: Store,
    /// Host data mounts below `/` carried into the world (layers.rs).
    pub layers: Vec<HostMount>,
    pub hostname: String,
    pub cwd: PathBuf,
    pub nofile: u64,
    pub last_cap: u32,
    pub seccomp: &'a Program,
    /// The init binary, opened read-only.
    pub init: OwnedFd,
    pub argv: Vec<CString>,
    pub envp: Vec<CString>,
    /// Serve mode: the control socket's fd, kept open across execve.
    pub keep_fd: Option<RawFd>,
    /// The world's own stdin, stdout and stderr (pipes: `stdio/`), put on
    /// 0, 1 and 2. The caller's descriptors never reach the world.
    pub stdio: crate::stdio::WorldStdio,
    /// The user the world runs as (`None`: uid 0); taken while the
    /// capabilities are dropped.
    pub user: Option<crate::spec::WorldUser>,
    /// The world's user namespace (`userns.rs`), made by the parent;
    /// `None`: the world's ids are the host's (policy `world.userns = false`).
    pub userns: Option<ChildUserns>,
    /// A world without root (`rootless.rs`): the child is in a new user
    /// namespace of the caller's, and puts the world's root together.
    pub rootless: Option<ChildRootless>,
    /// Who makes the world's network namespace.
    pub netns: NetnsPlan,
}

/// Who makes the world's network namespace, and how the other learns of it:
/// whichever of the two has time to spare while the other works.
#[derive(Clone, Copy, Debug)]
pub enum NetnsPlan {
    /// This child, first thing (`unshare`): without root (owned by the user
    /// namespace its clone made: a user cannot make one outside it), and
    /// for a scoped network, whose parent has the longer way to the go (it
    /// sets the network up): it says on `tell` (one byte) that it made the
    /// namespace, which the parent then opens.
    Child { tell: Option<RawFd> },
    /// The parent (as root, loopback only), after sending the mount plan,
    /// while this child mounts: it sends the namespace on the socket `from`
    /// (SCM_RIGHTS), and the child enters it before mounting sysfs
    /// (`Step::Sysfs`), so that neither the clone nor the child waits for it.
    Parent { from: RawFd },
}

/// A world without root as the child builds it.
pub struct ChildRootless {
    /// Whose ids map to the world's 0. (The world's root, piece by piece,
    /// comes from the parent after the clone: `Sys::receive_pieces`.)
    pub caller: crate::rootless::Caller,
}

/// The world's user namespace as the child uses it.
pub struct ChildUserns {
    /// The namespace (a descriptor the parent holds; the child's copy).
    pub fd: RawFd,
    /// Its mapping: world ids 0.. are these host ids.
    pub ids: crate::userns::WorldIds,
}

/// An overlay's lower layer.
#[derive(Clone, Copy)]
pub enum Lower<'a> {
    /// The host mount at this path (the overlay takes that mount alone).
    Host(&'a Path),
    /// A clone of it already made (idmapped: [`Sys::idmap_mount`]).
    Tree(BorrowedFd<'a>),
}

/// Where the child finds the world's upper store.
pub enum Store {
    /// A detached tmpfs, by its descriptor.
    Mount(OwnedFd),
    /// A directory on a mount that the child's namespace has its own copy
    /// of (the world's subvolume in the disk pool, `<state>/worlds/<id>/fs`):
    /// the child opens it there. A mount can only be bound again (a scratch
    /// directory) by a namespace it belongs to, or from a detached mount
    /// that no namespace made, as a tmpfs is.
    Path(PathBuf),
    /// A world without root's disposable store: a tmpfs the child mounts
    /// at `path` in its own mount namespace (capped at `size` bytes), makes
    /// the store's directories in (`layers` host data mounts' slots) with
    /// its overlay pieces' uppers (once the parent sent them), and hands to
    /// the parent over `send`
    /// (SCM_RIGHTS) for the fs_diff. Nothing of it is on disk.
    Tmpfs { path: PathBuf, size: u64, layers: usize, send: OwnedFd },
}

/// A failed step: its name, the object it acted on, the error.
#[derive(Debug)]
pub struct StepError {
    pub step: &'static str,
    pub what: String,
    pub source: io::Error,
}

impl std::fmt::Display for StepError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.what.is_empty() {
            write!(f, "{}: {}", self.step, self.source)
        } else {
            write!(f, "{} {}: {}", self.step, self.what, self.source)
        }
    }
}

/// The privileged operations of the child, one method per syscall (or tight
/// group of syscalls with one purpose). Paths are host paths under the new
/// root until `pivot_root`, world paths after.
pub trait Sys {
    /// With a user namespace: what this process creates from now on is
    /// owned by the world's root (`ids`: fsuid and fsgid), its
    /// capabilities kept (`SECBIT_NO_SETUID_FIXUP`).
    fn act_as_world_root(&mut self, ids: &crate::userns::WorldIds) -> io::Result<()>;
    fn set_pdeathsig(&mut self) -> io::Result<()>;
    /// A world without root: maps the caller's uid and gid (its own, on
    /// the host) to 0 in the user namespace it was cloned into, each alone
    /// (`setgroups` denied first, as the kernel requires of a user).
    fn map_caller(&mut self, caller: &crate::rootless::Caller) -> io::Result<()>;
    /// A world without root: overlay of the host directory `path` (its
    /// upper `upper/<path>`, its work directory `work/<index>` in
    /// `scratch`, `userxattr`), mounted on `target`.
    fn mount_piece(&mut self, scratch: BorrowedFd<'_>, path: &Path, index: usize, target: &Path) -> io::Result<()>;
    /// After the last change of credentials (which clears the parent-death
    /// signal): sets it again, then fails if the parent is already gone (it
    /// holds the go pipe open until the world's init is executed).
    fn rearm_pdeathsig(&mut self) -> io::Result<()>;
    /// Reads the mount plan the parent sends after clone3 (EOF: it died).
    fn receive_plan(&mut self) -> io::Result<Vec<Step>>;
    /// A world without root: its root's pieces (`rootless::frame`), which
    /// the parent lists after the clone and sends before the plan.
    fn receive_pieces(&mut self) -> io::Result<Vec<crate::rootless::Piece>>;
    /// Waits for the parent's go (EOF: it died).
    fn await_parent(&mut self) -> io::Result<()>;
    fn join_cgroups(&mut self) -> io::Result<()>;
    fn unshare_cgroupns(&mut self) -> io::Result<()>;
    /// A network namespace of the world's own (only `lo`, down).
    fn unshare_netns(&mut self) -> io::Result<()>;
    /// Says on `fd` (one byte) that the network namespace is made.
    fn tell_netns_made(&mut self, fd: RawFd) -> io::Result<()>;
    /// Receives the world's network namespace on the socket `from`
    /// (SCM_RIGHTS; EOF: the parent died) and enters it.
    fn join_netns(&mut self, from: RawFd) -> io::Result<()>;
    fn make_rprivate(&mut self) -> io::Result<()>;
    /// Overlay of `lower` with upper/work in `scratch` under `dir` ("" or
    /// "layers/<k>/"), mounted on `target`.
    fn mount_overlay(&mut self, scratch: BorrowedFd<'_>, dir: &str, lower: Lower<'_>, target: &Path) -> io::Result<()>;
    /// A detached clone of the one host mount at `path` (no submounts) seen
    /// through the mapping of the user namespace `userns`.
    fn idmap_mount(&mut self, path: &Path, userns: RawFd) -> io::Result<OwnedFd>;
    /// Attaches the detached mount `tree` at `at` (the new root, before the
    /// overlay covers it): it then goes with the host's tree at
    /// `pivot_root`, in the unmount that pays one RCU grace period for all,
    /// rather than on its own when closed (0.1-3 ms each, measured here).
    fn stash(&mut self, tree: BorrowedFd<'_>, at: &Path) -> io::Result<()>;
    /// Read-only, nosuid, nodev bind of a host mount (exec stays allowed),
    /// idmapped with `idmap`.
    fn bind_ro(&mut self, src: &Path, dst: &Path, idmap: Option<RawFd>) -> io::Result<()>;
    /// A detached clone of the upper store seen through the mapping of the
    /// user namespace `userns`: what the world writes through it lands
    /// with the host's ids.
    fn idmap_store(&mut self, store: BorrowedFd<'_>, userns: RawFd) -> io::Result<OwnedFd>;
    /// A detached recursive clone of the mount tree at `path` (no symlink
    /// followed on the way), made read-only when `read_only`.
    fn grab(&mut self, path: &Path, read_only: bool) -> io::Result<OwnedFd>;
    /// Makes the overlay copy `path` (no symlink followed) up to its upper
    /// layer, changing nothing else.
    fn copy_up(&mut self, path: &Path) -> io::Result<()>;
    /// Binds the directory `dir` of `scratch` (no symlink followed) onto
    /// `target`: nosuid, nodev, exec allowed.
    fn bind_upper(&mut self, scratch: BorrowedFd<'_>, dir: &Path, target: &Path) -> io::Result<()>;
    /// Marks `path` of the upper store `scratch` (no symlink followed, a
    /// final one marked itself) as copied up for the mount plan
    /// (`diff::PLANNED_XATTR`).
    fn mark_planned(&mut self, scratch: BorrowedFd<'_>, path: &Path) -> io::Result<()>;
    fn mount(&mut self, target: &Path, fstype: &str, flags: u64, data: &str) -> io::Result<()>;
    /// A world without root's store: mounts a tmpfs of `size` bytes at
    /// `path`, makes the store's directories in it (`layers` host data
    /// mounts' slots); returns it open.
    fn make_store(&mut self, path: &Path, size: u64, layers: usize) -> io::Result<OwnedFd>;
    /// The uppers of the overlay `pieces` (host modes and times) in the
    /// store mounted at `path`.
    fn make_uppers(&mut self, path: &Path, pieces: &[crate::rootless::Piece]) -> io::Result<()>;
    /// Sends the store `store` to the parent on the socket `to`.
    fn send_store(&mut self, store: BorrowedFd<'_>, to: BorrowedFd<'_>) -> io::Result<()>;
    /// Opens the upper store at `path` (no symlink on the way).
    fn open_store(&mut self, path: &Path) -> io::Result<OwnedFd>;
    /// Makes `scratch/<index>` in the upper store `scratch` (empty, `mode`)
    /// and binds it at `target`: nosuid, nodev, exec allowed.
    fn bind_scratch(&mut self, scratch: BorrowedFd<'_>, index: u32, mode: u32, target: &Path) -> io::Result<()>;
    fn mkdir_all(&mut self, path: &Path, mode: u32) -> io::Result<()>;
    /// Makes one directory (its parent exists): exactly `mode` when given,
    /// else what the umask leaves (a mount point).
    fn mkdir(&mut self, path: &Path, mode: Option<u32>) -> io::Result<()>;
    /// Makes the mount at `path` and every mount below it read-only,
    /// nosuid and nodev.
    fn read_only_tree(&mut self, path: &Path) -> io::Result<()>;
    fn touch(&mut self, path: &Path) -> io::Result<()>;
    fn mknod(&mut self, path: &Path, major: u32, minor: u32) -> io::Result<()>;
    fn symlink(&mut self, target: &Path, path: &Path) -> io::Result<()>;
    fn bind(&mut self, src: &Path, dst: &Path) -> io::Result<()>;
    /// A recursive bind (`MS_REC`): `src` with the mounts below it.
    fn bind_tree(&mut self, src: &Path, dst: &Path) -> io::Result<()>;
    fn remount_ro(&mut self, target: &Path, nodev: bool) -> io::Result<()>;
    fn attach(&mut self, tree: OwnedFd, path: &Path) -> io::Result<()>;
    fn pivot_root(&mut self, root: &Path) -> io::Result<()>;
    fn sethostname(&mut self, name: &str) -> io::Result<()>;
    fn loopback_up(&mut self) -> io::Result<()>;
    fn set_rlimits(&mut self, nofile: u64) -> io::Result<()>;
    fn chdir_verified(&mut self, cwd: &Path) -> io::Result<()>;
    /// Opens a pseudo-terminal in the world's devpts (`ptmx`), sized
    /// `size`, sends its master over `console`; returns its slave.
    fn open_console(&mut self, ptmx: &Path, size: Option<libc::winsize>, console: RawFd) -> io::Result<OwnedFd>;
    /// Puts the world's own descriptors on 0, 1 and 2.
    /// (`None`: the world's own `/dev/null`); with `owner` (host uid and
    /// gid), they are made that user's first, so that the world can reopen
    /// them (`/dev/stderr`, `/proc/self/fd/1`).
    fn set_stdio(&mut self, fds: [Option<RawFd>; 3], owner: Option<(u32, u32)>) -> io::Result<()>;
    /// Enters the world's user namespace (`setns`): from now on this
    /// process's capabilities and ids are the namespace's.
    fn enter_userns(&mut self, fd: RawFd) -> io::Result<()>;
    fn setsid(&mut self) -> io::Result<()>;
    /// Drops every capability for good; with `user`, the world's ids
    /// become that user's on the way (`caps.rs`; in a user namespace the
    /// world's root is a user to become too).
    fn drop_caps(&mut self, last_cap: u32, user: Option<&crate::spec::WorldUser>) -> io::Result<()>;
    fn no_new_privs(&mut self) -> io::Result<()>;
    fn cloexec_fds(&mut self) -> io::Result<()>;
    /// Clears close-on-exec on one fd (the serve-mode control socket).
    fn keep_open(&mut self, fd: RawFd) -> io::Result<()>;
    fn unblock_signals(&mut self) -> io::Result<()>;
    fn load_seccomp(&mut self, prog: &Program) -> io::Result<()>;
    fn exec(&mut self, init: BorrowedFd<'_>, argv: &[CString], envp: &[CString]) -> io::Error;
}

/// Host path of world path `p` under the new root.
fn under(root: &Path, p: &Path) -> PathBuf {
    root.join(p.strip_prefix("/").unwrap_or(p))
}

/// The result of one step, named (and timed with CLOCHE_PROFILE).
fn at<T>(step: &'static str, what: &Path, r: io::Result<T>) -> Result<T, StepError> {
    crate::profile::mark(step);
    r.map_err(|source| StepError { step, what: what.display().to_string(), source })
}

/// Runs every step up to (not including) execve. Any error names its step.
pub fn setup(sys: &mut dyn Sys, plan: &ChildPlan<'_>) -> Result<(), StepError> {
    let none = Path::new("");
    let root = plan.root.as_path();
    // 0. With a user namespace: every mount point, device node, directory
    //    and overlay copy-up made from here on belongs to the world's root
    //    (its host ids), as the idmapped upper needs (the overlay acts with
    //    its mounter's fsuid); capabilities are kept.
    let idmap = plan.userns.as_ref().map(|u| u.fd);
    if let Some(u) = &plan.userns {
        at("act as the world's root (fsuid, fsgid)", none, sys.act_as_world_root(&u.ids))?;
    }
    // 1. Die with the parent. Without root: the caller is the world's 0.
    at("prctl(PR_SET_PDEATHSIG)", none, sys.set_pdeathsig())?;
    if let Some(r) = &plan.rootless {
        at("map the caller to the world's root (uid_map, gid_map)", none, sys.map_caller(&r.caller))?;
    }
    // The world's network namespace (`NetnsPlan`): this child's own, made
    // here, or the parent's, entered before sysfs (`Step::Sysfs`).
    if let NetnsPlan::Child { tell } = plan.netns {
        at("unshare(CLONE_NEWNET)", none, sys.unshare_netns())?;
        if let Some(fd) = tell {
            at("tell the parent (network namespace made)", none, sys.tell_netns_made(fd))?;
        }
        // (The parent's comes with `lo` up.)
        at("loopback up", none, sys.loopback_up())?;
    }
    // 2. Mounts (while the parent prepares the cgroup): nothing we mount may
    //    propagate to the host.
    at("mount --make-rprivate /", none, sys.make_rprivate())?;
    let (opened, mapped);
    let mut scratch = match &plan.scratch {
        Store::Mount(fd) => borrow(fd),
        Store::Path(p) => {
            opened = at("open the upper store", p, sys.open_store(p))?;
            borrow(&opened)
        }
        Store::Tmpfs { path, size, layers, send } => {
            opened = at("make the upper store (tmpfs)", path, sys.make_store(path, *size, *layers))?;
            at("hand the upper store to the parent", path, sys.send_store(borrow(&opened), borrow(send)))?;
            borrow(&opened)
        }
    };
    // With a user namespace, the overlays' layers through the world's
    // mapping: the upper store (the uppers, the homes and the scratch
    // directories hold the host's ids), the root filesystem and each
    // writable host data mount (the host's owners). Each is an idmapped
    // clone stashed under the new root before the overlay covers it.
    let mut lowers: Vec<OwnedFd> = Vec::new();
    if let Some(ns) = idmap {
        mapped = at("idmap the upper store", none, sys.idmap_store(scratch, ns))?;
        at("stash (the idmapped store)", root, sys.stash(borrow(&mapped), root))?;
        scratch = borrow(&mapped);
        let writable = plan.layers.iter().filter(|m| !m.read_only).map(|m| m.path.as_path());
        for p in std::iter::once(Path::new("/")).chain(writable) {
            let tree = at("idmap (host mount)", p, sys.idmap_mount(p, ns))?;
            at("stash (an idmapped host mount)", p, sys.stash(borrow(&tree), root))?;
            lowers.push(tree);
        }
    }
    let mut lowers = lowers.iter().map(|t| Lower::Tree(borrow(t)));
    match &plan.rootless {
        // The root's pieces, listed by the parent meanwhile.
        Some(_) => frame(sys, root, scratch, &plan.scratch)?,
        None => {
            let base = lowers.next().unwrap_or(Lower::Host(Path::new("/")));
            at("mount overlay", root, sys.mount_overlay(scratch, "", base, root))?;
        }
    }
    // Host data mounts below / (parents first): an overlay each, or a
    // read-only bind when the host has them read-only.
    for m in &plan.layers {
        let target = under(root, &m.path);
        if m.read_only {
            at("bind read-only (host mount)", &m.path, sys.bind_ro(&m.path, &target, idmap))?;
        } else {
            let dir = format!("layers/{}/", m.slot);
            let lower = lowers.next().unwrap_or(Lower::Host(&m.path));
            at("mount overlay (host mount)", &m.path, sys.mount_overlay(scratch, &dir, lower, &target))?;
        }
    }
    // /proc and /dev need no host facts: mounted while the parent builds
    // the rest of the plan (exposures, scratch, masks) and sends it.
    apply(sys, plan, scratch, &crate::plan::system_steps())?;
    let steps = at("receive the mount plan", none, sys.receive_plan())?;
    apply(sys, plan, scratch, &steps)?;
    if plan.rootless.is_some() {
        // The frame's own entries are not in any upper: nothing may be
        // made there (a write would be lost to the fs_diff).
        at("frame read-only", root, sys.remount_ro(root, true))?;
    }
    // 3. Wait for the parent's go (EOF: it died), enter the world's cgroup
    //    (v1: write "0" to tasks; v2: born there), then a cgroup namespace
    //    rooted at it. No code of the world has run yet.
    at("await parent", none, sys.await_parent())?;
    at("join cgroup", none, sys.join_cgroups())?;
    at("unshare(CLONE_NEWCGROUP)", none, sys.unshare_cgroupns())?;
    // 4. Switch root; the host's tree is detached and unreachable.
    at("pivot_root", root, sys.pivot_root(root))?;
    // 5. Identity, network, limits, working directory.
    at("sethostname", none, sys.sethostname(&plan.hostname))?;
    at("setrlimit", none, sys.set_rlimits(plan.nofile))?;
    at("chdir", &plan.cwd, sys.chdir_verified(&plan.cwd))?;
    // 6. Privileges, last: the world's own stdio (no host file, terminal or
    //    device reaches it through a descriptor), no controlling tty, no
    //    capabilities, no way back.
    use std::os::fd::AsRawFd;
    let (stdio, _slave) = match &plan.stdio {
        WorldStdio::Fds(f) => (f.each_ref().map(|o| o.as_ref().map(|fd| fd.as_raw_fd())), None),
        WorldStdio::Pty { console, size } => {
            let ptmx = Path::new("/dev/pts/ptmx");
            let slave = at("pseudo-terminal", ptmx, sys.open_console(ptmx, *size, console.as_raw_fd()))?;
            ([Some(slave.as_raw_fd()); 3], Some(slave))
        }
    };
    let owner = plan.userns.as_ref().map(|u| u.ids.host_owner(plan.user.as_ref()));
    at("stdio (the world's own)", none, sys.set_stdio(stdio, owner))?;
    at("setsid", none, sys.setsid())?;
    // The world's user namespace: from here on the capabilities (dropped
    // next) and the ids (its root's, or the user's) are the namespace's.
    let root_user = crate::spec::WorldUser::default();
    let user = match (&plan.userns, &plan.user) {
        (Some(u), user) => {
            at("setns (user namespace)", none, sys.enter_userns(u.fd))?;
            Some(user.as_ref().unwrap_or(&root_user))
        }
        (None, user) => user.as_ref(),
    };
    let step = if user.is_some() { "drop capabilities (and become the world's user)" } else { "drop capabilities" };
    at(step, none, sys.drop_caps(plan.last_cap, user))?;
    // Changing ids cleared the parent-death signal.
    at("prctl(PR_SET_PDEATHSIG) again", none, sys.rearm_pdeathsig())?;
    at("prctl(PR_SET_NO_NEW_PRIVS)", none, sys.no_new_privs())?;
    at("close_range(3.., CLOEXEC)", none, sys.cloexec_fds())?;
    if let Some(fd) = plan.keep_fd {
        // Only the init's control socket crosses execve; the init marks it
        // close-on-exec at once, so no command of the world inherits it.
        at("keep the control socket", none, sys.keep_open(fd))?;
    }
    at("signals (default dispositions, unblocked)", none, sys.unblock_signals())?;
    // 7. seccomp last; the next call is execve (which the profile allows).
    at("seccomp", none, sys.load_seccomp(plan.seccomp))?;
    Ok(())
}

/// A world without root: the root put together under `root` (a tmpfs
/// frame; an overlay or a read-only bind per host directory with no mount
/// below it; links and lone files as the host has them).
fn frame(sys: &mut dyn Sys, root: &Path, scratch: BorrowedFd<'_>, store: &Store) -> Result<(), StepError> {
    use crate::rootless::Piece;
    let flags = crate::plan::MS_NOSUID | crate::plan::MS_NODEV;
    at("mount the root's frame (tmpfs)", root, sys.mount(root, "tmpfs", flags, "mode=755,size=1m"))?;
    // The pieces come in lists as the parent finds them (those of each
    // entry of `/`), an empty list last. Each list: its overlays' uppers in
    // a tmpfs store (on disk, the parent made them before it sent the
    // list); then, parents first (walk order), one mkdir each (a mount
    // point's own mode is hidden by what is mounted on it), and the binds.
    let mut overlays = Vec::new();
    loop {
        let none = Path::new("");
        let pieces = at("receive the root's pieces", none, sys.receive_pieces())?;
        if pieces.is_empty() {
            break;
        }
        if let Store::Tmpfs { path, .. } = store {
            at("make the pieces' upper directories", path, sys.make_uppers(path, &pieces))?;
        }
        for p in pieces {
            match p {
                Piece::Dir { path, mode } => at("frame directory", &path, sys.mkdir(&under(root, &path), Some(mode)))?,
                Piece::Symlink { path, target } => {
                    at("frame symlink", &path, sys.symlink(&target, &under(root, &path)))?
                }
                Piece::File { path } => {
                    let target = under(root, &path);
                    at("frame file", &path, sys.touch(&target))?;
                    at("bind (a file of the root)", &path, sys.bind(&path, &target))?;
                }
                Piece::ReadOnly { path } => {
                    let target = under(root, &path);
                    at("frame directory", &path, sys.mkdir(&target, None))?;
                    at("bind (a directory of the root)", &path, sys.bind(&path, &target))?;
                }
                Piece::ReadOnlyTree { path } => {
                    let target = under(root, &path);
                    at("frame directory", &path, sys.mkdir(&target, None))?;
                    at("bind (a directory of the root, with its mounts)", &path, sys.bind_tree(&path, &target))?;
                }
                Piece::Overlay { path, index } => {
                    at("frame directory", &path, sys.mkdir(&under(root, &path), None))?;
                    overlays.push((path, index));
                }
            }
        }
    }
    // The frame and every bind in it read-only at once (one call), before
    // any overlay is mounted in it.
    at("frame and its binds read-only", root, sys.read_only_tree(root))?;
    for (path, index) in overlays {
        at("mount overlay", &path, sys.mount_piece(scratch, &path, index, &under(root, &path)))?;
    }
    Ok(())
}

fn borrow(fd: &OwnedFd) -> BorrowedFd<'_> {
    use std::os::fd::AsFd;
    fd.as_fd()
}

/// Entry point of the cloned child: setup, then exec the init. Never returns.
/// On failure it writes "step: error" to `report` and exits 125.
pub fn main(sys: &mut dyn Sys, plan: ChildPlan<'_>, report: &OwnedFd) -> ! {
    crate::profile::mark("child: started");
    let plan = &plan;
    let err = match setup(sys, plan) {
        Ok(()) => {
            crate::profile::dump("child");
            let e = sys.exec(borrow(&plan.init), &plan.argv, &plan.envp);
            StepError { step: "execve(cloche-init)", what: String::new(), source: e }
        }
        Err(e) => e,
    };
    let msg = err.to_string();
    let _ = nix::unistd::write(report, msg.as_bytes());
    crate::raw::exit_now(125)
}

pub use crate::sys::RealSys;

#[path = "child_apply.rs"]
mod apply;
use apply::apply;

#[cfg(test)]
#[path = "child_tests.rs"]
mod tests;
