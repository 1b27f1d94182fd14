//! Where worlds start: a single-threaded process of its own.
//!
//! The world engine forks and clones and must never run in a process with
//! other threads (docs/architecture.md), and the daemon is a tokio runtime
//! with several. So `cloched` starts a *spawner*: `cloched __spawner`,
//! executed (not forked: it holds nothing of the daemon's runtime or its
//! memory) with one end of a `SOCK_SEQPACKET` socket pair as fd 3 and the
//! state directory's lock as fd 4. It only waits: for each message from
//! the daemon it forks a *job process* that takes the descriptors the
//! message carries (`SCM_RIGHTS`): the job's control socket, and for a
//! world's own output two pipes. The job process reads its request on the
//! control socket, does it (a world run, a batch run, a commit, a
//! submission checked with the caller's identity, a recovery), writes what
//! happens as JSON lines and exits; its exit also reaps what the world
//! engine leaves to its end (`Teardown::in_background`). The spawner reaps
//! its jobs (SIGCHLD through a signalfd).
//!
//! A fork of a small idle process costs a fraction of a millisecond where
//! an exec of `cloched` per job would cost its start (a few milliseconds).
//!
//! Who outlives whom (docs/architecture.md, *When a process dies*):
//! - the spawner moves itself into the daemon's cgroup of processes
//!   ([`crate::jobs_cgroup`]) first: every job is born there;
//! - when the daemon dies, however it dies, the kernel closes its end of
//!   the socket: the spawner reads EOF, kills everything in that cgroup,
//!   settles the worlds and runs of the jobs it killed
//!   ([`crate::recovery`]) and exits (`process.rs`);
//! - when the spawner dies, its jobs go on (each talks to the daemon on
//!   its own socket, and stays in the cgroup); the daemon watches the
//!   spawner (a pidfd) and starts another at once, which kills them all
//!   when the daemon dies;
//! - every one of them holds the state directory's lock (the daemon's
//!   open file description, inherited): a new daemon starts only once all
//!   of them are gone ([`crate::server::lock_state`]).

mod process;

pub use process::main;

use crate::jobs_cgroup::JobsCgroup;
use nix::sys::socket::{sendmsg, socketpair, AddressFamily, ControlMessage, MsgFlags, SockFlag, SockType};
use std::io::{self, IoSlice};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

/// The fd the spawner finds its socket at.
const SPAWNER_FD: RawFd = 3;
/// The fd the spawner finds the state directory's lock at.
const LOCK_FD: RawFd = 4;
/// Most descriptors one job takes: control, stdout, stderr.
const MAX_FDS: usize = 3;

/// What a spawner is started with.
pub struct Setup {
    /// The state directory (what the spawner settles when the daemon dies).
    pub state: PathBuf,
    /// The cgroup the spawner moves into, if the host has one for it.
    pub cgroup: Option<JobsCgroup>,
    /// The state directory's lock (the daemon's open file description).
    pub lock: OwnedFd,
}

/// The daemon's side: hands descriptors to the spawner, starts another
/// when it dies.
pub struct Spawner {
    inner: Mutex<Inner>,
    setup: Setup,
    stopping: AtomicBool,
}

struct Inner {
    /// `None` once the daemon is stopping (the spawner reads EOF).
    sock: Option<OwnedFd>,
    child: Child,
    /// A pidfd of `child` (watched), when the kernel gives one.
    pidfd: Option<OwnedFd>,
}

impl Spawner {
    /// Starts the spawner process, and a thread that starts another
    /// whenever it dies.
    pub fn start(setup: Setup) -> io::Result<Arc<Spawner>> {
        let inner = launch(&setup)?;
        let sp = Arc::new(Spawner { inner: Mutex::new(inner), setup, stopping: AtomicBool::new(false) });
        let weak = Arc::downgrade(&sp);
        std::thread::Builder::new().name("cloched-spawner-watch".into()).spawn(move || watch(weak))?;
        Ok(sp)
    }

    /// The spawner's pid.
    pub fn pid(&self) -> u32 {
        self.inner.lock().map(|i| i.child.id()).unwrap_or(0)
    }

    /// Asks for a job process holding `fds` (its control socket first). A
    /// spawner that is gone is started again once.
    pub fn spawn(&self, fds: &[OwnedFd]) -> io::Result<()> {
        let mut inner = self.inner.lock().map_err(|_| io::Error::other("the spawner's lock is poisoned"))?;
        let Some(sock) = &inner.sock else { return Err(io::Error::other("the daemon is stopping")) };
        match send(sock.as_fd(), fds) {
            Ok(()) => Ok(()),
            Err(e) => {
                tracing::warn!(error = %e, "the spawner is gone; starting it again");
                self.relaunch(&mut inner)?;
                send(inner.sock.as_ref().expect("just launched").as_fd(), fds)
            }
        }
    }

