//! One world, one command: a typed request turned into a world [`Spec`],
//! run, and its [`Report`].
//!
//! Nothing here starts a thread or opens the broker before the world is
//! cloned: the world engine forks, and `cloche run`'s start is measured.

use crate::context::Context;
use crate::error::{Error, Result};
use crate::net::NetArg;
use crate::report::Report;
use cloche_policy::Policy;
use cloche_world::bpf_cache::{builtin_program, program_for};
use cloche_world::cgroup::Limits;
use cloche_world::spec::{Terminal, UpperStore};
use cloche_world::view::HiddenEntry;
use cloche_world::{Spec, StateDir};
use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

/// What `cloche run` asks for. `None` takes the policy's value.
#[derive(Default)]
pub struct RunRequest {
    /// The command and its arguments.
    pub argv: Vec<OsString>,
    /// Variables set in the world beyond the allowlisted ones of the
    /// context's environment, in order (a later one wins).
    pub env: Vec<(OsString, OsString)>,
    /// The working directory inside the world (absolute).
    pub cwd: PathBuf,
    /// The policy (limits, masks, seccomp, layers, network); `None`: the
    /// built-in one.
    pub policy: Option<Policy>,
    /// Memory limit in bytes.
    pub memory: Option<u64>,
    /// Limit on processes and threads.
    pub pids: Option<u64>,
    /// CPU bandwidth in cores.
    pub cpus: Option<f64>,
    /// The whole world is killed after this long (exit code 124).
    pub timeout: Option<Duration>,
    /// Absolute paths kept visible through the masks, beyond the policy's
    /// `fs.expose` ([`crate::values::expose_path`]).
    pub expose: Vec<PathBuf>,
    /// What the world may reach.
    pub net: Option<NetArg>,
    /// Where the world's writes live.
    pub upper: Option<UpperStore>,
    /// Keep the world for review instead of discarding it.
    pub keep: bool,
    /// Continue this kept world (its id): the command runs on top of what
    /// the world's earlier runs left, in its project (`cwd` empty: the
    /// world's; else it must be the world's), and the world stays kept
    /// (implies `keep`). Refused at once when the world is missing, not
    /// the caller's, in use, or would differ in what a continuation keeps
    /// (`cloche_world::continued::Frame`).
    pub world: Option<String>,
    /// Who asks (`uid:N`): whose worlds it may continue, the audit's actor;
    /// `None`: this process's user.
    pub actor: Option<String>,
    /// The user the world runs as (`cloched`: a caller other than root);
    /// `None`: root.
    pub user: Option<cloche_world::spec::WorldUser>,
    /// Who the world belongs to when it is kept (`uid:N`, `cloched`'s
    /// callers); `None`: nobody in particular (root's `cloche`).
    pub owner: Option<String>,
    /// Skip sha256 of changed files in the fs_diff.
    pub no_hash: bool,
    /// A world without root with no limits (no delegated cgroup): an
    /// explicit relaxation, said on stderr and in the report
    /// (`limits.none`); refused for root.
    pub no_limits: bool,
    /// The world's stdio.
    pub terminal: Terminal,
    /// Where the report will be written (`-`: stdout): checked before the
    /// world starts ([`crate::values::check_report`]).
    pub report: Option<PathBuf>,
    /// Nobody reads the run's report (`cloche run` without `--json`,
    /// `--report` or `--keep`): neither the fs_diff (about 0.15 ms of a
    /// short run) nor a scoped network's counters (0.08-0.11 ms) are
    /// gathered. Ignored when the world is kept.
    pub unread: bool,
    /// Told, by the world's parent before the world runs anything, which
    /// PATH entries the world hides ([`crate::project::hidden_path_note`]).
    pub path_note: Option<fn(&[HiddenEntry])>,
}

