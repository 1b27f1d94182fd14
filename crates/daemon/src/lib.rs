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
//! - [`events`]: what happens to batches, on a bus;
//! - [`jobs_cgroup`], [`recovery`]: no process of the daemon outlives it,
//!   and what one that died left is settled (docs/architecture.md, *When
//!   a process dies*).
//!
//! docs/architecture.md (*The daemon*) and docs/security.md (*cloched*).

pub mod api;
pub mod config;
pub mod error;
pub mod events;
pub mod hook;
pub mod identity;
pub mod jobs;
pub mod jobs_cgroup;
pub mod owners;
pub mod pool;
pub mod premade;
pub mod recovery;
pub mod server;
pub mod spawner;
pub mod web;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

/// The async runtime's worker threads.
const WORKERS: usize = 2;

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
    /// Serve the reviewer's web page on this loopback address and port (docs/web.md); off by
    /// default (also `[web] listen`).
    #[arg(long, value_name = "ADDR:PORT")]
    pub web: Option<std::net::SocketAddr>,
    /// Allow --web (or `[web] listen`) to name an address that is not loopback: the page is then
    /// reachable from other machines, over plain HTTP.
    #[arg(long)]
    pub web_non_loopback: bool,
}

/// Logs: JSON lines on stderr, level from CLOCHE_LOG (else RUST_LOG, else info).
pub fn log_subscriber() -> impl tracing::Subscriber + Send + Sync {
    let filter =
        std::env::var("CLOCHE_LOG").or_else(|_| std::env::var("RUST_LOG")).unwrap_or_else(|_| "info".to_string());
    let filter =
        tracing_subscriber::EnvFilter::try_new(&filter).unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt().json().with_env_filter(filter).with_writer(std::io::stderr).finish()
}

fn init_logs() {
    let _ = tracing::subscriber::set_global_default(log_subscriber());
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
    let mut cfg = match &opts.config {
        Some(p) => config::Config::load(p)?,
        None => config::Config::default(),
    };
    if let Some(a) = opts.web {
        cfg.web.listen = Some(a);
    }
    cfg.web.allow_non_loopback |= opts.web_non_loopback;
    let web_addr = cfg.web.checked_listen()?;
    // The state directory, and this daemon alone on it (once every
    // process of a daemon that died is gone).
    let ctx = cloche_service::Context::open(cloche_service::Options::default()).map_err(|e| e.to_string())?;
    let state = ctx.state().map_err(|e| e.to_string())?.root.clone();
    drop(ctx);
    let jobs_cgroup = jobs_cgroup::JobsCgroup::of_state(&state);
    let (state_lock, killed_waiting) = server::lock_state(&state, jobs_cgroup.as_ref())?;
    // What a daemon that died left: its processes (all of them, should its
    // spawner have died with it), the worlds of its runs, the runs.
    let killed = killed_waiting + jobs_cgroup.as_ref().map(|c| c.kill_all(None, Duration::from_secs(10))).unwrap_or(0);
    let jobs_cgroup = jobs_cgroup.filter(|c| match c.create() {
        Ok(()) => true,
        Err(e) => {
            tracing::warn!(cgroup = %c.path().display(), error = %e, "no cgroup for the daemon's processes");
            false
        }
    });
    recovery::recover(&state, "cloched", killed).map_err(|e| format!("recovery at start: {e}"))?.log();
    // Connections are taken (the kernel's backlog) from here on: once
    // what was recovered is settled.
    // The page's port first: a refused one leaves no socket behind.
    let web = web_addr.map(|a| web::bind(a, &state, cfg.web.token_ttl)).transpose()?;
    let socket = server::Socket::bind(&opts.socket, &cfg)?;
    // Executed, not forked: this process has no other thread yet either way.
    let setup = spawner::Setup {
        state: state.clone(),
        cgroup: jobs_cgroup.clone(),
        lock: state_lock.try_clone().map_err(|e| format!("the state directory's lock: {e}"))?.into(),
    };
    let spawner = spawner::Spawner::start(setup).map_err(|e| format!("the spawner: {e}"))?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(WORKERS)
        .max_blocking_threads(64)
        .thread_name("cloched")
        .enable_all()
        .build()
        .map_err(|e| format!("the async runtime: {e}"))?;
    let app = Arc::new(api::AppState {
        pool: pool::Pool::new(state.clone(), 8, WORKERS).map_err(|e| format!("the pool's threads: {e}"))?,
        jobs: jobs::Jobs::new(spawner.clone(), state.clone()),
        bus: events::Bus::new(cfg.limits.event_buffer, cfg.limits.event_buffer_bytes),
        streams: Arc::default(),
        state: state.clone(),
        premade: premade::Premade::new(cfg.premade.worlds, cfg.premade.idle),
        web: web.as_ref().map(|(_, info)| info.clone()),
        cfg,
    });
    if let Some((_, info)) = &web {
        let non_loopback = !info.addr.ip().is_loopback();
        tracing::info!(url = %info.url, non_loopback, "the reviewer's web page serving");
    }
    tracing::info!(
        socket = %socket.path.display(),
        state = %state.display(),
        mode = format!("{:o}", app.cfg.socket_mode),
        spawner = spawner.pid(),
        cgroup = %jobs_cgroup.as_ref().map(|c| c.path().display().to_string()).unwrap_or_default(),
        "cloched serving"
    );
    let served = rt.block_on(async {
        socket.listener.set_nonblocking(true).map_err(|e| e.to_string())?;
        let listener = socket.listener.try_clone().map_err(|e| e.to_string())?;
        let listener = tokio::net::UnixListener::from_std(listener).map_err(|e| e.to_string())?;
        app.premade.expire_every_second();
        let page = web.map(|(l, info)| tokio::spawn(web::serve(l, app.clone(), info)));
        server::serve(listener, app.clone(), stop_signal()).await;
        if let Some(p) = page {
            p.abort();
        }
        // No pre-made world outlives the daemon.
        app.premade.shutdown(std::time::Duration::from_secs(10)).await;
        Ok::<(), String>(())
    });
    socket.remove();
    // No job outlives the daemon: the spawner kills them and settles their
    // runs (failed as interrupted) and worlds, then ends.
    spawner.stop(Duration::from_secs(20));
    if let Some(c) = &jobs_cgroup {
        c.remove(Duration::from_secs(5));
    }
    tracing::info!("cloched stopped");
    rt.shutdown_timeout(Duration::from_secs(2));
    drop(state_lock);
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
