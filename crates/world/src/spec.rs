//! What a world should be: the validated request the engine runs.

use crate::cgroup::Limits;
use crate::seccomp::Program;
use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Environment variables a world inherits from the caller (plus LC_*).
pub const ENV_ALLOWLIST: &[&str] = &["PATH", "HOME", "LANG", "TERM", "TZ", "USER"];
/// PATH when the caller has none.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// One world, one command.
#[derive(Debug)]
pub struct Spec {
    /// Command and arguments (argv[0] is looked up in the world's PATH).
    pub argv: Vec<OsString>,
    /// The complete environment of the command.
    pub env: Vec<(OsString, OsString)>,
    /// Working directory inside the world (absolute).
    pub cwd: PathBuf,
    pub limits: Limits,
    pub timeout: Option<Duration>,
    /// Where the world's writes (its upper layers) live.
    pub upper: UpperStore,
    /// Size cap of the world's upper layers (on disk: a quota; tmpfs: its
    /// size).
    pub upper_size: u64,
    pub hostname: String,
    pub nofile: u64,
    /// Paths hidden from the world.
    pub mask: Vec<PathBuf>,
    /// Mask every home directory.
    pub mask_homes: bool,
    /// Secrets masked under homes and the cwd.
    pub home_secrets: Vec<PathBuf>,
    /// Paths kept visible through masks.
    pub expose: Vec<PathBuf>,
    /// Toolchains under a home, shown when the world's PATH names them.
    pub toolchains: Toolchains,
    /// Called once with the PATH entries that are directories on the host
    /// but hidden in the world (none: an empty list), from the view the
    /// mount plan is built from. It runs in the parent just after the
    /// world's init started, before any of the world's output is copied
    /// (`cloche run` says them on stderr, ahead of the command's output).
    pub path_note: Option<fn(&[crate::view::HiddenEntry])>,
    pub seccomp: Program,
    /// Keep the world after the run instead of discarding it.
    pub keep: bool,
    /// With `keep`, for batch worlds: a world whose run is interrupted
    /// (its runner killed) is kept for review rather than swept.
    pub keep_interrupted: bool,
    /// Who the world belongs to (`batch:<id>`), recorded with a kept world.
    pub owner: Option<String>,
    /// A scoped network (`None`: loopback only).
    pub net: Option<crate::network::NetSpec>,
    /// Layers that must be enforced (fail closed otherwise).
    pub require: Vec<String>,
    /// Hash regular files in the fs_diff.
    pub hash: bool,
    /// Nobody will read this one-shot world's outcome beyond its status (a
    /// CLI run without `--json`, `--report` or `--keep`): neither its
    /// fs_diff, nor a scoped network's counters, nor the limits it hit are
    /// gathered, and the outcome's are empty (a timeout is still said).
    /// Kept and continued worlds always gather theirs.
    pub unread: bool,
    /// What a one-shot world's stdio is (a batch's entries are captured).
    pub terminal: Terminal,
    /// The user the world's processes run as (its init and commands);
    /// `None`: uid 0, as the world always did. `cloched` starts the worlds
    /// of callers other than root as those callers: they read and write
    /// what the caller could (docs/security.md, *cloched*).
    pub user: Option<WorldUser>,
    /// The host ids worlds map to (docs/security.md, *User namespace*): each
    /// world runs in a user namespace of its own whose ids 0..65535 are a
    /// slot of this range. `None`: no user namespace, the world's ids are
    /// the host's (policy `world.userns = false`).
    pub userns: Option<crate::userns::IdRange>,
    /// A world without root (`rootless.rs`): run by this caller, in a user
    /// namespace the caller makes, mapping only the caller's ids to the
    /// world's 0. Exclusive with `userns` and `user`.
    pub rootless: Option<crate::rootless::Caller>,
    /// A world without root and without limits (`cloche run --no-limits`:
    /// no delegated cgroup); never for a world run by root.
    pub no_limits: bool,
    /// A world without root with limits: the cgroup delegated to its caller
    /// (`cgroup_delegated`), as the service found it before anything was
    /// made; `None`: the engine looks for it (and refuses without one).
    pub delegated: Option<crate::cgroup::Layout>,
}

