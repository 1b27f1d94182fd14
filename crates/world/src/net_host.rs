//! The host's side of scoped networks, shared by every world: forwarding,
//! the masquerade table `inet cloche_nat`, and its removal once no world
//! with a network is left. All of it under one host lock.

use crate::network::err;
use cloche_net::nft;
use cloche_net::scope;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::AsRawFd;

/// The host's masquerade table (`inet` family).
const HOST_TABLE: &str = nft::HOST_TABLE;
const INET: u8 = 1;

/// How long the table outlives the last world: a world that starts within
/// it finds the table there, so back-to-back runs pay neither its removal
/// (an RCU grace period, 9-13 ms, under the host lock) nor its making.
const LINGER_NS: i64 = 300_000_000;

/// /run/cloche/net.lock, beside the liveness locks.
fn lock_file() -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    let path = std::path::Path::new(crate::state::LIVE_LOCK).with_file_name("net.lock");
    std::fs::OpenOptions::new().create(true).truncate(false).write(true).mode(0o600).open(path)
}

/// The host's network set-up (masquerade table) is checked, made and
/// removed under this lock (flock on /run/cloche/net.lock).
pub(crate) fn lock() -> Result<std::fs::File, crate::WorldError> {
    let f = lock_file().map_err(|e| err("network lock")(e.to_string()))?;
    // SAFETY: flock on a descriptor we own.
    if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) } != 0 {
        return Err(err("network lock")(std::io::Error::last_os_error().to_string()));
    }
    Ok(f)
}

/// Forwarding and the pools' masquerading, made once per host.
pub(crate) fn setup_once(pool: (Ipv4Addr, u8), pool6: Option<(Ipv6Addr, u8)>) -> Result<(), crate::WorldError> {
    let fwd = "/proc/sys/net/ipv4/ip_forward";
    if std::fs::read_to_string(fwd).map(|v| v.trim() != "1").unwrap_or(true) {
        std::fs::write(fwd, "1").map_err(|e| err("enable IPv4 forwarding")(e.to_string()))?;
    }
    if pool6.is_some() {
        ipv6_forwarding().map_err(|e| err("enable IPv6 forwarding")(e.to_string()))?;
    }
    let host_err = |e: std::io::Error| err("host masquerade")(e.to_string());
    let mut pools = vec![(IpAddr::from(pool.0), pool.1)];
    pools.extend(pool6.map(|(n, p)| (IpAddr::from(n), p)));
    // One dump of the table's rules: made by an earlier world, it may lack
    // the pools of this world's policy, whose rules are then added (never
    // removed one by one: the table goes with the last world). A dump of a
    // table that is not there is empty: then the table is made, with them.
    let sock = nft::socket().map_err(host_err)?;
    let have = scope::rule_tags(&sock, INET, HOST_TABLE).map_err(host_err)?;
    pools.retain(|(n, p)| !have.contains(&nft::pool_tag(*n, *p)));
    if pools.is_empty() {
        return Ok(());
    }
    let first = if have.is_empty() { nft::host_nat(&pools, false) } else { nft::host_nat_rules(&pools) };
    match nft::send(&sock, &first) {
        // A table of that name without any rule of ours: made again, ours
        // (a fresh socket: the failed batch may have left answers unread).
        Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {
            nft::send(&nft::socket().map_err(host_err)?, &nft::host_nat(&pools, true)).map_err(host_err)
        }
        r => r.map_err(host_err),
    }
}

/// Turns IPv6 forwarding on, once. Forwarding changes how an interface
/// treats router advertisements: with `accept_ra` 1 it would stop taking
/// them (and the host could lose its IPv6 default route), so each such
/// interface, and the default for new ones, is moved to 2 first ("accept
/// even when forwarding"): the host keeps learning routes as before.
fn ipv6_forwarding() -> std::io::Result<()> {
    let conf = std::path::Path::new("/proc/sys/net/ipv6/conf");
    if std::fs::read_to_string(conf.join("all/forwarding"))?.trim() == "1" {
        return Ok(());
    }
    for e in std::fs::read_dir(conf)?.flatten() {
        let ra = e.path().join("accept_ra");
        if e.file_name() != "all" && std::fs::read_to_string(&ra).is_ok_and(|v| v.trim() == "1") {
            std::fs::write(&ra, "2")?;
        }
    }
    std::fs::write(conf.join("all/forwarding"), "1")
}

