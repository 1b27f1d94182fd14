//! Asking the upstream: over a connected UDP socket (the kernel passes on
//! only datagrams from the upstream's address and port), again over TCP
//! when the answer is truncated, over TCP at once for the world's TCP
//! queries. Every wait also watches the resolver's stop descriptor, so a
//! world's end never waits for an upstream.

use super::wire::{Question, MAX_MESSAGE};
use hickory_proto::op::Message;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

/// How long the upstream has for one question (UDP, then TCP each).
const TIMEOUT: Duration = Duration::from_secs(3);
/// A UDP question not answered in this long is sent once more.
const RESEND: Duration = Duration::from_millis(1000);

/// Why no answer came.
#[derive(Debug)]
pub enum Failure {
    /// The resolver is stopping: nobody waits for the answer.
    Stopped,
    /// No answer in time, or the upstream could not be reached.
    Upstream,
}

impl From<io::Error> for Failure {
    fn from(_: io::Error) -> Failure {
        Failure::Upstream
    }
}

/// The upstream's answer to `q` (over TCP at once when `tcp`).
pub fn ask(q: &Question, upstream: SocketAddr, tcp: bool, stop: BorrowedFd<'_>) -> Result<Message, Failure> {
    let (id, msg) = q.upstream();
    if !tcp {
        let m = over_udp(q, id, &msg, upstream, stop)?;
        if !m.metadata.truncation {
            return Ok(m);
        }
    }
    over_tcp(q, id, &msg, upstream, stop)
}

fn over_udp(q: &Question, id: u16, msg: &[u8], upstream: SocketAddr, stop: BorrowedFd<'_>) -> Result<Message, Failure> {
    let sock = UdpSocket::bind(if upstream.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" })?;
    sock.connect(upstream)?;
    sock.set_nonblocking(true)?;
    sock.send(msg)?;
    let (start, mut resent) = (Instant::now(), false);
    let mut buf = vec![0u8; MAX_MESSAGE];
    loop {
        let wait = if resent { TIMEOUT } else { RESEND };
        if !wait_for(sock.as_raw_fd(), libc::POLLIN, stop, start + wait)? {
            if resent {
                return Err(io::Error::from(io::ErrorKind::TimedOut).into());
            }
            sock.send(msg)?;
            resent = true;
            continue;
        }
        match sock.recv(&mut buf) {
            // Another datagram from the upstream's address (a late answer
            // to something else, or a forgery): read on.
            Ok(n) => match q.reply_in(&buf[..n], id) {
                Some(m) => return Ok(m),
                None => continue,
            },
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            // An ICMP error (nobody on that port): no answer will come.
            Err(e) => return Err(e.into()),
        }
    }
}

fn over_tcp(q: &Question, id: u16, msg: &[u8], upstream: SocketAddr, stop: BorrowedFd<'_>) -> Result<Message, Failure> {
    let deadline = Instant::now() + TIMEOUT;
    let mut conn = connect(upstream, stop, deadline)?;
    let mut framed = (msg.len() as u16).to_be_bytes().to_vec();
    framed.extend_from_slice(msg);
    write_all(&mut conn, &framed, stop, deadline)?;
    // Answers to this connection's one question, until the one that matches.
    loop {
        let mut len = [0u8; 2];
        read_exact(&mut conn, &mut len, stop, deadline)?;
        let mut buf = vec![0u8; usize::from(u16::from_be_bytes(len))];
        read_exact(&mut conn, &mut buf, stop, deadline)?;
        if let Some(m) = q.reply_in(&buf, id) {
            return Ok(m);
        }
    }
}

/// A non-blocking TCP connection to `to`, made within `deadline`.
fn connect(to: SocketAddr, stop: BorrowedFd<'_>, deadline: Instant) -> Result<TcpStream, Failure> {
    let family = if to.is_ipv4() { libc::AF_INET } else { libc::AF_INET6 };
    // SAFETY: socket(2); the descriptor is owned at once.
    let fd = unsafe { libc::socket(family, libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error().into());
    }
    // SAFETY: fd was just returned by socket(2) and is ours.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let (addr, len) = sockaddr(to);
    // SAFETY: connect with a pointer to a sockaddr of `len` bytes.
    if unsafe { libc::connect(fd.as_raw_fd(), (&addr as *const libc::sockaddr_storage).cast(), len) } != 0 {
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EINPROGRESS) {
            return Err(e.into());
        }
        if !wait_for(fd.as_raw_fd(), libc::POLLOUT, stop, deadline)? {
            return Err(io::Error::from(io::ErrorKind::TimedOut).into());
        }
    }
    let conn = TcpStream::from(fd);
    if let Some(e) = conn.take_error()? {
        return Err(e.into());
    }
    Ok(conn)
}

