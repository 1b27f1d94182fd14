//! Which policy applies to which project, kept in the state directory's
//! policy store (`cloche_policy::store`). Every change is written to the
//! audit log (`policy_changed`) before it takes effect.

use crate::context::Context;
use crate::error::{Error, Result};
use crate::output::{PolicyBinding, Version};
use cloche_policy::store::{Bindings, Store, StoreError};
use cloche_policy::Policy;
use cloche_trace::audit::{events, AuditLog};
use serde_json::json;
use std::path::Path;

/// A project directory as the broker and the bindings spell it: canonical
/// when it exists.
pub fn project_key(dir: &Path) -> Result<String> {
    let abs = match std::fs::canonicalize(dir) {
        Ok(c) => c,
        Err(_) => std::path::absolute(dir).map_err(|e| Error::Invalid(format!("{}: {e}", dir.display())))?,
    };
    let text = abs.to_str().ok_or_else(|| Error::Invalid(format!("{}: not UTF-8", abs.display())))?;
    cloche_broker::normalize_abs(text).map_err(|e| Error::Invalid(format!("{}: {e}", dir.display())))
}

/// The binding made or removed.
fn binding(project: Option<&str>, id: Option<&str>) -> PolicyBinding {
    PolicyBinding {
        schema_version: Version,
        scope: if project.is_some() { "project" } else { "default" }.into(),
        project: project.map(str::to_string),
        policy: id.map(str::to_string),
    }
}

fn checked_dir(dir: &Path) -> Result<String> {
    if !dir.is_dir() {
        return Err(Error::Invalid(format!("--project {}: not a directory", dir.display())));
    }
    project_key(dir)
}

fn store_error(e: StoreError) -> Error {
    Error::Policy(e.to_string())
}

impl Context {
    /// `cloche policy set [--project DIR] FILE`: stores FILE (validated,
    /// with its seccomp profile and its network destinations) and binds it
    /// to the project, or as the default.
    pub fn bind_policy(&self, file: &Path, project: Option<&Path>, actor: &str) -> Result<PolicyBinding> {
        let text = std::fs::read_to_string(file).map_err(|e| Error::Policy(format!("{}: {e}", file.display())))?;
        let base = file.parent().unwrap_or(Path::new("."));
        let policy = Policy::from_toml(&text, &file.display().to_string(), Some(base))
            .map_err(|e| Error::Policy(e.to_string()))?;
        // Its destinations too: a policy whose worlds could not start is refused.
        crate::net::from_policy(&policy.network).map_err(|e| Error::Policy(format!("{}: {e}", file.display())))?;
        let project = project.map(checked_dir).transpose()?;
        let store = self.store()?;
        let id = store.add(&text, &policy).map_err(store_error)?;
        let details = json!({"file": std::path::absolute(file).ok(), "seccomp": policy.seccomp_origin});
        self.change(&store, project.as_deref(), Some(&id), details, actor)?;
        Ok(binding(project.as_deref(), Some(&id)))
    }

    /// `cloche policy unset [--project DIR]`: removes a binding.
    pub fn unbind_policy(&self, project: Option<&Path>, actor: &str) -> Result<PolicyBinding> {
        let project = project.map(project_key).transpose()?;
        let store = self.store()?;
        let bindings = store.bindings().map_err(store_error)?;
        let bound = match &project {
            Some(p) => bindings.projects.contains_key(p),
            None => bindings.default.is_some(),
        };
        if !bound {
            return Err(Error::Invalid(format!(
                "no policy is bound to {}",
                project.as_deref().unwrap_or("the default")
            )));
        }
        self.change(&store, project.as_deref(), None, json!({}), actor)?;
        Ok(binding(project.as_deref(), None))
    }

    /// `cloche policy list`: the bindings.
    pub fn bindings(&self) -> Result<Bindings> {
        self.store()?.bindings().map_err(store_error)
    }

    /// Binds (`Some`) or unbinds (`None`) `project` (or the default),
    /// audited before the new bindings are written.
    fn change(
        &self,
        store: &Store,
        project: Option<&str>,
        id: Option<&str>,
        mut details: serde_json::Value,
        actor: &str,
    ) -> Result<()> {
        let root = &self.state()?.root;
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
            log.append(events::POLICY_CHANGED, actor, None, None, details.clone())
                .map(drop)
                .map_err(|e| StoreError::Invalid(format!("audit: {e}")))
        };
        store.update(set, audit).map_err(store_error)
    }
}
