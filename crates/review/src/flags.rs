//! Review flags: the paths of an fs_diff a reviewer must look at, and why.
//!
//! On top of the world's own flags (setuid, device nodes, git hooks, ...)
//! this adds what only matters once the changes may reach the host: paths
//! outside the commit roots, symlinks pointing out of them, and files that
//! run code or change what code runs (CI, build scripts, dependency
//! manifests, lock files, shell start-up files).
//!
//! Everything works on raw path bytes: a name that is not UTF-8 is matched
//! (and simply fails to match the ASCII names) without any conversion.

use std::collections::BTreeSet;
use std::path::PathBuf;

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use cloche_world::diff::{Entry, FlagKind, FsDiff, Kind, RawPath};
use serde::ser::SerializeMap;
use serde::{Serialize, Serializer};

/// One flagged path and why.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct ReviewFlag {
    pub path: RawPath,
    pub why: String,
}

/// `{"path": "...", "why": "..."}`, or `path_b64` (standard base64 of the raw
/// bytes) instead of `path` when the path is not UTF-8, as in the fs_diff.
impl Serialize for ReviewFlag {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(2))?;
        match std::str::from_utf8(self.path.as_bytes()) {
            Ok(p) => m.serialize_entry("path", p)?,
            Err(_) => m.serialize_entry("path_b64", &B64.encode(self.path.as_bytes()))?,
        }
        m.serialize_entry("why", &self.why)?;
        m.end()
    }
}

/// Flag for any added, modified or deleted path not below a commit root.
pub const OUTSIDE_ROOTS: &str = "outside the commit roots";
/// Flag for a symlink whose target (resolved lexically) is not below a root.
pub const SYMLINK_LEAVES_ROOTS: &str = "symlink leaves the commit roots";
const CI: &str = "CI configuration";
const BUILD: &str = "build configuration";
const MANIFEST: &str = "dependency manifest";
const LOCK: &str = "lock file";
const STARTUP: &str = "shell start-up file";

/// Directories whose whole content is CI configuration.
const CI_DIRS: &[&str] = &[".github", ".gitlab", ".circleci", ".buildkite", ".woodpecker"];
const CI_FILES: &[&str] = &[
    ".gitlab-ci.yml",
    ".travis.yml",
    "Jenkinsfile",
    "azure-pipelines.yml",
    "bitbucket-pipelines.yml",
    ".drone.yml",
    ".woodpecker.yml",
    ".woodpecker.yaml",
];
const BUILD_FILES: &[&str] = &[
    "Makefile",
    "makefile",
    "GNUmakefile",
    "build.rs",
    "CMakeLists.txt",
    "meson.build",
    "configure",
    "setup.py",
    "setup.cfg",
    "build.gradle",
    "build.gradle.kts",
    "Rakefile",
    "justfile",
    "Taskfile.yml",
    // npm runs its `scripts` (preinstall, postinstall, ...) on install
    "package.json",
    ".npmrc",
    ".pre-commit-config.yaml",
    ".envrc",
];
/// Build configuration named by its last path components.
const BUILD_SUFFIXES: &[&[&str]] = &[&[".cargo", "config.toml"], &[".cargo", "config"]];
const MANIFEST_FILES: &[&str] = &[
    "Cargo.toml",
    "package.json",
    "requirements.txt",
    "pyproject.toml",
    "Pipfile",
    "go.mod",
    "Gemfile",
    "pom.xml",
    "composer.json",
    "mix.exs",
];
const LOCK_FILES: &[&str] = &[
    "Cargo.lock",
    "package-lock.json",
    "npm-shrinkwrap.json",
    "yarn.lock",
    "pnpm-lock.yaml",
    "poetry.lock",
    "Pipfile.lock",
    "go.sum",
    "Gemfile.lock",
    "composer.lock",
    "uv.lock",
    "flake.lock",
];
const STARTUP_FILES: &[&str] = &[
    ".bashrc",
    ".bash_profile",
    ".bash_login",
    ".bash_logout",
    ".profile",
    ".zshrc",
    ".zprofile",
    ".zshenv",
    ".zlogin",
    ".inputrc",
    ".kshrc",
];
const STARTUP_SUFFIXES: &[&[&str]] = &[&[".config", "fish", "config.fish"]];
/// System-wide start-up files, by their full path.
const STARTUP_PATHS: &[&[&str]] = &[&["etc", "profile"], &["etc", "bash.bashrc"], &["etc", "environment"]];
/// Every path below this directory is a start-up file.
const STARTUP_DIR: &[&str] = &["etc", "profile.d"];

