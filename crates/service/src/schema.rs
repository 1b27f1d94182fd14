//! The JSON Schemas of every `--json` document, generated with schemars.
//!
//! The documents cloche composes itself are the types of `crate::output`
//! and the run report (`crate::report::Report`).
//! The others carry objects of other crates (the fs_diff, batch views,
//! policy decisions, kept worlds), serialized by those crates: they are
//! described here by shape-only types, never built, whose fields are the
//! contract of docs/formats.md. Objects allow fields beyond those listed
//! (fields may be added within a version). `tests/cli.rs` checks real
//! outputs against the files; the unit test below keeps the files equal to
//! what these types generate (`CLOCHE_WRITE_SCHEMAS=1 cargo test -p
//! cloche-service schemas` writes them).

// The shape-only types are read by schemars alone.
#![allow(dead_code)]

use crate::output::{self, Version};
use schemars::{JsonSchema, Schema};
use std::collections::BTreeMap;

/// Every document: its file name in docs/schemas (without `.json`) and its schema.
pub fn all() -> Vec<(&'static str, Schema)> {
    use schemars::schema_for;
    vec![
        ("run-report", schema_for!(crate::report::Report)),
        ("doctor", schema_for!(output::Doctor)),
        ("batch", schema_for!(Batch)),
        ("batch-list", schema_for!(BatchList)),
        ("batch-dry-run", schema_for!(output::DryRun)),
        ("history", schema_for!(History)),
        ("history-stats", schema_for!(HistoryStats)),
        ("autonomy", schema_for!(output::Autonomy)),
        ("worlds", schema_for!(Worlds)),
        ("world", schema_for!(World)),
        ("worlds-gc", schema_for!(output::Gc)),
        ("fork", schema_for!(output::Fork)),
        ("discard", schema_for!(output::Discard)),
        ("diff", schema_for!(Diff)),
        ("commit", schema_for!(Commit)),
        ("policy-check", schema_for!(PolicyCheck)),
        ("policy-show", schema_for!(PolicyShow)),
        ("policy-list", schema_for!(PolicyList)),
        ("policy-binding", schema_for!(output::PolicyBinding)),
        ("audit-verify", schema_for!(output::AuditVerify)),
        ("audit-recover", schema_for!(output::AuditRecover)),
        ("agents", schema_for!(crate::agents::AgentList)),
        ("agent", schema_for!(crate::agents::Agent)),
    ]
}

/// Milliseconds.
#[derive(JsonSchema)]
pub(crate) struct Timings {
    setup_ms: f64,
    run_ms: f64,
    diff_ms: f64,
    teardown_ms: f64,
    total_ms: f64,
}

/// `{"mode": "none", ...}` for loopback only, `scoped` with `--net allow=`.
#[derive(JsonSchema)]
pub(crate) struct Network {
    #[schemars(regex(pattern = r"^(none|scoped)$"))]
    mode: String,
    allowed: Vec<AllowedFlow>,
    denied: Vec<DeniedFlow>,
    #[serde(default)]
    address: Option<String>,
    #[serde(default)]
    address6: Option<String>,
    #[serde(default)]
    denied_names: Vec<DeniedName>,
    #[serde(default)]
    dropped: Option<BTreeMap<String, u64>>,
}

#[derive(JsonSchema)]
struct AllowedFlow {
    #[serde(default)]
    dst: Option<String>,
    ip: String,
    port: Option<u16>,
    proto: String,
    packets: u64,
    bytes: u64,
}

#[derive(JsonSchema)]
struct DeniedFlow {
    ip: String,
    port: u16,
    proto: String,
    attempts: u64,
}

#[derive(JsonSchema)]
struct DeniedName {
    name: String,
    #[serde(default)]
    ip: Option<String>,
    reason: String,
}

/// What a world changed (docs/formats.md, *fs_diff*).
#[derive(JsonSchema)]
pub(crate) struct FsDiff {
    added: Vec<FsEntry>,
    modified: Vec<FsEntry>,
    deleted: Vec<FsEntry>,
    /// Paths written but left as the base has them: not a change, never
    /// committed (`path`, `kind`, and `changes: ["mtime"]` when re-dated).
    #[serde(default)]
    touched: Vec<FsEntry>,
    flags: Vec<PathWhy>,
    totals: Totals,
    truncated: bool,
}

