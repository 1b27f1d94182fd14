//! One direction of a world's stdio copying ([`Pump`]): `splice` where
//! both sides allow it, else read and write through a buffer, never
//! blocking on the caller's side (`stdio`'s module docs).

use super::{errno, set_nonblocking, Kind};
use crate::raw;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

/// Largest single splice or read.
const CHUNK: usize = 1 << 20;
/// Largest write to a terminal or an unknown device after one POLLOUT.
const TTY_CHUNK: usize = 4096;
/// Copy-mode buffer.
const BUF: usize = 64 * 1024;

/// One direction of copying: the caller's stdin into the world's, or the
/// world's stdout or stderr out to the caller's.
pub(super) struct Pump {
    /// Our end of the world's pipe; `None` once the pump is done.
    pub(super) own: Option<OwnedFd>,
    /// The caller's descriptor (0, 1 or 2).
    pub(super) caller: RawFd,
    kind: Kind,
    /// stdin (the caller's side is read) or an output (it is written).
    pub(super) input: bool,
    splice: bool,
    /// stdin from a regular file: the next offset to read it at.
    pub(super) off: Option<i64>,
    buf: Vec<u8>,
    pub(super) pos: usize,
    pub(super) len: usize,
    /// Waiting for the destination to take more (else for the source).
    pub(super) wait_dst: bool,
    /// An output the caller's descriptor refused (see [`Pump::fail`]).
    pub(super) failed: Option<io::Error>,
}

/// Whether a failed read means the end of the stream: any error but
/// EAGAIN/EINTR; for a pseudo-terminal's master, EIO is how the end of the
/// world's side shows.
fn is_retry(e: &io::Error) -> bool {
    matches!(errno(e), libc::EAGAIN | libc::EINTR)
}

/// Whether one step moved data or must wait for poll.
pub(super) enum Step {
    Moved,
    Blocked,
}

impl Pump {
    /// `own` is our end of the world's pipe, or (`pty`) the master of its
    /// pseudo-terminal, which cannot be spliced.
    pub(super) fn new(own: OwnedFd, caller: RawFd, kind: Kind, input: bool, pty: bool) -> io::Result<Pump> {
        set_nonblocking(&own)?;
        let splice = !pty
            && match kind {
                Kind::Pipe | Kind::Null => true,
                Kind::File { append } => !append,
                _ => false,
            };
        Ok(Pump {
            own: Some(own),
            caller,
            kind,
            input,
            splice,
            off: None,
            buf: Vec::new(),
            pos: 0,
            len: 0,
            wait_dst: false,
            failed: None,
        })
    }

    fn src_dst(&self, own: RawFd) -> (RawFd, RawFd) {
        if self.input {
            (self.caller, own)
        } else {
            (own, self.caller)
        }
    }

    /// The descriptor and events to poll for (`fd` -1 when done).
    pub(super) fn pollfd(&self) -> libc::pollfd {
        let Some(own) = &self.own else { return libc::pollfd { fd: -1, events: 0, revents: 0 } };
        let (src, dst) = self.src_dst(own.as_raw_fd());
        if self.wait_dst {
            libc::pollfd { fd: dst, events: libc::POLLOUT, revents: 0 }
        } else {
            libc::pollfd { fd: src, events: libc::POLLIN, revents: 0 }
        }
    }

    /// Whether the caller's side may block a call despite poll's readiness
    /// (a terminal or an unknown device): one call per readiness then.
    fn caller_may_block(&self) -> bool {
        matches!(self.kind, Kind::Tty | Kind::Other)
    }

    /// Moves what can be moved without waiting (a bounded number of steps,
    /// so one busy stream cannot starve the others or the stop signals).
    /// Returns `Blocked` when it must wait (or is done), `Moved` when it
    /// stopped only because of the bound.
    pub(super) fn run(&mut self) -> Step {
        let rounds = if self.caller_may_block() { 1 } else { 64 };
        for _ in 0..rounds {
            if self.own.is_none() {
                return Step::Blocked;
            }
            let step = if self.splice { self.splice_once() } else { self.copy_once() };
            if let Step::Blocked = step {
                return Step::Blocked;
            }
        }
        Step::Moved
    }

