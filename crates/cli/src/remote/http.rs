//! A small blocking HTTP/1.1 client over a Unix stream socket: what
//! `cloche` needs to talk to `cloched` and nothing more (docs/architecture.md,
//! *The CLI and the daemon*, says why no crate does it).
//!
//! One request per connection (`Connection: close`). Responses: a status
//! line, headers, then a body framed by `Content-Length`, by chunked
//! transfer coding, or by the end of the connection. Server-Sent Events
//! ([`Events`]) are read from a body as it comes. No thread, no runtime:
//! the calling thread blocks on the socket.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

/// The most bytes of a response's head (status line and headers).
const MAX_HEAD: usize = 64 * 1024;
/// The most bytes of a body read whole ([`Response::bytes`]).
const MAX_BODY: u64 = 1 << 30;
/// The most bytes of one line of a chunk size, a trailer or an event.
const MAX_LINE: usize = 16 << 20;

/// A request: method, path (with its query), extra headers, body.
pub struct Request<'a> {
    pub method: &'a str,
    pub path: &'a str,
    pub headers: Vec<(&'a str, String)>,
    /// JSON, sent with its length.
    pub body: Option<Vec<u8>>,
}

/// A response whose head was read; its body is read on demand.
pub struct Response {
    pub status: u16,
    headers: Vec<(String, String)>,
    body: Body,
}

/// Sends `req` on `stream` (connected to the daemon) and reads the
/// response's head; `timeout`, when given, bounds each read and write.
pub fn exchange(mut stream: UnixStream, req: &Request<'_>, timeout: Option<Duration>) -> io::Result<Response> {
    stream.set_read_timeout(timeout)?;
    stream.set_write_timeout(timeout)?;
    let mut head = format!("{} {} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n", req.method, req.path);
    for (k, v) in &req.headers {
        if k.contains(['\r', '\n', ':']) || v.contains(['\r', '\n']) {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("header {k:?}: not one line")));
        }
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    if let Some(b) = &req.body {
        head.push_str(&format!("Content-Type: application/json\r\nContent-Length: {}\r\n", b.len()));
    }
    head.push_str("\r\n");
    let mut out = head.into_bytes();
    out.extend_from_slice(req.body.as_deref().unwrap_or_default());
    stream.write_all(&out)?;
    stream.flush()?;
    read_response(BufReader::new(stream))
}

/// Connects to the socket at `path`.
pub fn connect(path: &Path) -> io::Result<UnixStream> {
    UnixStream::connect(path)
}

fn bad(why: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, why.into())
}

/// One line ending in `\n` (the `\r` before it removed), at most `max`
/// bytes; `None` at the end of the input.
fn read_line(r: &mut impl BufRead, max: usize) -> io::Result<Option<Vec<u8>>> {
    let mut line = Vec::new();
    let n = r.by_ref().take(max as u64 + 1).read_until(b'\n', &mut line)?;
    if n == 0 {
        return Ok(None);
    }
    if line.last() != Some(&b'\n') {
        return Err(match line.len() > max {
            true => bad(format!("a line longer than {max} bytes")),
            false => io::Error::new(io::ErrorKind::UnexpectedEof, "the connection closed in the middle of a line"),
        });
    }
    line.pop();
    if line.last() == Some(&b'\r') {
        line.pop();
    }
    Ok(Some(line))
}

