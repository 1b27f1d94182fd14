//! What a world shows of the host's tree: the masks and exposures that
//! change what the overlay would show, each with the nearest one above it.
//! The mount plan (`plan.rs`) mounts them; `cloche run` asks it which PATH
//! entries a world hides.
//!
//! Kinds of masks (`exposure.rs` says which paths are masked, and why):
//! - **scratch**: a fresh writable tmpfs (/tmp, /var/tmp, /run);
//! - **home**: a home directory starts empty and is writable: it is the
//!   home's own directory in the overlay's upper layer, bound in place, so
//!   the world's writes there land in the upper (and the fs_diff) and none
//!   of the host's files in it is shown. A home under a read-only host mount,
//!   or holding a host mount of its own, is an *empty* mask instead;
//! - **empty**: an empty read-only directory;
//! - **file**: a read-only bind of /dev/null.
//!
//! Kinds of exposures: copy-on-write (the cwd's subtree, `--expose`,
//! `fs.expose`: the overlay's view, writes land in the upper) and read-only
//! (toolchains under a home that the world's PATH names, `fs.toolchains`).
//!
//! A mask or exposure is *needed* when it changes what its nearest needed
//! ancestor shows:
//! - a mask is needed under nothing or under an exposure; under an empty or
//!   scratch mask it is hidden anyway; under a home only cloche's state
//!   directories are (so a world cannot even write a look-alike there): the
//!   home hides the host's files below it already, secrets included, and
//!   what the world writes there is its own;
//! - an exposure is needed under a mask, and under an exposure of the other
//!   kind (a copy-on-write cwd inside a read-only toolchain); a toolchain
//!   under nothing is already shown, copy-on-write like the rest.

use crate::exposure::{Masks, Origin, Refusal};
use crate::plan::{FsRequest, HostFacts};
use std::path::{Component, Path, PathBuf};

/// How a mask hides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cover {
    /// A fresh writable tmpfs with this mode.
    Scratch(u32),
    /// The home's own directory in the upper layer.
    Home,
    /// An empty read-only directory.
    Empty,
    /// A read-only bind of /dev/null.
    File,
}

/// A needed mask or exposure.
#[derive(Debug, Clone, PartialEq)]
pub enum Kind {
    Mask { cover: Cover, origin: Origin },
    Expose { read_only: bool },
}

/// One needed mask or exposure (canonical host path).
#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub path: PathBuf,
    /// A directory (else a file).
    pub dir: bool,
    pub kind: Kind,
    /// Index of the nearest needed ancestor in [`View::nodes`].
    pub parent: Option<usize>,
}

impl Node {
    pub fn is_mask(&self) -> bool {
        matches!(self.kind, Kind::Mask { .. })
    }
}

/// The needed masks and exposures of a world, sorted by path (parents
/// first).
#[derive(Debug, Clone)]
pub struct View {
    pub nodes: Vec<Node>,
    /// cloche's state directories (canonical): no exposure reaches them.
    pub state_dirs: Vec<PathBuf>,
    /// Symbolic links in writable homes that lead to a toolchain the PATH
    /// names (`~/.cargo -> /opt/cargo`): the world's home gets them too
    /// (copied up as they are), so the PATH resolves as on the host.
    pub links: Vec<PathBuf>,
    /// The masks it was built from, to judge an exposure as the plan would.
    pub masks: Masks,
}

