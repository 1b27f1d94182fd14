//! The world's stdin, stdout and stderr: pipes of its own, never the
//! caller's descriptors.
//!
//! An inherited descriptor is the host's open file, and `/proc/self/fd/N`
//! reopens its inode with a mode of the opener's choice: a world handed a
//! host file as stdin could rewrite it in place (not in the overlay, not in
//! the fs_diff), one whose stdout is appended to a log could read the log
//! back, one on the caller's terminal could change its settings for good.
//! So every world gets three fresh pipes, and cloche copies between them and
//! the caller's descriptors while the world runs ([`Relay`]):
//! - **stdin**: a regular file is read at explicit offsets, and when the
//!   world ends the caller's file position is set just past what the world
//!   read, as if it had read the file itself (a `while read` loop around
//!   `cloche run` keeps its place). A pipe, socket or other device is copied
//!   as it has data. A terminal, `/dev/null` or a closed descriptor gives the
//!   world an empty stdin: cloche reads the caller's terminal only when asked
//!   (`-i`, `-t`; otherwise a background `cloche run` would be stopped by
//!   SIGTTIN, and keys typed ahead for the shell would be taken).
//! - A caller's `/dev/null` (on any of the three) becomes the world's own
//!   `/dev/null`, opened by the child in the world's `/dev`: nothing to
//!   copy, and no host inode (a host `/dev/null` reopened through
//!   `/proc/self/fd` could be chmod'ed by the world's uid 0, its owner).
//! - **stdout, stderr**: copied as the world writes. When both are one open
//!   file (a terminal, `>log 2>&1`) the world gets one pipe for both, so
//!   their order is kept exactly.
//! - **`-t`** ([`Terminal::Pty`]): the world's 0, 1 and 2 are a
//!   pseudo-terminal of its own, whose master cloche copies to and from the
//!   caller (stdout and stderr are one stream, as on any terminal). The
//!   caller's terminal is put in raw mode, so ^C, ^Z and the like are bytes
//!   for the world's terminal (its foreground job gets the signal, not the
//!   world), and its settings are restored when the relay is dropped; the
//!   window size follows the caller's (SIGWINCH).
//!
//! Copies use `splice` (no copy through user space) where one side is a
//! pipe and the other a pipe, a file or `/dev/null`, and read/write
//! otherwise (terminals, sockets, files open for append). The caller's
//! descriptors are never made non-blocking (their open file is shared with
//! the caller's shell): cloche writes to a terminal only when poll says it
//! has room, at most `TTY_CHUNK` bytes at a time (`pump.rs`), and to a
//! socket with `MSG_DONTWAIT`; so the world's timeout and stop signals are
//! always served.

mod pump;

use crate::raw;
use crate::spec::Terminal;
use pump::{Pump, Step};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

/// Capacity of the pipes cloche copies through.
const PIPE_SIZE: libc::c_int = 1 << 20;

/// What a descriptor of the caller is.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Pipe,
    File {
        append: bool,
    },
    Socket,
    Tty,
    /// `/dev/null`.
    Null,
    /// Another character device, a directory, ...
    Other,
    /// Not open.
    Closed,
}

/// The kind of the caller's descriptor `fd`, and its (dev, ino).
fn kind(fd: RawFd) -> (Kind, (u64, u64)) {
    // SAFETY: fstat writes one struct stat; a zeroed one is a valid start.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: `st` is a valid out-pointer; `fd` is only inspected.
    if unsafe { libc::fstat(fd, &mut st) } != 0 {
        return (Kind::Closed, (0, 0));
    }
    let id = (st.st_dev, st.st_ino);
    // SAFETY: F_GETFL on a descriptor we just stat'ed.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    let k = match st.st_mode & libc::S_IFMT {
        libc::S_IFIFO => Kind::Pipe,
        libc::S_IFREG | libc::S_IFBLK => Kind::File { append: flags >= 0 && flags & libc::O_APPEND != 0 },
        libc::S_IFSOCK => Kind::Socket,
        libc::S_IFCHR if nix::unistd::isatty(unsafe_borrow(fd)).unwrap_or(false) => Kind::Tty,
        libc::S_IFCHR if libc::major(st.st_rdev) == 1 && libc::minor(st.st_rdev) == 3 => Kind::Null,
        _ => Kind::Other,
    };
    (k, id)
}

