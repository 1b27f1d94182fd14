//! A network namespace held by an fd, and sockets opened inside it.
//!
//! A socket belongs to the namespace it was created in, whatever thread uses
//! it later. To create one inside another namespace, a short-lived thread
//! `setns`es into it, opens the socket and ends; the calling thread (and the
//! rest of cloche) never changes namespace.

use crate::rtnl::{Rtnl, RtnlError};
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

/// An fd on a network namespace (`/proc/<pid>/ns/net`): the namespace lives
/// at least as long as this handle.
pub struct Netns {
    fd: OwnedFd,
}

impl Netns {
    /// The network namespace of process `pid`.
    pub fn of_pid(pid: i32) -> io::Result<Netns> {
        Ok(Netns { fd: File::open(format!("/proc/{pid}/ns/net"))?.into() })
    }

    /// The network namespace open at `fd`.
    pub fn from_fd(fd: OwnedFd) -> Netns {
        Netns { fd }
    }

    /// A new, empty network namespace (made by a thread that unshares and
    /// ends; nothing else runs in it).
    pub fn create() -> io::Result<Netns> {
        std::thread::spawn(|| -> io::Result<Netns> {
            // SAFETY: unshare affects only this thread, which ends next.
            if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(Netns { fd: File::open("/proc/thread-self/ns/net")?.into() })
        })
        .join()
        .map_err(|_| io::Error::other("netns thread panicked"))?
    }

    /// Runs `f` on a thread inside this namespace and returns its result.
    pub fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> io::Result<T> {
        self.spawn(f)?.join()
    }

    /// Starts `f` on a thread inside this namespace; [`Inside::join`]
    /// returns its result.
    pub fn spawn<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> io::Result<Inside<T>> {
        let fd = self.fd.try_clone()?;
        let thread = std::thread::spawn(move || -> io::Result<T> {
            // SAFETY: setns on this thread only, with an fd we own; the
            // thread ends after `f`.
            if unsafe { libc::setns(fd.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(f())
        });
        Ok(Inside(thread))
    }

    /// An rtnetlink socket inside this namespace.
    pub fn rtnl(&self) -> Result<Rtnl, RtnlError> {
        self.run(Rtnl::open).map_err(RtnlError::Socket)?
    }
}

/// Work running on a thread inside a network namespace ([`Netns::spawn`]).
pub struct Inside<T>(std::thread::JoinHandle<io::Result<T>>);

impl<T> Inside<T> {
    /// Waits for the work's result.
    pub fn join(self) -> io::Result<T> {
        self.0.join().map_err(|_| io::Error::other("netns thread panicked"))?
    }
}

impl AsFd for Netns {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}
