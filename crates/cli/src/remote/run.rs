//! `cloche run` through the daemon: the same options checked here first
//! (files and paths read as the caller), the world run by `cloched`
//! (`POST /v1/run?stream=true`) as the caller, its output written here as
//! it comes, then the report, the same lines and the same exit code as a
//! world run in this process.
//!
//! What cannot go through the daemon is refused, never ignored: `-t` and
//! `-i` (the daemon's worlds have no terminal and an empty stdin) and
//! `--policy` (the daemon's worlds take the policy bound to their cwd).

use super::http::Events;
use super::{here_hint, refusal, Client};
use crate::fail;
use crate::run::{ended, report_path, request, Ending, RunArgs};
use base64::Engine;
use serde_json::{json, Map, Value};
use std::io::Write;
use std::path::{Path, PathBuf};

pub fn main(mut client: Client, args: RunArgs) -> i32 {
    let report = report_path(&args);
    let body = match body(&client, args) {
        Ok(b) => b,
        Err(e) => return fail(e),
    };
    let answer = match client.open("POST", "/v1/run?stream=true", Some(&body), Vec::new(), None) {
        Ok(a) => a,
        Err(e) => return fail(e),
    };
    let status = answer.status;
    let stream = answer.header("content-type").is_some_and(|t| t.starts_with("text/event-stream"));
    if status != 200 || !stream {
        // An error, or a daemon that answers with the whole output at once.
        let v: Value = match answer.bytes() {
            Ok(b) => serde_json::from_slice(&b).unwrap_or(Value::Null),
            Err(e) => return fail(format!("the daemon at {}: {e}", client.socket().display())),
        };
        if status != 200 {
            return fail(refusal(status, &v));
        }
        return whole(report.as_deref(), &v);
    }
    streamed(&client, report.as_deref(), answer.events())
}

/// The request's body: every option checked as `cloche run` checks it,
/// in the same order, then what the daemon takes.
fn body(client: &Client, args: RunArgs) -> Result<Value, String> {
    let refuse = |what: &str, why: &str| {
        Err(format!("{what} cannot go through the daemon at {} ({why}){}", client.socket().display(), here_hint()))
    };
    if args.tty {
        return refuse("-t", "its worlds have no terminal");
    }
    if args.interactive {
        return refuse("-i", "its worlds' stdin is empty");
    }
    if args.policy.is_some() {
        return refuse("--policy", "its worlds take the policy bound to their cwd: cloche policy set");
    }
    let texts = [
        ("timeout", args.timeout.clone()),
        ("memory", args.memory.clone()),
        ("pids", args.pids.clone()),
        ("cpus", args.cpus.clone()),
        ("net", args.net.clone()),
        ("upper", args.upper.clone()),
    ];
    let req = request(args, None).map_err(|e| e.to_string())?;
    if req.no_limits {
        return Err("--no-limits: the daemon's worlds always have their limits (it is for a world without root, with no daemon: CLOCHE_SOCKET= cloche run ...)"
            .into());
    }
    if let Some(r) = &req.report {
        cloche_service::values::check_report(r).map_err(|e| e.to_string())?;
    }
    let text = |what: String, s: &std::ffi::OsStr| -> Result<String, String> {
        s.to_str().map(str::to_string).ok_or_else(|| format!("{what} is not UTF-8: it cannot go through the daemon"))
    };
    let argv = (req.argv.iter().enumerate())
        .map(|(i, a)| text(format!("argument {} of the command", i + 1), a))
        .collect::<Result<Vec<_>, _>>()?;
    // The variables as a world made here would have them (the allowlist
    // of this environment, then --env-file and -e): the daemon adds nothing.
    let mut env = Map::new();
    for (k, v) in cloche_world::spec::build_env(std::env::vars_os(), &req.env) {
        let name = text("a variable's name".into(), &k)?;
        env.insert(name.clone(), Value::String(text(format!("the value of {name}"), &v)?));
    }
    let path = |what: &str, p: &Path| text(format!("{what} {}", p.display()), p.as_os_str());
    let mut b = json!({
        "argv": argv,
        "cwd": path("the working directory", &req.cwd)?,
        "env": env,
        "expose": req.expose.iter().map(|p| path("--expose", p)).collect::<Result<Vec<_>, _>>()?,
        "keep": req.keep,
        "no_hash": req.no_hash,
    });
    if let Some(w) = &req.world {
        b["world"] = Value::String(w.clone());
    }
    for (k, v) in texts {
        if let Some(v) = v {
            b[k] = Value::String(v);
        }
    }
    Ok(b)
}

