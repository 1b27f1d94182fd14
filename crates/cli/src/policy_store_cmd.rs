//! `cloche policy set|unset|list`: which policy applies to which project,
//! kept in the state dir's policy store (`cloche_policy::store`). Every
//! change is written to the audit log (`policy_changed`) before it takes
//! effect.

use crate::output::{PolicyBinding, Version};
use crate::run::open_state;
use cloche_policy::store::{self, Bindings, Store, StoreError};
use cloche_policy::Policy;
use cloche_trace::audit::{events, AuditLog};
use serde_json::json;
use std::path::{Path, PathBuf};

/// Opens the policy store of the state dir.
pub(crate) fn open_store() -> Result<(Store, PathBuf), String> {
    let state = open_state()?;
    let store = Store::open(&state.root).map_err(|e| e.to_string())?;
    Ok((store, state.root.clone()))
}

/// A project directory as the broker and the bindings spell it.
pub(crate) fn project_key(dir: &Path) -> Result<String, String> {
    // Canonical when it exists, as batches record their project.
    let abs = match std::fs::canonicalize(dir) {
        Ok(c) => c,
        Err(_) => std::path::absolute(dir).map_err(|e| format!("{}: {e}", dir.display()))?,
    };
    let text = abs.to_str().ok_or_else(|| format!("{}: not UTF-8", abs.display()))?;
    cloche_broker::normalize_abs(text).map_err(|e| format!("{}: {e}", dir.display()))
}

/// The policy that applies to `project` (its id and the loaded version).
pub(crate) fn resolve(project: &str) -> Result<(String, Policy), String> {
    let (store, _) = open_store()?;
    store.resolve(project).map_err(|e| e.to_string())
}

/// Loads a stored policy version by id (`builtin` too).
pub(crate) fn load_version(id: &str) -> Result<Policy, String> {
    let (store, _) = open_store()?;
    store.load(id).map_err(|e| e.to_string())
}

pub fn uid_actor() -> String {
    // SAFETY: getuid has no preconditions.
    format!("uid:{}", unsafe { libc::getuid() })
}

/// The binding made or removed, for `--json`.
fn binding(project: Option<&str>, id: Option<&str>) -> PolicyBinding {
    PolicyBinding {
        schema_version: Version,
        scope: if project.is_some() { "project" } else { "default" }.into(),
        project: project.map(str::to_string),
        policy: id.map(str::to_string),
    }
}

/// `cloche policy set [--project DIR] FILE`: stores FILE (validated, with
/// its seccomp profile) and binds it.
pub fn set(file: &Path, project: Option<&Path>) -> Result<PolicyBinding, String> {
    let text = std::fs::read_to_string(file).map_err(|e| format!("{}: {e}", file.display()))?;
    let base = file.parent().unwrap_or(Path::new("."));
    let policy = Policy::from_toml(&text, &file.display().to_string(), Some(base)).map_err(|e| e.to_string())?;
    // Its destinations too: a policy whose worlds could not start is refused.
    cloche_service::net::from_policy(&policy.network).map_err(|e| format!("{}: {e}", file.display()))?;
    let project = project.map(checked_dir).transpose()?;
    let (store, root) = open_store()?;
    let id = store.add(&text, &policy).map_err(|e| e.to_string())?;
    let details = json!({"file": std::path::absolute(file).ok(), "seccomp": policy.seccomp_origin});
    change(&store, &root, project.as_deref(), Some(&id), details)?;
    eprintln!("cloche: {} now uses policy {}", project.as_deref().unwrap_or("every project"), store::short(&id));
    Ok(binding(project.as_deref(), Some(&id)))
}

/// `cloche policy unset [--project DIR]`: removes a binding.
pub fn unset(project: Option<&Path>) -> Result<PolicyBinding, String> {
    let project = project.map(project_key).transpose()?;
    let (store, root) = open_store()?;
    let bindings = store.bindings().map_err(|e| e.to_string())?;
    let bound = match &project {
        Some(p) => bindings.projects.contains_key(p),
        None => bindings.default.is_some(),
    };
    if !bound {
        return Err(format!("no policy is bound to {}", project.as_deref().unwrap_or("the default")));
    }
    change(&store, &root, project.as_deref(), None, json!({}))?;
    Ok(binding(project.as_deref(), None))
}

/// `cloche policy list [--json]`: the bindings.
pub fn list(json_out: bool) -> Result<(), String> {
    let (store, _) = open_store()?;
    let b = store.bindings().map_err(|e| e.to_string())?;
    if json_out {
        let out = json!({"default": b.default.as_deref().unwrap_or(store::BUILTIN), "projects": b.projects});
        return crate::output::emit(&out);
    }
    println!("{:<20} (default)", store::short(b.default.as_deref().unwrap_or(store::BUILTIN)));
    for (dir, id) in &b.projects {
        println!("{:<20} {dir}", store::short(id));
    }
    Ok(())
}

fn checked_dir(dir: &Path) -> Result<String, String> {
    if !dir.is_dir() {
        return Err(format!("--project {}: not a directory", dir.display()));
    }
    project_key(dir)
}

/// Binds (`Some`) or unbinds (`None`) `project` (or the default), audited
/// before the new bindings are written.
fn change(
    store: &Store,
    root: &Path,
    project: Option<&str>,
    id: Option<&str>,
    mut details: serde_json::Value,
) -> Result<(), String> {
    let set = |b: &mut Bindings| -> Result<(), StoreError> {
        match (project, id) {
            (Some(p), Some(id)) => drop(b.projects.insert(p.to_string(), id.to_string())),
            (Some(p), None) => drop(b.projects.remove(p)),
            (None, id) => b.default = id.map(str::to_string),
        }
        Ok(())
    };
    let audit = |old: &Bindings, _: &Bindings| -> Result<(), StoreError> {
        let from = match project {
            Some(p) => old.projects.get(p).cloned(),
            None => old.default.clone(),
        };
        details["scope"] = json!(if project.is_some() { "project" } else { "default" });
        details["project"] = json!(project);
        details["from"] = json!(from.unwrap_or_else(|| "unbound".into()));
        details["to"] = json!(id.unwrap_or("unbound"));
        let mut log = AuditLog::open(root.join("audit.jsonl")).map_err(|e| StoreError::Invalid(e.to_string()))?;
        log.append(events::POLICY_CHANGED, &uid_actor(), None, None, details.clone())
            .map(drop)
            .map_err(|e| StoreError::Invalid(format!("audit: {e}")))
    };
    store.update(set, audit).map_err(|e| e.to_string())
}
