//! Every world in a user namespace of its own (docs/security.md, *User
//! namespace*).
//!
//! A world's uids and gids 0..65535 are host ids of a range reserved for
//! cloche (`/etc/subuid` and `/etc/subgid`, entry `cloche`, or the policy's
//! `world.userns_ids`), a block of 65,536 of its own for each world running
//! at once: the range is cut into slots, and a world holds its slot by an
//! open-file-description lock on one byte of [`SLOTS_LOCK`] for its life.
//!
//! The namespace is made by the parent just before the clone
//! ([`Userns::make`]): a helper process is cloned into a new user namespace
//! while the calling thread's effective ids are the slot's first host ids,
//! so that the namespace's owner (the id its per-user counters are charged
//! to in the initial namespace: inotify instances, message queue bytes,
//! processes) is that id and never host root; the parent writes the id maps
//! and keeps a descriptor of the namespace. The helper waits on a pipe,
//! exits as soon as the namespace is open, and is reaped when the world
//! ends.
//!
//! The world's child builds every mount as host root (the mount, pid,
//! network, IPC, UTS and cgroup namespaces stay owned by the initial user
//! namespace), the base and the upper store seen through idmapped mounts of
//! this mapping, and enters the namespace with `setns` just before it drops
//! its capabilities (`child::setup`).

use crate::error::WorldError;
use serde::Serialize;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::Path;

/// Ids a world maps: its uids and gids 0..65535 (65534 is `nobody`).
pub const WORLD_IDS: u32 = 65536;

/// The name of the `/etc/subuid` and `/etc/subgid` entry that reserves
/// worlds' host ids.
pub const SUBID_NAME: &str = "cloche";

/// The slot locks: byte `k` held while a world uses slot `k` of the range.
/// One file for the machine, on /run (gone at reboot with every world).
pub const SLOTS_LOCK: &str = "/run/cloche/userns.lock";

/// The host ids reserved for worlds: uids `uid..uid+count`, gids
/// `gid..gid+count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdRange {
    pub uid: u32,
    pub gid: u32,
    pub count: u32,
}

/// One world's mapping: its ids 0..count-1 are host uids `uid..` and gids
/// `gid..` (the report's and the audit's `userns`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct WorldIds {
    /// The host uid of the world's uid 0.
    pub uid: u32,
    /// The host gid of the world's gid 0.
    pub gid: u32,
    /// How many ids are mapped (from 0).
    pub count: u32,
}

impl WorldIds {
    /// The host uid and gid of the world's user (`None`: its root).
    pub fn host_owner(&self, user: Option<&crate::spec::WorldUser>) -> (u32, u32) {
        let (uid, gid) = user.map_or((0, 0), |u| (u.uid, u.gid));
        (self.uid + uid, self.gid + gid)
    }
}

impl IdRange {
    /// `START:COUNT` (the policy's `world.userns_ids`): the same numbers
    /// for uids and gids.
    pub fn parse(s: &str) -> Result<IdRange, String> {
        let (a, b) = s.split_once(':').ok_or_else(|| format!("{s:?}: expected START:COUNT"))?;
        let start = a.trim().parse::<u32>().map_err(|_| format!("{s:?}: START is not a number"))?;
        let count = b.trim().parse::<u32>().map_err(|_| format!("{s:?}: COUNT is not a number"))?;
        IdRange::new(start, count)
    }

    /// `count` ids from `start`, for uids and gids alike.
    pub fn new(start: u32, count: u32) -> Result<IdRange, String> {
        let r = IdRange { uid: start, gid: start, count };
        r.sane()?;
        Ok(r)
    }

    /// Refuses a range that holds a user or group of this host's
    /// /etc/passwd or /etc/group ([`IdRange::check_disjoint`]).
    pub fn check_host(&self) -> Result<(), String> {
        let read = |p: &str| std::fs::read_to_string(p).map_err(|e| format!("{p}: {e}"));
        self.check_disjoint(&read("/etc/passwd")?, &read("/etc/group")?)
    }

