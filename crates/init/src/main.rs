//! cloche-init: pid 1 of a world.
//!
//! The engine executes this program as the first process of a world's pid
//! namespace, after every isolation layer (mounts, capabilities, seccomp) is
//! in place. It exists so that the world never sees a forked copy of cloche
//! itself (its argv, environment or memory) as pid 1. It is freestanding (no
//! C library, no Rust std: see `sys.rs`), so it starts in microseconds and
//! loads nothing from the world's filesystem.
//!
//! It does four things:
//! 1. makes itself non-dumpable, so no process of the world can open
//!    `/proc/1/exe`, `/proc/1/mem` or ptrace it;
//! 2. forks and executes the command given as its arguments (PATH lookup in
//!    the world's environment, as execvp does; a file without `#!` that the
//!    kernel will not execute is run by /bin/sh); with `--tty`, the command
//!    first gets a session whose controlling terminal is its fd 0 (the
//!    world's own pseudo-terminal);
//! 3. forwards SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1 and SIGUSR2 to the
//!    command (pid 1 ignores signals it has no handler for);
//! 4. reaps every child and, when the command exits, exits with its status
//!    (128 + N when killed by signal N). The kernel then kills whatever else
//!    is left in the pid namespace.
//!
//! Exit codes of its own: 127 command not found, 126 not executable, 125
//! internal failure.

#![no_std]
#![no_main]

mod mem;
mod sys;

use core::sync::atomic::{AtomicIsize, Ordering};

/// Pid of the command, read by the signal handler.
static CHILD: AtomicIsize = AtomicIsize::new(0);

const FORWARDED: [usize; 6] = [2, 15, 1, 3, 10, 12]; // INT TERM HUP QUIT USR1 USR2

core::arch::global_asm!(
    ".globl _start",
    "_start:",
    "xor ebp, ebp",
    "mov rdi, rsp", // argc, argv..., NULL, envp..., NULL
    "and rsp, -16",
    "call {entry}",
    "ud2",
    entry = sym entry,
);

/// # Safety
/// Called once, by `_start`, with the initial stack pointer.
unsafe extern "C" fn entry(sp: *const usize) -> ! {
    // SAFETY: the kernel's initial stack: argc, then argc pointers and NULL,
    // then the environment pointers and NULL.
    let (argc, argv, envp) = unsafe {
        let argc = *sp;
        let argv = sp.add(1) as *const *const u8;
        (argc, argv, argv.add(argc + 1))
    };
    sys::set_non_dumpable();
    sys::set_name();
    // Only ever the first process of a world's own pid namespace: killing
    // "every other process" (kill(-1)) means the world there, and would mean
    // the whole host anywhere else.
    if sys::getpid() != 1 {
        say(&[b"cloche-init: must run as pid 1 of a world (cloche starts it)\n"]);
        sys::exit(125);
    }
    // SAFETY: argv has argc entries.
    let first = if argc >= 2 { unsafe { cstr(*argv.add(1)) } } else { b"" };
    if first == b"--serve" {
        // SAFETY: argv has argc entries.
        let fd = if argc >= 3 { parse_fd(unsafe { cstr(*argv.add(2)) }) } else { None };
        match fd {
            Some(fd) => serve(fd),
            None => {
                say(&[b"cloche-init: --serve needs the control socket's fd number\n"]);
                sys::exit(125);
            }
        }
    }
    // One-shot: cloche-init [--tty] -- CMD [ARGS...]. With --tty, fds 0-2
    // are a pseudo-terminal of the world's own and the command leads a
    // session whose controlling terminal it is (job control, ^C and ^Z go
    // to its foreground job, never to pid 1).
    let tty = first == b"--tty";
    // SAFETY: argv has argc entries.
    let first = if tty && argc >= 3 { unsafe { cstr(*argv.add(2)) } } else { first };
    let skip = usize::from(tty) + if first == b"--" { 2 } else { 1 };
    if argc <= skip {
        say(&[b"cloche-init: no command given\n"]);
        sys::exit(125);
    }
    for sig in FORWARDED {
        sys::sigaction(sig, forward as *const () as usize);
    }
    let pid = sys::fork();
    if pid < 0 {
        say(&[b"cloche-init: fork failed\n"]);
        sys::exit(125);
    }
    if pid == 0 {
        for sig in FORWARDED {
            sys::sigaction(sig, sys::SIG_DFL);
        }
        if tty {
            sys::take_terminal();
        }
        // SAFETY: argv[skip..] and envp come from the kernel, NULL-terminated.
        sys::exit(unsafe { exec_command(argv.add(skip), envp) });
    }
    CHILD.store(pid, Ordering::Relaxed);
    sys::exit(reap_until(pid))
}

extern "C" fn forward(sig: i32) {
    let pid = CHILD.load(Ordering::Relaxed);
    if pid > 0 {
        sys::kill(pid, sig as usize);
    }
}

