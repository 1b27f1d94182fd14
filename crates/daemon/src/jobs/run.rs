//! `POST /v1/run`: one command in a world, for a caller, with its report.
//!
//! The world takes the policy bound to its cwd (`cloche policy set`; the
//! default binding, else the built-in policy): the daemon's callers do not
//! bring their own. Values use `cloche run`'s grammar (`"512M"`, `"2.5"`);
//! numbers are taken as they are. The world's stdin is empty; its stdout
//! and stderr come back in the answer, each up to the daemon's limit.

use crate::error::ApiError;
use cloche_service::values::{expose_path, parse_cpus, parse_memory, parse_pids, parse_timeout};
use cloche_service::{Context, HostUser, RunRequest};
use cloche_world::spec::Terminal;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// The body of `POST /v1/run` (docs/api/openapi.json, `RunRequest`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunBody {
    /// The command and its arguments.
    pub argv: Vec<String>,
    /// The working directory in the world (absolute); with `world`, the
    /// world's project when absent (and it must be that project if given).
    #[serde(default)]
    pub cwd: String,
    /// Variables beyond PATH's default.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Seconds (a number, or `cloche run --timeout`'s text).
    #[serde(default)]
    pub timeout: Option<Value>,
    /// Bytes (a number, or text such as `"512M"`).
    #[serde(default)]
    pub memory: Option<Value>,
    #[serde(default)]
    pub pids: Option<Value>,
    #[serde(default)]
    pub cpus: Option<Value>,
    /// `none` or `allow=DEST,...`.
    #[serde(default)]
    pub net: Option<String>,
    /// `disk` or `tmpfs`.
    #[serde(default)]
    pub upper: Option<String>,
    /// Paths kept visible through the masks.
    #[serde(default)]
    pub expose: Vec<String>,
    /// Keep the world for review.
    #[serde(default)]
    pub keep: bool,
    /// A kept world of the caller's to run in (its id): the command runs
    /// on top of what its earlier runs left, and the world stays kept.
    #[serde(default)]
    pub world: Option<String>,
    #[serde(default)]
    pub no_hash: bool,
}

impl RunBody {
    /// What the daemon checks before it starts a job: the shape.
    pub fn check(&self) -> Result<(), ApiError> {
        if self.argv.is_empty() || self.argv[0].is_empty() {
            return Err(ApiError::bad_request("argv: a command is needed"));
        }
        let nul = |s: &str| s.contains('\0');
        if self.argv.iter().any(|a| nul(a)) || self.env.iter().any(|(k, v)| nul(k) || nul(v)) {
            return Err(ApiError::bad_request("argv and env: no NUL bytes"));
        }
        if self.env.keys().any(|k| k.is_empty() || k.contains('=')) {
            return Err(ApiError::bad_request("env: names are not empty and hold no ="));
        }
        if let Some(w) = &self.world {
            if !cloche_world::state::valid_id(w) {
                let shown: String = w.chars().take(40).collect();
                return Err(ApiError::bad_request(format!(
                    "world {shown:?}: a kept world's id, 16 lower-case hex digits"
                )));
            }
        } else if self.cwd.is_empty() {
            return Err(ApiError::bad_request("cwd: an absolute directory is needed (or a world to continue)"));
        }
        let cwd = (!self.cwd.is_empty()).then_some(&self.cwd);
        for p in cwd.into_iter().chain(&self.expose) {
            cloche_broker::normalize_abs(p).map_err(|e| ApiError::bad_request(format!("{p:?}: {e}")))?;
        }
        Ok(())
    }
}

/// A number or the CLI's text, as the text.
fn text(name: &str, v: &Option<Value>) -> Result<Option<String>, ApiError> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(Value::Number(n)) => Ok(Some(n.to_string())),
        Some(_) => {
            Err(ApiError::new(axum::http::StatusCode::UNPROCESSABLE_ENTITY, format!("{name}: a number or a string")))
        }
    }
}

/// Says on this process's stderr (the world's stderr pipe) which PATH
/// entries the world hides, as `cloche run` does.
fn note_hidden_path(hidden: &[cloche_world::view::HiddenEntry]) {
    if let Some(line) = cloche_service::project::hidden_path_note(hidden) {
        eprintln!("{line}");
    }
}