/// A request turned into a world's spec, ready to run.
pub struct PreparedRun {
    pub spec: Spec,
    /// What the request's explicit exposures unmask (said before the world
    /// starts).
    pub notes: Vec<String>,
    /// The kept world this run continues, held (`RunRequest::world`).
    taken: Option<cloche_world::continued::Taken>,
    /// Who asks.
    actor: String,
}

/// A finished run.
pub struct RunOutcome {
    pub report: Report,
    /// Why a kept world's base could not be recorded (a commit will then
    /// report conflicts).
    pub record_error: Option<String>,
}

impl Context {
    /// Turns a request and its policy into a validated world spec. Every
    /// value is checked before anything is created (the state directory,
    /// the world): a refusal changes nothing.
    pub fn prepare_run(&self, req: RunRequest) -> Result<PreparedRun> {
        let actor = req.actor.clone().unwrap_or_else(crate::uid_actor);
        let (spec, notes, taken) = self.prepare(req)?;
        Ok(PreparedRun { spec, notes, taken, actor })
    }

    /// [`Context::prepare_run`] without holding a kept world:
    /// the spec and the notes of its exposures (a pre-made world compares
    /// the spec a request would get with its own: `crate::premade`). A run
    /// that continues a kept world is never made ahead: refused here.
    pub fn prepare_spec(&self, req: RunRequest) -> Result<(Spec, Vec<String>)> {
        if req.world.is_some() {
            return Err(Error::Invalid("a run that continues a kept world is never made ahead".into()));
        }
        self.prepare(req).map(|(spec, notes, _)| (spec, notes))
    }

    fn prepare(&self, mut req: RunRequest) -> Result<(Spec, Vec<String>, Option<cloche_world::continued::Taken>)> {
        let rootless = cloche_world::rootless::Caller::of_process();
        let delegated = match rootless {
            Some(_) => crate::rootless::check_request(&req)?,
            None if req.no_limits => {
                return Err(Error::Invalid(
                    "--no-limits is for a world without root: as root a world's limits are always set".into(),
                ))
            }
            None => None,
        };
        if let Some(r) = &req.report {
            crate::values::check_report(r)?;
        }
        // The kept world to continue, held from here (a second runner is
        // refused at once); the run works in its project.
        let taken = match &req.world {
            Some(id) => {
                let actor = req.actor.clone().unwrap_or_else(crate::uid_actor);
                let t = self.take_world(id, &actor)?;
                let project = t.world().cwd.clone().map(PathBuf::from).unwrap_or_default();
                if req.cwd.as_os_str().is_empty() {
                    req.cwd = project;
                } else if std::fs::canonicalize(&req.cwd).unwrap_or_else(|_| req.cwd.clone()) != project {
                    return Err(Error::Invalid(format!(
                        "world {id} works in {}: a run that continues it works there (its masks and commit roots \
                         are that project's), not in {}",
                        project.display(),
                        req.cwd.display()
                    )));
                }
                if req.upper.is_some() {
                    return Err(Error::Invalid(format!(
                        "world {id} keeps its files where they are (its subvolume of the disk pool): --upper does \
                         not apply to a run that continues it"
                    )));
                }
                Some(t)
            }
            None => None,
        };
        if req.cwd.as_os_str().is_empty() {
            return Err(Error::Invalid("the working directory is missing".into()));
        }
        // `--policy`, else the policy bound to the world's directory (`cloche
        // policy set`, as for batches and the daemon's runs), else the
        // built-in one. A store that cannot be read is an error, never the
        // built-in policy in its place.
        let policy = match req.policy {
            Some(p) => p,
            None => self.resolve_for_run(&crate::policy_store::project_key(&req.cwd)?)?.1,
        };
        let state = self.state()?;
        let mut spec = policy_spec(self, &policy, state, req.cwd)?;
        cloche_world::profile::mark("cli: policy, state dir, seccomp program");
        spec.argv = req.argv;
        spec.env = self.world_env(&req.env);
        spec.limits = Limits {
            memory: req.memory.unwrap_or(spec.limits.memory),
            pids: req.pids.unwrap_or(spec.limits.pids),
            cpus: req.cpus.unwrap_or(spec.limits.cpus),
        };
        if req.timeout.is_some() {
            spec.timeout = req.timeout;
        }
        spec.expose.extend(req.expose);
        spec.keep = req.keep || taken.is_some();
        spec.user = req.user;
        spec.owner = match &taken {
            Some(t) => t.world().owner.clone(),
            None => req.owner,
        };
        if let Some(u) = req.upper {
            spec.upper = u;
        }
        if let Some(n) = &req.net {
            spec.net = crate::net::spec(n, &policy.network)?;
        }
        spec.hash = !req.no_hash;
        spec.unread = req.unread; // (a kept world gathers its outcome whatever it says)
        spec.terminal = req.terminal;
        let relaxed = match rootless {
            Some(caller) => crate::rootless::apply(&mut spec, caller, req.no_limits, delegated)?,
            None => None,
        };
        spec.validate().map_err(|e| Error::Spec(e.to_string()))?;
        // The cwd is exposed: the world's plan refuses it if it is `/`, a
        // home itself or a secret. Exposures that unmask are said here.
        let mut notes = crate::project::note_exposures(&spec, state)?;
        notes.extend(relaxed);
        // The PATH entries the world hides are said by the world's parent,
        // from the view its mount plan is built from, off the critical path.
        spec.path_note = req.path_note;
        if let Some(t) = &taken {
            // What a continuation keeps: the user, the project, the host
            // mounts, what is hidden (a refusal here changes nothing).
            t.check(&spec, state).map_err(|e| match e {
                cloche_world::WorldError::Kept(k) => crate::session::kept_error(k),
                e => e.into(),
            })?;
        }
        Ok((spec, notes, taken))
    }

