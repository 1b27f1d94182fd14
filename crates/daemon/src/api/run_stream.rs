//! `POST /v1/run?stream=true`: a one-command world whose output comes as
//! it is written, as Server-Sent Events (what `cloche run` prints through
//! the daemon).
//!
//! The answer is 200 `text/event-stream` once the job process started
//! (a refusal before that is the usual status and `{"error"}`). Events:
//! `output` (`{"stream": "stdout"|"stderr", "data_b64"}`, every byte, in
//! the order the pipes delivered them); then `result` (the answer of
//! `POST /v1/run` without the output itself: `report`, `exit_code`,
//! `notes`, `record_error`, `stdout_bytes`, `stderr_bytes`) or `error`
//! (`{"status", "error"}` and what the refusal carries). The world's
//! stderr carries what `cloche run` says before the command runs (the
//! notes of its exposures, the PATH entries it hides). A comment line
//! every second keeps the connection checked: a client that went away
//! stops its world (SIGTERM to the job process: the world is killed and
//! discarded, as when `cloche run` is interrupted).

use super::App;
use crate::error::ApiError;
use crate::identity::Caller;
use crate::jobs::run::RunBody;
use crate::jobs::{ended, Msg, Running};
use axum::body::{Body, Bytes};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use http_body_util::channel::{Channel, Sender};
use serde_json::{json, Value};
use std::convert::Infallible;
use std::time::Duration;
use tokio::io::AsyncReadExt;
use tokio::net::unix::pipe;
use tokio::sync::mpsc;

/// How long the output may go on after the job's answer.
const GRACE: Duration = Duration::from_secs(10);

pub async fn run(app: App, c: Caller, body: RunBody) -> Result<Response, ApiError> {
    let mut job = app.premade.start_run(&app.jobs, body, c.host_user(), true).await?;
    let (Some(out), Some(err)) = (job.stdout.take(), job.stderr.take()) else {
        return Err(ApiError::internal("the run's output pipes are missing"));
    };
    let (tx, rx) = Channel::<Bytes, Infallible>::new(16);
    tokio::spawn(forward(job, out, err, tx));
    let headers = [(header::CONTENT_TYPE, "text/event-stream"), (header::CACHE_CONTROL, "no-cache")];
    Ok((headers, Body::new(rx)).into_response())
}

/// One event.
fn frame(kind: &str, data: &Value) -> Bytes {
    Bytes::from(format!("event: {kind}\ndata: {data}\n\n"))
}

/// Reads a pipe to its end, chunk by chunk, into `tx`.
async fn pump(mut r: pipe::Receiver, name: &'static str, tx: mpsc::Sender<(&'static str, Vec<u8>)>) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match r.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if tx.send((name, buf[..n].to_vec())).await.is_err() {
                    return;
                }
            }
        }
    }
}

/// The stream's writer: output as it comes, a keep-alive each second,
/// then the job's end once both pipes ended (or `GRACE` after its answer).
async fn forward(mut job: Running, out: pipe::Receiver, err: pipe::Receiver, mut tx: Sender<Bytes, Infallible>) {
    let (ctx, mut chunks) = mpsc::channel(16);
    tokio::spawn(pump(out, "stdout", ctx.clone()));
    tokio::spawn(pump(err, "stderr", ctx));
    let pid = job.pid;
    // Dropped when the answer is out (the next pre-made world is made then).
    let served = job.served.take();
    let mut end = tokio::spawn(async move {
        loop {
            match job.next().await {
                Ok(Some(Msg::Event { .. })) => continue,
                Ok(Some(Msg::Done { value })) => return Ok(value),
                Ok(other) => return Err(ended(other)),
                Err(e) => return Err(e),
            }
        }
    });
    let mut beat = tokio::time::interval(Duration::from_secs(1));
    let (mut totals, mut gone, mut answer, mut deadline) = ([0u64; 2], false, None, None);
    loop {
        let cut = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(d).await,
                None => std::future::pending().await,
            }
        };
        let sent = tokio::select! {
            c = chunks.recv() => match c {
                None => break,
                Some((name, bytes)) => {
                    totals[usize::from(name == "stderr")] += bytes.len() as u64;
                    let data = base64::engine::general_purpose::STANDARD.encode(&bytes);
                    gone || tx.send_data(frame("output", &json!({"stream": name, "data_b64": data}))).await.is_ok()
                }
            },
            a = &mut end, if answer.is_none() => {
                answer = Some(a.unwrap_or_else(|e| Err(ApiError::internal(format!("the run's reader: {e}")))));
                deadline = Some(tokio::time::Instant::now() + GRACE);
                true
            },
            _ = beat.tick() => gone || tx.send_data(Bytes::from_static(b": \n\n")).await.is_ok(),
            _ = cut => break,
        };
        if !sent && !gone {
            // The client went away: its world is stopped, its output read and dropped.
            gone = true;
            tracing::info!(job = pid, "a streamed run's client went away: stopping its world");
            if let Some(p) = pid.and_then(|p| i32::try_from(p).ok()) {
                let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(p), nix::sys::signal::Signal::SIGTERM);
            }
        }
    }
    let answer = match answer {
        Some(a) => a,
        None => end.await.unwrap_or_else(|e| Err(ApiError::internal(format!("the run's reader: {e}")))),
    };
    let last = match answer {
        Ok(mut v) => {
            v["stdout_bytes"] = json!(totals[0]);
            v["stderr_bytes"] = json!(totals[1]);
            v["exit_code"] = v["report"]["exit_code"].clone();
            v["premade"] = json!(served.as_ref().is_some_and(|s| s.premade));
            frame("result", &v)
        }
        Err(e) => {
            let mut v = match e.extra {
                Some(Value::Object(m)) => Value::Object(m),
                _ => json!({}),
            };
            v["status"] = json!(e.status.as_u16());
            v["error"] = json!(crate::error::one_line(&e.message));
            frame("error", &v)
        }
    };
    if !gone {
        let _ = tx.send_data(last).await;
    }
    drop(served);
}
