//! A Server-Sent Events client nobody here wrote: `curl --unix-socket -N`
//! run as any uid ([`SseClient`]), its output parsed into frames as it
//! arrives (the format's own rules: fields up to an empty line, comments
//! starting with `:`). Killed and reaped on drop.

use crate::*;
use std::io::BufRead;
use std::os::unix::process::CommandExt;
use std::process::Child;
use std::sync::mpsc;
use std::time::Instant;

/// One frame: its fields, or a comment.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Frame {
    pub id: Option<String>,
    pub event: Option<String>,
    pub data: Option<String>,
    pub comment: Option<String>,
}

impl Frame {
    /// The data as JSON (`Null` when there is none or it does not parse).
    pub fn json(&self) -> Value {
        self.data.as_deref().and_then(|d| serde_json::from_str(d).ok()).unwrap_or(Value::Null)
    }

    pub fn is(&self, event: &str) -> bool {
        self.event.as_deref() == Some(event)
    }
}

pub struct SseClient {
    child: Child,
    rx: mpsc::Receiver<Frame>,
    /// Every frame read so far, comments included.
    pub frames: Vec<Frame>,
}

impl SseClient {
    /// `curl -N` of `GET path` as `uid` (root when `None`) with `headers`
    /// ("Name: value"); returns once the stream's first frame (the
    /// daemon's `: subscribed` comment) has arrived, so the head has been
    /// read.
    pub fn open(socket: &Path, uid: Option<u32>, path: &str, headers: &[&str]) -> SseClient {
        let mut cmd = Command::new("curl");
        cmd.args(["-q", "-s", "-S", "-N", "--max-time", "120", "--unix-socket"]).arg(socket);
        for h in headers {
            cmd.args(["-H", h]);
        }
        cmd.arg(format!("http://localhost{path}"));
        if let Some(u) = uid {
            cmd.uid(u).gid(u).env("HOME", "/nonexistent");
        }
        cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::null());
        let mut child = cmd.spawn().expect("curl");
        let out = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut r = std::io::BufReader::new(out);
            let mut f = Frame::default();
            let mut line = String::new();
            loop {
                line.clear();
                match r.read_line(&mut line) {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                }
                let l = line.trim_end_matches(['\n', '\r']);
                if l.is_empty() {
                    if f != Frame::default() && tx.send(std::mem::take(&mut f)).is_err() {
                        return;
                    }
                    continue;
                }
                if let Some(c) = l.strip_prefix(':') {
                    // A comment is a frame of its own here.
                    let _ = tx.send(Frame { comment: Some(c.trim_start().to_string()), ..Frame::default() });
                    continue;
                }
                let (name, value) = l.split_once(':').unwrap_or((l, ""));
                let value = value.strip_prefix(' ').unwrap_or(value).to_string();
                match name {
                    "id" => f.id = Some(value),
                    "event" => f.event = Some(value),
                    "data" => {
                        f.data = Some(match f.data.take() {
                            Some(d) => format!("{d}\n{value}"),
                            None => value,
                        })
                    }
                    _ => {}
                }
            }
        });
        let mut c = SseClient { child, rx, frames: Vec::new() };
        c.until(|f| f.comment.is_some(), Duration::from_secs(20));
        assert_eq!(c.frames[0].comment.as_deref(), Some("subscribed"), "the stream's first frame: {:?}", c.frames);
        c
    }

    /// Reads frames until one matches `pred` (returned), within `within`.
    pub fn until(&mut self, pred: impl Fn(&Frame) -> bool, within: Duration) -> Frame {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(f) => {
                    self.frames.push(f.clone());
                    if pred(&f) {
                        return f;
                    }
                }
                Err(e) => panic!("no frame as awaited within {within:?} ({e}); frames so far: {:#?}", self.frames),
            }
        }
    }

    /// Reads whatever arrives for `d`.
    pub fn gather(&mut self, d: Duration) {
        let deadline = Instant::now() + d;
        while let Ok(f) = self.rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            self.frames.push(f);
        }
    }

    /// The frames with an event name (no comments).
    pub fn events(&self) -> Vec<Frame> {
        self.frames.iter().filter(|f| f.event.is_some()).cloned().collect()
    }

    /// Whether curl still runs (the stream is open).
    pub fn is_open(&mut self) -> bool {
        self.child.try_wait().ok().flatten().is_none()
    }
}

impl Drop for SseClient {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
