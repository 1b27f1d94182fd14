//! The service's blocking work (SQLite, the audit log, kept worlds) on a
//! fixed set of threads, each with a [`Context`] of its own opened when
//! the daemon starts (its broker connection included) and kept for the
//! daemon's life: a request never pays for opening the database (whose
//! schema check takes the write lock), and the threads do not come and go
//! with the load. Nothing here starts a world: worlds start in job
//! processes ([`crate::jobs`]).
//!
//! One kind of work skips the threads: a batch's status ([`Pool::read`]),
//! the request clients poll. It reads two indexed tables in one snapshot
//! (WAL: a reader waits for no writer), a tenth of a millisecond, and runs
//! on the async worker that asked, with one of a few contexts kept for
//! that: handing it to a pool thread and the answer back costs two thread
//! wake-ups, which on a loaded machine were most of its time (the
//! handler's p99 5-7 ms through a pool thread, 0.4-0.6 ms inline;
//! docs/architecture.md).

use crate::error::ApiError;
use cloche_service::{Context, Options};
use std::path::PathBuf;
use std::sync::{mpsc, Arc, Mutex};

type Work = Box<dyn FnOnce(&Context) + Send>;

#[derive(Clone)]
pub struct Pool {
    tx: mpsc::Sender<Work>,
    /// The contexts of [`Pool::read`], those not in use.
    quick: Arc<Mutex<Vec<Context>>>,
}

/// A context on `state` with its broker open.
fn context(state: &std::path::Path) -> Context {
    let ctx = Context::new(Options { state_dir: Some(state.to_path_buf()), env: Some(Vec::new()) });
    if let Err(e) = ctx.broker() {
        tracing::warn!(error = %e, "the broker, at the pool's start");
    }
    ctx
}

impl Pool {
    /// `n` threads, each with a context on `state`, and `quick` contexts
    /// for [`Pool::read`] (as many as the async workers that may use them
    /// at once).
    pub fn new(state: PathBuf, n: usize, quick: usize) -> std::io::Result<Pool> {
        let quick = Arc::new(Mutex::new((0..quick).map(|_| context(&state)).collect()));
        let (tx, rx) = mpsc::channel::<Work>();
        let rx = Arc::new(Mutex::new(rx));
        for i in 0..n.max(1) {
            let (rx, state) = (rx.clone(), state.clone());
            std::thread::Builder::new().name(format!("cloched-pool-{i}")).spawn(move || {
                let ctx = context(&state);
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
        Ok(Pool { tx, quick })
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

    /// Runs `f`, a short read (a batch's status), with a context of its
    /// own on the calling thread (an async worker) without waiting for a
    /// pool thread; on a pool thread as [`Pool::run`] when all those
    /// contexts are in use.
    pub async fn read<T, F>(&self, f: F) -> Result<T, ApiError>
    where
        T: Send + 'static,
        F: FnOnce(&Context) -> Result<T, ApiError> + Send + 'static,
    {
        let taken = self.quick.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let Some(ctx) = taken else { return self.run(f).await };
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(&ctx)));
        self.quick.lock().unwrap_or_else(|p| p.into_inner()).push(ctx);
        r.unwrap_or_else(|_| Err(ApiError::internal("a request's work failed")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "current_thread")]
    async fn a_status_read_runs_on_the_calling_thread_else_on_the_pool() {
        let dir = tempfile::tempdir().unwrap();
        let pool = Pool::new(dir.path().to_path_buf(), 1, 1).unwrap();
        let me = std::thread::current().id();
        let here = pool
            .read(|ctx| {
                ctx.broker()?;
                Ok(std::thread::current().id())
            })
            .await
            .unwrap();
        assert_eq!(here, me, "no thread hand-off");
        // Its contexts all in use: a pool thread.
        let held = pool.quick.lock().unwrap().pop().unwrap();
        assert_ne!(pool.read(|_| Ok(std::thread::current().id())).await.unwrap(), me);
        pool.quick.lock().unwrap().push(held);
        // A panic is a 500, and the context is given back.
        let e = pool.read(|_| -> Result<(), ApiError> { panic!("a failing read") }).await.unwrap_err();
        assert_eq!(e.status.as_u16(), 500);
        assert_eq!(pool.quick.lock().unwrap().len(), 1);
    }
}
