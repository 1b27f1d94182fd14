//! The mount plan's steps, executed by the child under the new root
//! (`child::setup` calls it twice: the fixed /proc and /dev, then the plan
//! the parent sent).

use super::{at, under, ChildPlan, StepError, Sys};
use crate::layers::HostMount;
use crate::plan::Step;
use std::io;
use std::os::fd::{BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

/// Executes mount-plan steps under the new root, in order (`scratch`: the
/// upper store, for [`Step::Scratch`] and [`Step::Home`]).
pub(super) fn apply(
    sys: &mut dyn Sys,
    plan: &ChildPlan<'_>,
    scratch: BorrowedFd<'_>,
    steps: &[Step],
) -> Result<(), StepError> {
    let root = plan.root.as_path();
    let mut slots: Vec<Option<OwnedFd>> = Vec::new();
    let mut masked_file: Option<PathBuf> = None;
    let mut masked_dir: Option<PathBuf> = None;
    let mut marked: Vec<PathBuf> = Vec::new();
    for step in steps {
        match step {
            Step::Grab { slot, path, read_only } => {
                let fd = at("open_tree (expose)", path, sys.grab(&under(root, path), *read_only))?;
                if slots.len() <= *slot {
                    slots.resize_with(slot + 1, || None);
                }
                slots[*slot] = Some(fd);
            }
            Step::Mount { path, fstype, flags, data } => {
                at("mount", path, sys.mount(&under(root, path), fstype, *flags, data))?
            }
            Step::Sysfs { path } => {
                if let super::NetnsPlan::Parent { from } = plan.netns {
                    at("join the world's network namespace (the parent's)", path, sys.join_netns(from))?;
                }
                use crate::plan::{MS_NODEV, MS_NOEXEC, MS_NOSUID, MS_RDONLY};
                let flags = MS_NOSUID | MS_NODEV | MS_NOEXEC | MS_RDONLY;
                at("mount", path, sys.mount(&under(root, path), "sysfs", flags, ""))?
            }
            Step::Scratch { path, mode, index } => {
                at("scratch (bind)", path, sys.bind_scratch(scratch, *index, *mode, &under(root, path)))?
            }
            Step::Mkdir { path, mode } => at("mkdir", path, sys.mkdir_all(&under(root, path), *mode))?,
            Step::Touch { path } => at("create mount point", path, sys.touch(&under(root, path)))?,
            Step::Mknod { path, major, minor } => at("mknod", path, sys.mknod(&under(root, path), *major, *minor))?,
            Step::Symlink { path, target } => at("symlink", path, sys.symlink(target, &under(root, path)))?,
            Step::MaskFile { path } => {
                // The first mask is a read-only bind of /dev/null; later ones
                // bind the first, and a bind of a read-only mount is born
                // read-only (one syscall instead of two).
                let target = under(root, path);
                match &masked_file {
                    None => {
                        let bound = sys.bind(&under(root, Path::new("/dev/null")), &target);
                        if kernel_lacks(path, &bound) {
                            continue;
                        }
                        at("mask (bind /dev/null)", path, bound)?;
                        at("mask (read-only)", path, sys.remount_ro(&target, false))?;
                        masked_file = Some(target);
                    }
                    Some(first) => bind_first(sys, first, path, &target, "mask (bind read-only null)")?,
                }
            }
            Step::MaskDir { path } => {
                // Same idea for directories: one empty read-only tmpfs, bound
                // read-only everywhere else (a bind is cheaper than a mount).
                let target = under(root, path);
                match &masked_dir {
                    None => {
                        let flags = crate::plan::MS_NOSUID
                            | crate::plan::MS_NODEV
                            | crate::plan::MS_NOEXEC
                            | crate::plan::MS_RDONLY;
                        let mounted = sys.mount(&target, "tmpfs", flags, "mode=555,size=4k");
                        if kernel_lacks(path, &mounted) {
                            continue;
                        }
                        at("mask (empty tmpfs)", path, mounted)?;
                        masked_dir = Some(target);
                    }
                    Some(first) => bind_first(sys, first, path, &target, "mask (bind empty dir)")?,
                }
            }
            Step::ReadOnly { path } => {
                let target = under(root, path);
                let bound = sys.bind(&target, &target);
                if kernel_lacks(path, &bound) {
                    continue;
                }
                at("bind read-only", path, bound)?;
                at("remount read-only", path, sys.remount_ro(&target, true))?;
            }
            Step::Attach { slot, path } => {
                let fd = slots.get_mut(*slot).and_then(Option::take);
                let fd = at("expose", path, fd.ok_or_else(|| io::Error::other("plan attaches an ungrabbed slot")))?;
                at("move_mount (expose)", path, sys.attach(fd, &under(root, path)))?;
            }
            Step::RemountRo { path } => at("remount read-only", path, sys.remount_ro(&under(root, path), true))?,
            Step::CopyUp { path } => {
                let done = sys.copy_up(&under(root, path));
                let step = match (&done, &plan.rootless) {
                    // Any id but the caller's is unmapped: its copy-up fails.
                    (Err(e), Some(_)) if e.raw_os_error() == Some(libc::EOVERFLOW) => {
                        "copy up (mount point in a home; a world without root can copy up only what has your \
                         uid and gid: this directory or one above it has another owner or group)"
                    }
                    _ => "copy up (mount point in a home)",
                };
                at(step, path, done)?;
                // What the copy-up made (the path, and each parent copied up
                // with it) is cloche's doing: marked, so that the fs_diff
                // does not list it as touched while it is as the base has it.
                // (Not in a world without root: a world could forge any
                // mark; its fs_diff lists no such entry as touched at all.)
                let upper = upper_dir(&plan.layers, path).filter(|_| plan.rootless.is_none());
                if let Some((top, rel)) = upper {
                    let mut at_ = top;
                    for c in rel.components() {
                        at_.push(c);
                        if !marked.contains(&at_) {
                            at("mark a copy-up as cloche's", path, sys.mark_planned(scratch, &at_))?;
                            marked.push(at_.clone());
                        }
                    }
                }
            }
            Step::Home { path } => {
                let dir = upper_dir(&plan.layers, path)
                    .map(|(top, rel)| top.join(rel))
                    .ok_or_else(|| io::Error::other("under a read-only host mount: no upper layer"));
                let dir = at("writable home", path, dir)?;
                at("bind the home's upper directory", path, sys.bind_upper(scratch, &dir, &under(root, path)))?
            }
        }
    }
    Ok(())
}

/// A later mask of its kind: a bind of the first (a bind of a read-only
/// mount is born read-only), skipped where the kernel lacks the entry.
fn bind_first(
    sys: &mut dyn Sys,
    first: &Path,
    path: &Path,
    target: &Path,
    step: &'static str,
) -> Result<(), StepError> {
    let bound = sys.bind(first, target);
    if kernel_lacks(path, &bound) {
        return Ok(());
    }
    at(step, path, bound)
}

/// True when a mask's target under the world's own /proc or /sys does not
/// exist (`ENOENT`): this kernel has no such entry, so there is nothing to
/// hide, and the step is skipped. (The plan lists the kernel's entries
/// without asking the host; nothing can create one in those filesystems.)
/// Any other path, or any other error, fails its step.
fn kernel_lacks(path: &Path, r: &io::Result<()>) -> bool {
    let kernels = path.starts_with("/proc") || path.starts_with("/sys");
    kernels && matches!(r, Err(e) if e.raw_os_error() == Some(libc::ENOENT))
}

/// Where the upper store holds the upper layer's copy of world path `p`:
/// the layer's upper directory (`upper`, or `layers/<k>/upper` when `p`
/// lies on a host data mount of slot `k`, the deepest one holding it) and `p`
/// relative to it. None when that mount is carried read-only (it has no
/// upper).
fn upper_dir(layers: &[HostMount], p: &Path) -> Option<(PathBuf, PathBuf)> {
    let owner = layers.iter().filter(|m| p.starts_with(&m.path)).max_by_key(|m| m.path.as_os_str().len());
    match owner {
        Some(m) if m.read_only => None,
        Some(m) => Some((PathBuf::from(format!("layers/{}/upper", m.slot)), p.strip_prefix(&m.path).ok()?.into())),
        None => Some((PathBuf::from("upper"), p.strip_prefix("/").ok()?.into())),
    }
}
