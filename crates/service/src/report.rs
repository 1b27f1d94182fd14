//! The report of a one-command world (`cloche run --report FILE` /
//! `--json`, docs/schemas/run-report.json), typed.

use crate::output::Version;
use cloche_world::diff::FsDiff;
use cloche_world::network::{AllowedFlow, DeniedFlow, NetScope};
use cloche_world::{Outcome, Spec, Timings};
use schemars::JsonSchema;
use serde::Serialize;
use std::ffi::OsString;
use std::io::Write;
use std::path::{Path, PathBuf};

/// `cloche run --report FILE` / `--json`: the world's report.
#[derive(Debug, Serialize, JsonSchema)]
#[schemars(rename = "RunReport")]
pub struct Report {
    pub schema_version: Version,
    /// The world's id.
    pub world: String,
    /// The command's exit code; 128+N when killed by signal N; 124 on timeout; 126/127.
    pub exit_code: i32,
    pub timed_out: bool,
    /// The signal that stopped cloche itself (the world was killed), else null.
    pub interrupted: Option<i32>,
    pub command: Vec<String>,
    #[schemars(with = "String")]
    pub cwd: PathBuf,
    #[schemars(with = "crate::schema::FsDiff")]
    pub fs_diff: FsDiff,
    #[schemars(with = "crate::schema::Network")]
    pub network: Network,
    /// The isolation layers enforced (`userns` among them when the world
    /// had a user namespace of its own).
    pub layers: Vec<String>,
    /// The world's user namespace: its uids and gids 0 to `count` - 1 are
    /// the host's from `uid` and `gid`. Null: it had none, its ids were the
    /// host's (policy `world.userns = false`).
    pub userns: Option<UsernsMap>,
    /// `v1`, `v2` or `none`.
    pub cgroup: String,
    pub limits: RunLimits,
    /// Any of `memory`, `pids`, `timeout`.
    pub limits_hit: Vec<String>,
    #[schemars(with = "crate::schema::Timings")]
    pub timings: Timings,
    /// The kept world's directory with `--keep` (or `--world`), else null.
    #[schemars(with = "Option<String>")]
    pub kept: Option<PathBuf>,
    /// In a kept world: this run's number in it (1: the run that made it;
    /// each run that continues it adds one), else null.
    pub world_run: Option<u32>,
    /// A run that continued a kept world (`--world`): what this run changed
    /// itself; `fs_diff` is then the world's whole change since its base
    /// (every run so far). Null otherwise (`fs_diff` is this run's).
    #[schemars(with = "Option<crate::schema::FsDiff>")]
    pub run_fs_diff: Option<FsDiff>,
    /// Why the world's output could not all be written, else null.
    pub output_error: Option<String>,
}

/// A world's id mapping (one extent, from its id 0).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, JsonSchema)]
pub struct UsernsMap {
    /// The host uid of the world's uid 0.
    pub uid: u32,
    /// The host gid of the world's gid 0.
    pub gid: u32,
    /// How many ids are mapped.
    pub count: u32,
    /// A world without root: the namespace is its caller's, who mapped
    /// their own uid and gid (`uid`, `gid`, count 1) to the world's 0.
    pub rootless: bool,
}

impl From<cloche_world::userns::WorldIds> for UsernsMap {
    fn from(i: cloche_world::userns::WorldIds) -> UsernsMap {
        UsernsMap { uid: i.uid, gid: i.gid, count: i.count, rootless: false }
    }
}

#[derive(Debug, Serialize, JsonSchema)]
pub struct RunLimits {
    pub memory: u64,
    pub pids: u64,
    pub cpus: f64,
    pub timeout_secs: Option<f64>,
    /// A world without root run with `--no-limits`: no memory, process or
    /// CPU limit was set (the values above were not applied).
    pub none: bool,
}