/// A small decimal fd number.
fn parse_fd(s: &[u8]) -> Option<usize> {
    if s.is_empty() || s.len() > 6 || !s.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(s.iter().fold(0, |n, d| n * 10 + (d - b'0') as usize))
}

/// Serve mode (a batch): run the entries the engine sends over the control
/// socket (`cloche-init --serve FD`), one at
/// a time, each in a fresh child with the stdin/stdout/stderr passed along;
/// answer each with its status. After each entry every process it left
/// behind is killed, so the next entry starts from a quiet world and each
/// entry's changes are its own. EOF on the socket ends the world.
///
/// A request is one SOCK_SEQPACKET message: `R`, u32 argc, argc
/// NUL-terminated strings, u32 envc, envc strings, the cwd (NUL-terminated),
/// with three fds (stdin, stdout, stderr) as SCM_RIGHTS. The answer: `E` and
/// the status as a little-endian i32 (the command's code, 128+N for signal
/// N, 125 for a malformed request or an unusable cwd).
fn serve(control: usize) -> ! {
    sys::set_cloexec(control); // entries never inherit it
    let mut buf = [0u8; 1 << 18];
    loop {
        let (n, fds) = sys::recv_with_fds(control, &mut buf);
        if n == -sys::EINTR {
            continue;
        }
        if n <= 0 {
            kill_rest();
            sys::exit(0);
        }
        let status = run_entry(&buf[..n as usize], fds);
        for fd in fds.into_iter().filter(|fd| *fd >= 0) {
            sys::close(fd as usize);
        }
        let s = status.to_le_bytes();
        sys::write(control, &[b'E', s[0], s[1], s[2], s[3]]);
    }
}

/// Kills every other process of the world and reaps them all.
fn kill_rest() {
    sys::kill(-1, sys::SIGKILL);
    loop {
        let (pid, _) = sys::wait_any();
        if pid == -sys::EINTR {
            continue;
        }
        if pid < 0 {
            return; // ECHILD: nothing left
        }
    }
}

/// Parses a request and runs it to completion; returns its status.
fn run_entry(msg: &[u8], fds: [i32; 3]) -> i32 {
    let mut argv: [*const u8; 1024] = [core::ptr::null(); 1024];
    let mut envp: [*const u8; 1024] = [core::ptr::null(); 1024];
    let Some(cwd) = parse_request(msg, &mut argv, &mut envp) else {
        if fds[2] >= 0 {
            sys::write(fds[2] as usize, b"cloche-init: malformed request\n");
        }
        return 125;
    };
    let pid = sys::fork();
    if pid < 0 {
        return 125;
    }
    if pid == 0 {
        for (i, fd) in fds.iter().enumerate() {
            if *fd >= 0 && *fd as usize != i {
                sys::dup2(*fd as usize, i);
            }
        }
        // SAFETY: cwd is NUL-terminated inside msg.
        if unsafe { sys::chdir(cwd) } < 0 {
            // SAFETY: as above.
            say(&[b"cloche: cannot enter the working directory ", unsafe { cstr(cwd) }, b"\n"]);
            sys::exit(125);
        }
        // SAFETY: argv and envp are NULL-terminated arrays of strings in msg.
        sys::exit(unsafe { exec_command(argv.as_ptr(), envp.as_ptr()) });
    }
    let status = reap_until(pid);
    kill_rest();
    status
}

/// Fills `argv` and `envp` (NULL-terminated) with pointers into `msg`;
/// returns the cwd. None if the request is malformed.
fn parse_request(msg: &[u8], argv: &mut [*const u8], envp: &mut [*const u8]) -> Option<*const u8> {
    let mut at = 1;
    if msg.first() != Some(&b'R') {
        return None;
    }
    let count = |at: &mut usize| -> Option<usize> {
        let b = msg.get(*at..*at + 4)?;
        *at += 4;
        Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
    };
    // One NUL-terminated string starting at `at`.
    let string = |at: &mut usize| -> Option<*const u8> {
        let start = *at;
        let len = msg.get(start..)?.iter().position(|&c| c == 0)?;
        *at = start + len + 1;
        Some(msg[start..].as_ptr())
    };
    let argc = count(&mut at)?;
    if argc == 0 || argc >= argv.len() {
        return None;
    }
    for slot in argv.iter_mut().take(argc) {
        *slot = string(&mut at)?;
    }
    argv[argc] = core::ptr::null();
    let envc = count(&mut at)?;
    if envc >= envp.len() {
        return None;
    }
    for slot in envp.iter_mut().take(envc) {
        *slot = string(&mut at)?;
    }
    envp[envc] = core::ptr::null();
    let cwd = string(&mut at)?;
    (at == msg.len()).then_some(cwd)
}

/// Reaps children until `main` exits; returns its shell-style status.
fn reap_until(main: isize) -> i32 {
    loop {
        let (pid, status) = sys::wait_any();
        if pid == -sys::EINTR {
            continue;
        }
        if pid < 0 {
            return 125; // ECHILD: cannot happen before main exits
        }
        if pid == main {
            let sig = status & 0x7f;
            return if sig == 0 { (status >> 8) & 0xff } else { 128 + sig };
        }
    }
}

