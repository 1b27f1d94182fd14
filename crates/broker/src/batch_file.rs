//! Batch files: parsing (JSON or TOML, same fields) and validation.
//!
//! `{"agent": "a1", "project": "/abs/dir", "stop_on_failure": true, "world": "0123456789abcdef",
//!   "entries": [{"command": "make test", "cwd": "/abs/dir/sub", "env": {"K": "V"}, "timeout": 300}]}`
//!
//! Only `project` and `entries[].command` are required; unknown fields are
//! errors. Paths are normalized lexically (`//` and `.` removed; `..` refused).

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

/// Default for [`Limits::max_entries`].
pub const DEFAULT_MAX_ENTRIES: usize = 10;
/// Longest command accepted, in bytes.
pub const MAX_COMMAND: usize = 64 * 1024;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchFile {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    pub project: String,
    #[serde(default = "default_true")]
    pub stop_on_failure: bool,
    /// A kept world to run in (its id): the batch continues it, on top of
    /// what its earlier runs left, instead of starting a new world.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub world: Option<String>,
    pub entries: Vec<EntrySpec>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EntrySpec {
    pub command: String,
    /// Absolute, inside `project`; the project itself when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cwd: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    /// Seconds, > 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<u64>,
}

fn default_true() -> bool {
    true
}

/// What a batch may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_entries: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { max_entries: DEFAULT_MAX_ENTRIES }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Json,
    Toml,
}

/// Why a batch file was refused. Positions are 1-based.
#[derive(Debug, thiserror::Error)]
pub enum BatchFileError {
    #[error("batch file: {format} error at line {line}, column {column}: {msg}")]
    Syntax { format: &'static str, line: usize, column: usize, msg: String },
    #[error("batch file: {field}: {msg}")]
    Invalid { field: String, msg: String },
    #[error("batch file {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

fn invalid(field: impl Into<String>, msg: impl Into<String>) -> BatchFileError {
    BatchFileError::Invalid { field: field.into(), msg: msg.into() }
}

impl BatchFile {
    /// Parses and validates `text`.
    pub fn parse(text: &str, format: Format, limits: &Limits) -> Result<BatchFile, BatchFileError> {
        let file = match format {
            Format::Json => serde_json::from_str::<BatchFile>(text).map_err(|e| {
                let msg = e.to_string();
                let suffix = format!(" at line {} column {}", e.line(), e.column());
                let msg = msg.strip_suffix(&suffix).unwrap_or(&msg).to_string();
                BatchFileError::Syntax { format: "JSON", line: e.line(), column: e.column(), msg }
            })?,
            Format::Toml => toml::from_str::<BatchFile>(text).map_err(|e| {
                let start = e.span().map(|s| s.start).unwrap_or(0).min(text.len());
                let before = &text.as_bytes()[..start];
                let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
                let column = start - before.iter().rposition(|&b| b == b'\n').map(|p| p + 1).unwrap_or(0) + 1;
                BatchFileError::Syntax { format: "TOML", line, column, msg: e.message().trim().to_string() }
            })?,
        };
        file.validate(limits)
    }

    /// Reads, parses and validates the file at `path`: TOML when its name
    /// ends in `.toml`, JSON otherwise.
    pub fn from_path(path: &Path, limits: &Limits) -> Result<BatchFile, BatchFileError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| BatchFileError::Io { path: path.display().to_string(), source })?;
        let format = if path.extension().is_some_and(|e| e == "toml") { Format::Toml } else { Format::Json };
        BatchFile::parse(&text, format, limits)
    }

    /// Checks every field and returns the batch with normalized paths.
    pub fn validate(mut self, limits: &Limits) -> Result<BatchFile, BatchFileError> {
        if let Some(agent) = &self.agent {
            let ok = (1..=64).contains(&agent.len())
                && agent.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-@:".contains(&b));
            if !ok {
                return Err(invalid("agent", "must be 1 to 64 characters of A-Z a-z 0-9 . _ - @ :"));
            }
        }
        self.project = normalize_abs(&self.project).map_err(|m| invalid("project", m))?;
        if self.project == "/" {
            return Err(invalid("project", "/ is the root directory: it would expose every path the masks hide"));
        }
        if let Some(w) = &self.world {
            let id = w.len() == 16 && w.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
            if !id {
                return Err(invalid("world", "a kept world's id: 16 lower-case hex digits"));
            }
        }
        if self.entries.is_empty() {
            return Err(invalid("entries", "a batch needs at least one entry"));
        }
        if self.entries.len() > limits.max_entries {
            let msg = format!(
                "{} entries; at most {} are allowed (the policy's [batch] max_entries)",
                self.entries.len(),
                limits.max_entries
            );
            return Err(invalid("entries", msg));
        }
        for (i, e) in self.entries.iter_mut().enumerate() {
            let field = |f: &str| format!("entries[{i}].{f}");
            if e.command.trim().is_empty() {
                return Err(invalid(field("command"), "is empty"));
            }
            if e.command.contains('\0') {
                return Err(invalid(field("command"), "contains a NUL byte"));
            }
            if e.command.len() > MAX_COMMAND {
                return Err(invalid(field("command"), format!("longer than {MAX_COMMAND} bytes")));
            }
            if let Some(cwd) = &e.cwd {
                let cwd = normalize_abs(cwd).map_err(|m| invalid(field("cwd"), m))?;
                if !inside(&cwd, &self.project) {
                    return Err(invalid(field("cwd"), format!("{cwd} is outside the project {}", self.project)));
                }
                e.cwd = Some(cwd);
            }
            for (k, v) in &e.env {
                let valid_key = !k.is_empty()
                    && !k.as_bytes()[0].is_ascii_digit()
                    && k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
                if !valid_key {
                    return Err(invalid(field(&format!("env.{k:?}")), "names must match [A-Za-z_][A-Za-z0-9_]*"));
                }
                if v.contains('\0') {
                    return Err(invalid(field(&format!("env.{k}")), "value contains a NUL byte"));
                }
            }
            if e.timeout == Some(0) {
                return Err(invalid(field("timeout"), "must be at least 1 second"));
            }
        }
        Ok(self)
    }
}

