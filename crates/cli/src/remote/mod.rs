//! `cloche` through `cloched`: which one does the work ([`via`]), and the
//! daemon's client ([`Client`]).
//!
//! The daemon is used when its socket answers: `CLOCHE_SOCKET`, else
//! `/run/cloche/cloche.sock`. Without one, root works in this process as
//! before (embedded); any other user gets one line saying how to start
//! one. `--no-daemon` or `CLOCHE_SOCKET=` (empty) always work here; a
//! socket named in `CLOCHE_SOCKET` must answer. A daemon that answers but
//! refuses is an error, never a reason to work here instead. When
//! `CLOCHE_STATE_DIR` is set, the daemon must serve that state directory
//! (root otherwise works here, with the state directory it named).
//!
//! Nothing here starts a thread: an embedded `cloche run` clones its world
//! from this process.

pub mod batch;
pub mod http;
pub mod run;

use cloche_service::error::io_reason;
use serde_json::Value;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// The daemon's socket when `CLOCHE_SOCKET` is not set.
pub const DEFAULT_SOCKET: &str = "/run/cloche/cloche.sock";

/// How long the question "which state directory?" may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(10);

static NO_DAEMON: AtomicBool = AtomicBool::new(false);

/// Records `--no-daemon`.
pub fn init(no_daemon: bool) {
    NO_DAEMON.store(no_daemon, Ordering::Relaxed);
}

/// Who does the work of a command.
pub enum Via {
    /// This process, as root.
    Embedded,
    /// The daemon.
    Daemon(Client),
}

/// Finds the daemon (see the module's text); `Err` is the one line to
/// print (exit 125).
pub fn via() -> Result<Via, String> {
    find(false)
}

/// As [`via`], for what a user who is not root does in this process
/// when no daemon answers: a world without root (`cloche run`) and its
/// own kept worlds (`cloche diff`, `cloche discard`), in the user's state
/// directory (docs/security.md, *Worlds without root*).
pub fn via_own() -> Result<Via, String> {
    find(true)
}

fn find(own: bool) -> Result<Via, String> {
    if NO_DAEMON.load(Ordering::Relaxed) {
        return Ok(Via::Embedded);
    }
    let (socket, named) = match std::env::var_os("CLOCHE_SOCKET") {
        Some(v) if v.is_empty() => return Ok(Via::Embedded),
        Some(v) => (PathBuf::from(v), true),
        None => (PathBuf::from(DEFAULT_SOCKET), false),
    };
    let may_embed = (own || cloche_service::context::is_root()) && !named;
    match http::connect(&socket) {
        Ok(s) => {
            let mut c = Client { socket, first: Some(s) };
            match c.state_mismatch()? {
                None => Ok(Via::Daemon(c)),
                Some(_) if may_embed => Ok(Via::Embedded),
                Some(why) => Err(why),
            }
        }
        Err(e) if absent(&e) && may_embed => Ok(Via::Embedded),
        Err(e) if absent(&e) => Err(no_daemon(&socket, None)),
        // A directory on the way closed to this user: no daemon for it.
        Err(e)
            if e.kind() == std::io::ErrorKind::PermissionDenied && may_embed && own && closed_on_the_way(&socket) =>
        {
            Ok(Via::Embedded)
        }
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => Err(denied(&socket)),
        Err(e) => Err(format!("cannot reach the daemon at {}: {}", socket.display(), io_reason(&e))),
    }
}

/// Why this user may not connect: a directory on the way closed to it
/// (no daemon made it so: said as no daemon, with that), or the socket's
/// own mode and group.
fn denied(socket: &Path) -> String {
    // The first directory whose entries cannot be looked up.
    let mut chain: Vec<&Path> = socket.ancestors().filter(|d| !d.as_os_str().is_empty()).collect();
    chain.reverse();
    let closed = chain.windows(2).find_map(|w| {
        let denied = std::fs::symlink_metadata(w[1]).is_err_and(|e| e.kind() == std::io::ErrorKind::PermissionDenied);
        denied.then_some(w[0])
    });
    match closed {
        Some(d) => no_daemon(socket, Some(&format!("{} is closed to this user", d.display()))),
        None => format!(
            "the daemon at {} does not admit this user (the socket's mode and group, set by the daemon's \
             configuration: [socket] group)",
            socket.display()
        ),
    }
}

/// Whether the socket cannot even be looked up (a directory on its way is
/// closed to this user), rather than refusing the connection itself.
fn closed_on_the_way(socket: &Path) -> bool {
    std::fs::symlink_metadata(socket).is_err_and(|e| e.kind() == std::io::ErrorKind::PermissionDenied)
}

/// No daemon listens there: no socket, or a stale one.
fn absent(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(e.kind(), NotFound | ConnectionRefused | NotADirectory)
}

/// The one line said when no daemon answers (`why` not, when known).
fn no_daemon(socket: &Path, why: Option<&str>) -> String {
    let start = match socket == Path::new(DEFAULT_SOCKET) {
        true => "cloched".to_string(),
        false => format!("cloched --socket {}", socket.display()),
    };
    let here = match cloche_service::context::is_root() {
        true => "; or work without one: --no-daemon",
        false => "",
    };
    let why = why.map(|w| format!(" ({w})")).unwrap_or_default();
    format!("no daemon at {}{why}; start one as root with: {start}  (see README){here}", socket.display())
}

