//! The parent side of a world: prepare, clone, release, wait, collect the
//! fs_diff, tear down. One function, [`run`], in the order of docs/design.md.

use crate::cgroup::Layout;
use crate::continued::Taken;
use crate::diff::{self, DiffOptions, FsDiff};
use crate::error::WorldError;
use crate::launch::{launch, wait_exit, Launched, Mode, Store};
use crate::layers::HostMount;
use crate::raw;
use crate::spec::Spec;
use crate::state::StateDir;
use crate::teardown::Teardown;
use crate::upper::Upper;
use serde::Serialize;
use std::ffi::CString;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Milliseconds spent in each phase.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Timings {
    pub setup_ms: f64,
    pub run_ms: f64,
    pub diff_ms: f64,
    pub teardown_ms: f64,
    pub total_ms: f64,
}

/// What happened.
#[derive(Debug, Serialize)]
pub struct Outcome {
    pub world: String,
    /// Shell-style: the command's code, 128+N for signal N, 124 on timeout.
    pub exit_code: i32,
    pub timed_out: bool,
    /// Set when cloche itself was asked to stop (SIGINT, SIGTERM, ...).
    pub interrupted: Option<i32>,
    pub fs_diff: FsDiff,
    pub layers: Vec<String>,
    /// The world's user namespace: its ids 0.. are these host ids (`None`:
    /// it had none, its ids were the host's).
    pub userns: Option<crate::userns::WorldIds>,
    pub cgroup: &'static str,
    pub limits_hit: Vec<String>,
    pub timings: Timings,
    /// The kept world's directory, with `--keep`.
    pub kept: Option<PathBuf>,
    /// In a kept world: this run's number in it (1 for the run that made
    /// it; `continued::RunRecord`).
    pub run: Option<u32>,
    /// A run that continued a kept world: what it changed itself
    /// (`fs_diff` is the world's whole change since its base).
    pub run_diff: Option<FsDiff>,
    /// The network scope (`None`: loopback only).
    pub network: Option<crate::network::NetScope>,
    /// CPU time of everything the world ran, in ms (a batch world ended by
    /// `finish`; otherwise not measured).
    #[serde(skip)]
    pub cpu_ms: Option<u64>,
    /// Why the world's output could not all be delivered to the caller's
    /// stdout or stderr (a full disk, an I/O error), if so.
    pub output_error: Option<String>,
    /// The world's mounts, still to be released.
    #[serde(skip)]
    pub teardown: Teardown,
}

pub(crate) fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}

/// Runs one world to completion.
pub fn run(spec: &Spec, state: &StateDir) -> Result<Outcome, WorldError> {
    run_world(spec, state, None)
}

/// Runs one command in the kept world `taken` (`continued::take`), on top
/// of what its earlier runs left; the world stays kept (docs/architecture.md,
/// *Worlds that last*). The world's frame is checked against `spec` first:
/// a refusal changes nothing.
pub fn continue_run(spec: &Spec, state: &StateDir, taken: Taken) -> Result<Outcome, WorldError> {
    run_world(spec, state, Some(taken))
}

