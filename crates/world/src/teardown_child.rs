//! A world's end off the run's path, in a child that shares cloche's memory
//! (`CLONE_VM`): it holds the world's mounts and claim (its copies of their
//! descriptors), moves a disk upper to the pool's trash, removes its cgroup
//! directories (and a world without root's directory, once its mounts are
//! released) and exits; for a world with a
//! network, a fork of it removes the host's table later if no world uses it
//! (`net_host::IdleRemoval`); for a world as root, it then makes the next
//! world's network namespace (`netns_spare`).
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
    /// Last: a spare network namespace to make there, if none is
    /// (`netns_spare`).
    pub spare: Option<crate::netns_spare::Paths>,
    /// First: a disk upper moved to the pool's trash (the pool's
    /// descriptor, in `keep`; the world's name; its name in the trash).
    /// If the move fails, the world's directory is the next sweep's.
    pub trash: Option<(RawFd, CString, CString)>,
}

/// The child's stack (and its fork's copy of it): a handful of system
/// calls, and the host table's check (12 KiB of buffers).
const STACK: usize = 64 * 1024;

/// Starts the child; returns its pid without waiting for it (it is reaped
/// by whoever adopts it when cloche exits). `job` and the child's stack are
/// leaked: a few hundred bytes, and a 64 KiB mapping of which the child
/// touches a page or two, for a process about to exit.
pub(crate) fn spawn(job: Job) -> io::Result<libc::pid_t> {
    let job: &'static Job = Box::leak(Box::new(job));
    let stack = crate::raw::ChildStack::new(STACK)?;
    let top = stack.top();
    // The child's for its life, which may outlast this process's.
    stack.leak();
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
    let pid =
        unsafe { libc::clone(child_main, top, libc::CLONE_VM | libc::SIGCHLD, job as *const Job as *mut libc::c_void) };
    let err = io::Error::last_os_error();
    // SAFETY: the mask saved above.
    unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut()) };
    if pid < 0 {
        return Err(err);
    }
    Ok(pid)
}

/// x86_64 system call numbers (stable ABI).
const SYS_OPEN: usize = 2;
const SYS_CLOSE: usize = 3;
const SYS_IOCTL: usize = 16;
const SYS_PREAD64: usize = 17;
const SYS_PWRITE64: usize = 18;
const SYS_NANOSLEEP: usize = 35;
const SYS_SOCKET: usize = 41;
const SYS_FORK: usize = 57;
const SYS_EXIT: usize = 60;
const SYS_FLOCK: usize = 73;
const SYS_MKDIR: usize = 83;
const SYS_RMDIR: usize = 84;
const SYS_UNLINK: usize = 87;
const SYS_SETSID: usize = 112;
const SYS_MOUNT: usize = 165;
const SYS_UMOUNT2: usize = 166;
const SYS_UNSHARE: usize = 272;
const SYS_RENAMEAT2: usize = 316;
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

/// [`syscall`] with five arguments (`mount`).
///
/// # Safety
/// As the system call `n` with arguments `a` requires.
unsafe fn syscall5(n: usize, a: [usize; 5]) -> isize {
    let ret: isize;
    // SAFETY: the x86_64 syscall ABI: arguments four and five in r10, r8.
    unsafe {
        std::arch::asm!("syscall", inlateout("rax") n as isize => ret,
             in("rdi") a[0], in("rsi") a[1], in("rdx") a[2], in("r10") a[3], in("r8") a[4],
             lateout("rcx") _, lateout("r11") _, options(nostack));
    }
    ret
}

