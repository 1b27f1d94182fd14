//! The service's blocking work (SQLite, the audit log, kept worlds) on
//! tokio's blocking threads, each with a [`Context`] of its own kept for
//! the thread's life (its broker connection opened once). Nothing here
//! starts a world: worlds start in job processes ([`crate::jobs`]).

use crate::error::ApiError;
use cloche_service::{Context, Options};
use std::cell::RefCell;
use std::path::PathBuf;
use std::sync::Arc;
use tokio::sync::Semaphore;

thread_local! {
    static CONTEXT: RefCell<Option<Context>> = const { RefCell::new(None) };
}

#[derive(Clone)]
pub struct Pool {
    state: PathBuf,
    slots: Arc<Semaphore>,
}

impl Pool {
    /// At most `n` requests' work at once (the rest wait their turn).
    pub fn new(state: PathBuf, n: usize) -> Pool {
        Pool { state, slots: Arc::new(Semaphore::new(n)) }
    }

    /// Runs `f` with a context on a blocking thread.
    pub async fn run<T, F>(&self, f: F) -> Result<T, ApiError>
    where
        T: Send + 'static,
        F: FnOnce(&Context) -> Result<T, ApiError> + Send + 'static,
    {
        let _slot = self.slots.acquire().await.map_err(|_| ApiError::unavailable("the daemon is stopping"))?;
        let state = self.state.clone();
        tokio::task::spawn_blocking(move || {
            CONTEXT.with(|cell| {
                let mut cell = cell.borrow_mut();
                let ctx =
                    cell.get_or_insert_with(|| Context::new(Options { state_dir: Some(state), env: Some(Vec::new()) }));
                f(ctx)
            })
        })
        .await
        .map_err(|e| ApiError::internal(format!("a request's work failed: {e}")))?
    }
}
