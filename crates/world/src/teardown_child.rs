//! A world's end off the run's path, in a child that shares cloche's memory
//! (`CLONE_VM`): it holds the world's mounts and claim (its copies of their
//! descriptors), removes its cgroup directories (and a world without root's
//! directory, once its mounts are released) and exits; for a world with a
//! network, a fork of it removes the host's table later if no world uses it
//! (`net_host::IdleRemoval`).
//!
//! Why not fork(2): a fork copies cloche's page tables (0.1-0.15 ms here),
//! and cloche's own exit then tears its memory down (0.1-0.17 ms from
//! `exit_group` to the zombie), both between the command's exit and
//! cloche's. Sharing the memory, the child costs a clone, and cloche's exit
//! leaves the memory to the child, whose exit frees it after cloche has
//! answered.
//!
//! The price is care: the child runs on cloche's memory while cloche goes on
//! (and exits). So it touches nothing cloche may free or change: its data and
//! its stack are leaked to it ([`spawn`]), it makes only raw system calls
//! (no C library: musl's `errno` would be cloche's thread's, through the
//! thread pointer the child shares), and it neither allocates nor panics.

use std::ffi::CString;
use std::io;
use std::os::fd::RawFd;

/// What the child does, leaked to it: the descriptors it keeps (sorted),
/// the cgroup directories it removes (each retried while exiting tasks are
/// still accounted), then their `cloche` parents no other world uses.
pub(crate) struct Job {
    pub keep: Vec<RawFd>,
    pub dirs: Vec<CString>,
    pub parents: Vec<CString>,
    /// A world with a network: the host's table, removed if no world uses
    /// it a moment later, by a fork of the child (its descriptors in
    /// `keep`).
    pub idle: Option<&'static crate::net_host::IdleRemoval>,
    /// Kept descriptors to close once the cgroup is gone (a world without
    /// root's mounts), before `remove`.
    pub release: Vec<RawFd>,
    /// Empty directories to remove then, deepest first (a world without
    /// root's `worlds/<id>/fs` and `worlds/<id>`); one that is not empty
    /// stays for the next sweep.
    pub remove: Vec<CString>,
}

/// The child's stack (and its fork's copy of it): a handful of system
/// calls, and the host table's check (12 KiB of buffers).
const STACK: usize = 64 * 1024;

/// Starts the child; returns its pid without waiting for it (it is reaped
/// by whoever adopts it when cloche exits). `job` and the child's stack are
/// leaked: a few hundred bytes and 16 KiB, for a process about to exit.
pub(crate) fn spawn(job: Job) -> io::Result<libc::pid_t> {
    let job: &'static Job = Box::leak(Box::new(job));
    let stack: &'static mut [u8] = Box::leak(vec![0u8; STACK].into_boxed_slice());
    let top = stack.as_mut_ptr_range().end as usize & !15; // 16-byte aligned
                                                           // Born with every signal blocked (the mask is inherited), and with a
                                                           // session of its own (`child_main`): no signal but SIGKILL stops it
                                                           // halfway. The caller's mask is put back below.
                                                           // SAFETY: sigset_t is plain data, filled by sigfillset; the mask is this
                                                           // thread's.
    let old = unsafe {
        let (mut all, mut old) = (std::mem::zeroed::<libc::sigset_t>(), std::mem::zeroed::<libc::sigset_t>());
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_BLOCK, &all, &mut old);
        old
    };
    // SAFETY: `child_main` makes only raw system calls on its own (leaked)
    // stack and reads only `job` (leaked): nothing the caller frees.
    // CLONE_VM without CLONE_FILES: the child's descriptor table is a copy.
    let pid = unsafe {
        libc::clone(
            child_main,
            top as *mut libc::c_void,
            libc::CLONE_VM | libc::SIGCHLD,
            job as *const Job as *mut libc::c_void,
        )
    };
    let err = io::Error::last_os_error();
    // SAFETY: the mask saved above.
    unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut()) };
    if pid < 0 {
        return Err(err);
    }
    Ok(pid)
}

/// x86_64 system call numbers (stable ABI).
const SYS_CLOSE: usize = 3;
const SYS_NANOSLEEP: usize = 35;
const SYS_FORK: usize = 57;
const SYS_EXIT: usize = 60;
const SYS_RMDIR: usize = 84;
const SYS_SETSID: usize = 112;
const SYS_CLOSE_RANGE: usize = 436;
const EBUSY: isize = 16;

