//! The world's stdio as its child sets it up (`sys::RealSys`): a
//! pseudo-terminal of its own (`-t`), and its descriptors 0, 1 and 2.

use crate::sys::nixerr;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::path::Path;

/// A pseudo-terminal of the world's own from `ptmx` (the world's): its
/// master sent to cloche on `console`, its slave returned.
pub(crate) fn open_console(ptmx: &Path, size: Option<libc::winsize>, console: RawFd) -> io::Result<OwnedFd> {
    use nix::fcntl::{open, OFlag};
    let flags = OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC;
    let master = open(ptmx, flags, nix::sys::stat::Mode::empty()).map_err(nixerr)?;
    let unlock: libc::c_int = 0;
    // SAFETY: TIOCSPTLCK reads one int; TIOCSWINSZ one winsize; TIOCGPTPEER
    // takes open flags and returns a new descriptor of the slave (opened
    // through the master, no path lookup).
    let slave = unsafe {
        if libc::ioctl(master.as_raw_fd(), libc::TIOCSPTLCK as _, &unlock) < 0 {
            return Err(io::Error::last_os_error());
        }
        if let Some(ws) = size {
            libc::ioctl(master.as_raw_fd(), libc::TIOCSWINSZ as _, &ws as *const libc::winsize);
        }
        let fd = libc::ioctl(master.as_raw_fd(), libc::TIOCGPTPEER as _, flags.bits());
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd)
    };
    // SAFETY: `console` is the child's end of a socket the plan holds open.
    crate::fdpass::send(unsafe { BorrowedFd::borrow_raw(console) }, master.as_fd(), b'm')?;
    Ok(slave)
}

/// The world's 0, 1 and 2: `fds` (`None`: the world's own /dev/null),
/// owned by `owner` when it has a user namespace.
pub(crate) fn set_stdio(fds: [Option<RawFd>; 3], owner: Option<(u32, u32)>) -> io::Result<()> {
    // First above 2 (a pipe may itself be 0, 1 or 2 when cloche started
    // with one of them closed, and dup2 onto itself would keep
    // close-on-exec), then onto 0, 1, 2 (dup2 clears close-on-exec).
    // `None` is the world's own /dev/null (a world path: after pivot_root).
    use nix::fcntl::{fcntl, open, FcntlArg, OFlag};
    // A pipe (or terminal) belongs to whoever made it: in a user
    // namespace, host root's is nobody's the world knows, and reopening
    // it (`echo x >/dev/stderr`) would be refused.
    if let Some((uid, gid)) = owner {
        for fd in fds.iter().flatten() {
            // SAFETY: the plan's descriptors are open for the child's life.
            nix::unistd::fchown(unsafe { BorrowedFd::borrow_raw(*fd) }, Some(uid.into()), Some(gid.into()))
                .map_err(nixerr)?;
        }
    }
    let mut high = Vec::with_capacity(3);
    for fd in fds {
        let h = match fd {
            // SAFETY: the plan's descriptors are open for the child's life.
            Some(fd) => fcntl(unsafe { BorrowedFd::borrow_raw(fd) }, FcntlArg::F_DUPFD_CLOEXEC(3)).map_err(nixerr)?,
            None => {
                let null = open("/dev/null", OFlag::O_RDWR | OFlag::O_CLOEXEC, nix::sys::stat::Mode::empty())
                    .map_err(nixerr)?;
                fcntl(&null, FcntlArg::F_DUPFD_CLOEXEC(3)).map_err(nixerr)?
            }
        };
        high.push(h);
    }
    // (The copies above 2 are close-on-exec: gone at execve.)
    for (target, fd) in high.into_iter().enumerate() {
        // SAFETY: dup2 onto a standard descriptor number; `fd` is open.
        if unsafe { libc::dup2(fd, target as RawFd) } < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}