/// Writes the world's output as the events bring it, then ends as a world
/// run here ends.
fn streamed(client: &Client, report: Option<&Path>, mut events: Events) -> i32 {
    let mut output_error: Option<String> = None;
    loop {
        let e = match events.next_event() {
            Ok(Some(e)) => e,
            Ok(None) => return fail("the daemon closed the connection before the world ended"),
            Err(e) => return fail(format!("the daemon at {}: {e}", client.socket().display())),
        };
        let v: Value = serde_json::from_str(&e.data).unwrap_or(Value::Null);
        match e.kind.as_str() {
            "output" => {
                let bytes = v["data_b64"]
                    .as_str()
                    .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
                    .unwrap_or_default();
                let to_stdout = v["stream"] == "stdout";
                if let Err(err) = write_out(to_stdout, &bytes) {
                    // As a world run here: the rest is read and dropped.
                    if output_error.is_none() {
                        output_error = Some(format!("{}: {err}", if to_stdout { "stdout" } else { "stderr" }));
                    }
                }
            }
            "result" => return end(report, &v, output_error),
            "error" => return fail(refusal(v["status"].as_u64().unwrap_or(500) as u16, &v)),
            _ => {}
        }
    }
}

/// Writes what a world wrote, at once (a partial line shows too).
fn write_out(to_stdout: bool, bytes: &[u8]) -> std::io::Result<()> {
    match to_stdout {
        true => {
            let mut out = std::io::stdout().lock();
            out.write_all(bytes).and_then(|()| out.flush())
        }
        false => std::io::stderr().write_all(bytes),
    }
}

/// A daemon's answer with the output whole (`POST /v1/run` without
/// `stream`): the notes, the output, then the end.
fn whole(report: Option<&Path>, v: &Value) -> i32 {
    for n in v["notes"].as_array().into_iter().flatten().filter_map(Value::as_str) {
        eprintln!("{n}");
    }
    let mut output_error = None;
    for (name, to_stdout) in [("stdout", true), ("stderr", false)] {
        let bytes = match v[format!("{name}_b64")].as_str() {
            Some(b) => base64::engine::general_purpose::STANDARD.decode(b).unwrap_or_default(),
            None => v[name].as_str().unwrap_or_default().as_bytes().to_vec(),
        };
        if let Err(e) = write_out(to_stdout, &bytes) {
            output_error.get_or_insert(format!("{name}: {e}"));
        }
        if v[format!("{name}_truncated")] == true {
            output_error.get_or_insert(format!(
                "{name}: the daemon kept {} of {} bytes (its limits.run_output_bytes)",
                bytes.len(),
                v[format!("{name}_bytes")]
            ));
        }
    }
    end(report, v, output_error)
}

/// The report written here, and the lines and exit code of `cloche run`.
fn end(report: Option<&Path>, v: &Value, output_error: Option<String>) -> i32 {
    let r = &v["report"];
    if !r.is_object() {
        return fail("the daemon's answer has no report");
    }
    let written = report.map(|p| {
        let doc = serde_json::to_vec_pretty(r).map(|mut t| {
            t.push(b'\n');
            t
        });
        (p, doc.map_err(std::io::Error::other).and_then(|t| cloche_service::report::write_document(p, &t)))
    });
    let kept = r["kept"].as_str().map(PathBuf::from);
    let output_error = r["output_error"].as_str().map(str::to_string).or(output_error);
    let ending = Ending {
        world: r["world"].as_str().unwrap_or_default(),
        exit_code: r["exit_code"].as_i64().and_then(|c| i32::try_from(c).ok()).unwrap_or(crate::EXIT_CLOCHE),
        timed_out: r["timed_out"] == true,
        interrupted: r["interrupted"].as_i64().and_then(|s| i32::try_from(s).ok()),
        kept: kept.as_deref(),
        output_error: output_error.as_deref(),
        record_error: v["record_error"].as_str(),
    };
    ended(written, &ending)
}