/// A raw system call; returns the kernel's answer (a negative errno on
/// failure), touching no thread-local state.
///
/// # Safety
/// As the system call `n` with arguments `a` requires.
unsafe fn syscall(n: usize, a: [usize; 3]) -> isize {
    let ret: isize;
    // SAFETY: the x86_64 syscall ABI: number in rax, arguments in rdi, rsi,
    // rdx; rcx and r11 are clobbered.
    unsafe {
        std::arch::asm!("syscall", inlateout("rax") n as isize => ret,
             in("rdi") a[0], in("rsi") a[1], in("rdx") a[2],
             lateout("rcx") _, lateout("r11") _, options(nostack));
    }
    ret
}

/// The child's whole life (see the module docs for what it may touch).
extern "C" fn child_main(arg: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `spawn` passes a leaked `Job`, never freed or changed.
    let job = unsafe { &*(arg as *const Job) };
    // SAFETY: raw system calls with integer arguments, and pointers to
    // NUL-terminated paths and a timespec that live as long as the process.
    unsafe {
        syscall(SYS_SETSID, [0; 3]);
        // Every descriptor but the kept ones (cloche's stdout and stderr
        // among them: whoever reads them sees their end when cloche exits).
        let mut next = 0usize;
        for &fd in &job.keep {
            let fd = fd as usize;
            if fd > next {
                syscall(SYS_CLOSE_RANGE, [next, fd - 1, 0]);
            }
            next = fd + 1;
        }
        syscall(SYS_CLOSE_RANGE, [next, u32::MAX as usize, 0]);
        if let Some(idle) = job.idle {
            // A fork: a copy of this memory of its own, so its C library
            // calls (async-signal-safe only) write their errno there. It
            // keeps only the table's descriptors, lingers, removes the
            // table if no world uses it, and exits; reparented when this
            // child exits.
            if syscall(SYS_FORK, [0; 3]) == 0 {
                idle.run_and_exit();
            }
        }
        let pause = libc::timespec { tv_sec: 0, tv_nsec: 5_000_000 };
        for d in &job.dirs {
            // Retried every 5 ms for a second while the world's exiting
            // tasks are still accounted (one left is the next sweep's).
            for _ in 0..200 {
                if syscall(SYS_RMDIR, [d.as_ptr() as usize, 0, 0]) != -EBUSY {
                    break;
                }
                syscall(SYS_NANOSLEEP, [&pause as *const libc::timespec as usize, 0, 0]);
            }
        }
        for p in &job.parents {
            // A busy parent (another world's) stays.
            syscall(SYS_RMDIR, [p.as_ptr() as usize, 0, 0]);
        }
        // A world without root: its mounts (the namespace first), then its
        // directory.
        for &fd in &job.release {
            syscall(SYS_CLOSE, [fd as usize, 0, 0]);
        }
        for d in &job.remove {
            syscall(SYS_RMDIR, [d.as_ptr() as usize, 0, 0]);
        }
        // exit(2), this thread (the only one of this process): the world's
        // mounts and claim go with its descriptors, then the memory.
        syscall(SYS_EXIT, [0; 3]);
    }
    0
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    /// The child removes the directories (the world's, then the parent),
    /// holds the descriptors it keeps until it exits, and exits.
    #[test]
    fn the_child_removes_the_directories_holds_what_it_keeps_and_exits() {
        let top = std::env::temp_dir().join(format!("cloche-teardown-child-{}", std::process::id()));
        let world = top.join("cloche").join("w1");
        std::fs::create_dir_all(&world).unwrap();
        let c = |p: &std::path::Path| CString::new(p.as_os_str().as_encoded_bytes()).unwrap();
        let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
        // A world without root's directory too, after its mounts (here a
        // descriptor it holds until then).
        let own = top.join("w2");
        std::fs::create_dir_all(own.join("fs")).unwrap();
        let held = std::fs::File::open(&own).unwrap();
        let mut keep = vec![w.as_raw_fd(), held.as_raw_fd()];
        keep.sort_unstable();
        let job = Job {
            keep,
            dirs: vec![c(&world)],
            parents: vec![c(&top.join("cloche"))],
            idle: None,
            release: vec![held.as_raw_fd()],
            remove: vec![c(&own.join("fs")), c(&own)],
        };
        let pid = spawn(job).unwrap();
        drop(w); // ours; the child's copy is the last
        let mut b = [0u8; 1];
        assert_eq!(nix::unistd::read(&r, &mut b).unwrap(), 0, "EOF once the child is gone");
        let mut status = 0;
        // SAFETY: waits for our own child.
        assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
        assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0, "{status:#x}");
        assert!(!world.exists() && !top.join("cloche").exists() && !own.exists());
        std::fs::remove_dir(&top).unwrap();
    }
}
