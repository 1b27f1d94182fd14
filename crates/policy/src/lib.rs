//! cloche-policy: the policy file and command classification.
//!
//! A policy is a TOML file (`policies/default.toml` is compiled in as the
//! default). This crate parses and validates it; it performs no isolation
//! itself. Unknown keys are errors, so a typo never relaxes a world.
//!
//! Its `[commands]` section holds the command rules: [`Policy::classify`]
//! parses a command line as shell, finds every simple command it could run
//! and decides allow, review or deny (docs/policy.md).

mod budgets;
mod classify;
mod load;
mod network;
mod risk;
mod run_cache;
pub use budgets::Budgets;
pub use network::NetworkSection;
mod rules;
mod shell;
mod size;
pub mod store;

use serde::Deserialize;
use std::path::{Path, PathBuf};

pub use classify::{Decision, Redirect, SimpleCommand, MAX_DEPTH, MAX_LINE};
pub use risk::{Effect, Level, RiskProfile};
pub use rules::{secret_locations, CommandRules, Conditions, Fallback, Rule, RESERVED_NAMES, SECRETS};
pub use size::{parse_size, SizeError};

/// The default policy, compiled in.
pub const DEFAULT_POLICY: &str = include_str!("../../../policies/default.toml");
/// The default seccomp profile (OCI JSON), compiled in.
pub const DEFAULT_SECCOMP: &str = include_str!("../../../policies/seccomp/default.json");
/// The name of [`DEFAULT_SECCOMP`] in a policy (`seccomp.profile`) and
/// its origin.
pub const BUILTIN_SECCOMP: &str = "builtin:default";

/// Where the command rules start in the default policy; they are its last
/// section.
const COMMANDS_HEADER: &str = "\n[commands]\n";

/// The built-in policy's head as JSON, made from policies/default.toml by
/// build.rs.
const BUILTIN_HEAD_JSON: &str = include_str!(concat!(env!("OUT_DIR"), "/default_head.json"));

/// Layers a policy may require.
pub const KNOWN_LAYERS: &[&str] =
    &["mnt", "pid", "net", "ipc", "uts", "cgroupns", "overlay", "seccomp", "caps", "no_new_privs", "cgroup", "userns"];

#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("cannot read policy {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("invalid policy {origin}: {message}")]
    Invalid { origin: String, message: String },
}

/// A parsed, validated policy.
#[derive(Debug, Clone)]
pub struct Policy {
    /// Where it came from ("builtin" or a path), for messages and audit.
    pub origin: String,
    pub world: WorldSection,
    pub limits: Limits,
    pub fs: FsPolicy,
    pub layers: Layers,
    /// The seccomp profile's JSON text (the built-in one borrowed: a policy
    /// is cloned for every run, and the text is 19 KB).
    pub seccomp_json: std::borrow::Cow<'static, str>,
    /// Where the seccomp profile came from.
    pub seccomp_origin: String,
    /// The command rules (`[commands]`; none when the section is absent).
    pub commands: CommandRules,
    /// `[batch]` (defaults when absent).
    pub batch: BatchSection,
    pub retention: Retention,
    pub commit: CommitSection,
    pub network: NetworkSection,
    /// `[budgets]`: what each agent may use.
    pub budgets: Budgets,
}

#[derive(Debug, Clone)]
pub struct WorldSection {
    pub hostname: String,
    /// Where worlds' upper layers live (`upper`, default disk).
    pub upper: UpperStore,
    pub upper_size: u64,
    /// Every world in a user namespace of its own (`userns`, default true).
    pub userns: bool,
    /// The host ids worlds map to, `START:COUNT` for uids and gids alike
    /// (`userns_ids`); `None`: the `cloche` entries of /etc/subuid and
    /// /etc/subgid.
    pub userns_ids: Option<(u32, u32)>,
}

/// `[world] upper`: the state directory's disk pool, or a tmpfs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpperStore {
    Disk,
    Tmpfs,
}