    /// The `cloche` entries of `/etc/subuid` and `/etc/subgid` (texts).
    pub fn from_subid(subuid: &str, subgid: &str) -> Result<IdRange, String> {
        let find = |text: &str, file: &str| -> Result<(u32, u32), String> {
            for line in text.lines() {
                let f: Vec<&str> = line.trim().split(':').collect();
                if f.len() == 3 && f[0] == SUBID_NAME {
                    let n = |s: &str| s.parse::<u32>().map_err(|_| format!("{file}: bad entry {line:?}"));
                    return Ok((n(f[1])?, n(f[2])?));
                }
            }
            Err(format!("{file} has no `{SUBID_NAME}` entry"))
        };
        let (uid, ucount) = find(subuid, "/etc/subuid")?;
        let (gid, gcount) = find(subgid, "/etc/subgid")?;
        let r = IdRange { uid, gid, count: ucount.min(gcount) };
        r.sane()?;
        Ok(r)
    }

    /// The range `/etc/subuid` and `/etc/subgid` reserve for cloche.
    pub fn from_system() -> Result<IdRange, String> {
        let read = |p: &str| {
            std::fs::read_to_string(p).or_else(|e| match e.kind() {
                io::ErrorKind::NotFound => Ok(String::new()),
                _ => Err(format!("{p}: {e}")),
            })
        };
        IdRange::from_subid(&read("/etc/subuid")?, &read("/etc/subgid")?).map_err(|e| format!("{e}; {}", how_to()))
    }

    /// What no configuration may get wrong: room for one world at least,
    /// no id 0, nothing past the last valid id.
    fn sane(&self) -> Result<(), String> {
        if self.count < WORLD_IDS {
            return Err(format!("{} ids: a world needs {WORLD_IDS}", self.count));
        }
        for (what, start) in [("uid", self.uid), ("gid", self.gid)] {
            // 65535 and 2^32-1 are invalid ids; the range may not hold 0.
            if start < WORLD_IDS || u64::from(start) + u64::from(self.count) > u64::from(u32::MAX) {
                return Err(format!("the {what} range {start}:{} must lie within 65536..4294967295", self.count));
            }
        }
        Ok(())
    }

    /// Worlds that can run at once (one slot of [`WORLD_IDS`] each).
    pub fn slots(&self) -> u32 {
        self.count / WORLD_IDS
    }

    /// Refuses a range that holds the id of a user or group the host knows
    /// (`passwd`, `group`: the texts of /etc/passwd and /etc/group): a world
    /// would be that user on the host's kernel (its processes' counters,
    /// and the owner of every world's namespace of that slot).
    pub fn check_disjoint(&self, passwd: &str, group: &str) -> Result<(), String> {
        let inside = |start: u32, id: u32| id >= start && id - start < self.count;
        let ids = |text: &str| -> Vec<(String, u32)> {
            text.lines()
                .filter_map(|l| {
                    let f: Vec<&str> = l.split(':').collect();
                    Some((f.first()?.to_string(), f.get(2)?.parse().ok()?))
                })
                .collect()
        };
        if let Some((name, id)) = ids(passwd).into_iter().find(|(_, id)| inside(self.uid, *id)) {
            return Err(format!(
                "the user {name} (uid {id}) is inside the worlds' uid range {}:{}",
                self.uid, self.count
            ));
        }
        if let Some((name, id)) = ids(group).into_iter().find(|(_, id)| inside(self.gid, *id)) {
            return Err(format!(
                "the group {name} (gid {id}) is inside the worlds' gid range {}:{}",
                self.gid, self.count
            ));
        }
        Ok(())
    }

    /// The mapping of slot `k`.
    fn slot(&self, k: u32) -> WorldIds {
        WorldIds { uid: self.uid + k * WORLD_IDS, gid: self.gid + k * WORLD_IDS, count: WORLD_IDS }
    }
}

