//! The documents the service returns, as `cloche --json` prints them: each
//! with a `schema_version`. Their JSON Schemas (and those of the documents
//! that carry other crates' objects, [`crate::schema`]) are generated with
//! schemars into `docs/schemas/`.

use schemars::JsonSchema;
use serde::Serialize;

/// The version of every `--json` document's shape. Fields may be added
/// within a version; one renamed, removed or retyped makes a new version.
pub const SCHEMA_VERSION: u32 = 1;

/// `schema_version`: always [`SCHEMA_VERSION`].
#[derive(Clone, Copy, Debug, Default)]
pub struct Version;

impl Serialize for Version {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u32(SCHEMA_VERSION)
    }
}

impl JsonSchema for Version {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "SchemaVersion".into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({
            "description": "The version of this document's shape (fields may be added within a version).",
            "type": "integer",
            "const": SCHEMA_VERSION,
        })
    }
}

/// `cloche doctor --json`.
#[derive(Serialize, JsonSchema)]
pub struct Doctor {
    pub schema_version: Version,
    /// True when every required check passed (exit 0).
    pub ok: bool,
    /// How many required checks failed.
    pub failed: usize,
    pub checks: Vec<DoctorCheck>,
    /// The state directory's disk pool, where worlds' uppers and every kept
    /// world live.
    pub pool: PoolSpace,
}

/// The disk pool's space and health (`cloche doctor`).
#[derive(Serialize, JsonSchema, Default)]
pub struct PoolSpace {
    /// `<state>/pool.img`.
    pub image: String,
    /// The image exists (made by the first world on disk or kept).
    pub made: bool,
    /// Its size (it is sparse) and the bytes it takes on the state
    /// directory's filesystem.
    pub image_size: u64,
    pub image_allocated: u64,
    /// Mounted on `<state>/worlds`, through `device`.
    pub mounted: bool,
    pub device: Option<String>,
    /// The mounted pool is `pool.img` (false: an unnamed image made by an
    /// older cloche, whose worlds do not outlive a reboot).
    pub named: bool,
    pub read_only: bool,
    /// Why the image could not be attached, if it could not.
    pub attach_error: Option<String>,
    /// Errors btrfs counted on the pool's device (write, read, flush,
    /// corruption, generation).
    pub device_errors: Option<u64>,
    /// Bytes in use in the pool (worlds running, kept, spares, trash) and
    /// the pool's size.
    pub used: u64,
    pub size: u64,
    /// Kept worlds and the bytes their upper layers take, on disk and (not
    /// moved to disk) on tmpfs.
    pub kept_worlds: usize,
    pub kept_bytes: u64,
    pub kept_on_tmpfs: usize,
    pub kept_tmpfs_bytes: u64,
    /// Free bytes on the state directory's filesystem.
    pub host_free: u64,
}

#[derive(Serialize, JsonSchema)]
pub struct DoctorCheck {
    /// What was checked: `root`, `namespace`, `overlayfs`, `seccomp`, `cgroups`, `cloche-init`,
    /// `nftables`, `veth`, `address pool`, `resolver`, `forwarding`, ...
    pub name: String,
    pub ok: bool,
    /// Needed by the default policy: a failed required check fails doctor.
    pub required: bool,
    /// What was found, or how to fix it.
    pub detail: String,
}

/// `cloche batch run ID --dry-run --json`.
#[derive(Serialize, JsonSchema)]
pub struct DryRun {
    pub schema_version: Version,
    pub batch: String,
    pub entries: Vec<DryRunEntry>,
}

#[derive(Serialize, JsonSchema)]
pub struct DryRunEntry {
    pub id: String,
    pub command: String,
    /// Whether `batch run` would run it (pending and not denied).
    pub runs: bool,
}

/// `cloche autonomy enable|disable PROJECT --json`.
#[derive(Serialize, JsonSchema)]
pub struct Autonomy {
    pub schema_version: Version,
    /// The project directory (canonical when it exists).
    pub project: String,
    pub enabled: bool,
    /// The token, shown once (`enable` only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
}

/// `cloche worlds gc --json`.
#[derive(Serialize, JsonSchema)]
pub struct Gc {
    pub schema_version: Version,
    /// True with `--dry-run`: `discarded` lists what would go.
    pub dry_run: bool,
    pub discarded: Vec<Discarded>,
    /// Kept worlds that were still on a tmpfs (their move to the disk pool
    /// failed when they were kept), moved now, or why not.
    #[serde(default)]
    pub moved_to_disk: Vec<MovedToDisk>,
}

#[derive(Serialize, JsonSchema)]
pub struct MovedToDisk {
    pub world: String,
    /// Why it is still on its tmpfs; null once on disk.
    pub error: Option<String>,
}

#[derive(Serialize, JsonSchema)]
pub struct Discarded {
    pub world: String,
    /// Why the retention limit drops it.
    pub why: String,
}

/// `cloche discard ID --json`.
#[derive(Serialize, JsonSchema)]
pub struct Discard {
    pub schema_version: Version,
    pub world: String,
    /// The batch whose world it was, if any.
    pub batch: Option<String>,
}

/// `cloche worlds fork ID --json`.
#[derive(Serialize, JsonSchema)]
pub struct Fork {
    pub schema_version: Version,
    /// The new world: a copy of the original as it was, files and history.
    pub world: String,
    /// The world it was forked from (left as it was).
    pub forked_from: String,
    /// The new world's directory.
    #[schemars(with = "String")]
    pub path: std::path::PathBuf,
    /// Its owner (`uid:N`), when a caller other than root made it.
    pub owner: Option<String>,
}

/// `cloche policy set|unset --json`.
#[derive(Serialize, JsonSchema)]
pub struct PolicyBinding {
    pub schema_version: Version,
    /// `project` (a directory and what is below it) or `default`.
    pub scope: String,
    /// The project directory, for scope `project`.
    pub project: Option<String>,
    /// The stored policy version now bound (its sha256 id); null after `unset`.
    pub policy: Option<String>,
}

/// `cloche audit verify --json`.
#[derive(Serialize, JsonSchema)]
pub struct AuditVerify {
    pub schema_version: Version,
    /// The log verified.
    pub log: String,
    /// True when the whole chain holds (exit 0); false names the first bad line (exit 1).
    pub ok: bool,
    /// Records checked (when `ok`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub entries: Option<u64>,
    /// Hash of the last record (when `ok`): keep it elsewhere to detect a later truncation.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub head: Option<String>,
    /// The first bad line, 1-based (when not `ok`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<u64>,
    /// Why that line is bad.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub why: Option<String>,
}

/// `cloche audit recover --json`.
#[derive(Serialize, JsonSchema)]
pub struct AuditRecover {
    pub schema_version: Version,
    pub log: String,
    /// Bytes of the torn last line set aside.
    pub torn_bytes: u64,
    /// Which line was torn.
    pub torn_line: u64,
    /// Where the torn bytes were saved.
    pub saved_to: String,
    /// Sequence number of the `recovered` record appended.
    pub seq: u64,
}
