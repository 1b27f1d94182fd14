//! The raw system calls the probe attempts, one small function each.
//!
//! Every attempt is built to be harmless even if the kernel lets it through
//! (bad magic numbers, scratch directories that are no mount points, the
//! current time for clocks), and the
//! probe runs each one in a forked child, so a call that does succeed (a new
//! user namespace, a new keyring) cannot colour the next one.

use std::ffi::CStr;
use std::io;

/// The raw result of one system call: its return value and, when it failed, errno.
#[derive(Debug, Clone, Copy)]
pub struct Ret {
    pub ret: i64,
    pub errno: i32,
}

/// Reads errno right after a call; call it before anything else can clobber errno.
fn capture(ret: i64) -> Ret {
    let errno = if ret < 0 { io::Error::last_os_error().raw_os_error().unwrap_or(0) } else { 0 };
    Ret { ret, errno }
}

/// Closes a file descriptor that a successful attempt returned.
fn close_if_fd(r: Ret) -> Ret {
    if r.ret >= 0 {
        // SAFETY: the descriptor was just returned to us by the kernel and nothing else owns it.
        unsafe { libc::close(r.ret as libc::c_int) };
    }
    r
}

/// Waits for a child created by a successful clone attempt.
fn reap(pid: libc::pid_t) {
    let mut status = 0;
    // SAFETY: plain waitpid on our own child, with a valid pointer for the status.
    unsafe { libc::waitpid(pid, &mut status, 0) };
}

/// Opens a path read-only and returns the raw fd (or -1).
fn open_raw(path: &CStr, flags: libc::c_int) -> libc::c_int {
    // SAFETY: `path` is a valid NUL-terminated string.
    unsafe { libc::open(path.as_ptr(), flags | libc::O_CLOEXEC) }
}

// Constants that the libc crate does not carry for this target.
const OPEN_TREE_CLONE: libc::c_ulong = 1;
const MOUNT_ATTR_RDONLY: u64 = 1;
const UFFD_USER_MODE_ONLY: libc::c_int = 1;
const KEY_SPEC_PROCESS_KEYRING: libc::c_long = -2;
const KEYCTL_JOIN_SESSION_KEYRING: libc::c_long = 1;

/// getpid(2): the control, it must always work.
pub fn getpid() -> Ret {
    // SAFETY: getpid has no arguments and cannot fail.
    capture(unsafe { libc::getpid() } as i64)
}

/// A fresh empty directory of our own (not a mount point), removed by `Drop`.
/// The mount-family attempts aim at it, so that even a call the kernel lets
/// through changes nothing that matters (and inside a world, only the world).
struct ScratchDir(std::ffi::CString);

impl ScratchDir {
    fn new(what: &str) -> ScratchDir {
        let path = format!("/tmp/.cloche-probe-{}-{what}", std::process::id());
        let _ = std::fs::create_dir(&path);
        ScratchDir(std::ffi::CString::new(path).expect("no NUL in the path"))
    }
    fn ptr(&self) -> *const libc::c_char {
        self.0.as_ptr()
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        // SAFETY: valid NUL-terminated string.
        unsafe { libc::rmdir(self.0.as_ptr()) };
    }
}

/// mount(2): a tmpfs on a scratch directory (unmounted again if it worked).
pub fn mount() -> Ret {
    let dir = ScratchDir::new("mount");
    // SAFETY: valid NUL-terminated strings, NULL data.
    let r = capture(unsafe { libc::mount(c"none".as_ptr(), dir.ptr(), c"tmpfs".as_ptr(), 0, std::ptr::null()) } as i64);
    if r.ret == 0 {
        // SAFETY: valid NUL-terminated string.
        unsafe { libc::umount2(dir.ptr(), libc::MNT_DETACH) };
    }
    r
}

