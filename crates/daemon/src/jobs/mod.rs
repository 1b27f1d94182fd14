//! Jobs: the work done in a single-threaded process forked by the spawner
//! ([`crate::spawner`]), and the daemon's side of them.
//!
//! The daemon writes one request (an [`Envelope`], one JSON line) on the
//! job's control socket; the job answers with JSON lines ([`Msg`]): its
//! pid, events as they happen, then `done` with a value or `failed` with
//! a status and an error. A job that ends without either failed: it was
//! killed, or crashed; before its request gets that error, a recovery job
//! settles what it left (its world, its batch: `crate::recovery`).

pub mod child;
pub mod premade;
pub mod run;

use crate::error::ApiError;
use crate::recovery::Recovered;
use crate::spawner::Spawner;
use cloche_broker::BatchFile;
use cloche_service::HostUser;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::sync::Arc;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::unix::pipe;

/// What the daemon sends a job.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Envelope {
    /// The state directory.
    pub state: PathBuf,
    pub job: Job,
}

/// A job.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Job {
    /// A batch submitted by `caller`, its project checked with the caller's
    /// identity first.
    Submit { batch: BatchFile, token: Option<String>, caller: HostUser },
    /// A one-command world for `caller` (`POST /v1/run`); with `stream`,
    /// what `cloche run` says before the command runs goes to the world's
    /// stderr too.
    Run { run: run::RunBody, caller: HostUser, stream: bool },
    /// A world of `run`'s shape made ahead for `caller`, waiting for one
    /// request (a [`premade::Request`] line) on the control socket.
    Standby { run: run::RunBody, caller: HostUser },
    /// An approved batch run in its world; `owner` (the submitter, when
    /// not root) must still be able to read the project.
    RunBatch { batch: String, owner: Option<HostUser> },
    /// A kept world committed by `actor`, written as `owner` (the caller
    /// the world belongs to, when not root).
    Commit {
        id: String,
        paths: Vec<PathBuf>,
        exclude: Vec<PathBuf>,
        force: bool,
        actor: String,
        owner: Option<HostUser>,
    },
    /// Settles what dead jobs left (`crate::recovery`), once the process
    /// of runner tag `after` (a job that died) is gone.
    Recover { after: Option<String> },
}

/// What a job says, one JSON line each.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Msg {
    /// The job's pid and its runner tag (`cloche_broker::runner_tag`).
    Started {
        pid: u32,
        #[serde(default)]
        runner: Option<String>,
    },
    Event {
        event: Value,
    },
    Done {
        value: Value,
    },
    Failed {
        status: u16,
        error: String,
        extra: Option<Value>,
    },
}

/// Starts jobs through the spawner.
#[derive(Clone)]
pub struct Jobs {
    spawner: Arc<Spawner>,
    state: PathBuf,
}

/// A started job: its messages, and the world's output for a run.
pub struct Running {
    lines: tokio::io::Lines<BufReader<tokio::net::unix::OwnedReadHalf>>,
    pub stdout: Option<pipe::Receiver>,
    pub stderr: Option<pipe::Receiver>,
    pub pid: Option<u32>,
    runner: Option<String>,
    /// `done` or `failed` was read.
    answered: bool,
    /// Who recovers after this job if it ends without its answer (`None`
    /// for a recovery job itself).
    recover: Option<Jobs>,
    /// A run's: whether a pre-made world serves it, and what its end makes
    /// next (`crate::premade`).
    pub served: Option<crate::premade::Served>,
}

impl Jobs {
    pub fn new(spawner: Arc<Spawner>, state: PathBuf) -> Jobs {
        Jobs { spawner, state }
    }

    /// Starts `job`; with `output`, the job's stdout and stderr come back
    /// as pipes (a world's own output).
    pub async fn start(&self, job: Job, output: bool) -> Result<Running, ApiError> {
        Ok(self.start_open(job, output, false).await?.0)
    }

