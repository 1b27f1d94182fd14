//! fs_diff: the record of what a world changed compared with its base.
//!
//! [`compute`] walks the world's overlay **upper** directory after the world's
//! processes have exited, and looks up in the **lower** layer only the paths
//! the upper names (plus the children of lower directories the upper hides),
//! so the cost grows with the change, not with the base.
//!
//! The upper is hostile input: any name, symlink, hard link, device node,
//! size or depth. The walk never follows a symlink (`openat2` with
//! `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS |
//! RESOLVE_NO_XDEV` and `O_NOFOLLOW`, `fstatat(AT_SYMLINK_NOFOLLOW)`,
//! `readlinkat`), opens only regular files (non-blocking, identity checked
//! with `fstat`), holds a constant number of fds, bounds its depth
//! ([`MAX_DEPTH`]) and its memory (`max_entries` and byte budgets), and
//! reads files through one 64 KiB buffer.
//!
//! Overlay semantics assumed (the engine mounts with
//! `redirect_dir=off,metacopy=off,index=off,xino=off`, as real root):
//! whiteouts are char devices 0:0, opaque directories carry
//! `trusted.overlay.opaque` = `y` (`user.overlay.opaque` for a world without
//! root, [`DiffOptions::rootless`]); other overlay attributes are ignored.
//!
//! # JSON (field names are a contract)
//! ```json
//! {"added":[{"path":"/srv/app/new.txt","kind":"file","size":12,"mode":"0644","uid":0,"gid":0,"sha256":"…"}],
//!  "modified":[{"path":"/etc/hosts","kind":"file","changes":["content"],"size":210,"mode":"0644","uid":0,"gid":0,"sha256":"…"}],
//!  "deleted":[{"path":"/srv/app/old","kind":"dir"}],
//!  "touched":[{"path":"/srv/app/README","kind":"file","changes":["mtime"]}],
//!  "flags":[{"path":"/srv/app/.git/hooks/pre-commit","why":"git hook"}],
//!  "totals":{"added":1,"modified":1,"deleted":1,"bytes":222,"touched":1},"truncated":false}
//! ```
//! - Entry fields, in this order, each only when it applies: `path` (or
//!   `path_b64`), `kind` (`file dir symlink char block fifo socket`),
//!   `changes` (modified: `content type mode owner target`, in that order;
//!   touched: `mtime` or nothing), `size` (files; symlinks: target length), `mode` (4 octal
//!   digits, not for symlinks), `uid`, `gid`, `sha256` (files, when hashing,
//!   not for files with more than 64 MiB of holes), `target` (or
//!   `target_b64`), `rdev` (`"major:minor"`), `links_to` (or `links_to_b64`).
//!   `deleted` entries carry only `path` and `kind` (the lower's kind);
//!   `touched` entries only `path`, `kind` and `changes`.
//! - `touched`: upper entries whose kind, content (bytes; a device's
//!   number), permission bits, owner and symlink target are the lower's: a
//!   content-identical rewrite, a `touch`, a `chmod` to the same mode, a
//!   copy-up by a link. A directory is touched when the same holds and
//!   nothing below it is listed in any list (else its copy-up is explained
//!   by what is below). Not a change: no flags, not in `totals.bytes`, and
//!   its own bound (`max_entries` smallest paths; a cut there does not set
//!   `truncated`, `totals.touched` counts all). Extended attributes, ctime
//!   and link counts are not compared.
//! - Cost: a file whose size differs is not read. Equal sizes are compared
//!   byte for byte against the lower; when mode and owner are equal too the
//!   comparison does not hash, and a file found different is then hashed
//!   from its start (a rewrite that changes nothing is read once per side).
//! - Non-UTF-8 bytes: `<field>_b64` (standard base64 of the raw bytes) replaces
//!   `<field>`.
//! - `links_to`: for an upper inode with several links, every path but the
//!   smallest (by bytes) names the smallest one, even when that path is not
//!   itself a change (a copied-up lower file otherwise unchanged: touched).
//!   Each such inode is hashed once and counted once in `totals.bytes`.
//! - Lists sorted by raw path bytes; flags by path then `why` in the order
//!   `setuid setgid "device node" fifo socket executable "hard link"
//!   "git hook" "under .git" world-writable sparse`.
//! - Flags are computed for every added or modified entry, also those a
//!   truncation left out of the lists (so a setuid file is seen even in a
//!   huge diff); `flags` is itself capped at `max_entries`.
//! - `truncated`: the lists keep the `max_entries` smallest paths; totals
//!   still count everything.

mod collect;
mod delta;
mod flags;
mod hash;
mod model;
pub(crate) mod sys;
mod walk;

use std::os::fd::BorrowedFd;

pub use delta::delta;
pub use model::{format_mode, Change, Entry, Flag, FlagKind, FsDiff, Kind, RawPath, Totals};
pub use sys::PLANNED_XATTR;

/// Deepest directory level the walk descends to before giving up.
pub const MAX_DEPTH: usize = 4096;

/// How to compute a diff.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DiffOptions {
    /// Give `sha256` for added and modified regular files.
    pub hash: bool,
    /// Most entries listed in the whole diff (added + modified + deleted);
    /// beyond it `truncated` is set and only the totals keep counting.
    pub max_entries: usize,
    /// The upper of a world without root (`rootless.rs`): its overlay's
    /// markers are `user.overlay.*` (`userxattr`); every upper entry is the
    /// caller's (owners are not compared, and the upper's ids are listed);
    /// and no entry carries cloche's mark, which a world running as the
    /// upper's owner could forge: an entry as the base has it (kind,
    /// content, mode, mtime) is not listed as touched instead.
    pub rootless: bool,
}

impl Default for DiffOptions {
    fn default() -> Self {
        DiffOptions { hash: true, max_entries: 100_000, rootless: false }
    }
}

/// Why a diff could not be computed. Paths are absolute inside the world.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DiffError {
    /// A system call failed.
    #[error("fs_diff: {op} {path}: {source}")]
    Io {
        op: &'static str,
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// The upper tree is deeper than [`MAX_DEPTH`].
    #[error("fs_diff: {path}: directory tree deeper than {limit} levels")]
    TooDeep { path: String, limit: usize },
    /// An entry was not the one listed when it was opened (the layer is
    /// being changed while the diff runs).
    #[error("fs_diff: {path}: changed in the {layer} layer while being read")]
    Changed { path: String, layer: &'static str },
    /// The lower directory fd has a mount below it (pass a clone of the root
    /// mount without submounts, as the overlay's lower view).
    #[error("fs_diff: {path}: the lower layer has a submount here")]
    LowerSubmount { path: String },
}

/// Computes what the upper layer changes over the lower layer.
///
/// `upper`: a directory fd on the world's upper directory. `lower`: a
/// directory fd on the lower view (a clone of the root mount with no
/// submounts, so that paths in it are exactly the overlay's lower view).
/// Either may be `O_PATH`; neither is read from or moved (the walk opens its
/// own fds beneath them). Call it once the world's processes have exited.
pub fn compute(upper: BorrowedFd<'_>, lower: BorrowedFd<'_>, opts: &DiffOptions) -> Result<FsDiff, DiffError> {
    walk::Walker::new(upper, lower, opts).run()
}