fn run_world(spec: &Spec, state: &StateDir, taken: Option<Taken>) -> Result<Outcome, WorldError> {
    let t0 = Instant::now();
    spec.validate()?;
    // 1. Where the controllers are; claim an id (a lock, nothing on disk),
    //    or the kept world's, held already.
    crate::profile::mark("run: start");
    let (layout, mut layers, seen) = host_facts(spec, state)?;
    crate::profile::mark("layout detected");
    let fresh;
    let claim = match &taken {
        Some(t) => {
            t.check_frame(spec)?;
            layers = t.assign_slots(layers)?;
            crate::cgroup::remove_stale(&layout, t.id())?;
            &t.claim
        }
        None => {
            fresh = state.claim().map_err(WorldError::state("claim a world id"))?;
            crate::upper::prepare_keep(spec, state)?;
            &fresh
        }
    };
    let store = if taken.is_some() { Store::Resume } else { Store::New };
    let (mut outcome, mut upper, attached) = run_in(spec, &layout, &layers, &seen, claim, state, t0, store)?;
    let t = Instant::now();
    let meta = match (&taken, attached) {
        (Some(t), _) => {
            let before = t.last_diff();
            outcome.run_diff = Some(crate::diff::delta(&before, &outcome.fs_diff));
            outcome.run = Some(t.next_run());
            Some(t.after_run(spec, &layers, outcome.exit_code))
        }
        (None, Some(mut meta)) => {
            meta["state"] = "kept".into();
            meta["exit_code"] = outcome.exit_code.into();
            outcome.run = Some(1);
            Some(meta)
        }
        (None, None) => None,
    };
    if let Some(meta) = meta {
        // Kept: its upper stays at `worlds/<id>` (a tmpfs is moved to disk),
        // with the fs_diff the next run starts from (a continued world's
        // earlier scratch goes).
        upper.drop_old_scratch();
        crate::continued::save_diff(state, &claim.id, &outcome.fs_diff)
            .map_err(WorldError::state("record the world's fs_diff"))?;
        state.mark_kept(&claim.id, &meta).map_err(WorldError::state("keep the world"))?;
        outcome.kept = Some(state.world_path(&claim.id));
    }
    // A world without root's directory, and a disk upper's move to the
    // pool's trash: by the teardown, off the run's path (the caller has its
    // status first).
    if outcome.kept.is_none() {
        if let Some(dir) = upper.discard_later() {
            outcome.teardown.discard(dir, claim);
        }
        if let Some(t) = upper.trash_later() {
            outcome.teardown.trash(t, claim);
        }
    }
    drop(upper); // a tmpfs' last fd closes (a disk upper not handed over goes to the trash)
    crate::profile::mark("teardown done");
    outcome.timings.teardown_ms = ((outcome.timings.teardown_ms + ms(t.elapsed())) * 1e3).round() / 1e3;
    outcome.timings.total_ms = ms(t0.elapsed());
    Ok(outcome)
}

/// What [`host_facts`] read of the host that a world without root's launch
/// needs again, to list its root's pieces (`rootless::frame_each`) after
/// the clone: not read a second time there, where the child waits for the
/// pieces (0.2 ms of that wait here).
pub(crate) struct Seen {
    pub(crate) mountinfo: String,
    /// Whose world it is (a world without root; `None` as root).
    pub(crate) writer: Option<crate::rootless::Writer>,
}

/// Where the cgroup controllers are and which host mounts a world carries
/// (one read of mountinfo); refuses when the policy requires cgroups and
/// there are none, and a world without root when mountinfo cannot be read.
pub(crate) fn host_facts(spec: &Spec, state: &StateDir) -> Result<(Layout, Vec<HostMount>, Seen), WorldError> {
    let mountinfo = match crate::sys::mountinfo() {
        Ok(m) => m,
        // A world without root's root is put together from it (which
        // directories hold mounts): unread, no world.
        Err(e) if spec.rootless.is_some() => return Err(WorldError::state("read mountinfo")(e)),
        Err(_) => String::new(),
    };
    let layout = limits_layout(spec, &mountinfo)?;
    let mut layers = crate::layers::data_mounts(&mountinfo, &state.root);
    let writer = spec.rootless.map(|caller| crate::rootless::Writer::new(caller, &spec.cwd, &spec.expose));
    if let Some(who) = &writer {
        layers = crate::rootless::carried(layers, &mountinfo, who);
    }
    if spec.userns.is_none() && spec.require.iter().any(|l| l == "userns") {
        return Err(WorldError::LayerUnavailable(
            "userns: the policy turns user namespaces off (world.userns = false)".into(),
        ));
    }
    if let Layout::Unavailable { missing } = &layout {
        if spec.require.iter().any(|l| l == "cgroup") {
            return Err(WorldError::LayerUnavailable(format!(
                "cgroup controllers missing: {} (see `cloche doctor`)",
                missing.join(", ")
            )));
        }
    }
    Ok((layout, layers, Seen { mountinfo, writer }))
}

/// Where a world's limits go: the host's controllers (root), or for a
/// world without root its caller's delegated cgroup (none with
/// `--no-limits`; refused without one).
fn limits_layout(spec: &Spec, mountinfo: &str) -> Result<Layout, WorldError> {
    Ok(match spec.rootless {
        Some(_) if spec.no_limits => Layout::Unavailable { missing: Vec::new() },
        // Found already by the service's check, before anything was made:
        // not looked for again (a search reads cgroupfs, 0.2-0.5 ms).
        Some(_) => {
            let found = match &spec.delegated {
                Some(layout) => Ok(layout.clone()),
                None => crate::cgroup_delegated::delegated_cgroup_in(mountinfo),
            };
            found.map_err(|why| WorldError::LayerUnavailable(crate::cgroup_delegated::no_cgroup_line(&why)))?
        }
        None => Layout::from_mountinfo(mountinfo, |root| std::fs::read_to_string(root.join("cgroup.controllers")).ok()),
    })
}