/// umount2(2) of a scratch directory (EINVAL when allowed: it is no mount point).
pub fn umount2() -> Ret {
    let dir = ScratchDir::new("umount");
    // SAFETY: valid NUL-terminated string.
    capture(unsafe { libc::umount2(dir.ptr(), libc::MNT_DETACH) } as i64)
}

/// unshare(2) with CLONE_NEWUSER: allowed to unprivileged users unless filtered.
pub fn unshare_user() -> Ret {
    // SAFETY: plain syscall with a flag word.
    capture(unsafe { libc::unshare(libc::CLONE_NEWUSER) } as i64)
}

/// unshare(2) with CLONE_NEWNS.
pub fn unshare_mnt() -> Ret {
    // SAFETY: plain syscall with a flag word.
    capture(unsafe { libc::unshare(libc::CLONE_NEWNS) } as i64)
}

/// clone(2) with CLONE_NEWUSER and a NULL stack (fork-like); the child leaves at once.
pub fn clone_user() -> Ret {
    let flags = (libc::CLONE_NEWUSER | libc::SIGCHLD) as libc::c_ulong;
    // SAFETY: with a NULL stack the child runs on a copy of our stack, like fork;
    // it calls only _exit. The probe is single-threaded.
    let ret = unsafe { libc::syscall(libc::SYS_clone, flags, 0usize, 0usize, 0usize, 0usize) };
    if ret == 0 {
        // SAFETY: leaving the child without running any destructor.
        unsafe { libc::_exit(0) };
    }
    let r = capture(ret);
    if ret > 0 {
        reap(ret as libc::pid_t);
    }
    r
}

/// clone3(2) with CLONE_NEWUSER (expected: ENOSYS, so that libc falls back to clone).
pub fn clone3_user() -> Ret {
    // struct clone_args, version 2 (11 u64): flags, pidfd, child_tid, parent_tid,
    // exit_signal, stack, stack_size, tls, set_tid, set_tid_size, cgroup.
    let mut args = [0u64; 11];
    args[0] = libc::CLONE_NEWUSER as u64;
    args[4] = libc::SIGCHLD as u64;
    // SAFETY: `args` is a valid clone_args of the size we pass; stack 0 means the child
    // runs on a copy of ours (fork-like) and it calls only _exit.
    let ret = unsafe { libc::syscall(libc::SYS_clone3, args.as_mut_ptr(), std::mem::size_of_val(&args)) };
    if ret == 0 {
        // SAFETY: leaving the child without running any destructor.
        unsafe { libc::_exit(0) };
    }
    let r = capture(ret);
    if ret > 0 {
        reap(ret as libc::pid_t);
    }
    r
}

/// fsopen(2) of a tmpfs context.
pub fn fsopen() -> Ret {
    // SAFETY: valid NUL-terminated string, no flags.
    close_if_fd(capture(unsafe { libc::syscall(libc::SYS_fsopen, c"tmpfs".as_ptr(), 0) }))
}

/// open_tree(2) with OPEN_TREE_CLONE (a detached copy of a mount).
pub fn open_tree() -> Ret {
    // SAFETY: valid NUL-terminated string and flags.
    close_if_fd(capture(unsafe {
        libc::syscall(
            libc::SYS_open_tree,
            libc::AT_FDCWD,
            c"/tmp".as_ptr(),
            OPEN_TREE_CLONE | libc::O_CLOEXEC as libc::c_ulong,
        )
    }))
}

/// move_mount(2) of a scratch directory onto itself (EINVAL when allowed).
pub fn move_mount() -> Ret {
    let dir = ScratchDir::new("move");
    // SAFETY: valid NUL-terminated strings.
    capture(unsafe { libc::syscall(libc::SYS_move_mount, libc::AT_FDCWD, dir.ptr(), libc::AT_FDCWD, dir.ptr(), 0) })
}

