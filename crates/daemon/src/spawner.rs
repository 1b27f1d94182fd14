//! Where worlds start: a single-threaded process of its own.
//!
//! The world engine forks and clones and must never run in a process with
//! other threads (docs/architecture.md), and the daemon is a tokio runtime
//! with several. So `cloched` starts a *spawner*: `cloched __spawner`,
//! executed (not forked: it holds nothing of the daemon's runtime, its
//! locks or its memory) with one end of a `SOCK_SEQPACKET` socket pair as
//! fd 3. It only waits: for each message from the daemon it forks a *job
//! process* that takes the descriptors the message carries (`SCM_RIGHTS`):
//! the job's control socket, and for a world's own output two pipes. The
//! job process reads its request on the control socket, does it (a world
//! run, a batch run, a commit, a submission checked with the caller's
//! identity), writes what happens as JSON lines and exits; its exit also
//! reaps what the world engine leaves to its end (`Teardown::in_background`).
//! The spawner reaps its jobs (SIGCHLD through a signalfd).
//!
//! A fork of a small idle process costs a fraction of a millisecond where
//! an exec of `cloched` per job would cost its start (a few milliseconds);
//! and a spawner that dies is started again by the daemon. The spawner
//! ends when the daemon does (its socket reads EOF); jobs then run to
//! their end on their own.

use nix::sys::socket::{
    recvmsg, sendmsg, socketpair, AddressFamily, ControlMessage, ControlMessageOwned, MsgFlags, SockFlag, SockType,
};
use std::io::{self, IoSlice, IoSliceMut};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;

/// The fd the spawner finds its socket at.
const SPAWNER_FD: RawFd = 3;
/// Most descriptors one job takes: control, stdout, stderr.
const MAX_FDS: usize = 3;

/// The daemon's side: hands descriptors to the spawner.
pub struct Spawner {
    inner: Mutex<Inner>,
}

struct Inner {
    sock: OwnedFd,
    child: Child,
}

impl Spawner {
    /// Starts the spawner process.
    pub fn start() -> io::Result<Spawner> {
        Ok(Spawner { inner: Mutex::new(launch()?) })
    }

    /// The spawner's pid.
    pub fn pid(&self) -> u32 {
        self.inner.lock().map(|i| i.child.id()).unwrap_or(0)
    }

    /// Asks for a job process holding `fds` (its control socket first). A
    /// spawner that is gone is started again once.
    pub fn spawn(&self, fds: &[OwnedFd]) -> io::Result<()> {
        let mut inner = self.inner.lock().map_err(|_| io::Error::other("the spawner's lock is poisoned"))?;
        match send(inner.sock.as_fd(), fds) {
            Ok(()) => Ok(()),
            Err(e) => {
                tracing::warn!(error = %e, "the spawner is gone; starting it again");
                let _ = inner.child.kill();
                let _ = inner.child.wait();
                *inner = launch()?;
                send(inner.sock.as_fd(), fds)
            }
        }
    }
}

impl Drop for Spawner {
    fn drop(&mut self) {
        if let Ok(inner) = self.inner.get_mut() {
            let _ = inner.child.kill();
            let _ = inner.child.wait();
        }
    }
}

fn launch() -> io::Result<Inner> {
    let (ours, theirs) =
        socketpair(AddressFamily::Unix, SockType::SeqPacket, None, SockFlag::SOCK_CLOEXEC).map_err(io::Error::from)?;
    let raw = theirs.as_raw_fd();
    let mut cmd = Command::new("/proc/self/exe");
    cmd.arg0("cloched-spawner").arg("__spawner").stdin(Stdio::null()).stdout(Stdio::null());
    // SAFETY: between fork and exec only dup2/fcntl, async-signal-safe.
    unsafe {
        cmd.pre_exec(move || {
            let r = if raw == SPAWNER_FD { libc::fcntl(raw, libc::F_SETFD, 0) } else { libc::dup2(raw, SPAWNER_FD) };
            if r < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = cmd.spawn()?;
    drop(theirs);
    // A spawner that stops reading must not hold a request forever.
    let tv = libc::timeval { tv_sec: 5, tv_usec: 0 };
    // SAFETY: a timeval of the right size for SO_SNDTIMEO.
    unsafe {
        libc::setsockopt(
            ours.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_SNDTIMEO,
            (&tv as *const libc::timeval).cast(),
            std::mem::size_of::<libc::timeval>() as libc::socklen_t,
        );
    }
    tracing::info!(pid = child.id(), "spawner started");
    Ok(Inner { sock: ours, child })
}

fn send(sock: BorrowedFd<'_>, fds: &[OwnedFd]) -> io::Result<()> {
    let raw: Vec<RawFd> = fds.iter().map(|f| f.as_raw_fd()).collect();
    let cmsg = [ControlMessage::ScmRights(&raw)];
    let n = sendmsg::<()>(sock.as_raw_fd(), &[IoSlice::new(b"job")], &cmsg, MsgFlags::MSG_NOSIGNAL, None)
        .map_err(io::Error::from)?;
    if n != 3 {
        return Err(io::Error::other("short message to the spawner"));
    }
    Ok(())
}

/// The spawner process (`cloched __spawner`): returns its exit code.
pub fn main() -> i32 {
    match serve() {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("cloched-spawner: {e}");
            1
        }
    }
}

fn serve() -> io::Result<()> {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    use nix::sys::signal::{SigSet, SigmaskHow, Signal};
    use nix::sys::signalfd::{SfdFlags, SignalFd};
    // SAFETY: fstat of fd 3 before taking it: only a socket is ours.
    let is_socket = unsafe {
        let mut st: libc::stat = std::mem::zeroed();
        libc::fstat(SPAWNER_FD, &mut st) == 0 && st.st_mode & libc::S_IFMT == libc::S_IFSOCK
    };
    if !is_socket {
        return Err(io::Error::other("fd 3 is not the daemon's socket (cloched starts this process itself)"));
    }
    // SAFETY: fd 3 is a socket handed to this process, owned from here on.
    let sock = unsafe { OwnedFd::from_raw_fd(SPAWNER_FD) };
    let mut chld = SigSet::empty();
    chld.add(Signal::SIGCHLD);
    let mut old = SigSet::empty();
    nix::sys::signal::sigprocmask(SigmaskHow::SIG_BLOCK, Some(&chld), Some(&mut old)).map_err(io::Error::from)?;
    let sfd = SignalFd::with_flags(&chld, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK).map_err(io::Error::from)?;
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
            reap();
        }
        if !sock_ready {
            continue;
        }
        let fds = match receive(sock.as_fd())? {
            None => return Ok(()), // the daemon is gone
            Some(f) => f,
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
            _ => drop(fds),
        }
        reap();
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
fn reap() {
    loop {
        let mut status = 0;
        // SAFETY: waitpid with a valid status pointer.
        let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
        if pid <= 0 {
            return;
        }
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