/// The world's network: its scope with `--net allow=`, else loopback only.
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum Network {
    /// What the world reached and was refused.
    Scoped(NetScope),
    /// Loopback only: nothing allowed; attempts are refused by the kernel
    /// (no route) and not counted.
    None { mode: &'static str, allowed: Vec<AllowedFlow>, denied: Vec<DeniedFlow> },
}

impl Report {
    /// The report of a finished world run from `spec` (its mounts already
    /// handed to their teardown).
    pub fn new(spec: &Spec, o: Outcome) -> Report {
        Report {
            schema_version: Version,
            world: o.world,
            exit_code: o.exit_code,
            timed_out: o.timed_out,
            interrupted: o.interrupted,
            command: spec.argv.iter().map(|a| a.to_string_lossy().into_owned()).collect(),
            cwd: spec.cwd.clone(),
            fs_diff: o.fs_diff,
            network: match o.network {
                Some(n) => Network::Scoped(n),
                None => Network::None { mode: "none", allowed: Vec::new(), denied: Vec::new() },
            },
            layers: o.layers,
            userns: o.userns.map(|i| UsernsMap { rootless: spec.rootless.is_some(), ..UsernsMap::from(i) }),
            cgroup: o.cgroup.to_string(),
            limits: RunLimits {
                memory: spec.limits.memory,
                pids: spec.limits.pids,
                cpus: spec.limits.cpus,
                timeout_secs: spec.timeout.map(|t| t.as_secs_f64()),
                none: spec.no_limits,
            },
            limits_hit: o.limits_hit,
            timings: o.timings,
            kept: o.kept,
            world_run: o.run,
            run_fs_diff: o.run_diff,
            output_error: o.output_error,
        }
    }

    /// The document as cloche writes it: pretty JSON, keys in order, a
    /// final newline.
    pub fn to_json(&self) -> std::io::Result<Vec<u8>> {
        // Through a `Value`: its maps sort their keys, as every document
        // cloche prints.
        let v = serde_json::to_value(self).map_err(std::io::Error::other)?;
        let mut text = serde_json::to_vec_pretty(&v).map_err(std::io::Error::other)?;
        text.push(b'\n');
        Ok(text)
    }

    /// Writes the report to `path` atomically (a temporary file in the same
    /// directory, then rename); `-` is stdout.
    pub fn write(&self, path: &Path) -> std::io::Result<()> {
        write_document(path, &self.to_json()?)
    }
}

/// Writes a document to `path`; `-` is stdout. `cloche run` writes a report
/// the daemon made with it too.
/// - A regular file, or a name that does not exist yet: atomically (a
///   temporary file in the same directory, then rename).
/// - A symbolic link to a regular file: that file, atomically, the link
///   kept (but a link into /proc, such as `/dev/stdout`, is written
///   through, after what the descriptor already holds).
/// - Anything else (`/dev/stdout`, `/dev/null`, a terminal, a FIFO, a link
///   to one): opened and written in place, never created or replaced (a
///   rename over it would put a regular file where the device or the link
///   was: `--report /dev/stdout` once replaced the host's `/dev/stdout`).
pub fn write_document(path: &Path, text: &[u8]) -> std::io::Result<()> {
    if path == Path::new("-") {
        return std::io::stdout().write_all(text);
    }
    match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => replace_atomically(path, text),
        Err(e) => Err(e),
        Ok(m) if m.file_type().is_file() => replace_atomically(path, text),
        Ok(m) if m.file_type().is_symlink() => match std::fs::canonicalize(path) {
            Ok(target) if !names_open_file(path) && std::fs::metadata(&target).is_ok_and(|t| t.is_file()) => {
                replace_atomically(&target, text)
            }
            _ => write_in_place(path, text),
        },
        Ok(m) if m.file_type().is_dir() => Err(std::io::Error::other("is a directory")),
        Ok(_) => write_in_place(path, text),
    }
}

/// `path` (a regular file, or none yet) replaced by `text` all at once.
fn replace_atomically(path: &Path, text: &[u8]) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = path.file_name().ok_or_else(|| std::io::Error::other("not a file name"))?;
    let mut tmp_name = OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(".{}.tmp", std::process::id()));
    let tmp = dir.join(tmp_name);
    let res = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(text)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if res.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    res
}

/// Whether link `path` names a file this process has open (`/dev/stdout`,
/// `/dev/fd/N`, `/proc/self/fd/N`: links into /proc): the report goes where
/// the descriptor points (after what was written there), and a file there
/// is never replaced (the descriptor would keep the old one).
fn names_open_file(path: &Path) -> bool {
    std::fs::read_link(path).is_ok_and(|t| t.starts_with("/proc"))
        || path.parent().and_then(|d| std::fs::canonicalize(d).ok()).is_some_and(|d| d.starts_with("/proc"))
}

