//! What every use case works in: the state directory, the policy store, the
//! broker and the environment worlds take their variables from.
//!
//! A context opens nothing until a use case needs it: `cloche run` checks
//! every option before the state directory is made (a refused request
//! changes nothing) and never opens the broker's database. The world's
//! init is embedded in the binary (`cloche_world::init`): there is nothing
//! to locate.

use crate::classifier::PolicyClassifier;
use crate::error::{Error, Result};
use cloche_broker::{Broker, Config};
use cloche_policy::store::Store;
use cloche_policy::Policy;
use cloche_world::spec::build_env;
use cloche_world::StateDir;
use std::cell::{OnceCell, RefCell, RefMut};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How to open a [`Context`].
#[derive(Debug, Default, Clone)]
pub struct Options {
    /// The state directory; default `CLOCHE_STATE_DIR`, else /var/lib/cloche.
    pub state_dir: Option<PathBuf>,
    /// The variables worlds take PATH, HOME, LANG, ... from (the
    /// allowlist of `cloche_world::spec::build_env`); default: this
    /// process's environment, read when a world is made.
    pub env: Option<Vec<(OsString, OsString)>>,
}

/// The state directory, its policy store and its broker, opened on first use.
pub struct Context {
    state_path: PathBuf,
    state: OnceCell<StateDir>,
    broker: RefCell<Option<Broker>>,
    env: Option<Vec<(OsString, OsString)>>,
}

impl Context {
    /// A context; nothing is opened or created yet.
    pub fn new(opts: Options) -> Context {
        Context {
            state_path: opts.state_dir.unwrap_or_else(cloche_world::state::state_dir_from_env),
            state: OnceCell::new(),
            broker: RefCell::new(None),
            env: opts.env,
        }
    }

    /// A context with its state directory opened (made if missing).
    pub fn open(opts: Options) -> Result<Context> {
        let ctx = Context::new(opts);
        ctx.state()?;
        Ok(ctx)
    }

    /// The state directory's path, as given (not opened).
    pub fn state_path(&self) -> &Path {
        &self.state_path
    }

    /// The state directory, opened (and made) on first use.
    pub fn state(&self) -> Result<&StateDir> {
        if let Some(s) = self.state.get() {
            return Ok(s);
        }
        let s = StateDir::open(&self.state_path)
            .map_err(|source| Error::State { path: self.state_path.clone(), source })?;
        tracing::debug!(state_dir = %self.state_path.display(), "state directory open");
        Ok(self.state.get_or_init(|| s))
    }

    /// The state directory, for what reads or removes kept worlds: refused
    /// when its disk pool exists but cannot be attached (listing no world
    /// would be a wrong answer).
    pub fn kept_state(&self) -> Result<&StateDir> {
        let state = self.state()?;
        state.pool_ready().map_err(|source| Error::State { path: self.state_path.clone(), source })?;
        Ok(state)
    }

    /// The policy store of the state directory.
    pub fn store(&self) -> Result<Store> {
        Store::open(&self.state()?.root).map_err(|e| Error::Policy(e.to_string()))
    }

    /// The policy that applies to `project` (its id and the loaded version).
    pub fn resolve(&self, project: &str) -> Result<(String, Policy)> {
        self.store()?.resolve(project).map_err(|e| Error::Policy(e.to_string()))
    }

    /// As [`Context::resolve`], for a world's run, which never classifies:
    /// the stored version's examples are not classified again (they were
    /// when it was stored; `Store::load_for_run`).
    pub fn resolve_for_run(&self, project: &str) -> Result<(String, Policy)> {
        self.store()?.resolve_for_run(project).map_err(|e| Error::Policy(e.to_string()))
    }

    /// A stored policy version by id (`builtin` too).
    pub fn load_version(&self, id: &str) -> Result<Policy> {
        self.store()?.load(id).map_err(|e| Error::Policy(e.to_string()))
    }

    /// The broker for what classifies nothing new (the built-in policy's
    /// limits), opened on first use. Borrowed for one use case at a time.
    pub fn broker(&self) -> Result<RefMut<'_, Broker>> {
        let mut b = self.broker.borrow_mut();
        if b.is_none() {
            *b = Some(self.open_broker_with(&Policy::builtin(), PolicyClassifier::builtin())?);
        }
        Ok(RefMut::map(b, |b| b.as_mut().expect("opened above")))
    }

    /// A broker classifying with `classifier`, sized by `policy` (entry
    /// limit, approval lifetime of new batches).
    pub(crate) fn open_broker_with(&self, policy: &Policy, classifier: PolicyClassifier) -> Result<Broker> {
        let state = self.state()?;
        let config = Config {
            max_entries: policy.batch.max_entries,
            approval_ttl: Duration::from_secs(policy.batch.approval_ttl),
            budgets: crate::agents::budgets_of(policy),
            ..Config::default()
        };
        let broker = Broker::open(&state.root, config, Box::new(classifier))?;
        tracing::debug!(policy = %policy.origin, recovered = broker.recovered_at_open().len(), "broker open");
        Ok(broker)
    }

    /// A world's environment: the allowlisted variables of [`Options::env`]
    /// (or of this process), then `extra` (which wins).
    pub fn world_env(&self, extra: &[(OsString, OsString)]) -> Vec<(OsString, OsString)> {
        match &self.env {
            Some(env) => build_env(env.iter().cloned(), extra),
            None => build_env(std::env::vars_os(), extra),
        }
    }
}

/// The actor of what this process does, as the broker and the audit log
/// name it: `uid:<uid>`.
pub fn uid_actor() -> String {
    // SAFETY: getuid has no preconditions.
    format!("uid:{}", unsafe { libc::getuid() })
}

/// Whether this process runs as root (worlds need it).
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::RunRequest;

    #[test]
    fn nothing_is_made_before_it_is_needed() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let ctx = Context::new(Options { state_dir: Some(state.clone()), env: None });
        let req = RunRequest {
            argv: vec!["true".into()],
            cwd: "/".into(),
            report: Some(dir.path().join("missing/r.json")),
            ..RunRequest::default()
        };
        let e = ctx.prepare_run(req).err().expect("a report in a missing directory is refused");
        // (Not root: refused alike, or first for want of a delegated cgroup.)
        assert!(matches!(e, Error::Invalid(_)), "{e:?}");
        assert!(!state.exists(), "a refused request made the state directory");
        assert_eq!(ctx.state().unwrap().root, state.canonicalize().unwrap());
        assert!(state.join("worlds").is_dir());
    }

    #[test]
    fn a_world_takes_the_allowlisted_variables_then_the_extra_ones() {
        let env = [("PATH", "/opt/bin"), ("AWS_SECRET_ACCESS_KEY", "k"), ("LANG", "C")];
        let env = env.iter().map(|(k, v)| (OsString::from(k), OsString::from(v))).collect();
        let ctx = Context::new(Options { state_dir: None, env: Some(env) });
        let got = ctx.world_env(&[("LANG".into(), "fr_FR.UTF-8".into()), ("A".into(), "1".into())]);
        let get = |k: &str| got.iter().rev().find(|(n, _)| n == k).map(|(_, v)| v.to_str().unwrap().to_string());
        assert_eq!(get("PATH").as_deref(), Some("/opt/bin"));
        assert_eq!(get("AWS_SECRET_ACCESS_KEY"), None, "not on the allowlist");
        assert_eq!((get("LANG").as_deref(), get("A").as_deref()), (Some("fr_FR.UTF-8"), Some("1")));
    }
}
