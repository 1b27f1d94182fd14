//! `cloche policy set|unset|list`: which policy applies to which project
//! (`cloche_service::policy_store`), printed.

use crate::output::PolicyBinding;
use cloche_policy::store;
use cloche_service::uid_actor;
use serde_json::json;
use std::path::Path;

/// `cloche policy set [--project DIR] FILE`: stores FILE and binds it.
pub fn set(file: &Path, project: Option<&Path>) -> Result<PolicyBinding, String> {
    let b = crate::context().bind_policy(file, project, &uid_actor())?;
    let id = b.policy.as_deref().unwrap_or_default();
    eprintln!("cloche: {} now uses policy {}", b.project.as_deref().unwrap_or("every project"), store::short(id));
    Ok(b)
}

/// `cloche policy unset [--project DIR]`: removes a binding.
pub fn unset(project: Option<&Path>) -> Result<PolicyBinding, String> {
    Ok(crate::context().unbind_policy(project, &uid_actor())?)
}

/// `cloche policy list [--json]`: the bindings.
pub fn list(json_out: bool) -> Result<(), String> {
    let b = crate::context().bindings()?;
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