/// Makes the next world's network namespace (`netns_spare`), unless one
/// is there to take: under the directory's lock, a taken (or half-made)
/// spare unmounted and unlinked first; then a new namespace for this
/// child, `lo` up, bind-mounted on the spare's path (made for it), and the
/// lock file marked free. Any failure leaves no spare to take. Last thing
/// before the child exits: it leaves the host's network namespace for the
/// new one.
///
/// # Safety
/// Raw system calls on NUL-terminated paths that live as long as the
/// process, and on this child's own stack.
unsafe fn make_spare(p: &crate::netns_spare::Paths) {
    unsafe {
        let path = |c: &CString| c.as_ptr() as usize;
        syscall(SYS_MKDIR, [path(&p.dir), 0o700, 0]);
        let flags = (libc::O_RDWR | libc::O_CREAT | libc::O_CLOEXEC | libc::O_NOFOLLOW) as usize;
        let lock = syscall(SYS_OPEN, [path(&p.lock), flags, 0o600]);
        if lock < 0 {
            return;
        }
        let lock = lock as usize;
        let done = |lock: usize| {
            syscall(SYS_CLOSE, [lock, 0, 0]);
        };
        if syscall(SYS_FLOCK, [lock, libc::LOCK_EX as usize, 0]) != 0 {
            return done(lock);
        }
        let mut mark = [0u8; 1];
        let read = syscall5(SYS_PREAD64, [lock, mark.as_mut_ptr() as usize, 1, 0, 0]);
        let free = read == 1 && mark[0] == crate::netns_spare::FREE;
        // One spare at a time: a good one not taken stays; anything else
        // there goes.
        let present =
            syscall(SYS_OPEN, [path(&p.spare), (libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_CLOEXEC) as usize, 0]);
        if present >= 0 {
            let nstype = syscall(SYS_IOCTL, [present as usize, crate::netns_spare::NS_GET_NSTYPE as usize, 0]);
            syscall(SYS_CLOSE, [present as usize, 0, 0]);
            if free && nstype == libc::CLONE_NEWNET as isize {
                return done(lock);
            }
            syscall(SYS_UMOUNT2, [path(&p.spare), libc::MNT_DETACH as usize, 0]);
            syscall(SYS_UNLINK, [path(&p.spare), 0, 0]);
        }
        if syscall(SYS_UNSHARE, [libc::CLONE_NEWNET as usize, 0, 0]) != 0 || !loopback_up() {
            return done(lock);
        }
        let create = (libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_CLOEXEC | libc::O_NOFOLLOW) as usize;
        let f = syscall(SYS_OPEN, [path(&p.spare), create, 0o600]);
        if f < 0 {
            return done(lock);
        }
        syscall(SYS_CLOSE, [f as usize, 0, 0]);
        let source = c"/proc/self/ns/net".as_ptr() as usize;
        if syscall5(SYS_MOUNT, [source, path(&p.spare), 0, libc::MS_BIND as usize, 0]) != 0 {
            syscall(SYS_UNLINK, [path(&p.spare), 0, 0]);
            return done(lock);
        }
        let free = [crate::netns_spare::FREE];
        syscall5(SYS_PWRITE64, [lock, free.as_ptr() as usize, 1, 0, 0]);
        done(lock)
    }
}