/// `to` as a `sockaddr_in` or `sockaddr_in6` in a `sockaddr_storage`.
fn sockaddr(to: SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: sockaddr_storage is plain data, valid zeroed.
    let mut s: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let len = match to {
        SocketAddr::V4(a) => {
            // SAFETY: sockaddr_storage is large and aligned enough for sockaddr_in.
            let sin = unsafe { &mut *(&mut s as *mut libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            sin.sin_family = libc::AF_INET as libc::sa_family_t;
            sin.sin_port = a.port().to_be();
            sin.sin_addr.s_addr = u32::from_ne_bytes(a.ip().octets());
            size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(a) => {
            // SAFETY: sockaddr_storage is large and aligned enough for sockaddr_in6.
            let sin6 = unsafe { &mut *(&mut s as *mut libc::sockaddr_storage).cast::<libc::sockaddr_in6>() };
            sin6.sin6_family = libc::AF_INET6 as libc::sa_family_t;
            sin6.sin6_port = a.port().to_be();
            sin6.sin6_addr.s6_addr = a.ip().octets();
            sin6.sin6_scope_id = a.scope_id();
            size_of::<libc::sockaddr_in6>()
        }
    };
    (s, len as libc::socklen_t)
}

/// Reads exactly `buf` from a non-blocking stream by `deadline`.
pub fn read_exact(s: &mut TcpStream, buf: &mut [u8], stop: BorrowedFd<'_>, deadline: Instant) -> Result<(), Failure> {
    let mut at = 0;
    while at < buf.len() {
        match s.read(&mut buf[at..]) {
            Ok(0) => return Err(io::Error::from(io::ErrorKind::UnexpectedEof).into()),
            Ok(n) => at += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                if !wait_for(s.as_raw_fd(), libc::POLLIN, stop, deadline)? {
                    return Err(io::Error::from(io::ErrorKind::TimedOut).into());
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Writes all of `buf` to a non-blocking stream by `deadline`.
pub fn write_all(s: &mut TcpStream, buf: &[u8], stop: BorrowedFd<'_>, deadline: Instant) -> Result<(), Failure> {
    let mut at = 0;
    while at < buf.len() {
        match s.write(&buf[at..]) {
            Ok(n) => at += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                if !wait_for(s.as_raw_fd(), libc::POLLOUT, stop, deadline)? {
                    return Err(io::Error::from(io::ErrorKind::TimedOut).into());
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Waits until `fd` is ready for `events` (true), `deadline` passes
/// (false), or `stop` is readable or hung up (`Failure::Stopped`).
pub fn wait_for(fd: RawFd, events: i16, stop: BorrowedFd<'_>, deadline: Instant) -> Result<bool, Failure> {
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let ms = i32::try_from(left.as_millis().saturating_add(1)).unwrap_or(i32::MAX);
        let mut p = [
            libc::pollfd { fd, events, revents: 0 },
            libc::pollfd { fd: stop.as_raw_fd(), events: libc::POLLIN, revents: 0 },
        ];
        // SAFETY: poll on our own array of two pollfd.
        let n = unsafe { libc::poll(p.as_mut_ptr(), 2, if left.is_zero() { 0 } else { ms }) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e.into());
        }
        if p[1].revents != 0 {
            return Err(Failure::Stopped);
        }
        if p[0].revents != 0 {
            return Ok(true);
        }
        if left.is_zero() {
            return Ok(false);
        }
    }
}
