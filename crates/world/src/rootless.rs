//! Worlds without root (docs/security.md, *Worlds without root*): a user
//! who is not root runs a world with no daemon, as with bubblewrap.
//!
//! The world's child is cloned by the user into a new user namespace and
//! every other namespace (owned by it); it maps the caller's uid and gid to
//! the world's 0 itself (one id each: no `newuidmap`, no `/etc/subuid`
//! entry needed) and builds the world inside, with the capabilities of
//! that namespace only.
//!
//! The root filesystem cannot be one overlay's lower there: in a mount
//! namespace made by a user, every mount copied from the host is locked to
//! its parent, and overlayfs refuses a lower with locked mounts below it
//! (`lowerdir=/`: "failed to clone lowerpath", measured on 6.18). So the
//! world's root is put together ([`frame`]): a small tmpfs holds the root's
//! entries, and each largest directory of the root filesystem with no
//! mount below it is an overlay of its own (`lowerdir=/usr`, ...), its
//! upper at the same place of the world's upper (`upper/usr`), so that the
//! upper mirrors `/` as a root world's does and the fs_diff reads it alike.

use crate::dirlist::Listing;
use nix::unistd::AccessFlags;
use serde::Serialize;
use std::collections::BTreeSet;
use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// The caller of a world without root: its host uid and gid, the world's 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Caller {
    pub uid: u32,
    pub gid: u32,
}

impl Caller {
    /// This process's caller, when it is not root.
    pub fn of_process() -> Option<Caller> {
        // SAFETY: no preconditions.
        let (uid, gid) = unsafe { (libc::geteuid(), libc::getegid()) };
        (uid != 0).then_some(Caller { uid, gid })
    }

    /// The report's and the audit's `userns`: the world's 0 is this host
    /// uid and gid, and only that id is mapped.
    pub fn mapping(&self) -> crate::userns::WorldIds {
        crate::userns::WorldIds { uid: self.uid, gid: self.gid, count: 1 }
    }
}

/// Where a user's worlds live without root: `$XDG_STATE_HOME/cloche`, else
/// `~/.local/state/cloche` (`None` without a home).
pub fn user_state_dir() -> Option<PathBuf> {
    let abs = |v: std::ffi::OsString| Some(PathBuf::from(v)).filter(|p| p.is_absolute());
    if let Some(p) = std::env::var_os("XDG_STATE_HOME").and_then(abs) {
        return Some(p.join("cloche"));
    }
    std::env::var_os("HOME").and_then(abs).map(|h| h.join(".local/state/cloche"))
}

/// One entry of the world's root as the child puts it together.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece {
    /// A directory of the tmpfs frame (a mount point, or one with mounts
    /// below it whose entries are pieces too), with its host mode.
    Dir { path: PathBuf, mode: u32 },
    /// A directory of the root filesystem with no mount below it where the
    /// caller may write (`Writer`'s rule): an overlay, its upper
    /// `upper/<path>`, its work directory `work/<index>`.
    Overlay { path: PathBuf, index: usize },
    /// A directory of the root filesystem with no mount below it where the
    /// caller could write nothing: a read-only bind of the host's.
    ReadOnly { path: PathBuf },
    /// The same where mounts lie below that the caller cannot reach (a
    /// directory on the way is closed to it: root's disk pool and spare
    /// network namespace under `/var/lib/cloche`): a recursive bind, which
    /// carries them (a user namespace's copy of the host's mounts refuses a
    /// bind that would uncover what they cover), as unreachable in the
    /// world as on the host, instead of pieces for every entry on the way.
    ReadOnlyTree { path: PathBuf },
    /// A symbolic link, as the host has it.
    Symlink { path: PathBuf, target: PathBuf },
    /// Anything else (a file beside mounts): a read-only bind of the host's.
    File { path: PathBuf },
}

/// Deepest level of directories with mounts below that is put together
/// (deeper, a directory holding mounts is only a mount point).
const MAX_DEPTH: usize = 8;

/// Whose world it is, for the choice of each directory's piece
/// (docs/security.md, *Worlds without root*, *Which directories are
/// overlays*).
#[derive(Debug, Clone)]
pub struct Writer {
    pub caller: Caller,
    /// Paths the world must be able to write where the caller can (the
    /// cwd, the exposures, the caller's homes), canonical; those the caller
    /// neither owns nor may write are left out.
    pub targets: Vec<PathBuf>,
    /// Directories a fresh scratch directory covers (`/tmp`, `/var/tmp`,
    /// `/run`): nothing of the host's below them is seen, unless a target
    /// lies there.
    pub covered: Vec<PathBuf>,
}