/// Every flag of `diff` for a reviewer, sorted by (path bytes, why), without
/// duplicates.
pub fn review_flags(diff: &FsDiff, roots: &[PathBuf]) -> Vec<ReviewFlag> {
    let mut out = Vec::new();
    let mut flag = |path: &RawPath, why: &str| out.push(ReviewFlag { path: path.clone(), why: why.to_owned() });

    // The world's own flags; "executable" says whether the file is new.
    let added: BTreeSet<&[u8]> = diff.added.iter().map(|e| e.path.as_bytes()).collect();
    let modified: BTreeSet<&[u8]> = diff.modified.iter().map(|e| e.path.as_bytes()).collect();
    for f in &diff.flags {
        let why = match f.why {
            FlagKind::Executable if added.contains(f.path.as_bytes()) => "new executable".to_owned(),
            FlagKind::Executable if modified.contains(f.path.as_bytes()) => "changed executable".to_owned(),
            // A truncated diff can flag paths its lists left out.
            other => serde_name(&other),
        };
        flag(&f.path, &why);
    }

    for e in diff.added.iter().chain(&diff.modified) {
        if e.kind == Kind::Symlink && symlink_escapes(e, roots) {
            flag(&e.path, SYMLINK_LEAVES_ROOTS);
        }
    }
    for e in diff.added.iter().chain(&diff.modified).chain(&diff.deleted) {
        if !crate::under_roots(e.path.as_bytes(), roots) {
            flag(&e.path, OUTSIDE_ROOTS);
        }
        for why in name_flags(e.path.as_bytes()) {
            flag(&e.path, why);
        }
    }

    out.sort();
    out.dedup();
    out
}

/// The JSON name of a unit enum variant of the fs_diff model (a world flag:
/// "setuid", "device node", "git hook"; a change: "content", "mode", ...).
pub(crate) fn serde_name<T: Serialize + std::fmt::Debug>(v: &T) -> String {
    match serde_json::to_value(v) {
        Ok(serde_json::Value::String(s)) => s,
        // Not reached with unit variants; keep a readable name anyway.
        _ => format!("{v:?}"),
    }
}

/// The non-empty components of `path` (so `//` and a trailing `/` do not count).
fn components(path: &[u8]) -> Vec<&[u8]> {
    path.split(|&b| b == b'/').filter(|c| !c.is_empty()).collect()
}

/// True if `comps` ends with the components `suffix`.
fn ends_with(comps: &[&[u8]], suffix: &[&str]) -> bool {
    comps.len() >= suffix.len()
        && comps[comps.len() - suffix.len()..].iter().zip(suffix).all(|(c, s)| *c == s.as_bytes())
}

/// True if `name` is one of `names`.
fn is_one_of(name: &[u8], names: &[&str]) -> bool {
    names.iter().any(|n| n.as_bytes() == name)
}

/// The flags a path earns by its name alone (CI, build, manifest, lock,
/// start-up), in that order.
fn name_flags(path: &[u8]) -> Vec<&'static str> {
    let comps = components(path);
    let Some(&name) = comps.last() else {
        return Vec::new();
    };
    let mut out = Vec::new();
    if is_one_of(name, CI_FILES) || comps.iter().any(|c| is_one_of(c, CI_DIRS)) {
        out.push(CI);
    }
    if is_one_of(name, BUILD_FILES) || BUILD_SUFFIXES.iter().any(|s| ends_with(&comps, s)) {
        out.push(BUILD);
    }
    let requirements = name.starts_with(b"requirements") && name.ends_with(b".txt");
    if is_one_of(name, MANIFEST_FILES) || requirements || name.ends_with(b".gemspec") {
        out.push(MANIFEST);
    }
    if is_one_of(name, LOCK_FILES) {
        out.push(LOCK);
    }
    let system = STARTUP_PATHS.iter().any(|p| comps.len() == p.len() && ends_with(&comps, p));
    let in_profile_d = comps.len() > STARTUP_DIR.len() && ends_with(&comps[..STARTUP_DIR.len()], STARTUP_DIR);
    if is_one_of(name, STARTUP_FILES) || STARTUP_SUFFIXES.iter().any(|s| ends_with(&comps, s)) || system || in_profile_d
    {
        out.push(STARTUP);
    }
    out
}

