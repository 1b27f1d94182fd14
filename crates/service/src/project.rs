//! Projects the operator allowed: a batch's project (at submit and again at
//! run) and `cloche run`'s cwd are judged against the masks their world
//! would get (`cloche_world::exposure`); the world judges once more when it
//! builds its mounts, on the paths it really mounts.

use crate::error::{Error, Result};
use cloche_broker::BatchFile;
use cloche_policy::Policy;
use cloche_world::exposure;
use cloche_world::plan::{FsRequest, RealHost};
use cloche_world::view::HiddenEntry;
use cloche_world::{Spec, StateDir};
use std::path::{Path, PathBuf};

/// Makes a submitted batch's project canonical (an existing directory, no
/// symlink on the way), its entries' cwds re-based onto it. The broker then
/// records the canonical path, which `batch run` checks again.
pub fn canonicalize(batch: &mut BatchFile) -> Result<()> {
    let given = batch.project.clone();
    let canon = std::fs::canonicalize(&given).map_err(|e| Error::Project(format!("project {given}: {e}")))?;
    if !canon.is_dir() {
        return Err(Error::Project(format!("project {given}: not a directory")));
    }
    let canon =
        canon.to_str().ok_or_else(|| Error::Project(format!("project {given}: its canonical path is not UTF-8")))?;
    if canon == given {
        return Ok(());
    }
    for e in &mut batch.entries {
        if let Some(cwd) = &e.cwd {
            // Validated lexically inside the project: `given` or `given/...`.
            let rest = cwd.strip_prefix(given.as_str()).unwrap_or_default();
            e.cwd = Some(format!("{}{rest}", canon.trim_end_matches('/')));
        }
    }
    batch.project = canon.to_string();
    Ok(())
}

/// Judges a (canonical) project against the masks of a world of `policy`.
pub fn judge(project: &str, policy: &Policy, state: &StateDir) -> Result<()> {
    let fs = &policy.fs;
    let req = FsRequest::new(Path::new(project), &fs.mask, fs.mask_homes, &fs.home_secrets, &fs.expose, &state.root);
    exposure::check(&RealHost, &req, "project").map(drop).map_err(|e| Error::Exposure(e.to_string()))
}

/// At `batch run`: the recorded project must still be the very directory
/// that was judged at submit (a symlink swapped in since is refused), and
/// is judged again.
pub fn recheck(project: &str) -> Result<PathBuf> {
    let p = PathBuf::from(project);
    match std::fs::canonicalize(&p) {
        Ok(c) if c == p => Ok(p),
        Ok(c) => Err(Error::Project(format!(
            "project {project} now resolves to {}; a project must stay the directory that was submitted",
            c.display()
        ))),
        Err(e) => Err(Error::Project(format!("project {project}: {e}"))),
    }
}

/// Judges a world's cwd (`what`: "cwd", "project") and exposures as its
/// plan will, and returns the notes that say what an explicit exposure
/// unmasks (the operator's relaxation, allowed except for the state
/// directory), each one line starting `cloche: note: `.
pub fn check_world(spec: &Spec, state: &StateDir, what: &str) -> Result<Vec<String>> {
    let req = FsRequest::of_spec(spec, &state.root);
    let relaxed = exposure::check(&RealHost, &req, what).map_err(|e| Error::Exposure(e.to_string()))?;
    Ok(relaxed.iter().map(|r| format!("cloche: note: {r}")).collect())
}

/// `cloche run`: the notes of what its explicit exposures unmask (and the
/// refusal of one in the state directory), before the world starts. The
/// cwd itself is judged by the world's plan, built while the world's first
/// mounts are made (off the critical path): nothing to do without exposures.
pub fn note_exposures(spec: &Spec, state: &StateDir) -> Result<Vec<String>> {
    match spec.expose.is_empty() {
        true => Ok(Vec::new()),
        false => check_world(spec, state, "cwd"),
    }
}

/// `cloche run`'s one line (if any entry is hidden) saying which PATH
/// entries its world hides (directories on the host that a mask covers and
/// no toolchain, project or exposure shows), with the `--expose` that shows
/// each, or why none is suggested (a secret, a home itself, cloche's state
/// directory, a symbolic link the world does not have). A front end says it
/// from its `RunRequest::path_note`, which the world's parent calls before
/// the world runs anything (`Spec::path_note`).
pub fn hidden_path_note(hidden: &[HiddenEntry]) -> Option<String> {
    if hidden.is_empty() {
        return None;
    }
    let (fixed, kept): (Vec<&HiddenEntry>, Vec<&HiddenEntry>) = hidden.iter().partition(|h| h.fix.is_ok());
    let names: Vec<String> = hidden.iter().map(|h| shell_word(&h.entry)).collect();
    let (entry, are) = if hidden.len() == 1 { ("entry", "is") } else { ("entries", "are") };
    let mut line = format!("cloche: note: PATH {entry} {} {are} hidden in the world", names.join(", "));
    if !fixed.is_empty() {
        let fix: Vec<String> =
            fixed.iter().filter_map(|h| h.fix.as_ref().ok()).map(|f| format!("--expose {}", shell_word(f))).collect();
        let which = match (kept.is_empty(), fixed.len()) {
            (true, 1) => "it".to_string(),
            (true, _) => "them".to_string(),
            (false, _) => fixed.iter().map(|h| shell_word(&h.entry)).collect::<Vec<_>>().join(", "),
        };
        line += &format!("; {} shows {which}", fix.join(" "));
    }
    for h in kept {
        if let Err(why) = &h.fix {
            line += &format!("; {} stays hidden: it {why}", shell_word(&h.entry));
        }
    }
    Some(line)
}

/// A path as one shell word (single-quoted unless plain).
fn shell_word(p: &Path) -> String {
    let s = p.to_string_lossy();
    if s.bytes().all(|b| b.is_ascii_alphanumeric() || b"/._-+,:@%=".contains(&b)) {
        s.into_owned()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hidden(entry: &str, fix: Result<&str, &str>) -> HiddenEntry {
        HiddenEntry { entry: entry.into(), fix: fix.map(PathBuf::from).map_err(str::to_string) }
    }

    #[test]
    fn the_hidden_path_note_is_one_line_with_the_fix() {
        assert_eq!(hidden_path_note(&[]), None);
        assert_eq!(
            hidden_path_note(&[hidden("/root/bin", Ok("/root/bin"))]).unwrap(),
            "cloche: note: PATH entry /root/bin is hidden in the world; --expose /root/bin shows it"
        );
        let two = [hidden("/root/my bin", Ok("/root/my bin")), hidden("/home/a/link", Ok("/home/a/real"))];
        assert_eq!(
            hidden_path_note(&two).unwrap(),
            "cloche: note: PATH entries '/root/my bin', /home/a/link are hidden in the world; \
             --expose '/root/my bin' --expose /home/a/real shows them"
        );
        let mixed = [
            hidden("/root/bin", Ok("/root/bin")),
            hidden("/root/.ssh/bin", Err("lies inside the masked path /root/.ssh (fs.home_secrets .ssh)")),
        ];
        let line = hidden_path_note(&mixed).unwrap();
        assert_eq!(
            line,
            "cloche: note: PATH entries /root/bin, /root/.ssh/bin are hidden in the world; --expose /root/bin \
             shows /root/bin; /root/.ssh/bin stays hidden: it lies inside the masked path /root/.ssh \
             (fs.home_secrets .ssh)"
        );
        assert_eq!(line.lines().count(), 1);
    }
}
