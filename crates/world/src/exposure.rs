//! What a world hides, and what it may show through that.
//!
//! A world masks two kinds of path, and they are judged differently:
//! - **secrets**: policy `fs.mask`, `fs.home_secrets` (under every home, under
//!   the cwd, and by name anywhere in a project's path), cloche's state
//!   directories (this run's and the default one) and the host's `/run`.
//!   Nothing inside a secret is ever exposed by a project or a cwd.
//! - **containers**: home directories (every home in /etc/passwd, uid 0's
//!   included, and every directory in /home) and the scratch directories
//!   /tmp and /var/tmp. They are masked as a whole, but a project *inside*
//!   one is the normal case and is shown through the mask; the directory
//!   itself may not be a project. An `fs.mask` entry that is a home (old
//!   policies list `/root`) is masked as a home.
//!
//! A project (a batch's, or `cloche run`'s cwd) is refused when it is `/`,
//! a home itself, a scratch directory itself, a secret or inside one, or
//! when it contains a state directory. Masks below an exposure stay in
//! force. An explicit exposure (`--expose`, policy `fs.expose`) is the
//! operator's: it may unmask a secret (reported as a [`Relaxation`] for the
//! caller to log), except a state directory, which no exposure reaches.
//!
//! Everything here is pure (host facts come through [`HostFacts`]), so the
//! rules are unit tested without root; the plan (`plan.rs`) and the CLI
//! (submit, run) use the same functions.

use crate::plan::{FsRequest, HostFacts};
use std::fmt;
use std::path::{Component, Path, PathBuf};

/// Why a path is masked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// /tmp, /var/tmp: fresh in every world.
    Scratch,
    /// /run: fresh in every world; the host's sockets and credentials.
    Runtime,
    /// A home directory.
    Home,
    /// Policy `fs.mask`.
    Policy,
    /// Policy `fs.home_secrets` (the relative path).
    HomeSecret(PathBuf),
    /// cloche's state directory.
    State,
}

impl Origin {
    /// Nothing inside a secret may be a project.
    pub fn is_secret(&self) -> bool {
        !matches!(self, Origin::Scratch | Origin::Home)
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Scratch => f.write_str("a scratch directory, fresh in every world"),
            Origin::Runtime => f.write_str("the host's runtime directory"),
            Origin::Home => f.write_str("a home directory"),
            Origin::Policy => f.write_str("fs.mask"),
            Origin::HomeSecret(s) => write!(f, "fs.home_secrets {}", s.display()),
            Origin::State => f.write_str("cloche's state directory"),
        }
    }
}

/// One masked path (canonical).
#[derive(Debug, Clone, PartialEq)]
pub struct Mask {
    pub path: PathBuf,
    pub dir: bool,
    /// Mode of a fresh writable scratch (tmp, run) instead of a read-only mask.
    pub scratch: Option<u32>,
    pub origin: Origin,
}

/// A project, cwd or exposure that may not be shown: one line naming the
/// mask.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what} {} {reason}", path.display())]
pub struct Refusal {
    /// "project", "cwd", "exposure".
    pub what: String,
    pub path: PathBuf,
    pub reason: String,
}

/// An explicit exposure that shows (part of) a mask: allowed, to be logged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Relaxation {
    pub path: PathBuf,
    pub mask: PathBuf,
    pub origin: Origin,
}

impl fmt::Display for Relaxation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let how = if self.path == self.mask { "unmasks" } else { "shows the inside of" };
        write!(f, "exposure {} {how} the masked path {} ({})", self.path.display(), self.mask.display(), self.origin)
    }
}

/// Every mask of a world but those relative to its cwd, and what the judge
/// needs besides.
#[derive(Debug, Clone)]
pub struct Masks {
    /// Canonical, de-duplicated (the first origin wins), in insertion order.
    pub list: Vec<Mask>,
    /// Every home (canonical), masked or not.
    homes: Vec<PathBuf>,
    /// `fs.home_secrets`, matched by name in a project's path.
    secret_names: Vec<PathBuf>,
}