/// A user a world runs as: its ids and supplementary groups.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct WorldUser {
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<u32>,
}

/// Toolchains installed under a home (policy `fs.toolchains` and
/// `fs.toolchain_writable`), all paths relative to a home.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Toolchains {
    /// Groups: a group is shown read-only when the world's PATH names a
    /// directory inside one of its paths (the others come along).
    pub groups: Vec<Vec<PathBuf>>,
    /// Paths inside a toolchain (or a toolchain itself) that its tools
    /// write (shims, download caches, `~/.local/bin`): copy-on-write where
    /// their toolchain is shown.
    pub writable: Vec<PathBuf>,
}

/// Where a world's upper layers live (`upper.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum UpperStore {
    /// A subvolume of the state directory's disk pool, with a quota.
    #[default]
    Disk,
    /// A tmpfs: faster, but its pages count against the memory limit.
    Tmpfs,
}

impl std::str::FromStr for UpperStore {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "disk" => Ok(UpperStore::Disk),
            "tmpfs" => Ok(UpperStore::Tmpfs),
            _ => Err(format!("{s:?}: expected disk or tmpfs")),
        }
    }
}

/// A one-shot world's stdin, stdout and stderr. In every case they are the
/// world's own (pipes or a pseudo-terminal that cloche copies to and from
/// the caller's descriptors), never the caller's (`stdio/`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Terminal {
    /// Pipes; a caller's terminal on stdin is not read (the world's stdin
    /// is then empty).
    #[default]
    Pipes,
    /// Pipes, and a caller's terminal on stdin is read too (`-i`).
    Interactive,
    /// A pseudo-terminal of the world's own (`-t`): the command leads its
    /// session, the caller's terminal is raw while the world runs (keys such
    /// as ^C and ^Z reach the world's foreground job) and restored however
    /// the world ends, and the window size follows the caller's.
    Pty,
}

#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error("no command given")]
    NoCommand,
    #[error("{0}")]
    Invalid(String),
}

impl Spec {
    /// Checks what the types cannot.
    pub fn validate(&self) -> Result<(), SpecError> {
        let bad = |m: String| Err(SpecError::Invalid(m));
        match self.argv.first() {
            None => return Err(SpecError::NoCommand),
            Some(a) if a.is_empty() => return Err(SpecError::NoCommand),
            _ => {}
        }
        if self.argv.iter().any(|a| a.as_bytes().contains(&0)) {
            return bad("command arguments must not contain NUL bytes".into());
        }
        if self.rootless.is_some() && (self.userns.is_some() || self.user.is_some() || self.net.is_some()) {
            return bad("a world without root has no range of ids, user or network scope".into());
        }
        if self.no_limits && self.rootless.is_none() {
            return bad("--no-limits is for a world without root (as root, limits are always set)".into());
        }
        if !self.cwd.is_absolute() {
            return bad(format!("cwd {} must be absolute", self.cwd.display()));
        }
        for (k, v) in &self.env {
            if k.is_empty() || k.as_bytes().contains(&b'=') || k.as_bytes().contains(&0) || v.as_bytes().contains(&0) {
                return bad(format!("bad environment variable {:?}", k));
            }
        }
        for p in self.mask.iter().chain(&self.expose) {
            if !p.is_absolute() {
                return bad(format!("{} must be an absolute path", p.display()));
            }
        }
        if self.limits.pids < 2 {
            return bad("pids limit must be at least 2".into());
        }
        if self.limits.memory < 8 << 20 {
            return bad("memory limit must be at least 8MiB".into());
        }
        if self.timeout == Some(Duration::ZERO) {
            return bad("timeout must be positive".into());
        }
        if let (Some(_), Some(u)) = (&self.userns, &self.user) {
            let n = crate::userns::WORLD_IDS;
            if let Some(id) = [u.uid, u.gid].into_iter().chain(u.groups.iter().copied()).find(|&id| id >= n) {
                return bad(format!("id {id} of the world's user is outside the ids a world maps (0-{})", n - 1));
            }
        }
        Ok(())
    }
}

