//! The socket: one daemon per state directory and per socket (locks), the
//! socket made with its mode and group, and the connections served (HTTP/1
//! with a deadline for the request's head, at most so many at once and so
//! many per uid), each with its caller's identity.

use crate::api::App;
use crate::config::Config;
use crate::identity::Caller;
use crate::jobs_cgroup::JobsCgroup;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::os::fd::AsFd;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;

/// An exclusive lock on `path` (made if missing), held while the file is
/// open; `what` names the holder in the refusal. The file says who holds
/// it (this process's runner tag: pid, start time, boot).
pub fn lock(path: &Path, what: &str) -> Result<File, String> {
    let f = open_lock(path)?;
    if !try_flock(&f) {
        return Err(format!("another cloched{} already serves {what}", holder_shown(path)));
    }
    write_holder(f)
}

/// The state directory's lock (`<state>/cloched.lock`). The spawner and
/// every job hold it too (inherited, the same open file description): it
/// is free only once every process of the daemon that took it is gone.
/// Held by a live daemon: refused. Held while the daemon that took it is
/// dead: what it left is ending (its spawner killing its jobs, settling
/// their worlds); after a grace period what is left in its processes'
/// cgroup (`jobs`) is killed, and the lock is waited for a while longer.
/// Returns the lock and how many processes were killed.
pub fn lock_state(state: &Path, jobs: Option<&JobsCgroup>) -> Result<(File, usize), String> {
    let path = state.join("cloched.lock");
    let what = format!("the state directory {}", state.display());
    let f = open_lock(&path)?;
    let start = Instant::now();
    let (mut warned, mut killed) = (false, None);
    loop {
        if try_flock(&f) {
            return Ok((write_holder(f)?, killed.unwrap_or(0)));
        }
        let holder = std::fs::read_to_string(&path).unwrap_or_default();
        let holder = holder.trim();
        if holder_alive(holder) {
            return Err(format!("another cloched{} already serves {what}", holder_shown(&path)));
        }
        let waited = start.elapsed();
        if !warned {
            tracing::warn!(holder, "the state directory is held by what a cloched that died left running");
            warned = true;
        }
        if waited >= GRACE && killed.is_none() {
            let n = jobs.map(|c| c.kill_all(None, Duration::from_secs(5))).unwrap_or(0);
            tracing::warn!(killed = n, "processes of a cloched that died killed");
            killed = Some(n);
        }
        if waited >= GRACE * 3 {
            return Err(format!(
                "{what} is still held by processes of a cloched that died{} (see `fuser {}`)",
                holder_shown(&path),
                path.display()
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// How long a daemon's start leaves the processes of one that died to end
/// on their own (its spawner kills its jobs and settles their worlds).
const GRACE: Duration = Duration::from_secs(5);

fn open_lock(path: &Path) -> Result<File, String> {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    // Never a file someone else put there for root to truncate.
    let md = f.metadata().map_err(|e| format!("{}: {e}", path.display()))?;
    if !md.is_file() || md.uid() != 0 || md.nlink() != 1 {
        return Err(format!("{}: not a lock file of root's (a regular file, one link)", path.display()));
    }
    Ok(f)
}

fn try_flock(f: &File) -> bool {
    // SAFETY: flock on an open descriptor.
    unsafe { libc::flock(std::os::fd::AsRawFd::as_raw_fd(f), libc::LOCK_EX | libc::LOCK_NB) == 0 }
}

fn write_holder(mut f: File) -> Result<File, String> {
    use std::io::{Seek, Write};
    let _ = f.set_len(0);
    let _ = f.seek(io::SeekFrom::Start(0));
    let _ = write!(f, "{}", cloche_broker::runner_tag());
    Ok(f)
}

/// Whether the process a lock file names still runs (a runner tag; a bare
/// pid, as older daemons wrote, while that pid exists).
fn holder_alive(holder: &str) -> bool {
    match holder.parse::<u32>() {
        Ok(pid) => Path::new(&format!("/proc/{pid}")).exists(),
        Err(_) => cloche_broker::runner_alive(Some(holder)),
    }
}

/// ` (pid N)` of the lock file's holder, or nothing.
fn holder_shown(path: &Path) -> String {
    let holder = std::fs::read_to_string(path).unwrap_or_default();
    let pid = holder.trim().trim_start_matches("pid:").split(':').next().unwrap_or("");
    if pid.is_empty() {
        String::new()
    } else {
        format!(" (pid {pid})")
    }
}

/// The listening socket and what it holds.
pub struct Socket {
    pub listener: std::os::unix::net::UnixListener,
    pub path: PathBuf,
    ino: u64,
    _lock: File,
}

impl Socket {
    /// Makes the socket at `path`: its directory (0755) if missing, a
    /// stale socket left by a daemon that died replaced, a live one (or
    /// anything that is not a socket) refused.
    pub fn bind(path: &Path, cfg: &Config) -> Result<Socket, String> {
        let shown = path.display();
        let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
        if !dir.exists() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o755)
                .create(dir)
                .map_err(|e| format!("{}: {e}", dir.display()))?;
        }
        // A directory others may write in without the sticky bit would let
        // them swap the socket (or its lock) for something else between
        // two steps here.
        let dmd = std::fs::metadata(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        if dmd.mode() & 0o002 != 0 && dmd.mode() & libc::S_ISVTX == 0 {
            return Err(format!(
                "{}: writable by everyone without the sticky bit: not a place for the socket",
                dir.display()
            ));
        }
        // Callers reach the socket by its name, through its directory. One
        // of root's closed to everyone else (`cloche run` makes /run/cloche
        // 0700 for its locks, which are 0600) is opened for search only
        // (0711: no listing) when the socket admits others.
        if dmd.uid() == 0 && dmd.mode() & 0o077 == 0 && cfg.socket_mode & 0o077 != 0 {
            let mode = (dmd.mode() & 0o7777) | 0o011;
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode))
                .map_err(|e| format!("{}: chmod: {e}", dir.display()))?;
            tracing::info!(dir = %dir.display(), mode = format!("{mode:o}"), "the socket's directory opened for search");
        }
        let mut lock_name = path.file_name().unwrap_or_default().to_os_string();
        lock_name.push(".lock");
        let lock = lock(&dir.join(lock_name), &format!("the socket {shown}"))?;
        match std::fs::symlink_metadata(path) {
            Ok(md) if std::os::unix::fs::FileTypeExt::is_socket(&md.file_type()) => {
                if std::os::unix::net::UnixStream::connect(path).is_ok() {
                    return Err(format!("{shown}: a daemon is listening there already"));
                }
                std::fs::remove_file(path).map_err(|e| format!("{shown}: removing a stale socket: {e}"))?;
            }
            Ok(_) => return Err(format!("{shown}: exists and is not a socket")),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(format!("{shown}: {e}")),
        }
        // No moment where the socket is more open than asked: made 0600,
        // then given its group and mode.
        // SAFETY: umask has no preconditions; one thread runs here.
        let old = unsafe { libc::umask(0o177) };
        let bound = std::os::unix::net::UnixListener::bind(path);
        // SAFETY: as above.
        unsafe { libc::umask(old) };
        let listener = bound.map_err(|e| format!("{shown}: {e}"))?;
        if let Some(g) = cfg.socket_group {
            std::os::unix::fs::chown(path, None, Some(g)).map_err(|e| format!("{shown}: chown: {e}"))?;
        }
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(cfg.socket_mode))
            .map_err(|e| format!("{shown}: chmod: {e}"))?;
        let ino = std::fs::symlink_metadata(path).map(|m| m.ino()).unwrap_or(0);
        Ok(Socket { listener, path: path.to_path_buf(), ino, _lock: lock })
    }

    /// Removes the socket file if it is still this daemon's.
    pub fn remove(&self) {
        if std::fs::symlink_metadata(&self.path).map(|m| m.ino()).ok() == Some(self.ino) {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// Serves connections until `stop` resolves.
pub async fn serve(listener: tokio::net::UnixListener, app: App, stop: impl std::future::Future<Output = ()>) {
    let limits = app.cfg.limits.clone();
    let router = crate::api::router(app.clone());
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let per_uid: Arc<Mutex<HashMap<u32, usize>>> = Arc::default();
    tokio::pin!(stop);
    loop {
        let stream = tokio::select! {
            _ = &mut stop => return,
            a = listener.accept() => match a {
                Ok((s, _)) => s,
                Err(e) => {
                    // Out of descriptors, most likely: let some go first.
                    tracing::warn!(error = %e, "accept");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tracing::warn!(max = limits.max_connections, "too many connections: one refused");
            continue;
        };
        let caller = match Caller::of_socket(stream.as_fd(), &app.cfg) {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "a connection without credentials");
                continue;
            }
        };
        let uid = caller.uid;
        {
            let mut m = per_uid.lock().unwrap_or_else(|p| p.into_inner());
            let n = m.entry(uid).or_insert(0);
            if *n >= limits.max_connections_per_uid {
                tracing::warn!(
                    uid,
                    max = limits.max_connections_per_uid,
                    "too many connections of one uid: one refused"
                );
                continue;
            }
            *n += 1;
        }
        let router = router.clone();
        let per_uid = per_uid.clone();
        let header_timeout = limits.header_timeout;
        tokio::spawn(async move {
            if let Err(e) = serve_connection(stream, router, header_timeout, Some(caller)).await {
                tracing::debug!(uid, error = %e, "connection ended");
            }
            drop(slot);
            let mut m = per_uid.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(n) = m.get_mut(&uid) {
                *n -= 1;
                if *n == 0 {
                    m.remove(&uid);
                }
            }
        });
    }
}

/// Serves one HTTP/1 connection with `router`: a deadline for the
/// request's head, buffers of 64 KiB. `caller`, when given, rides in every
/// request's extensions (the socket's peer; the web page finds its caller
/// by the session cookie instead).
pub(crate) async fn serve_connection<S>(
    stream: S,
    router: axum::Router,
    header_timeout: Duration,
    caller: Option<Caller>,
) -> Result<(), hyper::Error>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let svc = tower::service_fn(move |mut req: axum::http::Request<hyper::body::Incoming>| {
        if let Some(c) = &caller {
            req.extensions_mut().insert(c.clone());
        }
        let r = router.clone();
        async move { tower::ServiceExt::oneshot(r, req).await }
    });
    hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        .max_buf_size(64 * 1024)
        .serve_connection(TokioIo::new(stream), hyper_util::service::TowerToHyperService::new(svc))
        .await
}