/// Removes the host's masquerade table a moment later, if by then no live
/// world has a veth (`own`: the calling world's, not counted): from a
/// detached grandchild, so that nobody waits, neither this world nor the
/// next. Also the start-up sweep's part after crashed runs (`own` empty).
pub fn remove_when_idle(own: &str) {
    if let Some(r) = IdleRemoval::prepare(own) {
        r.detach();
    }
}

/// What [`remove_when_idle`] needs, opened in this process: after fork(2)
/// in a threaded process the child may only make async-signal-safe calls.
pub(crate) struct IdleRemoval {
    /// The host lock, live.lock, /sys/class/net, a netfilter socket.
    files: [std::fs::File; 3],
    sock: std::os::fd::OwnedFd,
    own: Vec<u8>,
    get: Vec<u8>,
    del: Vec<u8>,
}

impl std::fmt::Debug for IdleRemoval {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "IdleRemoval({})", String::from_utf8_lossy(&self.own))
    }
}

impl IdleRemoval {
    /// None if something cannot be opened: the next world's end, or the
    /// start-up sweep, will remove the table.
    pub(crate) fn prepare(own: &str) -> Option<IdleRemoval> {
        let (Ok(lock), Ok(live), Ok(dir), Ok(sock)) =
            (lock_file(), crate::state::open_lock_file(), std::fs::File::open("/sys/class/net"), nft::socket())
        else {
            return None;
        };
        let (get, del) = (nft::get_table(INET, HOST_TABLE), nft::delete_table(INET, HOST_TABLE));
        Some(IdleRemoval { files: [lock, live, dir], sock, own: own.as_bytes().to_vec(), get, del })
    }

    /// Its descriptors (to keep open across a fork).
    pub(crate) fn fds(&self) -> [i32; 4] {
        let [lock, live, dir] = &self.files;
        [lock.as_raw_fd(), live.as_raw_fd(), dir.as_raw_fd(), self.sock.as_raw_fd()]
    }

    /// In a process nobody waits for, about to end (a fork of the world's
    /// end's child, `teardown_child`, reparented when that child exits):
    /// closes every other descriptor, lingers, removes the table if idle,
    /// exits.
    ///
    /// # Safety
    /// Only async-signal-safe calls on memory made before the fork: callable
    /// in the child of a fork of a threaded process.
    pub(crate) unsafe fn run_and_exit(&self) -> ! {
        idle_then_remove(self.fds(), &self.own, &self.get, &self.del)
    }

    /// From a process that goes on: a detached grandchild does it.
    pub(crate) fn detach(&self) {
        // SAFETY: the children run only `run_and_exit` (async-signal-safe
        // calls on memory made before the fork) and _exit; the parent reaps
        // the child, and the grandchild is reparented, so nothing is left
        // to reap.
        unsafe {
            match libc::fork() {
                0 => {
                    if libc::fork() == 0 {
                        self.run_and_exit();
                    }
                    libc::_exit(0);
                }
                pid if pid > 0 => {
                    let mut status = 0;
                    libc::waitpid(pid, &mut status, 0);
                }
                _ => {} // no child: left to the next world's end or the sweep
            }
        }
    }
}

/// The detached process of [`IdleRemoval`], `fds` = host lock, live.lock,
/// /sys/class/net, a netfilter socket. Only async-signal-safe calls.
unsafe fn idle_then_remove(fds: [i32; 4], own: &[u8], get: &[u8], del: &[u8]) -> ! {
    // Inherited descriptors must not keep anything alive: an OFD lock (the
    // parent's claim on live.lock) lives as long as any copy of it, and a
    // pipe on stdout or stderr would keep its reader waiting for the end.
    close_all_but(fds);
    let linger = libc::timespec { tv_sec: 0, tv_nsec: LINGER_NS };
    libc::nanosleep(&linger, std::ptr::null_mut());
    remove_if_idle(fds, own, get, del);
    libc::_exit(0) // the host lock goes with the process
}

/// Removes the host's masquerade table now, if no live world has a veth
/// (the sweep after crashed runs, in a process that is about to end: a
/// grandchild lingering for [`remove_when_idle`] would be killed with it).
/// True if the table was removed.
pub(crate) fn remove_now_if_idle() -> bool {
    let (Ok(lock), Ok(live), Ok(dir), Ok(sock)) =
        (lock_file(), crate::state::open_lock_file(), std::fs::File::open("/sys/class/net"), nft::socket())
    else {
        return false;
    };
    let (get, del) = (nft::get_table(INET, HOST_TABLE), nft::delete_table(INET, HOST_TABLE));
    let fds = [lock.as_raw_fd(), live.as_raw_fd(), dir.as_raw_fd(), sock.as_raw_fd()];
    // SAFETY: descriptors held open by this frame; the lock is released
    // when `lock` is dropped below.
    unsafe { remove_if_idle(fds, b"", &get, &del) }
}

