//! `cloche-mcp` (what `cloche mcp` executes): finds the daemon (or starts
//! a private one), then serves MCP on stdin/stdout until stdin closes.

use clap::Parser;
use cloche_mcp::client::Daemon;
use cloche_mcp::private::Private;
use cloche_mcp::server::{Server, Settings};
use rmcp::ServiceExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The daemon's socket when neither --socket nor CLOCHE_SOCKET names one.
const DEFAULT_SOCKET: &str = "/run/cloche/cloche.sock";

#[derive(Debug, Parser)]
#[command(name = "cloche mcp", version, about = "cloche's tools for agents: an MCP server on stdin/stdout")]
struct Opts {
    /// The daemon's socket (default: CLOCHE_SOCKET, else /run/cloche/cloche.sock). A socket named here or in
    /// CLOCHE_SOCKET must answer; without one, root gets a private daemon for the session.
    #[arg(long, value_name = "PATH")]
    socket: Option<PathBuf>,
    /// The agent's project: commands' default working directory and batches' project (default: the current directory).
    #[arg(long, value_name = "DIR")]
    project: Option<PathBuf>,
    /// The longest one `wait` call blocks, in seconds (clients cancel tool calls that take too long).
    #[arg(long, value_name = "SECS", default_value_t = 25)]
    wait_secs: u64,
    /// The most output returned per stream (the first and last halves; the rest is said as left out).
    #[arg(long, value_name = "BYTES", default_value_t = 16384)]
    output_cap: usize,
    /// The name the batches of this session carry (their `agent`). For root, whom the daemon cannot
    /// tell apart from a root reviewer, the batches are this agent's, so root may review them.
    #[arg(long, value_name = "NAME", default_value = "mcp")]
    agent: String,
    /// Never start a private daemon: fail when none answers.
    #[arg(long)]
    no_private: bool,
}

fn main() {
    // First: the relocated read-only data made read-only (crates/relro).
    if let Err(e) = cloche_relro::protect() {
        eprintln!("cloche mcp: making its read-only data read-only (mprotect): {e}");
        std::process::exit(125);
    }
    let opts = Opts::parse();
    std::process::exit(match start(opts) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("cloche mcp: {e}");
            125
        }
    });
}

fn start(opts: Opts) -> Result<(), String> {
    let project = match &opts.project {
        Some(p) => p.clone(),
        None => std::env::current_dir().map_err(|e| format!("the current directory: {e}"))?,
    };
    let project = std::fs::canonicalize(&project).map_err(|e| format!("project {}: {e}", project.display()))?;
    if opts.wait_secs == 0 || opts.output_cap < 64 {
        return Err("--wait-secs must be at least 1 and --output-cap at least 64".into());
    }
    let env_socket = std::env::var_os("CLOCHE_SOCKET").filter(|s| !s.is_empty()).map(PathBuf::from);
    let (socket, named) = match opts.socket.clone().or(env_socket) {
        Some(s) => (s, true),
        None => (PathBuf::from(DEFAULT_SOCKET), false),
    };
    // From the main thread, before any runtime: a private daemon dies with
    // the thread that started it.
    let private = match std::os::unix::net::UnixStream::connect(&socket) {
        Ok(_) => None,
        Err(e) if absent(&e) && !named && !opts.no_private && is_root() => Some(Private::start(&cloched()?)?),
        Err(e) if absent(&e) => {
            return Err(format!(
                "no daemon at {}; start one as root with: cloched{}  (root without one gets a private daemon)",
                socket.display(),
                if socket == Path::new(DEFAULT_SOCKET) {
                    String::new()
                } else {
                    format!(" --socket {}", socket.display())
                }
            ))
        }
        Err(e) => return Err(format!("cannot reach the daemon at {}: {e}", socket.display())),
    };
    if let Some(p) = &private {
        eprintln!(
            "cloche mcp: a private cloched (pid {}) serves this session at {} (reviewers: CLOCHE_SOCKET={} cloche ...)",
            p.pid(),
            p.socket().display(),
            p.socket().display()
        );
    }
    let daemon = Daemon::new(private.as_ref().map(|p| p.socket()).unwrap_or(&socket));
    let settings = Settings {
        project,
        wait: Duration::from_secs(opts.wait_secs),
        output_cap: opts.output_cap,
        agent: Some(opts.agent.clone()),
    };
    let served = serve(daemon, settings);
    if let Some(p) = private {
        p.stop();
    }
    served
}

/// Serves MCP on stdin/stdout until stdin closes, or SIGTERM, SIGINT or SIGHUP.
fn serve(daemon: Daemon, settings: Settings) -> Result<(), String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("the async runtime: {e}"))?;
    rt.block_on(async move {
        let service = Server::new(daemon, settings)
            .serve(rmcp::transport::stdio())
            .await
            .map_err(|e| format!("the MCP session: {e}"))?;
        tokio::select! {
            r = service.waiting() => r.map(|_| ()).map_err(|e| format!("the MCP session: {e}")),
            _ = stop_signal() => Ok(()),
        }
    })
}

async fn stop_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let kinds = [SignalKind::terminate(), SignalKind::interrupt(), SignalKind::hangup()];
    let mut sigs: Vec<_> = kinds.into_iter().filter_map(|k| signal(k).ok()).collect();
    if sigs.is_empty() {
        return std::future::pending().await;
    }
    let waits = sigs.iter_mut().map(|s| Box::pin(s.recv()));
    futures_select_all(waits).await;
}

async fn futures_select_all<F: std::future::Future + Unpin>(futs: impl Iterator<Item = F>) {
    let mut futs: Vec<F> = futs.collect();
    std::future::poll_fn(|cx| {
        for f in futs.iter_mut() {
            if std::pin::Pin::new(f).poll(cx).is_ready() {
                return std::task::Poll::Ready(());
            }
        }
        std::task::Poll::Pending
    })
    .await
}

/// No daemon listens there: no socket, or a stale one.
fn absent(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::*;
    matches!(e.kind(), NotFound | ConnectionRefused | NotADirectory)
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// `cloched` next to this executable.
fn cloched() -> Result<PathBuf, String> {
    let exe = std::env::current_exe().map_err(|e| format!("this executable's path: {e}"))?;
    let p = exe.with_file_name("cloched");
    match p.is_file() {
        true => Ok(p),
        false => Err(format!("no cloched next to {} to start a private daemon", exe.display())),
    }
}