/// The hint added to a refusal of what cannot go through the daemon.
pub fn here_hint() -> &'static str {
    match cloche_service::context::is_root() {
        true => "; as root, --no-daemon does it in this process",
        false => "",
    }
}

/// A client of one daemon: a connection per request.
pub struct Client {
    socket: PathBuf,
    /// The connection that found the daemon, for the first request.
    first: Option<UnixStream>,
}

impl Client {
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// `None` when the daemon serves the state directory this process
    /// means (any, when `CLOCHE_STATE_DIR` is not set), else why not.
    fn state_mismatch(&mut self) -> Result<Option<String>, String> {
        let Some(ours) = std::env::var_os("CLOCHE_STATE_DIR").filter(|v| !v.is_empty()).map(PathBuf::from) else {
            return Ok(None);
        };
        let who = self.open("GET", "/v1/whoami", None, Vec::new(), Some(PROBE_TIMEOUT))?;
        let status = who.status;
        let v: Value = serde_json::from_slice(&who.bytes().map_err(|e| self.lost(&e))?).unwrap_or(Value::Null);
        if status != 200 {
            return Err(refusal(status, &v));
        }
        let ours_canonical = std::fs::canonicalize(&ours).or_else(|_| std::path::absolute(&ours)).unwrap_or(ours);
        Ok(match v["state_dir"].as_str() {
            Some(t) if Path::new(t) == ours_canonical => None,
            Some(t) => Some(format!(
                "the daemon at {} serves the state directory {t}, not CLOCHE_STATE_DIR={}: unset one of \
                 CLOCHE_STATE_DIR and CLOCHE_SOCKET",
                self.socket.display(),
                ours_canonical.display()
            )),
            None => Some(format!(
                "the daemon at {} does not say which state directory it serves (CLOCHE_STATE_DIR={} is set)",
                self.socket.display(),
                ours_canonical.display()
            )),
        })
    }

    /// The error of a request that got no answer.
    fn lost(&self, e: &std::io::Error) -> String {
        match e.kind() {
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => {
                format!("the daemon at {} did not answer in time", self.socket.display())
            }
            _ => format!("the daemon at {}: {}", self.socket.display(), io_reason(e)),
        }
    }

    /// Sends a request and reads the answer's head.
    pub fn open(
        &mut self,
        method: &str,
        path: &str,
        body: Option<&Value>,
        headers: Vec<(&str, String)>,
        timeout: Option<Duration>,
    ) -> Result<http::Response, String> {
        let stream = match self.first.take() {
            Some(s) => s,
            None => http::connect(&self.socket).map_err(|e| match absent(&e) {
                true => format!("the daemon at {} went away", self.socket.display()),
                false => self.lost(&e),
            })?,
        };
        let body = body.map(|b| serde_json::to_vec(b).map_err(|e| format!("json: {e}"))).transpose()?;
        let req = http::Request { method, path, headers, body };
        http::exchange(stream, &req, timeout).map_err(|e| self.lost(&e))
    }

    /// A request answered with JSON: the status and the document (`Null`
    /// when the body is not JSON).
    pub fn request(&mut self, method: &str, path: &str, body: Option<&Value>) -> Result<(u16, Value), String> {
        self.request_with(method, path, body, Vec::new())
    }

    pub fn request_with(
        &mut self,
        method: &str,
        path: &str,
        body: Option<&Value>,
        headers: Vec<(&str, String)>,
    ) -> Result<(u16, Value), String> {
        let r = self.open(method, path, body, headers, None)?;
        let status = r.status;
        let bytes = r.bytes().map_err(|e| self.lost(&e))?;
        Ok((status, serde_json::from_slice(&bytes).unwrap_or(Value::Null)))
    }

    /// A request whose success is a 2xx answer: its document; else the
    /// daemon's error.
    pub fn call(&mut self, method: &str, path: &str, body: Option<&Value>) -> Result<Value, String> {
        let (status, v) = self.request(method, path, body)?;
        match (200..300).contains(&status) {
            true => Ok(v),
            false => Err(refusal(status, &v)),
        }
    }
}

/// The daemon's `{"error": "..."}` of a refusal.
pub fn refusal(status: u16, v: &Value) -> String {
    match v["error"].as_str() {
        Some(e) if !e.is_empty() => e.replace(['\n', '\r'], " "),
        _ => format!("the daemon answered HTTP {status}"),
    }
}

/// A path segment or a query value, percent-encoded (all but the
/// unreserved characters).
pub fn enc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => out.push(b as char),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_percent_encoded() {
        assert_eq!(enc("/a b/ü&x=1"), "%2Fa%20b%2F%C3%BC%26x%3D1");
        assert_eq!(enc("0123abcdef"), "0123abcdef");
        assert_eq!(enc("../x"), "..%2Fx");
    }

    #[test]
    fn no_daemon_is_one_line_saying_how_to_start_one() {
        let m = no_daemon(Path::new(DEFAULT_SOCKET), None);
        assert!(m.starts_with("no daemon at /run/cloche/cloche.sock; start one as root with: cloched  (see README)"));
        assert!(no_daemon(Path::new("/tmp/s"), None).contains("cloched --socket /tmp/s"));
        assert!(!m.contains('\n'));
    }
}
