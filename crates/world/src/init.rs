//! The world's pid 1, `cloche-init`, embedded in cloche (compiled by
//! `build.rs`) and executed from a sealed memfd: nothing to find or install
//! next to the binary, and no file of the host that a world could reach
//! or a host user could swap. The seals forbid any write, so even a
//! descriptor to it cannot change what the next world runs.

use std::io::{self, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// The init's executable (a static binary of about 14 KB).
pub static INIT: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/cloche-init"));

/// A memfd holding [`INIT`], sealed against writes, growth and shrinking
/// and against new seals, close-on-exec (the child executes it with
/// `execveat`, then it is gone).
pub fn memfd() -> io::Result<OwnedFd> {
    const MFD_EXEC: libc::c_uint = 0x10; // Linux 6.3: executable even under vm.memfd_noexec=1
    let flags = libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING;
    // SAFETY: a NUL-terminated name and flags; the kernel returns a new fd.
    let mut fd = unsafe { libc::memfd_create(c"cloche-init".as_ptr(), flags | MFD_EXEC) };
    if fd < 0 && io::Error::last_os_error().raw_os_error() == Some(libc::EINVAL) {
        // SAFETY: as above, for a kernel without MFD_EXEC.
        fd = unsafe { libc::memfd_create(c"cloche-init".as_ptr(), flags) };
    }
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel just gave us this descriptor.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    std::fs::File::from(owned.try_clone()?).write_all(INIT)?;
    let seals = libc::F_SEAL_SEAL | libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_WRITE;
    // SAFETY: F_ADD_SEALS with an int argument on our memfd.
    if unsafe { libc::fcntl(owned.as_raw_fd(), libc::F_ADD_SEALS, seals) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(owned)
}