impl Writer {
    /// The writer of a world of `caller` whose cwd is `cwd`, with
    /// `expose`d paths.
    pub fn new(caller: Caller, cwd: &Path, expose: &[PathBuf]) -> Writer {
        let homes = crate::spec::home_dirs()
            .into_iter()
            .filter(|h| std::fs::symlink_metadata(h).is_ok_and(|m| m.uid() == caller.uid));
        let targets = std::iter::once(cwd.to_path_buf())
            .chain(expose.iter().cloned())
            .chain(homes)
            .filter_map(|p| std::fs::canonicalize(p).ok())
            .filter(|p| writable(p) || std::fs::metadata(p).is_ok_and(|m| m.uid() == caller.uid))
            .collect();
        let covered = crate::exposure::SCRATCH_PATHS.iter().filter_map(|p| std::fs::canonicalize(p).ok()).collect();
        Writer { caller, targets, covered }
    }

    /// Whether an overlay in the caller's namespace can copy `m` up: only
    /// an entry of the caller's uid and gid (the only ids mapped; any
    /// other copy-up fails with `EOVERFLOW`).
    fn mine(&self, uid: u32, gid: u32) -> bool {
        uid == self.caller.uid && gid == self.caller.gid
    }

    /// Whether the caller may write in a directory (of owner `uid`, with
    /// `mode`; `writable`, the kernel's answer for it). Not its owner, and neither
    /// its group nor others may write it: no (with an ACL, the group bits
    /// are its mask, which bounds every named entry), and no system call is
    /// made for the common case.
    fn may_write(&self, uid: u32, mode: u32, writable: impl FnOnce() -> bool) -> bool {
        (uid == self.caller.uid || mode & 0o022 != 0) && writable()
    }

    /// Whether the world sees the host's `path`: not at or below a directory
    /// a fresh scratch covers, unless a target lies at or below it. (Where
    /// it is asked, no mount lies below `path`.)
    fn sees(&self, path: &Path) -> bool {
        !self.covered.iter().any(|c| path.starts_with(c)) || self.targets.iter().any(|t| t.starts_with(path))
    }

    /// Whether a write at `target` (at or below the directory `entry`)
    /// needs a copy-up of a directory from `entry` down to it that an
    /// overlay cannot make.
    fn blocked(&self, entry: &Path, target: &Path) -> bool {
        let mine = |p: &Path| std::fs::symlink_metadata(p).is_ok_and(|m| self.mine(m.uid(), m.gid()));
        target.ancestors().take_while(|a| a.starts_with(entry)).any(|a| !mine(a))
    }
}

/// What becomes of a directory with no mount below it (see [`choose`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Choice {
    Overlay,
    ReadOnly,
    /// A directory of the frame whose entries are pieces of their own.
    Descend,
}

/// One direct entry of such a directory, as [`choose`] sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    pub dir: bool,
    /// The caller's uid and gid: an overlay can copy it up.
    pub mine: bool,
    /// A directory the world can write in only as a piece of its own: one
    /// the caller may write that an overlay cannot copy up, or one on the
    /// way to a target through such a directory.
    pub alone: bool,
}

/// The rule: a directory the caller may write is an overlay (what the
/// world writes at its top lands in the upper); else one whose entries
/// include one that must be a piece of its own (`alone`) is descended into,
/// unless it holds a file of the caller's that only its overlay could
/// copy up; else one holding an entry of the caller's is an overlay (every
/// write below it starts with the copy-up of such an entry); else nothing
/// in it could be written, on the host or through an overlay: a read-only
/// bind.
pub fn choose(writable: bool, entries: &[Entry]) -> Choice {
    if writable {
        Choice::Overlay
    } else if entries.iter().any(|e| e.alone) && !entries.iter().any(|e| e.mine && !e.dir) {
        Choice::Descend
    } else if entries.iter().any(|e| e.mine) {
        Choice::Overlay
    } else {
        Choice::ReadOnly
    }
}

/// The pieces of the world's root, from the host's mount points (the
/// caller's view: mountinfo), its root filesystem's entries and `who`.
pub fn frame(mountinfo: &str, who: &Writer) -> io::Result<Vec<Piece>> {
    frame_each(mountinfo, who, &mut |_| Ok(()))
}