/// mount_setattr(2): read-only on a scratch directory (EINVAL when allowed: no mount root).
pub fn mount_setattr() -> Ret {
    let dir = ScratchDir::new("setattr");
    // struct mount_attr: attr_set, attr_clr, propagation, userns_fd.
    let attr: [u64; 4] = [MOUNT_ATTR_RDONLY, 0, 0, 0];
    // SAFETY: valid string, and `attr` is a mount_attr of the size we pass.
    capture(unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            libc::AT_FDCWD,
            dir.ptr(),
            0,
            attr.as_ptr(),
            std::mem::size_of_val(&attr),
        )
    })
}

/// keyctl(2): join a new anonymous session keyring.
pub fn keyctl() -> Ret {
    // SAFETY: KEYCTL_JOIN_SESSION_KEYRING with a NULL name.
    capture(unsafe { libc::syscall(libc::SYS_keyctl, KEYCTL_JOIN_SESSION_KEYRING, std::ptr::null::<libc::c_char>()) })
}

/// add_key(2): a "user" key in the process keyring.
pub fn add_key() -> Ret {
    let payload = b"x";
    // SAFETY: valid strings and a payload pointer with its length.
    capture(unsafe {
        libc::syscall(
            libc::SYS_add_key,
            c"user".as_ptr(),
            c"cloche-probe".as_ptr(),
            payload.as_ptr(),
            payload.len(),
            KEY_SPEC_PROCESS_KEYRING,
        )
    })
}

/// request_key(2) of a key that does not exist.
pub fn request_key() -> Ret {
    // SAFETY: valid strings and a NULL callout.
    capture(unsafe {
        libc::syscall(
            libc::SYS_request_key,
            c"user".as_ptr(),
            c"cloche-probe-absent".as_ptr(),
            std::ptr::null::<libc::c_char>(),
            KEY_SPEC_PROCESS_KEYRING,
        )
    })
}

/// bpf(2): BPF_MAP_CREATE of a one-entry array.
pub fn bpf() -> Ret {
    // union bpf_attr, map-create part: map_type, key_size, value_size, max_entries; rest zero.
    let mut attr = [0u32; 32];
    attr[0] = 2; // BPF_MAP_TYPE_ARRAY
    attr[1] = 4;
    attr[2] = 4;
    attr[3] = 1;
    // SAFETY: `attr` is a zero-padded bpf_attr of the size we pass.
    close_if_fd(capture(unsafe {
        libc::syscall(
            libc::SYS_bpf,
            0, // BPF_MAP_CREATE
            attr.as_mut_ptr(),
            std::mem::size_of_val(&attr),
        )
    }))
}

/// perf_event_open(2): a user-space-only software counter on ourselves
/// (allowed to unprivileged users at perf_event_paranoid <= 2 unless filtered).
pub fn perf_event_open() -> Ret {
    // struct perf_event_attr (first 64 bytes = PERF_ATTR_SIZE_VER0), as u64 words:
    // [0] type (u32) | size (u32) << 32, [1] config, [5] flag bits.
    let mut attr = [0u64; 16];
    attr[0] = 1 | (64 << 32); // PERF_TYPE_SOFTWARE, size 64
    attr[1] = 0; // PERF_COUNT_SW_CPU_CLOCK
    attr[5] = 1 | (1 << 5) | (1 << 6); // disabled, exclude_kernel, exclude_hv
                                       // SAFETY: `attr` is a valid perf_event_attr of at least the size it declares.
    close_if_fd(capture(unsafe {
        libc::syscall(
            libc::SYS_perf_event_open,
            attr.as_mut_ptr(),
            0,  // this process
            -1, // any cpu
            -1, // no group
            0,
        )
    }))
}

/// userfaultfd(2) in user-mode-only form (allowed to unprivileged users unless filtered).
pub fn userfaultfd() -> Ret {
    // SAFETY: plain syscall with a flag word.
    close_if_fd(capture(unsafe { libc::syscall(libc::SYS_userfaultfd, UFFD_USER_MODE_ONLY | libc::O_CLOEXEC) }))
}