/// Writes the pieces to stderr.
fn say(parts: &[&[u8]]) {
    for p in parts {
        sys::write(2, p);
    }
}

/// A NUL-terminated C string as a slice (without the NUL).
///
/// # Safety
/// `p` points to a NUL-terminated string.
unsafe fn cstr<'a>(p: *const u8) -> &'a [u8] {
    let mut n = 0;
    // SAFETY: stops at the terminating NUL the caller guarantees.
    unsafe {
        while *p.add(n) != 0 {
            n += 1;
        }
        core::slice::from_raw_parts(p, n)
    }
}

/// The value of `PATH` in `envp`, if any.
///
/// # Safety
/// `envp` is a NULL-terminated array of C strings.
unsafe fn path_var<'a>(envp: *const *const u8) -> Option<&'a [u8]> {
    let mut i = 0;
    // SAFETY: walks the NULL-terminated array.
    unsafe {
        while !(*envp.add(i)).is_null() {
            let e = cstr(*envp.add(i));
            if let Some(v) = e.strip_prefix(b"PATH=") {
                return Some(v);
            }
            i += 1;
        }
    }
    None
}

/// Executes argv[0] like execvp; returns the exit code to use on failure.
///
/// # Safety
/// `argv` and `envp` are NULL-terminated arrays of C strings.
unsafe fn exec_command(argv: *const *const u8, envp: *const *const u8) -> i32 {
    // SAFETY: argv[0] exists (argc >= 2 was checked by the caller).
    let name = unsafe { cstr(*argv) };
    let mut buf = [0u8; 4096];
    let mut err = -sys::ENOENT;
    if name.is_empty() {
        return fail(name, err);
    }
    if name.contains(&b'/') {
        // SAFETY: argv[0] is NUL-terminated.
        err = unsafe { try_exec(*argv, argv, envp) };
        return fail(name, err);
    }
    // SAFETY: envp is NULL-terminated.
    let path = unsafe { path_var(envp) }.unwrap_or(b"/usr/local/bin:/usr/bin:/bin");
    let mut denied = false;
    for dir in path.split(|&c| c == b':') {
        let dir: &[u8] = if dir.is_empty() { b"." } else { dir };
        let len = dir.len() + 1 + name.len();
        if len + 1 > buf.len() {
            continue;
        }
        buf[..dir.len()].copy_from_slice(dir);
        buf[dir.len()] = b'/';
        buf[dir.len() + 1..len].copy_from_slice(name);
        buf[len] = 0;
        // SAFETY: buf holds a NUL-terminated path.
        let e = unsafe { try_exec(buf.as_ptr(), argv, envp) };
        if e == -sys::EACCES {
            denied = true;
        } else if e != -sys::ENOENT && e != -sys::ENOTDIR {
            return fail(name, e);
        }
    }
    fail(name, if denied { -sys::EACCES } else { -sys::ENOENT })
}

/// execve, and on ENOEXEC (no `#!`) the file as a /bin/sh script, as
/// execvp does. Returns the negative errno.
///
/// # Safety
/// As `sys::execve`.
unsafe fn try_exec(path: *const u8, argv: *const *const u8, envp: *const *const u8) -> isize {
    // SAFETY: forwarded from the caller.
    let e = unsafe { sys::execve(path, argv, envp) };
    if e != -sys::ENOEXEC {
        return e;
    }
    let mut sh_argv: [*const u8; 256] = [core::ptr::null(); 256];
    sh_argv[0] = c"sh".as_ptr().cast();
    sh_argv[1] = path;
    let mut i = 1;
    // SAFETY: walks the NULL-terminated argv, leaving a NULL at the end.
    unsafe {
        while !(*argv.add(i)).is_null() {
            if i + 2 >= sh_argv.len() {
                return e; // too many arguments for the fallback
            }
            sh_argv[i + 1] = *argv.add(i);
            i += 1;
        }
        sys::execve(c"/bin/sh".as_ptr().cast(), sh_argv.as_ptr(), envp);
    }
    e
}

/// Says why the command could not run; returns 127 (not found) or 126.
fn fail(name: &[u8], err: isize) -> i32 {
    let (code, why): (i32, &[u8]) = match -err {
        sys::ENOENT | sys::ENOTDIR => (127, b"No such file or directory"),
        sys::EACCES => (126, b"Permission denied"),
        sys::ENOEXEC => (126, b"Exec format error"),
        _ => (126, b"cannot be executed"),
    };
    say(&[b"cloche: cannot execute ", name, b": ", why, b"\n"]);
    code
}

#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {
    say(&[b"cloche-init: internal error\n"]);
    sys::exit(125)
}

/// The prebuilt `core` carries unwind tables that name this symbol; this
/// binary never unwinds (panic = "abort"), so nothing ever calls it.
#[no_mangle]
extern "C" fn rust_eh_personality() {}
