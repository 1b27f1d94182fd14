//! The mount plan: which filesystems, masks and exposures a world gets, as a
//! flat list of steps computed on the host *before* the world exists.
//!
//! The plan is pure data built from host facts (what exists, what is a
//! directory) and the request (masks, exposures, cwd), so its rules are unit
//! tested without root. The child executes it step by step (`child.rs`).
//!
//! Rules (what may be exposed at all is `exposure.rs`'s):
//! - fresh filesystems: /proc, /dev (tmpfs with device nodes, devpts, shm),
//!   /sys read-only; /tmp, /var/tmp and /run fresh and empty, directories
//!   of the world's own upper store (on disk or a tmpfs, under its cap: no
//!   host socket is reachable by path);
//! - masks hide a path: a directory becomes an empty read-only tmpfs, a file a
//!   read-only bind of /dev/null; a home becomes the home's own directory
//!   of the upper layer, empty and writable (`view.rs`);
//! - toolchains under a home that the world's PATH names are shown
//!   read-only (`view.rs`);
//! - the cwd must pass `Masks::judge_dir` (never `/`, a home itself, a
//!   secret or inside one, nor containing a state dir); explicit exposures
//!   never reach a state dir;
//! - exposures (the cwd's subtree and `--expose` paths) stay visible through
//!   any mask that contains them: they are grabbed from the overlay before any
//!   mask and re-attached after the deepest mounted mask containing them;
//! - masks below an exposure stay in force, mounted after it is attached; a
//!   mask is dropped only when an explicit `--expose` names it exactly;
//! - secrets relative to home directories and to the cwd (`.ssh`, ...) are
//!   masked wherever they would otherwise be visible;
//! - paths are canonical host paths of the root filesystem (the overlay's
//!   lower), so no symlink in the lower can redirect a mount; the child
//!   grabs and attaches exposures without following any symlink.

use crate::exposure::Refusal;
use crate::view::{Cover, Kind, View};
use std::path::{Path, PathBuf};

/// What the host says about a path of the root filesystem.
pub trait HostFacts {
    /// Canonical path (symlinks resolved) if it exists.
    fn canonical(&self, p: &Path) -> Option<PathBuf>;
    /// True if `p` (not following a final symlink) is a directory.
    fn is_dir(&self, p: &Path) -> bool;
    /// True if `p` exists (not following a final symlink).
    fn exists(&self, p: &Path) -> bool;
    /// The target of symbolic link `p` as written in it (None: not a link,
    /// or unknown).
    fn read_link(&self, _p: &Path) -> Option<PathBuf> {
        None
    }
}

/// The host itself.
pub struct RealHost;

impl HostFacts for RealHost {
    fn canonical(&self, p: &Path) -> Option<PathBuf> {
        std::fs::canonicalize(p).ok()
    }
    fn is_dir(&self, p: &Path) -> bool {
        std::fs::symlink_metadata(p).map(|m| m.is_dir()).unwrap_or(false)
    }
    fn exists(&self, p: &Path) -> bool {
        std::fs::symlink_metadata(p).is_ok()
    }
    fn read_link(&self, p: &Path) -> Option<PathBuf> {
        std::fs::read_link(p).ok()
    }
}

/// What the caller asks for.
#[derive(Debug, Clone, Default)]
pub struct FsRequest {
    /// The world's working directory (absolute).
    pub cwd: PathBuf,
    /// Paths to hide (policy `fs.mask`).
    pub mask: Vec<PathBuf>,
    /// Every home directory (listed by the caller: `spec::home_dirs`).
    pub homes: Vec<PathBuf>,
    /// Mask the homes themselves (their secrets are masked regardless).
    pub mask_homes: bool,
    /// Relative secret paths masked under each home and under the cwd.
    pub home_secrets: Vec<PathBuf>,
    /// Explicit exposures (`--expose` and policy `fs.expose`).
    pub expose: Vec<PathBuf>,
    /// cloche's state directories (this run's and the default one): hidden
    /// from every world, never exposed.
    pub state_dirs: Vec<PathBuf>,
    /// The world's PATH (toolchains are shown when it names them).
    pub path: Option<std::ffi::OsString>,
    /// Policy `fs.toolchains` and `fs.toolchain_writable`.
    pub toolchains: crate::spec::Toolchains,
    /// Host data mounts the world carries (`layers.rs`), and whether each
    /// is read-only: a home under a read-only one, or holding one, cannot
    /// be a writable home.
    pub data_mounts: Vec<(PathBuf, bool)>,
}

