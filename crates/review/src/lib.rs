//! cloche-review: what a reviewer sees of a kept world, and how its changes
//! reach the host.
//!
//! - [`flags`]: review flags over an fs_diff (the world's own, plus commit
//!   roots, CI and build files, manifests, shell start-up files, ...).
//! - [`escape`]: names and contents from a world made safe to print.
//! - [`render`]: git-like text: the review summary, `--name-status`,
//!   `--stat`, unified diffs of text files.
//! - [`record`]: per world, which batch entry changed which path, and the
//!   host state of every base file when the world first changed it.
//! - [`commit`]: plans a commit (every check before the first write), then
//!   applies it beneath the commit roots without following any symlink.

pub mod commit;
pub mod escape;
pub mod flags;
pub mod record;
pub mod render;

use cloche_world::diff::{FsDiff, RawPath};
use std::collections::BTreeMap;
use std::path::PathBuf;

/// A kept world's changes as a reviewer sees them.
#[derive(Debug, Clone, Default)]
pub struct Review {
    /// The world's fs_diff (paths absolute inside the world = on the host).
    pub diff: FsDiff,
    /// [`flags::review_flags`] of `diff` for `roots`.
    pub flags: Vec<flags::ReviewFlag>,
    /// Per path (raw bytes), the batch entries that changed it, in order.
    pub attribution: BTreeMap<Vec<u8>, Vec<String>>,
    /// The commit roots (absolute, normalized): only paths below them can
    /// be committed.
    pub roots: Vec<PathBuf>,
}

/// True if `path` is one of `roots` or below one.
pub fn under_roots(path: &[u8], roots: &[PathBuf]) -> bool {
    use std::os::unix::ffi::OsStrExt;
    roots.iter().any(|r| at_or_below(path, r.as_os_str().as_bytes()))
}

/// True if `path` is `prefix` or below it (by whole components).
pub fn at_or_below(path: &[u8], prefix: &[u8]) -> bool {
    prefix == b"/" || path == prefix || (path.starts_with(prefix) && path.get(prefix.len()) == Some(&b'/'))
}

/// Shorthand for tests and callers holding text paths.
pub fn raw(p: &str) -> RawPath {
    RawPath::from(p)
}
