//! The cgroup a world without root takes its limits in: one delegated to
//! the caller, found from the caller's own cgroup upwards.
//!
//! - **cgroup v2** (what `systemd-run --user --scope -p Delegate=yes`
//!   gives): the deepest directory above this process's cgroup that the
//!   caller owns and whose `cgroup.subtree_control` has memory, pids and
//!   cpu.
//! - **cgroup v1** (hosts whose controllers are on v1, as this project's
//!   own test machine; what `cgcreate -t USER -a USER` or an administrator's
//!   `mkdir` and `chown` give): in each of the memory, pids and cpu
//!   hierarchies, the deepest directory above this process's cgroup there
//!   that the caller owns. The caller enters it first (`cgexec`, or its pid
//!   written to `tasks`).
//!
//! A world's cgroup is then `<delegated>/cloche/<id>` (in each hierarchy on
//! v1), made and limited by the caller (a directory made in a cgroup is
//! its maker's, files included), and removed at the world's end. The limits
//! of the delegated directory itself stay its owner's (root's) business;
//! the kernel applies them above the world's.

use crate::cgroup::{unescape, Layout};
use std::path::{Path, PathBuf};

const CONTROLLERS: [&str; 3] = ["memory", "pids", "cpu"];

/// What the search reads of the host besides mountinfo and
/// /proc/self/cgroup (a seam for the unit tests).
pub(crate) trait Host {
    /// The directory's owner, if it exists.
    fn owner(&self, dir: &Path) -> Option<u32>;
    /// Its `cgroup.subtree_control` (v2), empty if unreadable.
    fn subtree_control(&self, dir: &Path) -> String;
}

struct RealHost;

impl Host for RealHost {
    fn owner(&self, dir: &Path) -> Option<u32> {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(dir).ok().map(|m| m.uid())
    }
    fn subtree_control(&self, dir: &Path) -> String {
        std::fs::read_to_string(dir.join("cgroup.subtree_control")).unwrap_or_default()
    }
}

/// The cgroup delegated to this process's user ([`Layout::V2`] or
/// [`Layout::V1`], whose roots are the delegated directories), or why there
/// is none.
pub fn delegated_cgroup() -> Result<Layout, String> {
    delegated_cgroup_in(&crate::sys::mountinfo().unwrap_or_default())
}

/// [`delegated_cgroup`] with this process's mountinfo already read.
pub fn delegated_cgroup_in(info: &str) -> Result<Layout, String> {
    let own = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    // SAFETY: no preconditions.
    let uid = unsafe { libc::geteuid() };
    find(info, &own, uid, &RealHost)
}

/// The pure part of [`delegated_cgroup`]: v2 first, then v1.
pub(crate) fn find(info: &str, own: &str, uid: u32, host: &dyn Host) -> Result<Layout, String> {
    let mounts = cgroup_mounts(info);
    let v2_why = match v2(&mounts, own, uid, host) {
        Ok(root) => return Ok(Layout::V2 { root }),
        Err(why) => why,
    };
    if !mounts.iter().any(|m| m.v1) {
        return Err(v2_why);
    }
    v1(&mounts, own, uid, host).map_err(|why| format!("{v2_why}; {why}"))
}

/// One line for `doctor`: where a world's limits go.
pub fn describe(layout: &Layout) -> String {
    match layout {
        Layout::V2 { root } => format!("cgroup v2: {} (memory, pids, cpu)", root.display()),
        Layout::V1 { memory, pids, cpu } => {
            format!("cgroup v1: {}, {}, {}", memory.display(), pids.display(), cpu.display())
        }
        Layout::Unavailable { .. } => "none".into(),
    }
}

/// The one line a world without root and without a delegated cgroup is
/// refused with (`why`: what was looked for).
pub fn no_cgroup_line(why: &str) -> String {
    format!(
        "limits need a cgroup delegated to you ({why}): run cloche in one, e.g. `systemd-run --user --scope -p \
         Delegate=yes cloche run ...` with cgroup v2, or, where the controllers are on cgroup v1, from directories \
         of yours in the memory, pids and cpu hierarchies (docs/security.md, *Worlds without root*); or pass \
         --no-limits to run without memory, process and CPU limits"
    )
}

/// A cgroup filesystem's mount: its root inside the hierarchy, where it is
/// mounted, and (v1) its controllers.
struct CgroupMount {
    root: PathBuf,
    at: PathBuf,
    v1: bool,
    controllers: Vec<String>,
}