/// One step of the plan. Paths are absolute paths inside the world; the child
/// prefixes them with the new root before pivot_root.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// Clone (recursively) the overlay's view of `path` into slot `slot`,
    /// made read-only when `read_only`.
    Grab { slot: usize, path: PathBuf, read_only: bool },
    /// Make the overlay copy `path` (and its parents) up to its upper layer
    /// as it is on the host: a mount point inside a writable home.
    CopyUp { path: PathBuf },
    /// A writable home: bind the home's own directory of the upper layer
    /// (copied up first) onto `path`, nosuid and nodev.
    Home { path: PathBuf },
    /// Mount a new filesystem.
    Mount { path: PathBuf, fstype: &'static str, flags: u64, data: String },
    /// sysfs, read-only, at `path`, in the world's network namespace (sysfs
    /// shows its mounter's network devices): as root the child joins the
    /// namespace the parent made and sent (`child::ChildPlan::netns_from`)
    /// first; without root it made its own at its start.
    Sysfs { path: PathBuf },
    /// Bind scratch directory `index` of the world's upper store (made
    /// empty with `mode`) at `path`: nosuid, nodev. Its files count
    /// against the world's upper cap, and live where its upper does (on
    /// disk by default), never in the fs_diff.
    Scratch { path: PathBuf, mode: u32, index: u32 },
    /// Create a directory (and parents) with `mode`.
    Mkdir { path: PathBuf, mode: u32 },
    /// Create an empty file (parents too) to mount a file on.
    Touch { path: PathBuf },
    /// Character device node.
    Mknod { path: PathBuf, major: u32, minor: u32 },
    /// Symbolic link `path -> target`.
    Symlink { path: PathBuf, target: PathBuf },
    /// Read-only bind of the world's /dev/null over a file.
    MaskFile { path: PathBuf },
    /// Mask a directory with an empty read-only one: the first such step
    /// mounts a tiny read-only tmpfs, later ones bind it.
    MaskDir { path: PathBuf },
    /// Bind `path` onto itself, then make it read-only (nosuid, nodev, noexec).
    ReadOnly { path: PathBuf },
    /// Attach grabbed slot `slot` at `path`.
    Attach { slot: usize, path: PathBuf },
    /// Remount the mount at `path` read-only.
    RemountRo { path: PathBuf },
}

// MS_* values (stable kernel ABI), kept here so the plan stays pure.
pub const MS_RDONLY: u64 = 1;
pub const MS_NOSUID: u64 = 2;
pub const MS_NODEV: u64 = 4;
pub const MS_NOEXEC: u64 = 8;

const SAFE: u64 = MS_NOSUID | MS_NODEV | MS_NOEXEC;