/// As [`frame`], handing the pieces to `emit` as they are known, in order:
/// those of each entry of the root filesystem at once (so that a world's
/// child mounts them while the rest is listed). An error of `emit` stops
/// the listing.
pub fn frame_each(
    mountinfo: &str,
    who: &Writer,
    emit: &mut dyn FnMut(&[Piece]) -> io::Result<()>,
) -> io::Result<Vec<Piece>> {
    let all: BTreeSet<PathBuf> = mountinfo
        .lines()
        .filter_map(|l| l.split(' ').nth(4).map(crate::cgroup::unescape))
        .filter(|p| p != Path::new("/"))
        .collect();
    // Mounts this process (the caller) cannot reach are hidden: no pieces
    // of their own (`Piece::ReadOnlyTree`).
    let (mounts, hidden) = all.into_iter().partition(|m| reachable(m));
    let mut out = Vec::new();
    let root = Listing::of(Path::new("/"))?.ok_or_else(|| io::Error::from(io::ErrorKind::PermissionDenied))?;
    let mut sent = 0;
    let mut each = |out: &[Piece]| -> io::Result<()> {
        if out.len() > sent {
            emit(&out[sent..])?;
            sent = out.len();
        }
        Ok(())
    };
    walk(Path::new("/"), &root, &Mounts { seen: mounts, hidden }, who, 0, &mut out, &mut each)?;
    each(&out)?;
    Ok(out)
}

/// Whether the caller can reach `path` (every directory on the way open to
/// it). Only a refusal counts as unreachable.
fn reachable(path: &Path) -> bool {
    nix::unistd::access(path, AccessFlags::F_OK) != Err(nix::errno::Errno::EACCES)
}

/// The host's mount points but `/`: those the caller can reach, and the
/// others.
struct Mounts {
    seen: BTreeSet<PathBuf>,
    hidden: BTreeSet<PathBuf>,
}

/// Whether `set` holds a path strictly below `path`.
fn any_below(set: &BTreeSet<PathBuf>, path: &Path) -> bool {
    set.range(path.to_path_buf()..).take_while(|m| m.starts_with(path)).any(|m| m != path)
}

/// The pieces of the directory `dir`, whose entries `listing` holds, added
/// to `out`; at the root (`depth` 0), `out` handed to `done` before each
/// entry (what the entries before it made).
fn walk(
    dir: &Path,
    listing: &Listing,
    all: &Mounts,
    who: &Writer,
    depth: usize,
    out: &mut Vec<Piece>,
    done: &mut dyn FnMut(&[Piece]) -> io::Result<()>,
) -> io::Result<()> {
    let mounts = &all.seen;
    for (i, n, st) in listing.entries() {
        if depth == 0 {
            done(out)?;
        }
        let path = dir.join(n);
        let st = match st {
            Ok(st) => st,
            Err(nix::errno::Errno::ENOENT) => continue,
            Err(e) => return Err(e.into()),
        };
        let mode = st.perm();
        let below = any_below(mounts, &path);
        // Below a scratch directory (and it, bar its mount point) nothing
        // is seen, unless a target or a mount lies there.
        let held = who.targets.iter().any(|t| t.starts_with(&path)) || below || mounts.contains(&path);
        if let Some(c) = who.covered.iter().find(|c| path.starts_with(c)).filter(|_| !held) {
            if st.is_dir() && &path == c {
                out.push(Piece::Dir { path, mode });
            }
            continue;
        }
        if st.kind() == crate::diff::Kind::Symlink {
            out.push(Piece::Symlink { target: listing.read_link(i)?, path });
        } else if !st.is_dir() {
            if !mounts.contains(&path) {
                out.push(Piece::File { path });
            }
        } else if mounts.contains(&path) || (below && depth >= MAX_DEPTH) || !listing.access(i, READ) {
            // (A directory closed to the caller, `/root`, `/lost+found`:
            // empty in the world, as the caller cannot read it either.)
            out.push(Piece::Dir { path, mode });
        } else if below {
            out.push(Piece::Dir { path: path.clone(), mode });
            // (Closed after all: its world shows it empty.)
            if let Some(sub) = Listing::of(&path)? {
                walk(&path, &sub, all, who, depth + 1, out, done)?;
            }
        } else {
            let sub = Listing::of(&path)?;
            let hides = any_below(&all.hidden, &path);
            let entries = entries_of(&path, sub.as_ref(), who);
            match choose(who.may_write(st.uid, st.mode, || listing.access(i, WRITE)), &entries) {
                Choice::Descend if depth < MAX_DEPTH => {
                    out.push(Piece::Dir { path: path.clone(), mode });
                    if let Some(sub) = &sub {
                        walk(&path, sub, all, who, depth + 1, out, done)?;
                    }
                }
                Choice::ReadOnly if hides => out.push(Piece::ReadOnlyTree { path }),
                Choice::ReadOnly => out.push(Piece::ReadOnly { path }),
                // Anything else with hidden mounts below: pieces of its
                // own, as with mounts below (an overlay's lower would show
                // what they cover).
                _ if hides => {
                    out.push(Piece::Dir { path: path.clone(), mode });
                    if let (Some(sub), true) = (&sub, depth < MAX_DEPTH) {
                        walk(&path, sub, all, who, depth + 1, out, done)?;
                    }
                }
                Choice::Overlay | Choice::Descend => {
                    let index = out.iter().filter(|p| matches!(p, Piece::Overlay { .. })).count();
                    out.push(Piece::Overlay { path, index });
                }
            }
        }
    }
    Ok(())
}