/// What `cloche doctor` says of a range: a user namespace of one of its
/// slots made and mapped, and each of `mounts` (the root filesystem and
/// the host data mounts worlds carry) seen through it, as a world would.
/// `Err` names the first thing that fails.
pub fn probe(range: &IdRange, mounts: &[&Path]) -> Result<(), String> {
    use std::os::fd::AsFd;
    let ns = Userns::make(range, 0).map_err(|e| e.to_string())?;
    for m in mounts {
        let path = std::ffi::CString::new(m.as_os_str().as_encoded_bytes()).map_err(|_| "NUL in a path".to_string())?;
        let tree =
            crate::raw::open_tree_clone(libc::AT_FDCWD, &path, false).map_err(|e| format!("{}: {e}", m.display()))?;
        crate::raw::mount_setattr_idmap(tree.as_fd(), ns.fd.as_fd(), 0)
            .map_err(|e| format!("{}: no idmapped mount ({e}): worlds cannot carry it", m.display()))?;
    }
    Ok(())
}

/// How to reserve the range (said with every refusal for lack of one).
pub fn how_to() -> String {
    format!(
        "reserve host ids for worlds with `echo {SUBID_NAME}:1879048192:67108864 | tee -a /etc/subuid /etc/subgid` \
         (1024 worlds at once; `cloche doctor` checks it), or set world.userns = false in the policy"
    )
}

/// A world's user namespace, its slot held.
pub(crate) struct Userns {
    pub ids: WorldIds,
    /// The namespace (`/proc/<helper>/ns/user`).
    pub fd: OwnedFd,
    /// Byte `slot` of [`SLOTS_LOCK`], locked.
    _slot: File,
    /// Exiting or gone; reaped on drop.
    _helper: Helper,
}

impl Userns {
    /// Takes a free slot of `range` (the search starts at `seed`'s place,
    /// so that worlds started together rarely try the same slot) and makes
    /// the world's namespace with its mapping.
    pub(crate) fn make(range: &IdRange, seed: u64) -> Result<Userns, WorldError> {
        let fail = |step: &'static str| move |source: io::Error| WorldError::Sys { step, source };
        let (slot, lock) = take_slot(range.slots(), seed).map_err(fail("user namespace: take a slot of ids"))?;
        let ids = range.slot(slot);
        let mut helper = Helper::start(&ids).map_err(fail("user namespace: create"))?;
        let map = |file: &str, base: u32| -> io::Result<()> {
            let text = format!("0 {base} {WORLD_IDS}\n");
            std::fs::write(format!("/proc/{}/{file}", helper.pid), text)
        };
        map("uid_map", ids.uid).map_err(fail("user namespace: write uid_map"))?;
        map("gid_map", ids.gid).map_err(fail("user namespace: write gid_map"))?;
        let fd = File::open(format!("/proc/{}/ns/user", helper.pid)).map_err(fail("user namespace: open"))?;
        // The namespace lives on with its descriptor: the helper may go. It
        // exits on its own; it is reaped when the world is done (waiting for
        // it here would wait for the scheduler: milliseconds on a busy host).
        helper.let_go();
        Ok(Userns { ids, fd: fd.into(), _slot: lock, _helper: helper })
    }
}

/// The first free slot from `seed`'s place on, locked.
fn take_slot(slots: u32, seed: u64) -> io::Result<(u32, File)> {
    if slots == 0 {
        return Err(io::Error::other("the range holds no world"));
    }
    let path = Path::new(SLOTS_LOCK);
    if let Some(dir) = path.parent() {
        std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
    }
    let f = std::fs::OpenOptions::new().read(true).write(true).create(true).truncate(false).mode(0o600).open(path)?;
    let first = (seed % u64::from(slots)) as u32;
    for i in 0..slots {
        let k = (first + i) % slots;
        // SAFETY: flock is plain data; zeroed is valid (l_pid 0 for OFD locks).
        let mut fl: libc::flock = unsafe { std::mem::zeroed() };
        fl.l_type = libc::F_WRLCK as i16;
        fl.l_whence = libc::SEEK_SET as i16;
        fl.l_start = i64::from(k);
        fl.l_len = 1;
        // SAFETY: fcntl with a pointer to the flock we own.
        if unsafe { libc::fcntl(f.as_raw_fd(), libc::F_OFD_SETLK, &mut fl) } == 0 {
            return Ok((k, f));
        }
        let e = io::Error::last_os_error();
        if !matches!(e.raw_os_error(), Some(libc::EAGAIN) | Some(libc::EACCES)) {
            return Err(e);
        }
    }
    Err(io::Error::other(format!("all {slots} slots are in use by running worlds")))
}

