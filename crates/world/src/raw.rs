//! Thin, commented wrappers over the syscalls `nix` does not cover: the new
//! mount API, clone3, pidfds, close_range, execveat, pivot_root.
//!
//! Each function is one syscall; every `unsafe` block says why it is sound.

use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

fn cvt(ret: libc::c_long) -> io::Result<libc::c_long> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

fn cstr(s: &str) -> io::Result<CString> {
    CString::new(s).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

/// Takes ownership of a new fd returned by a syscall.
fn owned(fd: libc::c_long) -> OwnedFd {
    // SAFETY: the kernel just returned this descriptor to us; nobody else owns it.
    unsafe { OwnedFd::from_raw_fd(fd as RawFd) }
}

/// `fsopen(2)`: a filesystem context for `fstype` (close-on-exec).
pub fn fsopen(fstype: &str) -> io::Result<OwnedFd> {
    let name = cstr(fstype)?;
    // SAFETY: valid NUL-terminated string; flags are plain integers.
    let fd = cvt(unsafe { libc::syscall(libc::SYS_fsopen, name.as_ptr(), libc::FSOPEN_CLOEXEC) })?;
    Ok(owned(fd))
}

/// `fsconfig(FSCONFIG_SET_STRING)`: one `key=value` option.
pub fn fsconfig_str(fs: BorrowedFd<'_>, key: &str, value: &str) -> io::Result<()> {
    let (k, v) = (cstr(key)?, cstr(value)?);
    // SAFETY: valid fd and NUL-terminated strings; aux must be 0 for SET_STRING.
    cvt(unsafe {
        libc::syscall(libc::SYS_fsconfig, fs.as_raw_fd(), libc::FSCONFIG_SET_STRING, k.as_ptr(), v.as_ptr(), 0)
    })?;
    Ok(())
}

/// `fsconfig(FSCONFIG_SET_FLAG)`: one option without a value.
pub fn fsconfig_flag(fs: BorrowedFd<'_>, key: &str) -> io::Result<()> {
    let k = cstr(key)?;
    // SAFETY: valid fd and NUL-terminated key; value NULL and aux 0 for SET_FLAG.
    cvt(unsafe {
        libc::syscall(
            libc::SYS_fsconfig,
            fs.as_raw_fd(),
            libc::FSCONFIG_SET_FLAG,
            k.as_ptr(),
            std::ptr::null::<libc::c_void>(),
            0,
        )
    })?;
    Ok(())
}

/// `fsconfig(FSCONFIG_CMD_CREATE)`: creates the superblock.
pub fn fsconfig_create(fs: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: valid fd; key and value must be NULL for CMD_CREATE.
    cvt(unsafe {
        libc::syscall(
            libc::SYS_fsconfig,
            fs.as_raw_fd(),
            libc::FSCONFIG_CMD_CREATE,
            std::ptr::null::<libc::c_char>(),
            std::ptr::null::<libc::c_void>(),
            0,
        )
    })?;
    Ok(())
}

/// `fsmount(2)`: a detached mount of the created superblock, with `attrs`
/// (MOUNT_ATTR_*). Closing the fd unmounts it unless it was attached.
pub fn fsmount(fs: BorrowedFd<'_>, attrs: u64) -> io::Result<OwnedFd> {
    // SAFETY: valid fd; flags and attributes are plain integers.
    let fd = cvt(unsafe { libc::syscall(libc::SYS_fsmount, fs.as_raw_fd(), libc::FSMOUNT_CLOEXEC, attrs) })?;
    Ok(owned(fd))
}

/// `move_mount(2)` of a detached mount (`from`) onto the path `to`.
pub fn move_mount_to(from: BorrowedFd<'_>, to: &CStr) -> io::Result<()> {
    // SAFETY: valid fd, empty from-path with F_EMPTY_PATH, NUL-terminated target.
    cvt(unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            from.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_FDCWD,
            to.as_ptr(),
            libc::MOVE_MOUNT_F_EMPTY_PATH,
        )
    })?;
    Ok(())
}

/// `open_tree(2)`: a detached copy of the mount at `path` (recursive when
/// `recursive`), close-on-exec.
pub fn open_tree_clone(dirfd: RawFd, path: &CStr, recursive: bool) -> io::Result<OwnedFd> {
    let mut flags = libc::OPEN_TREE_CLONE | libc::OPEN_TREE_CLOEXEC;
    if recursive {
        flags |= libc::AT_RECURSIVE as libc::c_uint;
    }
    // SAFETY: valid dirfd (or AT_FDCWD) and NUL-terminated path.
    let fd = cvt(unsafe { libc::syscall(libc::SYS_open_tree, dirfd, path.as_ptr(), flags) })?;
    Ok(owned(fd))
}