/// A one-shot world: launched, waited for, diffed, removed.
#[allow(clippy::too_many_arguments)]
fn run_in(
    spec: &Spec,
    layout: &Layout,
    layers: &[HostMount],
    seen: &Seen,
    claim: &crate::state::Claim,
    state: &StateDir,
    t0: Instant,
    store: Store,
) -> Result<(Outcome, Upper, Option<serde_json::Value>), WorldError> {
    let Launched { pid, pidfd, mut scratch, mut cg, sigfd, _restore, net, relay, mounts, userns, spare_netns, .. } =
        launch(spec, layout, layers, seen, claim, state, Mode::OneShot, store)?;
    let ids = userns.as_ref().map(|u| u.ids);
    let mut relay = relay.expect("one-shot worlds have a relay");
    let t_setup = t0.elapsed();
    // With `--keep`, the world is attached at `worlds/<id>` while it runs
    // (as a batch's world is): if cloche dies, the next sweep keeps it as
    // interrupted or removes it, as its `on_interrupt` says. (A continued
    // world is there, kept, already.)
    let attached = if spec.keep && store == Store::New {
        let meta = world_meta(claim, spec, layers, "running", None);
        if let Err(e) = state.attach(claim, &meta, |fsdir| scratch.place(fsdir)) {
            let _ = raw::pidfd_kill(pidfd.as_fd(), libc::SIGKILL);
            let _ = wait_exit(pid);
            return Err(WorldError::state("attach the kept world")(e));
        }
        scratch.hand_over();
        Some(meta)
    } else {
        None
    };

    // 5. Wait for init (the command's exit), a timeout, or a stop signal,
    //    copying the world's stdio meanwhile; then deliver what its output
    //    pipes still hold.
    let (status, timed_out, interrupted) = wait_world(pid, &pidfd, &sigfd, spec.timeout, &mut relay)?;
    relay.finish(!timed_out && interrupted.is_none(), sigfd.as_fd().as_raw_fd());
    let output_error = relay.failure();
    drop(relay);
    crate::profile::mark("world exited");
    let t_run = t0.elapsed();
    // Nobody reads more than the status of a discarded world's run without
    // a report: its limits' counters, its network's and its fs_diff (below)
    // are not gathered.
    let unread = spec.unread && !spec.keep;
    let mut limits_hit: Vec<String> = match (&cg.0, unread) {
        (Some(c), false) => c.limits_hit().into_iter().map(String::from).collect(),
        _ => Vec::new(),
    };
    if timed_out {
        limits_hit.push("timeout".into());
    }
    let exit_code = if timed_out { 124 } else { status };
    // Counters and refused attempts, read while the namespace is held.
    let network = net.as_ref().filter(|_| !unread).map(|n| n.scope());
    let mut teardown = Teardown::new(mounts.into_iter().collect(), net.and_then(|n| n.end()));
    if spare_netns {
        teardown.make_spare_netns(&state.root);
    }

    // 6. fs_diff from the upper layer against the host root filesystem.
    scratch.receive().map_err(WorldError::Scratch)?;
    // (Not when nobody will read it: a discarded world's run without a
    // report.)
    let fs_diff = match unread {
        true => FsDiff::default(),
        false => collect_diff(scratch.fd(), layers, spec.hash, spec.rootless.is_some(), &mut teardown)?,
    };
    crate::profile::mark("fs_diff");
    let t_diff = t0.elapsed();
    let cgroup_name = layout.name();
    let has_cg = cg.0.is_some();
    if let Some(c) = cg.0.take() {
        teardown.remove_cgroup(c, claim)?;
    }
    crate::profile::mark("cgroup handed to the teardown");
    let timings = Timings {
        setup_ms: ms(t_setup),
        run_ms: ms(t_run - t_setup),
        diff_ms: ms(t_diff - t_run),
        teardown_ms: ms(t0.elapsed() - t_diff),
        total_ms: 0.0,
    };
    let outcome = Outcome {
        world: claim.id.clone(),
        exit_code,
        timed_out,
        interrupted,
        fs_diff,
        layers: {
            let mut l = crate::spec::layers(has_cg, ids.is_some() || spec.rootless.is_some());
            l.extend(spec.rootless.map(|_| "rootless".to_string()));
            l
        },
        userns: ids.or(spec.rootless.map(|c| c.mapping())),
        cgroup: cgroup_name,
        limits_hit,
        timings,
        kept: None,
        run: None,
        run_diff: None,
        network,
        output_error,
        cpu_ms: None,
        teardown,
    };
    Ok((outcome, scratch, attached))
}