    fn splice_once(&mut self) -> Step {
        let own = self.own.as_ref().map(|o| o.as_raw_fd()).unwrap_or(-1);
        let (src, dst) = self.src_dst(own);
        match raw::splice(src, self.off.as_mut(), dst, CHUNK) {
            Ok(0) => self.end(),
            Ok(_) => {
                self.wait_dst = false;
                Step::Moved
            }
            Err(e) if errno(&e) == libc::EAGAIN => {
                // Which side would block: the source is empty, or the
                // destination full (a file source always has data).
                let src_empty = match self.kind {
                    Kind::File { .. } if self.input => false,
                    _ => raw::unread(src).map(|n| n == 0).unwrap_or(true),
                };
                self.wait_dst = !src_empty;
                Step::Blocked
            }
            Err(e) if errno(&e) == libc::EINTR => Step::Moved,
            Err(e) if matches!(errno(&e), libc::EINVAL | libc::ENOSYS | libc::EOPNOTSUPP) => {
                // This pair cannot be spliced (a file open for append, a
                // filesystem without splice): read and write instead.
                self.splice = false;
                Step::Moved
            }
            Err(e) => self.fail(e),
        }
    }

    fn copy_once(&mut self) -> Step {
        if self.pos == self.len {
            if self.buf.is_empty() {
                self.buf = vec![0; BUF];
            }
            match self.read() {
                Ok(0) => self.end(),
                Ok(n) => {
                    // Data in hand: what it waits for now is the destination.
                    (self.pos, self.len, self.wait_dst) = (0, n, true);
                    Step::Moved
                }
                Err(e) if errno(&e) == libc::EAGAIN => {
                    self.wait_dst = false;
                    Step::Blocked
                }
                Err(e) if !is_retry(&e) => self.end(),
                Err(_) => Step::Moved,
            }
        } else {
            match self.write() {
                Ok(n) => {
                    self.pos += n;
                    self.wait_dst = self.pos < self.len;
                    Step::Moved
                }
                Err(e) if errno(&e) == libc::EAGAIN => {
                    self.wait_dst = true;
                    Step::Blocked
                }
                Err(e) if errno(&e) == libc::EINTR => Step::Moved,
                Err(e) => self.fail(e),
            }
        }
    }

    fn read(&mut self) -> io::Result<usize> {
        let own = self.own.as_ref().map(|o| o.as_raw_fd()).unwrap_or(-1);
        let buf = self.buf.as_mut_ptr() as *mut libc::c_void;
        let n = self.buf.len();
        // SAFETY: `buf` has `n` writable bytes; the descriptors are open.
        let r = unsafe {
            if !self.input {
                libc::read(own, buf, n)
            } else if self.kind == Kind::Socket {
                libc::recv(self.caller, buf, n, libc::MSG_DONTWAIT)
            } else if let Some(off) = self.off {
                libc::pread(self.caller, buf, n, off)
            } else {
                libc::read(self.caller, buf, n)
            }
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        if let Some(off) = self.off.as_mut() {
            *off += r as i64;
        }
        Ok(r as usize)
    }

    fn write(&mut self) -> io::Result<usize> {
        let own = self.own.as_ref().map(|o| o.as_raw_fd()).unwrap_or(-1);
        let mut n = self.len - self.pos;
        if !self.input && self.kind == Kind::Closed {
            return Ok(n); // nowhere to go: dropped
        }
        if !self.input && self.caller_may_block() {
            n = n.min(TTY_CHUNK);
        }
        let data = self.buf[self.pos..].as_ptr() as *const libc::c_void;
        // SAFETY: `data` has at least `n` readable bytes; the fds are open.
        let r = unsafe {
            if self.input {
                libc::write(own, data, n)
            } else if self.kind == Kind::Socket {
                libc::send(self.caller, data, n, libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL)
            } else {
                libc::write(self.caller, data, n)
            }
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(r as usize)
    }

    /// The end of an output because the caller's side refused it (a full
    /// disk, an I/O error; a reader that went away is not a failure): the
    /// world's next write gets EPIPE, and the failure is kept for cloche
    /// to report (what the world wrote already is lost).
    fn fail(&mut self, e: io::Error) -> Step {
        if !self.input && errno(&e) != libc::EPIPE {
            self.failed.get_or_insert(e);
        }
        self.end()
    }

    /// The end of this stream (EOF, or the far side is gone): for stdin the
    /// world reads EOF; for an output the world's next write fails (EPIPE).
    fn end(&mut self) -> Step {
        self.own = None;
        Step::Blocked
    }
}