/// The process that holds a new user namespace until its maps are written
/// and the namespace is open (a namespace is made with a process in it).
/// It shares cloche's memory (`CLONE_VM`: no copy of the page tables) and
/// does nothing but wait for its pipe to close.
struct Helper {
    pid: libc::pid_t,
    /// Our end of its pipe: closed, it exits.
    hold: Option<OwnedFd>,
    /// Its stack (it runs in our memory until it is reaped; unmapped after).
    _stack: crate::raw::ChildStack,
}

/// The helper's stack: it makes three system calls.
const HELPER_STACK: usize = 16 * 1024;

impl Helper {
    /// Closes its pipe: it exits.
    fn let_go(&mut self) {
        drop(self.hold.take());
    }

    /// Clones the helper into a new user namespace owned by `ids`' host uid
    /// and gid.
    fn start(ids: &WorldIds) -> io::Result<Helper> {
        let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(io::Error::from)?;
        let stack = crate::raw::ChildStack::new(HELPER_STACK)?;
        let pid = as_owner(ids, || clone_helper(&stack, r.as_raw_fd(), w.as_raw_fd()))?;
        drop(r);
        Ok(Helper { pid, hold: Some(w), _stack: stack })
    }
}

impl Drop for Helper {
    fn drop(&mut self) {
        // Its pipe closed, it exits (if it has not yet); then it is reaped,
        // and only then is its stack freed.
        self.let_go();
        let mut status = 0;
        // SAFETY: waits for our own child; status is ours.
        while unsafe { libc::waitpid(self.pid, &mut status, 0) } < 0
            && io::Error::last_os_error().raw_os_error() == Some(libc::EINTR)
        {}
    }
}

/// Runs `f` with the calling thread's effective uid and gid those of `ids`
/// (raw calls: this thread only, whatever other threads exist), capabilities
/// kept (`SECBIT_NO_SETUID_FIXUP`, so that a host restricting unprivileged
/// user namespaces still sees a capable creator), then restores them.
fn as_owner<T>(ids: &WorldIds, f: impl FnOnce() -> io::Result<T>) -> io::Result<T> {
    let old_bits = prctl(libc::PR_GET_SECUREBITS, 0)?;
    prctl(libc::PR_SET_SECUREBITS, old_bits | libc::SECBIT_NO_SETUID_FIXUP as libc::c_ulong)?;
    let r = set_effective(ids.uid, ids.gid).and_then(|()| f());
    // Back to root whatever happened (NO_SETUID_FIXUP kept CAP_SETUID and
    // CAP_SETGID for it), then the securebits as they were.
    let back = set_effective(0, 0);
    let bits = prctl(libc::PR_SET_SECUREBITS, old_bits);
    back.and(bits.map(drop)).and(r)
}

