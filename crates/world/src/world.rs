//! The parent side of a world: prepare, clone, release, wait, collect the
//! fs_diff, tear down. One function, [`run`], in the order of DESIGN.md.

use crate::cgroup::{self, Layout, WorldCgroup};
use crate::child::{self, ChildPlan};
use crate::diff::{self, DiffOptions, FsDiff};
use crate::error::WorldError;
use crate::layers::HostMount;
use crate::plan::{FsRequest, RealHost};
use crate::raw::{self, Forked};
use crate::spec::Spec;
use crate::state::StateDir;
use nix::sys::signal::{SigSet, SigmaskHow, Signal};
use serde::Serialize;
use std::ffi::CString;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Namespaces a world is cloned into (the cgroup namespace is entered by the
/// child after it joined its cgroup, so that it is rooted there).
const NAMESPACES: u64 =
    (libc::CLONE_NEWNS | libc::CLONE_NEWPID | libc::CLONE_NEWNET | libc::CLONE_NEWIPC | libc::CLONE_NEWUTS) as u64;

/// Signals that stop a world early (forwarded as a kill of the world).
const STOP_SIGNALS: [Signal; 4] = [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP, Signal::SIGQUIT];

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
    pub cgroup: &'static str,
    pub limits_hit: Vec<String>,
    pub timings: Timings,
    /// The kept world's directory, with `--keep`.
    pub kept: Option<PathBuf>,
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}

/// Runs one world to completion.
pub fn run(spec: &Spec, state: &StateDir, init_path: &Path) -> Result<Outcome, WorldError> {
    let t0 = Instant::now();
    spec.validate()?;
    // 1. Where the controllers are; claim an id (a lock, nothing on disk).
    crate::profile::mark("run: start");
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let layout =
        Layout::from_mountinfo(&mountinfo, |root| std::fs::read_to_string(root.join("cgroup.controllers")).ok());
    let layers = crate::layers::data_mounts(&mountinfo, &state.root);
    if let Layout::Unavailable { missing } = &layout {
        if spec.require.iter().any(|l| l == "cgroup") {
            return Err(WorldError::LayerUnavailable(format!(
                "cgroup controllers missing: {} (see `cloche doctor`)",
                missing.join(", ")
            )));
        }
    }
    crate::profile::mark("layout detected");
    let claim = state.claim().map_err(WorldError::state("claim a world id"))?;
    let (mut outcome, scratch) = run_in(spec, &layout, &layers, &claim, state, init_path, t0)?;
    let t = Instant::now();
    if spec.keep {
        outcome.kept = Some(keep(state, &claim, scratch, &layers, &outcome, spec)?);
    } else {
        drop(scratch); // the last fd: the tmpfs and the upper go away
    }
    crate::profile::mark("teardown done");
    outcome.timings.teardown_ms = ((outcome.timings.teardown_ms + ms(t.elapsed())) * 1e3).round() / 1e3;
    outcome.timings.total_ms = ms(t0.elapsed());
    Ok(outcome)
}

