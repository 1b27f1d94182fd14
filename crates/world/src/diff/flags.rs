//! Flags: what a reviewer must see in an added or modified entry.

use super::collect::Collector;
use super::hash::too_sparse;
use super::model::{FlagKind, Kind};
use super::sys::St;

/// Flags for an added or modified entry at `path` whose new state is `st`.
/// `exec`: a regular file that is new, has new content or a new kind, and
/// has an x bit, or whose mode change added an x bit. `hashing`: hashes were
/// asked for (a file too sparse to hash is then flagged).
pub(crate) fn flag_entry(out: &mut Collector, path: &[u8], st: &St, exec: bool, hashing: bool) {
    let kind = st.kind();
    let perm = st.perm();
    // setuid/setgid act on executables (and setgid on directories only sets
    // the group of new entries, common on shared dirs: not flagged)
    if kind != Kind::Dir && kind != Kind::Symlink {
        if perm & 0o4000 != 0 {
            out.flag(path, FlagKind::Setuid);
        }
        if perm & 0o2000 != 0 {
            out.flag(path, FlagKind::Setgid);
        }
    }
    match kind {
        Kind::Char | Kind::Block => out.flag(path, FlagKind::DeviceNode),
        Kind::Fifo => out.flag(path, FlagKind::Fifo),
        Kind::Socket => out.flag(path, FlagKind::Socket),
        _ => {}
    }
    if exec {
        out.flag(path, FlagKind::Executable);
    }
    if st.is_reg() && st.nlink > 1 {
        out.flag(path, FlagKind::HardLink);
    }
    if st.is_reg() && hashing && too_sparse(st) {
        out.flag(path, FlagKind::Sparse);
    }
    if let Some(g) = git_flag(path) {
        out.flag(path, g);
    }
    if kind != Kind::Symlink && perm & 0o002 != 0 {
        out.flag(path, FlagKind::WorldWritable);
    }
}

/// "git hook" for paths under a `.git/hooks/` directory, "under .git" for any
/// other path with a `.git` component.
pub(crate) fn git_flag(path: &[u8]) -> Option<FlagKind> {
    let mut comps = path.split(|&b| b == b'/').filter(|c| !c.is_empty());
    let mut found = None;
    while let Some(c) = comps.next() {
        if c == b".git" {
            found = Some(FlagKind::UnderGit);
            let mut rest = comps.clone();
            if rest.next() == Some(b"hooks".as_slice()) && rest.next().is_some() {
                return Some(FlagKind::GitHook);
            }
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn git_flags() {
        assert_eq!(git_flag(b"/a/b"), None);
        assert_eq!(git_flag(b"/a/.git"), Some(FlagKind::UnderGit));
        assert_eq!(git_flag(b"/a/.git/config"), Some(FlagKind::UnderGit));
        assert_eq!(git_flag(b"/a/.git/hooks"), Some(FlagKind::UnderGit));
        assert_eq!(git_flag(b"/a/.git/hooks/pre-commit"), Some(FlagKind::GitHook));
        assert_eq!(git_flag(b"/a/.github/x"), None);
        assert_eq!(git_flag(b"/.git/x/.git/hooks/y"), Some(FlagKind::GitHook));
    }
}
