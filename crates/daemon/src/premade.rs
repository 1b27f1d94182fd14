//! Pre-made worlds, the daemon's side: a few worlds made ahead, each for
//! the shape of a run served before (its body but for argv, env and
//! timeout, and its caller), each waiting in a job process of its own
//! (`jobs::premade`) for one request. `POST /v1/run` takes one of its
//! shape and caller if there is one ready, else starts a world as before;
//! after a run, one is made for its shape (at most `premade.worlds` in
//! all, each dropped after `premade.idle_secs` unused). A dropped standby's
//! job ends its world; so does every standby's when the daemon stops (its
//! control socket reads EOF, also after `kill -9`), and [`Premade::shutdown`]
//! waits for them. docs/architecture.md, *Pre-made worlds*.

use crate::error::ApiError;
use crate::jobs::premade::Request;
use crate::jobs::run::RunBody;
use crate::jobs::{Job, Jobs, Msg, Running};
use cloche_service::HostUser;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;
use tokio::net::unix::OwnedWriteHalf;

/// How long a standby may take to be made.
const MAKE_TIMEOUT: Duration = Duration::from_secs(30);

/// The standbys.
pub struct Premade {
    /// The most standbys at once (0: none).
    cap: usize,
    idle: Duration,
    ready: Mutex<Vec<Standby>>,
    /// Standbys being made.
    making: AtomicUsize,
    /// Standby jobs not yet ended (ready, being made or being ended).
    alive: AtomicUsize,
    closed: AtomicBool,
}

struct Standby {
    key: String,
    made: Instant,
    job: Running,
    ctl: OwnedWriteHalf,
}

/// What a run was served by, and the standby its end makes.
pub struct Served {
    pub premade: bool,
    next: Option<(Arc<Premade>, Jobs, String, RunBody, HostUser)>,
}

impl Drop for Served {
    /// The run is over (its answer given): a standby for its shape.
    fn drop(&mut self) {
        if let Some((p, jobs, key, body, caller)) = self.next.take() {
            p.make(jobs, key, body, caller);
        }
    }
}

/// The shape of a run: its caller and its body but for argv, env and
/// timeout; `None` for a run never served by a pre-made world (`keep`, or
/// one that continues a kept world).
pub fn key(body: &RunBody, caller: &HostUser) -> Option<String> {
    if body.keep || body.world.is_some() {
        return None;
    }
    let shape = RunBody { argv: Vec::new(), env: Default::default(), timeout: None, ..body.clone() };
    serde_json::to_string(&(caller, shape)).ok()
}

impl Premade {
    pub fn new(cap: usize, idle: Duration) -> Arc<Premade> {
        Arc::new(Premade {
            cap,
            idle,
            ready: Mutex::new(Vec::new()),
            making: AtomicUsize::new(0),
            alive: AtomicUsize::new(0),
            closed: AtomicBool::new(false),
        })
    }