/// Waits for init to exit, the timeout, or a stop signal, serving the
/// world's stdio meanwhile; kills the world in the latter two cases (SIGKILL
/// to pid 1 takes the whole pid namespace).
fn wait_world(
    pid: libc::pid_t,
    pidfd: &OwnedFd,
    sigfd: &nix::sys::signalfd::SignalFd,
    timeout: Option<Duration>,
    relay: &mut crate::stdio::Relay,
) -> Result<(i32, bool, Option<i32>), WorldError> {
    let deadline = timeout.map(|t| Instant::now() + t);
    let mut fds = Vec::with_capacity(5);
    loop {
        let wait_ms = match deadline {
            None => -1,
            Some(d) => d.saturating_duration_since(Instant::now()).as_millis().min(i32::MAX as u128) as i32,
        };
        fds.clear();
        fds.push(libc::pollfd { fd: pidfd.as_raw_fd(), events: libc::POLLIN, revents: 0 });
        fds.push(libc::pollfd { fd: sigfd.as_fd().as_raw_fd(), events: libc::POLLIN, revents: 0 });
        relay.pollfds(&mut fds);
        // SAFETY: a valid array of pollfd structs.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, wait_ms) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            return Err(WorldError::Wait(e));
        }
        if fds[0].revents != 0 {
            return Ok((wait_exit(pid)?, false, None));
        }
        if fds[1].revents != 0 {
            if let Ok(Some(info)) = sigfd.read_signal() {
                if info.ssi_signo == libc::SIGWINCH as u32 {
                    relay.resize();
                    continue;
                }
                let _ = raw::pidfd_kill(pidfd.as_fd(), libc::SIGKILL);
                let status = wait_exit(pid)?;
                return Ok((status, false, Some(info.ssi_signo as i32)));
            }
            continue;
        }
        relay.serve(&fds[2..]);
        if deadline.is_some_and(|d| Instant::now() >= d) {
            let _ = raw::pidfd_kill(pidfd.as_fd(), libc::SIGKILL);
            let status = wait_exit(pid)?;
            return Ok((status, true, None));
        }
    }
}

/// Diffs each upper against a clone of its host mount (no submounts:
/// exactly the overlay's lower view): the root filesystem, then each
/// read-write host data mount, placed at its mount point.
/// The clones of host mounts are left in `hold` (their release waits for an
/// RCU grace period).
pub(crate) fn collect_diff(
    scratch: &OwnedFd,
    layers: &[HostMount],
    hash: bool,
    rootless: bool,
    hold: &mut Teardown,
) -> Result<FsDiff, WorldError> {
    let opts = DiffOptions { hash, rootless, ..DiffOptions::default() };
    let mut total = diff_layer(scratch, "upper", Path::new("/"), &opts, hold)?;
    for m in layers.iter().filter(|m| !m.read_only) {
        let d = diff_layer(scratch, &format!("layers/{}/upper", m.slot), &m.path, &opts, hold)?;
        total.merge(d.under(&m.path), opts.max_entries);
    }
    Ok(total)
}

/// The diff of one overlay: `upper` (relative to the scratch tmpfs) against
/// the host mount at `lower`.
fn diff_layer(
    scratch: &OwnedFd,
    upper: &str,
    lower: &Path,
    opts: &DiffOptions,
    hold: &mut Teardown,
) -> Result<FsDiff, WorldError> {
    use nix::fcntl::OFlag;
    let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let upper = nix::fcntl::openat(scratch, upper, flags, nix::sys::stat::Mode::empty())
        .map_err(WorldError::nix("open upper"))?;
    diff_upper(&upper, lower, opts, hold)
}