    /// Ends the spawner: its socket closed, it kills every job and settles
    /// their worlds and runs, then exits; waited for (at most `within`,
    /// then killed).
    pub fn stop(&self, within: Duration) {
        self.stopping.store(true, Ordering::SeqCst);
        let Ok(mut inner) = self.inner.lock() else { return };
        inner.sock = None;
        let deadline = Instant::now() + within;
        loop {
            match inner.child.try_wait() {
                Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
                Ok(None) => {
                    tracing::warn!(pid = inner.child.id(), "the spawner did not end in time: killed");
                    let _ = inner.child.kill();
                    let _ = inner.child.wait();
                    return;
                }
                _ => return,
            }
        }
    }

    fn relaunch(&self, inner: &mut Inner) -> io::Result<()> {
        let _ = inner.child.kill();
        let _ = inner.child.wait();
        *inner = launch(&self.setup)?;
        Ok(())
    }
}

impl Drop for Spawner {
    fn drop(&mut self) {
        self.stop(Duration::from_secs(20));
    }
}

/// Starts a spawner again as soon as it dies (until the daemon stops).
fn watch(sp: Weak<Spawner>) {
    loop {
        let (pid, pidfd) = {
            let Some(sp) = sp.upgrade() else { return };
            let Ok(inner) = sp.inner.lock() else { return };
            let Some(fd) = inner.pidfd.as_ref().and_then(|f| f.try_clone().ok()) else { return };
            (inner.child.id(), fd)
        };
        let mut fds = [nix::poll::PollFd::new(pidfd.as_fd(), nix::poll::PollFlags::POLLIN)];
        match nix::poll::poll(&mut fds, nix::poll::PollTimeout::NONE) {
            Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => return,
            Ok(_) => {}
        }
        let Some(sp) = sp.upgrade() else { return };
        if sp.stopping.load(Ordering::SeqCst) {
            return;
        }
        let Ok(mut inner) = sp.inner.lock() else { return };
        if inner.child.id() != pid {
            continue; // started again meanwhile (by `spawn`)
        }
        if let Ok(Some(status)) = inner.child.try_wait() {
            tracing::warn!(pid, %status, "the spawner died; starting another (its jobs go on)");
            match sp.relaunch(&mut inner) {
                Ok(()) => tracing::info!(pid = inner.child.id(), "spawner started again"),
                Err(e) => {
                    tracing::error!(error = %e, "the spawner cannot be started again");
                    drop(inner);
                    std::thread::sleep(Duration::from_secs(1));
                }
            }
        }
    }
}

fn launch(setup: &Setup) -> io::Result<Inner> {
    let (ours, theirs) =
        socketpair(AddressFamily::Unix, SockType::SeqPacket, None, SockFlag::SOCK_CLOEXEC).map_err(io::Error::from)?;
    let (sock, lock) = (theirs.as_raw_fd(), setup.lock.as_raw_fd());
    let mut cmd = Command::new("/proc/self/exe");
    cmd.arg0("cloched-spawner").arg("__spawner").arg(&setup.state);
    cmd.arg(if setup.cgroup.is_some() { "cgroup" } else { "-" });
    cmd.stdin(Stdio::null()).stdout(Stdio::null());
    // SAFETY: between fork and exec only fcntl and dup2, async-signal-safe.
    unsafe {
        cmd.pre_exec(move || {
            // Copies above both targets first (closed by the exec), then
            // onto them (dup2 clears close-on-exec on the copy).
            let high = [libc::fcntl(sock, libc::F_DUPFD_CLOEXEC, 10), libc::fcntl(lock, libc::F_DUPFD_CLOEXEC, 10)];
            for (fd, target) in high.into_iter().zip([SPAWNER_FD, LOCK_FD]) {
                if fd < 0 || libc::dup2(fd, target) < 0 {
                    return Err(io::Error::last_os_error());
                }
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
    // SAFETY: pidfd_open of our own child, not reaped yet; the fd is ours.
    let pidfd = unsafe {
        let fd = libc::syscall(libc::SYS_pidfd_open, child.id() as libc::pid_t, 0);
        (fd >= 0).then(|| OwnedFd::from_raw_fd(fd as RawFd))
    };
    tracing::info!(pid = child.id(), "spawner started");
    Ok(Inner { sock: Some(ours), child, pidfd })
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