/// The direct entries of the directory `dir` (readable, no mount below),
/// as [`choose`] sees them.
fn entries(dir: &Path, who: &Writer) -> io::Result<Vec<Entry>> {
    Ok(entries_of(dir, Listing::of(dir)?.as_ref(), who))
}

/// As [`entries`], from the directory's listing (none: closed).
fn entries_of(dir: &Path, listing: Option<&Listing>, who: &Writer) -> Vec<Entry> {
    let Some(listing) = listing else { return Vec::new() };
    let mut out = Vec::new();
    for (i, n, st) in listing.entries() {
        let Ok(m) = st else { continue };
        let path = dir.join(n);
        // What a scratch covers is never seen: it counts for nothing (else
        // `/var/tmp`, writable by all, has `/var` put together piece by
        // piece: here 44 more `fstatat`s and seven more binds).
        if !who.sees(&path) {
            continue;
        }
        let (dir, mine) = (m.is_dir(), who.mine(m.uid, m.gid));
        let alone = dir
            && ((!mine && who.may_write(m.uid, m.mode, || listing.access(i, WRITE)))
                || who.targets.iter().any(|t| t.starts_with(&path) && who.blocked(&path, t)));
        out.push(Entry { dir, mine, alone });
    }
    out
}

/// `access(2)` modes: listing and entering a directory; making and
/// removing entries in it.
const READ: AccessFlags = AccessFlags::R_OK.union(AccessFlags::X_OK);
const WRITE: AccessFlags = AccessFlags::W_OK.union(AccessFlags::X_OK);

/// The mount plan of a world without root, from a root world's: the home
/// of another user (owned by an id the world does not map) cannot be
/// copied up into the caller's upper (`EOVERFLOW`), so instead of its own
/// writable directory it is an empty read-only tmpfs, as a masked
/// directory is; the caller's own home is as in a root world. (A home
/// where something is attached, a toolchain, keeps its steps.)
pub fn homes_of_others(steps: Vec<crate::plan::Step>, uid: u32) -> Vec<crate::plan::Step> {
    use crate::plan::Step;
    let others: Vec<PathBuf> = steps
        .iter()
        .filter_map(|s| match s {
            Step::Home { path } if std::fs::symlink_metadata(path).map_or(true, |m| m.uid() != uid) => {
                Some(path.clone())
            }
            _ => None,
        })
        .filter(|h| !steps.iter().any(|s| matches!(s, Step::Attach { path, .. } if path.starts_with(h))))
        .collect();
    let mine = |p: &Path| others.iter().any(|h| p.starts_with(h));
    steps
        .into_iter()
        .filter(|s| !matches!(s, Step::CopyUp { path } if mine(path)))
        .map(|s| match s {
            Step::Home { path } if others.contains(&path) => Step::Mount {
                path,
                fstype: "tmpfs",
                flags: crate::plan::MS_NOSUID | crate::plan::MS_NODEV | crate::plan::MS_NOEXEC | crate::plan::MS_RDONLY,
                data: "mode=755,size=4k".into(),
            },
            s => s,
        })
        .collect()
}