#[derive(JsonSchema)]
struct Totals {
    added: u64,
    modified: u64,
    deleted: u64,
    bytes: u64,
    /// Every touched path, also those the `touched` list leaves out.
    #[serde(default)]
    touched: u64,
}

#[derive(JsonSchema)]
#[serde(rename_all = "lowercase")]
enum Kind {
    File,
    Dir,
    Symlink,
    Char,
    Block,
    Fifo,
    Socket,
}

/// One changed path: `path`, or `path_b64` when it is not UTF-8.
#[derive(JsonSchema)]
#[schemars(extend("anyOf" = [{"required": ["path"]}, {"required": ["path_b64"]}]))]
struct FsEntry {
    #[serde(default)]
    path: Option<String>,
    #[serde(default)]
    path_b64: Option<String>,
    kind: Kind,
    /// Modified entries: `content`, `type`, `mode`, `owner`, `mtime`, `target`.
    #[serde(default)]
    changes: Vec<String>,
    #[serde(default)]
    size: Option<u64>,
    /// Four octal digits.
    #[serde(default)]
    #[schemars(regex(pattern = r"^[0-7]{4}$"))]
    mode: Option<String>,
    #[serde(default)]
    uid: Option<u32>,
    #[serde(default)]
    gid: Option<u32>,
    #[serde(default)]
    #[schemars(regex(pattern = r"^[0-9a-f]{64}$"))]
    sha256: Option<String>,
    #[serde(default)]
    target: Option<String>,
    #[serde(default)]
    target_b64: Option<String>,
    #[serde(default)]
    rdev: Option<String>,
    #[serde(default)]
    links_to: Option<String>,
    #[serde(default)]
    links_to_b64: Option<String>,
    /// `cloche diff --json`: the batch entries that changed it.
    #[serde(default)]
    entries: Vec<String>,
}

/// A path (or `path_b64`) and why it is listed.
#[derive(JsonSchema)]
#[schemars(extend("anyOf" = [{"required": ["path"]}, {"required": ["path_b64"]}]))]
struct PathWhy {
    #[serde(default)]
    path: Option<String>,
    #[serde(default)]
    path_b64: Option<String>,
    why: String,
}

#[derive(JsonSchema)]
#[serde(rename_all = "lowercase")]
enum Effect {
    Allow,
    Review,
    Deny,
}

#[derive(JsonSchema)]
#[serde(rename_all = "snake_case")]
enum BatchState {
    Pending,
    Approved,
    Rejected,
    Running,
    Completed,
    Failed,
    Cancelled,
    Expired,
    Committed,
    PartiallyCommitted,
    Discarded,
}

#[derive(JsonSchema)]
#[serde(rename_all = "snake_case")]
enum EntryState {
    Pending,
    Skipped,
    Running,
    Succeeded,
    Failed,
    TimedOut,
    Cancelled,
}

#[derive(JsonSchema)]
#[serde(rename_all = "snake_case")]
enum Category {
    Ok,
    NotFound,
    Permission,
    Timeout,
    Resource,
    Network,
    Syntax,
    Runtime,
}

#[derive(JsonSchema)]
struct EntryDecision {
    effect: Effect,
    rule: String,
    reason: String,
    risk: u8,
}

/// `cloche batch show|submit|approve|reject|cancel|run ID --json`: the
/// batch as it is after the command.
#[derive(JsonSchema)]
struct Batch {
    schema_version: Version,
    id: String,
    state: BatchState,
    agent: Option<String>,
    submitter: String,
    project: String,
    stop_on_failure: bool,
    created: String,
    updated: String,
    /// The strictest of the entries' effects.
    decision: Effect,
    approved_by: Option<String>,
    approved_at: Option<String>,
    /// When the approval expires: the run must start before.
    expires_at: Option<String>,
    /// How long an approval stays valid before the run starts, in seconds
    /// (the policy's `[batch] approval_ttl` when it was submitted).
    approval_ttl: Option<u64>,
    reason: Option<String>,
    runner: Option<String>,
    /// The policy version it was classified with and runs with.
    policy: String,
    world: Option<String>,
    /// The kept world it runs in (`"world"` in its file), continuing it.
    #[serde(default)]
    continues: Option<String>,
    entries: Vec<BatchEntry>,
}

