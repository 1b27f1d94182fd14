//! The audit log: an append-only JSONL hash chain (`audit.jsonl`).
//!
//! Each line is the canonical JSON ([`crate::canon`]) of one record
//! `{"actor","batch","details","entry","event","hash","prev","seq","ts"}` with
//! `hash = hex(sha256(prev ‖ canonical JSON of the record without "hash"))`.
//! `seq` counts from 1 and equals the line number; `prev` is the previous
//! line's hash (64 zeros on line 1). Appends from any number of processes are
//! serialized by an exclusive flock(2) held for the read-last-line, write,
//! fsync sequence; [`AuditLog::append`] returns only after the fsync.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::canon::canonical_json;
use crate::fsio::{self, Flock};

/// `prev` of the first record.
pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";
/// Longest line accepted, newline included (a longer one is an error).
pub const MAX_LINE: usize = 1 << 20;

/// Event names used by cloche. The set is open: any name of 1 to 64
/// characters from `a-z`, `0-9`, `_` is accepted.
pub mod events {
    pub const SUBMITTED: &str = "submitted";
    pub const DECIDED: &str = "decided";
    pub const APPROVED: &str = "approved";
    pub const REJECTED: &str = "rejected";
    pub const STARTED: &str = "started";
    pub const ENTRY_FINISHED: &str = "entry_finished";
    pub const CANCELLED: &str = "cancelled";
    pub const COMMITTED: &str = "committed";
    pub const DISCARDED: &str = "discarded";
    pub const POLICY_CHANGED: &str = "policy_changed";
    pub const EXPIRED: &str = "expired";
    pub const FAILED: &str = "failed";
    pub const AGENT_REGISTERED: &str = "agent_registered";
    /// Written by [`super::recover`] after it set a torn last line aside.
    pub const RECOVERED: &str = "recovered";
    /// What the daemon settled after a crash (its processes killed, the
    /// worlds of dead runs kept or swept, the runs failed as interrupted).
    pub const CRASH_RECOVERED: &str = "crash_recovered";
}

/// One line of the log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    pub seq: u64,
    pub ts: String,
    pub event: String,
    pub actor: String,
    pub batch: Option<String>,
    pub entry: Option<String>,
    pub details: Value,
    pub prev: String,
    pub hash: String,
}

/// Errors of the writer and of the readers; each names the file.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("audit log {path}: {op}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The end of the log is not a valid record: nothing is appended until
    /// someone looks (`cloche audit verify`, and `cloche audit recover` for a
    /// torn last line).
    #[error("audit log {path}: line {line}: {why}")]
    Damaged { path: PathBuf, line: u64, why: String },
    /// The caller's arguments cannot be recorded.
    #[error("audit log {path}: {why}")]
    Invalid { path: PathBuf, why: String },
}

impl AuditError {
    /// True when the log file does not exist.
    pub fn is_not_found(&self) -> bool {
        matches!(self, AuditError::Io { source, .. } if source.kind() == io::ErrorKind::NotFound)
    }
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> AuditError + 'a {
    move |source| AuditError::Io { op, path: path.to_path_buf(), source }
}

/// The first bad line of a log (1-based) and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {why}")]
pub struct BadLine {
    pub line: u64,
    pub why: String,
}

#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error(transparent)]
    Bad(#[from] BadLine),
    #[error(transparent)]
    Io(#[from] AuditError),
}

/// A log whose chain holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifyReport {
    /// Number of records (= lines).
    pub lines: u64,
    /// Hash of the last record ([`GENESIS`] when empty): keep it elsewhere to
    /// detect a later truncation of the log.
    pub head: String,
}

/// A writer. Several may be open on one file, in one or many processes.
#[derive(Debug)]
pub struct AuditLog {
    path: PathBuf,
    file: File,
}

