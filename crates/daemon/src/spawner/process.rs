//! The spawner process (`cloched __spawner STATE cgroup|-`): forks a job
//! per message, reaps them; when the daemon is gone, kills them all and
//! settles what they leave, then exits.

use super::{LOCK_FD, MAX_FDS, SPAWNER_FD};
use crate::jobs_cgroup::JobsCgroup;
use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
use std::collections::HashSet;
use std::io::{self, IoSliceMut};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// The spawner process (`cloched __spawner`): returns its exit code.
pub fn main() -> i32 {
    let args: Vec<std::ffi::OsString> = std::env::args_os().skip(2).collect();
    let (state, cgroup) = match args.as_slice() {
        [state, cg] if cg == "cgroup" || cg == "-" => {
            let state = PathBuf::from(state);
            let cgroup = if cg == "cgroup" { JobsCgroup::of_state(&state) } else { None };
            (state, cgroup)
        }
        _ => {
            eprintln!("cloched-spawner: cloched starts this process itself");
            return 2;
        }
    };
    match serve(&state, cgroup.as_ref()) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("cloched-spawner: {e}");
            1
        }
    }
}

/// Runs `f` with the daemon's logs (JSON lines on stderr) for this thread
/// only: a forked job inherits no subscriber (nothing is logged in a
/// world's start path, and a world's stderr may be a job's).
fn logged<T>(f: impl FnOnce() -> T) -> T {
    tracing::subscriber::with_default(crate::log_subscriber(), f)
}

/// fd `fd` is open and of type `kind` (`S_IFSOCK`, `S_IFREG`).
fn is_open_as(fd: RawFd, kind: libc::mode_t) -> bool {
    // SAFETY: fstat into a zeroed stat of our own.
    unsafe {
        let mut st: libc::stat = std::mem::zeroed();
        libc::fstat(fd, &mut st) == 0 && st.st_mode & libc::S_IFMT == kind
    }
}

fn serve(state: &std::path::Path, cgroup: Option<&JobsCgroup>) -> io::Result<()> {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    use nix::sys::signal::{SigSet, SigmaskHow, Signal};
    use nix::sys::signalfd::{SfdFlags, SignalFd};
    if !is_open_as(SPAWNER_FD, libc::S_IFSOCK) || !is_open_as(LOCK_FD, libc::S_IFREG) {
        return Err(io::Error::other("fds 3 and 4 are not the daemon's (cloched starts this process itself)"));
    }
    // SAFETY: fds 3 and 4 were handed to this process, owned from here on.
    let (sock, lock) = unsafe { (OwnedFd::from_raw_fd(SPAWNER_FD), OwnedFd::from_raw_fd(LOCK_FD)) };
    // The lock goes to every job (fork), never into a world (exec).
    nix::fcntl::fcntl(&lock, nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC))?;
    // Into the daemon's cgroup before any job: each is born there.
    let cgroup = cgroup.filter(|cg| match cg.join() {
        Ok(()) => true,
        Err(e) => {
            logged(|| tracing::warn!(cgroup = %cg.path().display(), error = %e, "the spawner's cgroup"));
            false
        }
    });
    // Patterns compiled once here, inherited by every job forked from now
    // on: the built-in policy's command rules (a submission classifies its
    // batch) and the audit's redaction (every job that audits).
    cloche_policy::Policy::builtin().compile_commands();
    cloche_trace::redact::compile_now();
    let store = cloche_policy::store::Store::open(state).ok();
    let load_bound = || store.as_ref().map(|s| s.load_bound());
    load_bound();
    let mut chld = SigSet::empty();
    chld.add(Signal::SIGCHLD);
    let mut old = SigSet::empty();
    nix::sys::signal::sigprocmask(SigmaskHow::SIG_BLOCK, Some(&chld), Some(&mut old)).map_err(io::Error::from)?;
    let sfd = SignalFd::with_flags(&chld, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK).map_err(io::Error::from)?;
    let mut jobs = HashSet::new();
    loop {
        let (sock_ready, sig_ready) = {
            let mut fds = [PollFd::new(sock.as_fd(), PollFlags::POLLIN), PollFd::new(sfd.as_fd(), PollFlags::POLLIN)];
            match poll(&mut fds, PollTimeout::NONE) {
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => return Err(e.into()),
                Ok(_) => {}
            }
            (fds[0].any().unwrap_or(false), fds[1].any().unwrap_or(false))
        };
        if sig_ready {
            while let Ok(Some(_)) = sfd.read_signal() {}
            reap(&mut jobs);
        }
        if !sock_ready {
            continue;
        }
        let fds = match receive(sock.as_fd()) {
            Ok(Some(f)) => f,
            // The daemon is gone (however it went: the kernel closed its end).
            Ok(None) | Err(_) => break,
        };
        if fds.is_empty() {
            continue;
        }
        // SAFETY: this process has one thread; the child runs the job and
        // exits, the parent only closes its copies.
        match unsafe { libc::fork() } {
            0 => {
                drop(sfd);
                drop(sock);
                let _ = nix::sys::signal::sigprocmask(SigmaskHow::SIG_SETMASK, Some(&old), None);
                let code = job_process(fds);
                std::process::exit(code);
            }
            -1 => eprintln!("cloched-spawner: fork: {}", io::Error::last_os_error()),
            pid => {
                jobs.insert(pid);
                drop(fds);
                // While the job works: the policies bound since (a binding
                // changed by a job is seen after it), for the next jobs.
                load_bound();
            }
        }
        reap(&mut jobs);
    }
    drop(sock);
    daemon_gone(state, cgroup, jobs);
    drop(lock); // last: a new daemon may start once this process is gone
    Ok(())
}

