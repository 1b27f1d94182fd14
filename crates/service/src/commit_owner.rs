//! A commit for a caller that is not root: each step is one the caller
//! could make itself, asked of the kernel with the caller's filesystem
//! identity (`HostUser::with_identity`, already taken by the caller of
//! [`refusal`]) against the very directories the commit writes beneath
//! (the commit roots' descriptors opened at planning).

use crate::host_user::{access, HostUser, READ_DIR, WRITE_DIR};
use cloche_review::commit::{fsx, Action, Step};
use nix::fcntl::OFlag;
use nix::sys::stat::FileStat;
use std::os::fd::{AsFd, BorrowedFd};

/// Why `u` may not make `step`, or `None`.
pub(crate) fn refusal(u: &HostUser, step: &Step<'_>) -> Option<String> {
    let lossy = |p: &[u8]| String::from_utf8_lossy(p).into_owned();
    let no = |what: String| Some(format!("uid {} may not {what}", u.uid));
    let root = lossy(step.root_path);
    // The root must be reachable by the caller: search on every directory
    // above it.
    if !access(None, step.root_path, libc::X_OK).unwrap_or(false) {
        return no(format!("enter the commit root {root}"));
    }
    let host = match fsx::lstat_at(step.root, step.rel) {
        Ok(h) => h,
        Err(e) => return Some(format!("the host path: {e}")),
    };
    if matches!(step.op.action, Action::Chmod { .. }) && host.as_ref().is_some_and(|h| h.st_uid != u.uid) {
        return no("change the mode of a path it does not own".into());
    }
    if step.rel.is_empty() {
        return None; // the root itself: only its mode changes
    }
    let parent = format!("{root}/{}", lossy(step.parent_rel)).trim_end_matches('/').to_string();
    if !step.parent_is_new {
        match access(Some(step.root), step.parent_rel, WRITE_DIR) {
            Ok(true) => {}
            Ok(false) => return no(format!("write in {parent}")),
            Err(e) => return Some(format!("{parent}: {e}")),
        }
        // The sticky bit: another user's entry goes only by its owner or
        // the directory's.
        if let (Some(h), Ok(Some(d))) = (&host, fsx::lstat_at(step.root, step.parent_rel)) {
            if d.st_mode & libc::S_ISVTX != 0 && h.st_uid != u.uid && d.st_uid != u.uid {
                return no(format!("replace another user's entry in the sticky directory {parent}"));
            }
        }
    }
    let replaced = step.op.replaces || matches!(step.op.action, Action::Remove);
    match &host {
        Some(h) if replaced && fsx::is_dir(h) => tree_refusal(u, step.root, step.rel, 0)
            .map(|p| format!("uid {} may not remove {root}/{} (below it: {p})", u.uid, lossy(step.rel))),
        _ => None,
    }
}

/// A directory the commit removes with everything below it: every
/// directory in it must be one `u` could list and empty. Returns the first
/// one that is not (relative to the root).
fn tree_refusal(u: &HostUser, root: BorrowedFd<'_>, rel: &[u8], depth: usize) -> Option<String> {
    let lossy = String::from_utf8_lossy(rel).into_owned();
    if depth > fsx::MAX_DEPTH {
        return Some(format!("{lossy}: deeper than {} levels", fsx::MAX_DEPTH));
    }
    if !access(Some(root), rel, READ_DIR | libc::W_OK).unwrap_or(false) {
        return Some(lossy);
    }
    let Ok(fd) = fsx::open_beneath(root, rel, OFlag::O_RDONLY | OFlag::O_DIRECTORY) else { return Some(lossy) };
    let Ok(dir_st) = nix::sys::stat::fstat(&fd) else { return Some(lossy) };
    let Ok(mut dir) = nix::dir::Dir::from_fd(fd) else { return Some(lossy) };
    let mut children: Vec<(Vec<u8>, FileStat)> = Vec::new();
    for e in dir.iter() {
        let Ok(e) = e else { return Some(lossy) };
        let name = e.file_name().to_bytes();
        if name == b"." || name == b".." {
            continue;
        }
        let mut child = rel.to_vec();
        child.push(b'/');
        child.extend_from_slice(name);
        match fsx::lstat_at(root, &child) {
            Ok(Some(st)) => children.push((child, st)),
            Ok(None) => {}
            Err(_) => return Some(String::from_utf8_lossy(&child).into_owned()),
        }
    }
    drop(dir);
    for (child, st) in children {
        let sticky = dir_st.st_mode & libc::S_ISVTX != 0;
        if sticky && st.st_uid != u.uid && dir_st.st_uid != u.uid {
            return Some(String::from_utf8_lossy(&child).into_owned());
        }
        if fsx::is_dir(&st) {
            if let Some(p) = tree_refusal(u, root.as_fd(), &child, depth + 1) {
                return Some(p);
            }
        }
    }
    None
}