fn cgroup_mounts(info: &str) -> Vec<CgroupMount> {
    let mut out = Vec::new();
    for line in info.lines() {
        let Some((left, right)) = line.split_once(" - ") else { continue };
        let fields: Vec<&str> = left.split(' ').collect();
        let (Some(root), Some(at)) = (fields.get(3), fields.get(4)) else { continue };
        let mut r = right.split(' ');
        let (fstype, _source, opts) = (r.next(), r.next(), r.next().unwrap_or(""));
        let v1 = match fstype {
            Some("cgroup2") => false,
            Some("cgroup") => true,
            _ => continue,
        };
        let controllers = if v1 { opts.split(',').map(str::to_string).collect() } else { Vec::new() };
        out.push(CgroupMount { root: unescape(root), at: unescape(at), v1, controllers });
    }
    out
}

/// Where `own` (a path inside the hierarchy) is under mount `m`.
fn dir_of(m: &CgroupMount, own: &str) -> Option<PathBuf> {
    let rel = Path::new(own).strip_prefix(&m.root).ok()?;
    Some(m.at.join(rel))
}

/// From `start` up to the mount point: the first directory `fits`.
fn deepest(m: &CgroupMount, start: PathBuf, fits: impl Fn(&Path) -> bool) -> Option<PathBuf> {
    let mut dir = start;
    loop {
        if fits(&dir) {
            return Some(dir);
        }
        if dir == m.at || !dir.pop() || !dir.starts_with(&m.at) {
            return None;
        }
    }
}

fn v2(mounts: &[CgroupMount], own: &str, uid: u32, host: &dyn Host) -> Result<PathBuf, String> {
    let m = mounts.iter().find(|m| !m.v1).ok_or("no cgroup v2 hierarchy is mounted")?;
    let rel = own.lines().find_map(|l| l.strip_prefix("0::")).ok_or("this process is in no cgroup v2")?;
    let start = dir_of(m, rel).ok_or("this process's cgroup v2 is outside the mounted hierarchy")?;
    let fits = |d: &Path| {
        let sub = host.subtree_control(d);
        host.owner(d) == Some(uid) && CONTROLLERS.iter().all(|c| sub.split_whitespace().any(|s| s == *c))
    };
    deepest(m, start, fits)
        .ok_or_else(|| format!("no cgroup v2 subtree of {} is delegated to uid {uid}", m.at.display()))
}