/// `text` written into what `path` opens (a device, a pipe, a terminal, a
/// file through a descriptor's link), at its end: never created, truncated
/// or replaced.
fn write_in_place(path: &Path, text: &[u8]) -> std::io::Result<()> {
    let mut f = std::fs::OpenOptions::new().append(true).open(path)?;
    if f.metadata()?.file_type().is_dir() {
        return Err(std::io::Error::other("is a directory"));
    }
    f.write_all(text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use cloche_world::cgroup::Limits;
    use cloche_world::network::NetScope;
    use serde_json::json;
    use std::time::Duration;

    fn spec() -> Spec {
        let policy = cloche_policy::Policy::builtin();
        let profile = cloche_world::seccomp::Profile::from_json(&policy.seccomp_json).unwrap();
        Spec {
            argv: vec!["sh".into(), "-c".into(), "echo hi > /tmp/x".into()],
            env: Vec::new(),
            cwd: "/srv/project".into(),
            limits: Limits { memory: 512 << 20, pids: 64, cpus: 0.5 },
            timeout: Some(Duration::from_millis(1500)),
            upper: Default::default(),
            upper_size: 1 << 30,
            hostname: "cloche".into(),
            nofile: 1024,
            mask: Vec::new(),
            mask_homes: true,
            home_secrets: Vec::new(),
            expose: Vec::new(),
            toolchains: Default::default(),
            path_note: None,
            seccomp: cloche_world::seccomp::Program::compile(&profile).unwrap(),
            keep: true,
            keep_interrupted: false,
            owner: None,
            net: None,
            require: Vec::new(),
            hash: true,
            unread: false,
            terminal: Default::default(),
            user: None,
            userns: None,
            rootless: None,
            no_limits: false,
            delegated: None,
        }
    }

    fn outcome(network: Option<NetScope>) -> Outcome {
        let fs_diff: FsDiff = serde_json::from_value(json!({
            "added": [{"path": "/tmp/x", "kind": "file", "size": 3, "mode": "0644", "uid": 0, "gid": 0,
                       "sha256": "98ea6e4f216f2fb4b69fff9b3a44842c38686ca685f3f55dc48c5d3fb1107be4"}],
            "modified": [], "deleted": [], "flags": [],
            "totals": {"added": 1, "modified": 0, "deleted": 0, "bytes": 3},
            "truncated": false
        }))
        .unwrap();
        Outcome {
            world: "w-1234".into(),
            exit_code: 3,
            timed_out: false,
            interrupted: None,
            fs_diff,
            layers: vec!["mount".into(), "seccomp".into(), "userns".into()],
            userns: Some(cloche_world::userns::WorldIds { uid: 1879048192, gid: 1879113728, count: 65536 }),
            cgroup: "v1",
            limits_hit: vec!["pids".into()],
            timings: Default::default(),
            kept: Some("/var/lib/cloche/worlds/w-1234".into()),
            run: Some(1),
            run_diff: None,
            network,
            output_error: Some("stdout: broken pipe".into()),
            cpu_ms: None,
            teardown: Default::default(),
        }
    }

    /// The report as `cloche run` assembled it before it was typed.
    fn untyped(spec: &Spec, o: &Outcome) -> Vec<u8> {
        let report = json!({
            "schema_version": crate::output::SCHEMA_VERSION,
            "world": o.world,
            "exit_code": o.exit_code,
            "timed_out": o.timed_out,
            "interrupted": o.interrupted,
            "command": spec.argv.iter().map(|a| a.to_string_lossy()).collect::<Vec<_>>(),
            "cwd": spec.cwd,
            "fs_diff": o.fs_diff,
            "network": o.network.as_ref().map(|n| serde_json::to_value(n).unwrap_or_default())
                .unwrap_or_else(|| json!({"mode": "none", "allowed": [], "denied": []})),
            "layers": o.layers,
            "userns": {"uid": 1879048192, "gid": 1879113728, "count": 65536, "rootless": false},
            "cgroup": o.cgroup,
            "limits": {
                "memory": spec.limits.memory,
                "pids": spec.limits.pids,
                "cpus": spec.limits.cpus,
                "timeout_secs": spec.timeout.map(|t| t.as_secs_f64()),
                "none": false,
            },
            "limits_hit": o.limits_hit,
            "timings": o.timings,
            "kept": o.kept,
            "world_run": o.run,
            "run_fs_diff": o.run_diff,
            "output_error": o.output_error,
        });
        let mut text = serde_json::to_vec_pretty(&report).unwrap();
        text.push(b'\n');
        text
    }

    #[test]
    fn the_typed_report_is_the_document_cloche_wrote() {
        let spec = spec();
        let scoped = NetScope { mode: "scoped", address: Some("10.0.0.2".parse().unwrap()), ..Default::default() };
        for network in [None, Some(scoped)] {
            let o = outcome(network);
            let want = untyped(&spec, &o);
            let got = Report::new(&spec, o).to_json().unwrap();
            assert_eq!(String::from_utf8(got).unwrap(), String::from_utf8(want).unwrap());
        }
    }

    #[test]
    fn a_report_is_written_whole_or_not_at_all() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.json");
        let r = Report::new(&spec(), outcome(None));
        r.write(&path).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!((v["schema_version"].as_u64(), v["exit_code"].as_i64()), (Some(1), Some(3)));
        let e = r.write(&dir.path().join("gone/r.json")).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::NotFound);
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().flatten().map(|e| e.file_name()).collect();
        assert_eq!(names, ["r.json"], "no temporary file is left");
    }
}