fn read_response(mut r: BufReader<UnixStream>) -> io::Result<Response> {
    let mut used = 0;
    let mut next = |r: &mut BufReader<UnixStream>| -> io::Result<Vec<u8>> {
        let line = read_line(r, MAX_HEAD)?
            .ok_or_else(|| io::Error::new(io::ErrorKind::UnexpectedEof, "the daemon closed the connection"))?;
        used += line.len() + 2;
        match used > MAX_HEAD {
            true => Err(bad(format!("a response head longer than {MAX_HEAD} bytes"))),
            false => Ok(line),
        }
    };
    let status_line = String::from_utf8_lossy(&next(&mut r)?).into_owned();
    let mut words = status_line.splitn(3, ' ');
    let status = match (words.next(), words.next().and_then(|s| s.parse::<u16>().ok())) {
        (Some(v), Some(s)) if v.starts_with("HTTP/1.") && (100..600).contains(&s) => s,
        _ => {
            return Err(bad(format!(
                "not an HTTP/1.1 response: {:?}",
                status_line.chars().take(80).collect::<String>()
            )))
        }
    };
    let mut headers = Vec::new();
    loop {
        let line = next(&mut r)?;
        if line.is_empty() {
            break;
        }
        let line = String::from_utf8_lossy(&line);
        let Some((k, v)) = line.split_once(':') else { return Err(bad(format!("a header without a colon: {line:?}"))) };
        headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
    }
    let header = |k: &str| headers.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    let body = if header("transfer-encoding").is_some_and(|t| t.eq_ignore_ascii_case("chunked")) {
        Body::Chunked { r, left: 0, done: false }
    } else if let Some(n) = header("content-length") {
        let n = n.parse::<u64>().map_err(|_| bad(format!("content-length {n:?}")))?;
        Body::Length(r.take(n), n)
    } else {
        Body::Eof(r)
    };
    Ok(Response { status, headers, body })
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// Whether the body is JSON (by its content type).
    pub fn is_json(&self) -> bool {
        self.header("content-type").is_some_and(|t| t.starts_with("application/json"))
    }

    /// The whole body (at most 1 GiB).
    pub fn bytes(mut self) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        (&mut self.body).take(MAX_BODY + 1).read_to_end(&mut out)?;
        if out.len() as u64 > MAX_BODY {
            return Err(bad(format!("a response body larger than {MAX_BODY} bytes")));
        }
        if let Body::Length(_, n) = &self.body {
            if (out.len() as u64) < *n {
                return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "the daemon closed the connection early"));
            }
        }
        Ok(out)
    }

    /// The body as Server-Sent Events, as they come.
    pub fn events(self) -> Events {
        Events { r: BufReader::new(self.body) }
    }
}

/// A response's body.
enum Body {
    /// `Content-Length`: the rest, and the whole length.
    Length(io::Take<BufReader<UnixStream>>, u64),
    /// Chunked: bytes left in the current chunk; the last chunk seen.
    Chunked { r: BufReader<UnixStream>, left: u64, done: bool },
    /// Up to the end of the connection.
    Eof(BufReader<UnixStream>),
}

impl Read for Body {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Body::Length(r, _) => r.read(buf),
            Body::Eof(r) => r.read(buf),
            Body::Chunked { r, left, done } => {
                if *done || buf.is_empty() {
                    return Ok(0);
                }
                if *left == 0 {
                    *left = chunk_size(r)?;
                    if *left == 0 {
                        // The last chunk: trailers up to an empty line.
                        while read_line(r, MAX_LINE)?.is_some_and(|l| !l.is_empty()) {}
                        *done = true;
                        return Ok(0);
                    }
                }
                let want = buf.len().min(usize::try_from(*left).unwrap_or(usize::MAX));
                let n = r.read(&mut buf[..want])?;
                if n == 0 {
                    return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "the connection closed inside a chunk"));
                }
                *left -= n as u64;
                if *left == 0 && !read_line(r, 2)?.is_some_and(|l| l.is_empty()) {
                    return Err(bad("a chunk not followed by CRLF"));
                }
                Ok(n)
            }
        }
    }
}

/// The size line of the next chunk (extensions ignored).
fn chunk_size(r: &mut impl BufRead) -> io::Result<u64> {
    let line = read_line(r, 1024)?
        .ok_or_else(|| io::Error::new(io::ErrorKind::UnexpectedEof, "the connection closed between chunks"))?;
    let text = String::from_utf8_lossy(&line);
    let hex = text.split(';').next().unwrap_or("").trim();
    u64::from_str_radix(hex, 16).map_err(|_| bad(format!("a chunk size {text:?}")))
}

/// One Server-Sent Event: its `id`, `event` (default `message`) and data
/// (its `data:` lines joined by `\n`).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Event {
    pub id: Option<String>,
    pub kind: String,
    pub data: String,
}

/// The events of a `text/event-stream` body.
pub struct Events {
    r: BufReader<Body>,
}

impl Events {
    /// The next event; `None` when the stream ended. Comments (`: ...`,
    /// the daemon's keep-alives) are skipped.
    pub fn next_event(&mut self) -> io::Result<Option<Event>> {
        parse_event(&mut self.r)
    }
}

