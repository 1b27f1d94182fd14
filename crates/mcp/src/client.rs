//! The daemon's client: HTTP/1.1 over its Unix socket (hyper's client
//! connection on a tokio `UnixStream`), one connection per request, JSON
//! answers and Server-Sent Events (docs/api/openapi.json,
//! docs/api/events.md).

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How long connecting and a request's head may take (the daemon answers
/// a head at once; a run's answer is a stream).
const HEAD_TIMEOUT: Duration = Duration::from_secs(60);

/// The largest JSON answer read (a diff of a large world is big, but bounded).
const MAX_ANSWER: usize = 64 << 20;

/// A refusal or a failure, as a model is told it.
#[derive(Debug, Clone)]
pub struct Failure {
    /// The daemon's status, when it answered.
    pub status: Option<u16>,
    pub message: String,
}

impl Failure {
    fn local(message: impl Into<String>) -> Failure {
        Failure { status: None, message: message.into() }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.status {
            Some(s) => write!(f, "cloched refused ({s}): {}", self.message),
            None => write!(f, "{}", self.message),
        }
    }
}

/// The daemon at one socket.
#[derive(Debug, Clone)]
pub struct Daemon {
    socket: PathBuf,
}

impl Daemon {
    pub fn new(socket: &Path) -> Daemon {
        Daemon { socket: socket.to_path_buf() }
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Sends one request; the answer's head.
    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<hyper::Response<Incoming>, Failure> {
        let go = async {
            let stream = tokio::net::UnixStream::connect(&self.socket)
                .await
                .map_err(|e| Failure::local(format!("cannot reach cloched at {}: {e}", self.socket.display())))?;
            let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                .await
                .map_err(|e| Failure::local(format!("cloched at {}: {e}", self.socket.display())))?;
            tokio::spawn(conn);
            let bytes = match body {
                Some(v) => Bytes::from(serde_json::to_vec(v).map_err(|e| Failure::local(e.to_string()))?),
                None => Bytes::new(),
            };
            let mut req = Request::builder().method(method).uri(path).header("host", "localhost");
            if body.is_some() {
                req = req.header("content-type", "application/json");
            }
            let req = req.body(Full::new(bytes)).map_err(|e| Failure::local(e.to_string()))?;
            sender.send_request(req).await.map_err(|e| Failure::local(format!("cloched: {e}")))
        };
        tokio::time::timeout(HEAD_TIMEOUT, go).await.map_err(|_| Failure::local("cloched did not answer in time"))?
    }

    /// A JSON request; the answer's JSON, or the daemon's refusal.
    pub async fn json(&self, method: Method, path: &str, body: Option<&Value>) -> Result<Value, Failure> {
        let res = self.send(method, path, body).await?;
        let status = res.status();
        let bytes = read_all(res.into_body()).await?;
        answer(status, &bytes)
    }

    /// A text answer (the diff's text formats).
    pub async fn text(&self, path: &str) -> Result<String, Failure> {
        let res = self.send(Method::GET, path, None).await?;
        let status = res.status();
        let bytes = read_all(res.into_body()).await?;
        if !status.is_success() {
            return answer(status, &bytes).map(|_| String::new());
        }
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }

    /// A request answered with Server-Sent Events; a refusal before the
    /// stream is the daemon's error.
    pub async fn events(&self, method: Method, path: &str, body: Option<&Value>) -> Result<Events, Failure> {
        let res = self.send(method, path, body).await?;
        let status = res.status();
        if !status.is_success() {
            let bytes = read_all(res.into_body()).await?;
            return Err(answer(status, &bytes).err().unwrap_or_else(|| Failure::local("unexpected answer")));
        }
        Ok(Events { body: res.into_body(), buf: Vec::new() })
    }
}

async fn read_all(body: Incoming) -> Result<Bytes, Failure> {
    let limited = http_body_util::Limited::new(body, MAX_ANSWER);
    let collected = limited.collect().await.map_err(|e| Failure::local(format!("reading cloched's answer: {e}")))?;
    Ok(collected.to_bytes())
}

fn answer(status: StatusCode, bytes: &[u8]) -> Result<Value, Failure> {
    let v: Option<Value> = serde_json::from_slice(bytes).ok();
    if status.is_success() {
        return v.ok_or_else(|| Failure::local("cloched answered something that is not JSON"));
    }
    let message = v
        .as_ref()
        .and_then(|v| v["error"].as_str())
        .map(str::to_string)
        .unwrap_or_else(|| String::from_utf8_lossy(&bytes[..bytes.len().min(500)]).into_owned());
    Err(Failure { status: Some(status.as_u16()), message })
}

/// One Server-Sent Event.
#[derive(Debug)]
pub struct Event {
    pub kind: String,
    pub data: Value,
}

/// A stream of Server-Sent Events (comments skipped).
pub struct Events {
    body: Incoming,
    buf: Vec<u8>,
}

/// The most a single event may hold before the stream is refused.
const MAX_EVENT: usize = 16 << 20;

impl Events {
    /// The next event; `None` when the stream ended.
    pub async fn next(&mut self) -> Result<Option<Event>, Failure> {
        loop {
            if let Some(end) = find_blank_line(&self.buf) {
                let frame: Vec<u8> = self.buf.drain(..end.1).collect();
                if let Some(e) = parse_frame(&frame[..end.0]) {
                    return Ok(Some(e));
                }
                continue;
            }
            if self.buf.len() > MAX_EVENT {
                return Err(Failure::local("an event from cloched is too large"));
            }
            match self.body.frame().await {
                None => return Ok(None),
                Some(Err(e)) => return Err(Failure::local(format!("cloched's stream: {e}"))),
                Some(Ok(f)) => {
                    if let Ok(data) = f.into_data() {
                        self.buf.extend_from_slice(&data);
                    }
                }
            }
        }
    }
}

/// Where the first frame ends: (its length, its length with the blank line).
fn find_blank_line(buf: &[u8]) -> Option<(usize, usize)> {
    (0..buf.len()).find_map(|i| {
        let rest = &buf[i..];
        if rest.starts_with(b"\n\n") {
            Some((i, i + 2))
        } else if rest.starts_with(b"\r\n\r\n") {
            Some((i, i + 4))
        } else {
            None
        }
    })
}

/// `event:` and `data:` lines into an event; a frame of comments is none.
fn parse_frame(frame: &[u8]) -> Option<Event> {
    let text = String::from_utf8_lossy(frame);
    let (mut kind, mut data) = (String::from("message"), String::new());
    let mut any = false;
    for line in text.lines() {
        if let Some(v) = line.strip_prefix("event:") {
            kind = v.trim_start().to_string();
            any = true;
        } else if let Some(v) = line.strip_prefix("data:") {
            if !data.is_empty() {
                data.push('\n');
            }
            data.push_str(v.strip_prefix(' ').unwrap_or(v));
            any = true;
        }
    }
    any.then(|| Event { kind, data: serde_json::from_str(&data).unwrap_or(Value::String(data)) })
}

/// Percent-encodes a query value.
pub fn q(v: &str) -> String {
    form_urlencoded::byte_serialize(v.as_bytes()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames() {
        let e = parse_frame(b"id: 3\nevent: output\ndata: {\"a\":1}").unwrap();
        assert_eq!((e.kind.as_str(), &e.data["a"]), ("output", &serde_json::json!(1)));
        assert!(parse_frame(b": keep-alive").is_none());
        assert_eq!(find_blank_line(b"a\n\nb"), Some((1, 3)));
        assert_eq!(find_blank_line(b"a\r\n\r\nb"), Some((1, 5)));
        assert_eq!(find_blank_line(b"a\nb"), None);
    }

    #[test]
    fn refusals_name_the_daemon_error() {
        let f = answer(StatusCode::FORBIDDEN, br#"{"error":"needs a reviewer"}"#).unwrap_err();
        assert_eq!((f.status, f.message.as_str()), (Some(403), "needs a reviewer"));
        assert!(answer(StatusCode::OK, b"not json").is_err());
    }
}