/// The daemon is gone: no job outlives it. Every process of its cgroup
/// (the jobs, orphans of an earlier spawner, their helpers) or, without
/// one, every job of this spawner is killed; then the worlds and runs of
/// the dead jobs are settled (`recovery.rs`).
fn daemon_gone(state: &std::path::Path, cgroup: Option<&JobsCgroup>, mut jobs: HashSet<i32>) {
    let me = std::process::id() as i32;
    let killed = match cgroup {
        Some(cg) => cg.kill_all(Some(me), Duration::from_secs(10)),
        None => jobs
            .iter()
            // SAFETY: kill of a child not reaped yet: its pid is still its own.
            .filter(|pid| unsafe { libc::kill(**pid, libc::SIGKILL) } == 0)
            .count(),
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while !jobs.is_empty() && Instant::now() < deadline {
        reap(&mut jobs);
        std::thread::sleep(Duration::from_millis(5));
    }
    logged(|| match crate::recovery::recover(state, "spawner", killed) {
        Ok(r) => r.log(),
        Err(e) => tracing::error!(error = %e, "recovery after the daemon's end"),
    });
    if let Some(cg) = cgroup {
        cg.leave_and_remove();
    }
}

/// One message: its descriptors (`None` at EOF).
fn receive(sock: BorrowedFd<'_>) -> io::Result<Option<Vec<OwnedFd>>> {
    let mut buf = [0u8; 16];
    let mut iov = [IoSliceMut::new(&mut buf)];
    let mut space = nix::cmsg_space!([RawFd; MAX_FDS]);
    let msg = match recvmsg::<()>(sock.as_raw_fd(), &mut iov, Some(&mut space), MsgFlags::MSG_CMSG_CLOEXEC) {
        Ok(m) => m,
        Err(nix::errno::Errno::EINTR | nix::errno::Errno::EAGAIN) => return Ok(Some(Vec::new())),
        Err(e) => return Err(e.into()),
    };
    if msg.bytes == 0 {
        return Ok(None);
    }
    let mut fds = Vec::new();
    for c in msg.cmsgs().map_err(io::Error::from)? {
        if let ControlMessageOwned::ScmRights(list) = c {
            // SAFETY: descriptors just received, owned by nobody else here.
            fds.extend(list.into_iter().map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }));
        }
    }
    Ok(Some(fds))
}

/// Reaps every job that ended.
fn reap(jobs: &mut HashSet<i32>) {
    loop {
        let mut status = 0;
        // SAFETY: waitpid with a valid status pointer.
        let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
        if pid <= 0 {
            return;
        }
        jobs.remove(&pid);
    }
}

/// A forked job: stdin from /dev/null, stdout and stderr the pipes it was
/// given (else /dev/null and the spawner's stderr), then the job.
fn job_process(mut fds: Vec<OwnedFd>) -> i32 {
    let ctl = fds.remove(0);
    // SAFETY: dup2 onto the standard descriptors of this process.
    unsafe {
        let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR | libc::O_CLOEXEC);
        if null >= 0 {
            libc::dup2(null, 0);
        }
        match fds.as_slice() {
            [out, err] => {
                libc::dup2(out.as_raw_fd(), 1);
                libc::dup2(err.as_raw_fd(), 2);
            }
            _ if null >= 0 => {
                libc::dup2(null, 1);
            }
            _ => {}
        }
        if null > 2 {
            libc::close(null);
        }
    }
    drop(fds);
    crate::jobs::child::main(ctl)
}