/// `p` made absolute-normal lexically: starts with `/`, no NUL, no `..`;
/// empty and `.` components removed.
pub fn normalize_abs(p: &str) -> Result<String, String> {
    if p.contains('\0') {
        return Err("contains a NUL byte".into());
    }
    if !p.starts_with('/') {
        return Err(format!("{p:?} is not an absolute path"));
    }
    if p.len() > 4096 {
        return Err("longer than 4096 bytes".into());
    }
    let mut parts = Vec::new();
    for c in p.split('/') {
        match c {
            "" | "." => {}
            ".." => return Err(format!("{p:?} contains `..`")),
            c => parts.push(c),
        }
    }
    Ok(format!("/{}", parts.join("/")))
}

/// Whether normalized `path` is `root` or below it.
pub fn inside(path: &str, root: &str) -> bool {
    root == "/" || path == root || path.strip_prefix(root).is_some_and(|rest| rest.starts_with('/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json(t: &str) -> Result<BatchFile, BatchFileError> {
        BatchFile::parse(t, Format::Json, &Limits::default())
    }

    #[test]
    fn minimal_and_full() {
        let b = json(r#"{"project": "/p//x/.", "entries": [{"command": "ls"}]}"#).unwrap();
        assert_eq!(b.project, "/p/x");
        assert!(b.stop_on_failure && b.agent.is_none());
        let t = "agent = \"a1\"\nproject = \"/p\"\nstop_on_failure = false\n\n[[entries]]\ncommand = \"make\"\n\
                 cwd = \"/p/sub/\"\ntimeout = 3\nenv = { K = \"V\" }\n";
        let b = BatchFile::parse(t, Format::Toml, &Limits::default()).unwrap();
        assert_eq!(b.entries[0].cwd.as_deref(), Some("/p/sub"));
        assert_eq!(b.entries[0].env["K"], "V");
        assert!(!b.stop_on_failure);
    }

    #[test]
    fn errors_name_the_place() {
        let e = json("{\"project\": \"/p\",\n \"entries\": [{\"command\": \"ls\", \"bogus\": 1}]}").unwrap_err();
        assert!(matches!(e, BatchFileError::Syntax { line: 2, .. }), "{e}");
        assert!(e.to_string().contains("bogus"), "{e}");
        let e = BatchFile::parse(
            "project = \"/p\"\nentries = [{command = \"ls\", x = 1}]\n",
            Format::Toml,
            &Limits::default(),
        )
        .unwrap_err();
        assert!(matches!(e, BatchFileError::Syntax { line: 2, .. }), "{e}");
        let e = json(r#"{"project": "/p", "entries": [{"command": "ls", "cwd": "/p/../etc"}]}"#).unwrap_err();
        assert!(e.to_string().contains("entries[0].cwd"), "{e}");
        let e = json(r#"{"project": "/p", "entries": [{"command": "ls", "env": {"1A": "x"}}]}"#).unwrap_err();
        assert!(e.to_string().contains("entries[0].env"), "{e}");
        let e = json(r#"{"project": "/p", "entries": [{"command": "ls\u0000"}]}"#).unwrap_err();
        assert!(e.to_string().contains("NUL"), "{e}");
        let e = json(r#"{"project": "/p", "entries": [{"command": "ls", "timeout": 0}]}"#).unwrap_err();
        assert!(e.to_string().contains("entries[0].timeout"), "{e}");
        let e = json(r#"{"project": "/p", "entries": []}"#).unwrap_err();
        assert!(e.to_string().contains("entries"), "{e}");
        let e = json(r#"{"agent": "a b", "project": "/p", "entries": [{"command": "ls"}]}"#).unwrap_err();
        assert!(e.to_string().contains("agent"), "{e}");
        let e = json(r#"{"entries": [{"command": "ls"}]}"#).unwrap_err();
        assert!(e.to_string().contains("project"), "{e}");
        let e = json(r#"{"project": "//.", "entries": [{"command": "ls"}]}"#).unwrap_err();
        assert!(e.to_string().contains("project: / is the root directory"), "{e}");
    }

    #[test]
    fn inside_is_by_component() {
        assert!(inside("/p/x", "/p") && inside("/p", "/p") && inside("/any", "/"));
        assert!(!inside("/px", "/p") && !inside("/", "/p"));
    }
}