/// `open_tree(2)` of the object open at `fd` (`AT_EMPTY_PATH`): a detached
/// recursive copy of the mount tree there, close-on-exec.
pub fn open_tree_clone_fd(fd: BorrowedFd<'_>) -> io::Result<OwnedFd> {
    let flags =
        libc::OPEN_TREE_CLONE | libc::OPEN_TREE_CLOEXEC | (libc::AT_RECURSIVE | libc::AT_EMPTY_PATH) as libc::c_uint;
    // SAFETY: valid fd, empty NUL-terminated path with AT_EMPTY_PATH.
    let fd = cvt(unsafe { libc::syscall(libc::SYS_open_tree, fd.as_raw_fd(), c"".as_ptr(), flags) })?;
    Ok(owned(fd))
}

/// `open_tree(2)` of the object open at `fd` (`AT_EMPTY_PATH`): a detached
/// copy of that one mount (no submounts), close-on-exec.
pub fn open_tree_clone_one(fd: BorrowedFd<'_>) -> io::Result<OwnedFd> {
    let flags = libc::OPEN_TREE_CLONE | libc::OPEN_TREE_CLOEXEC | libc::AT_EMPTY_PATH as libc::c_uint;
    // SAFETY: valid fd, empty NUL-terminated path with AT_EMPTY_PATH.
    let fd = cvt(unsafe { libc::syscall(libc::SYS_open_tree, fd.as_raw_fd(), c"".as_ptr(), flags) })?;
    Ok(owned(fd))
}

/// `mount_setattr(MOUNT_ATTR_IDMAP)` of the detached mount open at `fd`
/// (never attached yet): its files are seen through the id mapping of the
/// user namespace `userns`, plus `set` (other MOUNT_ATTR_* bits).
pub fn mount_setattr_idmap(fd: BorrowedFd<'_>, userns: BorrowedFd<'_>, set: u64) -> io::Result<()> {
    let attr = libc::mount_attr {
        attr_set: libc::MOUNT_ATTR_IDMAP | set,
        attr_clr: 0,
        propagation: 0,
        userns_fd: userns.as_raw_fd() as u64,
    };
    // SAFETY: valid fd, empty NUL-terminated path with AT_EMPTY_PATH, a
    // pointer to a mount_attr we own and its size.
    cvt(unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            fd.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH as libc::c_uint,
            &attr as *const libc::mount_attr,
            std::mem::size_of::<libc::mount_attr>(),
        )
    })?;
    Ok(())
}

/// `mount_setattr(2)` of the mount open at `fd` alone (not recursive):
/// sets the `MOUNT_ATTR_*` bits `set`, clears `clear`.
pub fn mount_setattr(fd: BorrowedFd<'_>, set: u64, clear: u64) -> io::Result<()> {
    setattr(fd, set, clear, libc::AT_EMPTY_PATH as libc::c_uint)
}

/// `mount_setattr(2)` of the mount tree open at `tree`, every mount in it
/// (`AT_RECURSIVE`): sets `set`, clears `clear`.
pub fn mount_setattr_tree(tree: BorrowedFd<'_>, set: u64, clear: u64) -> io::Result<()> {
    setattr(tree, set, clear, (libc::AT_EMPTY_PATH | libc::AT_RECURSIVE) as libc::c_uint)
}

fn setattr(fd: BorrowedFd<'_>, set: u64, clear: u64, flags: libc::c_uint) -> io::Result<()> {
    let attr = libc::mount_attr { attr_set: set, attr_clr: clear, propagation: 0, userns_fd: 0 };
    // SAFETY: valid fd, empty NUL-terminated path with AT_EMPTY_PATH, a
    // pointer to a mount_attr we own and its size.
    cvt(unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            fd.as_raw_fd(),
            c"".as_ptr(),
            flags,
            &attr as *const libc::mount_attr,
            std::mem::size_of::<libc::mount_attr>(),
        )
    })?;
    Ok(())
}

/// `move_mount(2)` of a detached mount (`from`) onto the object open at `to`.
pub fn move_mount_onto_fd(from: BorrowedFd<'_>, to: BorrowedFd<'_>) -> io::Result<()> {
    let flags = libc::MOVE_MOUNT_F_EMPTY_PATH | libc::MOVE_MOUNT_T_EMPTY_PATH;
    // SAFETY: two valid fds, empty paths with the matching *_EMPTY_PATH flags.
    cvt(unsafe {
        libc::syscall(libc::SYS_move_mount, from.as_raw_fd(), c"".as_ptr(), to.as_raw_fd(), c"".as_ptr(), flags)
    })?;
    Ok(())
}