fn unsafe_borrow(fd: RawFd) -> std::os::fd::BorrowedFd<'static> {
    // SAFETY: used only for isatty and termios calls on the caller's
    // standard descriptors, which stay open for the life of the process.
    unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) }
}

/// A pipe with close-on-exec ends: (read, write).
fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(io::Error::from)
}

/// A pipe for a stream cloche copies, with room for [`PIPE_SIZE`] bytes
/// (fewer wake-ups of the world and of cloche for a large stream; pages
/// are only taken as data arrives). Left at the default if refused.
fn big_pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let (r, w) = pipe()?;
    let _ = nix::fcntl::fcntl(&w, nix::fcntl::FcntlArg::F_SETPIPE_SZ(PIPE_SIZE));
    Ok((r, w))
}

fn set_nonblocking(fd: &OwnedFd) -> io::Result<()> {
    use nix::fcntl::{fcntl, FcntlArg, OFlag};
    let fl = OFlag::from_bits_truncate(fcntl(fd, FcntlArg::F_GETFL)?);
    fcntl(fd, FcntlArg::F_SETFL(fl | OFlag::O_NONBLOCK))?;
    Ok(())
}

fn errno(e: &io::Error) -> i32 {
    e.raw_os_error().unwrap_or(0)
}

/// The world's three descriptors, for the child to put on 0, 1 and 2.
pub(crate) type WorldEnds = [Option<OwnedFd>; 3];

/// What the child puts on 0, 1 and 2.
pub enum WorldStdio {
    /// Three descriptors (pipes); `None`: the world's own `/dev/null`.
    Fds(WorldEnds),
    /// A pseudo-terminal the child opens in the world's own devpts, sized
    /// `size`; it sends the master over `console` to cloche.
    Pty { console: OwnedFd, size: Option<libc::winsize> },
}

/// cloche's side of a world's stdio.
pub(crate) struct Relay {
    /// stdin (maybe absent), stdout, stderr (absent when merged or a pty).
    pumps: Vec<Pump>,
    /// stdin from a regular file: where the caller's position was, and a
    /// read end of the world's stdin pipe to count what it left unread.
    file_in: Option<(i64, OwnedFd)>,
    /// With a pseudo-terminal: its master (for the window size) and the
    /// caller's terminal settings to restore (when its stdin is one).
    pty: Option<OwnedFd>,
    saved: Option<nix::sys::termios::Termios>,
    /// Until [`Relay::attach_console`]: the socket the master comes over,
    /// and what the caller's stdin and stdout are.
    console: Option<(OwnedFd, Kind, Kind, bool)>,
}

impl Relay {
    /// The world's stdio as `terminal` asks, and cloche's side of it.
    pub(crate) fn new(terminal: Terminal) -> io::Result<(Relay, WorldStdio)> {
        let (k0, _) = kind(0);
        let (k1, id1) = kind(1);
        let (k2, id2) = kind(2);
        let read_stdin = match k0 {
            Kind::Null | Kind::Closed => false,
            Kind::Tty => terminal != Terminal::Pipes,
            _ => true,
        };
        if terminal == Terminal::Pty {
            return Relay::with_pty(k0, k1, read_stdin);
        }
        let mut relay = Relay { pumps: Vec::new(), file_in: None, pty: None, saved: None, console: None };
        // The caller's /dev/null is given as the world's own /dev/null
        // (nothing to copy); a stdin never read is an empty pipe.
        let stdin = if k0 == Kind::Null {
            None
        } else if read_stdin {
            let (in_r, in_w) = big_pipe()?;
            let mut p = Pump::new(in_w, 0, k0, true, false)?;
            if let Kind::File { .. } = k0 {
                // SAFETY: lseek on the caller's stdin, only to read its position.
                let pos = unsafe { libc::lseek(0, 0, libc::SEEK_CUR) };
                if pos >= 0 {
                    p.off = Some(pos);
                    relay.file_in = Some((pos, in_r.try_clone()?));
                }
            }
            relay.pumps.push(p);
            Some(in_r)
        } else {
            Some(pipe()?.0) // the write end is gone: the world's stdin is empty
        };
        // One pipe for both when stdout and stderr are one open file.
        let merged = !matches!(k1, Kind::Closed | Kind::Null)
            && match raw::same_open_file(1, 2) {
                Some(same) => same,
                None => id1 == id2 && k1 == k2 && matches!(k1, Kind::Tty | Kind::Pipe | Kind::Socket),
            };
        let mut output = |fd: RawFd, k: Kind| -> io::Result<Option<OwnedFd>> {
            if k == Kind::Null {
                return Ok(None);
            }
            let (r, w) = big_pipe()?;
            relay.pumps.push(Pump::new(r, fd, k, false, false)?);
            Ok(Some(w))
        };
        let stdout = output(1, k1)?;
        let stderr = match (&stdout, merged) {
            (Some(w), true) => Some(w.try_clone()?),
            _ => output(2, k2)?,
        };
        Ok((relay, WorldStdio::Fds([stdin, stdout, stderr])))
    }