#[derive(JsonSchema)]
struct BatchEntry {
    id: String,
    index: u64,
    command: String,
    cwd: String,
    env: BTreeMap<String, String>,
    timeout: Option<u64>,
    state: EntryState,
    decision: EntryDecision,
    note: Option<String>,
    exit_code: Option<i32>,
    category: Option<Category>,
    duration_ms: Option<u64>,
    stdout_sha256: Option<String>,
    stderr_sha256: Option<String>,
    stdout_truncated: Option<bool>,
    timed_out: Option<bool>,
}

/// `cloche batch list --json`, newest first.
#[derive(JsonSchema)]
struct BatchList {
    schema_version: Version,
    batches: Vec<BatchSummary>,
}

#[derive(JsonSchema)]
struct BatchSummary {
    id: String,
    state: BatchState,
    agent: Option<String>,
    project: String,
    created: String,
    decision: Effect,
    /// Number of entries.
    entries: u64,
    /// How long an approval stays valid before the run starts, in seconds.
    approval_ttl: Option<u64>,
    /// When the approval given expires (the run must start before).
    expires_at: Option<String>,
}

/// `cloche history [QUERY] --json`, newest first.
#[derive(JsonSchema)]
struct History {
    schema_version: Version,
    entries: Vec<HistoryItem>,
}

#[derive(JsonSchema)]
struct HistoryItem {
    batch: String,
    entry: String,
    command: String,
    state: EntryState,
    exit_code: Option<i32>,
    duration_ms: Option<i64>,
}

/// `cloche history --stats --json`.
#[derive(JsonSchema)]
struct HistoryStats {
    schema_version: Version,
    commands: Vec<CommandStats>,
}

#[derive(JsonSchema)]
struct CommandStats {
    command: String,
    runs: u64,
    /// 0 to 1.
    success_rate: f64,
    mean_duration_ms: Option<f64>,
}

/// `cloche worlds list --json`, oldest first.
#[derive(JsonSchema)]
struct Worlds {
    schema_version: Version,
    worlds: Vec<KeptWorld>,
}

/// `cloche worlds show ID --json`.
#[derive(JsonSchema)]
struct World {
    schema_version: Version,
    #[serde(flatten)]
    world: KeptWorld,
}

#[derive(JsonSchema)]
struct KeptWorld {
    id: String,
    /// `kept`, `interrupted`, or `running` (a run continues it now).
    state: String,
    /// `batch:<id>` for a batch's world; `uid:N` for a world a daemon's
    /// caller kept or forked.
    owner: Option<String>,
    /// Batches that continued it (`"world"` in their file).
    #[serde(default)]
    batches: Vec<String>,
    /// The world it was forked from.
    #[serde(default)]
    forked_from: Option<String>,
    /// When its last run ended, ms since the epoch.
    #[serde(default)]
    updated_ms: u64,
    /// Its runs, in order (none for a world kept before runs were recorded).
    #[serde(default)]
    runs: Vec<WorldRun>,
    cwd: Option<String>,
    argv: Vec<String>,
    exit_code: Option<i32>,
    /// Seconds since the epoch.
    created: u64,
    created_ms: u64,
    /// Bytes its upper layers hold.
    size: u64,
    /// `disk` (its subvolume of the state directory's disk pool) or `tmpfs`
    /// (memory: it could not be moved to disk, see `store_error`).
    store: String,
    /// Why a world kept on a tmpfs is still there.
    store_error: Option<String>,
    path: String,
    uppers: Vec<Upper>,
}

#[derive(JsonSchema)]
struct Upper {
    mount: String,
    upper: String,
}

