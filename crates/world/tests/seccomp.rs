//! Real-kernel tests of the seccomp layer (root, x86_64).
//!
//! Each test forks; the child sets no_new_privs, installs the compiled default
//! profile and then makes only raw syscalls (no allocation: the parent is the
//! multi-threaded test harness) before reporting through a pipe and
//! `_exit`ing. Every check also runs in a control child without the filter, so
//! a check that would fail the same way unfiltered cannot prove anything
//! by accident.

mod seccomp {
    use std::ffi::CString;
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    use std::sync::OnceLock;
    use std::time::{Duration, Instant};

    use cloche_world::seccomp::{install, Profile, Program};
    use nix::errno::Errno;
    use nix::sys::signal::Signal;
    use nix::sys::wait::{waitpid, WaitStatus};
    use nix::unistd::{fork, ForkResult};

    const CLONE_NEWNS: u64 = 0x0002_0000;
    const CLONE_NEWUSER: u64 = 0x1000_0000;
    const CLONE_NEWPID: u64 = 0x2000_0000;
    const CLONE_NEWNET: u64 = 0x4000_0000;
    const SIGCHLD: u64 = 17;
    const AF_NETLINK: u64 = 16;
    const NETLINK_ROUTE: u64 = 0;
    const NETLINK_NETFILTER: u64 = 12;
    const SOCK_RAW: u64 = 3;
    const SOCK_STREAM: u64 = 1;
    const SOCK_DGRAM: u64 = 2;
    const SOCK_PACKET: u64 = 10;
    const SOCK_CLOEXEC: u64 = 0x80000;
    const AF_INET: u64 = 2;
    const AF_INET6: u64 = 10;
    const AF_PACKET: u64 = 17;
    const AF_VSOCK: u64 = 40;
    const IPPROTO_MPTCP: u64 = 262;
    const TIOCSTI: u64 = 0x5412;
    const TIOCLINUX: u64 = 0x541c;
    const FIONREAD: u64 = 0x541b;
    const TIOCGWINSZ: u64 = 0x5413;
    const HIGH: u64 = 0xdead_beef_0000_0000;
    const MAGIC: u64 = 0x636c_6f63_6865_5343; // "clocheSC"

