//! The policy store: versions of policy files kept in cloche's state dir,
//! and which version applies to which project.
//!
//! ```text
//! <state>/policies/          0700
//!   versions/<sha256>/       one immutable version, named by its digest:
//!     policy.toml            the policy text as given
//!     seccomp.json           its seccomp profile, when not builtin:default
//!   bindings.json            {"default": ID, "projects": {"/abs/dir": ID}}
//!   .lock                    serializes changes (flock)
//! ```
//!
//! A version id is `sha256:<hex>` of the policy text, a NUL byte and the
//! profile text; `builtin` is the compiled-in default. A project's policy is
//! the binding of the project directory or of its nearest bound ancestor,
//! else the default binding, else `builtin`. A batch records the id it was
//! classified with, and runs with that very version even if the binding
//! changes in between. Only the operator changes bindings (`cloche policy
//! set`, audited as `policy_changed`); nothing a world or a batch file
//! contains is ever read as policy.

use crate::{Policy, PolicyError};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// Versions this process has loaded, by id. An id is the digest of the
/// version's files, which were checked against it when loaded: what it
/// names never changes.
static LOADED: std::sync::Mutex<BTreeMap<String, Policy>> = std::sync::Mutex::new(BTreeMap::new());
/// At most this many are kept (a later one is loaded from disk each time).
const MAX_LOADED: usize = 32;

/// The id of the compiled-in default policy.
pub const BUILTIN: &str = "builtin";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("policy store: {what} {path}: {source}")]
    Io { what: &'static str, path: PathBuf, source: io::Error },
    #[error(transparent)]
    Policy(#[from] PolicyError),
    #[error("policy store: {0}")]
    Invalid(String),
}

fn io_err<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> StoreError + 'a {
    move |source| StoreError::Io { what, path: path.to_path_buf(), source }
}

/// Which stored version applies where.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Bindings {
    /// For every project without a binding of its own (none: `builtin`).
    pub default: Option<String>,
    /// Project directory (absolute, normalized) to version id.
    #[serde(default)]
    pub projects: BTreeMap<String, String>,
}

impl Bindings {
    /// The id that applies to `project` and the directory it is bound at
    /// (`None` for the default binding or builtin).
    pub fn lookup(&self, project: &str) -> (String, Option<String>) {
        let mut dir = Some(Path::new(project));
        while let Some(d) = dir {
            if let Some(id) = d.to_str().and_then(|s| self.projects.get(s)) {
                return (id.clone(), d.to_str().map(str::to_string));
            }
            dir = d.parent();
        }
        (self.default.clone().unwrap_or_else(|| BUILTIN.to_string()), None)
    }
}

pub struct Store {
    dir: PathBuf,
}

impl Store {
    /// Opens (creating) `<state_root>/policies`.
    pub fn open(state_root: &Path) -> Result<Store, StoreError> {
        let dir = state_root.join("policies");
        let versions = dir.join("versions");
        fs::DirBuilder::new().recursive(true).mode(0o700).create(&versions).map_err(io_err("create", &versions))?;
        Ok(Store { dir })
    }

    /// The id a policy text (and its custom seccomp profile) is stored under.
    pub fn id_of(text: &str, seccomp: Option<&str>) -> String {
        let mut h = Sha256::new();
        h.update(text.as_bytes());
        h.update([0]);
        h.update(seccomp.unwrap_or("").as_bytes());
        format!("sha256:{}", h.finalize().iter().map(|b| format!("{b:02x}")).collect::<String>())
    }

