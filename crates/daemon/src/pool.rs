//! The service's blocking work (SQLite, the audit log, kept worlds) on a
//! fixed set of threads, each with a [`Context`] of its own opened when
//! the daemon starts (its broker connection included) and kept for the
//! daemon's life: a request never pays for opening the database (whose
//! schema check takes the write lock), and the threads do not come and go
//! with the load. Nothing here starts a world: worlds start in job
//! processes ([`crate::jobs`]).

use crate::error::ApiError;
use cloche_service::{Context, Options};
use std::path::PathBuf;
use std::sync::{mpsc, Arc, Mutex};

type Work = Box<dyn FnOnce(&Context) + Send>;

#[derive(Clone)]
pub struct Pool {
    tx: mpsc::Sender<Work>,
}

impl Pool {
    /// `n` threads, each with a context on `state`.
    pub fn new(state: PathBuf, n: usize) -> std::io::Result<Pool> {
        let (tx, rx) = mpsc::channel::<Work>();
        let rx = Arc::new(Mutex::new(rx));
        for i in 0..n.max(1) {
            let (rx, state) = (rx.clone(), state.clone());
            std::thread::Builder::new().name(format!("cloched-pool-{i}")).spawn(move || {
                let ctx = Context::new(Options { state_dir: Some(state), env: Some(Vec::new()) });
                if let Err(e) = ctx.broker() {
                    tracing::warn!(error = %e, "the broker, at the pool's start");
                }
                loop {
                    let work = match rx.lock() {
                        Ok(r) => r.recv(),
                        Err(_) => return,
                    };
                    match work {
                        // A panic drops the answer's sender (the request
                        // gets a 500); the thread goes on.
                        Ok(w) => {
                            let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| w(&ctx)));
                        }
                        Err(_) => return, // the daemon is stopping
                    }
                }
            })?;
        }
        Ok(Pool { tx })
    }

    /// Runs `f` with a context on one of the pool's threads.
    pub async fn run<T, F>(&self, f: F) -> Result<T, ApiError>
    where
        T: Send + 'static,
        F: FnOnce(&Context) -> Result<T, ApiError> + Send + 'static,
    {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let work: Work = Box::new(move |ctx| {
            let _ = tx.send(f(ctx));
        });
        self.tx.send(work).map_err(|_| ApiError::unavailable("the daemon is stopping"))?;
        rx.await.map_err(|_| ApiError::internal("a request's work ended without an answer"))?
    }
}