    fn program() -> &'static Program {
        static PROG: OnceLock<Program> = OnceLock::new();
        PROG.get_or_init(|| Program::compile(&Profile::builtin_default().unwrap()).unwrap())
    }

    /// A raw syscall; returns the result or `-errno`. Async-signal-safe.
    fn sys(nr: libc::c_long, a: [u64; 6]) -> i64 {
        // SAFETY: the callers pass only integers and pointers to memory that
        // is live for the call (or deliberately bad pointers, which the
        // kernel rejects with EFAULT).
        let r = unsafe { libc::syscall(nr, a[0], a[1], a[2], a[3], a[4], a[5]) };
        if r == -1 {
            -i64::from(Errno::last_raw())
        } else {
            r
        }
    }

    fn exit_now(code: i32) -> ! {
        // SAFETY: _exit ends the process without running any user-space code.
        unsafe { libc::_exit(code) }
    }

    /// Set no_new_privs and install the filter, as the world's child does.
    /// `prog` must have been compiled before the fork.
    fn lock_down(prog: &Program) {
        if sys(libc::SYS_prctl, [libc::PR_SET_NO_NEW_PRIVS as u64, 1, 0, 0, 0, 0]) != 0 {
            exit_now(90);
        }
        if install(prog).is_err() {
            exit_now(91);
        }
    }

    #[derive(Clone, Copy, Debug, PartialEq)]
    enum Expect {
        /// A non-negative result.
        Ok,
        /// A non-negative result and this value written to `out`.
        OkOut(i32),
        Err(Errno),
        /// This error, which the kernel would also give unfiltered.
        ErrAsKernel(Errno),
    }

    #[derive(Clone, Copy)]
    struct Check {
        what: &'static str,
        nr: libc::c_long,
        args: [u64; 6],
        expect: Expect,
        /// Does the call fork a process (clone)? Then the new process exits
        /// at once and the caller reaps it.
        spawns: bool,
        /// Where the call writes an int worth reporting.
        out: *const i32,
    }

    fn check(what: &'static str, nr: libc::c_long, args: [u64; 6], expect: Expect) -> Check {
        Check { what, nr, args, expect, spawns: false, out: std::ptr::null() }
    }

    /// Run the checks in a child (filtered or not); return `[result, out]` per check.
    fn run_checks(checks: &[Check], filtered: bool) -> Vec<[i64; 2]> {
        let mut fds = [0; 2];
        // SAFETY: pipe2 writes two fds into the array.
        assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
        // SAFETY: both fds are fresh and owned here.
        let (rd, wr) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        let mut report = vec![[0i64; 2]; checks.len()];
        let report_ptr = report.as_mut_ptr();
        let report_len = std::mem::size_of_val(report.as_slice());
        let prog = program(); // compiled here, before the fork
                              // SAFETY: the child only makes raw syscalls and _exits.
        match unsafe { fork() }.unwrap() {
            ForkResult::Child => {
                if filtered {
                    lock_down(prog);
                }
                for (i, c) in checks.iter().enumerate() {
                    let r = sys(c.nr, c.args);
                    if c.spawns && r == 0 {
                        exit_now(0); // the new process
                    }
                    if c.spawns && r > 0 {
                        let mut st = 0;
                        // SAFETY: reaping our own child; `st` is a valid int.
                        unsafe { libc::waitpid(r as i32, &mut st, libc::__WALL) };
                    }
                    // SAFETY: `out` points into memory the parent set up before
                    // the fork (copied into this process); the report buffer
                    // was allocated before the fork too.
                    unsafe {
                        let out = if c.out.is_null() { 0 } else { i64::from(*c.out) };
                        *report_ptr.add(i) = [r, out];
                    }
                }
                let hdr = [MAGIC, checks.len() as u64];
                // SAFETY: writing buffers that are live and of the given sizes.
                unsafe {
                    libc::write(wr.as_raw_fd(), hdr.as_ptr().cast(), 16);
                    libc::write(wr.as_raw_fd(), report_ptr.cast(), report_len);
                }
                exit_now(0);
            }
            ForkResult::Parent { child } => {
                drop(wr);
                let mut buf = Vec::new();
                let mut f = std::fs::File::from(rd);
                std::io::Read::read_to_end(&mut f, &mut buf).unwrap();
                assert_eq!(waitpid(child, None).unwrap(), WaitStatus::Exited(child, 0), "checks child died");
                assert_eq!(buf.len(), 16 + report_len, "the child did not report every check");
                let word = |i: usize| u64::from_ne_bytes(buf[i * 8..i * 8 + 8].try_into().unwrap());
                assert_eq!((word(0), word(1)), (MAGIC, checks.len() as u64));
                (0..checks.len()).map(|i| [word(2 + 2 * i) as i64, word(3 + 2 * i) as i64]).collect()
            }
        }
    }

    fn errno_name(r: i64) -> String {
        if r >= 0 {
            format!("{r}")
        } else {
            format!("{}", Errno::from_raw(-r as i32))
        }
    }

    fn verify(checks: &[Check]) {
        verify_pair(checks, checks);
    }

    /// Runs `filtered` under the filter and `control` (the same checks,
    /// possibly aimed elsewhere) without; every check must behave as
    /// expected, and an expected refusal must not also happen unfiltered.
    /// Returns the control results.
    fn verify_pair(filtered: &[Check], control: &[Check]) -> Vec<[i64; 2]> {
        let got = run_checks(filtered, true);
        let ctl = run_checks(control, false);
        let mut failures = Vec::new();
        for ((c, [r, out]), [cr, _]) in filtered.iter().zip(&got).zip(&ctl) {
            let ok = match c.expect {
                Expect::Ok => *r >= 0,
                Expect::OkOut(v) => *r >= 0 && *out == i64::from(v),
                Expect::Err(e) => *r == -(e as i64) && *cr != *r,
                Expect::ErrAsKernel(e) => *r == -(e as i64),
            };
            println!(
                "{:<48} filtered {:<8} control {:<8} {}",
                c.what,
                errno_name(*r),
                errno_name(*cr),
                if ok { "ok" } else { "FAIL" }
            );
            if !ok {
                failures.push(format!(
                    "{}: got {} (control {}), want {:?}",
                    c.what,
                    errno_name(*r),
                    errno_name(*cr),
                    c.expect
                ));
            }
        }
        assert!(failures.is_empty(), "{failures:#?}");
        ctl
    }

    const EPERM: Expect = Expect::Err(Errno::EPERM);
    const EAFNOSUPPORT: Expect = Expect::Err(Errno::EAFNOSUPPORT);

    #[test]
    fn seccomp_kernel_refuses_namespaces_mounts_and_kernel_interfaces() {
        let n = |v: i64| v as u64;
        let mut checks = vec![
            check("getpid", libc::SYS_getpid, [0; 6], Expect::Ok),
            check("setns(-1, 0)", libc::SYS_setns, [n(-1), 0, 0, 0, 0, 0], EPERM),
            check("clone3(NULL, 0)", libc::SYS_clone3, [0; 6], Expect::Err(Errno::ENOSYS)),
            check("mount(NULL, ...)", libc::SYS_mount, [0; 6], EPERM),
            check("umount2(NULL, 0)", libc::SYS_umount2, [0; 6], EPERM),
            check("pivot_root(NULL, NULL)", libc::SYS_pivot_root, [0; 6], EPERM),
            check("chroot(NULL)", libc::SYS_chroot, [0; 6], EPERM),
            check("fsopen(NULL, 0)", libc::SYS_fsopen, [0; 6], EPERM),
            check("fsconfig(-1, ...)", libc::SYS_fsconfig, [n(-1), 0, 0, 0, 0, 0], EPERM),
            check("fsmount(-1, 0, 0)", libc::SYS_fsmount, [n(-1), 0, 0, 0, 0, 0], EPERM),
            check("fspick(-1, NULL, 0)", libc::SYS_fspick, [n(-1), 0, 0, 0, 0, 0], EPERM),
            check("open_tree(-1, NULL, 0)", libc::SYS_open_tree, [n(-1), 0, 0, 0, 0, 0], EPERM),
            check("move_mount(-1, NULL, -1, NULL, 0)", libc::SYS_move_mount, [n(-1), 0, n(-1), 0, 0, 0], EPERM),
            check("mount_setattr(-1, NULL, 0, NULL, 0)", libc::SYS_mount_setattr, [n(-1), 0, 0, 0, 0, 0], EPERM),
            check("open_tree_attr(-1, NULL, 0, NULL, 0)", 467, [n(-1), 0, 0, 0, 0, 0], EPERM),
            check("keyctl(0xdead)", libc::SYS_keyctl, [0xdead, 0, 0, 0, 0, 0], EPERM),
            check("add_key(NULL, ...)", libc::SYS_add_key, [0; 6], EPERM),
            check("request_key(NULL, ...)", libc::SYS_request_key, [0; 6], EPERM),
            check("bpf(0xffff, NULL, 0)", libc::SYS_bpf, [0xffff, 0, 0, 0, 0, 0], EPERM),
            check("perf_event_open(NULL, ...)", libc::SYS_perf_event_open, [0, 0, n(-1), n(-1), 0, 0], EPERM),
            check("userfaultfd(~0)", libc::SYS_userfaultfd, [0xffff_ffff, 0, 0, 0, 0, 0], EPERM),
            check("io_uring_setup(0, NULL)", libc::SYS_io_uring_setup, [0; 6], EPERM),
            check("io_uring_enter(-1, ...)", libc::SYS_io_uring_enter, [n(-1), 0, 0, 0, 0, 0], EPERM),
            check("io_uring_register(-1, ...)", libc::SYS_io_uring_register, [n(-1), 0, 0, 0, 0, 0], EPERM),
            check("init_module(NULL, 0, NULL)", libc::SYS_init_module, [0; 6], EPERM),
            check("finit_module(-1, NULL, 0)", libc::SYS_finit_module, [n(-1), 0, 0, 0, 0, 0], EPERM),
            check("delete_module(NULL, 0)", libc::SYS_delete_module, [0; 6], EPERM),
            check("kexec_load(0, 0, NULL, ~0)", libc::SYS_kexec_load, [0, 0, 0, 0xffff_ffff, 0, 0], EPERM),
            check(
                "kexec_file_load(-1, -1, 0, NULL, ~0)",
                libc::SYS_kexec_file_load,
                [n(-1), n(-1), 0, 0, 0xffff_ffff, 0],
                EPERM,
            ),
            check("open_by_handle_at(-1, NULL, 0)", libc::SYS_open_by_handle_at, [n(-1), 0, 0, 0, 0, 0], EPERM),
            check("name_to_handle_at(-1, NULL, ...)", libc::SYS_name_to_handle_at, [n(-1), 0, 0, 0, 0, 0], EPERM),
            check("clock_settime(REALTIME, NULL)", libc::SYS_clock_settime, [0; 6], EPERM),
            check("clock_adjtime(REALTIME, NULL)", libc::SYS_clock_adjtime, [0; 6], EPERM),
            check("settimeofday(bad, NULL)", libc::SYS_settimeofday, [1, 0, 0, 0, 0, 0], EPERM),
            check("adjtimex(NULL)", libc::SYS_adjtimex, [0; 6], EPERM),
            check("swapon(NULL, 0)", libc::SYS_swapon, [0; 6], EPERM),
            check("swapoff(NULL)", libc::SYS_swapoff, [0; 6], EPERM),
            check("reboot(0, 0, 0, NULL)", libc::SYS_reboot, [0; 6], EPERM),
            check("acct(bad)", libc::SYS_acct, [1, 0, 0, 0, 0, 0], EPERM),
            check("quotactl(0, NULL, 0, NULL)", libc::SYS_quotactl, [0; 6], EPERM),
            check("iopl(99)", libc::SYS_iopl, [99, 0, 0, 0, 0, 0], EPERM),
            check("ioperm(0x10000, 1, 1)", libc::SYS_ioperm, [0x10000, 1, 1, 0, 0, 0], EPERM),
            check("syslog(SIZE_BUFFER)", libc::SYS_syslog, [10, 0, 0, 0, 0, 0], EPERM),
            check("lookup_dcookie(0, NULL, 0)", libc::SYS_lookup_dcookie, [0; 6], EPERM),
            check("uselib(NULL)", libc::SYS_uselib, [0; 6], EPERM),
            check("kcmp(0, 0, 99, 0, 0) (not listed)", libc::SYS_kcmp, [0, 0, 99, 0, 0, 0], EPERM),
            check("personality(0xffffffff) query", libc::SYS_personality, [0xffff_ffff, 0, 0, 0, 0, 0], Expect::Ok),
            check("personality(READ_IMPLIES_EXEC)", libc::SYS_personality, [0x0040_0000, 0, 0, 0, 0, 0], EPERM),
            check("syscall 480 (newer than the table)", 480, [0; 6], Expect::ErrAsKernel(Errno::ENOSYS)),
        ];
        // The clone family: each success forks a process that exits at once.
        let mut spawn = |what, nr, flags: u64, expect| {
            let mut c = check(what, nr, [flags, 0, 0, 0, 0, 0], expect);
            c.spawns = true;
            checks.push(c);
        };
        spawn("clone(SIGCHLD) = fork", libc::SYS_clone, SIGCHLD, Expect::Ok);
        spawn("fork()", libc::SYS_fork, 0, Expect::Ok);
        spawn("clone(CLONE_NEWUSER|SIGCHLD)", libc::SYS_clone, CLONE_NEWUSER | SIGCHLD, EPERM);
        spawn("clone(CLONE_NEWNET|SIGCHLD)", libc::SYS_clone, CLONE_NEWNET | SIGCHLD, EPERM);
        spawn("clone(CLONE_NEWPID|SIGCHLD)", libc::SYS_clone, CLONE_NEWPID | SIGCHLD, EPERM);
        spawn("clone(CLONE_NEWNS|SIGCHLD)", libc::SYS_clone, CLONE_NEWNS | SIGCHLD, EPERM);
        spawn("clone(HIGH|CLONE_NEWUSER|SIGCHLD)", libc::SYS_clone, HIGH | CLONE_NEWUSER | SIGCHLD, EPERM);
        // Last: unfiltered, these move the control child into a new user
        // namespace, where it loses its capabilities for the checks above.
        checks.push(check("unshare(CLONE_NEWNS)", libc::SYS_unshare, [CLONE_NEWNS, 0, 0, 0, 0, 0], EPERM));
        checks.push(check("unshare(CLONE_NEWUSER)", libc::SYS_unshare, [CLONE_NEWUSER, 0, 0, 0, 0, 0], EPERM));
        verify(&checks);
    }

    #[test]
    fn seccomp_kernel_ioctl_socket_and_files() {
        // A pty (TIOCSTI works on it unfiltered: dev.tty.legacy_tiocsti=1 and
        // we are root), a pipe with 3 bytes in it, a scratch dir for a fifo.
        let ptmx = std::fs::OpenOptions::new().read(true).write(true).open("/dev/ptmx").unwrap();
        let (pts, pipe_rd, _pipe_wr) = {
            // SAFETY: grantpt/unlockpt/ptsname_r on a ptmx fd we own.
            let pts = unsafe {
                assert_eq!(libc::grantpt(ptmx.as_raw_fd()), 0);
                assert_eq!(libc::unlockpt(ptmx.as_raw_fd()), 0);
                let mut name = [0 as libc::c_char; 64];
                assert_eq!(libc::ptsname_r(ptmx.as_raw_fd(), name.as_mut_ptr(), name.len()), 0);
                std::ffi::CStr::from_ptr(name.as_ptr()).to_str().unwrap().to_owned()
            };
            let pts = std::fs::OpenOptions::new().read(true).write(true).open(pts).unwrap();
            let (rd, wr) = nix::unistd::pipe().unwrap();
            nix::unistd::write(&wr, b"abc").unwrap();
            (pts, rd, wr)
        };
        let dir = tempfile::tempdir().unwrap();
        let fifo_f = CString::new(dir.path().join("fifo-filtered").into_os_string().into_encoded_bytes()).unwrap();
        let fifo_c = CString::new(dir.path().join("fifo-control").into_os_string().into_encoded_bytes()).unwrap();
        let byte = b'x';
        let int_out: Box<i32> = Box::new(-1);
        let winsize = [0u16; 4];
        let rand = [0u8; 16];
        let pair = [0i32; 2];
        let ptr = |p: *const u8| p as u64;
        let sock = |what, [family, ty, protocol]: [u64; 3], expect| {
            check(what, libc::SYS_socket, [family, ty, protocol, 0, 0, 0], expect)
        };
        let (pts, prd) = (pts.as_raw_fd() as u64, pipe_rd.as_raw_fd() as u64);
        let mut fionread = check(
            "ioctl(pipe, FIONREAD)",
            libc::SYS_ioctl,
            [prd, FIONREAD, ptr(&*int_out as *const i32 as _), 0, 0, 0],
            Expect::OkOut(3),
        );
        fionread.out = &*int_out;
        let mknod = |fifo: &CString| {
            let mode = (libc::S_IFIFO | 0o600) as u64;
            check(
                "mknodat(fifo)",
                libc::SYS_mknodat,
                [libc::AT_FDCWD as u64, ptr(fifo.as_ptr().cast()), mode, 0, 0, 0],
                Expect::Ok,
            )
        };
        let common = vec![
            check("ioctl(pty, TIOCSTI)", libc::SYS_ioctl, [pts, TIOCSTI, ptr(&byte), 0, 0, 0], EPERM),
            check("ioctl(pty, HIGH|TIOCSTI)", libc::SYS_ioctl, [pts, HIGH | TIOCSTI, ptr(&byte), 0, 0, 0], EPERM),
            check("ioctl(0, TIOCSTI)", libc::SYS_ioctl, [0, TIOCSTI, ptr(&byte), 0, 0, 0], EPERM),
            check("ioctl(pty, TIOCLINUX)", libc::SYS_ioctl, [pts, TIOCLINUX, ptr(&byte), 0, 0, 0], EPERM),
            check("ioctl(pty, HIGH|TIOCLINUX)", libc::SYS_ioctl, [pts, HIGH | TIOCLINUX, ptr(&byte), 0, 0, 0], EPERM),
            check(
                "ioctl(pty, TIOCGWINSZ)",
                libc::SYS_ioctl,
                [pts, TIOCGWINSZ, ptr(winsize.as_ptr().cast()), 0, 0, 0],
                Expect::Ok,
            ),
            fionread,
            sock("socket(NETLINK, RAW, NETFILTER)", [AF_NETLINK, SOCK_RAW, NETLINK_NETFILTER], EAFNOSUPPORT),
            sock(
                "socket(HIGH|NETLINK, RAW, HIGH|NETFILTER)",
                [HIGH | AF_NETLINK, SOCK_RAW, HIGH | NETLINK_NETFILTER],
                EAFNOSUPPORT,
            ),
            sock("socket(NETLINK, RAW, AUDIT)", [AF_NETLINK, SOCK_RAW, 9], EAFNOSUPPORT),
            sock("socket(NETLINK, DGRAM, KOBJECT_UEVENT)", [AF_NETLINK, SOCK_DGRAM, 15], EAFNOSUPPORT),
            sock("socket(NETLINK, RAW, GENERIC)", [AF_NETLINK, SOCK_RAW, 16], EAFNOSUPPORT),
            sock("socket(NETLINK, RAW, SOCK_DIAG)", [AF_NETLINK, SOCK_RAW, 4], Expect::Ok),
            sock("socket(VSOCK, STREAM, 0)", [AF_VSOCK, SOCK_STREAM, 0], EAFNOSUPPORT),
            sock("socket(PACKET, RAW, 0)", [AF_PACKET, SOCK_RAW, 0], EAFNOSUPPORT),
            sock("socket(INET, SOCK_PACKET, 0)", [AF_INET, SOCK_PACKET, 0], EAFNOSUPPORT),
            sock("socket(INET, STREAM, MPTCP)", [AF_INET, SOCK_STREAM, IPPROTO_MPTCP], EAFNOSUPPORT),
            sock("socket(HIGH|INET, STREAM, 0)", [HIGH | AF_INET, SOCK_STREAM, 0], EAFNOSUPPORT),
            sock("socket(INET6, DGRAM|CLOEXEC, UDP)", [AF_INET6, SOCK_DGRAM | SOCK_CLOEXEC, 17], Expect::Ok),
            check(
                "socketpair(VSOCK, STREAM, 0)",
                libc::SYS_socketpair,
                [AF_VSOCK, SOCK_STREAM, 0, ptr(pair.as_ptr().cast()), 0, 0],
                EAFNOSUPPORT,
            ),
            check(
                "socketpair(UNIX, STREAM, 0)",
                libc::SYS_socketpair,
                [libc::AF_UNIX as u64, SOCK_STREAM, 0, ptr(pair.as_ptr().cast()), 0, 0],
                Expect::Ok,
            ),
            check(
                "socket(NETLINK, RAW, ROUTE)",
                libc::SYS_socket,
                [AF_NETLINK, SOCK_RAW, NETLINK_ROUTE, 0, 0, 0],
                Expect::Ok,
            ),
            check(
                "socket(INET, STREAM, 0)",
                libc::SYS_socket,
                [libc::AF_INET as u64, libc::SOCK_STREAM as u64, 0, 0, 0, 0],
                Expect::Ok,
            ),
            check(
                "socket(UNIX, DGRAM, 0)",
                libc::SYS_socket,
                [libc::AF_UNIX as u64, libc::SOCK_DGRAM as u64, 0, 0, 0, 0],
                Expect::Ok,
            ),
            check("getrandom(16)", libc::SYS_getrandom, [ptr(rand.as_ptr()), 16, 0, 0, 0, 0], Expect::Ok),
            check("memfd_create", libc::SYS_memfd_create, [ptr(c"x".as_ptr().cast()), 0, 0, 0, 0, 0], Expect::Ok),
        ];
        // The mknod check needs a fresh path in each child.
        let mut filtered = common.clone();
        filtered.push(mknod(&fifo_f));
        let mut control = common;
        control.push(mknod(&fifo_c));
        // Unfiltered, TIOCSTI on fd 0 would type into the terminal of whoever
        // runs the tests: the control aims it at the pipe instead.
        let fd0 = control.iter_mut().find(|c| c.what == "ioctl(0, TIOCSTI)").unwrap();
        fd0.args[0] = prd;
        let ctl = verify_pair(&filtered, &control);
        // TIOCSTI really injected input in the control run (3 checks: plain,
        // high bits, fd 0 if it is this pty — it is not): the pty master holds
        // the "x"s the filtered run could not push.
        assert_eq!(ctl[0][0], 0, "TIOCSTI unfiltered");
        assert_eq!(ctl[1][0], 0, "the kernel ignores the upper half of the request");
        let meta = std::fs::symlink_metadata(dir.path().join("fifo-filtered")).unwrap();
        assert!(std::os::unix::fs::FileTypeExt::is_fifo(&meta.file_type()));
    }

    /// Fork, lock down, run `body` (raw syscalls only); return how the child ended.
    fn child_status(filtered: bool, body: impl FnOnce()) -> WaitStatus {
        let prog = program(); // compiled here, before the fork
                              // SAFETY: the child only makes raw syscalls and _exits or execs.
        match unsafe { fork() }.unwrap() {
            ForkResult::Child => {
                if filtered {
                    lock_down(prog);
                }
                body();
                exit_now(0);
            }
            ForkResult::Parent { child } => waitpid(child, None).unwrap(),
        }
    }

    fn int80_getpid() -> i64 {
        let r: i64;
        // SAFETY: i386 getpid (20) through the compat entry; it takes no
        // arguments and touches no memory.
        unsafe {
            std::arch::asm!("int 0x80", inlateout("rax") 20i64 => r, options(nostack));
        }
        r
    }

    #[test]
    fn seccomp_kernel_kills_other_abis() {
        // Unfiltered, int 0x80 getpid works (IA32 emulation is on here).
        let control = child_status(false, || {
            let r = int80_getpid();
            exit_now(if r == sys(libc::SYS_getpid, [0; 6]) { 7 } else { 8 });
        });
        assert!(matches!(control, WaitStatus::Exited(_, 7)), "control: {control:?}");
        let filtered = child_status(true, || {
            int80_getpid();
            exit_now(3);
        });
        assert!(matches!(filtered, WaitStatus::Signaled(_, Signal::SIGSYS, _)), "i386 syscall: {filtered:?}");
        // x32: the same numbers with bit 30 set, on the x86_64 entry.
        let filtered = child_status(true, || {
            sys(0x4000_0000 | libc::SYS_getpid, [0; 6]);
            exit_now(3);
        });
        assert!(matches!(filtered, WaitStatus::Signaled(_, Signal::SIGSYS, _)), "x32 syscall: {filtered:?}");
    }

    /// execve under the filter, with the argv/envp built before the fork.
    fn exec_status(argv: &[&str]) -> WaitStatus {
        let args: Vec<CString> = argv.iter().map(|a| CString::new(*a).unwrap()).collect();
        let env: Vec<CString> = std::env::vars_os()
            .filter_map(|(k, v)| {
                let mut kv = k.into_encoded_bytes();
                kv.push(b'=');
                kv.extend(v.into_encoded_bytes());
                CString::new(kv).ok()
            })
            .collect();
        let mut argp: Vec<*const libc::c_char> = args.iter().map(|a| a.as_ptr()).collect();
        argp.push(std::ptr::null());
        let mut envp: Vec<*const libc::c_char> = env.iter().map(|e| e.as_ptr()).collect();
        envp.push(std::ptr::null());
        child_status(true, || {
            // SAFETY: NULL-terminated arrays of C strings, live until exec.
            unsafe { libc::execve(argp[0], argp.as_ptr(), envp.as_ptr()) };
            exit_now(127);
        })
    }

    fn which(tool: &str) -> Option<String> {
        std::env::var_os("PATH")?
            .to_str()?
            .split(':')
            .map(|d| format!("{d}/{tool}"))
            .find(|p| std::fs::metadata(p).is_ok())
    }

    #[test]
    fn seccomp_kernel_programs_still_run() {
        assert!(matches!(exec_status(&["/bin/true"]), WaitStatus::Exited(_, 0)));
        assert!(matches!(exec_status(&["/bin/false"]), WaitStatus::Exited(_, 1)), "not vacuous");
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().to_str().unwrap();
        let script = format!(
            "set -e; cd {d}; echo hello > a; cat a | tr a-z A-Z > b; grep -q HELLO b; mkdir sub; \
             ln -s a l; ln a h; mv b c; chmod 600 c; touch -d @0 c; mkfifo f; test -p f; \
             ls -la > /dev/null; (sleep 0.01 &); wait; date > /dev/null; id -u > /dev/null; \
             unshare -U true 2>/dev/null && exit 9; rm -rf sub l h c f; exit 42"
        );
        let st = exec_status(&["/bin/sh", "-c", &script]);
        assert!(matches!(st, WaitStatus::Exited(_, 42)), "shell: {st:?}");
        // Ordinary programs, when installed here.
        let mut ran = Vec::new();
        let tools: [(&str, Vec<String>); 4] = [
            ("python3", vec!["-c".into(), "import os,subprocess,threading,socket,tempfile,json; t=threading.Thread(target=lambda:None); t.start(); t.join(); s=socket.socket(); s.close(); assert subprocess.run(['true']).returncode==0; tempfile.TemporaryFile().close(); os._exit(42)".into()]),
            ("node", vec!["-e".into(), "require('fs').readdirSync('/'); require('child_process').execSync('true'); process.exit(42)".into()]),
            ("git", vec!["-C".into(), d.into(), "init".into(), "-q".into(), "repo".into()]),
            ("gcc", vec!["--version".into()]),
        ];
        for (tool, args) in tools {
            let Some(path) = which(tool) else { continue };
            let mut argv = vec![path.as_str()];
            argv.extend(args.iter().map(String::as_str));
            let st = exec_status(&argv);
            let want = if matches!(tool, "python3" | "node") { 42 } else { 0 };
            assert!(matches!(st, WaitStatus::Exited(_, c) if c == want), "{tool}: {st:?}");
            ran.push(tool);
        }
        println!("ran under the filter: sh, {}", ran.join(", "));
    }

    /// Parse+compile and install times; run with
    /// `cargo test --release -p cloche-world --test seccomp -- --ignored --nocapture`.
    #[test]
    #[ignore]
    fn seccomp_timing() {
        let median = |mut v: Vec<Duration>| {
            v.sort();
            v[v.len() / 2]
        };
        let mut compile = Vec::new();
        let mut prog = None;
        for _ in 0..200 {
            let t = Instant::now();
            let p = Program::compile(&Profile::builtin_default().unwrap()).unwrap();
            compile.push(t.elapsed());
            prog = Some(p);
        }
        let prog = prog.unwrap();
        let mut parse = Vec::new();
        for _ in 0..200 {
            let t = Instant::now();
            Profile::builtin_default().unwrap();
            parse.push(t.elapsed());
        }
        let mut load = Vec::new();
        for _ in 0..200 {
            let (rd, wr) = nix::unistd::pipe().unwrap();
            let p = &prog;
            let st = child_status(false, || {
                let mut t0 = libc::timespec { tv_sec: 0, tv_nsec: 0 };
                let mut t1 = t0;
                sys(libc::SYS_prctl, [libc::PR_SET_NO_NEW_PRIVS as u64, 1, 0, 0, 0, 0]);
                // SAFETY: clock_gettime writes one timespec (vDSO, no allocation).
                unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut t0) };
                let ok = install(p).is_ok();
                // SAFETY: as above.
                unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut t1) };
                let ns: u64 = ((t1.tv_sec - t0.tv_sec) * 1_000_000_000 + (t1.tv_nsec - t0.tv_nsec)) as u64;
                // SAFETY: writing 8 live bytes.
                unsafe { libc::write(wr.as_raw_fd(), (&ns as *const u64).cast(), 8) };
                exit_now(if ok { 0 } else { 1 });
            });
            assert!(matches!(st, WaitStatus::Exited(_, 0)));
            drop(wr);
            let mut b = [0u8; 8];
            nix::unistd::read(&rd, &mut b).unwrap();
            load.push(Duration::from_nanos(u64::from_ne_bytes(b)));
        }
        println!(
            "default profile: {} BPF instructions; parse {:?}, parse+compile {:?}, install {:?} (medians of 200)",
            prog.len(),
            median(parse),
            median(compile),
            median(load)
        );
    }
}