impl UpperStore {
    pub fn parse(s: &str) -> Result<UpperStore, String> {
        match s {
            "disk" => Ok(UpperStore::Disk),
            "tmpfs" => Ok(UpperStore::Tmpfs),
            _ => Err(format!("{s:?}: expected \"disk\" or \"tmpfs\"")),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Limits {
    pub memory: u64,
    pub pids: u64,
    pub cpus: f64,
    /// Seconds; 0 = none.
    pub timeout: u64,
    pub nofile: u64,
}

#[derive(Debug, Clone)]
pub struct FsPolicy {
    pub mask: Vec<PathBuf>,
    pub mask_homes: bool,
    pub home_secrets: Vec<PathBuf>,
    pub expose: Vec<PathBuf>,
    /// Toolchains under a home, relative to it: each group is shown
    /// read-only when the world's PATH names a directory inside one of its
    /// paths (the others come along). Absent: none.
    pub toolchains: Vec<Vec<PathBuf>>,
    /// Paths inside toolchains (or toolchains themselves), relative to a
    /// home, that their tools write (shims, download caches, programs
    /// installed for the user): copy-on-write where the toolchain holding
    /// them is shown. Absent: none.
    pub toolchain_writable: Vec<PathBuf>,
}

#[derive(Debug, Clone)]
pub struct Layers {
    pub require: Vec<String>,
}

impl Layers {
    pub fn requires(&self, layer: &str) -> bool {
        self.require.iter().any(|l| l == layer)
    }
}

// ---- raw file shape -------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    world: RawWorld,
    limits: RawLimits,
    fs: RawFs,
    layers: RawLayers,
    seccomp: RawSeccomp,
    #[serde(default)]
    batch: Option<RawBatch>,
    #[serde(default)]
    retention: Option<RawRetention>,
    #[serde(default)]
    commit: Option<RawCommit>,
    #[serde(default)]
    network: Option<network::RawNetwork>,
    #[serde(default)]
    budgets: Option<budgets::RawBudgets>,
    #[serde(default)]
    commands: Option<rules::RawCommands>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBatch {
    max_entries: usize,
    output_cap: SizeValue,
    approval_ttl: u64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRetention {
    max_worlds: usize,
    max_age: u64,
    keep_interrupted: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCommit {
    roots: Vec<PathBuf>,
    setuid: String,
}

/// What `cloche commit` may write (`[commit]`).
#[derive(Debug, Clone, Default)]
pub struct CommitSection {
    /// Roots besides the batch's project directory (absolute).
    pub roots: Vec<PathBuf>,
    /// Refuse setuid/setgid files (`"refuse"`) instead of stripping the
    /// bits (`"strip"`, the default).
    pub refuse_setuid: bool,
}

/// Kept worlds (`[retention]`): how many, how old, and whether a batch
/// interrupted by a crash leaves its world for review.
#[derive(Debug, Clone)]
pub struct Retention {
    /// Most kept worlds; the oldest beyond this are discarded.
    pub max_worlds: usize,
    /// Seconds after which a kept world is discarded; 0 = no age limit.
    pub max_age: u64,
    pub keep_interrupted: bool,
}

impl Default for Retention {
    fn default() -> Self {
        Retention { max_worlds: 20, max_age: 7 * 24 * 3600, keep_interrupted: true }
    }
}

/// The most entries any policy lets a batch hold.
pub const MAX_BATCH_ENTRIES: usize = 1000;

/// Batches: size, captured output, approval lifetime (`[batch]`).
#[derive(Debug, Clone)]
pub struct BatchSection {
    pub max_entries: usize,
    pub output_cap: u64,
    /// Seconds.
    pub approval_ttl: u64,
}

impl Default for BatchSection {
    fn default() -> Self {
        BatchSection { max_entries: 10, output_cap: 1 << 20, approval_ttl: 300 }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWorld {
    hostname: String,
    #[serde(default)]
    upper: Option<String>,
    upper_size: SizeValue,
    #[serde(default)]
    userns: Option<bool>,
    #[serde(default)]
    userns_ids: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    memory: SizeValue,
    pids: u64,
    cpus: f64,
    timeout: u64,
    nofile: u64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFs {
    mask: Vec<PathBuf>,
    mask_homes: bool,
    home_secrets: Vec<PathBuf>,
    expose: Vec<PathBuf>,
    #[serde(default)]
    toolchains: Vec<RawToolchain>,
    #[serde(default)]
    toolchain_writable: Vec<PathBuf>,
}

/// One `fs.toolchains` entry: a path, or a list of paths shown together.
#[derive(Deserialize)]
#[serde(untagged)]
enum RawToolchain {
    One(PathBuf),
    Group(Vec<PathBuf>),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLayers {
    require: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSeccomp {
    profile: String,
}

/// Where a seccomp profile named by a policy comes from.
#[derive(Clone, Copy)]
enum Seccomp<'a> {
    /// A file relative to this directory (none: only `builtin:default`).
    Beside(Option<&'a Path>),
    /// This text (none: only `builtin:default`).
    Given(Option<&'a str>),
}

/// A size written as a number of bytes or a string such as "4GiB".
#[derive(Deserialize)]
#[serde(untagged)]
pub(crate) enum SizeValue {
    Bytes(u64),
    Text(String),
}

impl SizeValue {
    pub(crate) fn bytes(&self, what: &str) -> Result<u64, String> {
        match self {
            SizeValue::Bytes(b) => Ok(*b),
            SizeValue::Text(t) => parse_size(t).map_err(|e| format!("{what}: {e}")),
        }
    }
}

impl Policy {
    fn parse(text: &str, origin: &str, seccomp: Seccomp, check_examples: bool) -> Result<Policy, PolicyError> {
        let invalid = |message: String| PolicyError::Invalid { origin: origin.to_string(), message };
        let raw: RawPolicy = toml::from_str(text).map_err(|e| invalid(one_line(text, &e)))?;
        Policy::from_raw(raw, text, origin, seccomp, check_examples)
    }

    /// A policy of its file's values (`text`, the file, locates rules for
    /// their errors).
    fn from_raw(
        raw: RawPolicy,
        text: &str,
        origin: &str,
        seccomp: Seccomp,
        check_examples: bool,
    ) -> Result<Policy, PolicyError> {
        let invalid = |message: String| PolicyError::Invalid { origin: origin.to_string(), message };
        let world = WorldSection {
            hostname: raw.world.hostname,
            upper: match &raw.world.upper {
                None => UpperStore::Disk,
                Some(u) => UpperStore::parse(u).map_err(|e| invalid(format!("world.upper: {e}")))?,
            },
            upper_size: raw.world.upper_size.bytes("world.upper_size").map_err(invalid)?,
            userns: raw.world.userns.unwrap_or(true),
            userns_ids: match &raw.world.userns_ids {
                None => None,
                Some(t) => Some(parse_ids(t).map_err(|e| invalid(format!("world.userns_ids: {e}")))?),
            },
        };
        let limits = Limits {
            memory: raw.limits.memory.bytes("limits.memory").map_err(invalid)?,
            pids: raw.limits.pids,
            cpus: raw.limits.cpus,
            timeout: raw.limits.timeout,
            nofile: raw.limits.nofile,
        };
        let fs = FsPolicy {
            mask: raw.fs.mask,
            mask_homes: raw.fs.mask_homes,
            home_secrets: raw.fs.home_secrets,
            expose: raw.fs.expose,
            toolchains: raw
                .fs
                .toolchains
                .into_iter()
                .map(|t| match t {
                    RawToolchain::One(p) => vec![p],
                    RawToolchain::Group(g) => g,
                })
                .collect(),
            toolchain_writable: raw.fs.toolchain_writable,
        };
        let layers = Layers { require: raw.layers.require };
        validate(&world, &limits, &fs, &layers).map_err(invalid)?;
        // What `@secrets` stands for: worked out only for rules to compile
        // (a head without `[commands]`, as a run reads, has none).
        let secrets = match &raw.commands {
            Some(_) => secret_locations(&fs.mask, &fs.home_secrets),
            None => Vec::new(),
        };
        let commands = rules::compile(raw.commands, text, check_examples, &secrets).map_err(invalid)?;
        let (seccomp_json, seccomp_origin) = match raw.seccomp.profile.as_str() {
            BUILTIN_SECCOMP => (DEFAULT_SECCOMP.into(), BUILTIN_SECCOMP.to_string()),
            p => match seccomp {
                Seccomp::Beside(Some(base)) => {
                    let path = base.join(p);
                    let text = std::fs::read_to_string(&path)
                        .map_err(|source| PolicyError::Read { path: path.clone(), source })?;
                    (text.into(), path.display().to_string())
                }
                Seccomp::Given(Some(text)) => (text.to_string().into(), format!("{origin}:{p}")),
                _ => return Err(invalid(format!("seccomp.profile {p:?}: only builtin:default is allowed here"))),
            },
        };
        let batch = match raw.batch {
            None => BatchSection::default(),
            Some(b) => {
                let output_cap = b.output_cap.bytes("batch.output_cap").map_err(invalid)?;
                if !(1..=MAX_BATCH_ENTRIES).contains(&b.max_entries) || b.approval_ttl == 0 || output_cap > 1 << 30 {
                    return Err(invalid(
                        "batch: max_entries 1-1000, approval_ttl above 0, output_cap at most 1GiB".into(),
                    ));
                }
                BatchSection { max_entries: b.max_entries, output_cap, approval_ttl: b.approval_ttl }
            }
        };
        let retention = match raw.retention {
            None => Retention::default(),
            Some(r) if (1..=10_000).contains(&r.max_worlds) => {
                Retention { max_worlds: r.max_worlds, max_age: r.max_age, keep_interrupted: r.keep_interrupted }
            }
            Some(_) => return Err(invalid("retention: max_worlds 1-10000".into())),
        };
        let commit = match raw.commit {
            None => CommitSection::default(),
            Some(c) => {
                for r in &c.roots {
                    check_absolute(r).map_err(|m| invalid(format!("commit.roots: {m}")))?;
                }
                let refuse_setuid = match c.setuid.as_str() {
                    "strip" => false,
                    "refuse" => true,
                    other => return Err(invalid(format!("commit.setuid {other:?}: \"strip\" or \"refuse\""))),
                };
                CommitSection { roots: c.roots, refuse_setuid }
            }
        };
        let network = network::section(raw.network).map_err(invalid)?;
        let budgets = budgets::section(raw.budgets).map_err(invalid)?;
        Ok(Policy {
            origin: origin.to_string(),
            world,
            limits,
            fs,
            layers,
            seccomp_json,
            seccomp_origin,
            commands,
            batch,
            retention,
            commit,
            network,
            budgets,
        })
    }

    /// What `@secrets` stands for in this policy's rules, for rules compiled
    /// on first use.
    fn secrets_of(&self) -> rules::SecretsOf {
        rules::SecretsOf { mask: self.fs.mask.clone(), home_secrets: self.fs.home_secrets.clone() }
    }

    /// Classifies a command line with this policy's command rules.
    pub fn classify(&self, line: &str) -> Decision {
        self.commands.classify(line)
    }
}

/// `START:COUNT`: numbers only (the engine checks the range itself).
fn parse_ids(t: &str) -> Result<(u32, u32), String> {
    let (a, b) = t.split_once(':').ok_or_else(|| format!("{t:?}: expected START:COUNT"))?;
    let n = |s: &str| s.trim().parse::<u32>().map_err(|_| format!("{t:?}: expected START:COUNT (numbers)"));
    Ok((n(a)?, n(b)?))
}

/// A TOML error as one line: "line N: message" (the library's own text
/// quotes the source over several lines).
fn one_line(text: &str, e: &toml::de::Error) -> String {
    let msg = e.message().split_whitespace().collect::<Vec<_>>().join(" ");
    match e.span() {
        Some(span) => format!("line {}: {msg}", text[..span.start.min(text.len())].matches('\n').count() + 1),
        None => msg,
    }
}

fn validate(world: &WorldSection, limits: &Limits, fs: &FsPolicy, layers: &Layers) -> Result<(), String> {
    let host = &world.hostname;
    if host.is_empty() || host.len() > 64 || !host.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
    {
        return Err(format!("world.hostname {host:?}: 1-64 characters of [A-Za-z0-9.-]"));
    }
    if world.upper_size < 1 << 20 {
        return Err("world.upper_size: at least 1MiB".into());
    }
    if limits.memory < 8 << 20 {
        return Err("limits.memory: at least 8MiB".into());
    }
    if limits.pids < 2 {
        return Err("limits.pids: at least 2 (init and the command)".into());
    }
    if !(limits.cpus.is_finite() && limits.cpus > 0.0 && limits.cpus <= 4096.0) {
        return Err("limits.cpus: a number of cores above 0".into());
    }
    if limits.nofile < 16 {
        return Err("limits.nofile: at least 16".into());
    }
    for p in fs.mask.iter().chain(&fs.expose) {
        check_absolute(p)?;
    }
    let relative = |p: &Path| {
        p.components().next().is_some() && p.components().all(|c| matches!(c, std::path::Component::Normal(_)))
    };
    for p in &fs.home_secrets {
        if !relative(p) {
            return Err(format!("fs.home_secrets: {} must be relative, without '..'", p.display()));
        }
    }
    for g in &fs.toolchains {
        if g.is_empty() {
            return Err("fs.toolchains: an empty list".into());
        }
        for p in g {
            if !relative(p) {
                return Err(format!("fs.toolchains: {} must be relative to a home, without '.' or '..'", p.display()));
            }
        }
    }
    for p in &fs.toolchain_writable {
        if !relative(p) {
            return Err(format!(
                "fs.toolchain_writable: {} must be relative to a home, without '.' or '..'",
                p.display()
            ));
        }
    }
    for l in &layers.require {
        if !KNOWN_LAYERS.contains(&l.as_str()) {
            return Err(format!("layers.require: unknown layer {l:?} (known: {})", KNOWN_LAYERS.join(" ")));
        }
    }
    Ok(())
}

/// A policy path must be absolute and normal (no `.`/`..`), so that what is
/// masked is exactly what was written.
pub fn check_absolute(p: &Path) -> Result<(), String> {
    use std::path::Component;
    let mut comps = p.components();
    if comps.next() != Some(Component::RootDir) {
        return Err(format!("{}: must be an absolute path", p.display()));
    }
    if comps.any(|c| !matches!(c, Component::Normal(_))) {
        return Err(format!("{}: must not contain '.' or '..'", p.display()));
    }
    Ok(())
}

#[cfg(test)]
#[path = "lib_tests.rs"]
mod tests;