    /// A pseudo-terminal of the world's own: the child opens it in the
    /// world's devpts (so it is `/dev/pts/0` there, and nothing of the
    /// host's), sized as the caller's window, and sends its master back over
    /// a socket ([`Relay::attach_console`]). The caller's terminal (if stdin
    /// is one) is raw until the relay is dropped.
    fn with_pty(k0: Kind, k1: Kind, read_stdin: bool) -> io::Result<(Relay, WorldStdio)> {
        use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};
        use nix::sys::termios;
        let (ours, theirs) = socketpair(AddressFamily::Unix, SockType::SeqPacket, None, SockFlag::SOCK_CLOEXEC)?;
        let mut relay = Relay {
            pumps: Vec::new(),
            file_in: None,
            pty: None,
            saved: None,
            console: Some((ours, k0, k1, read_stdin)),
        };
        if k0 == Kind::Tty {
            let stdin = unsafe_borrow(0);
            let saved = termios::tcgetattr(stdin)?;
            let mut raw = saved.clone();
            termios::cfmakeraw(&mut raw);
            termios::tcsetattr(stdin, termios::SetArg::TCSANOW, &raw)?;
            relay.saved = Some(saved);
        }
        Ok((relay, WorldStdio::Pty { console: theirs, size: window_size() }))
    }

    /// With a pseudo-terminal: takes its master from the child (sent before
    /// the init's execve) and starts copying through it.
    pub(crate) fn attach_console(&mut self) -> io::Result<()> {
        let Some((sock, k0, k1, read_stdin)) = self.console.take() else { return Ok(()) };
        use std::os::fd::AsFd;
        let master = crate::fdpass::receive(sock.as_fd(), "pseudo-terminal from the world")?;
        if read_stdin {
            self.pumps.push(Pump::new(master.try_clone()?, 0, k0, true, true)?);
        }
        self.pumps.push(Pump::new(master.try_clone()?, 1, k1, false, true)?);
        self.pty = Some(master);
        Ok(())
    }

    /// Why the world's output could not all be delivered (e.g. "stdout: No
    /// space left on device"), if so.
    pub(crate) fn failure(&self) -> Option<String> {
        self.pumps.iter().find_map(|p| {
            let name = if p.caller == 1 { "stdout" } else { "stderr" };
            p.failed.as_ref().map(|e| format!("{name}: {e}"))
        })
    }

    /// The caller's window size changed (SIGWINCH): the world's follows.
    pub(crate) fn resize(&self) {
        if let (Some(master), Some(ws)) = (&self.pty, window_size()) {
            // SAFETY: TIOCSWINSZ reads one winsize from the pointer.
            unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSWINSZ as _, &ws as *const libc::winsize) };
        }
    }

    /// One pollfd per stream, in a fixed order (fd -1 for a finished one).
    pub(crate) fn pollfds(&self, out: &mut Vec<libc::pollfd>) {
        out.extend(self.pumps.iter().map(Pump::pollfd));
    }

    /// Serves the streams whose descriptors poll found ready (`ready` holds
    /// the entries [`Relay::pollfds`] added, in order).
    pub(crate) fn serve(&mut self, ready: &[libc::pollfd]) {
        for (p, r) in self.pumps.iter_mut().zip(ready) {
            if r.fd >= 0 && r.revents != 0 {
                p.run();
            }
        }
    }

    /// After the world is gone: stops reading the caller's stdin (and sets a
    /// regular file's position past what the world read), then delivers
    /// what the world's stdout and stderr still hold. With `wait`, it waits
    /// for a slow reader (a stop signal on `sigfd` ends the wait); without,
    /// it delivers only what can be written at once (a world that timed out
    /// or was stopped must not keep cloche waiting).
    pub(crate) fn finish(&mut self, wait: bool, sigfd: RawFd) {
        for p in self.pumps.iter_mut().filter(|p| p.input) {
            let pending = (p.len - p.pos) as i64;
            p.own = None;
            if let (Some((start, peek)), Some(off)) = (&self.file_in, p.off) {
                let unread = raw::unread(peek.as_raw_fd()).unwrap_or(0) as i64;
                let read = (off - start - unread - pending).max(0);
                // SAFETY: lseek on the caller's stdin, a regular file.
                unsafe { libc::lseek(0, start + read, libc::SEEK_SET) };
            }
        }
        self.file_in = None;
        loop {
            // Writers are all gone: a source has data or is at its end. (One
            // that would block has a writer outside the world: impossible, and
            // not waited for.)
            for p in &mut self.pumps {
                while p.own.is_some() && !p.wait_dst {
                    if let Step::Blocked = p.run() {
                        if !p.wait_dst {
                            p.own = None;
                        }
                    }
                }
            }
            if self.pumps.iter().all(|p| p.own.is_none()) {
                return;
            }
            if !wait {
                break;
            }
            let mut fds = vec![libc::pollfd { fd: sigfd, events: libc::POLLIN, revents: 0 }];
            self.pollfds(&mut fds);
            // SAFETY: a valid pollfd array.
            let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, -1) };
            if n < 0 && io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
                break;
            }
            if fds[0].revents != 0 {
                break; // asked to stop
            }
            for (p, r) in self.pumps.iter_mut().zip(&fds[1..]) {
                if r.fd >= 0 && r.revents != 0 {
                    p.run();
                }
            }
        }
        for p in &mut self.pumps {
            p.own = None;
        }
    }
}