/// The host data mounts a world without root carries: those its caller
/// may read with no mount below them (an overlay's lower may have none, as
/// for the root's pieces); under a scratch directory, only those holding
/// a target of `who` (nothing else of them is seen). Any other is an empty
/// directory in the world. Each is an overlay, or read-only (a read-only
/// bind, no upper) when the caller could write nothing in it, by the rule
/// of the root's pieces ([`choose`]: descending into one is not done).
pub fn carried(layers: Vec<crate::layers::HostMount>, mountinfo: &str, who: &Writer) -> Vec<crate::layers::HostMount> {
    let mounts: Vec<PathBuf> =
        mountinfo.lines().filter_map(|l| l.split(' ').nth(4).map(crate::cgroup::unescape)).collect();
    layers
        .into_iter()
        .filter(|m| readable(&m.path) && !mounts.iter().any(|p| p != &m.path && p.starts_with(&m.path)))
        .filter(|m| who.sees(&m.path))
        .map(|mut m| {
            let top = std::fs::metadata(&m.path).is_ok_and(|t| who.may_write(t.uid(), t.mode(), || writable(&m.path)));
            let nothing = entries(&m.path, who).is_ok_and(|e| choose(top, &e) == Choice::ReadOnly);
            m.read_only |= nothing;
            m
        })
        .collect()
}

/// Whether this process may list and enter `path`.
fn readable(path: &Path) -> bool {
    access(path, READ)
}

/// Whether this process may make and remove entries in the directory
/// `path` (its modes, groups and ACLs, as the kernel judges them; a
/// read-only filesystem refuses).
fn writable(path: &Path) -> bool {
    access(path, WRITE)
}

fn access(path: &Path, how: AccessFlags) -> bool {
    nix::unistd::faccessat(nix::fcntl::AT_FDCWD, path, how, nix::fcntl::AtFlags::AT_EACCESS).is_ok()
}

/// Makes the upper and work directories of each overlay piece in the
/// world's store `fs` (`upper/<path>` with its host mode, parents
/// included; `work/<index>`), and gives each directory made in `upper` its
/// host directory's mode and mtime, so that the fs_diff finds it as the
/// base has it. Returns nothing else: which pieces were made is not
/// recorded (a world could not be trusted with such a record).
pub fn make_uppers(fs: &Path, pieces: &[Piece]) -> io::Result<()> {
    let upper = fs.join("upper");
    let mut made: BTreeSet<PathBuf> = BTreeSet::new();
    for p in pieces {
        let Piece::Overlay { path, index } = p else { continue };
        let rel = path.strip_prefix("/").unwrap_or(path);
        let mut at = PathBuf::from("/");
        for c in rel.components() {
            at.push(c);
            if made.insert(at.clone()) {
                let d = upper.join(at.strip_prefix("/").unwrap_or(&at));
                match std::fs::create_dir(&d) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                    Err(e) => return Err(e),
                }
            }
        }
        std::fs::create_dir_all(fs.join("work").join(index.to_string()))?;
    }
    // Deepest first: a directory's mtime is set after its children exist.
    for at in made.iter().rev() {
        let host = std::fs::metadata(at)?;
        let d = upper.join(at.strip_prefix("/").unwrap_or(at));
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(host.mode() & 0o7777 | 0o700))?;
        let t = |s: i64, ns: i64| libc::timespec { tv_sec: s, tv_nsec: ns };
        let times = [t(host.atime(), host.atime_nsec()), t(host.mtime(), host.mtime_nsec())];
        let c = std::ffi::CString::new(std::os::unix::ffi::OsStrExt::as_bytes(d.as_os_str()))
            .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
        // SAFETY: a NUL-terminated path and two timespecs we own.
        if unsafe { libc::utimensat(libc::AT_FDCWD, c.as_ptr(), times.as_ptr(), libc::AT_SYMLINK_NOFOLLOW) } != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Removes a tree this user owns, giving its directories the mode to be
