//! A private `cloched` for one MCP session, when no daemon answers and the
//! caller is root: executed (from the main thread, before any runtime
//! exists) next to `cloche-mcp`, on a socket in a directory of its own
//! (0700), with the default state directory; stopped (SIGTERM, waited
//! for) and its directory removed when the session ends. It dies with
//! `cloche-mcp` even when that is killed (`PR_SET_PDEATHSIG`, set for the
//! thread that lives as long as the process). docs/mcp.md, *Which daemon*.

use std::io;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long the private daemon may take to answer (a daemon that died may
/// have left processes it waits for: up to 15 s).
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// How long it may take to stop before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(25);

pub struct Private {
    child: Child,
    dir: PathBuf,
    socket: PathBuf,
}

impl Private {
    /// Starts `cloched` and waits until its socket answers.
    pub fn start(cloched: &Path) -> Result<Private, String> {
        let dir = private_dir().map_err(|e| format!("a directory for the private daemon's socket: {e}"))?;
        let socket = dir.join("cloche.sock");
        let stdout = io::stderr().as_fd_owned().map_err(|e| format!("stderr: {e}"))?;
        let mut cmd = Command::new(cloched);
        cmd.arg("--socket").arg(&socket).stdin(Stdio::null()).stdout(Stdio::from(stdout));
        if std::env::var_os("CLOCHE_LOG").is_none() {
            cmd.env("CLOCHE_LOG", "warn");
        }
        cmd.env_remove("CLOCHE_SOCKET");
        // SAFETY: prctl between fork and exec; async-signal-safe.
        unsafe { cmd.pre_exec(die_with_parent) };
        let child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&dir);
                return Err(format!("cannot execute {}: {e}", cloched.display()));
            }
        };
        let mut p = Private { child, dir, socket };
        let start = Instant::now();
        loop {
            if std::os::unix::net::UnixStream::connect(&p.socket).is_ok() {
                return Ok(p);
            }
            if let Ok(Some(status)) = p.child.try_wait() {
                p.cleanup();
                return Err(format!("the private cloched ended at start ({status}); its reason is on stderr above"));
            }
            if start.elapsed() > START_TIMEOUT {
                p.stop();
                return Err(format!("the private cloched did not answer within {} s", START_TIMEOUT.as_secs()));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGTERM, waited for (killed past `STOP_TIMEOUT`); the directory removed.
    pub fn stop(mut self) {
        // SAFETY: kill of our own child, not yet reaped.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let start = Instant::now();
        while matches!(self.child.try_wait(), Ok(None)) {
            if start.elapsed() > STOP_TIMEOUT {
                let _ = self.child.kill();
                let _ = self.child.wait();
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        self.cleanup();
    }

    /// The directory and what the daemon left in it (its socket and the
    /// socket's lock file), once the daemon is gone.
    fn cleanup(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The child dies with SIGTERM when the thread that forked it ends.
fn die_with_parent() -> io::Result<()> {
    // SAFETY: prctl with integer arguments.
    if unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM as libc::c_ulong, 0, 0, 0) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// `$TMPDIR/cloche-mcp.XXXXXX`, 0700 (mkdtemp).
fn private_dir() -> io::Result<PathBuf> {
    use std::os::unix::ffi::OsStringExt;
    let base = std::env::temp_dir().join("cloche-mcp.XXXXXX");
    let raw = std::ffi::CString::new(base.into_os_string().into_vec()).map_err(io::Error::other)?.into_raw();
    // SAFETY: mkdtemp rewrites the template's XXXXXX in place.
    let made = unsafe { libc::mkdtemp(raw) };
    // SAFETY: `raw` came from CString::into_raw above and is taken back once.
    let path = unsafe { std::ffi::CString::from_raw(raw) };
    if made.is_null() {
        return Err(io::Error::last_os_error());
    }
    Ok(PathBuf::from(std::ffi::OsString::from_vec(path.into_bytes())))
}

/// This process's stderr as an owned descriptor (the daemon's stdout goes
/// there: stdout is the MCP channel).
trait OwnedStderr {
    fn as_fd_owned(&self) -> io::Result<std::os::fd::OwnedFd>;
}

impl OwnedStderr for io::Stderr {
    fn as_fd_owned(&self) -> io::Result<std::os::fd::OwnedFd> {
        use std::os::fd::AsFd;
        self.as_fd().try_clone_to_owned()
    }
}