/// io_uring_setup(2) with one entry.
pub fn io_uring_setup() -> Ret {
    // struct io_uring_params is 120 bytes; zeroed means defaults.
    let mut params = [0u8; 120];
    // SAFETY: `params` is a zeroed io_uring_params the kernel may write into.
    close_if_fd(capture(unsafe { libc::syscall(libc::SYS_io_uring_setup, 1, params.as_mut_ptr()) }))
}

/// init_module(2) with an empty image.
pub fn init_module() -> Ret {
    // SAFETY: NULL image of length 0 and an empty parameter string.
    capture(unsafe { libc::syscall(libc::SYS_init_module, std::ptr::null::<u8>(), 0usize, c"".as_ptr()) })
}

/// finit_module(2) on an invalid fd.
pub fn finit_module() -> Ret {
    // SAFETY: invalid fd, empty parameter string.
    capture(unsafe { libc::syscall(libc::SYS_finit_module, -1, c"".as_ptr(), 0) })
}

/// delete_module(2) of a module that does not exist.
pub fn delete_module() -> Ret {
    // SAFETY: valid string and flag word.
    capture(unsafe { libc::syscall(libc::SYS_delete_module, c"cloche_probe_absent".as_ptr(), libc::O_NONBLOCK) })
}

/// kexec_load(2) with no segments and a bogus architecture (EINVAL even when allowed).
pub fn kexec_load() -> Ret {
    let bogus_arch: libc::c_ulong = 0x00ff_0000;
    // SAFETY: no segments, NULL segment pointer.
    capture(unsafe { libc::syscall(libc::SYS_kexec_load, 0usize, 0usize, std::ptr::null::<u8>(), bogus_arch) })
}

/// open_by_handle_at(2) with a made-up handle on the root.
pub fn open_by_handle_at() -> Ret {
    let mount_fd = open_raw(c"/", libc::O_RDONLY | libc::O_DIRECTORY);
    // struct file_handle: handle_bytes (u32), handle_type (i32), f_handle[handle_bytes].
    let mut handle = [0u32; 4];
    handle[0] = 8;
    handle[1] = 1; // FILEID_INO32_GEN
                   // SAFETY: `handle` is a file_handle whose declared size fits in the buffer.
    let r = close_if_fd(capture(unsafe {
        libc::syscall(libc::SYS_open_by_handle_at, mount_fd, handle.as_mut_ptr(), libc::O_RDONLY)
    }));
    if mount_fd >= 0 {
        // SAFETY: we opened it above.
        unsafe { libc::close(mount_fd) };
    }
    r
}

/// setns(2) into our own mount namespace.
pub fn setns() -> Ret {
    let fd = open_raw(c"/proc/self/ns/mnt", libc::O_RDONLY);
    // SAFETY: plain syscall; an invalid fd only makes it fail.
    let r = capture(unsafe { libc::setns(fd, libc::CLONE_NEWNS) } as i64);
    if fd >= 0 {
        // SAFETY: we opened it above.
        unsafe { libc::close(fd) };
    }
    r
}

/// clock_settime(2) of CLOCK_REALTIME to the time it already has.
pub fn clock_settime() -> Ret {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: valid pointer to a timespec, read then written back unchanged.
    capture(unsafe {
        libc::clock_gettime(libc::CLOCK_REALTIME, &mut ts);
        libc::clock_settime(libc::CLOCK_REALTIME, &ts)
    } as i64)
}

/// settimeofday(2) to the time it already is (no time zone).
pub fn settimeofday() -> Ret {
    let mut tv = libc::timeval { tv_sec: 0, tv_usec: 0 };
    // SAFETY: valid pointer to a timeval and a NULL time zone.
    capture(unsafe {
        libc::gettimeofday(&mut tv, std::ptr::null_mut());
        libc::settimeofday(&tv, std::ptr::null())
    } as i64)
}

/// swapon(2) of a file that does not exist.
pub fn swapon() -> Ret {
    // SAFETY: valid NUL-terminated string.
    capture(unsafe { libc::swapon(c"/nonexistent-cloche-probe-swap".as_ptr(), 0) } as i64)
}