/// `lo` up in this child's network namespace (as `sys::loopback_up`, with
/// raw calls and the request on this child's stack).
///
/// # Safety
/// Raw system calls on a socket of its own and a request on the stack.
unsafe fn loopback_up() -> bool {
    unsafe {
        let sock = syscall(SYS_SOCKET, [libc::AF_INET as usize, (libc::SOCK_DGRAM | libc::SOCK_CLOEXEC) as usize, 0]);
        if sock < 0 {
            return false;
        }
        // SAFETY: ifreq is plain data; zeroed is a valid value.
        let mut req: libc::ifreq = std::mem::zeroed();
        req.ifr_name[0] = b'l' as libc::c_char;
        req.ifr_name[1] = b'o' as libc::c_char;
        // (The request's address is taken at each call: the kernel reads
        // and writes it there.)
        let at = |r: &mut libc::ifreq| r as *mut libc::ifreq as usize;
        let mut ok = syscall(SYS_IOCTL, [sock as usize, libc::SIOCGIFFLAGS as usize, at(&mut req)]) == 0;
        if ok {
            req.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
            ok = syscall(SYS_IOCTL, [sock as usize, libc::SIOCSIFFLAGS as usize, at(&mut req)]) == 0;
        }
        syscall(SYS_CLOSE, [sock as usize, 0, 0]);
        ok
    }
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
        if let Some((pool, id, trash)) = &job.trash {
            let noreplace = 1; // RENAME_NOREPLACE
            let (id, trash) = (id.as_ptr() as usize, trash.as_ptr() as usize);
            syscall5(SYS_RENAMEAT2, [*pool as usize, id, *pool as usize, trash, noreplace]);
        }
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
        if let Some(p) = &job.spare {
            make_spare(p);
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
            spare: None,
            keep,
            dirs: vec![c(&world)],
            parents: vec![c(&top.join("cloche"))],
            idle: None,
            release: vec![held.as_raw_fd()],
            remove: vec![c(&own.join("fs")), c(&own)],
            trash: None,
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

    /// The child moves a world to the trash by its pool's descriptor, and
    /// replaces nothing there (the world then stays for the sweep).
    #[test]
    fn the_child_moves_a_world_to_the_trash_and_replaces_nothing() {
        let pool = tempfile::tempdir().unwrap();
        let dir = std::fs::File::open(pool.path()).unwrap();
        let run = |id: &str| {
            let c = |s: String| CString::new(s).unwrap();
            let job = Job {
                keep: vec![dir.as_raw_fd()],
                dirs: vec![],
                parents: vec![],
                idle: None,
                release: vec![],
                remove: vec![],
                spare: None,
                trash: Some((dir.as_raw_fd(), c(id.into()), c(format!(".trash-{id}")))),
            };
            let pid = spawn(job).unwrap();
            let mut status = 0;
            // SAFETY: waits for our own child.
            assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
            assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0, "{status:#x}");
        };
        std::fs::create_dir_all(pool.path().join("w1/fs")).unwrap();
        run("w1");
        assert!(!pool.path().join("w1").exists());
        assert!(pool.path().join(".trash-w1/fs").is_dir());
        // A trash entry of that name already: nothing moves.
        std::fs::create_dir(pool.path().join("w1")).unwrap();
        run("w1");
        assert!(pool.path().join("w1").is_dir() && pool.path().join(".trash-w1/fs").is_dir());
    }

    /// The child makes the next world's network namespace: a namespace
    /// with `lo` up, mounted on the spare's path and marked free; a claim
    /// takes it; the next child removes the taken one and makes another.
    /// (Root: it mounts, as the test suite runs.)
    #[test]
    fn the_child_makes_a_spare_network_namespace_and_replaces_a_taken_one() {
        let root = tempfile::tempdir().unwrap();
        let run = || {
            let job = Job {
                keep: vec![],
                dirs: vec![],
                parents: vec![],
                idle: None,
                release: vec![],
                remove: vec![],
                spare: Some(crate::netns_spare::Paths::new(root.path()).unwrap()),
                trash: None,
            };
            let pid = spawn(job).unwrap();
            let mut status = 0;
            // SAFETY: waits for our own child.
            assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
            assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0, "{status:#x}");
        };
        let dir = root.path().join(crate::netns_spare::DIR);
        let inode = || nix::sys::stat::stat(&dir.join("spare")).map(|s| s.st_ino).unwrap();
        // The spare's mount goes however the test ends.
        struct Unmount(std::ffi::CString);
        impl Drop for Unmount {
            fn drop(&mut self) {
                // SAFETY: unmounting a path we own (nothing if not mounted).
                unsafe { libc::umount2(self.0.as_ptr(), libc::MNT_DETACH) };
            }
        }
        let _unmount = Unmount(crate::sys::cpath(&dir.join("spare")).unwrap());
        run();
        assert_eq!(std::fs::read(dir.join(".lock")).unwrap(), [crate::netns_spare::FREE]);
        let first = inode();
        // A free spare stays.
        run();
        assert_eq!(inode(), first);
        let ns = crate::netns_spare::claim(root.path()).expect("the spare");
        assert_eq!(nix::sys::stat::fstat(&ns).unwrap().st_ino, first);
        // Inside it (on a thread of its own): `lo` alone, and up.
        let (up, links) = std::thread::scope(|s| {
            s.spawn(|| {
                nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
                // SAFETY: a socket of ours and a zeroed ifreq (plain data).
                let up = unsafe {
                    let sock = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
                    let mut req: libc::ifreq = std::mem::zeroed();
                    req.ifr_name[0] = b'l' as libc::c_char;
                    req.ifr_name[1] = b'o' as libc::c_char;
                    let got = libc::ioctl(sock, libc::SIOCGIFFLAGS as _, &mut req);
                    libc::close(sock);
                    got == 0 && req.ifr_ifru.ifru_flags & libc::IFF_UP as libc::c_short != 0
                };
                let dev = std::fs::read_to_string("/proc/thread-self/net/dev").unwrap();
                let links: Vec<String> =
                    dev.lines().skip(2).filter_map(|l| l.split(':').next().map(|n| n.trim().to_string())).collect();
                (up, links)
            })
            .join()
            .unwrap()
        });
        assert!(up && links == ["lo"], "lo up: {up}, links: {links:?}");
        // Taken: the next child replaces it.
        run();
        assert_ne!(inode(), first, "a taken spare was left for the next world");
        assert_eq!(std::fs::read(dir.join(".lock")).unwrap(), [crate::netns_spare::FREE]);
        let spare = crate::sys::cpath(&dir.join("spare")).unwrap();
        // SAFETY: unmounting a path we own.
        assert_eq!(unsafe { libc::umount2(spare.as_ptr(), libc::MNT_DETACH) }, 0);
        // (The guard's unmount then finds nothing: each spare was mounted once.)
    }
}