/// Under the host lock (taken here, released with `fds[0]`), removes the
/// table if no live world other than `own` has a veth. Only
/// async-signal-safe calls.
unsafe fn remove_if_idle(fds: [i32; 4], own: &[u8], get: &[u8], del: &[u8]) -> bool {
    let [lock, live, dir, sock] = fds;
    libc::flock(lock, libc::LOCK_EX);
    if !networked_world_live(dir, live, own) && table_present(sock, get) {
        // The kernel commits the batch inside send(2).
        return libc::send(sock, del.as_ptr().cast(), del.len(), 0) >= 0;
    }
    false
}

/// Closes every descriptor but `keep`, standard ones included
/// (close_range(2)).
unsafe fn close_all_but(mut keep: [i32; 4]) {
    keep.sort_unstable();
    let mut from = 0u32;
    for fd in keep.map(|fd| fd as u32) {
        if fd > from {
            libc::syscall(libc::SYS_close_range, from, fd - 1, 0);
        }
        from = from.max(fd + 1);
    }
    libc::syscall(libc::SYS_close_range, from, u32::MAX, 0);
}

/// True if a veth of a world whose run still holds its liveness lock is on
/// the host (`cl` + 12 hex digits, but `own`), or if that cannot be told.
unsafe fn networked_world_live(dir: i32, live: i32, own: &[u8]) -> bool {
    let mut buf = [0u8; 8192];
    loop {
        let n = libc::syscall(libc::SYS_getdents64, dir, buf.as_mut_ptr(), buf.len());
        if n <= 0 {
            return n < 0;
        }
        // struct linux_dirent64: ino 8, off 8, reclen 2, type 1, name
        let mut at = 0usize;
        while at + 19 <= n as usize {
            let reclen = usize::from(u16::from_ne_bytes([buf[at + 16], buf[at + 17]]));
            if reclen == 0 || at + reclen > n as usize {
                return true;
            }
            let name = &buf[at + 19..at + reclen];
            let name = &name[..name.iter().position(|b| *b == 0).unwrap_or(name.len())];
            if let Some(prefix) = veth_prefix(name).filter(|_| name != own) {
                let (start, len) = crate::state::prefix_range(prefix);
                // SAFETY: flock is plain data; zeroed is valid (l_pid 0 for OFD locks).
                let mut fl: libc::flock = std::mem::zeroed();
                fl.l_type = libc::F_WRLCK as i16;
                fl.l_whence = libc::SEEK_SET as i16;
                fl.l_start = start;
                fl.l_len = len;
                if libc::fcntl(live, libc::F_OFD_GETLK, &mut fl) < 0 || fl.l_type != libc::F_UNLCK as i16 {
                    return true;
                }
            }
            at += reclen;
        }
    }
}

/// The 12 hex digits of a world's veth name (`cl` + 12), as a number.
fn veth_prefix(name: &[u8]) -> Option<u64> {
    let digits = name.strip_prefix(b"cl").filter(|d| d.len() == 12)?;
    digits.iter().try_fold(0u64, |acc, b| Some(acc << 4 | u64::from((*b as char).to_digit(16)?)))
}

/// True unless the kernel answers `get` (a request for the table) with an
/// error: on a reply it cannot read, the removal is tried anyway.
unsafe fn table_present(sock: i32, get: &[u8]) -> bool {
    if libc::send(sock, get.as_ptr().cast(), get.len(), 0) < 0 {
        return true;
    }
    let mut buf = [0u8; 4096];
    let n = libc::recv(sock, buf.as_mut_ptr().cast(), buf.len(), 0);
    if n < 20 || u16::from_ne_bytes([buf[4], buf[5]]) != 2 {
        return true; // the table itself (or an unreadable answer)
    }
    i32::from_ne_bytes([buf[16], buf[17], buf[18], buf[19]]) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn veth_names_give_their_worlds_prefix() {
        assert_eq!(veth_prefix(b"cl0123456789ab"), Some(0x0123456789ab));
        for other in [&b"clt-r0"[..], b"eth0", b"cl0123456789a", b"cl0123456789abc", b"cl0123456789ag"] {
            assert_eq!(veth_prefix(other), None, "{}", String::from_utf8_lossy(other));
        }
    }
}