/// Builds a world's environment: the allowlisted variables (and LC_*) from
/// `host`, then `extra` (which override), PATH defaulted when absent.
pub fn build_env(
    host: impl IntoIterator<Item = (OsString, OsString)>,
    extra: &[(OsString, OsString)],
) -> Vec<(OsString, OsString)> {
    let mut env: Vec<(OsString, OsString)> = host
        .into_iter()
        .filter(|(k, _)| {
            let k = k.as_bytes();
            ENV_ALLOWLIST.iter().any(|a| a.as_bytes() == k) || k.starts_with(b"LC_")
        })
        .collect();
    for (k, v) in extra {
        env.retain(|(ek, _)| ek != k);
        env.push((k.clone(), v.clone()));
    }
    if !env.iter().any(|(k, _)| k == "PATH") {
        env.push(("PATH".into(), DEFAULT_PATH.into()));
    }
    env.sort();
    env
}

/// Parses `K=V`.
pub fn parse_env_pair(s: &OsStr) -> Option<(OsString, OsString)> {
    let b = s.as_bytes();
    let eq = b.iter().position(|&c| c == b'=')?;
    if eq == 0 {
        return None;
    }
    Some((OsStr::from_bytes(&b[..eq]).to_owned(), OsStr::from_bytes(&b[eq + 1..]).to_owned()))
}

/// Home directories: /root, every directory in /home, and the homes in
/// /etc/passwd of uid 0 and of users with uid >= 1000 that are not system
/// directories. Masked as a whole (`fs.mask_homes`), their secrets always;
/// a project may lie inside one, never be one.
pub fn home_dirs() -> Vec<PathBuf> {
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    let mut homes = vec![PathBuf::from("/root")];
    if let Ok(rd) = std::fs::read_dir("/home") {
        for e in rd.flatten() {
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                homes.push(e.path());
            }
        }
    }
    homes.extend(passwd_homes(&passwd));
    homes.sort();
    homes.dedup();
    homes
}

/// Homes of uid 0 and of ordinary users listed in passwd text.
pub fn passwd_homes(passwd: &str) -> Vec<PathBuf> {
    const SYSTEM: &[&str] = &[
        "/",
        "/bin",
        "/boot",
        "/dev",
        "/etc",
        "/lib",
        "/lib64",
        "/nonexistent",
        "/opt",
        "/proc",
        "/run",
        "/sbin",
        "/srv",
        "/sys",
        "/tmp",
        "/usr",
        "/var",
    ];
    passwd
        .lines()
        .filter_map(|l| {
            let mut f = l.split(':');
            let uid: u32 = f.nth(2)?.parse().ok()?;
            // Most lines are system accounts: judged by their uid alone.
            let user = uid == 0 || (uid >= 1000 && uid != 65534);
            if !user {
                return None;
            }
            let home = Path::new(f.nth(2)?);
            let system = SYSTEM.iter().any(|s| home == Path::new(s))
                || ["/usr/", "/etc/", "/proc/", "/sys/", "/dev/", "/run/", "/bin/", "/sbin/", "/lib/"]
                    .iter()
                    .any(|p| home.starts_with(p));
            (home.is_absolute() && !system).then(|| home.to_path_buf())
        })
        .collect()
}

/// Names of the layers a world that reached execve has.
pub fn layers(has_cgroup: bool, userns: bool) -> Vec<String> {
    let mut l: Vec<&str> = vec![
        "mnt",
        "pid",
        "net",
        "ipc",
        "uts",
        "cgroupns",
        "overlay",
        "masks",
        "rlimits",
        "caps",
        "no_new_privs",
        "seccomp",
    ];
    if has_cgroup {
        l.push("cgroup");
    }
    if userns {
        l.push("userns");
    }
    l.into_iter().map(String::from).collect()
}

