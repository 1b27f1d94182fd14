//! The service library (`cloche_service`) as a daemon will call it, in
//! process, with real worlds (root): a batch submitted, approved and run
//! with an observer that hears every step in order, its world committed
//! with a typed result, then discarded; a one-command run with its typed
//! report; the typed errors of missing and finished things; an entry's
//! output heard while it runs.
//!
//! Worlds are cloned from single-threaded processes only, so this file has
//! no test harness (`harness = false`): `main` runs every check on the one
//! thread of the process, and checks that it is the only one.

mod common;

use cloche_service::batch_run::{BatchEnd, BatchEvent, BatchObserver, Stream};
use cloche_service::commit::{CommitRequest, CommitStatus};
use cloche_service::{Context, Error, Options, RunRequest};
use common::*;
use std::path::Path;

fn main() {
    let fx = Fixture::new();
    let ctx = Context::new(Options { state_dir: Some(fx.state.path().to_path_buf()), env: None });
    a_batch_is_heard_step_by_step_committed_and_discarded(&fx, &ctx);
    output_is_heard_while_the_entry_runs(&fx, &ctx);
    missing_and_finished_things_are_typed_errors(&fx, &ctx);
    // Last: a run hands its world's mounts to a child process of their own.
    a_run_returns_its_typed_report(&fx, &ctx);
    drop(ctx);
    fx.finish();
    println!("service: ok");
}

fn threads() -> usize {
    std::fs::read_dir("/proc/self/task").unwrap().count()
}

/// Every event, as one line; an entry's output chunks joined per stream
/// and said when the entry ends (between the two streams, the order of
/// arrival is the pipes').
#[derive(Default)]
struct Heard {
    lines: Vec<String>,
    out: Vec<u8>,
    err: Vec<u8>,
}

impl BatchObserver for Heard {
    fn event(&mut self, e: BatchEvent<'_>) {
        let line = match e {
            BatchEvent::Note(n) => format!("note {n}"),
            BatchEvent::WorldStarted { .. } => "world started".into(),
            BatchEvent::EntryStarted { entry, index, of } => format!("start {index}/{of} {}", entry.command),
            BatchEvent::Output { stream, bytes, .. } => {
                match stream {
                    Stream::Stdout => self.out.extend_from_slice(bytes),
                    Stream::Stderr => self.err.extend_from_slice(bytes),
                }
                return;
            }
            BatchEvent::EntryFinished { result, .. } => {
                for (name, b) in [("stdout", std::mem::take(&mut self.out)), ("stderr", std::mem::take(&mut self.err))]
                {
                    if !b.is_empty() {
                        self.lines.push(format!("{name} {:?}", String::from_utf8_lossy(&b)));
                    }
                }
                format!("exit {}", result.exit_code)
            }
            BatchEvent::Cancelled { .. } => "cancelled".into(),
            BatchEvent::WorldKept { .. } => "kept".into(),
            BatchEvent::Discarded { world, .. } => format!("discarded {world}"),
            BatchEvent::RetentionFailed { error } => format!("retention failed {error}"),
        };
        self.lines.push(line);
    }
}

fn a_batch_is_heard_step_by_step_committed_and_discarded(fx: &Fixture, ctx: &Context) {
    let project = fx.dir().to_str().unwrap();
    let text = serde_json::json!({"agent": "a1", "project": project, "stop_on_failure": true, "entries": [
        {"command": "echo one; echo two >&2"},
        {"command": "echo new > b.txt"},
        {"command": "false"},
        {"command": "echo never"}]})
    .to_string();
    let batch = cloche_service::batch::parse_batch(&text).unwrap();
    let view = ctx.submit(batch, None, None, "uid:0").unwrap();
    assert_eq!(view.submitter, "agent:a1", "the batch's agent submits it");
    let id = view.id;
    ctx.broker().unwrap().approve(&id, None, "uid:0").unwrap();
    assert_eq!(threads(), 1, "worlds are cloned from a single-threaded process");
    let mut heard = Heard::default();
    let end = ctx.run_batch(&id, &mut heard).unwrap();
    assert_eq!(end, BatchEnd::Failed, "an entry exited 1: {:#?}", heard.lines);
    let want = [
        "world started",
        "start 0/4 echo one; echo two >&2",
        "stdout \"one\\n\"",
        "stderr \"two\\n\"",
        "exit 0",
        "start 1/4 echo new > b.txt",
        "exit 0",
        "start 2/4 false",
        "exit 1",
        "kept",
    ];
    assert_eq!(heard.lines, want, "each step once, in order; stop_on_failure ends the batch at `false`");
    assert_eq!(threads(), 1, "the batch runner starts no thread that outlives it");
    assert!(!fx.dir().join("b.txt").exists(), "the host is untouched before the commit");

    let r = ctx.commit(&id, &CommitRequest::default(), "uid:0").unwrap();
    assert!(matches!(r.status, CommitStatus::Applied { steps } if steps >= 1), "{r:?}");
    let applied: Vec<String> = r.applied.iter().map(|a| String::from_utf8_lossy(&a.path).into_owned()).collect();
    assert!(applied.iter().any(|p| Path::new(p) == fx.dir().join("b.txt")), "{applied:?}");
    assert_eq!(std::fs::read_to_string(fx.dir().join("b.txt")).unwrap(), "new\n");
    let doc = serde_json::to_value(&r).unwrap();
    let mut keys: Vec<&str> = doc.as_object().unwrap().keys().map(String::as_str).collect();
    keys.sort();
    assert_eq!(keys, ["applied", "conflicts", "error", "forced", "not_committed", "refused", "stripped"]);
    assert_eq!(ctx.broker().unwrap().get(&id).unwrap().state.to_string(), "committed");

    let d = ctx.discard(&id, "uid:0").unwrap();
    assert_eq!(d.batch.as_deref(), Some(id.as_str()));
    assert!(fx.worlds().is_empty(), "discarded: {:?}", fx.worlds());
}

