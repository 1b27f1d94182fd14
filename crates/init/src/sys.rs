//! The few Linux syscalls pid 1 needs, made directly (x86_64): this binary
//! links no C library, so it starts in microseconds and maps nothing from
//! the world's filesystem.

use core::arch::asm;

pub const SIGCHLD: usize = 17;
pub const EINTR: isize = 4;
pub const ENOENT: isize = 2;
pub const ENOTDIR: isize = 20;
pub const EACCES: isize = 13;
pub const ENOEXEC: isize = 8;

/// One raw syscall. Returns the kernel's value: negative errno on failure.
///
/// # Safety
/// The caller passes arguments that are valid for syscall `n`.
#[inline(always)]
pub unsafe fn syscall(n: usize, a: [usize; 6]) -> isize {
    let ret: isize;
    // SAFETY: the x86_64 syscall ABI: number in rax, arguments in rdi, rsi,
    // rdx, r10, r8, r9; rcx and r11 are clobbered.
    unsafe {
        asm!("syscall", inlateout("rax") n as isize => ret,
             in("rdi") a[0], in("rsi") a[1], in("rdx") a[2], in("r10") a[3], in("r8") a[4], in("r9") a[5],
             lateout("rcx") _, lateout("r11") _, options(nostack));
    }
    ret
}

pub fn write(fd: usize, buf: &[u8]) {
    // SAFETY: buf is valid for buf.len() bytes.
    unsafe { syscall(1, [fd, buf.as_ptr() as usize, buf.len(), 0, 0, 0]) };
}

pub fn exit(code: i32) -> ! {
    loop {
        // SAFETY: exit_group takes an integer and does not return.
        unsafe { syscall(231, [code as usize, 0, 0, 0, 0, 0]) };
    }
}

pub fn set_non_dumpable() {
    const PR_SET_DUMPABLE: usize = 4;
    // SAFETY: integer arguments only.
    unsafe { syscall(157, [PR_SET_DUMPABLE, 0, 0, 0, 0, 0]) };
}

/// prctl(PR_SET_NAME, "cloche-init"): the name `ps` shows (executed from
/// a memfd, the kernel would say "memfd:cloche-in").
pub fn set_name() {
    const PR_SET_NAME: usize = 15;
    static NAME: &[u8; 12] = b"cloche-init\0";
    // SAFETY: a NUL-terminated name of at most 16 bytes.
    unsafe { syscall(157, [PR_SET_NAME, NAME.as_ptr() as usize, 0, 0, 0, 0]) };
}

/// fork(): clone with only SIGCHLD as the exit signal. 0 in the child.
pub fn fork() -> isize {
    // SAFETY: fork semantics; this process has a single thread.
    unsafe { syscall(56, [SIGCHLD, 0, 0, 0, 0, 0]) }
}

/// execve; returns the negative errno on failure.
///
/// # Safety
/// `path` is NUL-terminated; `argv` and `envp` are NULL-terminated arrays of
/// NUL-terminated strings.
pub unsafe fn execve(path: *const u8, argv: *const *const u8, envp: *const *const u8) -> isize {
    // SAFETY: forwarded from the caller.
    unsafe { syscall(59, [path as usize, argv as usize, envp as usize, 0, 0, 0]) }
}

/// wait4(-1): returns (pid, status) or the negative errno.
pub fn wait_any() -> (isize, i32) {
    let mut status: i32 = 0;
    // SAFETY: status is a valid out-pointer; no rusage.
    let pid = unsafe { syscall(61, [usize::MAX, &mut status as *mut i32 as usize, 0, 0, 0, 0]) };
    (pid, status)
}

pub fn kill(pid: isize, sig: usize) {
    // SAFETY: integer arguments only.
    unsafe { syscall(62, [pid as usize, sig, 0, 0, 0, 0]) };
}

/// The kernel's `struct sigaction` on x86_64 (rt_sigaction with an 8-byte mask).
#[repr(C)]
struct KernelSigaction {
    handler: usize,
    flags: usize,
    restorer: usize,
    mask: u64,
}

const SA_RESTORER: usize = 0x0400_0000;
const SA_RESTART: usize = 0x1000_0000;
pub const SIG_DFL: usize = 0;

core::arch::global_asm!(
    ".globl cloche_sigreturn",
    "cloche_sigreturn:",
    "mov rax, 15", // rt_sigreturn
    "syscall",
);