/// The request a run's body makes for `caller`: checks the caller may read
/// what the world is given first.
fn request(
    ctx: &Context,
    body: &RunBody,
    caller: &HostUser,
    path_note: Option<fn(&[cloche_world::view::HiddenEntry])>,
) -> Result<RunRequest, ApiError> {
    body.check()?;
    let mut cwd = PathBuf::from(&body.cwd);
    if let Some(w) = &body.world {
        // A world of the caller's (anyone else's is one that does not
        // exist), in its project unless the body names it.
        let world = ctx.world_brief(w).map_err(|_| ApiError::not_found(format!("no kept world {w}")))?;
        ctx.check_world_owner(&world, &caller.actor())?;
        if cwd.as_os_str().is_empty() {
            cwd = world.cwd.map(PathBuf::from).unwrap_or_default();
        }
    }
    if !caller.is_root() {
        caller.check_readable("cwd", &cwd)?;
        for e in &body.expose {
            caller.check_readable("expose", Path::new(e))?;
        }
    }
    let key = cloche_service::policy_store::project_key(&cwd)?;
    let (_, policy) = ctx.resolve(&key)?;
    Ok(RunRequest {
        argv: body.argv.iter().map(OsString::from).collect(),
        env: body.env.iter().map(|(k, v)| (k.into(), v.into())).collect(),
        cwd,
        policy: Some(policy),
        memory: text("memory", &body.memory)?.as_deref().map(parse_memory).transpose()?,
        pids: text("pids", &body.pids)?.as_deref().map(parse_pids).transpose()?,
        cpus: text("cpus", &body.cpus)?.as_deref().map(parse_cpus).transpose()?,
        timeout: text("timeout", &body.timeout)?.as_deref().map(parse_timeout).transpose()?,
        expose: body.expose.iter().map(|p| expose_path(Path::new(p))).collect::<Result<_, _>>()?,
        net: body.net.as_deref().map(str::parse).transpose()?,
        upper: body
            .upper
            .as_deref()
            .map(|u| u.parse().map_err(|e| ApiError::bad_request(format!("upper: {e}"))))
            .transpose()?,
        keep: body.keep,
        world: body.world.clone(),
        actor: Some(caller.actor()),
        user: caller.world_user(),
        owner: (body.keep || body.world.is_some()).then(|| caller.actor()),
        no_hash: body.no_hash,
        no_limits: false,
        terminal: Terminal::Pipes,
        report: None,
        unread: false,
        path_note,
    })
}

/// The spec of a run's body for `caller`, without the network namespace
/// made ahead (a pre-made world's: `super::premade`).
pub fn spec(
    ctx: &Context,
    body: &RunBody,
    caller: &HostUser,
    path_note: Option<fn(&[cloche_world::view::HiddenEntry])>,
) -> Result<(cloche_world::Spec, Vec<String>), ApiError> {
    Ok(ctx.prepare_spec(request(ctx, body, caller, path_note)?)?)
}

/// The job: checks the caller may read what the world is given, runs it.
/// With `stream`, the notes of its exposures and of the PATH entries it
/// hides are said on the world's stderr before the command runs, as
/// `cloche run` says them.
pub fn job(ctx: &Context, body: RunBody, caller: &HostUser, stream: bool) -> Result<Value, ApiError> {
    let note = stream.then_some(note_hidden_path as fn(&[cloche_world::view::HiddenEntry]));
    let prepared = ctx.prepare_run(request(ctx, &body, caller, note)?)?;
    let notes = prepared.notes.clone();
    if stream {
        for n in &notes {
            eprintln!("{n}");
        }
    }
    let done = ctx.run(prepared)?;
    if done.report.kept.is_some() {
        let state = ctx.state()?;
        crate::owners::write(&state.root, &done.report.world, caller)
            .map_err(|e| ApiError::internal(format!("world {}: recording its owner: {e}", done.report.world)))?;
    }
    let report = serde_json::to_value(&done.report).map_err(|e| ApiError::internal(e.to_string()))?;
    Ok(json!({ "report": report, "notes": notes, "record_error": done.record_error }))
}