/// The scratch directories' paths (a world without root's frame leaves
/// what they cover out: `rootless::Writer`).
pub(crate) const SCRATCH_PATHS: [&str; 3] = [SCRATCH[0].0, SCRATCH[1].0, SCRATCH[2].0];

/// Scratch directories: path, mode, origin.
const SCRATCH: [(&str, u32, Origin); 3] =
    [("/tmp", 0o1777, Origin::Scratch), ("/var/tmp", 0o1777, Origin::Scratch), ("/run", 0o755, Origin::Runtime)];

impl Masks {
    /// The masks of a world of `req`, from host facts. Only paths that exist
    /// are masks (a project cannot lie inside a path that does not exist).
    pub fn collect(host: &dyn HostFacts, req: &FsRequest) -> Masks {
        let canon = |p: &Path| host.canonical(p).filter(|c| c != Path::new("/"));
        let mut m = Masks { list: Vec::new(), homes: Vec::new(), secret_names: req.home_secrets.clone() };
        // State dirs first: whatever else names them, they stay state dirs.
        for s in &req.state_dirs {
            if let Some(c) = canon(s) {
                let dir = host.is_dir(&c);
                m.add(c, dir, None, Origin::State);
            }
        }
        for (p, mode, origin) in SCRATCH {
            if let Some(c) = canon(Path::new(p)) {
                if host.is_dir(&c) {
                    m.add(c, true, Some(mode), origin);
                }
            }
        }
        m.homes = req.homes.iter().filter_map(|h| canon(h)).collect();
        if req.mask_homes {
            for h in m.homes.clone() {
                let dir = host.is_dir(&h);
                m.add(h, dir, None, Origin::Home);
            }
        }
        for p in &req.mask {
            if let Some(c) = canon(p) {
                let origin = if m.homes.contains(&c) { Origin::Home } else { Origin::Policy };
                let dir = host.is_dir(&c);
                m.add(c, dir, None, origin);
            }
        }
        for h in m.homes.clone() {
            m.add_secrets_under(host, &h, &[]);
        }
        m
    }

    /// Every home (canonical), masked or not.
    pub fn homes(&self) -> &[PathBuf] {
        &self.homes
    }

    fn add(&mut self, path: PathBuf, dir: bool, scratch: Option<u32>, origin: Origin) {
        if !self.list.iter().any(|m| m.path == path) {
            self.list.push(Mask { path, dir, scratch, origin });
        }
    }

    /// Masks the home secrets below `root` (a home, or the cwd) that exist
    /// and resolve below it, except one an explicit exposure names exactly.
    pub fn add_secrets_under(&mut self, host: &dyn HostFacts, root: &Path, explicit: &[PathBuf]) {
        for s in self.secret_names.clone() {
            let p = root.join(&s);
            if !host.exists(&p) {
                continue;
            }
            if let Some(c) = host.canonical(&p) {
                // A secret that resolves elsewhere (a symlink out of the root)
                // must not make us mask an unrelated path.
                if c.starts_with(root) && c != root && !explicit.contains(&c) {
                    let dir = host.is_dir(&c);
                    self.add(c, dir, None, Origin::HomeSecret(s));
                }
            }
        }
    }