/// swapoff(2) of a file that does not exist.
pub fn swapoff() -> Ret {
    // SAFETY: valid NUL-terminated string.
    capture(unsafe { libc::swapoff(c"/nonexistent-cloche-probe-swap".as_ptr()) } as i64)
}

/// reboot(2) with wrong magic numbers (EINVAL even when allowed: it reboots nothing).
pub fn reboot() -> Ret {
    // SAFETY: plain syscall; bad magic makes the kernel refuse after its permission check.
    capture(unsafe { libc::syscall(libc::SYS_reboot, 0, 0, 0x1234_5678, std::ptr::null::<u8>()) })
}

/// pivot_root(2) of a scratch directory onto itself (EINVAL when allowed: no mount point).
pub fn pivot_root() -> Ret {
    let dir = ScratchDir::new("pivot");
    // SAFETY: valid NUL-terminated strings.
    capture(unsafe { libc::syscall(libc::SYS_pivot_root, dir.ptr(), dir.ptr()) })
}

/// chroot(2) to "/".
pub fn chroot() -> Ret {
    // SAFETY: valid NUL-terminated string.
    capture(unsafe { libc::chroot(c"/".as_ptr()) } as i64)
}

/// socket(2) of any family, type and protocol (closed at once): ret 0 when made.
pub fn socket(family: libc::c_int, ty: libc::c_int, protocol: libc::c_int) -> Ret {
    // SAFETY: plain socket(2) with integer arguments.
    let r = close_if_fd(capture(unsafe { libc::socket(family, ty, protocol) } as i64));
    Ret { ret: r.ret.min(0), errno: r.errno }
}

/// socketpair(2) of any family, type and protocol (both ends closed at once).
pub fn socketpair(family: libc::c_int, ty: libc::c_int, protocol: libc::c_int) -> Ret {
    let mut fds = [-1; 2];
    // SAFETY: socketpair(2) writes two descriptors into the array we own.
    let r = capture(unsafe { libc::socketpair(family, ty, protocol, fds.as_mut_ptr()) } as i64);
    if r.ret == 0 {
        // SAFETY: both descriptors were just made for us and nothing else owns them.
        unsafe {
            libc::close(fds[0]);
            libc::close(fds[1]);
        }
    }
    r
}

/// A netfilter netlink socket (nftables, iptables-nft, NFLOG).
pub fn nfnetlink() -> Ret {
    // SAFETY: plain socket(2).
    close_if_fd(capture(unsafe { libc::socket(libc::AF_NETLINK, libc::SOCK_RAW, libc::NETLINK_NETFILTER) } as i64))
}

/// Takes interface `eth0` down (SIOCSIFFLAGS): needs CAP_NET_ADMIN.
pub fn link_down() -> Ret {
    // SAFETY: plain socket(2).
    let s = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM, 0) };
    if s < 0 {
        return capture(-1);
    }
    // SAFETY: ifreq is plain data; zeroed is valid.
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, c) in ifr.ifr_name.iter_mut().zip(b"eth0") {
        *d = *c as libc::c_char;
    }
    // SAFETY: SIOCSIFFLAGS reads the ifreq we own; flags 0 = down.
    let r = capture(unsafe { libc::ioctl(s, libc::SIOCSIFFLAGS as _, &ifr) } as i64);
    // SAFETY: closing the socket we opened.
    unsafe { libc::close(s) };
    r
}

/// A raw IP socket (forged packets): needs CAP_NET_RAW.
pub fn raw_socket() -> Ret {
    // SAFETY: plain socket(2).
    close_if_fd(capture(unsafe { libc::socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_RAW) } as i64))
}

/// A packet socket (frames below IP): needs CAP_NET_RAW.
pub fn packet_socket() -> Ret {
    // SAFETY: plain socket(2).
    close_if_fd(capture(unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0) } as i64))
}