/// True if symlink entry `e` has a target that, resolved lexically against
/// the symlink's directory, is not below any root.
fn symlink_escapes(e: &Entry, roots: &[PathBuf]) -> bool {
    match &e.target {
        Some(t) => !crate::under_roots(&resolve_lexically(e.path.as_bytes(), t.as_bytes()), roots),
        None => false,
    }
}

/// Where symlink `link` pointing at `target` leads, without touching any
/// filesystem: an absolute target as is, a relative one from the link's
/// parent directory; `.` is dropped, `..` removes the previous component
/// (and stays at `/` at the top). The result is absolute and normalized.
pub(crate) fn resolve_lexically(link: &[u8], target: &[u8]) -> Vec<u8> {
    let mut stack: Vec<&[u8]> = Vec::new();
    if !target.starts_with(b"/") {
        stack = components(link);
        // The link's own name is not part of its directory.
        stack.pop();
    }
    for c in target.split(|&b| b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => {
                stack.pop();
            }
            _ => stack.push(c),
        }
    }
    let mut out = Vec::with_capacity(link.len() + target.len() + 1);
    for c in &stack {
        out.push(b'/');
        out.extend_from_slice(c);
    }
    if out.is_empty() {
        out.push(b'/');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use cloche_world::diff::Flag;

    fn roots() -> Vec<PathBuf> {
        vec![PathBuf::from("/srv/app")]
    }

    fn file(p: &str) -> Entry {
        Entry::new(RawPath::from(p), Kind::File)
    }

    fn link(p: &str, target: &str) -> Entry {
        let mut e = Entry::new(RawPath::from(p), Kind::Symlink);
        e.target = Some(RawPath::from(target));
        e
    }

    /// The whys of `path` in `flags`.
    fn whys<'a>(flags: &'a [ReviewFlag], path: &[u8]) -> Vec<&'a str> {
        flags.iter().filter(|f| f.path.as_bytes() == path).map(|f| f.why.as_str()).collect()
    }

    #[test]
    fn names_table() {
        let table: &[(&str, &[&str])] = &[
            ("/srv/app/src/main.rs", &[]),
            ("/srv/app/.github/workflows/ci.yml", &[CI]),
            ("/srv/app/.github", &[CI]),
            ("/srv/app/.gitlab-ci.yml", &[CI]),
            ("/srv/app/Jenkinsfile", &[CI]),
            ("/srv/app/.circleci/config.yml", &[CI]),
            ("/srv/app/.drone.yml", &[CI]),
            ("/srv/app/Makefile", &[BUILD]),
            ("/srv/app/sub/build.rs", &[BUILD]),
            ("/srv/app/.cargo/config.toml", &[BUILD]),
            ("/srv/app/.cargo/config", &[BUILD]),
            ("/srv/app/config", &[]),
            ("/srv/app/package.json", &[BUILD, MANIFEST]),
            ("/srv/app/Cargo.toml", &[MANIFEST]),
            ("/srv/app/requirements-dev.txt", &[MANIFEST]),
            ("/srv/app/requirements.txt", &[MANIFEST]),
            ("/srv/app/requirements.in", &[]),
            ("/srv/app/foo.gemspec", &[MANIFEST]),
            ("/srv/app/Cargo.lock", &[LOCK]),
            ("/srv/app/go.sum", &[LOCK]),
            ("/srv/app/.github/Cargo.lock", &[CI, LOCK]),
            ("/root/.bashrc", &[STARTUP]),
            ("/home/u/.config/fish/config.fish", &[STARTUP]),
            ("/home/u/fish/config.fish", &[]),
            ("/etc/profile", &[STARTUP]),
            ("/etc/bash.bashrc", &[STARTUP]),
            ("/etc/environment", &[STARTUP]),
            ("/etc/profile.d/x.sh", &[STARTUP]),
            ("/etc/profile.d", &[]),
            ("/srv/etc/profile", &[]),
            ("//etc//profile.d//y", &[STARTUP]),
            ("/", &[]),
            ("", &[]),
        ];
        for (path, want) in table {
            assert_eq!(name_flags(path.as_bytes()), *want, "{path}");
        }
    }

    #[test]
    fn non_utf8_paths() {
        assert!(name_flags(b"/srv/app/\xff\xfe").is_empty());
        assert_eq!(name_flags(b"/srv/\xff/.github/x\x80"), vec![CI]);
        let diff = FsDiff {
            added: vec![Entry::new(RawPath::from_bytes(b"/x/\xff".to_vec()), Kind::File)],
            ..FsDiff::default()
        };
        let flags = review_flags(&diff, &roots());
        assert_eq!(whys(&flags, b"/x/\xff"), vec![OUTSIDE_ROOTS]);
        let json = serde_json::to_string(&flags[0]).unwrap();
        assert_eq!(json, r#"{"path_b64":"L3gv/w==","why":"outside the commit roots"}"#);
    }

    #[test]
    fn serialization() {
        let f = ReviewFlag { path: RawPath::from("/srv/app/Makefile"), why: BUILD.to_owned() };
        let json = serde_json::to_string(&f).unwrap();
        assert_eq!(json, r#"{"path":"/srv/app/Makefile","why":"build configuration"}"#);
    }

    #[test]
    fn lexical_resolution() {
        assert_eq!(resolve_lexically(b"/a/b/l", b"c"), b"/a/b/c");
        assert_eq!(resolve_lexically(b"/a/b/l", b"../c/./d/"), b"/a/c/d");
        assert_eq!(resolve_lexically(b"/a/b/l", b"/etc"), b"/etc");
        assert_eq!(resolve_lexically(b"/a/l", b"../../../../x"), b"/x");
        assert_eq!(resolve_lexically(b"/a/l", b".."), b"/");
        assert_eq!(resolve_lexically(b"/l", b""), b"/");
        assert_eq!(resolve_lexically(b"/a/l", b"\xff/.."), b"/a");
        assert_eq!(resolve_lexically(b"/p/l", b"x/./y"), b"/p/x/y");
        assert_eq!(resolve_lexically(b"/p/l", b"../../../.."), b"/");
    }

    #[test]
    fn symlinks() {
        let diff = FsDiff {
            added: vec![
                link("/srv/app/abs", "/etc"),
                link("/srv/app/abs_in", "/srv/app/x"),
                link("/srv/app/d/sib", "../sibling"),
                link("/srv/app/d/esc", "../../.."),
                link("/srv/app/d/up", "../../app2/x"),
                Entry::new(RawPath::from("/srv/app/d/no_target"), Kind::Symlink),
            ],
            modified: vec![link("/srv/app/m", "../../../etc/shadow")],
            ..FsDiff::default()
        };
        let flags = review_flags(&diff, &roots());
        assert_eq!(whys(&flags, b"/srv/app/abs"), vec![SYMLINK_LEAVES_ROOTS]);
        assert!(whys(&flags, b"/srv/app/abs_in").is_empty());
        assert!(whys(&flags, b"/srv/app/d/sib").is_empty());
        assert_eq!(whys(&flags, b"/srv/app/d/esc"), vec![SYMLINK_LEAVES_ROOTS]);
        assert_eq!(whys(&flags, b"/srv/app/d/up"), vec![SYMLINK_LEAVES_ROOTS]);
        assert!(whys(&flags, b"/srv/app/d/no_target").is_empty());
        assert_eq!(whys(&flags, b"/srv/app/m"), vec![SYMLINK_LEAVES_ROOTS]);
        // With `/` as a root nothing can leave it.
        assert!(review_flags(&diff, &[PathBuf::from("/")]).is_empty());
    }

    #[test]
    fn world_flags_mapped() {
        let world = |p: &str, why| Flag { path: RawPath::from(p), why };
        let diff = FsDiff {
            added: vec![file("/srv/app/new")],
            modified: vec![file("/srv/app/old")],
            flags: vec![
                world("/srv/app/new", FlagKind::Executable),
                world("/srv/app/new", FlagKind::Setuid),
                world("/srv/app/old", FlagKind::Executable),
                world("/srv/app/old", FlagKind::DeviceNode),
                world("/srv/app/gone", FlagKind::Executable),
                world("/srv/app/.git/hooks/x", FlagKind::GitHook),
                world("/srv/app/.git/config", FlagKind::UnderGit),
                world("/srv/app/h", FlagKind::HardLink),
                world("/srv/app/w", FlagKind::WorldWritable),
                world("/srv/app/s", FlagKind::Sparse),
            ],
            ..FsDiff::default()
        };
        let flags = review_flags(&diff, &roots());
        assert_eq!(whys(&flags, b"/srv/app/new"), vec!["new executable", "setuid"]);
        assert_eq!(whys(&flags, b"/srv/app/old"), vec!["changed executable", "device node"]);
        assert_eq!(whys(&flags, b"/srv/app/gone"), vec!["executable"]);
        assert_eq!(whys(&flags, b"/srv/app/.git/hooks/x"), vec!["git hook"]);
        assert_eq!(whys(&flags, b"/srv/app/.git/config"), vec!["under .git"]);
        assert_eq!(whys(&flags, b"/srv/app/h"), vec!["hard link"]);
        assert_eq!(whys(&flags, b"/srv/app/w"), vec!["world-writable"]);
        assert_eq!(whys(&flags, b"/srv/app/s"), vec!["sparse"]);
    }

    #[test]
    fn outside_roots_everywhere_and_sorted() {
        let mut gone_link = Entry::new(RawPath::from("/etc/gone_link"), Kind::Symlink);
        gone_link.target = Some(RawPath::from("/nowhere"));
        let diff = FsDiff {
            added: vec![file("/etc/new"), file("/srv/app/in"), file("/srv/application")],
            modified: vec![file("/etc/profile")],
            deleted: vec![file("/tmp/Makefile"), file("/srv/app/.travis.yml"), gone_link],
            flags: vec![Flag { path: RawPath::from("/etc/new"), why: FlagKind::Setuid }],
            ..FsDiff::default()
        };
        let flags = review_flags(&diff, &roots());
        assert_eq!(whys(&flags, b"/etc/new"), vec![OUTSIDE_ROOTS, "setuid"]);
        assert!(whys(&flags, b"/srv/app/in").is_empty());
        assert_eq!(whys(&flags, b"/srv/application"), vec![OUTSIDE_ROOTS]);
        assert_eq!(whys(&flags, b"/etc/profile"), vec![OUTSIDE_ROOTS, STARTUP]);
        assert_eq!(whys(&flags, b"/tmp/Makefile"), vec![BUILD, OUTSIDE_ROOTS]);
        assert_eq!(whys(&flags, b"/srv/app/.travis.yml"), vec![CI]);
        // A deleted symlink gets no target check.
        assert_eq!(whys(&flags, b"/etc/gone_link"), vec![OUTSIDE_ROOTS]);
        let mut sorted = flags.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(flags, sorted);
        // No roots: nothing is committable.
        let none = review_flags(&diff, &[]);
        assert_eq!(none.iter().filter(|f| f.why == OUTSIDE_ROOTS).count(), 7);
    }

    #[test]
    fn duplicates_removed() {
        let diff = FsDiff {
            added: vec![file("/x/Makefile")],
            flags: vec![
                Flag { path: RawPath::from("/x/Makefile"), why: FlagKind::Setgid },
                Flag { path: RawPath::from("/x/Makefile"), why: FlagKind::Setgid },
            ],
            ..FsDiff::default()
        };
        let flags = review_flags(&diff, &roots());
        assert_eq!(whys(&flags, b"/x/Makefile"), vec![BUILD, OUTSIDE_ROOTS, "setgid"]);
    }
}