    /// Runs a prepared world to its end. Nothing after the world clones
    /// another: its mounts go away in a child process of their own (not
    /// waited for) while the caller writes the report; the process must
    /// not start a world after this, and should exit soon (the child is
    /// reaped when it does).
    pub fn run(&self, prepared: PreparedRun) -> Result<RunOutcome> {
        let PreparedRun { spec, taken, actor, .. } = prepared;
        let started_ms = crate::session::now_ms();
        let mut outcome = match taken {
            None => cloche_world::run(&spec, self.state()?)?,
            Some(t) => {
                // Audited before the world changes (the broker is opened for
                // it: a continued run's only extra work before its world).
                let argv: Vec<String> = spec.argv.iter().map(|a| a.to_string_lossy().into_owned()).collect();
                self.audit_continue(t.id(), t.next_run(), None, &actor, serde_json::json!({"command": argv}))?;
                cloche_world::continue_run(&spec, self.state()?, t).map_err(|e| match e {
                    cloche_world::WorldError::Kept(k) => crate::session::kept_error(k),
                    e => e.into(),
                })?
            }
        };
        tracing::debug!(world = %outcome.world, exit_code = outcome.exit_code, total_ms = outcome.timings.total_ms, "world ended");
        let teardown = std::mem::take(&mut outcome.teardown);
        match outcome.kept.is_some() {
            // Released now: a run that continues the world mounts its upper
            // again, which overlayfs refuses while an earlier mount of it
            // lives.
            true => drop(teardown),
            false => teardown.in_background(),
        }
        cloche_world::profile::dump("parent");
        let report = Report::new(&spec, outcome);
        // Each run of a kept world: what it changed (attributed to it) and
        // the base of each path it changed first, for `cloche commit` to
        // detect host changes made since; the run itself (`runs.jsonl`).
        let record_error = match (&report.kept, report.world_run) {
            (Some(_), Some(n)) => {
                let delta = report.run_fs_diff.as_ref().unwrap_or(&report.fs_diff);
                let r = cloche_world::continued::RunRecord {
                    run: n,
                    kind: "run".into(),
                    batch: None,
                    command: report.command.clone(),
                    actor: Some(actor),
                    policy: None,
                    started_ms,
                    ended_ms: crate::session::now_ms(),
                    exit_code: report.exit_code,
                    changes: delta.totals,
                };
                self.record_run(&report.world, &crate::session::run_label(n), delta, &r)
            }
            _ => None,
        };
        Ok(RunOutcome { report, record_error })
    }
}