/// The calling thread's effective uid and gid (real and saved unchanged).
fn set_effective(uid: u32, gid: u32) -> io::Result<()> {
    let keep = u32::MAX; // -1: unchanged
                         // SAFETY: integer arguments only; raw calls change this thread's ids.
    unsafe {
        if libc::syscall(libc::SYS_setresuid, keep, uid, keep) != 0 {
            return Err(io::Error::last_os_error());
        }
        if libc::syscall(libc::SYS_setresgid, keep, gid, keep) != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

fn prctl(op: libc::c_int, arg: libc::c_ulong) -> io::Result<libc::c_ulong> {
    // SAFETY: prctl with integer arguments only.
    let r = unsafe { libc::prctl(op, arg, 0 as libc::c_ulong, 0 as libc::c_ulong, 0 as libc::c_ulong) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(r as libc::c_ulong)
}

/// The helper's whole life: close its copy of the pipe's write end, wait
/// for EOF, exit. `arg` carries the two descriptors as a number (read end
/// in the low 32 bits), so that nothing of cloche's memory is read. Only
/// raw system calls: it runs in cloche's memory on a stack of its own and
/// touches nothing else (none of these calls fails in a way that sets
/// errno: close of an open descriptor, read to EOF, exit).
extern "C" fn helper_main(arg: *mut libc::c_void) -> libc::c_int {
    let v = arg as usize as u64;
    let (read, write) = ((v & 0xffff_ffff) as libc::c_long, (v >> 32) as libc::c_long);
    let mut b = 0u8;
    // SAFETY: system calls on descriptors of this process's own table and
    // a byte on its own stack.
    unsafe {
        libc::syscall(libc::SYS_close, write);
        while libc::syscall(libc::SYS_read, read, &mut b as *mut u8, 1) > 0 {}
        libc::syscall(libc::SYS_exit, 0);
    }
    0
}

/// Clones the helper (`CLONE_NEWUSER | CLONE_VM`, a descriptor table of its
/// own, SIGCHLD to us when it exits) on `stack`; returns its pid.
fn clone_helper(stack: &crate::raw::ChildStack, read: RawFd, write: RawFd) -> io::Result<libc::pid_t> {
    let arg = ((read as u32 as u64) | ((write as u32 as u64) << 32)) as usize;
    // SAFETY: `helper_main` makes only raw system calls on its own stack;
    // CLONE_VM shares our memory, so the stack must outlive it: `Helper`
    // keeps it until the helper is reaped.
    let pid = unsafe {
        libc::clone(
            helper_main,
            stack.top(),
            libc::CLONE_NEWUSER | libc::CLONE_VM | libc::SIGCHLD,
            arg as *mut libc::c_void,
        )
    };
    if pid < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(pid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_from_subid_files_and_the_policy() {
        let r = IdRange::from_subid("alice:100000:65536\ncloche:1879048192:67108864\n", "cloche:1879048192:131072\n");
        assert_eq!(r, Ok(IdRange { uid: 1879048192, gid: 1879048192, count: 131072 }));
        let r = r.unwrap();
        assert_eq!(r.slots(), 2);
        assert_eq!(r.slot(1), WorldIds { uid: 1879048192 + 65536, gid: 1879048192 + 65536, count: 65536 });
        let e = IdRange::from_subid("alice:100000:65536\n", "cloche:1879048192:131072\n").unwrap_err();
        assert!(e.contains("/etc/subuid has no `cloche` entry"), "{e}");
        assert!(IdRange::from_subid("cloche:0:65536\n", "cloche:0:65536\n").is_err(), "0 is never a world's");
        assert!(IdRange::from_subid("cloche:100000:1000\n", "cloche:100000:1000\n").is_err(), "too small");
        assert!(IdRange::parse("4294901760:65536").is_err(), "past the last id");
        assert_eq!(IdRange::parse("200000:65536"), Ok(IdRange { uid: 200000, gid: 200000, count: 65536 }));
        assert!(IdRange::parse("200000").is_err());
    }

    #[test]
    fn a_range_holding_a_known_user_or_group_is_refused() {
        let r = IdRange { uid: 200000, gid: 300000, count: 65536 };
        assert!(r.check_disjoint("root:x:0:0::/root:/bin/sh\nu:x:1000:1000::/home/u:/bin/sh\n", "g:x:1000:\n").is_ok());
        let e = r.check_disjoint("svc:x:200005:1::/:/bin/false\n", "").unwrap_err();
        assert!(e.contains("svc (uid 200005)"), "{e}");
        let e = r.check_disjoint("", "grp:x:365535:\n").unwrap_err();
        assert!(e.contains("grp (gid 365535)"), "{e}");
    }
}
