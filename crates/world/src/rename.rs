//! `renameat2(2)`, which `nix` offers only where the C library is glibc
//! (cloche links musl: docs/architecture.md, *Why these choices*).

use nix::NixPath;
use std::os::fd::{AsFd, AsRawFd};

/// The flags of `renameat2` that cloche uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RenameFlags(libc::c_uint);

impl RenameFlags {
    /// None: a plain `renameat`.
    pub const EMPTY: RenameFlags = RenameFlags(0);
    /// Fails with `EEXIST` when the new name exists.
    pub const RENAME_NOREPLACE: RenameFlags = RenameFlags(libc::RENAME_NOREPLACE);
    /// Swaps the two names, both of which must exist.
    pub const RENAME_EXCHANGE: RenameFlags = RenameFlags(libc::RENAME_EXCHANGE);
}

/// Renames `old` (relative to `old_dir`) to `new` (relative to `new_dir`).
pub fn renameat2<P1: ?Sized + NixPath, P2: ?Sized + NixPath>(
    old_dir: impl AsFd,
    old: &P1,
    new_dir: impl AsFd,
    new: &P2,
    flags: RenameFlags,
) -> nix::Result<()> {
    let (od, nd) = (old_dir.as_fd().as_raw_fd(), new_dir.as_fd().as_raw_fd());
    let r = old.with_nix_path(|o| {
        new.with_nix_path(|n| {
            // SAFETY: two NUL-terminated paths that live across the call;
            // the descriptors are borrowed for it.
            unsafe { libc::syscall(libc::SYS_renameat2, od, o.as_ptr(), nd, n.as_ptr(), flags.0) }
        })
    })??;
    nix::errno::Errno::result(r).map(drop)
}
