//! `cloched`: cloche's service (`crates/service`) as JSON over HTTP on a
//! Unix socket, for callers the kernel identifies (`SO_PEERCRED`).
//!
//! - [`server`]: the socket, its locks, the connections;
//! - [`identity`], [`config`]: who calls, with which roles;
//! - [`api`]: the routes (docs/api/openapi.json);
//! - [`pool`]: the service's blocking work on tokio's blocking threads;
//! - [`spawner`], [`jobs`]: worlds (and whatever needs a caller's identity
//!   or a world) in single-threaded processes forked by a spawner that
//!   was executed before any of it;
//! - [`events`]: what happens to batches, on a bus.
//!
//! docs/architecture.md (*The daemon*) and docs/security.md (*cloched*).

pub mod api;
pub mod config;
pub mod error;
pub mod events;
pub mod identity;
pub mod jobs;
pub mod owners;
pub mod pool;
pub mod premade;
pub mod server;
pub mod spawner;

use std::path::PathBuf;
use std::sync::Arc;

/// The default socket.
pub const DEFAULT_SOCKET: &str = "/run/cloche/cloche.sock";

/// `cloched`'s options.
#[derive(Debug, clap::Parser)]
#[command(name = "cloched", version, about = "cloche's daemon: JSON over HTTP on a Unix socket")]
pub struct Opts {
    /// The socket to listen on.
    #[arg(long, value_name = "PATH", default_value = DEFAULT_SOCKET, env = "CLOCHE_SOCKET")]
    pub socket: PathBuf,
    /// The configuration file (roles, socket mode and group, limits); without one, root is
    /// admin and reviewer and every other local user an agent.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
}

/// Logs: JSON lines on stderr, level from CLOCHE_LOG (else RUST_LOG, else info).
fn init_logs() {
    let filter =
        std::env::var("CLOCHE_LOG").or_else(|_| std::env::var("RUST_LOG")).unwrap_or_else(|_| "info".to_string());
    let filter =
        tracing_subscriber::EnvFilter::try_new(&filter).unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt().json().with_env_filter(filter).with_writer(std::io::stderr).try_init();
}

/// Runs the daemon; returns its exit code.
pub fn run(opts: Opts) -> i32 {
    init_logs();
    match start(opts) {
        Ok(()) => 0,
        Err(e) => {
            tracing::error!(error = %e, "cloched cannot run");
            eprintln!("cloched: {e}");
            1
        }
    }
}

fn start(opts: Opts) -> Result<(), String> {
    if !cloche_service::context::is_root() {
        return Err("cloched needs root (it starts worlds)".into());
    }
    let cfg = match &opts.config {
        Some(p) => config::Config::load(p)?,
        None => config::Config::default(),
    };
    // The state directory, and this daemon alone on it.
    let ctx = cloche_service::Context::open(cloche_service::Options::default()).map_err(|e| e.to_string())?;
    let state = ctx.state().map_err(|e| e.to_string())?.root.clone();
    let _state_lock = server::lock(&state.join("cloched.lock"), &format!("the state directory {}", state.display()))?;
    // Crash recovery of the broker (runs whose process is gone) before any request.
    drop(ctx.broker().map_err(|e| e.to_string())?);
    drop(ctx);
    let socket = server::Socket::bind(&opts.socket, &cfg)?;
    // Executed, not forked: this process has no other thread yet either way.
    let spawner = Arc::new(spawner::Spawner::start().map_err(|e| format!("the spawner: {e}"))?);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .max_blocking_threads(64)
        .thread_name("cloched")
        .enable_all()
        .build()
        .map_err(|e| format!("the async runtime: {e}"))?;
    let app = Arc::new(api::AppState {
        pool: pool::Pool::new(state.clone(), 8).map_err(|e| format!("the pool's threads: {e}"))?,
        jobs: jobs::Jobs::new(spawner.clone(), state.clone()),
        bus: events::Bus::new(cfg.limits.event_buffer, cfg.limits.event_buffer_bytes),
        streams: Arc::default(),
        state: state.clone(),
        premade: premade::Premade::new(cfg.premade.worlds, cfg.premade.idle),
        cfg,
    });
    tracing::info!(
        socket = %socket.path.display(),
        state = %state.display(),
        mode = format!("{:o}", app.cfg.socket_mode),
        spawner = spawner.pid(),
        "cloched serving"
    );
    let served = rt.block_on(async {
        socket.listener.set_nonblocking(true).map_err(|e| e.to_string())?;
        let listener = socket.listener.try_clone().map_err(|e| e.to_string())?;
        let listener = tokio::net::UnixListener::from_std(listener).map_err(|e| e.to_string())?;
        app.premade.expire_every_second();
        server::serve(listener, app.clone(), stop_signal()).await;
        // No pre-made world outlives the daemon.
        app.premade.shutdown(std::time::Duration::from_secs(10)).await;
        Ok::<(), String>(())
    });
    socket.remove();
    tracing::info!("cloched stopped");
    rt.shutdown_timeout(std::time::Duration::from_secs(2));
    served
}

/// SIGTERM or SIGINT.
async fn stop_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}