/// The first line of an entry that prints, sleeps and prints again is heard
/// long before the entry ends (live, not when it is over), and all of it.
fn output_is_heard_while_the_entry_runs(fx: &Fixture, ctx: &Context) {
    let project = fx.dir().to_str().unwrap();
    let text = serde_json::json!({"agent": "a1", "project": project, "entries": [
        {"command": "echo first; sleep 1; echo second"}]})
    .to_string();
    let batch = cloche_service::batch::parse_batch(&text).unwrap();
    let id = ctx.submit(batch, None, None, "uid:0").unwrap().id;
    ctx.broker().unwrap().approve(&id, None, "uid:0").unwrap();
    let t0 = std::time::Instant::now();
    let mut chunks: Vec<(std::time::Duration, Vec<u8>)> = Vec::new();
    let mut finished = None;
    let mut obs = |e: BatchEvent<'_>| match e {
        BatchEvent::Output { stream: Stream::Stdout, bytes, .. } => chunks.push((t0.elapsed(), bytes.to_vec())),
        BatchEvent::EntryFinished { .. } => finished = Some(t0.elapsed()),
        _ => {}
    };
    assert_eq!(ctx.run_batch(&id, &mut obs).unwrap(), BatchEnd::Completed);
    let finished = finished.expect("the entry finished");
    let all: Vec<u8> = chunks.iter().flat_map(|(_, b)| b.clone()).collect();
    assert_eq!(all, b"first\nsecond\n");
    let first = chunks.first().expect("output heard").0;
    assert!(
        finished - first >= std::time::Duration::from_millis(700),
        "first output at {first:?}, end at {finished:?}"
    );
    ctx.discard(&id, "uid:0").unwrap();
}

fn missing_and_finished_things_are_typed_errors(fx: &Fixture, ctx: &Context) {
    assert!(matches!(ctx.review_target("0123456789abcdef"), Err(Error::NotFound(_))));
    assert!(matches!(ctx.discard("no-such-world", "uid:0"), Err(Error::NotFound(_))));
    let batch = cloche_service::batch::parse_batch(
        &serde_json::json!({"project": fx.dir().join("missing"), "entries": [{"command": "ls"}]}).to_string(),
    )
    .unwrap();
    let e = ctx.submit(batch, None, None, "uid:0").unwrap_err();
    assert!(matches!(e, Error::Project(_)), "{e:?}");
    assert!(e.to_string().starts_with("project "), "{e}");
    let e = "allow=1.2.3".parse::<cloche_service::net::NetArg>().unwrap_err();
    assert_eq!(e.to_string(), "--net allow=1.2.3: 1.2.3: not an IP address");
}

fn a_run_returns_its_typed_report(fx: &Fixture, ctx: &Context) {
    assert_eq!(threads(), 1, "worlds are cloned from a single-threaded process");
    let req = RunRequest {
        argv: vec!["/bin/sh".into(), "-c".into(), "echo hi > out.txt; exit 7".into()],
        cwd: fx.dir().to_path_buf(),
        pids: Some(64),
        ..RunRequest::default()
    };
    let prepared = ctx.prepare_run(req).unwrap();
    assert!(prepared.notes.is_empty(), "{:?}", prepared.notes);
    let done = ctx.run(prepared).unwrap();
    let r = &done.report;
    assert_eq!((r.exit_code, r.timed_out, r.kept.is_none()), (7, false, true));
    assert_eq!(r.limits.pids, 64);
    let out = fx.dir().join("out.txt");
    let added: Vec<&cloche_world::diff::Entry> = r.fs_diff.added.iter().collect();
    assert!(added.iter().any(|e| e.path.as_bytes() == out.as_os_str().as_encoded_bytes()), "{added:?}");
    assert!(!out.exists(), "the world's writes stay in the world");
    let doc: serde_json::Value = serde_json::from_slice(&r.to_json().unwrap()).unwrap();
    assert_eq!((doc["schema_version"].as_u64(), doc["network"]["mode"].as_str()), (Some(1), Some("none")));
}