    /// Drops the standbys unused for longer than the idle time (every
    /// second, on the runtime).
    pub fn expire_every_second(self: &Arc<Self>) {
        if self.cap == 0 {
            return;
        }
        let me = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tick.tick().await;
                let Some(p) = me.upgrade() else { return };
                let old: Vec<Standby> = match p.ready.lock() {
                    Ok(mut r) => {
                        let (old, keep) = r.drain(..).partition(|s: &Standby| s.made.elapsed() >= p.idle);
                        *r = keep;
                        old
                    }
                    Err(_) => return,
                };
                for s in old {
                    tracing::info!(job = s.job.pid, "a pre-made world expired");
                    p.end(s);
                }
            }
        });
    }

    /// Starts `caller`'s run: in a ready standby of its shape when there
    /// is one that accepts it, else in a world made now (a `Job::Run`).
    pub async fn start_run(
        self: &Arc<Self>,
        jobs: &Jobs,
        body: RunBody,
        caller: HostUser,
        stream: bool,
    ) -> Result<Running, ApiError> {
        let key = if self.cap > 0 { key(&body, &caller) } else { None };
        if let Some(k) = &key {
            while let Some(mut s) = self.take(k) {
                match self.hand(&mut s, &body, stream).await {
                    Ok(()) => {
                        self.alive.fetch_sub(1, Ordering::SeqCst);
                        tracing::info!(job = s.job.pid, "run served by a pre-made world");
                        // It reads nothing more: its control socket's writing half goes.
                        let Standby { mut job, .. } = s;
                        let next = Some((self.clone(), jobs.clone(), k.clone(), body, caller));
                        job.served = Some(Served { premade: true, next });
                        return Ok(job);
                    }
                    Err(why) => {
                        tracing::info!(job = s.job.pid, why, "a pre-made world declined a run");
                        self.end(s);
                    }
                }
            }
        }
        let job = Job::Run { run: body.clone(), caller: caller.clone(), stream };
        let mut job = jobs.start(job, true).await?;
        job.served = Some(Served { premade: false, next: key.map(|k| (self.clone(), jobs.clone(), k, body, caller)) });
        Ok(job)
    }

    /// A ready standby of shape `key`, taken from the list.
    fn take(&self, key: &str) -> Option<Standby> {
        let mut r = self.ready.lock().ok()?;
        let i = r.iter().position(|s| s.key == key && s.made.elapsed() < self.idle)?;
        Some(r.swap_remove(i))
    }

    /// Sends the run to a standby; `Ok` once it accepted it.
    async fn hand(&self, s: &mut Standby, body: &RunBody, stream: bool) -> Result<(), String> {
        let mut line = serde_json::to_vec(&Request { run: body.clone(), stream }).map_err(|e| e.to_string())?;
        line.push(b'\n');
        s.ctl.write_all(&line).await.map_err(|e| format!("its control socket: {e}"))?;
        match s.job.next().await {
            Ok(Some(Msg::Event { event })) if event["event"] == "accepted" => Ok(()),
            Ok(Some(Msg::Event { event })) => Err(event["why"].as_str().unwrap_or("declined").to_string()),
            Ok(other) => Err(format!("it said {other:?}")),
            Err(e) => Err(e.message),
        }
    }

    /// Makes a standby of shape `key` (after a run of that shape), within
    /// the cap: an older standby of another shape gives way.
    fn make(self: &Arc<Self>, jobs: Jobs, key: String, body: RunBody, caller: HostUser) {
        if self.cap == 0 || self.closed.load(Ordering::SeqCst) {
            return;
        }
        let evicted = {
            let Ok(mut r) = self.ready.lock() else { return };
            let count = r.len() + self.making.load(Ordering::SeqCst);
            if count < self.cap {
                None
            } else {
                // The oldest of another shape, when this shape has none.
                let oldest =
                    r.iter().enumerate().filter(|(_, s)| s.key != key).min_by_key(|(_, s)| s.made).map(|(i, _)| i);
                match oldest {
                    Some(i) if !r.iter().any(|s| s.key == key) => Some(r.swap_remove(i)),
                    _ => return,
                }
            }
        };
        if let Some(s) = evicted {
            self.end(s);
        }
        self.making.fetch_add(1, Ordering::SeqCst);
        self.alive.fetch_add(1, Ordering::SeqCst);
        let me = self.clone();
        tokio::spawn(async move {
            let made = tokio::time::timeout(MAKE_TIMEOUT, async {
                let (mut job, ctl) = jobs.start_open(Job::Standby { run: body, caller }, true, true).await?;
                match job.next().await? {
                    Some(Msg::Event { event }) if event["event"] == "ready" => {
                    tracing::info!(job = job.pid, world = %event["world"].as_str().unwrap_or(""), "a pre-made world is ready");
                    Ok((job, ctl))
                }
                    other => Err(crate::jobs::ended(other)),
                }
            })
            .await;
            me.making.fetch_sub(1, Ordering::SeqCst);
            match made {
                Ok(Ok((job, Some(ctl)))) => {
                    let s = Standby { key, made: Instant::now(), job, ctl };
                    match me.closed.load(Ordering::SeqCst) {
                        true => me.end(s),
                        false => match me.ready.lock() {
                            Ok(mut r) => r.push(s),
                            Err(_) => me.end(s),
                        },
                    }
                }
                Ok(Ok((_, None))) => {
                    me.alive.fetch_sub(1, Ordering::SeqCst);
                }
                Ok(Err(e)) => {
                    tracing::warn!(error = %e.message, "a pre-made world could not be made");
                    me.alive.fetch_sub(1, Ordering::SeqCst);
                }
                Err(_) => {
                    tracing::warn!("a pre-made world took too long to be made");
                    me.alive.fetch_sub(1, Ordering::SeqCst);
                }
            }
        });
    }

    /// Lets a standby go: its job ends its world and exits.
    fn end(self: &Arc<Self>, s: Standby) {
        let Standby { mut job, ctl, .. } = s;
        drop(ctl);
        let me = self.clone();
        tokio::spawn(async move {
            while let Ok(Some(_)) = job.next().await {}
            me.alive.fetch_sub(1, Ordering::SeqCst);
        });
    }

    /// The daemon stops: no standby is made any more, each is let go, and
    /// their worlds are waited for (at most `limit`).
    pub async fn shutdown(self: &Arc<Self>, limit: Duration) {
        self.closed.store(true, Ordering::SeqCst);
        let all: Vec<Standby> = self.ready.lock().map(|mut r| r.drain(..).collect()).unwrap_or_default();
        for s in all {
            self.end(s);
        }
        let until = Instant::now() + limit;
        while self.alive.load(Ordering::SeqCst) > 0 && Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}