impl Drop for Relay {
    /// Gives the caller's terminal back its settings, however the world ended.
    fn drop(&mut self) {
        if let Some(saved) = self.saved.take() {
            let _ = nix::sys::termios::tcsetattr(unsafe_borrow(0), nix::sys::termios::SetArg::TCSADRAIN, &saved);
        }
    }
}

/// The caller's window size (from its stdin, stdout or stderr, whichever is
/// a terminal).
fn window_size() -> Option<libc::winsize> {
    (0..3).find_map(|fd| {
        // SAFETY: winsize is plain data; TIOCGWINSZ writes one.
        let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
        // SAFETY: a valid out-pointer; the fd is only inspected.
        (unsafe { libc::ioctl(fd, libc::TIOCGWINSZ as _, &mut ws as *mut libc::winsize) } == 0).then_some(ws)
    })
}

/// Stdio for a world nobody talks to through it (a batch's init, which
/// passes each entry its own): stdin empty, stdout and stderr into a pipe
/// whose read end the caller keeps (and never reads: the init writes there
/// only if it cannot start).
pub(crate) fn detached() -> io::Result<(OwnedFd, WorldStdio)> {
    let (in_r, _in_w) = pipe()?;
    let (sink_r, sink_w) = pipe()?;
    let sink_w2 = sink_w.try_clone()?;
    Ok((sink_r, WorldStdio::Fds([Some(in_r), Some(sink_w), Some(sink_w2)])))
}

/// An empty stdin (a pipe whose write end is closed).
pub(crate) fn empty_stdin() -> io::Result<OwnedFd> {
    Ok(pipe()?.0)
}