impl View {
    /// The view of a world of `req`, or the refusal of its cwd or of an
    /// explicit exposure (one line naming the mask).
    pub fn new(host: &dyn HostFacts, req: &FsRequest) -> Result<View, Refusal> {
        let mut set = Masks::collect(host, req);
        let cwd = host.canonical(&req.cwd).unwrap_or_else(|| req.cwd.clone());
        set.judge_dir("cwd", &cwd)?;
        let mut writable: Vec<PathBuf> = Vec::new();
        for e in &req.expose {
            if let Some(c) = host.canonical(e) {
                set.judge_exposure(&c)?;
                writable.push(c);
            }
        }
        set.add_secrets_under(host, &cwd, &writable);
        // Toolchains never unmask anything: one that is (or lies in) a
        // secret or a state directory is left out, and so are the writable
        // paths inside them.
        let shown = |p: &PathBuf| matches!(set.judge_exposure(p), Ok(None));
        let found = toolchains(host, req, set.homes());
        let mut read_only: Vec<PathBuf> = found.tools.into_iter().filter(shown).collect();
        let mut cow: Vec<PathBuf> =
            found.writes.into_iter().filter(|w| shown(w) && read_only.iter().any(|t| w.starts_with(t))).collect();
        // An explicit exposure of a mask itself unmasks it (a state dir
        // cannot be exposed: refused above).
        let state_dirs = set.list.iter().filter(|m| m.origin == Origin::State).map(|m| m.path.clone()).collect();
        let judge = set.clone();
        let mut masks = set.list;
        masks.retain(|m| !writable.contains(&m.path));
        writable.push(cwd);
        writable.append(&mut cow);
        read_only.retain(|t| !writable.contains(t));

        let mut cands: Vec<(PathBuf, bool, Kind)> = Vec::new();
        for m in masks {
            let cover = match (m.dir, m.scratch) {
                (true, Some(mode)) => Cover::Scratch(mode),
                (true, None) if m.origin == Origin::Home && home_is_writable(&m.path, &req.data_mounts) => Cover::Home,
                (true, None) => Cover::Empty,
                (false, _) => Cover::File,
            };
            cands.push((m.path, m.dir, Kind::Mask { cover, origin: m.origin }));
        }
        for (list, ro) in [(writable, false), (read_only, true)] {
            for p in list {
                let dir = host.is_dir(&p);
                cands.push((p, dir, Kind::Expose { read_only: ro }));
            }
        }
        cands.sort_by(|a, b| a.0.cmp(&b.0));
        // Equal paths: masks were dropped where exposed; a copy-on-write
        // exposure (pushed first) wins over a read-only one.
        cands.dedup_by(|later, earlier| later.0 == earlier.0);

        let mut nodes: Vec<Node> = Vec::new();
        let mut above: Vec<usize> = Vec::new();
        for (path, dir, kind) in cands {
            while above.last().is_some_and(|&i| !path.starts_with(&nodes[i].path)) {
                above.pop();
            }
            let parent = above.last().copied();
            let needed = match (&kind, parent.map(|i| &nodes[i].kind)) {
                (Kind::Mask { .. }, None | Some(Kind::Expose { .. })) => true,
                (Kind::Mask { origin, .. }, Some(Kind::Mask { cover: Cover::Home, .. })) => *origin == Origin::State,
                (Kind::Mask { .. }, Some(Kind::Mask { .. })) => false,
                (Kind::Expose { .. }, None) => false,
                (Kind::Expose { .. }, Some(Kind::Mask { .. })) => true,
                (Kind::Expose { read_only }, Some(Kind::Expose { read_only: above })) => read_only != above,
            };
            if needed {
                if dir {
                    above.push(nodes.len());
                }
                nodes.push(Node { path, dir, kind, parent });
            }
        }
        let mut view = View { nodes, state_dirs, links: Vec::new(), masks: judge };
        // A link is recreated where the world would otherwise not have it
        // (in a writable home) and where what it leads to is shown.
        view.links = found
            .links
            .into_iter()
            .filter(|l| matches!(view.cover_of(l).map(|n| &n.kind), Some(Kind::Mask { cover: Cover::Home, .. })))
            .filter(|l| host.canonical(l).is_some_and(|c| view.shows(&c)))
            .collect();
        Ok(view)
    }

    /// The nearest needed mask or exposure at or above `p` (canonical).
    pub fn cover_of(&self, p: &Path) -> Option<&Node> {
        self.nodes.iter().filter(|n| p.starts_with(&n.path)).max_by_key(|n| n.path.components().count())
    }

    /// True if the host's `p` (canonical) is shown in the world.
    pub fn shows(&self, p: &Path) -> bool {
        self.cover_of(p).is_none_or(|n| !n.is_mask())
    }
}

/// A home is writable (its own directory in the upper layer) unless it lies
/// under a read-only host mount, whose world view has no upper, or holds a
/// host mount of its own, which would lie on another layer.
fn home_is_writable(home: &Path, data_mounts: &[(PathBuf, bool)]) -> bool {
    let owner = data_mounts.iter().filter(|(m, _)| home.starts_with(m)).max_by_key(|(m, _)| m.components().count());
    let read_only = owner.is_some_and(|(_, ro)| *ro);
    let holds_one = data_mounts.iter().any(|(m, _)| m.starts_with(home) && m != home);
    !read_only && !holds_one
}

/// What the world's PATH names of the toolchains under the homes.
#[derive(Debug, Default)]
pub struct Found {
    /// Toolchain paths (canonical, existing) inside their home.
    pub tools: Vec<PathBuf>,
    /// `fs.toolchain_writable` paths (canonical, existing) inside their
    /// home; the caller keeps those inside a shown toolchain.
    pub writes: Vec<PathBuf>,
    /// For a named toolchain path that leads through a symbolic link below
    /// its home, the first such link, if it leads straight (its target
    /// names no further link) to the toolchain.
    pub links: Vec<PathBuf>,
}