fn parse_event(r: &mut impl BufRead) -> io::Result<Option<Event>> {
    let mut e = Event::default();
    let mut data: Option<String> = None;
    let mut any = false;
    loop {
        let line = match read_line(r, MAX_LINE) {
            Ok(Some(l)) => l,
            // The end of the stream (inside a line too): an event not
            // closed by an empty line is dropped, as the format says.
            Ok(None) => return Ok(None),
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
            Err(e) => return Err(e),
        };
        if line.is_empty() {
            if any && data.is_some() {
                e.data = data.unwrap_or_default();
                if e.kind.is_empty() {
                    e.kind = "message".into();
                }
                return Ok(Some(e));
            }
            (e, data, any) = (Event::default(), None, false);
            continue;
        }
        let line = String::from_utf8_lossy(&line).into_owned();
        if line.starts_with(':') {
            continue;
        }
        let (field, value) = match line.split_once(':') {
            Some((f, v)) => (f.to_string(), v.strip_prefix(' ').unwrap_or(v).to_string()),
            None => (line.clone(), String::new()),
        };
        any = true;
        match field.as_str() {
            "id" => e.id = Some(value),
            "event" => e.kind = value,
            "data" => match &mut data {
                Some(d) => {
                    d.push('\n');
                    d.push_str(&value);
                }
                None => data = Some(value),
            },
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    /// A response written by `server` on one end of a socket pair, read on the other.
    fn respond(raw: &'static [u8]) -> io::Result<Response> {
        let (a, mut b) = UnixStream::pair().unwrap();
        let t = std::thread::spawn(move || {
            let mut req = [0u8; 4096];
            let _ = b.read(&mut req);
            let _ = b.write_all(raw);
        });
        let req = Request { method: "GET", path: "/v1/x", headers: vec![], body: None };
        let r = exchange(a, &req, Some(Duration::from_secs(5)));
        t.join().unwrap();
        r
    }

    #[test]
    fn bodies_by_length_by_chunks_and_to_the_end() {
        let r =
            respond(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 7\r\n\r\n{\"a\":1}extra")
                .unwrap();
        assert_eq!((r.status, r.is_json()), (200, true));
        assert_eq!(r.bytes().unwrap(), b"{\"a\":1}");
        let r = respond(b"HTTP/1.1 403 Forbidden\r\nTransfer-Encoding: chunked\r\n\r\n3;x=y\r\nabc\r\n10\r\n0123456789abcdef\r\n0\r\nT: v\r\n\r\n")
            .unwrap();
        assert_eq!(r.status, 403);
        assert_eq!(r.bytes().unwrap(), b"abc0123456789abcdef");
        let r = respond(b"HTTP/1.1 200 OK\r\n\r\nto the end").unwrap();
        assert_eq!(r.bytes().unwrap(), b"to the end");
    }

    #[test]
    fn broken_responses_are_errors_not_panics() {
        for raw in [
            &b"SSH-2.0-x\r\n\r\n"[..],
            b"HTTP/1.1 200 OK\r\nno colon\r\n\r\n",
            b"HTTP/1.1 999 x\r\n\r\n",
            b"",
            b"HTTP/1.1 200 OK\r\ncontent-length: x\r\n\r\n",
        ] {
            let leaked: &'static [u8] = Box::leak(raw.to_vec().into_boxed_slice());
            assert!(respond(leaked).is_err(), "{:?}", String::from_utf8_lossy(raw));
        }
        let r = respond(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nshort").unwrap();
        assert!(r.bytes().is_err(), "a body cut short");
        let r = respond(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n").unwrap();
        assert!(r.bytes().is_err(), "a bad chunk size");
        let r = respond(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nabc").unwrap();
        assert!(r.bytes().is_err(), "a chunk cut short");
    }

    #[test]
    fn server_sent_events() {
        let text =
            ": keep-alive\n\nid: 7\nevent: output\ndata: {\"a\":\ndata: 1}\n\ndata: plain\r\n\r\nevent: cut\ndata: x";
        let mut r = Cursor::new(text.as_bytes());
        let e = parse_event(&mut r).unwrap().unwrap();
        assert_eq!(e, Event { id: Some("7".into()), kind: "output".into(), data: "{\"a\":\n1}".into() });
        let e = parse_event(&mut r).unwrap().unwrap();
        assert_eq!((e.kind.as_str(), e.data.as_str()), ("message", "plain"));
        assert_eq!(parse_event(&mut r).unwrap(), None, "an event cut by the end is not delivered");
    }
}