/// `pivot_root(2)`.
pub fn pivot_root(new_root: &CStr, put_old: &CStr) -> io::Result<()> {
    // SAFETY: two NUL-terminated paths.
    cvt(unsafe { libc::syscall(libc::SYS_pivot_root, new_root.as_ptr(), put_old.as_ptr()) })?;
    Ok(())
}

/// `close_range(first, ~0, CLOSE_RANGE_CLOEXEC)`: marks every fd from `first`
/// up close-on-exec, so the command starts with exactly the fds below it.
pub fn cloexec_from(first: u32) -> io::Result<()> {
    // SAFETY: integer arguments only.
    cvt(unsafe { libc::syscall(libc::SYS_close_range, first, u32::MAX, libc::CLOSE_RANGE_CLOEXEC) })?;
    Ok(())
}

/// `execveat(fd, "", argv, envp, AT_EMPTY_PATH)`: executes the file open at
/// `fd`. Returns only on failure.
pub fn execveat_fd(fd: BorrowedFd<'_>, argv: &[CString], envp: &[CString]) -> io::Error {
    let mut a: Vec<*const libc::c_char> = argv.iter().map(|s| s.as_ptr()).collect();
    a.push(std::ptr::null());
    let mut e: Vec<*const libc::c_char> = envp.iter().map(|s| s.as_ptr()).collect();
    e.push(std::ptr::null());
    // SAFETY: NULL-terminated arrays of valid C strings that outlive the call.
    unsafe {
        libc::syscall(libc::SYS_execveat, fd.as_raw_fd(), c"".as_ptr(), a.as_ptr(), e.as_ptr(), libc::AT_EMPTY_PATH)
    };
    io::Error::last_os_error()
}

/// `pidfd_send_signal(2)`.
pub fn pidfd_kill(pidfd: BorrowedFd<'_>, sig: libc::c_int) -> io::Result<()> {
    // SAFETY: valid pidfd; no siginfo.
    cvt(unsafe {
        libc::syscall(libc::SYS_pidfd_send_signal, pidfd.as_raw_fd(), sig, std::ptr::null::<libc::siginfo_t>(), 0)
    })?;
    Ok(())
}

/// Arguments of clone3 (the kernel's `struct clone_args`, version 2).
#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

/// What `clone3` returned on each side.
pub enum Forked {
    Parent { pid: libc::pid_t, pidfd: OwnedFd },
    Child,
}

/// `clone3(2)` with fork semantics (no CLONE_VM): `flags` are CLONE_NEW*
/// namespace flags; a pidfd is always requested; `cgroup` places the child in
/// that (v2) cgroup at birth.
///
/// # Safety
/// The caller must be single-threaded: the child is a copy of this thread
/// only, and any lock held by another thread would stay locked forever. The
/// child must end by `execve` or `_exit`, never by returning into code that
/// owns resources of the parent.
pub unsafe fn clone3(flags: u64, cgroup: Option<BorrowedFd<'_>>) -> io::Result<Forked> {
    let mut pidfd: RawFd = -1;
    let mut args = CloneArgs {
        flags: flags | libc::CLONE_PIDFD as u64,
        pidfd: &mut pidfd as *mut RawFd as u64,
        exit_signal: libc::SIGCHLD as u64,
        ..Default::default()
    };
    if let Some(cg) = cgroup {
        args.flags |= 0x200000000; // CLONE_INTO_CGROUP
        args.cgroup = cg.as_raw_fd() as u64;
    }
    // SAFETY: args is a valid clone_args of the size passed; pidfd points to a
    // live RawFd. Fork semantics: the child gets a copy of our memory.
    let ret =
        cvt(unsafe { libc::syscall(libc::SYS_clone3, &mut args as *mut CloneArgs, std::mem::size_of::<CloneArgs>()) })?;
    if ret == 0 {
        Ok(Forked::Child)
    } else {
        Ok(Forked::Parent { pid: ret as libc::pid_t, pidfd: owned(pidfd as libc::c_long) })
    }
}

/// `_exit(2)`: leaves a forked child without running destructors or atexit
/// handlers that belong to the parent's state.
pub fn exit_now(code: i32) -> ! {
    // SAFETY: always sound; it does not return.
    unsafe { libc::_exit(code) }
}

/// `splice(2)` from `src` to `dst`, at most `len` bytes, without blocking on
/// either pipe (`SPLICE_F_NONBLOCK`). `off_in`, when given, is the offset to
/// read a regular file at (its file position is left alone) and is advanced.
pub fn splice(src: RawFd, off_in: Option<&mut i64>, dst: RawFd, len: usize) -> io::Result<usize> {
    let off = off_in.map_or(std::ptr::null_mut(), |o| o as *mut i64);
    let flags = libc::SPLICE_F_NONBLOCK | libc::SPLICE_F_MOVE;
    // SAFETY: `off` is null or points to a live i64 for the call's duration.
    let n = unsafe { libc::splice(src, off, dst, std::ptr::null_mut(), len, flags) };
    cvt(n as libc::c_long).map(|n| n as usize)
}

