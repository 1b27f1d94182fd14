//! What a model reads: output capped (and the cap said), an fs_diff
//! summarized (counts, then paths up to a limit), the difference between
//! two diffs of one world (what one command changed).

use serde_json::{json, Map, Value};

/// How many paths a summary lists per kind of change.
pub const MAX_PATHS: usize = 50;

/// One stream's output as the model sees it: whole when it fits in
/// `cap`, else its first and last `cap / 2` bytes with what was left out.
pub struct Capped {
    head: Vec<u8>,
    tail: Vec<u8>,
    total: u64,
    cap: usize,
}

impl Capped {
    pub fn new(cap: usize) -> Capped {
        Capped { head: Vec::new(), tail: Vec::new(), total: 0, cap }
    }

    pub fn push(&mut self, data: &[u8]) {
        self.total += data.len() as u64;
        let half = self.cap / 2;
        let take = (self.cap - half).saturating_sub(self.head.len()).min(data.len());
        self.head.extend_from_slice(&data[..take]);
        let rest = &data[take..];
        if rest.is_empty() {
            return;
        }
        self.tail.extend_from_slice(rest);
        if self.tail.len() > half * 2 {
            let cut = self.tail.len() - half;
            self.tail.drain(..cut);
        }
    }

    /// `{text, bytes, truncated, cap}`: `text` is lossy UTF-8 with a
    /// marker where bytes were left out.
    pub fn value(&self) -> Value {
        let half = self.cap / 2;
        let tail = &self.tail[self.tail.len().saturating_sub(half)..];
        let shown = (self.head.len() + tail.len()) as u64;
        let truncated = shown < self.total;
        let mut text = String::from_utf8_lossy(&self.head).into_owned();
        if truncated {
            text.push_str(&format!(
                "\n[... {} bytes left out: at most {} bytes are shown, the first and last {} ...]\n",
                self.total - shown,
                self.cap,
                half
            ));
        }
        text.push_str(&String::from_utf8_lossy(tail));
        json!({"text": text, "bytes": self.total, "truncated": truncated, "cap_bytes": self.cap})
    }
}

/// A path of a diff entry (raw bytes said as base64 when not UTF-8).
fn path_of(e: &Value) -> String {
    match e["path"].as_str() {
        Some(p) => p.to_string(),
        None => format!("(base64) {}", e["path_b64"].as_str().unwrap_or("?")),
    }
}

/// The summary of an fs_diff: totals, then up to `MAX_PATHS` paths per kind
/// (`more` counts the rest), and its flags.
pub fn fs_diff(d: &Value) -> Value {
    if d.is_null() {
        return Value::Null;
    }
    let mut out = Map::new();
    for kind in ["added", "modified", "deleted"] {
        let list = d[kind].as_array().cloned().unwrap_or_default();
        let shown: Vec<Value> = list
            .iter()
            .take(MAX_PATHS)
            .map(|e| {
                let mut v = json!({"path": path_of(e), "kind": e["kind"]});
                if let Some(c) = e.get("changes") {
                    v["changes"] = c.clone();
                }
                v
            })
            .collect();
        out.insert(
            kind.to_string(),
            json!({"count": list.len(), "paths": shown, "more": list.len().saturating_sub(MAX_PATHS)}),
        );
    }
    out.insert("flags".into(), d["flags"].clone());
    out.insert("bytes".into(), d["totals"]["bytes"].clone());
    out.insert("truncated".into(), d["truncated"].clone());
    Value::Object(out)
}

/// A decision (`{effect, rule, reason, risk}`) in one line.
pub fn decision_line(d: &Value) -> String {
    format!(
        "{} (rule {}, risk {}): {}",
        d["effect"].as_str().unwrap_or("?"),
        d["rule"].as_str().unwrap_or("?"),
        d["risk"],
        d["reason"].as_str().unwrap_or("")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_is_capped_head_and_tail_and_says_so() {
        let mut c = Capped::new(8);
        c.push(b"0123");
        c.push(b"456789abcdef");
        let v = c.value();
        assert_eq!(v["bytes"], 16);
        assert_eq!(v["truncated"], true);
        let t = v["text"].as_str().unwrap();
        assert!(t.starts_with("0123\n[... 8 bytes left out"), "{t}");
        assert!(t.ends_with("cdef"), "{t}");
        let mut whole = Capped::new(8);
        whole.push(b"abc");
        assert_eq!(whole.value()["text"], "abc");
        assert_eq!(whole.value()["truncated"], false);
    }
}
