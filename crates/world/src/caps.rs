//! Dropping every capability, for good.
//!
//! A world runs as uid 0 (of its user namespace, or the host's when the
//! policy turns that off), so two things must hold after this step: every
//! capability set is empty, and no later `execve` gives any back. Order matters (docs/design.md, facts of the kernel):
//! 1. securebits, while CAP_SETPCAP is still held: NOROOT (uid 0 gains no
//!    capabilities on exec), NO_SETUID_FIXUP, NO_CAP_AMBIENT_RAISE, KEEP_CAPS
//!    off, each one locked;
//! 2. the bounding set, one capability at a time (needs CAP_SETPCAP);
//! 3. with a user to run as (`cloched`'s callers other than root; in a user
//!    namespace its root too, whose ids the child takes on entering it), the
//!    supplementary groups, gid and uid become that user's (all of real,
//!    effective, saved and filesystem ids; CAP_SETUID and CAP_SETGID are
//!    still held, and NO_SETUID_FIXUP keeps the sets as they are until 5);
//! 4. the ambient set;
//! 5. inheritable, then permitted (which clears effective), then a read-back
//!    that fails closed if any set is not empty or any id is not the user's.

use std::io;

/// Every securebit on (except KEEP_CAPS) and locked.
const SECUREBITS: libc::c_ulong = (libc::SECBIT_NOROOT
    | libc::SECBIT_NOROOT_LOCKED
    | libc::SECBIT_NO_SETUID_FIXUP
    | libc::SECBIT_NO_SETUID_FIXUP_LOCKED
    | libc::SECBIT_KEEP_CAPS_LOCKED
    | libc::SECBIT_NO_CAP_AMBIENT_RAISE
    | libc::SECBIT_NO_CAP_AMBIENT_RAISE_LOCKED) as libc::c_ulong;

fn prctl(op: libc::c_int, a: libc::c_ulong, b: libc::c_ulong) -> io::Result<()> {
    // SAFETY: prctl with integer arguments only.
    if unsafe { libc::prctl(op, a, b, 0 as libc::c_ulong, 0 as libc::c_ulong) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Sets `SECBIT_NO_SETUID_FIXUP` (not locked): changing the calling
/// thread's ids leaves its capability sets as they are (the world's child
/// takes the world root's fsuid while it still mounts: `userns.rs`).
pub fn keep_caps_across_id_changes() -> io::Result<()> {
    // SAFETY: prctl with integer arguments only.
    let bits = unsafe { libc::prctl(libc::PR_GET_SECUREBITS, 0 as libc::c_ulong) };
    if bits < 0 {
        return Err(io::Error::last_os_error());
    }
    prctl(libc::PR_SET_SECUREBITS, bits as libc::c_ulong | libc::SECBIT_NO_SETUID_FIXUP as libc::c_ulong, 0)
}

/// Highest capability number the running kernel knows.
fn last_cap() -> u32 {
    std::fs::read_to_string("/proc/sys/kernel/cap_last_cap").ok().and_then(|s| s.trim().parse().ok()).unwrap_or(63)
}

/// Drops all capabilities of the calling thread, permanently, becoming
/// `user` on the way when one is given. `last_cap` is read by the caller
/// before /proc is replaced.
pub fn drop_all(last_cap: u32, user: Option<&crate::spec::WorldUser>) -> io::Result<()> {
    use caps::CapSet;
    let err = |e: caps::errors::CapsError| io::Error::other(e.to_string());
    prctl(libc::PR_SET_SECUREBITS, SECUREBITS, 0)?;
    // The bounding set by number up to what the running kernel knows, not
    // only the capabilities the `caps` crate has names for.
    for cap in 0..=last_cap {
        match prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => break, // past the kernel's last
            Err(e) => return Err(e),
        }
    }
    if let Some(u) = user {
        become_user(u)?;
    }
    caps::clear(None, CapSet::Ambient).map_err(err)?;
    caps::clear(None, CapSet::Inheritable).map_err(err)?;
    // Clearing Permitted clears Effective with it.
    caps::clear(None, CapSet::Permitted).map_err(err)?;
    // Read back: fail closed if anything is left.
    for set in [CapSet::Effective, CapSet::Permitted, CapSet::Inheritable] {
        if !caps::read(None, set).map_err(err)?.is_empty() {
            return Err(io::Error::other(format!("{set:?} capabilities remain after dropping")));
        }
    }
    if let Some(u) = user {
        let (mut r, mut e, mut s) = (0, 0, 0);
        // SAFETY: three valid pointers to u32s.
        unsafe { libc::getresuid(&mut r, &mut e, &mut s) };
        let (mut gr, mut ge, mut gs) = (0, 0, 0);
        // SAFETY: as above.
        unsafe { libc::getresgid(&mut gr, &mut ge, &mut gs) };
        if [r, e, s] != [u.uid; 3] || [gr, ge, gs] != [u.gid; 3] {
            return Err(io::Error::other(format!("the ids are not uid {} gid {} after the change", u.uid, u.gid)));
        }
    }
    Ok(())
}

/// The groups, gid and uid of `u`, for the calling thread (the world's
/// child has no other): raw calls, not glibc's process-wide ones.
fn become_user(u: &crate::spec::WorldUser) -> io::Result<()> {
    let check = |r: libc::c_long| if r == 0 { Ok(()) } else { Err(io::Error::last_os_error()) };
    // SAFETY: the pointer and length describe `u.groups`; integers otherwise.
    unsafe {
        check(libc::syscall(libc::SYS_setgroups, u.groups.len(), u.groups.as_ptr()))?;
        check(libc::syscall(libc::SYS_setresgid, u.gid, u.gid, u.gid))?;
        check(libc::syscall(libc::SYS_setresuid, u.uid, u.uid, u.uid))?;
    }
    Ok(())
}

/// Reads cap_last_cap (call before /proc is replaced or masked).
pub fn kernel_last_cap() -> u32 {
    last_cap()
}