/// One run of a kept world (`runs.jsonl` in its directory).
#[derive(JsonSchema)]
struct WorldRun {
    /// 1 for the run that made the world, then 2, 3, ...
    run: u32,
    /// `run` (one command) or `batch`.
    kind: String,
    batch: Option<String>,
    /// The command's argv, or the batch's entries' commands.
    command: Vec<String>,
    actor: Option<String>,
    policy: Option<String>,
    started_ms: u64,
    ended_ms: u64,
    exit_code: i32,
    /// What this run changed itself.
    changes: Totals,
}

/// `cloche diff ID --json`: the fs_diff with review flags and attribution.
#[derive(JsonSchema)]
struct Diff {
    schema_version: Version,
    #[serde(flatten)]
    fs_diff: FsDiff,
    world: String,
    batch: Option<String>,
    /// The commit roots.
    roots: Vec<String>,
}

/// `cloche commit ID --json`.
#[derive(JsonSchema)]
struct Commit {
    schema_version: Version,
    applied: Vec<Applied>,
    refused: Vec<PathWhy>,
    conflicts: Vec<PathWhy>,
    not_committed: Vec<PathWhy>,
    #[serde(default)]
    forced: Vec<PathWhy>,
    #[serde(default)]
    stripped: Vec<PathWhy>,
    /// Set when the commit stopped: `applied` is exactly what reached the host.
    #[serde(default)]
    error: Option<String>,
}

#[derive(JsonSchema)]
struct Applied {
    path: String,
    action: String,
    #[serde(default)]
    sha256: Option<String>,
}

/// `cloche policy check --json CMD`.
#[derive(JsonSchema)]
struct PolicyCheck {
    schema_version: Version,
    /// Where the policy came from.
    policy: String,
    effect: Effect,
    rule: String,
    reason: String,
    /// 0 to 100.
    risk: u8,
    risks: BTreeMap<String, String>,
    commands: Vec<SimpleCommand>,
}

#[derive(JsonSchema)]
struct SimpleCommand {
    argv: Vec<String>,
    #[serde(default)]
    assigns: Vec<String>,
    redirects: Vec<BTreeMap<String, serde_json::Value>>,
    #[serde(default)]
    via: Vec<String>,
    effect: Effect,
    rule: String,
    reason: String,
    risk: u8,
}

/// `cloche policy show --json`.
#[derive(JsonSchema)]
struct PolicyShow {
    schema_version: Version,
    policy: String,
    unknown: BTreeMap<String, serde_json::Value>,
    unresolved: BTreeMap<String, serde_json::Value>,
    rules: Vec<BTreeMap<String, serde_json::Value>>,
}

/// `cloche policy list --json`.
#[derive(JsonSchema)]
struct PolicyList {
    schema_version: Version,
    /// The default policy version (`builtin` when none is bound).
    default: String,
    /// Project directory → policy version.
    projects: BTreeMap<String, String>,
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    fn dir() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs/schemas")
    }

    /// docs/schemas holds exactly what the types generate.
    #[test]
    fn schemas_are_current() {
        let write = std::env::var_os("CLOCHE_WRITE_SCHEMAS").is_some();
        let mut stale = Vec::new();
        for (name, schema) in super::all() {
            let path = dir().join(format!("{name}.json"));
            let text = serde_json::to_string_pretty(&schema).unwrap() + "\n";
            if write {
                std::fs::create_dir_all(dir()).unwrap();
                std::fs::write(&path, &text).unwrap();
            } else if std::fs::read_to_string(&path).ok().as_deref() != Some(text.as_str()) {
                stale.push(name);
            }
        }
        let names: Vec<String> = super::all().iter().map(|(n, _)| format!("{n}.json")).collect();
        let mut extra: Vec<String> = std::fs::read_dir(dir())
            .map(|d| d.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
            .unwrap_or_default();
        extra.retain(|f| !names.contains(f));
        assert!(
            stale.is_empty() && extra.is_empty(),
            "docs/schemas is not what the types generate: stale {stale:?}, unknown {extra:?} \
             (CLOCHE_WRITE_SCHEMAS=1 cargo test -p cloche-service schemas)"
        );
    }
}