/// The toolchains of `req` that the world's PATH names: for each home and
/// each `fs.toolchains` group, the group's paths when a PATH entry lies
/// inside one of them (as written or with symlinks resolved). A toolchain
/// path (or writable path) is shown only where it lies inside its home
/// after symlinks are resolved: one that leads elsewhere (another home, a
/// secret, the home itself) is not shown by this rule; the symlink that
/// leads there is recreated instead when what it leads to is shown.
pub fn toolchains(host: &dyn HostFacts, req: &FsRequest, homes: &[PathBuf]) -> Found {
    let entries = path_entries(host, req);
    let mut found = Found::default();
    for h in homes {
        let inside = |rel: &PathBuf| host.canonical(&h.join(rel)).filter(|c| c.starts_with(h) && c != h);
        for group in &req.toolchains.groups {
            let named = group.iter().any(|rel| {
                let written = h.join(rel);
                // Most listed toolchains are absent: one lstat each.
                if !host.exists(&written) {
                    return false;
                }
                let canon = host.canonical(&written);
                entries.iter().any(|(e, c)| {
                    [Some(e), c.as_ref()]
                        .into_iter()
                        .flatten()
                        .any(|e| e.starts_with(&written) || canon.as_ref().is_some_and(|c| e.starts_with(c)))
                })
            });
            if !named {
                continue;
            }
            found.tools.extend(group.iter().filter_map(inside));
            found.links.extend(group.iter().filter_map(|rel| straight_link(host, h, &h.join(rel))));
        }
        found.writes.extend(req.toolchains.writable.iter().filter_map(inside));
    }
    for v in [&mut found.tools, &mut found.writes, &mut found.links] {
        v.sort();
        v.dedup();
    }
    found
}

/// The first symbolic link on the way from `home` (canonical) to `p`, if
/// `p` exists and the link's target, read as a path from the link's
/// directory, is already canonical (no further link, no `..` through one).
fn straight_link(host: &dyn HostFacts, home: &Path, p: &Path) -> Option<PathBuf> {
    host.canonical(p)?;
    let mut at = home.to_path_buf();
    for c in p.strip_prefix(home).ok()?.components() {
        let Component::Normal(name) = c else { return None };
        at.push(name);
        let canon = host.canonical(&at)?;
        if canon == at {
            continue;
        }
        let target = host.read_link(&at)?;
        let parent = at.parent()?;
        let mut lexical = PathBuf::new();
        for t in parent.join(target).components() {
            match t {
                Component::ParentDir => {
                    lexical.pop();
                }
                Component::CurDir => {}
                other => lexical.push(other),
            }
        }
        return (lexical == canon).then_some(at);
    }
    None
}

/// The world's PATH entries that are absolute and plain (no `.` or `..`),
/// each with its canonical path when it exists.
fn path_entries(host: &dyn HostFacts, req: &FsRequest) -> Vec<(PathBuf, Option<PathBuf>)> {
    use std::os::unix::ffi::OsStrExt;
    let Some(path) = &req.path else { return Vec::new() };
    path.as_bytes()
        .split(|b| *b == b':')
        .map(|e| PathBuf::from(std::ffi::OsStr::from_bytes(e)))
        .filter(|e| e.is_absolute() && e.components().skip(1).all(|c| matches!(c, Component::Normal(_))))
        .map(|e| {
            let c = host.canonical(&e);
            (e, c)
        })
        .collect()
}

/// A PATH entry that is a directory on the host but hidden in the world.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HiddenEntry {
    /// The entry as PATH writes it.
    pub entry: PathBuf,
    /// The path whose `--expose` shows it (its canonical path), or why none
    /// is suggested: it is or lies inside a secret (an exposure would
    /// unmask it), is a home or scratch directory itself, or lies in
    /// cloche's state directory.
    pub fix: Result<PathBuf, String>,
}

/// The PATH entries of `req` that are directories on the host but hidden
/// in its world (of `view`), each once, in PATH order.
pub fn hidden_path_entries(host: &dyn HostFacts, req: &FsRequest, view: &View) -> Vec<HiddenEntry> {
    let mut out: Vec<HiddenEntry> = Vec::new();
    for (entry, canon) in path_entries(host, req) {
        let Some(c) = canon.filter(|c| host.is_dir(c)) else { continue };
        if out.iter().any(|h| h.entry == entry) {
            continue;
        }
        let fix = if !view.shows(&c) {
            match view.masks.judge_exposure(&c) {
                Ok(None) => Ok(c),
                Ok(Some(r)) => {
                    let how = if r.mask == c { "is" } else { "lies inside" };
                    Err(format!("{how} the masked path {} ({})", r.mask.display(), r.origin))
                }
                Err(refusal) => Err(refusal.reason),
            }
        } else if let Some(link) = missing_link(host, view, &entry) {
            Err(format!(
                "leads through the symbolic link {}, which the world does not have; name {} in PATH instead",
                link.display(),
                c.display()
            ))
        } else {
            continue;
        };
        out.push(HiddenEntry { entry, fix });
    }
    out
}

/// The first symbolic link on the way to `entry` (as PATH writes it), if
/// the world does not have it: it lies where the world shows none of the
/// host's files (a home) and was not recreated there. What lies past it is
/// judged on the canonical path.
fn missing_link(host: &dyn HostFacts, view: &View, entry: &Path) -> Option<PathBuf> {
    let mut at = PathBuf::from("/");
    for c in entry.components().skip(1) {
        at.push(c);
        if host.canonical(&at)? != at {
            return (!view.shows(&at) && !view.links.contains(&at)).then_some(at);
        }
    }
    None
}

#[cfg(test)]
#[path = "view_tests.rs"]
mod tests;