/// Everything from the world's filesystem to its exit and fs_diff.
fn run_in(
    spec: &Spec,
    layout: &Layout,
    layers: &[HostMount],
    claim: &crate::state::Claim,
    state: &StateDir,
    init_path: &Path,
    t0: Instant,
) -> Result<(Outcome, OwnedFd), WorldError> {
    // Upper and work on a size-capped tmpfs that is never attached to the
    // host's tree while the world runs: it vanishes with its last fd.
    let scratch = make_scratch(spec.upper_size, layers.len()).map_err(WorldError::Scratch)?;
    crate::profile::mark("scratch tmpfs made");
    let init =
        std::fs::File::open(init_path).map_err(|e| WorldError::Init(format!("{}: {e}", init_path.display())))?.into();
    let mut argv = vec![CString::new("cloche-init").expect("no NUL")];
    argv.extend(spec.argv.iter().map(|a| CString::new(a.as_bytes()).expect("validated: no NUL")));
    let envp = spec
        .env
        .iter()
        .map(|(k, v)| {
            let mut b = k.as_bytes().to_vec();
            b.push(b'=');
            b.extend_from_slice(v.as_bytes());
            CString::new(b).expect("validated: no NUL")
        })
        .collect();
    // v2: the cgroup must exist before clone3 (CLONE_INTO_CGROUP). v1: it is
    // made while the child builds its mounts, off the critical path.
    let mut cg = CgroupGuard(None);
    if let Layout::V2 { .. } = layout {
        cg.0 = Some(WorldCgroup::create(layout, &claim.id, &spec.limits)?);
    }
    crate::profile::mark("init opened, argv/env built");
    let plan = ChildPlan {
        root: state.mount_point(),
        scratch,
        layers: layers.to_vec(),
        hostname: spec.hostname.clone(),
        cwd: spec.cwd.clone(),
        nofile: spec.nofile,
        last_cap: crate::caps::kernel_last_cap(),
        seccomp: &spec.seccomp,
        init,
        argv,
        envp,
    };
    crate::profile::mark("plan struct");
    let (go_r, go_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(WorldError::nix("pipe"))?;
    let (rep_r, rep_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(WorldError::nix("pipe"))?;

    // 2. Block stop signals (read through a signalfd while waiting), clone.
    let mut stop = SigSet::empty();
    for s in STOP_SIGNALS {
        stop.add(s);
    }
    let mut old_mask = SigSet::empty();
    nix::sys::signal::sigprocmask(SigmaskHow::SIG_BLOCK, Some(&stop), Some(&mut old_mask))
        .map_err(WorldError::nix("sigprocmask"))?;
    let _restore = MaskGuard(old_mask);
    let sigfd = nix::sys::signalfd::SignalFd::with_flags(
        &stop,
        nix::sys::signalfd::SfdFlags::SFD_CLOEXEC | nix::sys::signalfd::SfdFlags::SFD_NONBLOCK,
    )
    .map_err(WorldError::nix("signalfd"))?;
    crate::profile::mark("signals blocked");
    let into = cg.0.as_ref().and_then(|c| c.clone_into());
    // SAFETY: cloche is single-threaded here (no thread is ever started
    // before a world is cloned); the child ends in execve or _exit.
    let forked = unsafe { raw::clone3(NAMESPACES, into) }.map_err(WorldError::Clone)?;
    let (pid, pidfd) = match forked {
        Forked::Child => {
            drop(go_w);
            drop(rep_r);
            let mut sys = child::RealSys { go: &go_r, cgroup_tasks: layout.tasks_files(&claim.id) };
            child::main(&mut sys, plan, &rep_w)
        }
        Forked::Parent { pid, pidfd } => (pid, pidfd),
    };
    crate::profile::mark("cloned");
    drop(go_r);
    drop(rep_w);
    let ChildPlan { scratch, .. } = plan;
    let kill = |e: WorldError| {
        let _ = raw::pidfd_kill(pidfd.as_fd(), libc::SIGKILL);
        let _ = wait_exit(pid);
        e
    };

    // 3. While the child mounts /proc, /sys and /dev: build the rest of the
    //    mount plan from host facts and send it; then sweep what crashed
    //    runs left and create the v1 cgroup, which the child joins after its
    //    go, before pivot_root.
    let fs = FsRequest {
        cwd: spec.cwd.clone(),
        mask: spec.mask.clone(),
        homes: if spec.mask_homes { crate::spec::home_dirs() } else { vec![] },
        home_secrets: spec.home_secrets.clone(),
        expose: spec.expose.clone(),
        state_dir: state.root.clone(),
        scratch_size: spec.upper_size,
    };
    let wire = crate::plan_wire::encode(&crate::plan::build(&RealHost, &fs));
    write_all(&go_w, &wire).map_err(|e| kill(WorldError::nix("send the mount plan")(e)))?;
    crate::profile::mark("plan sent");
    cgroup::sweep(layout, |id| state.is_live(id));
    state.sweep();
    crate::profile::mark("swept");
    if let Layout::V1 { .. } = layout {
        cg.0 = Some(WorldCgroup::create(layout, &claim.id, &spec.limits).map_err(|e| kill(e.into()))?);
    }

    crate::profile::mark("cgroup created");
    // 4. Release the child (networking will be configured before this).
    let _ = nix::unistd::write(&go_w, b"g");
    drop(go_w);
    // The report pipe closes on a successful execve, or carries the failed step.
    let mut msg = Vec::new();
    read_all(&rep_r, &mut msg);
    if !msg.is_empty() {
        return Err(kill(WorldError::Child(String::from_utf8_lossy(&msg).into_owned())));
    }
    crate::profile::mark("child exec'd init");
    let t_setup = t0.elapsed();

    // 5. Wait for init (the command's exit), a timeout, or a stop signal.
    let (status, timed_out, interrupted) = wait_world(pid, &pidfd, &sigfd, spec.timeout)?;
    crate::profile::mark("world exited");
    let t_run = t0.elapsed();
    let mut limits_hit: Vec<String> =
        cg.0.as_ref().map(|c| c.limits_hit()).unwrap_or_default().into_iter().map(String::from).collect();
    if timed_out {
        limits_hit.push("timeout".into());
    }
    let exit_code = if timed_out { 124 } else { status };

    // 6. fs_diff from the upper layer against the host root filesystem.
    let fs_diff = collect_diff(&scratch, layers, spec.hash)?;
    crate::profile::mark("fs_diff");
    let t_diff = t0.elapsed();
    let cgroup_name = layout.name();
    let has_cg = cg.0.is_some();
    if let Some(c) = cg.0.take() {
        c.remove()?;
    }
    crate::profile::mark("cgroup removed");
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
        layers: child::layers(has_cg),
        cgroup: cgroup_name,
        limits_hit,
        timings,
        kept: None,
    };
    Ok((outcome, scratch))
}

/// Removes the cgroup on error paths.
struct CgroupGuard(Option<WorldCgroup>);
impl Drop for CgroupGuard {
    fn drop(&mut self) {
        if let Some(c) = self.0.take() {
            let _ = c.remove();
        }
    }
}

/// Restores the signal mask.
struct MaskGuard(SigSet);
impl Drop for MaskGuard {
    fn drop(&mut self) {
        let _ = nix::sys::signal::sigprocmask(SigmaskHow::SIG_SETMASK, Some(&self.0), None);
    }
}

/// A detached tmpfs (nosuid, nodev, noexec) with `upper/` and `work/`, and
/// `layers/<k>/{upper,work}` for each host data mount.
fn make_scratch(size: u64, layers: usize) -> std::io::Result<OwnedFd> {
    let fs = raw::fsopen("tmpfs")?;
    raw::fsconfig_str(fs.as_fd(), "size", &size.to_string())?;
    raw::fsconfig_str(fs.as_fd(), "mode", "0700")?;
    raw::fsconfig_create(fs.as_fd())?;
    let attrs = libc::MOUNT_ATTR_NOSUID | libc::MOUNT_ATTR_NODEV | libc::MOUNT_ATTR_NOEXEC;
    let mnt = raw::fsmount(fs.as_fd(), attrs)?;
    let mut dirs = vec!["upper".to_string(), "work".to_string()];
    if layers > 0 {
        dirs.push("layers".into());
    }
    for k in 0..layers {
        dirs.extend([format!("layers/{k}"), format!("layers/{k}/upper"), format!("layers/{k}/work")]);
    }
    for d in &dirs {
        nix::sys::stat::mkdirat(&mnt, d.as_str(), nix::sys::stat::Mode::from_bits_truncate(0o755))
            .map_err(std::io::Error::from)?;
    }
    Ok(mnt)
}

fn write_all(fd: &OwnedFd, mut buf: &[u8]) -> nix::Result<()> {
    while !buf.is_empty() {
        match nix::unistd::write(fd, buf) {
            Ok(n) => buf = &buf[n..],
            Err(nix::Error::EINTR) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

fn read_all(fd: &OwnedFd, out: &mut Vec<u8>) {
    let mut buf = [0u8; 1024];
    loop {
        match nix::unistd::read(fd, &mut buf) {
            Ok(0) => return,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(nix::Error::EINTR) => continue,
            Err(_) => return,
        }
    }
}

/// Reaps `pid`; returns its shell-style status.
fn wait_exit(pid: libc::pid_t) -> Result<i32, WorldError> {
    use nix::sys::wait::{waitpid, WaitStatus};
    loop {
        match waitpid(nix::unistd::Pid::from_raw(pid), None) {
            Ok(WaitStatus::Exited(_, code)) => return Ok(code),
            Ok(WaitStatus::Signaled(_, sig, _)) => return Ok(128 + sig as i32),
            Ok(_) => continue,
            Err(nix::Error::EINTR) => continue,
            Err(e) => return Err(WorldError::nix("waitpid")(e)),
        }
    }
}

/// Waits for init to exit, the timeout, or a stop signal; kills the world in
/// the latter two cases (SIGKILL to pid 1 takes the whole pid namespace).
fn wait_world(
    pid: libc::pid_t,
    pidfd: &OwnedFd,
    sigfd: &nix::sys::signalfd::SignalFd,
    timeout: Option<Duration>,
) -> Result<(i32, bool, Option<i32>), WorldError> {
    let deadline = timeout.map(|t| Instant::now() + t);
    loop {
        let wait_ms = match deadline {
            None => -1,
            Some(d) => d.saturating_duration_since(Instant::now()).as_millis().min(i32::MAX as u128) as i32,
        };
        let mut fds = [
            libc::pollfd { fd: pidfd.as_raw_fd(), events: libc::POLLIN, revents: 0 },
            libc::pollfd { fd: sigfd.as_fd().as_raw_fd(), events: libc::POLLIN, revents: 0 },
        ];
        // SAFETY: two valid pollfd structs.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), 2, wait_ms) };
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
                let _ = raw::pidfd_kill(pidfd.as_fd(), libc::SIGKILL);
                let status = wait_exit(pid)?;
                return Ok((status, false, Some(info.ssi_signo as i32)));
            }
            continue;
        }
        if n == 0 && deadline.is_some_and(|d| Instant::now() >= d) {
            let _ = raw::pidfd_kill(pidfd.as_fd(), libc::SIGKILL);
            let status = wait_exit(pid)?;
            return Ok((status, true, None));
        }
    }
}

/// Diffs each upper against a clone of its host mount (no submounts:
/// exactly the overlay's lower view): the root filesystem, then each
/// read-write host data mount, placed at its mount point.
fn collect_diff(scratch: &OwnedFd, layers: &[HostMount], hash: bool) -> Result<FsDiff, WorldError> {
    let opts = DiffOptions { hash, ..DiffOptions::default() };
    let mut total = diff_layer(scratch, "upper", Path::new("/"), &opts)?;
    for (k, m) in layers.iter().enumerate().filter(|(_, m)| !m.read_only) {
        let d = diff_layer(scratch, &format!("layers/{k}/upper"), &m.path, &opts)?;
        total.merge(d.under(&m.path), opts.max_entries);
    }
    Ok(total)
}

/// The diff of one overlay: `upper` (relative to the scratch tmpfs) against
/// the host mount at `lower`.
fn diff_layer(scratch: &OwnedFd, upper: &str, lower: &Path, opts: &DiffOptions) -> Result<FsDiff, WorldError> {
    use nix::fcntl::OFlag;
    let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let upper = nix::fcntl::openat(scratch, upper, flags, nix::sys::stat::Mode::empty())
        .map_err(WorldError::nix("open upper"))?;
    if dir_is_empty(&upper).map_err(WorldError::nix("read upper"))? {
        // Nothing changed: no need for a clone of the host mount.
        return Ok(FsDiff::default());
    }
    let path =
        CString::new(lower.as_os_str().as_bytes()).map_err(|_| WorldError::Invalid("NUL in a mount path".into()))?;
    let lower = raw::open_tree_clone(libc::AT_FDCWD, &path, false).map_err(WorldError::Scratch)?;
    diff::compute(upper.as_fd(), lower.as_fd(), opts).map_err(WorldError::Diff)
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

/// Keeps a world: its tmpfs is attached (nosuid, nodev, noexec as made) at
/// `worlds/<id>/fs`, its description written next to it.
fn keep(
    state: &StateDir,
    claim: &crate::state::Claim,
    scratch: OwnedFd,
    layers: &[HostMount],
    outcome: &Outcome,
    spec: &Spec,
) -> Result<PathBuf, WorldError> {
    let meta = serde_json::json!({
        "id": claim.id,
        "argv": spec.argv.iter().map(|a| a.to_string_lossy()).collect::<Vec<_>>(),
        "cwd": spec.cwd,
        "exit_code": outcome.exit_code,
        "created": std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0),
        "upper": "fs/upper",
        "layers": layers.iter().enumerate().filter(|(_, m)| !m.read_only)
            .map(|(k, m)| serde_json::json!({"path": m.path, "upper": format!("fs/layers/{k}/upper")}))
            .collect::<Vec<_>>(),
    });
    state
        .keep(claim, &meta, |fsdir| {
            let target =
                CString::new(fsdir.as_os_str().as_bytes()).map_err(|_| std::io::Error::other("NUL in path"))?;
            raw::move_mount_to(scratch.as_fd(), &target)
        })
        .map_err(WorldError::state("keep the world"))
}