    fn version_dir(&self, id: &str) -> Result<PathBuf, StoreError> {
        let hex = id.strip_prefix("sha256:").filter(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()));
        let hex = hex.ok_or_else(|| StoreError::Invalid(format!("{id:?} is not a policy version id")))?;
        Ok(self.dir.join("versions").join(hex.to_ascii_lowercase()))
    }

    /// Stores a policy text that loaded as `policy` (validated by the
    /// caller); returns its id. Storing the same text again is a no-op.
    pub fn add(&self, text: &str, policy: &Policy) -> Result<String, StoreError> {
        let seccomp = policy.custom_seccomp();
        let id = Store::id_of(text, seccomp);
        let dir = self.version_dir(&id)?;
        let _lock = self.lock()?;
        if dir.join("policy.toml").exists() {
            return Ok(id);
        }
        // Build the version beside its final name, then rename: a version is
        // there whole or not at all.
        let tmp = dir.with_extension(format!("tmp{}", std::process::id()));
        let _ = fs::remove_dir_all(&tmp);
        fs::DirBuilder::new().mode(0o700).create(&tmp).map_err(io_err("create", &tmp))?;
        let written = (|| {
            write_synced(&tmp.join("policy.toml"), text.as_bytes())?;
            if let Some(s) = seccomp {
                write_synced(&tmp.join("seccomp.json"), s.as_bytes())?;
            }
            fs::rename(&tmp, &dir).map_err(io_err("rename", &dir))?;
            sync_dir(&self.dir.join("versions"))
        })();
        if written.is_err() {
            let _ = fs::remove_dir_all(&tmp);
        }
        written.map(|()| id)
    }

    /// Loads version `id` (`builtin` too), checking that its files still
    /// hash to the id; its rules' examples are classified (a version made
    /// by an older cloche whose examples no longer hold is refused).
    pub fn load(&self, id: &str) -> Result<Policy, StoreError> {
        self.load_with(id, true)
    }

    /// As [`Store::load`], for a world's run (which never classifies): the
    /// rules' examples are not classified again, as for
    /// [`Policy::load_for_run`]. A version loaded so is not kept for later
    /// loads; one loaded whole already is used.
    pub fn load_for_run(&self, id: &str) -> Result<Policy, StoreError> {
        self.load_with(id, false)
    }

    fn load_with(&self, id: &str, check_examples: bool) -> Result<Policy, StoreError> {
        if id == BUILTIN {
            return Ok(Policy::builtin());
        }
        let dir = self.version_dir(id)?;
        let text = fs::read_to_string(dir.join("policy.toml")).map_err(io_err("read", &dir))?;
        let seccomp = match fs::read_to_string(dir.join("seccomp.json")) {
            Ok(s) => Some(s),
            Err(e) if e.kind() == io::ErrorKind::NotFound => None,
            Err(e) => return Err(io_err("read", &dir)(e)),
        };
        // What the id is the SHA-256 of: the text, a NUL, the profile. A
        // run whose version's head entry was made from these very bytes
        // (written only after this check passed) compares them instead of
        // hashing again (`run_cache.rs`); any other load hashes.
        let mut identity = text.as_bytes().to_vec();
        identity.push(0);
        identity.extend_from_slice(seccomp.as_deref().unwrap_or("").as_bytes());
        let head = dir.join("head");
        let found = match check_examples {
            true => None,
            false => crate::run_cache::lookup(&head, id, &identity),
        };
        if found.is_none() && Store::id_of(&text, seccomp.as_deref()) != id {
            return Err(StoreError::Invalid(format!("version {id} does not match its digest (edited?)")));
        }
        // Its files checked, a version this process compiled already is
        // that one: the same text.
        if let Some(p) = LOADED.lock().ok().and_then(|l| l.get(id).cloned()) {
            return Ok(p);
        }
        let given = crate::Seccomp::Given(seccomp.as_deref());
        let p = match check_examples {
            true => Policy::parse(&text, &short(id), given, true)?,
            // A run: the head from the version's cache (`run_cache.rs`).
            false => crate::run_cache::for_run(&text, &identity, id, &short(id), given, &head, found)?,
        };
        if let Ok(mut l) = LOADED.lock() {
            if check_examples && l.len() < MAX_LOADED {
                l.insert(id.to_string(), p.clone());
            }
        }
        Ok(p)
    }

    /// Loads (and so compiles) every version bound to a project or as the
    /// default that this process has not loaded yet; returns how many. The
    /// daemon's spawner calls it before it forks jobs: each job then finds
    /// the policy of its project compiled (about 15 ms of patterns saved).
    /// A version is tried once: one that does not load is left to the job
    /// that needs it, which says why.
    pub fn load_bound(&self) -> usize {
        static TRIED: std::sync::Mutex<std::collections::BTreeSet<String>> =
            std::sync::Mutex::new(std::collections::BTreeSet::new());
        let Ok(b) = self.bindings() else { return 0 };
        let Ok(mut tried) = TRIED.lock() else { return 0 };
        let mut loaded = 0;
        for id in b.default.into_iter().chain(b.projects.into_values()) {
            if id == BUILTIN || tried.len() >= MAX_LOADED || !tried.insert(id.clone()) {
                continue;
            }
            loaded += usize::from(self.load(&id).is_ok());
        }
        loaded
    }

    /// The current bindings.
    pub fn bindings(&self) -> Result<Bindings, StoreError> {
        let path = self.dir.join("bindings.json");
        match fs::read(&path) {
            Ok(b) => serde_json::from_slice(&b).map_err(|e| StoreError::Invalid(format!("{}: {e}", path.display()))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Bindings::default()),
            Err(e) => Err(io_err("read", &path)(e)),
        }
    }

    /// Changes the bindings under the store's lock: `change` edits a copy,
    /// and may refuse; `before` runs with the old and new bindings before
    /// they are written (the caller audits there: a change is logged before
    /// it takes effect). Written to a temporary file, fsynced and renamed.
    pub fn update<T>(
        &self,
        change: impl FnOnce(&mut Bindings) -> Result<T, StoreError>,
        before: impl FnOnce(&Bindings, &Bindings) -> Result<(), StoreError>,
    ) -> Result<T, StoreError> {
        let _lock = self.lock()?;
        let old = self.bindings()?;
        let mut new = old.clone();
        let out = change(&mut new)?;
        for id in new.default.iter().chain(new.projects.values()) {
            if id != BUILTIN && !self.version_dir(id)?.join("policy.toml").exists() {
                return Err(StoreError::Invalid(format!("no stored version {id}")));
            }
        }
        if new == old {
            return Ok(out);
        }
        before(&old, &new)?;
        let path = self.dir.join("bindings.json");
        let tmp = self.dir.join("bindings.json.tmp");
        let json = serde_json::to_vec_pretty(&new).map_err(|e| StoreError::Invalid(e.to_string()))?;
        write_synced(&tmp, &json)?;
        fs::rename(&tmp, &path).map_err(io_err("rename", &path))?;
        sync_dir(&self.dir)?;
        Ok(out)
    }

    /// The policy for `project`: its id and the loaded version.
    pub fn resolve(&self, project: &str) -> Result<(String, Policy), StoreError> {
        let (id, _) = self.bindings()?.lookup(project);
        let policy = self.load(&id)?;
        Ok((id, policy))
    }

    /// As [`Store::resolve`], for a world's run ([`Store::load_for_run`]).
    pub fn resolve_for_run(&self, project: &str) -> Result<(String, Policy), StoreError> {
        let (id, _) = self.bindings()?.lookup(project);
        let policy = self.load_for_run(&id)?;
        Ok((id, policy))
    }

    fn lock(&self) -> Result<fs::File, StoreError> {
        let path = self.dir.join(".lock");
        let f = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&path)
            .map_err(io_err("open", &path))?;
        flock_exclusive(&f).map_err(io_err("lock", &path))?;
        Ok(f)
    }
}