/// /proc files masked with a read-only bind of /dev/null (when present):
/// reads are empty, writes fail. What a world may read at the top of /proc
/// is an allowlist (docs/security.md, `tests/kernel.rs`); everything else
/// there is here, in `PROC_MASK_DIRS` or unreadable without a capability
/// the kernel checks at open (`mtrr`: CAP_SYS_ADMIN).
const PROC_MASK_FILES: &[&str] = &[
    // Kernel addresses and layout (kallsyms shows real addresses when the
    // host's kptr_restrict and perf_event_paranoid allow it; vmallocinfo
    // physical addresses whatever they say).
    "/proc/kallsyms",
    "/proc/kcore",
    "/proc/modules",
    "/proc/vmallocinfo",
    "/proc/iomem",
    "/proc/ioports",
    "/proc/dma",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/latency_stats",
    "/proc/vmcore",
    // The kernel log (opening it also needs CAP_SYSLOG).
    "/proc/kmsg",
    // Slab, page, lock and key statistics of the whole host.
    "/proc/slabinfo",
    "/proc/pagetypeinfo",
    "/proc/zoneinfo",
    "/proc/buddyinfo",
    "/proc/kpageflags",
    "/proc/kpagecount",
    "/proc/kpagecgroup",
    "/proc/allocinfo",
    "/proc/lock_stat",
    "/proc/keys",
    "/proc/key-users",
    // Boot command line, build configuration, drivers and devices.
    "/proc/cmdline",
    "/proc/bootconfig",
    "/proc/config.gz",
    "/proc/consoles",
    "/proc/devices",
    "/proc/misc",
    "/proc/crypto",
    "/proc/fb",
    "/proc/mdstat",
    "/proc/mtd",
    "/proc/i8k",
    // Host-wide activity (interrupt counts are a keystroke side channel),
    // disks, swap and the host's file locks.
    "/proc/interrupts",
    "/proc/softirqs",
    "/proc/schedstat",
    "/proc/diskstats",
    "/proc/partitions",
    "/proc/swaps",
    "/proc/locks",
    // Write-only; a mask refuses writes in one mount where a read-only
    // bind takes two.
    "/proc/sysrq-trigger",
];
/// /proc and /sys directories masked with an empty read-only directory
/// (when present): the first is a tmpfs, the others binds of it.
const PROC_MASK_DIRS: &[&str] = &[
    // host-wide pressure stall information
    "/proc/pressure",
    // hardware, drivers and their settings (several writable by root
    // without a capability: /proc/acpi/wakeup, /proc/dynamic_debug/control)
    "/proc/acpi",
    "/proc/asound",
    "/proc/bus",
    "/proc/driver",
    "/proc/dynamic_debug",
    "/proc/fs",
    "/proc/irq",
    "/proc/scsi",
    "/proc/tty/driver",
    // addresses, layout, build ids, BTF, vmcoreinfo, boot parameters, slab
    // and mm statistics, and the mount points of debugfs, tracefs and
    // securityfs
    "/sys/kernel",
    // module parameters (the host's kernel configuration) and sections
    "/sys/module",
    // ACPI tables, DMI, the physical memory map, EFI variables
    "/sys/firmware",
    "/sys/hypervisor",
    // serial numbers and UUIDs of the machine
    "/sys/devices/virtual/dmi",
    // energy counters (a side channel)
    "/sys/devices/virtual/powercap",
    // which CPU mitigations the host runs without
    "/sys/devices/system/cpu/vulnerabilities",
];
/// /proc entries made read-only (the sysctls a world may read).
const PROC_READONLY: &[&str] = &["/proc/sys"];

impl FsRequest {
    /// The request of a world: its cwd, the policy's `[fs]` lists, every
    /// home of this host and the state directories (`state_root` and the
    /// default one).
    pub fn new(
        cwd: &Path,
        mask: &[PathBuf],
        mask_homes: bool,
        home_secrets: &[PathBuf],
        expose: &[PathBuf],
        state_root: &Path,
    ) -> FsRequest {
        let mut state_dirs = vec![state_root.to_path_buf()];
        if state_root != Path::new(crate::state::DEFAULT_STATE_DIR) {
            state_dirs.push(PathBuf::from(crate::state::DEFAULT_STATE_DIR));
        }
        FsRequest {
            cwd: cwd.to_path_buf(),
            mask: mask.to_vec(),
            homes: crate::spec::home_dirs(),
            mask_homes,
            home_secrets: home_secrets.to_vec(),
            expose: expose.to_vec(),
            state_dirs,
            path: None,
            toolchains: Default::default(),
            data_mounts: Vec::new(),
        }
    }

