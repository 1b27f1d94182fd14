//! Loading a policy: the built-in one, a file (whole, or for a world's run
//! with its head cached), or text.

use crate::rules::CommandRules;
use crate::{
    run_cache, Policy, PolicyError, RawPolicy, Seccomp, BUILTIN_HEAD_JSON, BUILTIN_SECCOMP, COMMANDS_HEADER,
    DEFAULT_POLICY,
};
use std::path::Path;
use std::sync::OnceLock;

/// FNV-1a (64 bits) of `text`: the name of a run's cache entry, never a
/// proof of what it holds (`run_cache.rs` compares the text itself).
fn fnv1a(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}

impl Policy {
    /// The compiled-in default policy. Its command rules' examples are
    /// checked by this crate's tests rather than at every load (the text
    /// cannot change after the build).
    ///
    /// Parsed once per process; every copy shares its command rules, which
    /// are compiled on first use (or by [`Policy::compile_commands`]).
    pub fn builtin() -> Policy {
        static BUILTIN: OnceLock<Policy> = OnceLock::new();
        BUILTIN
            .get_or_init(|| {
                // Every `cloche run` loads this: the `[commands]` section (most
                // of the file) is parsed and compiled when a command is first
                // classified.
                let split = DEFAULT_POLICY.find(COMMANDS_HEADER).map_or(DEFAULT_POLICY.len(), |i| i + 1);
                let (head, commands) = DEFAULT_POLICY.split_at(split);
                // The head, converted to JSON by build.rs (the same values:
                // `builtin_head_json_is_the_toml` checks it).
                let raw: RawPolicy = serde_json::from_str(BUILTIN_HEAD_JSON).expect("build.rs wrote the head's JSON");
                let mut p = Policy::from_raw(raw, head, "builtin", Seccomp::Beside(None), false)
                    .expect("the compiled-in default policy is valid (checked by a unit test)");
                p.commands = CommandRules::lazy(commands, p.secrets_of());
                p
            })
            .clone()
    }

    /// Compiles the command rules now rather than at the first
    /// classification (the daemon's spawner does it for the built-in
    /// policy before it forks any job: each job inherits them compiled).
    pub fn compile_commands(&self) {
        self.commands.get();
    }

    /// Loads a policy file; a relative seccomp profile path is taken relative
    /// to the file's directory.
    pub fn load(path: &Path) -> Result<Policy, PolicyError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| PolicyError::Read { path: path.to_path_buf(), source })?;
        let base = path.parent().unwrap_or(Path::new("."));
        Policy::from_toml(&text, &path.display().to_string(), Some(base))
    }

    /// Loads a policy file for a world's run (`cloche run --policy FILE`):
    /// as [`Policy::load`], every section parsed and checked and the
    /// command rules compiled, but their examples are not classified. A run
    /// never classifies; that check was about 6 of the 10-11 ms a policy
    /// file added to every `cloche run` (`cloche policy check --policy
    /// FILE` and `policy set` make it).
    pub fn load_for_run(path: &Path) -> Result<Policy, PolicyError> {
        Policy::load_for_run_cached(path, None)
    }

    /// As [`Policy::load_for_run`], with the policy's head (all but its
    /// rules) kept as JSON in `cache_dir` and read from there by later runs
    /// of the same text (`run_cache.rs`). The entry is named by the text's
    /// FNV-1a and length and holds the text it was made from, which a later
    /// run compares with its own: no cryptographic hash of the file at every
    /// run (sha256 cost a CPU feature probe, which traps to the hypervisor
    /// in a virtual machine), and two texts that share a name only replace
    /// each other's entry.
    pub fn load_for_run_cached(path: &Path, cache_dir: Option<&Path>) -> Result<Policy, PolicyError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| PolicyError::Read { path: path.to_path_buf(), source })?;
        let seccomp = Seccomp::Beside(Some(path.parent().unwrap_or(Path::new("."))));
        let origin = path.display().to_string();
        let Some(dir) = cache_dir else { return Policy::parse(&text, &origin, seccomp, false) };
        let name = format!("fnv1a-{:016x}-{}", fnv1a(&text), text.len());
        let cache = dir.join(format!("policy-{name}.head"));
        let found = run_cache::lookup(&cache, &name, text.as_bytes());
        run_cache::for_run(&text, text.as_bytes(), &name, &origin, seccomp, &cache, found)
    }

    /// Parses policy text whose seccomp profile, unless `builtin:default`,
    /// is `seccomp` (a profile kept with the policy, as the store does).
    pub fn from_toml_with_seccomp(text: &str, origin: &str, seccomp: Option<&str>) -> Result<Policy, PolicyError> {
        Policy::parse(text, origin, Seccomp::Given(seccomp), true)
    }

    /// The seccomp profile text when it is not the built-in one.
    pub fn custom_seccomp(&self) -> Option<&str> {
        (self.seccomp_origin != BUILTIN_SECCOMP).then_some(&*self.seccomp_json)
    }

    /// Parses and validates policy text. `base` resolves a relative seccomp
    /// profile path; without it only `builtin:default` is accepted. Every
    /// command rule's examples are classified and must hold.
    pub fn from_toml(text: &str, origin: &str, base: Option<&Path>) -> Result<Policy, PolicyError> {
        Policy::parse(text, origin, Seccomp::Beside(base), true)
    }
}