    /// [`Jobs::start`]; with `open`, the control socket's writing half
    /// stays open for a later request (a standby's), and is returned.
    pub async fn start_open(
        &self,
        job: Job,
        output: bool,
        open: bool,
    ) -> Result<(Running, Option<tokio::net::unix::OwnedWriteHalf>), ApiError> {
        let recovery = matches!(job, Job::Recover { .. });
        let unavailable = |e: std::io::Error| ApiError::unavailable(format!("cannot start a job process: {e}"));
        let (ours, theirs) = std::os::unix::net::UnixStream::pair().map_err(unavailable)?;
        let mut fds: Vec<OwnedFd> = vec![theirs.into()];
        let mut readers = Vec::new();
        if output {
            for _ in 0..2 {
                let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| unavailable(e.into()))?;
                fds.push(w);
                readers.push(pipe::Receiver::from_owned_fd(r).map_err(unavailable)?);
            }
        }
        let sp = self.spawner.clone();
        // The descriptors are dropped (here, in this process) once handed over.
        tokio::task::spawn_blocking(move || sp.spawn(&fds))
            .await
            .map_err(|e| ApiError::internal(format!("job start: {e}")))?
            .map_err(unavailable)?;
        ours.set_nonblocking(true).map_err(unavailable)?;
        let stream = tokio::net::UnixStream::from_std(ours).map_err(unavailable)?;
        let (rd, mut wr) = stream.into_split();
        let mut line = serde_json::to_vec(&Envelope { state: self.state.clone(), job })
            .map_err(|e| ApiError::internal(format!("job request: {e}")))?;
        line.push(b'\n');
        wr.write_all(&line).await.map_err(|e| ApiError::internal(format!("job request: {e}")))?;
        let wr = match open {
            true => Some(wr),
            false => {
                let _ = wr.shutdown().await;
                None
            }
        };
        let mut readers = readers.into_iter();
        let mut r = Running {
            lines: BufReader::new(rd).lines(),
            stdout: readers.next(),
            stderr: readers.next(),
            pid: None,
            runner: None,
            answered: false,
            recover: (!recovery).then(|| self.clone()),
            served: None,
        };
        match r.next().await? {
            Some(Msg::Started { pid, runner }) => (r.pid, r.runner) = (Some(pid), runner),
            other => return Err(ended(other)),
        }
        Ok((r, wr))
    }

    /// Settles what a job that died left (after its process, runner tag
    /// `after`, is gone), in a job of its own; logs what was recovered.
    pub async fn recover(&self, after: Option<String>) -> Result<Recovered, ApiError> {
        let v = self.call(Job::Recover { after }).await?;
        let r: Recovered = serde_json::from_value(v).map_err(|e| ApiError::internal(format!("recovery: {e}")))?;
        r.log();
        Ok(r)
    }

    /// Runs a job to its end: its value, or its error.
    pub async fn call(&self, job: Job) -> Result<Value, ApiError> {
        let mut r = self.start(job, false).await?;
        loop {
            match r.next().await? {
                Some(Msg::Event { .. }) => continue,
                Some(Msg::Done { value }) => return Ok(value),
                other => return Err(ended(other)),
            }
        }
    }
}

/// The error of a job that did not end with `done`.
pub fn ended(m: Option<Msg>) -> ApiError {
    match m {
        Some(Msg::Failed { status, error, extra }) => {
            let status =
                axum::http::StatusCode::from_u16(status).unwrap_or(axum::http::StatusCode::INTERNAL_SERVER_ERROR);
            let e = ApiError::new(status, error);
            match extra {
                Some(x) => e.with(x),
                None => e,
            }
        }
        None => ApiError::internal("the job process ended without an answer (it was killed or crashed)"),
        Some(m) => ApiError::internal(format!("the job process said {m:?} out of turn")),
    }
}

impl Running {
    /// The job's next message (`None` once it has closed its socket). A
    /// job that closed it without its answer died: what it left is settled
    /// first (`Jobs::recover`), so that the error its request gets is the
    /// whole truth (its batch failed, its world kept or swept).
    pub async fn next(&mut self) -> Result<Option<Msg>, ApiError> {
        let line = self.lines.next_line().await.map_err(|e| ApiError::internal(format!("job: {e}")))?;
        let m = match line {
            None => None,
            Some(l) => Some(
                serde_json::from_str(&l)
                    .map_err(|e| ApiError::internal(format!("the job process said something unreadable: {e}")))?,
            ),
        };
        match &m {
            Some(Msg::Done { .. } | Msg::Failed { .. }) => self.answered = true,
            None if !self.answered => {
                if let Some(jobs) = self.recover.take() {
                    tracing::warn!(job = self.pid, "a job process ended without its answer");
                    // Boxed: a recovery is itself a job (which recovers nothing).
                    if let Err(e) = Box::pin(jobs.recover(self.runner.clone())).await {
                        tracing::error!(error = %e.message, "recovery after a job's death");
                    }
                }
            }
            _ => {}
        }
        Ok(m)
    }
}

/// Reads a pipe to its end, keeping the first `cap` bytes; returns them
/// and how many bytes came in all.
pub async fn read_capped(mut r: pipe::Receiver, cap: usize) -> (Vec<u8>, u64) {
    let mut kept = Vec::new();
    let mut total = 0u64;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match r.read(&mut buf).await {
            Ok(0) | Err(_) => return (kept, total),
            Ok(n) => {
                total += n as u64;
                let room = cap.saturating_sub(kept.len());
                kept.extend_from_slice(&buf[..n.min(room)]);
            }
        }
    }
}