fn v1(mounts: &[CgroupMount], own: &str, uid: u32, host: &dyn Host) -> Result<Layout, String> {
    let mut found: Vec<PathBuf> = Vec::new();
    let mut missing: Vec<&str> = Vec::new();
    for c in CONTROLLERS {
        let dir = mounts.iter().filter(|m| m.v1 && m.controllers.iter().any(|x| x == c)).find_map(|m| {
            // This process's line for the hierarchy: `N:memory:/path`
            // (`N:cpu,cpuacct:/path` where controllers share one).
            let rel = own.lines().find_map(|l| {
                let mut f = l.splitn(3, ':');
                let (_, names, path) = (f.next()?, f.next()?, f.next()?);
                names.split(',').any(|n| n == c).then_some(path)
            })?;
            deepest(m, dir_of(m, rel)?, |d| host.owner(d) == Some(uid))
        });
        match dir {
            Some(d) => found.push(d),
            None => missing.push(c),
        }
    }
    match (found.as_slice(), missing.is_empty()) {
        ([memory, pids, cpu], true) => Ok(Layout::V1 { memory: memory.clone(), pids: pids.clone(), cpu: cpu.clone() }),
        _ => Err(format!(
            "nor is a cgroup v1 directory at or above this process's own in the {} hierarchies",
            missing.join(", ")
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    struct Fake {
        owners: HashMap<PathBuf, u32>,
        subtree: HashMap<PathBuf, String>,
    }

    impl Host for Fake {
        fn owner(&self, dir: &Path) -> Option<u32> {
            self.owners.get(dir).copied().or(Some(0))
        }
        fn subtree_control(&self, dir: &Path) -> String {
            self.subtree.get(dir).cloned().unwrap_or_default()
        }
    }

    fn fake(owners: &[(&str, u32)], subtree: &[(&str, &str)]) -> Fake {
        Fake {
            owners: owners.iter().map(|(p, u)| (PathBuf::from(p), *u)).collect(),
            subtree: subtree.iter().map(|(p, s)| (PathBuf::from(p), s.to_string())).collect(),
        }
    }

    const HYBRID: &str = "30 25 0:26 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw\n\
        31 25 0:27 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct\n\
        32 25 0:28 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n\
        33 25 0:29 / /sys/fs/cgroup/pids rw - cgroup cgroup rw,pids\n";
    const OWN: &str = "4:pids:/d/w\n3:memory:/m/d\n2:cpu,cpuacct:/c\n0::/user.slice\n";

    #[test]
    fn v1_takes_the_deepest_directory_of_the_user_in_each_hierarchy() {
        let host = fake(
            &[
                ("/sys/fs/cgroup/pids/d", 1000),
                ("/sys/fs/cgroup/pids/d/w", 1000),
                ("/sys/fs/cgroup/memory/m/d", 1000),
                ("/sys/fs/cgroup/cpu,cpuacct/c", 1000),
            ],
            &[],
        );
        let l = find(HYBRID, OWN, 1000, &host).unwrap();
        assert_eq!(
            l,
            Layout::V1 {
                memory: "/sys/fs/cgroup/memory/m/d".into(),
                pids: "/sys/fs/cgroup/pids/d/w".into(),
                cpu: "/sys/fs/cgroup/cpu,cpuacct/c".into(),
            }
        );
        assert!(describe(&l).starts_with("cgroup v1: "), "{}", describe(&l));
    }

    #[test]
    fn v1_needs_all_three_and_says_which_are_missing() {
        let host = fake(&[("/sys/fs/cgroup/pids/d", 1000), ("/sys/fs/cgroup/memory/m", 1000)], &[]);
        let why = find(HYBRID, OWN, 1000, &host).unwrap_err();
        assert!(why.contains("no cgroup v2 subtree") && why.contains("in the cpu hierarchies"), "{why}");
        // Another user's directories are not the caller's.
        let host = fake(
            &[
                ("/sys/fs/cgroup/pids/d", 1001),
                ("/sys/fs/cgroup/memory/m", 1001),
                ("/sys/fs/cgroup/cpu,cpuacct/c", 1001),
            ],
            &[],
        );
        let why = find(HYBRID, OWN, 1000, &host).unwrap_err();
        assert!(why.contains("memory, pids, cpu"), "{why}");
        // Never above the hierarchy's mount point.
        let host = fake(&[("/sys/fs/cgroup", 1000), ("/sys/fs", 1000)], &[]);
        assert!(find(HYBRID, OWN, 1000, &host).is_err());
    }

    #[test]
    fn v2_is_preferred_and_needs_the_controllers_delegated() {
        let host = fake(
            &[("/sys/fs/cgroup/unified/user.slice", 1000), ("/sys/fs/cgroup/pids/d", 1000)],
            &[("/sys/fs/cgroup/unified/user.slice", "memory pids cpu")],
        );
        let l = find(HYBRID, OWN, 1000, &host).unwrap();
        assert_eq!(l, Layout::V2 { root: "/sys/fs/cgroup/unified/user.slice".into() });
        // Owned, but without the cpu controller for its children: not v2.
        let host = fake(
            &[("/sys/fs/cgroup/unified/user.slice", 1000)],
            &[("/sys/fs/cgroup/unified/user.slice", "memory pids")],
        );
        assert!(find(HYBRID, OWN, 1000, &host).is_err());
    }

    #[test]
    fn a_pure_v2_host_says_only_what_v2_lacks() {
        let info = "30 25 0:26 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n";
        let why = find(info, "0::/user.slice/user-1000.slice\n", 1000, &fake(&[], &[])).unwrap_err();
        assert_eq!(why, "no cgroup v2 subtree of /sys/fs/cgroup is delegated to uid 1000");
        let why = find("", "", 1000, &fake(&[], &[])).unwrap_err();
        assert_eq!(why, "no cgroup v2 hierarchy is mounted");
    }

    #[test]
    fn a_mount_of_part_of_a_hierarchy_maps_the_process_path_under_it() {
        // A container's view: the hierarchy's /outer mounted at /sys/fs/cgroup.
        let info = "30 25 0:26 /outer /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n";
        let host = fake(&[("/sys/fs/cgroup/me", 1000)], &[("/sys/fs/cgroup/me", "cpu memory pids")]);
        let l = find(info, "0::/outer/me/leaf\n", 1000, &host).unwrap();
        assert_eq!(l, Layout::V2 { root: "/sys/fs/cgroup/me".into() });
        // A process outside the mounted part: nothing to find.
        assert!(find(info, "0::/elsewhere\n", 1000, &host).is_err());
    }
}