/// emptied first (an overlay's work directory is mode 0, a copy of a
/// read-only host directory 0555); never follows a symlink.
pub fn remove_tree(path: &Path) -> io::Result<()> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    if !meta.is_dir() {
        return std::fs::remove_file(path);
    }
    if meta.mode() & 0o700 != 0o700 {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700))?;
    }
    for e in std::fs::read_dir(path)? {
        remove_tree(&e?.path())?;
    }
    std::fs::remove_dir(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_frame_overlays_what_has_no_mount_below() {
        let info = "1 0 8:1 / / rw - ext4 /dev/sda rw\n2 1 0:5 / /proc rw - proc proc rw\n\
                    3 1 0:6 / /sys rw - sysfs s rw\n4 3 0:7 / /sys/fs/cgroup rw - tmpfs t rw\n";
        let who = Writer { caller: Caller { uid: 0, gid: 0 }, targets: Vec::new(), covered: Vec::new() };
        let f = frame(info, &who).unwrap();
        assert!(f.contains(&Piece::Dir { path: "/proc".into(), mode: 0o555 }), "{f:?}");
        assert!(f.iter().any(|p| matches!(p, Piece::Overlay { path, .. } if path == Path::new("/usr"))), "{f:?}");
        assert!(f.iter().any(|p| matches!(p, Piece::Overlay { path, .. } if path == Path::new("/etc"))), "{f:?}");
        // /sys holds a mount: not an overlay, and never walked (a mount point).
        assert!(!f.iter().any(|p| matches!(p, Piece::Overlay { path, .. } if path.starts_with("/sys"))));
        let indexes: Vec<usize> =
            f.iter().filter_map(|p| if let Piece::Overlay { index, .. } = p { Some(*index) } else { None }).collect();
        assert_eq!(indexes, (0..indexes.len()).collect::<Vec<_>>());
        // Handed out as they are listed: the lists, one per entry of `/`
        // with pieces, make the same frame in the same order.
        let mut lists: Vec<Vec<Piece>> = Vec::new();
        let g = frame_each(info, &who, &mut |l| {
            assert!(!l.is_empty());
            lists.push(l.to_vec());
            Ok(())
        })
        .unwrap();
        assert_eq!(g, f);
        assert_eq!(lists.concat(), f);
        assert!(lists.len() > 3, "{lists:?}");
        let top = |p: &Piece| match p {
            Piece::Dir { path, .. }
            | Piece::Overlay { path, .. }
            | Piece::ReadOnly { path }
            | Piece::ReadOnlyTree { path }
            | Piece::Symlink { path, .. }
            | Piece::File { path } => path.components().count() == 2,
        };
        assert!(lists.iter().all(|l| top(&l[0])), "{lists:?}");
        // An error of the receiver stops the listing.
        let mut n = 0;
        let stopped = frame_each(info, &who, &mut |_| {
            n += 1;
            Err(io::Error::other("stop"))
        });
        assert!(stopped.is_err() && n == 1);
    }

    #[test]
    fn what_a_scratch_covers_counts_for_nothing() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap();
        let var = tmp.path().join("var");
        let scratch = var.join("tmp");
        std::fs::create_dir_all(&scratch).unwrap();
        std::fs::create_dir(var.join("lib")).unwrap();
        std::fs::set_permissions(&scratch, std::fs::Permissions::from_mode(0o1777)).unwrap();
        let who = |targets: Vec<PathBuf>, covered: Vec<PathBuf>| Writer {
            caller: Caller { uid: 4242, gid: 4242 },
            targets,
            covered,
        };
        let choice = |w: &Writer| choose(false, &entries(&var, w).unwrap());
        // A directory writable by all (not the caller's) in it: `var` is
        // put together piece by piece ...
        assert_eq!(choice(&who(Vec::new(), Vec::new())), Choice::Descend);
        // ... unless a scratch covers that directory: one read-only bind.
        assert_eq!(choice(&who(Vec::new(), vec![scratch.clone()])), Choice::ReadOnly);
        // A target below it is seen through the scratch: pieces again.
        assert_eq!(choice(&who(vec![scratch.join("proj")], vec![scratch.clone()])), Choice::Descend);
    }

    #[test]
    fn a_directory_is_an_overlay_only_where_a_write_could_land() {
        let e = |dir, mine, alone| Entry { dir, mine, alone };
        let theirs = e(true, false, false);
        // /usr, /etc, /boot: the caller owns nothing there, may write nothing.
        assert_eq!(choose(false, &[theirs, e(false, false, false)]), Choice::ReadOnly);
        assert_eq!(choose(false, &[]), Choice::ReadOnly);
        // The caller may write the directory itself: an overlay.
        assert_eq!(choose(true, &[theirs]), Choice::Overlay);
        assert_eq!(choose(true, &[e(true, false, true)]), Choice::Overlay);
        // /srv holding a directory of the caller's: copied up, an overlay.
        assert_eq!(choose(false, &[theirs, e(true, true, false)]), Choice::Overlay);
        assert_eq!(choose(false, &[theirs, e(false, true, false)]), Choice::Overlay);
        // A directory of the caller's group (not its uid: never copied up),
        // or a project below a directory of root's: pieces of their own.
        assert_eq!(choose(false, &[theirs, e(true, false, true)]), Choice::Descend);
        assert_eq!(choose(false, &[e(true, true, false), e(true, true, true)]), Choice::Descend);
        // ... unless a file of the caller's there needs the overlay.
        assert_eq!(choose(false, &[e(false, true, false), e(true, false, true)]), Choice::Overlay);
    }
}