impl AuditLog {
    /// Opens or creates (mode 0600) the log at `path` and checks its last
    /// line: a damaged end is an error ([`AuditError::Damaged`]).
    pub fn open(path: impl AsRef<Path>) -> Result<AuditLog, AuditError> {
        let path = path.as_ref().to_path_buf();
        let file = fsio::open_append(&path).map_err(io_err("open", &path))?;
        let log = AuditLog { path, file };
        {
            let _lock = Flock::take(&log.file, true).map_err(io_err("lock", &log.path))?;
            log.last_state()?;
        }
        Ok(log)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one record and returns it once it is on disk (written with
    /// one write(2), then fsynced). Strings in `details` pass through
    /// [`crate::redact::redact_json`] first: a secret written here could
    /// never be removed without breaking the chain.
    pub fn append(
        &mut self,
        event: &str,
        actor: &str,
        batch: Option<&str>,
        entry: Option<&str>,
        mut details: Value,
    ) -> Result<Record, AuditError> {
        let invalid = |why: String| AuditError::Invalid { path: self.path.clone(), why };
        check_event(event).map_err(invalid)?;
        check_label("actor", Some(actor)).map_err(invalid)?;
        check_label("batch", batch).map_err(invalid)?;
        check_label("entry", entry).map_err(invalid)?;
        if !details.is_object() {
            return Err(invalid("details must be a JSON object".into()));
        }
        crate::redact::redact_json(&mut details);
        let _lock = Flock::take(&self.file, true).map_err(io_err("lock", &self.path))?;
        self.append_locked(event, actor, batch, entry, details)
    }

    /// With the exclusive lock held: reads the last record, writes the next.
    fn append_locked(
        &self,
        event: &str,
        actor: &str,
        batch: Option<&str>,
        entry: Option<&str>,
        details: Value,
    ) -> Result<Record, AuditError> {
        let (len, seq, prev) = self.last_state()?;
        let mut record = Record {
            seq: seq + 1,
            ts: crate::time::now_rfc3339(),
            event: event.to_string(),
            actor: actor.to_string(),
            batch: batch.map(str::to_string),
            entry: entry.map(str::to_string),
            details,
            prev,
            hash: String::new(),
        };
        let invalid = |why: String| AuditError::Invalid { path: self.path.clone(), why };
        let mut value = serde_json::to_value(&record).map_err(|e| invalid(e.to_string()))?;
        let obj = value.as_object_mut().ok_or_else(|| invalid("record is not an object".into()))?;
        obj.remove("hash");
        record.hash = chain_hash(&record.prev, &value).map_err(|e| invalid(format!("details: {e}")))?;
        let obj = value.as_object_mut().ok_or_else(|| invalid("record is not an object".into()))?;
        obj.insert("hash".into(), Value::String(record.hash.clone()));
        let mut line = canonical_json(&value).map_err(|e| invalid(format!("details: {e}")))?;
        line.push('\n');
        if line.len() > MAX_LINE {
            return Err(invalid(format!("record of {} bytes is longer than {MAX_LINE}", line.len())));
        }
        fsio::append_line(&self.file, len, line.as_bytes()).map_err(io_err("append", &self.path))?;
        Ok(record)
    }

    /// With a lock held: the file's length, the last record's seq and hash
    /// (0 and [`GENESIS`] for an empty file).
    fn last_state(&self) -> Result<(u64, u64, String), AuditError> {
        let len = self.file.metadata().map_err(io_err("stat", &self.path))?.len();
        if len == 0 {
            return Ok((0, 0, GENESIS.to_string()));
        }
        let damaged = |why: String| -> AuditError {
            let line = fsio::count_newlines(&self.file, len).map(|n| n + 1).unwrap_or(0);
            AuditError::Damaged { path: self.path.clone(), line, why }
        };
        let tail = fsio::tail_bytes(&self.file, len, 1, MAX_LINE as u64).map_err(io_err("read", &self.path))?;
        let Some((_, mut last)) = tail else {
            return Err(damaged(format!("last line longer than {MAX_LINE} bytes")));
        };
        if last.pop() != Some(b'\n') {
            return Err(damaged(TORN.into()));
        }
        let record = check_line(&last).map_err(|why| {
            let line = fsio::count_newlines(&self.file, len).unwrap_or(0);
            AuditError::Damaged { path: self.path.clone(), line, why }
        })?;
        Ok((len, record.seq, record.hash))
    }
}

const TORN: &str = "incomplete last line: no newline at the end of the file (a torn write or a truncated file)";

/// `hex(sha256(prev ‖ canonical_json(rest)))`.
pub fn chain_hash(prev: &str, rest: &Value) -> Result<String, crate::canon::CanonError> {
    let canon = canonical_json(rest)?;
    let mut h = Sha256::new();
    h.update(prev.as_bytes());
    h.update(canon.as_bytes());
    Ok(hex(&h.finalize()))
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 15) as usize] as char);
    }
    s
}