/// An address added over rtnetlink (RTM_NEWADDR 10.9.9.9/32 on `lo`, what
/// `ip addr add` sends): the socket opens, the kernel's answer is the
/// result (ret 0, or -1 with the errno it carries).
pub fn rtnl_addr() -> Ret {
    // SAFETY: plain socket(2).
    let s = unsafe { libc::socket(libc::AF_NETLINK, libc::SOCK_RAW, libc::NETLINK_ROUTE) };
    if s < 0 {
        return capture(-1);
    }
    // nlmsghdr (16) + ifaddrmsg (8) + IFA_LOCAL attribute (8)
    let mut m = Vec::with_capacity(32);
    m.extend_from_slice(&32u32.to_ne_bytes());
    m.extend_from_slice(&libc::RTM_NEWADDR.to_ne_bytes());
    m.extend_from_slice(&((libc::NLM_F_REQUEST | libc::NLM_F_ACK | libc::NLM_F_CREATE) as u16).to_ne_bytes());
    m.extend_from_slice(&[0u8; 8]); // seq, pid
    m.extend_from_slice(&[libc::AF_INET as u8, 32, 0, 0]);
    m.extend_from_slice(&1u32.to_ne_bytes()); // lo
    m.extend_from_slice(&8u16.to_ne_bytes());
    m.extend_from_slice(&libc::IFA_LOCAL.to_ne_bytes());
    m.extend_from_slice(&[10, 9, 9, 9]);
    let mut ack = [0u8; 256];
    // SAFETY: send and recv on the socket we opened, from and into our buffers.
    let n = unsafe {
        if libc::send(s, m.as_ptr().cast(), m.len(), 0) < 0 {
            -1
        } else {
            libc::recv(s, ack.as_mut_ptr().cast(), ack.len(), 0)
        }
    };
    let r = if n < 0 {
        capture(-1)
    } else {
        let code = ack.get(16..20).and_then(|b| b.try_into().ok()).map(i32::from_ne_bytes).unwrap_or(0);
        Ret { ret: if code == 0 { 0 } else { -1 }, errno: -code }
    };
    // SAFETY: closing the socket we opened.
    unsafe { libc::close(s) };
    r
}

/// ioctl(TIOCSTI) pushing one byte into the input of the terminal on `fd`.
pub fn tiocsti(fd: libc::c_int, byte: u8) -> Ret {
    // SAFETY: TIOCSTI reads one byte through the pointer we pass.
    capture(unsafe { libc::ioctl(fd, libc::TIOCSTI as _, &byte as *const u8) } as i64)
}

/// ioctl(TIOCSCTTY): make the terminal on `fd` our controlling terminal.
pub fn tiocsctty(fd: libc::c_int) -> Ret {
    // SAFETY: TIOCSCTTY takes an integer argument.
    capture(unsafe { libc::ioctl(fd, libc::TIOCSCTTY as _, 0) } as i64)
}

/// fork(2); returns 0 in the child, the child's pid in the parent.
pub fn fork() -> Ret {
    // SAFETY: the probe is single-threaded; children only call async-signal-safe
    // functions or exec before they leave through _exit.
    capture(unsafe { libc::fork() } as i64)
}

/// Sleeps forever (the body of a fork-loop child).
pub fn pause_forever() -> ! {
    loop {
        // SAFETY: pause has no arguments.
        unsafe { libc::pause() };
    }
}

/// Leaves the process at once, without flushing or running destructors.
pub fn exit_now(code: i32) -> ! {
    // SAFETY: _exit is always safe to call.
    unsafe { libc::_exit(code) }
}

/// Ignores a signal (SIG_IGN survives exec, like a stubborn daemon).
pub fn ignore_signal(sig: libc::c_int) {
    // SAFETY: installing SIG_IGN has no handler code to worry about.
    unsafe { libc::signal(sig, libc::SIG_IGN) };
}