/// The diff of an open upper directory against the host mount at `lower`
/// (its clone is left in `hold`).
pub(crate) fn diff_upper(
    upper: &OwnedFd,
    lower: &Path,
    opts: &DiffOptions,
    hold: &mut Teardown,
) -> Result<FsDiff, WorldError> {
    if dir_is_empty(upper).map_err(WorldError::nix("read upper"))? {
        // Nothing changed: no need for a clone of the host mount.
        return Ok(FsDiff::default());
    }
    let path =
        CString::new(lower.as_os_str().as_bytes()).map_err(|_| WorldError::Invalid("NUL in a mount path".into()))?;
    // A world without root: its user cannot clone a mount; its overlays'
    // lowers had no mount below them (`rootless::frame`), and the walk
    // never crosses one (RESOLVE_NO_XDEV): the host's path is the same view.
    let lower = match opts.rootless {
        true => nix::fcntl::open(
            lower,
            nix::fcntl::OFlag::O_PATH | nix::fcntl::OFlag::O_DIRECTORY | nix::fcntl::OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        )
        .map_err(|e| WorldError::Scratch(e.into()))?,
        false => raw::open_tree_clone(libc::AT_FDCWD, &path, false).map_err(WorldError::Scratch)?,
    };
    let diff = diff::compute(upper.as_fd(), lower.as_fd(), opts).map_err(WorldError::Diff);
    hold.hold(lower);
    diff
}

/// True if the directory holds nothing but `.` and `..`.
fn dir_is_empty(dir: &OwnedFd) -> nix::Result<bool> {
    let fd = nix::fcntl::openat(
        dir,
        ".",
        nix::fcntl::OFlag::O_RDONLY | nix::fcntl::OFlag::O_DIRECTORY | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )?;
    let mut d = nix::dir::Dir::from_fd(fd)?;
    for e in d.iter() {
        let name = e?.file_name().to_bytes().to_vec();
        if name != b"." && name != b".." {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Milliseconds since the epoch.
pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_millis() as u64
}

/// A kept world's description (`world.json`, docs/formats.md).
pub(crate) fn world_meta(
    claim: &crate::state::Claim,
    spec: &Spec,
    layers: &[HostMount],
    state: &str,
    exit_code: Option<i32>,
) -> serde_json::Value {
    let now = now_ms();
    serde_json::json!({
        "id": claim.id,
        "state": state,
        "owner": spec.owner,
        "argv": spec.argv.iter().map(|a| a.to_string_lossy()).collect::<Vec<_>>(),
        "cwd": spec.cwd,
        "exit_code": exit_code,
        "created": now / 1000,
        "created_ms": now,
        "updated_ms": now,
        "runs": 1,
        "frame": crate::continued::Frame::of(spec),
        "on_interrupt": if spec.keep_interrupted { "keep" } else { "sweep" },
        "upper": "fs/upper",
        "layers": layers.iter().filter(|m| !m.read_only)
            .map(|m| serde_json::json!({"path": m.path, "upper": format!("fs/layers/{}/upper", m.slot)}))
            .collect::<Vec<_>>(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A world without root takes the delegated cgroup its spec carries
    /// (the service's find), without looking again; none with
    /// `--no-limits`; a root world's come from the host's controllers.
    #[test]
    fn the_limits_of_a_world_without_root_are_where_its_spec_says() {
        let mut spec = crate::spec::for_tests();
        spec.user = None;
        spec.userns = None;
        spec.rootless = Some(crate::rootless::Caller { uid: 1000, gid: 1000 });
        let v1 = |d: &str| Layout::V1 {
            memory: format!("/sys/fs/cgroup/memory/{d}").into(),
            pids: format!("/sys/fs/cgroup/pids/{d}").into(),
            cpu: format!("/sys/fs/cgroup/cpu/{d}").into(),
        };
        // No cgroup mounts in this mountinfo: a search would find nothing.
        let info = "22 1 0:21 / / rw - ext4 /dev/vda rw\n";
        spec.delegated = Some(v1("u1000"));
        assert_eq!(limits_layout(&spec, info).unwrap(), v1("u1000"));
        spec.delegated = None;
        let e = limits_layout(&spec, info).unwrap_err().to_string();
        assert!(e.contains("limits need a cgroup delegated to you"), "{e}");
        spec.no_limits = true;
        assert_eq!(limits_layout(&spec, info).unwrap(), Layout::Unavailable { missing: vec![] });
        spec.rootless = None;
        spec.no_limits = false;
        assert!(matches!(limits_layout(&spec, info).unwrap(), Layout::Unavailable { missing } if !missing.is_empty()));
    }
}
