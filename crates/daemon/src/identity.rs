//! Who is calling: the peer's uid, gid and pid (`SO_PEERCRED`) and groups
//! (`SO_PEERGROUPS`), as the kernel recorded them when the client
//! connected, and the roles the configuration gives them.

use crate::config::{Config, Roles};
use cloche_service::HostUser;
use serde::Serialize;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

/// The caller of one connection.
#[derive(Debug, Clone, Serialize)]
pub struct Caller {
    pub uid: u32,
    pub gid: u32,
    pub pid: Option<i32>,
    pub groups: Vec<u32>,
    pub roles: Roles,
}

impl Caller {
    /// The caller of a connected Unix stream socket.
    pub fn of_socket(fd: BorrowedFd<'_>, cfg: &Config) -> io::Result<Caller> {
        let (uid, gid, pid) = peer_cred(fd)?;
        let groups = peer_groups(fd)?;
        let roles = cfg.roles(uid, gid, &groups);
        Ok(Caller { uid, gid, pid: (pid > 0).then_some(pid), groups, roles })
    }

    /// `uid:<uid>`: the actor the broker and the audit log record (as the
    /// `cloche` command names its callers).
    pub fn actor(&self) -> String {
        format!("uid:{}", self.uid)
    }

    /// Reviewers and admins see every batch and world; agents their own.
    pub fn sees_all(&self) -> bool {
        self.roles.reviewer || self.roles.admin
    }

    pub fn host_user(&self) -> HostUser {
        HostUser { uid: self.uid, gid: self.gid, groups: self.groups.clone() }
    }
}

/// `SO_PEERCRED`: uid, gid and pid of the peer at connect time.
fn peer_cred(fd: BorrowedFd<'_>) -> io::Result<(u32, u32, i32)> {
    let mut c = libc::ucred { pid: 0, uid: 0, gid: 0 };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: `c` and `len` describe a ucred the kernel fills.
    let r = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            (&mut c as *mut libc::ucred).cast(),
            &mut len,
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((c.uid, c.gid, c.pid))
}

/// `SO_PEERGROUPS`: the peer's supplementary groups at connect time.
fn peer_groups(fd: BorrowedFd<'_>) -> io::Result<Vec<u32>> {
    let mut buf = vec![0u32; 64];
    loop {
        let mut len = (buf.len() * 4) as libc::socklen_t;
        // SAFETY: `buf` holds `len` bytes the kernel may fill.
        let r = unsafe {
            libc::getsockopt(fd.as_raw_fd(), libc::SOL_SOCKET, libc::SO_PEERGROUPS, buf.as_mut_ptr().cast(), &mut len)
        };
        if r == 0 {
            buf.truncate(len as usize / 4);
            return Ok(buf);
        }
        let e = io::Error::last_os_error();
        // ERANGE: `len` now says how much is needed.
        if e.raw_os_error() == Some(libc::ERANGE) && (len as usize) / 4 > buf.len() && buf.len() < 1 << 16 {
            buf.resize(len as usize / 4, 0);
            continue;
        }
        return Err(e);
    }
}
