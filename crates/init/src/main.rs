//! cloche-init: pid 1 of a world.
//!
//! The engine executes this small program as the first process of a world's
//! pid namespace, after every isolation layer (mounts, capabilities, seccomp)
//! is already in place. It exists so that the world never sees a forked copy
//! of cloche itself (its argv, environment or memory) as pid 1.
//!
//! It does four things:
//! 1. makes itself non-dumpable, so no process of the world can open
//!    `/proc/1/exe`, `/proc/1/mem` or ptrace it;
//! 2. forks and executes the command given as its arguments (PATH lookup in
//!    the world's environment);
//! 3. forwards SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1 and SIGUSR2 to the command;
//! 4. reaps every child and, when the command exits, exits with its status
//!    (128 + N when killed by signal N). The kernel then kills whatever else
//!    is left in the pid namespace.
//!
//! Exit codes of its own: 127 command not found, 126 command not executable,
//! 125 internal failure (fork).

use std::ffi::{CString, OsString};
use std::os::unix::ffi::OsStringExt;
use std::sync::atomic::{AtomicI32, Ordering};

/// Pid of the command, read by the signal handler.
static CHILD: AtomicI32 = AtomicI32::new(0);

const FORWARDED: [libc::c_int; 6] =
    [libc::SIGINT, libc::SIGTERM, libc::SIGHUP, libc::SIGQUIT, libc::SIGUSR1, libc::SIGUSR2];

extern "C" fn forward(sig: libc::c_int) {
    let pid = CHILD.load(Ordering::Relaxed);
    if pid > 0 {
        // SAFETY: kill is async-signal-safe.
        unsafe { libc::kill(pid, sig) };
    }
}

fn main() {
    // SAFETY: prctl with integer arguments only.
    unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) };

    let args: Vec<CString> =
        std::env::args_os().skip(1).map(|a: OsString| CString::new(a.into_vec()).unwrap_or_default()).collect();
    if args.is_empty() || args[0].as_bytes().is_empty() {
        eprintln!("cloche-init: no command given");
        std::process::exit(125);
    }
    install_handlers();

    let pid = spawn(&args);
    CHILD.store(pid, Ordering::Relaxed);
    std::process::exit(reap_until(pid));
}

/// Installs the forwarding handlers (pid 1 ignores signals without handlers).
fn install_handlers() {
    for sig in FORWARDED {
        // SAFETY: a zeroed sigaction with a plain handler is valid; forward()
        // only calls async-signal-safe functions.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = forward as *const () as usize;
            sa.sa_flags = libc::SA_RESTART;
            libc::sigemptyset(&mut sa.sa_mask);
            libc::sigaction(sig, &sa, std::ptr::null_mut());
        }
    }
}

/// Forks and executes the command; returns the child's pid.
fn spawn(args: &[CString]) -> libc::pid_t {
    // SAFETY: the process is single-threaded; the child only resets its
    // signal dispositions, execs, or writes a message and exits.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        eprintln!("cloche-init: fork: {}", std::io::Error::last_os_error());
        std::process::exit(125);
    }
    if pid == 0 {
        exec_command(args);
    }
    pid
}

/// Child side of spawn: default signal dispositions, then execvp.
fn exec_command(args: &[CString]) -> ! {
    let mut argv: Vec<*const libc::c_char> = args.iter().map(|a| a.as_ptr()).collect();
    argv.push(std::ptr::null());
    // SAFETY: restoring default dispositions and calling execvp with a
    // NULL-terminated argv of valid C strings.
    let err = unsafe {
        for sig in FORWARDED {
            libc::signal(sig, libc::SIG_DFL);
        }
        libc::execvp(argv[0], argv.as_ptr());
        std::io::Error::last_os_error()
    };
    let name = args[0].to_string_lossy();
    eprintln!("cloche: cannot execute {name}: {err}");
    let code = match err.raw_os_error() {
        Some(libc::ENOENT) | Some(libc::ENOTDIR) => 127,
        _ => 126,
    };
    // SAFETY: leave the forked child without running atexit handlers.
    unsafe { libc::_exit(code) }
}

/// Reaps children until `main` exits; returns its shell-style status.
fn reap_until(main: libc::pid_t) -> i32 {
    loop {
        let mut status = 0;
        // SAFETY: wait for any child; status is a valid out-pointer.
        let pid = unsafe { libc::waitpid(-1, &mut status, 0) };
        if pid < 0 {
            if std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            // ECHILD: nothing left (should not happen before main exits).
            return 125;
        }
        if pid == main {
            if libc::WIFEXITED(status) {
                return libc::WEXITSTATUS(status);
            }
            if libc::WIFSIGNALED(status) {
                return 128 + libc::WTERMSIG(status);
            }
        }
    }
}