/// A world spec with everything from the policy (limits, masks, seccomp,
/// layers, network) and no command yet.
pub fn policy_spec(ctx: &Context, policy: &Policy, state: &StateDir, cwd: PathBuf) -> Result<Spec> {
    let cache = state.root.join("cache");
    let seccomp = match policy.seccomp_origin == cloche_policy::BUILTIN_SECCOMP {
        // The same text as the engine's own copy (`builtin_seccomp_is_the_engine_s`).
        true => builtin_program(&cache),
        false => program_for(&policy.seccomp_json, &cache),
    }
    .map_err(|e| Error::Seccomp { origin: policy.seccomp_origin.clone(), reason: e.to_string() })?;
    Ok(Spec {
        argv: Vec::new(),
        env: ctx.world_env(&[]),
        cwd,
        limits: Limits { memory: policy.limits.memory, pids: policy.limits.pids, cpus: policy.limits.cpus },
        timeout: (policy.limits.timeout > 0).then(|| Duration::from_secs(policy.limits.timeout)),
        upper: match policy.world.upper {
            cloche_policy::UpperStore::Disk => UpperStore::Disk,
            cloche_policy::UpperStore::Tmpfs => UpperStore::Tmpfs,
        },
        upper_size: policy.world.upper_size,
        hostname: policy.world.hostname.clone(),
        nofile: policy.limits.nofile,
        mask: policy.fs.mask.clone(),
        mask_homes: policy.fs.mask_homes,
        home_secrets: policy.fs.home_secrets.clone(),
        expose: policy.fs.expose.clone(),
        toolchains: cloche_world::spec::Toolchains {
            groups: policy.fs.toolchains.clone(),
            writable: policy.fs.toolchain_writable.clone(),
        },
        path_note: None,
        seccomp,
        keep: false,
        keep_interrupted: policy.retention.keep_interrupted,
        owner: None,
        net: crate::net::from_policy(&policy.network)?,
        require: policy.layers.require.clone(),
        hash: true,
        unread: false,
        terminal: Default::default(),
        user: None,
        userns: userns_range(&policy.world)?,
        rootless: None,
        no_limits: false,
        delegated: None,
    })
}

/// The host ids a policy's worlds map to (`[world] userns`, `userns_ids`,
/// else /etc/subuid and /etc/subgid); `None` when the policy turns user
/// namespaces off. (That none is a user or group of the host is checked by
/// the engine while the world's child mounts: `userns::IdRange::check_host`.)
pub fn userns_range(world: &cloche_policy::WorldSection) -> Result<Option<cloche_world::userns::IdRange>> {
    use cloche_world::userns::IdRange;
    if !world.userns {
        return Ok(None);
    }
    let range = match world.userns_ids {
        Some((start, count)) => IdRange::new(start, count).map_err(|e| format!("world.userns_ids: {e}")),
        None => IdRange::from_system(),
    };
    range.map(Some).map_err(|e| Error::Spec(format!("user namespace: {e}")))
}

#[cfg(test)]
mod tests {
    /// `policy_spec` gives a policy whose profile is `builtin:default` the
    /// engine's program of its own copy of that profile: the two copies
    /// must be the same text.
    #[test]
    fn builtin_seccomp_is_the_engine_s() {
        assert_eq!(cloche_policy::DEFAULT_SECCOMP, cloche_world::seccomp::DEFAULT_PROFILE_JSON);
        let p = cloche_policy::Policy::builtin();
        assert_eq!(p.seccomp_origin, cloche_policy::BUILTIN_SECCOMP);
        assert_eq!(p.seccomp_json, cloche_world::seccomp::DEFAULT_PROFILE_JSON);
    }
}
