//! One descriptor across a Unix socket (SCM_RIGHTS), and the world's network
//! namespace the parent makes for the child to join.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

/// Sends `fd` on the socket `to`, with one byte `tag` (a message cannot be
/// empty). Never raises SIGPIPE.
pub(crate) fn send(to: BorrowedFd<'_>, fd: BorrowedFd<'_>, tag: u8) -> io::Result<()> {
    use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};
    let fds = [fd.as_raw_fd()];
    let tag = [tag];
    let iov = [io::IoSlice::new(&tag)];
    sendmsg::<()>(to.as_raw_fd(), &iov, &[ControlMessage::ScmRights(&fds)], MsgFlags::MSG_NOSIGNAL, None)
        .map(drop)
        .map_err(io::Error::from)
}

/// Receives one descriptor on the socket `from` (close-on-exec); `what`
/// names it in the error when the peer closed first or sent none. Any
/// further descriptor in the message is closed.
pub(crate) fn receive(from: BorrowedFd<'_>, what: &str) -> io::Result<OwnedFd> {
    use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
    let mut byte = [0u8; 1];
    let mut iov = [io::IoSliceMut::new(&mut byte)];
    let mut space = nix::cmsg_space!([RawFd; 1]);
    let msg = recvmsg::<()>(from.as_raw_fd(), &mut iov, Some(&mut space), MsgFlags::MSG_CMSG_CLOEXEC)?;
    let mut got = None;
    for c in msg.cmsgs()? {
        if let ControlMessageOwned::ScmRights(fds) = c {
            for fd in fds {
                // SAFETY: the kernel just gave us this descriptor; owned
                // here, closed on drop unless it is the one returned.
                let owned = unsafe { OwnedFd::from_raw_fd(fd) };
                got.get_or_insert(owned);
            }
        }
    }
    got.ok_or_else(|| io::Error::other(format!("no {what} came (the other end closed or sent none)")))
}

/// A new network namespace, only `lo` in it and up, owned by this process's
/// user namespace, without this thread staying in it: the thread enters it
/// (`unshare`), brings `lo` up, opens it, and goes back to the namespace it
/// was in. As root, the parent makes the world's while its child mounts, off
/// the child's path (the making took 0.25-0.4 ms of it here, `lo` 0.05 ms).
pub(crate) fn new_netns() -> io::Result<OwnedFd> {
    let open = || std::fs::File::open("/proc/thread-self/ns/net").map(OwnedFd::from);
    let home = open()?;
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)?;
    let made = crate::sys::loopback_up().and_then(|()| open());
    // Back whatever happened; a thread that cannot go back must not go on
    // (its sockets, the host's veth end, would be the world's).
    if let Err(e) = nix::sched::setns(home.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET) {
        eprintln!("cloche: could not return to the host's network namespace: {e}");
        std::process::abort();
    }
    made
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};

    #[test]
    fn a_descriptor_crosses_and_eof_is_an_error() {
        let (a, b) = socketpair(AddressFamily::Unix, SockType::SeqPacket, None, SockFlag::SOCK_CLOEXEC).unwrap();
        let file = std::fs::File::open("/proc/self/exe").unwrap();
        send(a.as_fd(), file.as_fd(), b'n').unwrap();
        let got = receive(b.as_fd(), "file").unwrap();
        let same = |f: BorrowedFd<'_>| nix::sys::stat::fstat(f).map(|s| (s.st_dev, s.st_ino)).unwrap();
        assert_eq!(same(got.as_fd()), same(file.as_fd()));
        drop(a);
        let e = receive(b.as_fd(), "network namespace").unwrap_err();
        assert!(e.to_string().contains("no network namespace came"), "{e}");
    }
}