    /// Judges a directory a world would expose as its project or cwd
    /// (`what`: "project" or "cwd"). `p` is canonical.
    pub fn judge_dir(&self, what: &str, p: &Path) -> Result<(), Refusal> {
        let refuse = |reason: String| Err(Refusal { what: what.into(), path: p.to_path_buf(), reason });
        if p == Path::new("/") {
            return refuse("is the root directory: it would expose every path the masks hide".into());
        }
        for m in self.list.iter().filter(|m| m.origin == Origin::State) {
            if m.path.starts_with(p) && m.path != p {
                return refuse(format!(
                    "contains cloche's state directory {}; a {what} may not contain it",
                    m.path.display()
                ));
            }
        }
        if self.homes.iter().any(|h| h == p) {
            return refuse(format!(
                "is a home directory, masked as a whole; a {what} may lie inside a home, not be one"
            ));
        }
        let mut masks: Vec<&Mask> = self.list.iter().collect();
        masks.sort_by(|a, b| a.path.cmp(&b.path));
        for m in masks {
            if m.origin.is_secret() && p.starts_with(&m.path) {
                return refuse(inside(what, p, &m.path, &m.origin));
            }
            if p == m.path {
                return refuse(format!("is {}; a {what} may lie inside it, not be it", m.origin));
            }
        }
        if let Some((at, s)) = self.secret_by_name(p) {
            return refuse(inside(what, p, &at, &Origin::HomeSecret(s)));
        }
        Ok(())
    }

    /// Judges an explicit exposure (`p` canonical): refused inside a state
    /// directory; a [`Relaxation`] when it shows (part of) another mask.
    pub fn judge_exposure(&self, p: &Path) -> Result<Option<Relaxation>, Refusal> {
        for m in self.list.iter().filter(|m| m.origin == Origin::State) {
            if p.starts_with(&m.path) {
                let reason = format!("{}; no exposure reaches it", inside_words(p, &m.path, &m.origin));
                return Err(Refusal { what: "exposure".into(), path: p.to_path_buf(), reason });
            }
        }
        let relax =
            |m: &Path, o: &Origin| Some(Relaxation { path: p.to_path_buf(), mask: m.to_path_buf(), origin: o.clone() });
        if let Some(m) = self.list.iter().find(|m| m.path == p) {
            return Ok(relax(&m.path, &m.origin));
        }
        if let Some(m) = self.list.iter().filter(|m| m.origin.is_secret()).find(|m| p.starts_with(&m.path)) {
            return Ok(relax(&m.path, &m.origin));
        }
        Ok(self.secret_by_name(p).and_then(|(at, s)| relax(&at, &Origin::HomeSecret(s))))
    }

    /// The first home secret whose components appear in `p`'s, wherever:
    /// `/srv/x/.aws/y` lies inside `/srv/x/.aws`, masked under any cwd above.
    fn secret_by_name(&self, p: &Path) -> Option<(PathBuf, PathBuf)> {
        let parts: Vec<Component<'_>> = p.components().collect();
        for s in &self.secret_names {
            let want: Vec<Component<'_>> = s.components().collect();
            if want.is_empty() || want.len() > parts.len() {
                continue;
            }
            if let Some(i) = parts.windows(want.len()).position(|w| w == want.as_slice()) {
                let at: PathBuf = parts[..i + want.len()].iter().collect();
                return Some((at, s.clone()));
            }
        }
        None
    }
}

fn inside_words(p: &Path, m: &Path, origin: &Origin) -> String {
    let rel = if p == m { "is" } else { "lies inside" };
    format!("{rel} the masked path {} ({origin})", m.display())
}

fn inside(what: &str, p: &Path, m: &Path, origin: &Origin) -> String {
    format!("{}; a {what} may not be a masked path or lie inside one", inside_words(p, m, origin))
}

/// Judges the cwd (or project: `what`) and the explicit exposures of `req`
/// as the plan will: the refusal, or the relaxations the exposures make.
pub fn check(host: &dyn HostFacts, req: &FsRequest, what: &str) -> Result<Vec<Relaxation>, Refusal> {
    let masks = Masks::collect(host, req);
    let cwd = host.canonical(&req.cwd).unwrap_or_else(|| req.cwd.clone());
    masks.judge_dir(what, &cwd)?;
    let mut out = Vec::new();
    for e in &req.expose {
        if let Some(c) = host.canonical(e) {
            out.extend(masks.judge_exposure(&c)?);
        }
    }
    Ok(out)
}

#[cfg(test)]
#[path = "exposure_tests.rs"]
mod tests;