/// Blocks until `f` holds an exclusive flock(2); released on close.
fn flock_exclusive(f: &fs::File) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    loop {
        // SAFETY: flock on a descriptor we own.
        if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) } == 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// `sha256:0123456789ab` for display.
pub fn short(id: &str) -> String {
    id.get(..19).unwrap_or(id).to_string()
}

fn write_synced(path: &Path, data: &[u8]) -> Result<(), StoreError> {
    let mut f = fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .mode(0o600)
        .open(path)
        .map_err(io_err("create", path))?;
    f.write_all(data).and_then(|()| f.sync_all()).map_err(io_err("write", path))
}

fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    fs::File::open(dir).and_then(|d| d.sync_all()).map_err(io_err("sync", dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy_text(ttl: u64) -> String {
        crate::DEFAULT_POLICY.replace("approval_ttl = 300", &format!("approval_ttl = {ttl}"))
    }

    #[test]
    fn versions_are_content_addressed_and_checked() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::open(tmp.path()).unwrap();
        let text = policy_text(7);
        let p = Policy::from_toml(&text, "t", None).unwrap();
        let id = store.add(&text, &p).unwrap();
        assert_eq!(id, store.add(&text, &p).unwrap());
        assert_eq!(store.load(&id).unwrap().batch.approval_ttl, 7);
        assert_eq!(store.load(BUILTIN).unwrap().batch.approval_ttl, 300);
        // An edited version no longer matches its id.
        let f = store.version_dir(&id).unwrap().join("policy.toml");
        fs::write(&f, policy_text(8)).unwrap();
        assert!(matches!(store.load(&id), Err(StoreError::Invalid(_))));
        assert!(store.load("sha256:../../etc").is_err());
        assert!(store.load("nope").is_err());
    }

    #[test]
    fn bound_versions_are_loaded_once_and_still_checked() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::open(tmp.path()).unwrap();
        let (a, b) = (policy_text(11), policy_text(12));
        let ida = store.add(&a, &Policy::from_toml(&a, "t", None).unwrap()).unwrap();
        let idb = store.add(&b, &Policy::from_toml(&b, "t", None).unwrap()).unwrap();
        let bind = |ids: &[&String]| {
            store
                .update(
                    |bn| {
                        for (i, id) in ids.iter().enumerate() {
                            bn.projects.insert(format!("/srv/p{i}"), id.to_string());
                        }
                        Ok(())
                    },
                    |_, _| Ok(()),
                )
                .unwrap()
        };
        bind(&[&ida]);
        assert_eq!(store.load_bound(), 1);
        assert_eq!(store.load_bound(), 0, "a version is loaded once");
        bind(&[&ida, &idb]);
        assert_eq!(store.load_bound(), 1, "only the newly bound one");
        // Served from what was loaded, with the same values...
        assert_eq!(store.load(&idb).unwrap().batch.approval_ttl, 12);
        // ...but only while its files still hash to its id.
        fs::write(store.version_dir(&ida).unwrap().join("policy.toml"), policy_text(13)).unwrap();
        assert!(matches!(store.load(&ida), Err(StoreError::Invalid(_))));
    }

    /// A run keeps a version's head beside it (`run_cache.rs`) and later
    /// runs read it; a load that classifies never does.
    #[test]
    fn a_run_keeps_the_head_of_a_version() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::open(tmp.path()).unwrap();
        let text = crate::DEFAULT_POLICY.replacen("hostname = \"cloche\"", "hostname = \"stored\"", 1);
        let id = store.add(&text, &Policy::from_toml(&text, "t", None).unwrap()).unwrap();
        let head = store.version_dir(&id).unwrap().join("head");
        assert!(!head.exists());
        assert_eq!(store.load_for_run(&id).unwrap().world.hostname, "stored");
        assert!(head.exists());
        let again = store.load_for_run(&id).unwrap();
        assert_eq!((again.world.hostname.as_str(), again.origin.as_str()), ("stored", short(&id).as_str()));
        assert_eq!(again.commands.rules().len(), store.load(&id).unwrap().commands.rules().len());
        // The head holds the bytes the id was checked on; a version edited
        // since no longer matches them, so the run hashes and refuses it.
        let file = store.version_dir(&id).unwrap().join("policy.toml");
        fs::write(&file, text.replacen("hostname = \"stored\"", "hostname = \"edited\"", 1)).unwrap();
        let e = store.load_for_run(&id).unwrap_err().to_string();
        assert!(e.contains("does not match its digest"), "{e}");
        assert!(store.load(&id).is_err());
    }

    /// A run loads a stored version without classifying its examples (a
    /// version stored by an older cloche whose examples no longer hold
    /// still refuses batches), and such a load is not kept for them.
    #[test]
    fn a_run_loads_a_version_whose_examples_no_longer_hold() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::open(tmp.path()).unwrap();
        // What a classifier that changed since the version was stored finds.
        let text = crate::DEFAULT_POLICY.replacen("examples = [", "examples = [\"cmake .\", ", 1);
        let p = Policy::parse(&text, "t", crate::Seccomp::Given(None), false).unwrap();
        let id = store.add(&text, &p).unwrap();
        assert!(matches!(store.load(&id), Err(StoreError::Policy(_))), "examples are checked");
        let run = store.load_for_run(&id).expect("a run does not classify them");
        assert_eq!(run.batch.max_entries, p.batch.max_entries);
        assert!(store.load(&id).is_err(), "what a run loaded is not kept for a load that checks");
    }

    #[test]
    fn nearest_binding_wins_and_changes_are_checked() {
        let tmp = tempfile::tempdir().unwrap();
        let store = Store::open(tmp.path()).unwrap();
        let text = policy_text(9);
        let id = store.add(&text, &Policy::from_toml(&text, "t", None).unwrap()).unwrap();
        assert_eq!(store.resolve("/srv/app").unwrap().0, BUILTIN);
        let mut seen = None;
        store
            .update(
                |b| {
                    b.projects.insert("/srv".into(), id.clone());
                    Ok(())
                },
                |old, new| {
                    seen = Some((old.clone(), new.clone()));
                    Ok(())
                },
            )
            .unwrap();
        let (old, new) = seen.unwrap();
        assert!(old.projects.is_empty() && new.projects.len() == 1);
        assert_eq!(store.resolve("/srv/app/sub").unwrap().0, id);
        assert_eq!(store.bindings().unwrap().lookup("/srv/app").1.as_deref(), Some("/srv"));
        assert_eq!(store.resolve("/srvx").unwrap().0, BUILTIN);
        // A binding to a version that is not stored is refused, and a
        // refused audit leaves the bindings as they were.
        let missing = format!("sha256:{}", "0".repeat(64));
        let r = store.update(
            |b| {
                b.default = Some(missing.clone());
                Ok(())
            },
            |_, _| Ok(()),
        );
        assert!(r.is_err());
        let r = store.update(
            |b| {
                b.default = Some(id.clone());
                Ok(())
            },
            |_, _| Err(StoreError::Invalid("audit failed".into())),
        );
        assert!(r.is_err());
        assert_eq!(store.bindings().unwrap().default, None);
    }
}