/// A valid spec for unit tests (a user in a user namespace, tmpfs upper).
#[cfg(test)]
pub(crate) fn for_tests() -> Spec {
    let profile = crate::seccomp::Profile::builtin_default().unwrap();
    Spec {
        argv: vec!["true".into()],
        env: vec![],
        cwd: "/".into(),
        limits: Limits { memory: 64 << 20, pids: 8, cpus: 1.0 },
        timeout: None,
        upper: UpperStore::Tmpfs,
        upper_size: 1 << 20,
        hostname: "cloche".into(),
        nofile: 64,
        mask: vec![],
        mask_homes: true,
        home_secrets: vec![],
        expose: vec![],
        toolchains: Default::default(),
        path_note: None,
        seccomp: Program::compile(&profile).unwrap(),
        keep: false,
        keep_interrupted: false,
        owner: None,
        net: None,
        require: vec![],
        hash: false,
        unread: false,
        terminal: Default::default(),
        user: Some(WorldUser { uid: 1000, gid: 1000, groups: vec![27, 65535] }),
        userns: Some(crate::userns::IdRange::new(200000, 65536).unwrap()),
        rootless: None,
        no_limits: false,
        delegated: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(s: &str) -> OsString {
        s.into()
    }

    #[test]
    fn env_is_allowlisted() {
        let host = vec![
            (os("PATH"), os("/bin")),
            (os("SECRET_TOKEN"), os("x")),
            (os("LC_ALL"), os("C")),
            (os("HOME"), os("/root")),
            (os("LD_PRELOAD"), os("/evil.so")),
        ];
        let env = build_env(host, &[(os("HOME"), os("/work")), (os("K"), os("V"))]);
        assert_eq!(
            env,
            vec![(os("HOME"), os("/work")), (os("K"), os("V")), (os("LC_ALL"), os("C")), (os("PATH"), os("/bin"))]
        );
        let env = build_env(vec![], &[]);
        assert_eq!(env, vec![(os("PATH"), os(DEFAULT_PATH))]);
    }

    #[test]
    fn env_pairs() {
        assert_eq!(parse_env_pair(OsStr::new("A=b=c")), Some((os("A"), os("b=c"))));
        assert_eq!(parse_env_pair(OsStr::new("A=")), Some((os("A"), os(""))));
        assert_eq!(parse_env_pair(OsStr::new("=x")), None);
        assert_eq!(parse_env_pair(OsStr::new("novalue")), None);
    }

    /// In a user namespace a world's user must be one of the ids it maps.
    #[test]
    fn a_user_outside_the_mapped_ids_is_refused() {
        let mut spec = super::for_tests();
        assert!(spec.validate().is_ok());
        spec.user = Some(WorldUser { uid: 70000, gid: 1000, groups: vec![] });
        let e = spec.validate().unwrap_err().to_string();
        assert!(e.contains("id 70000") && e.contains("0-65535"), "{e}");
        spec.user = Some(WorldUser { uid: 1000, gid: 1000, groups: vec![65536] });
        assert!(spec.validate().is_err());
        // Without one, any id goes (the host's own).
        spec.userns = None;
        assert!(spec.validate().is_ok());
    }

    #[test]
    fn passwd_homes_skip_system_accounts() {
        let text = "root:x:0:0:root:/root:/bin/bash\n\
                    daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin\n\
                    ann:x:1000:1000::/home/ann:/bin/bash\n\
                    svc:x:1001:1001::/srv/svc:/bin/sh\n\
                    odd:x:1002:1002::/usr/local/odd:/bin/sh\n\
                    nobody:x:65534:65534::/nonexistent:/usr/sbin/nologin\n\
                    short:x:1003:1003\n\
                    broken line\n";
        assert_eq!(
            passwd_homes(text),
            vec![PathBuf::from("/root"), PathBuf::from("/home/ann"), PathBuf::from("/srv/svc")]
        );
        // uid 0 with `/` as its home: a system directory, not a home.
        assert!(passwd_homes("root:x:0:0:root:/:/bin/sh\n").is_empty());
    }
}
