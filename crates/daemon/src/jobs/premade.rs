//! A pre-made world's job (forked by the spawner, one thread): makes the
//! world of a run's shape, says `ready`, waits on its control socket for
//! one request, serves it if the request's spec is of the world's shape
//! (else says `declined`), ends the world. Never a second command.
//! The daemon's side: [`crate::premade`].

use super::child::Out;
use super::run::RunBody;
use super::Msg;
use crate::error::{one_line, ApiError};
use cloche_service::{Context, HostUser};
use cloche_world::batch::{OutStream, World};
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::Mutex;
use std::time::Instant;

/// What the daemon sends a ready standby: the run it is to serve.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Request {
    pub run: RunBody,
    pub stream: bool,
}

/// The PATH note of the world, judged while it was made; said at the run
/// (with `stream`) as a world made on the spot says it.
static PATH_NOTE: Mutex<Option<String>> = Mutex::new(None);

fn keep_path_note(hidden: &[cloche_world::view::HiddenEntry]) {
    if let Ok(mut n) = PATH_NOTE.lock() {
        *n = cloche_service::project::hidden_path_note(hidden);
    }
}

fn event(out: &mut Out, name: &str, extra: serde_json::Value) {
    let mut e = json!({ "event": name });
    if let (Some(m), serde_json::Value::Object(x)) = (e.as_object_mut(), extra) {
        m.extend(x);
    }
    out.send(&Msg::Event { event: e });
}

/// The standby job: everything it says goes through `out`; nothing is
/// left to the caller.
pub fn standby(ctx: &Context, body: RunBody, caller: &HostUser, ctl: &UnixStream, out: &mut Out) {
    let fail = |out: &mut Out, e: ApiError| {
        out.send(&Msg::Failed { status: e.status.as_u16(), error: one_line(&e.message), extra: e.extra })
    };
    if body.keep {
        // A kept world is attached for review from its start: never made ahead.
        return fail(out, ApiError::bad_request("a kept world is never pre-made"));
    }
    let (mut spec, _) = match super::run::spec(ctx, &body, caller, Some(keep_path_note)) {
        Ok(s) => s,
        Err(e) => return fail(out, e),
    };
    let shape = cloche_service::premade::shape(&mut spec);
    let state = match ctx.state() {
        Ok(s) => s,
        Err(e) => return fail(out, e.into()),
    };
    let mut world = match World::start(&spec, state) {
        Ok(w) => w,
        Err(e) => return fail(out, ApiError::internal(format!("a pre-made world: {e}"))),
    };
    event(out, "ready", json!({ "world": world.id() }));
    // Wait for the one request (EOF: the daemon let the world go).
    let mut line = String::new();
    let read = BufReader::new(Read::take(ctl, 1 << 20)).read_line(&mut line);
    let t0 = Instant::now();
    let req = match read.ok().filter(|n| *n > 0).map(|_| serde_json::from_str::<Request>(&line)) {
        Some(Ok(r)) => r,
        Some(Err(e)) => {
            event(out, "declined", json!({ "why": format!("unreadable request: {e}") }));
            return end(world);
        }
        None => return end(world),
    };
    // The spec this request gets now, from the policy as it is now.
    let checked = super::run::spec(ctx, &req.run, caller, None).and_then(|(mut s, notes)| {
        match cloche_service::premade::shape(&mut s) == shape {
            true if !world.alive() => Err(ApiError::internal("the pre-made world is gone")),
            // The host as it is now: the world's masks and exposures were
            // decided when it was made (its PATH's toolchains too).
            true => world.plan_holds(&s).map(|()| (s, notes)).map_err(ApiError::conflict),
            false => Err(ApiError::conflict("the request's world differs from the pre-made one")),
        }
    });
    let (run_spec, notes) = match checked {
        Ok(x) => x,
        Err(e) => {
            event(out, "declined", json!({ "why": one_line(&e.message) }));
            return end(world);
        }
    };
    event(out, "accepted", json!({ "world": world.id() }));
    if req.stream {
        for n in &notes {
            eprintln!("{n}");
        }
        if let Some(n) = PATH_NOTE.lock().ok().and_then(|n| n.clone()) {
            eprintln!("{n}");
        }
    }
    let mut write = |s: OutStream, b: &[u8]| -> Option<String> {
        let r = match s {
            OutStream::Stdout => std::io::stdout().lock().write_all(b),
            OutStream::Stderr => std::io::stderr().lock().write_all(b),
        };
        r.err().map(|e| format!("the world's output: {e}"))
    };
    match ctx.run_premade(&mut world, &run_spec, t0, &mut write) {
        Ok(report) => match serde_json::to_value(&report) {
            Ok(report) => {
                out.send(&Msg::Done { value: json!({ "report": report, "notes": notes, "record_error": null }) })
            }
            Err(e) => fail(out, ApiError::internal(e.to_string())),
        },
        Err(e) => fail(out, e.into()),
    }
    // The answer is out: the output pipes end now, the world after.
    let _ = std::io::stdout().flush();
    close_output();
    end(world)
}

/// Ends the world (its init kills what is left; upper, cgroup, network go).
fn end(world: World<'_>) {
    if let Err(e) = world.finish() {
        eprintln!("cloched: ending a pre-made world: {e}");
    }
}

/// Points stdout and stderr at /dev/null: the daemon reads EOF on the
/// world's output while the world is ended.
fn close_output() {
    // SAFETY: open and dup2 onto this process's own standard descriptors.
    unsafe {
        let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR | libc::O_CLOEXEC);
        if null >= 0 {
            libc::dup2(null, 1);
            libc::dup2(null, 2);
            libc::close(null);
        }
    }
}