/// Whether descriptors `a` and `b` of this process are the same open file
/// description (`kcmp(KCMP_FILE)`); `None` when the kernel cannot say.
pub fn same_open_file(a: RawFd, b: RawFd) -> Option<bool> {
    const KCMP_FILE: libc::c_long = 0;
    // SAFETY: getpid has no preconditions.
    let me = unsafe { libc::getpid() } as libc::c_long;
    // SAFETY: integer arguments only; both fds belong to this process.
    match cvt(unsafe { libc::syscall(libc::SYS_kcmp, me, me, KCMP_FILE, a as libc::c_long, b as libc::c_long) }) {
        Ok(r) => Some(r == 0),
        Err(_) => None,
    }
}

/// `ioctl(FIONREAD)`: bytes waiting in a pipe (or socket).
pub fn unread(fd: RawFd) -> io::Result<usize> {
    let mut n: libc::c_int = 0;
    // SAFETY: FIONREAD writes one int to the pointer given.
    cvt(unsafe { libc::ioctl(fd, libc::FIONREAD as _, &mut n as *mut libc::c_int) } as libc::c_long)?;
    Ok(n.max(0) as usize)
}

/// A stack for a child cloned with `CLONE_VM` (the user namespace's helper,
/// the teardown child): an anonymous private mapping, whose pages cost
/// nothing until the child touches them. (A zeroed `Vec` of the same size
/// had its allocator clear every page, in the parent, on the run's path:
/// 16 fresh pages for the teardown child's 64 KiB, about 0.05 ms here.)
pub struct ChildStack {
    base: *mut libc::c_void,
    len: usize,
}

impl ChildStack {
    /// Maps `len` bytes (a multiple of the page size).
    pub fn new(len: usize) -> io::Result<ChildStack> {
        let prot = libc::PROT_READ | libc::PROT_WRITE;
        let flags = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_STACK;
        // SAFETY: a new anonymous mapping chosen by the kernel; nothing
        // else refers to it.
        let base = unsafe { libc::mmap(std::ptr::null_mut(), len, prot, flags, -1, 0) };
        if base == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(ChildStack { base, len })
    }

    /// Its top, 16-byte aligned: where a child's stack pointer starts.
    pub fn top(&self) -> *mut libc::c_void {
        ((self.base as usize + self.len) & !15) as *mut libc::c_void
    }

    /// Never unmapped: for a child that may outlive every owner here (it
    /// goes when this process's memory does).
    pub fn leak(self) {
        std::mem::forget(self);
    }
}

impl Drop for ChildStack {
    fn drop(&mut self) {
        // SAFETY: our own mapping, whole; its child was reaped by the owner
        // (`userns::Helper`), so nothing runs on it any more.
        unsafe { libc::munmap(self.base, self.len) };
    }
}

/// A child that shares this process's memory and exits at once: started
/// just before a world's clone, it wakes a second CPU, where the world's
/// child then starts without waiting for that CPU to wake. On this
/// machine's virtual CPUs an idle CPU takes about 0.2 ms to run a task it
/// is given (the hypervisor has to schedule it again); the user
/// namespace's helper, started at the same place, had been doing this by
/// the way (docs/architecture.md, *Start time*, tenth look). Reaped on drop.
pub struct CpuNudge {
    pid: libc::pid_t,
    /// Its stack, unmapped once it is reaped.
    _stack: ChildStack,
}

/// The nudge's whole life: exit(2) (a raw call: no errno, no C library).
extern "C" fn nudge_main(_: *mut libc::c_void) -> libc::c_int {
    // SAFETY: exit(2) of this child alone; nothing of ours is touched.
    unsafe { libc::syscall(libc::SYS_exit, 0) };
    0
}

impl CpuNudge {
    pub fn start() -> io::Result<CpuNudge> {
        let stack = ChildStack::new(4096)?;
        // SAFETY: the child makes one raw system call on its own stack,
        // which lives until it is reaped (`Drop`).
        let pid = unsafe { libc::clone(nudge_main, stack.top(), libc::CLONE_VM | libc::SIGCHLD, std::ptr::null_mut()) };
        if pid < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(CpuNudge { pid, _stack: stack })
    }
}

impl Drop for CpuNudge {
    fn drop(&mut self) {
        let mut status = 0;
        // SAFETY: waits for our own child (long gone by now); then its stack
        // goes.
        while unsafe { libc::waitpid(self.pid, &mut status, 0) } < 0
            && io::Error::last_os_error().raw_os_error() == Some(libc::EINTR)
        {}
    }
}