unsafe extern "C" {
    fn cloche_sigreturn();
}

/// Installs `handler` (a function address, or SIG_DFL) for `sig`.
pub fn sigaction(sig: usize, handler: usize) {
    let act = KernelSigaction {
        handler,
        flags: if handler == SIG_DFL { 0 } else { SA_RESTORER | SA_RESTART },
        restorer: cloche_sigreturn as *const () as usize,
        mask: 0,
    };
    // SAFETY: act is a valid kernel sigaction; the restorer calls rt_sigreturn.
    unsafe { syscall(13, [sig, &act as *const KernelSigaction as usize, 0, 8, 0, 0]) };
}

pub const SIGKILL: usize = 9;

/// fcntl(fd, F_SETFD, FD_CLOEXEC).
pub fn set_cloexec(fd: usize) {
    // SAFETY: integer arguments only.
    unsafe { syscall(72, [fd, 2, 1, 0, 0, 0]) };
}

pub fn dup2(old: usize, new: usize) -> isize {
    // SAFETY: integer arguments only (dup3 with no flags; old != new checked by the caller).
    unsafe { syscall(292, [old, new, 0, 0, 0, 0]) }
}

/// setsid(2) then ioctl(0, TIOCSCTTY, 0): a session of its own whose
/// controlling terminal is the pseudo-terminal on fd 0 (the world's own).
pub fn take_terminal() {
    // SAFETY: integer arguments only (setsid = 112, ioctl = 16, TIOCSCTTY).
    unsafe {
        syscall(112, [0; 6]);
        syscall(16, [0, 0x540E, 0, 0, 0, 0]);
    }
}

pub fn close(fd: usize) {
    // SAFETY: integer argument only.
    unsafe { syscall(3, [fd, 0, 0, 0, 0, 0]) };
}

/// chdir; returns the negative errno on failure.
///
/// # Safety
/// `path` is NUL-terminated.
pub unsafe fn chdir(path: *const u8) -> isize {
    // SAFETY: forwarded from the caller.
    unsafe { syscall(80, [path as usize, 0, 0, 0, 0, 0]) }
}

#[repr(C)]
struct Iovec {
    base: *mut u8,
    len: usize,
}

#[repr(C)]
struct Msghdr {
    name: *mut u8,
    namelen: u32,
    iov: *mut Iovec,
    iovlen: usize,
    control: *mut u8,
    controllen: usize,
    flags: i32,
}

/// Room for a cmsghdr (16 bytes) and three fds.
const CMSG_SPACE: usize = 32;

/// recvmsg on a SOCK_SEQPACKET socket: one message into `buf`, and up to
/// three fds passed with SCM_RIGHTS (received close-on-exec). Returns the
/// message length (0 at EOF, negative errno on failure) and the fds (-1
/// where none came).
pub fn recv_with_fds(sock: usize, buf: &mut [u8]) -> (isize, [i32; 3]) {
    let mut control = [0u64; CMSG_SPACE / 8];
    let mut iov = Iovec { base: buf.as_mut_ptr(), len: buf.len() };
    let mut msg = Msghdr {
        name: core::ptr::null_mut(),
        namelen: 0,
        iov: &mut iov,
        iovlen: 1,
        control: control.as_mut_ptr().cast(),
        controllen: CMSG_SPACE,
        flags: 0,
    };
    const MSG_CMSG_CLOEXEC: usize = 0x4000_0000;
    // SAFETY: msg points at valid buffers that outlive the call.
    let n = unsafe { syscall(47, [sock, &mut msg as *mut Msghdr as usize, MSG_CMSG_CLOEXEC, 0, 0, 0]) };
    let mut fds = [-1i32; 3];
    if n > 0 && msg.controllen >= 16 {
        // cmsghdr: len (u64), level (i32), type (i32), then the fds.
        let len = control[0] as usize;
        let level_type = control[1];
        let (level, kind) = (level_type as u32, (level_type >> 32) as u32);
        if level == 1 && kind == 1 && len > 16 {
            let count = ((len - 16) / 4).min(3);
            for (i, fd) in fds.iter_mut().enumerate().take(count) {
                let word = control[2 + i / 2];
                *fd = if i % 2 == 0 { word as u32 as i32 } else { (word >> 32) as u32 as i32 };
            }
        }
    }
    (n, fds)
}

pub fn getpid() -> isize {
    // SAFETY: no arguments.
    unsafe { syscall(39, [0; 6]) }
}
