//! Trace spans: one JSON line per batch or entry (OpenTelemetry-shaped ids),
//! appended to a JSONL file (`spans.jsonl` in the state directory).

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::audit::{hex, MAX_LINE};
use crate::fsio::{self, Flock};

/// A batch span, or an entry span (whose parent is its batch's span).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SpanKind {
    Batch,
    #[default]
    Entry,
}

/// One span. Field names are a contract (docs/audit.md); absent optional
/// fields are left out of the JSON.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Span {
    /// 32 lowercase hex digits (16 random bytes), shared by a batch and its entries.
    pub trace_id: String,
    /// 16 lowercase hex digits (8 random bytes).
    pub span_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_span_id: Option<String>,
    pub kind: SpanKind,
    /// RFC 3339, UTC, milliseconds.
    pub start: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub world: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub batch: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entry: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    /// The command, redacted by [`SpanWriter::write`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cmd: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cwd: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<SpanPolicy>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approved_by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub layers: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fs_diff: Option<SpanFsDiff>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<SpanNetwork>,
}

/// The policy decision recorded on a span.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct SpanPolicy {
    /// `allow`, `review` or `deny`.
    pub decision: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub risk: Option<u32>,
}

/// A summary of an fs_diff: its totals, a few of its entries, its digest.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct SpanFsDiff {
    pub totals: FsTotals,
    /// The first entries of the fs_diff, as the fs_diff writes them.
    #[serde(default)]
    pub sample: Vec<Value>,
    /// `sha256:<hex>` of the whole fs_diff's canonical JSON ([`digest`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct FsTotals {
    pub added: u64,
    pub modified: u64,
    pub deleted: u64,
    pub bytes: u64,
}