fn check_event(event: &str) -> Result<(), String> {
    let ok = !event.is_empty()
        && event.len() <= 64
        && event.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(format!("event {event:?} is not 1 to 64 characters of a-z, 0-9, _"))
    }
}

fn check_label(what: &str, value: Option<&str>) -> Result<(), String> {
    match value {
        Some(v) if v.is_empty() || v.len() > 256 || v.chars().any(char::is_control) => {
            Err(format!("{what} {v:?} must be 1 to 256 characters without control characters"))
        }
        _ => Ok(()),
    }
}

fn is_hash(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Checks one line (without its newline) on its own: JSON, fields, canonical
/// form, own hash. The chain (seq, prev) is the caller's.
fn check_line(bytes: &[u8]) -> Result<Record, String> {
    let text = std::str::from_utf8(bytes).map_err(|_| "not UTF-8".to_string())?;
    if text.trim().is_empty() {
        return Err("empty line".into());
    }
    let value: Value = serde_json::from_str(text).map_err(|e| format!("invalid JSON ({e})"))?;
    let Value::Object(mut obj) = value else {
        return Err("not a JSON object".into());
    };
    let record = fields(&obj)?;
    let canon = canonical_json(&Value::Object(obj.clone())).map_err(|e| e.to_string())?;
    if canon != text {
        return Err("not in canonical form (reformatted, duplicate keys or escapes changed)".into());
    }
    obj.remove("hash");
    let want = chain_hash(&record.prev, &Value::Object(obj)).map_err(|e| e.to_string())?;
    if want != record.hash {
        return Err(format!("hash mismatch: the content was changed (computed {}…)", &want[..12]));
    }
    Ok(record)
}

fn fields(obj: &Map<String, Value>) -> Result<Record, String> {
    let string = |k: &str| match obj.get(k) {
        Some(Value::String(s)) => Ok(s.clone()),
        Some(_) => Err(format!("field {k} is not a string")),
        None => Err(format!("field {k} is missing")),
    };
    let optional = |k: &str| match obj.get(k) {
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(Value::Null) => Ok(None),
        Some(_) => Err(format!("field {k} is neither a string nor null")),
        None => Err(format!("field {k} is missing")),
    };
    let seq = match obj.get("seq") {
        Some(v) => v.as_u64().filter(|&s| s > 0).ok_or("field seq is not a positive integer")?,
        None => return Err("field seq is missing".into()),
    };
    let details = match obj.get("details") {
        Some(v @ Value::Object(_)) => v.clone(),
        Some(_) => return Err("field details is not an object".into()),
        None => return Err("field details is missing".into()),
    };
    let record = Record {
        seq,
        ts: string("ts")?,
        event: string("event")?,
        actor: string("actor")?,
        batch: optional("batch")?,
        entry: optional("entry")?,
        details,
        prev: string("prev")?,
        hash: string("hash")?,
    };
    check_event(&record.event)?;
    if !is_hash(&record.prev) || !is_hash(&record.hash) {
        return Err("prev and hash must be 64 lowercase hex digits".into());
    }
    Ok(record)
}

/// Checks the whole chain of the log at `path`. The first bad line is
/// returned as [`VerifyError::Bad`]; I/O problems as [`VerifyError::Io`],
/// a missing file among them: nothing was verified, and a log that was
/// removed must not pass for an empty one.
pub fn verify(path: &Path) -> Result<VerifyReport, VerifyError> {
    let file = fsio::open_read(path).map_err(io_err("open", path))?;
    // Appends hold the exclusive lock: the length seen under the shared lock
    // covers only whole appends, and the bytes below it never change.
    let len = {
        let _lock = Flock::take(&file, false).map_err(io_err("lock", path))?;
        file.metadata().map_err(io_err("stat", path))?.len()
    };
    verify_reader(BufReader::with_capacity(64 * 1024, file.take(len))).map_err(|e| e.with_path(path))
}

/// [`verify`] on bytes already in memory.
pub fn verify_bytes(data: &[u8]) -> Result<VerifyReport, BadLine> {
    match verify_reader(data) {
        Ok(r) => Ok(r),
        Err(ReadError::Bad(b)) => Err(b),
        Err(ReadError::Io(e)) => Err(BadLine { line: 0, why: e.to_string() }),
    }
}

enum ReadError {
    Bad(BadLine),
    Io(io::Error),
}

impl ReadError {
    fn with_path(self, path: &Path) -> VerifyError {
        match self {
            ReadError::Bad(b) => VerifyError::Bad(b),
            ReadError::Io(e) => VerifyError::Io(io_err("read", path)(e)),
        }
    }
}

fn verify_reader(mut reader: impl BufRead) -> Result<VerifyReport, ReadError> {
    let mut buf = Vec::with_capacity(1024);
    let (mut line, mut prev) = (0u64, GENESIS.to_string());
    loop {
        buf.clear();
        let n = (&mut reader).take(MAX_LINE as u64 + 1).read_until(b'\n', &mut buf).map_err(ReadError::Io)?;
        if n == 0 {
            break;
        }
        line += 1;
        let bad = |why: String| ReadError::Bad(BadLine { line, why });
        if buf.pop() != Some(b'\n') {
            if n > MAX_LINE {
                return Err(bad(format!("line longer than {MAX_LINE} bytes")));
            }
            let json = if serde_json::from_slice::<Value>(&buf).is_ok() { "valid JSON" } else { "invalid JSON" };
            return Err(bad(format!("{TORN}; {json}")));
        }
        let record = check_line(&buf).map_err(bad)?;
        if record.seq != line {
            let hint = if record.seq > line { "a line before it was deleted" } else { "lines were moved or copied" };
            return Err(bad(format!("seq {} where {line} was expected ({hint})", record.seq)));
        }
        if record.prev != prev {
            let what =
                if line == 1 { "the genesis value (64 zeros)".to_string() } else { format!("line {}", line - 1) };
            return Err(bad(format!("prev does not match the hash of {what}")));
        }
        prev = record.hash;
    }
    Ok(VerifyReport { lines: line, head: prev })
}

/// The last `n` records of the log at `path`, oldest first. Each is checked
/// on its own (form and hash), not against the chain: use [`verify`].
pub fn tail(path: &Path, n: usize) -> Result<Vec<Record>, AuditError> {
    let file = fsio::open_read(path).map_err(io_err("open", path))?;
    let _lock = Flock::take(&file, false).map_err(io_err("lock", path))?;
    let len = file.metadata().map_err(io_err("stat", path))?.len();
    let limit = (n as u64).saturating_mul(MAX_LINE as u64);
    let tail = fsio::tail_bytes(&file, len, n, limit).map_err(io_err("read", path))?;
    let damaged = |why: String| AuditError::Damaged { path: path.to_path_buf(), line: 0, why };
    let Some((start, bytes)) = tail else {
        return Err(damaged(format!("a line longer than {MAX_LINE} bytes")));
    };
    if bytes.is_empty() {
        return Ok(Vec::new());
    }
    let first = fsio::count_newlines(&file, start).map_err(io_err("read", path))? + 1;
    if bytes.last() != Some(&b'\n') {
        let line = first + bytes.iter().filter(|&&b| b == b'\n').count() as u64;
        return Err(AuditError::Damaged { path: path.to_path_buf(), line, why: TORN.into() });
    }
    let mut records = Vec::new();
    for (i, raw) in bytes[..bytes.len() - 1].split(|&b| b == b'\n').enumerate() {
        let line = first + i as u64;
        records.push(check_line(raw).map_err(|why| AuditError::Damaged { path: path.to_path_buf(), line, why })?);
    }
    Ok(records)
}

/// What [`recover`] did.
#[derive(Debug, Clone)]
pub struct Recovered {
    /// The bytes of the torn line, now in `saved_to`.
    pub torn_bytes: u64,
    pub saved_to: PathBuf,
    /// The `recovered` record appended after the cut.
    pub record: Record,
}

/// Repairs a log whose only damage is a torn last line (no newline at the
/// end: a write cut short by a crash; its append never returned, so nothing
/// acted on it). The torn bytes are saved to `<path>.torn-<line>` (0600),
/// the file is cut back to the last whole line, and a `recovered` record
/// (actor `actor`, details with the torn size, sha256 and file) is appended.
/// Anything else is refused and left as it is.
pub fn recover(path: &Path, actor: &str) -> Result<Recovered, AuditError> {
    let invalid = |why: String| AuditError::Invalid { path: path.to_path_buf(), why };
    check_label("actor", Some(actor)).map_err(invalid)?;
    let file = fsio::open_append(path).map_err(io_err("open", path))?;
    let log = AuditLog { path: path.to_path_buf(), file };
    let _lock = Flock::take(&log.file, true).map_err(io_err("lock", path))?;
    let len = log.file.metadata().map_err(io_err("stat", path))?.len();
    let tail = fsio::tail_bytes(&log.file, len, 1, MAX_LINE as u64).map_err(io_err("read", path))?;
    let Some((start, torn)) = tail.filter(|(_, b)| !b.is_empty() && b.last() != Some(&b'\n')) else {
        return Err(invalid("nothing to recover: the log does not end with a torn line".into()));
    };
    // What comes before must be a sound end of chain.
    if start > 0 {
        let before = fsio::tail_bytes(&log.file, start, 1, MAX_LINE as u64).map_err(io_err("read", path))?;
        let before = before.map(|(_, b)| b).unwrap_or_default();
        if let Err(why) = check_line(before.strip_suffix(b"\n").unwrap_or(&before)) {
            let line = fsio::count_newlines(&log.file, start).map_err(io_err("read", path))?;
            return Err(AuditError::Damaged { path: path.to_path_buf(), line, why });
        }
    }
    let line = fsio::count_newlines(&log.file, start).map_err(io_err("read", path))? + 1;
    let saved_to = PathBuf::from(format!("{}.torn-{line}", path.display()));
    let mut side = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&saved_to)
        .map_err(io_err("save the torn line", &saved_to))?;
    io::Write::write_all(&mut side, &torn).and_then(|()| side.sync_all()).map_err(io_err("write", &saved_to))?;
    fsio::sync_parent(&saved_to).map_err(io_err("sync", &saved_to))?;
    log.file.set_len(start).map_err(io_err("truncate", path))?;
    log.file.sync_all().map_err(io_err("sync", path))?;
    let details = serde_json::json!({
        "torn_line": line,
        "torn_bytes": torn.len(),
        "torn_sha256": hex(&Sha256::digest(&torn)),
        "saved_to": saved_to.display().to_string(),
    });
    let record = log.append_locked(events::RECOVERED, actor, None, None, details)?;
    Ok(Recovered { torn_bytes: torn.len() as u64, saved_to, record })
}