    /// The request of a world of `spec` whose state dir is `state_root`.
    pub fn of_spec(spec: &crate::Spec, state_root: &Path) -> FsRequest {
        let mut r =
            FsRequest::new(&spec.cwd, &spec.mask, spec.mask_homes, &spec.home_secrets, &spec.expose, state_root);
        r.path = spec.env.iter().find(|(k, _)| k == "PATH").map(|(_, v)| v.clone());
        r.toolchains = spec.toolchains.clone();
        r
    }
}

/// Builds the plan, or refuses the cwd or an exposure (one line naming the
/// mask).
pub fn build(host: &dyn HostFacts, req: &FsRequest) -> Result<Vec<Step>, Refusal> {
    Ok(steps(&View::new(host, req)?))
}

/// The plan of a world whose view of the host is `view`.
pub fn steps(view: &View) -> Vec<Step> {
    let nodes = &view.nodes;
    let kids = |i: usize| nodes.iter().enumerate().filter(move |(_, n)| n.parent == Some(i));
    let mut steps = Vec::new();
    let mut scratch = 0;
    // Mount points inside a writable home, and the home itself, are copied
    // up by the overlay (the host's modes, owners and times; a file's
    // content) before anything is grabbed, so the overlay's view and the
    // upper agree on them.
    for (i, n) in nodes.iter().enumerate() {
        if matches!(n.kind, Kind::Mask { cover: Cover::Home, .. }) {
            steps.push(Step::CopyUp { path: n.path.clone() });
            for (_, k) in kids(i) {
                steps.push(Step::CopyUp { path: k.path.clone() });
            }
        }
    }
    // Links in a writable home that lead to a toolchain are copied up as
    // they are (before anything is grabbed, like the mount points).
    for l in &view.links {
        steps.push(Step::CopyUp { path: l.clone() });
    }
    // Every exposure is grabbed from the overlay before any mask is mounted.
    let mut slots: Vec<Option<usize>> = vec![None; nodes.len()];
    for (i, n) in nodes.iter().enumerate() {
        if let Kind::Expose { read_only } = n.kind {
            let slot = steps.iter().filter(|s| matches!(s, Step::Grab { .. })).count();
            slots[i] = Some(slot);
            steps.push(Step::Grab { slot, path: n.path.clone(), read_only });
        }
    }
    let attach = |steps: &mut Vec<Step>, k: usize| {
        let slot = slots[k].expect("an exposure has a slot");
        steps.push(Step::Attach { slot, path: nodes[k].path.clone() });
    };
    // Parents first: each mask, then the exposures right below it; an
    // exposure below an exposure of the other kind, and a mask below an
    // exposure, at its place in path order (after its parent's attach).
    for (i, n) in nodes.iter().enumerate() {
        let cover = match &n.kind {
            Kind::Mask { cover, .. } => *cover,
            Kind::Expose { .. } => {
                if n.parent.is_some_and(|p| !nodes[p].is_mask()) {
                    attach(&mut steps, i);
                }
                continue;
            }
        };
        let mine: Vec<usize> = kids(i).filter(|(_, k)| !k.is_mask()).map(|(k, _)| k).collect();
        steps.push(match cover {
            Cover::Scratch(mode) => {
                scratch += 1;
                Step::Scratch { path: n.path.clone(), mode, index: scratch - 1 }
            }
            // Read-only from the start unless exposures must be attached inside.
            Cover::Empty => Step::Mount {
                path: n.path.clone(),
                fstype: "tmpfs",
                flags: if mine.is_empty() { SAFE | MS_RDONLY } else { SAFE },
                data: "mode=755,size=64k".into(),
            },
            Cover::Home => Step::Home { path: n.path.clone() },
            Cover::File => Step::MaskFile { path: n.path.clone() },
        });
        for &k in &mine {
            // In a home the mount points were copied up.
            if cover != Cover::Home {
                steps.push(match nodes[k].dir {
                    true => Step::Mkdir { path: nodes[k].path.clone(), mode: 0o755 },
                    false => Step::Touch { path: nodes[k].path.clone() },
                });
            }
            attach(&mut steps, k);
        }
        if cover == Cover::Empty && !mine.is_empty() {
            steps.push(Step::RemountRo { path: n.path.clone() });
        }
    }
    proc_masks(&mut steps);
    steps
}