/// The network scope of a span.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct SpanNetwork {
    /// The world's network: `none` (loopback only) or `scoped` (allowlist).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    #[serde(default)]
    pub allowed: Vec<NetAllowed>,
    #[serde(default)]
    pub denied: Vec<NetDenied>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct NetAllowed {
    /// The name the policy allowed, when the destination was named.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dst: Option<String>,
    pub ip: String,
    pub port: u16,
    #[serde(default)]
    pub packets: u64,
    #[serde(default)]
    pub bytes: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct NetDenied {
    pub ip: String,
    pub port: u16,
    #[serde(default)]
    pub attempts: u64,
}

impl Span {
    /// A new batch span: a new trace, started now.
    pub fn new_batch(batch: &str) -> Span {
        Span {
            trace_id: new_trace_id(),
            span_id: new_span_id(),
            kind: SpanKind::Batch,
            start: crate::time::now_rfc3339(),
            batch: Some(batch.to_string()),
            ..Span::default()
        }
    }

    /// A new entry span, child of this (batch) span, started now; it shares
    /// the trace and copies world, batch and agent.
    pub fn new_entry(&self, entry: &str) -> Span {
        Span {
            trace_id: self.trace_id.clone(),
            span_id: new_span_id(),
            parent_span_id: Some(self.span_id.clone()),
            kind: SpanKind::Entry,
            start: crate::time::now_rfc3339(),
            world: self.world.clone(),
            batch: self.batch.clone(),
            entry: Some(entry.to_string()),
            agent: self.agent.clone(),
            ..Span::default()
        }
    }

    /// Sets `end` to now.
    pub fn finish(&mut self) {
        self.end = Some(crate::time::now_rfc3339());
    }
}

/// `sha256:<hex>` of the canonical JSON of `value` (e.g. an fs_diff).
pub fn digest(value: &Value) -> Result<String, crate::canon::CanonError> {
    let canon = crate::canon::canonical_json(value)?;
    Ok(format!("sha256:{}", hex(&Sha256::digest(canon.as_bytes()))))
}

/// A new trace id: 16 random bytes as hex.
pub fn new_trace_id() -> String {
    random_id::<16>()
}

/// A new span id: 8 random bytes as hex.
pub fn new_span_id() -> String {
    random_id::<8>()
}

fn random_id<const N: usize>() -> String {
    loop {
        let mut buf = [0u8; N];
        fill_random(&mut buf);
        // All zeros is the invalid id in OpenTelemetry.
        if buf.iter().any(|&b| b != 0) {
            return hex(&buf);
        }
    }
}

/// getrandom(2); /dev/urandom if that fails; ids need uniqueness, not
/// secrecy, so a last resort mixes time, pid and a counter.
fn fill_random(buf: &mut [u8]) {
    let mut filled = 0;
    while filled < buf.len() {
        let rest = &mut buf[filled..];
        // SAFETY: the pointer and length describe `rest`, which we own mutably.
        let n = unsafe { libc::getrandom(rest.as_mut_ptr().cast(), rest.len(), 0) };
        if n > 0 {
            filled += n as usize;
        } else if io::Error::last_os_error().kind() != io::ErrorKind::Interrupted {
            break;
        }
    }
    if filled == buf.len() {
        return;
    }
    if let Ok(mut f) = File::open("/dev/urandom") {
        if f.read_exact(buf).is_ok() {
            return;
        }
    }
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let seed = format!(
        "{:?}{}{}",
        std::time::SystemTime::now(),
        std::process::id(),
        COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    );
    let h = Sha256::digest(seed.as_bytes());
    for (b, s) in buf.iter_mut().zip(h.iter().cycle()) {
        *b = *s;
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SpanError {
    #[error("span file {path}: {op}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("span file {path}: {why}")]
    Invalid { path: PathBuf, why: String },
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> SpanError + 'a {
    move |source| SpanError::Io { op, path: path.to_path_buf(), source }
}

/// Appends spans to a JSONL file (created 0600): one write(2) and an fsync
/// per span, under an exclusive flock so writers never interleave.
#[derive(Debug)]
pub struct SpanWriter {
    path: PathBuf,
    file: File,
}

impl SpanWriter {
    pub fn open(path: impl AsRef<Path>) -> Result<SpanWriter, SpanError> {
        let path = path.as_ref().to_path_buf();
        let file = fsio::open_append(&path).map_err(io_err("open", &path))?;
        Ok(SpanWriter { path, file })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes `span` (its `cmd` redacted) as one line and fsyncs it. After a
    /// torn line left by a crash, the new line starts on a line of its own.
    pub fn write(&mut self, span: &Span) -> Result<(), SpanError> {
        let redacted;
        let span = match span.cmd.as_deref().map(crate::redact::redact) {
            Some(std::borrow::Cow::Owned(cmd)) => {
                redacted = Span { cmd: Some(cmd), ..span.clone() };
                &redacted
            }
            _ => span,
        };
        let json = serde_json::to_string(span)
            .map_err(|e| SpanError::Invalid { path: self.path.clone(), why: e.to_string() })?;
        if json.len() + 2 > MAX_LINE {
            let why = format!("span of {} bytes is longer than {MAX_LINE}", json.len());
            return Err(SpanError::Invalid { path: self.path.clone(), why });
        }
        let _lock = Flock::take(&self.file, true).map_err(io_err("lock", &self.path))?;
        let len = self.file.metadata().map_err(io_err("stat", &self.path))?.len();
        let mut line = String::with_capacity(json.len() + 2);
        if len > 0 {
            let mut last = [0u8; 1];
            self.file.read_exact_at(&mut last, len - 1).map_err(io_err("read", &self.path))?;
            if last[0] != b'\n' {
                line.push('\n');
            }
        }
        line.push_str(&json);
        line.push('\n');
        fsio::append_line(&self.file, len, line.as_bytes()).map_err(io_err("append", &self.path))
    }
}

/// The spans of one batch, in file order, and the lines that could not be read.
#[derive(Debug, Clone, Default)]
pub struct BatchSpans {
    pub spans: Vec<Span>,
    /// 1-based numbers of lines that are not spans (torn, edited, too long).
    pub bad_lines: Vec<u64>,
}

/// Reads the spans of batch `batch` from the file at `path` (none if it is missing).
pub fn read_batch(path: &Path, batch: &str) -> Result<BatchSpans, SpanError> {
    let file = match fsio::open_read(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(BatchSpans::default()),
        Err(e) => return Err(io_err("open", path)(e)),
    };
    let len = {
        let _lock = Flock::take(&file, false).map_err(io_err("lock", path))?;
        file.metadata().map_err(io_err("stat", path))?.len()
    };
    let mut reader = BufReader::with_capacity(64 * 1024, file.take(len));
    let mut out = BatchSpans::default();
    let (mut buf, mut line) = (Vec::new(), 0u64);
    loop {
        buf.clear();
        let n = (&mut reader).take(MAX_LINE as u64 + 1).read_until(b'\n', &mut buf).map_err(io_err("read", path))?;
        if n == 0 {
            break;
        }
        line += 1;
        if buf.last() != Some(&b'\n') {
            // Too long (skip the rest of it) or torn at the end of the file.
            out.bad_lines.push(line);
            if n > MAX_LINE {
                loop {
                    buf.clear();
                    let more =
                        (&mut reader).take(64 * 1024).read_until(b'\n', &mut buf).map_err(io_err("read", path))?;
                    if more == 0 || buf.last() == Some(&b'\n') {
                        break;
                    }
                }
            }
            continue;
        }
        if buf.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        match serde_json::from_slice::<Span>(&buf) {
            Ok(span) if span.batch.as_deref() == Some(batch) => out.spans.push(span),
            Ok(_) => {}
            Err(_) => out.bad_lines.push(line),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn ids_are_hex_and_distinct() {
        let (t, s) = (new_trace_id(), new_span_id());
        assert_eq!((t.len(), s.len()), (32, 16));
        assert!(t.bytes().chain(s.bytes()).all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
        assert_ne!(new_span_id(), new_span_id());
    }

    #[test]
    fn write_and_read_back_a_batch() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("spans.jsonl");
        let mut w = SpanWriter::open(&path).unwrap();
        let mut batch = Span::new_batch("b1");
        batch.agent = Some("agent-7".into());
        batch.policy =
            Some(SpanPolicy { decision: "review".into(), rule: Some("pkg-install".into()), ..Default::default() });
        let mut entry = batch.new_entry("e1");
        entry.cmd = Some("curl -H 'Authorization: Bearer abc123def' https://x".into());
        entry.exit_code = Some(0);
        entry.layers = vec!["mnt".into(), "seccomp".into()];
        let diff = json!({"added": [{"path": "/a", "kind": "file", "size": 1}], "totals": {"added": 1}});
        entry.fs_diff = Some(SpanFsDiff {
            totals: FsTotals { added: 1, ..Default::default() },
            sample: vec![diff["added"][0].clone()],
            digest: Some(digest(&diff).unwrap()),
        });
        entry.network = Some(SpanNetwork {
            mode: Some("scoped".into()),
            allowed: vec![NetAllowed {
                dst: Some("registry.npmjs.org".into()),
                ip: "104.16.0.1".into(),
                port: 443,
                packets: 3,
                bytes: 900,
            }],
            denied: vec![NetDenied { ip: "10.0.0.1".into(), port: 22, attempts: 2 }],
        });
        entry.finish();
        batch.finish();
        w.write(&entry).unwrap();
        let long = "x".repeat(MAX_LINE + 100_000) + "\n";
        std::io::Write::write_all(&mut std::fs::OpenOptions::new().append(true).open(&path).unwrap(), long.as_bytes())
            .unwrap();
        w.write(&Span::new_batch("other")).unwrap();
        w.write(&batch).unwrap();
        // A torn line left by a crash does not swallow the next span.
        std::io::Write::write_all(&mut std::fs::OpenOptions::new().append(true).open(&path).unwrap(), b"{\"trace_id")
            .unwrap();
        let late = batch.new_entry("e2");
        w.write(&late).unwrap();

        let got = read_batch(&path, "b1").unwrap();
        assert_eq!(got.bad_lines, vec![2, 5]);
        assert_eq!(got.spans.len(), 3);
        assert_eq!(got.spans[0].cmd.as_deref(), Some("curl -H 'Authorization: Bearer ***' https://x"));
        assert_eq!(got.spans[0].parent_span_id.as_deref(), Some(batch.span_id.as_str()));
        assert_eq!(got.spans[0].trace_id, batch.trace_id);
        assert_eq!(got.spans[0].network, entry.network);
        assert_eq!(got.spans[1], batch);
        assert_eq!(got.spans[2].entry.as_deref(), Some("e2"));
        let first: Value =
            serde_json::from_str(std::fs::read_to_string(&path).unwrap().lines().next().unwrap()).unwrap();
        assert_eq!(first["kind"], "entry");
        assert_eq!(first["policy"], Value::Null, "an entry without its own policy leaves the field out");
        assert!(first["fs_diff"]["digest"].as_str().unwrap().starts_with("sha256:"));
        assert!(read_batch(&dir.path().join("missing"), "b1").unwrap().spans.is_empty());
    }
}