/// /proc and /dev: fresh instances, never the host's. They need no host
/// facts, so the child mounts them while the parent builds the rest. (The
/// fresh /sys is the plan's, `Step::Sysfs`: it waits for the world's network
/// namespace.)
pub fn system_steps() -> Vec<Step> {
    let mut steps = Vec::new();
    let p = PathBuf::from;
    steps.push(Step::Mount { path: p("/proc"), fstype: "proc", flags: SAFE, data: String::new() });
    steps.push(Step::Mount {
        path: p("/dev"),
        fstype: "tmpfs",
        flags: MS_NOSUID | MS_NOEXEC,
        data: "mode=755,size=64k".into(),
    });
    for (name, major, minor) in
        [("null", 1, 3), ("zero", 1, 5), ("full", 1, 7), ("random", 1, 8), ("urandom", 1, 9), ("tty", 5, 0)]
    {
        steps.push(Step::Mknod { path: PathBuf::from(format!("/dev/{name}")), major, minor });
    }
    steps.push(Step::Mkdir { path: p("/dev/pts"), mode: 0o755 });
    steps.push(Step::Mount {
        path: p("/dev/pts"),
        fstype: "devpts",
        flags: MS_NOSUID | MS_NOEXEC,
        data: "newinstance,ptmxmode=0666,mode=0620,gid=5".into(),
    });
    steps.push(Step::Mkdir { path: p("/dev/shm"), mode: 0o1777 });
    steps.push(Step::Mount { path: p("/dev/shm"), fstype: "tmpfs", flags: SAFE, data: "mode=1777,size=64m".into() });
    for (link, target) in [
        ("/dev/ptmx", "pts/ptmx"),
        ("/dev/fd", "/proc/self/fd"),
        ("/dev/stdin", "/proc/self/fd/0"),
        ("/dev/stdout", "/proc/self/fd/1"),
        ("/dev/stderr", "/proc/self/fd/2"),
    ] {
        steps.push(Step::Symlink { path: p(link), target: p(target) });
    }
    steps
}

/// Masks and read-only binds inside /proc (mounted already) and /sys,
/// mounted here: last, after /proc's masks, so that the parent has made the
/// world's network namespace by the time the child needs it. Every entry is
/// listed without asking the host (tens of lookups in procfs and sysfs,
/// 0.1-0.2 ms of the parent's): the child skips one its kernel lacks
/// (`kernel_lacks` in `child_apply.rs`).
fn proc_masks(steps: &mut Vec<Step>) {
    let path = |p: &str| PathBuf::from(p);
    steps.extend(PROC_MASK_FILES.iter().map(|f| Step::MaskFile { path: path(f) }));
    let dirs = |under: &'static str| {
        PROC_MASK_DIRS.iter().filter(move |d| d.starts_with(under)).map(|d| Step::MaskDir { path: path(d) })
    };
    steps.extend(dirs("/proc/"));
    steps.push(Step::Sysfs { path: path("/sys") });
    steps.extend(dirs("/sys/"));
    steps.extend(PROC_READONLY.iter().map(|r| Step::ReadOnly { path: path(r) }));
}

#[cfg(test)]
#[path = "plan_tests.rs"]
pub(crate) mod tests;
