//! Starting a world: state, filesystem, cgroup, clone3, the child's setup,
//! up to the execve of the init. Shared by one-shot runs (`world::run`) and
//! batches (`batch::World`).

use crate::cgroup::{self, Layout, WorldCgroup};
use crate::child::{self, ChildPlan};
use crate::error::WorldError;
use crate::layers::HostMount;
use crate::mount_plan::{mount_plan, PlanPrint};
use crate::raw::{self, Forked};
use crate::spec::Spec;
use crate::state::StateDir;
use nix::sys::signal::{SigSet, SigmaskHow, Signal};
use std::ffi::CString;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;

/// Namespaces a world is cloned into. The child makes its network namespace
/// itself, first thing (`child::setup`), and enters the cgroup namespace
/// after it joined its cgroup, so that it is rooted there.
const NAMESPACES: u64 = (libc::CLONE_NEWNS | libc::CLONE_NEWPID | libc::CLONE_NEWIPC | libc::CLONE_NEWUTS) as u64;

/// Signals that stop a world early (the world is killed).
const STOP_SIGNALS: [Signal; 4] = [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP, Signal::SIGQUIT];

/// What the init does.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// Run `spec.argv` and exit with its status.
    OneShot,
    /// Serve entries sent over a control socket (batches).
    Serve,
}

/// A running world, as `launch` leaves it.
pub(crate) struct Launched {
    /// The world's init (host pid) and its pidfd.
    pub pid: libc::pid_t,
    pub pidfd: OwnedFd,
    /// The world's upper directories (disk pool or tmpfs).
    pub scratch: crate::upper::Upper,
    pub cg: CgroupGuard,
    /// Stop signals (blocked while the world runs).
    pub sigfd: nix::sys::signalfd::SignalFd,
    /// Restores the signal mask when the world is done.
    pub _restore: MaskGuard,
    /// Serve mode: our end of the control socket.
    pub control: Option<OwnedFd>,
    /// The scoped network (`spec.net`).
    pub net: Option<crate::network::WorldNet>,
    /// One-shot: cloche's side of the world's stdin, stdout and stderr.
    pub relay: Option<crate::stdio::Relay>,
    /// Serve mode: the read end of the init's own stdout and stderr (kept
    /// open, never read, so the init never meets a broken pipe).
    pub _sink: Option<OwnedFd>,
    /// One-shot: the world's mount namespace (see `teardown::Teardown`).
    pub mounts: Option<OwnedFd>,
    /// What its mount plan was made from (`PlanPrint::of`).
    pub plan: PlanPrint,
    /// The world's user namespace, its slot of ids held while it runs.
    pub userns: Option<crate::userns::Userns>,
    /// A world as root (loopback only or scoped): its end makes the next
    /// one's network namespace (`netns_spare`).
    pub spare_netns: bool,
}

impl Launched {
    /// The world's id mapping (`None`: no user namespace).
    pub(crate) fn ids(&self) -> Option<crate::userns::WorldIds> {
        self.userns.as_ref().map(|u| u.ids)
    }
}

/// Where a world's upper comes from.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Store {
    /// A new one, as `spec.upper` says.
    New,
    /// The kept world of the claimed id, continued (`continued::take`).
    Resume,
}

/// A world without root's root, piece by piece (`rootless::frame_each`),
/// from the host's mount table as `world::host_facts` read it and its
/// directories as they are now, sent to
/// its child on `go` as it is listed (an empty list last); a kept world's
/// uppers on disk are made before their list goes. `Err` says whether the
/// child was being sent to (its report may tell more).
fn send_pieces(
    seen: &crate::world::Seen,
    who: &crate::rootless::Writer,
    scratch: &crate::upper::Upper,
    go: &OwnedFd,
) -> Result<(), (WorldError, bool)> {
    let mut failed = None;
    let mut send = |list: &[crate::rootless::Piece]| {
        let sent = match scratch.make_piece_uppers(list) {
            Err(e) => Err((WorldError::state("make the pieces' uppers")(e), false)),
            Ok(()) => write_all(go, &crate::plan_wire::encode_pieces(list))
                .map_err(|e| (WorldError::nix("send the root's pieces")(e), true)),
        };
        sent.map_err(|e| std::io::Error::other(failed.insert(e).0.to_string()))
    };
    let listed = crate::rootless::frame_each(&seen.mountinfo, who, &mut send);
    match (failed, listed) {
        (Some(e), _) => return Err(e),
        (None, Err(e)) => return Err((WorldError::state("list the root filesystem")(e), false)),
        (None, Ok(_)) => {}
    }
    write_all(go, &crate::plan_wire::encode_pieces(&[]))
        .map_err(|e| (WorldError::nix("send the root's pieces")(e), true))
}

/// Everything from the world's filesystem to the init's execve: the world
/// is running when this returns.
#[allow(clippy::too_many_arguments)]
pub(crate) fn launch(
    spec: &Spec,
    layout: &Layout,
    layers: &[HostMount],
    seen: &crate::world::Seen,
    claim: &crate::state::Claim,
    state: &StateDir,
    mode: Mode,
    store: Store,
) -> Result<Launched, WorldError> {
    // Upper and work: a capped subvolume of the disk pool, or a capped
    // tmpfs (upper.rs), or the kept world's own subvolume. The child opens
    // a subvolume in its own namespace.
    // A world without root: its root is put together from pieces, each
    // overlay with its own upper directory, listed after the clone
    // (`rootless_pieces`, below).
    let mut scratch = match store {
        // A world not kept: a tmpfs its child mounts (`upper::Upper::rootless`).
        Store::New if spec.rootless.is_some() => {
            let slots = layers.iter().map(|m| m.slot + 1).max().unwrap_or(0);
            let tmpfs = (!spec.keep).then_some(spec.upper_size);
            crate::upper::Upper::rootless(state, &claim.id, slots, tmpfs)?
        }
        Store::New => crate::upper::Upper::make(spec, state, &claim.id, layers.len())?,
        // Directories up to the highest slot (`continued::Taken::assign_slots`).
        Store::Resume => {
            let slots = layers.iter().map(|m| m.slot + 1).max().unwrap_or(0);
            crate::upper::Upper::resume(spec, state, &claim.id, slots)?
        }
    };
    crate::profile::mark("upper made");
    let init = crate::init::memfd().map_err(|e| WorldError::Init(format!("the embedded init into a memfd: {e}")))?;
    // One-shot: `cloche-init -- CMD...`; serve: `cloche-init --serve FD`,
    // FD being the child's end of a SOCK_SEQPACKET pair kept across execve.
    let mut argv = vec![CString::new("cloche-init").expect("no NUL")];
    let (control, keep_fd) = match mode {
        Mode::OneShot => {
            if spec.terminal == crate::spec::Terminal::Pty {
                argv.push(CString::new("--tty").expect("no NUL"));
            }
            argv.push(CString::new("--").expect("no NUL"));
            argv.extend(spec.argv.iter().map(|a| CString::new(a.as_bytes()).expect("validated: no NUL")));
            (None, None)
        }
        Mode::Serve => {
            use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};
            let (ours, theirs) = socketpair(AddressFamily::Unix, SockType::SeqPacket, None, SockFlag::SOCK_CLOEXEC)
                .map_err(WorldError::nix("socketpair"))?;
            argv.push(CString::new("--serve").expect("no NUL"));
            argv.push(CString::new(theirs.as_raw_fd().to_string()).expect("no NUL"));
            (Some(ours), Some(theirs))
        }
    };
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
    // The world's own stdio: pipes cloche copies to and from the caller's
    // descriptors (one-shot), or nothing to talk to (serve: each entry
    // brings its own).
    let (relay, sink, stdio) = match mode {
        Mode::OneShot => {
            let (relay, ends) = crate::stdio::Relay::new(spec.terminal).map_err(WorldError::Stdio)?;
            (Some(relay), None, ends)
        }
        Mode::Serve => {
            let (sink, ends) = crate::stdio::detached().map_err(WorldError::Stdio)?;
            (None, Some(sink), ends)
        }
    };
    crate::profile::mark("init opened, argv/env built, stdio");
    // The world's user namespace (a slot of ids held, the namespace made
    // and mapped: userns.rs). Its network namespace is the child's (without
    // root, owned by the user namespace the clone makes, so that sysfs can
    // be mounted in it). Neither is made ahead on a thread any more
    // (docs/architecture.md, *Start time*, fifth and sixth looks).
    let userns = match &spec.userns {
        Some(range) => Some(crate::userns::Userns::make(range, seed(&claim.id))?),
        None => None,
    };
    // Without that namespace's helper (a policy without user namespaces,
    // a world without root): a nudge, to have a second CPU awake for the
    // child (`raw::CpuNudge`).
    let _nudge = match userns {
        Some(_) => None,
        None => crate::raw::CpuNudge::start().ok(),
    };
    crate::profile::mark("user namespace made");
    let namespaces = match spec.rootless {
        Some(_) => NAMESPACES | libc::CLONE_NEWUSER as u64,
        None => NAMESPACES,
    };
    // Who makes the world's network namespace (`child::NetnsPlan`): as
    // root with loopback only, this process, after sending the plan (the
    // child has the longer way: it mounts), sent on a socket, unless the
    // last such world's end made one ahead (`netns_spare`); for a scoped
    // network (this process has the longer way: it sets the network up),
    // the spare when there is one (taken here: the child must know), else
    // the child, first thing (said on a pipe); without root, the child.
    let mut scoped_spare = match (spec.rootless, &spec.net) {
        (None, Some(_)) => crate::netns_spare::claim(&state.root),
        _ => None,
    };
    let parent_makes = spec.rootless.is_none() && (spec.net.is_none() || scoped_spare.is_some());
    let (netns_made, netns_to) = if parent_makes {
        use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};
        let pair = socketpair(AddressFamily::Unix, SockType::SeqPacket, None, SockFlag::SOCK_CLOEXEC)
            .map_err(WorldError::nix("socketpair"))?;
        (None, Some(pair))
    } else if spec.net.is_some() {
        (Some(nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(WorldError::nix("pipe"))?), None)
    } else {
        (None, None)
    };
    let netns = match (&netns_made, &netns_to) {
        (_, Some((_, theirs))) => child::NetnsPlan::Parent { from: theirs.as_raw_fd() },
        (made, None) => child::NetnsPlan::Child { tell: made.as_ref().map(|(_, w)| w.as_raw_fd()) },
    };
    let plan = ChildPlan {
        root: state.mount_point(),
        scratch: scratch.for_child().map_err(WorldError::Scratch)?,
        layers: layers.to_vec(),
        hostname: spec.hostname.clone(),
        cwd: spec.cwd.clone(),
        nofile: spec.nofile,
        last_cap: crate::caps::kernel_last_cap(),
        seccomp: &spec.seccomp,
        init,
        argv,
        envp,
        keep_fd: keep_fd.as_ref().map(|f| f.as_raw_fd()),
        stdio,
        user: spec.user.clone(),
        userns: userns.as_ref().map(|u| child::ChildUserns { fd: u.fd.as_raw_fd(), ids: u.ids }),
        rootless: spec.rootless.map(|caller| child::ChildRootless { caller }),
        netns,
    };
    crate::profile::mark("plan struct");
    let (go_r, go_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(WorldError::nix("pipe"))?;
    let (rep_r, rep_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(WorldError::nix("pipe"))?;

    // 2. Block stop signals (read through a signalfd while waiting), clone.
    let mut stop = SigSet::empty();
    for s in STOP_SIGNALS {
        stop.add(s);
    }
    if mode == Mode::OneShot && spec.terminal == crate::spec::Terminal::Pty {
        stop.add(Signal::SIGWINCH); // not a stop: the window size to follow
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
    let forked = unsafe { raw::clone3(namespaces, into) }.map_err(WorldError::Clone)?;
    let (pid, pidfd) = match forked {
        Forked::Child => {
            drop(go_w);
            drop(rep_r);
            // Only the parent's end is closed: the plan holds the child's.
            let _netns_from = netns_to.map(|(ours, theirs)| {
                drop(ours);
                theirs
            });
            let rootless = spec.rootless.is_some();
            let mut sys = child::RealSys { go: &go_r, cgroup_tasks: layout.tasks_files(&claim.id), rootless };
            child::main(&mut sys, plan, &rep_w)
        }
        Forked::Parent { pid, pidfd } => (pid, pidfd),
    };
    crate::profile::mark("cloned");
    // One-shot: hold the world's mount namespace, so that the init's exit
    // does not wait for its mounts to be torn down (teardown::Teardown).
    let mounts = match mode {
        Mode::OneShot => std::fs::File::open(format!("/proc/{pid}/ns/mnt")).ok().map(OwnedFd::from),
        Mode::Serve => None,
    };
    drop(go_r);
    drop(rep_w);
    drop(keep_fd);
    let netns_made = netns_made.map(|(r, _)| r);
    let netns_to = netns_to.map(|(ours, _)| ours);
    // The world's ends of its stdio go with the rest of the plan: only the
    // world holds them now (EOF and EPIPE work).
    drop(plan);
    let kill = |e: WorldError| {
        let _ = raw::pidfd_kill(pidfd.as_fd(), libc::SIGKILL);
        let _ = wait_exit(pid);
        e
    };
    // A send to the child that failed: the child most likely failed first
    // (its end closed), and its report names the step; else `e`.
    let kill_sent = |e: WorldError| {
        let e = kill(e);
        let mut msg = Vec::new();
        read_all(&rep_r, &mut msg);
        match msg.is_empty() {
            true => e,
            false => WorldError::Child(String::from_utf8_lossy(&msg).into_owned()),
        }
    };

    // 3. A world without root: while the child makes its network namespace
    //    and its store, list the root's pieces (hundreds of `lstat`s: the
    //    longest step of its start), sent as they are listed.
    if let Some(who) = &seen.writer {
        match send_pieces(seen, who, &scratch, &go_w) {
            Err((e, true)) => return Err(kill_sent(e)),
            Err((e, false)) => return Err(kill(e)),
            Ok(()) => crate::profile::mark("root's pieces listed and sent"),
        }
    }
    //    While the child mounts /proc and /dev: build the rest of the mount
    //    plan from host facts and send it; then make the world's network
    //    namespace and the v1 cgroup, which the child joins after its go,
    //    before pivot_root.
    let (host, fs, view, steps) = mount_plan(spec, state, layers).map_err(|e| kill(WorldError::Refused(e)))?;
    // A world made ahead (serve mode) may be compared with the host later.
    let print = PlanPrint::from_steps(&steps, mode == Mode::Serve);
    write_all(&go_w, &print.wire).map_err(|e| kill_sent(WorldError::nix("send the mount plan")(e)))?;
    crate::profile::mark("plan sent");
    // The world's network namespace when it is this process's to make,
    // while the child copies up, grabs and masks: it enters it before
    // sysfs, the plan's last part. (Held until the world runs.)
    let _netns = match &netns_to {
        Some(to) => {
            let fail = |step: &'static str| move |source: std::io::Error| WorldError::Sys { step, source };
            // The one the last such world's end made ahead, else a new one.
            let ns = match scoped_spare.take().or_else(|| crate::netns_spare::claim(&state.root)) {
                Some(ns) => ns,
                None => crate::fdpass::new_netns().map_err(|e| kill(fail("make the world's network namespace")(e)))?,
            };
            crate::fdpass::send(to.as_fd(), ns.as_fd(), b'n')
                .map_err(|e| kill_sent(fail("send the world's network namespace to its child")(e)))?;
            crate::profile::mark("network namespace made");
            Some(ns)
        }
        None => None,
    };
    // The reserved ids must be nobody's on the host (a world would be that
    // user to the kernel): checked here, while the child mounts.
    if let Some(range) = &spec.userns {
        range.check_host().map_err(|e| kill(WorldError::Invalid(format!("user namespace: {e}"))))?;
        crate::profile::mark("user namespace ids checked");
    }
    if let Layout::V1 { .. } = layout {
        cg.0 = Some(WorldCgroup::create(layout, &claim.id, &spec.limits).map_err(|e| kill(e.into()))?);
    }

    crate::profile::mark("cgroup created");
    // 4. The network, from outside, before the world runs anything.
    let net = match &spec.net {
        Some(n) => {
            let ns = match &_netns {
                // The spare this process sent (the child enters it later).
                Some(ns) => ns.try_clone().map(cloche_net::Netns::from_fd),
                // The namespace the child made: opened once it says so
                // (before, /proc/PID/ns/net would be the host's). Nothing
                // said: the child failed, and its report says where.
                None => {
                    let mut said = [0u8; 1];
                    if !matches!(netns_made.as_ref().map(|r| nix::unistd::read(r, &mut said)), Some(Ok(1))) {
                        let mut msg = Vec::new();
                        read_all(&rep_r, &mut msg);
                        let why = String::from_utf8_lossy(&msg).into_owned();
                        return Err(kill(WorldError::Child(match why.is_empty() {
                            true => "the world's child ended before it made its network namespace".into(),
                            false => why,
                        })));
                    }
                    cloche_net::Netns::of_pid(pid)
                }
            };
            let ns = ns.map_err(|e| kill(WorldError::Network(format!("open the world's netns: {e}"))))?;
            Some(crate::network::setup(ns, &claim.id, n).map_err(kill)?)
        }
        None => None,
    };
    crate::profile::mark("network");
    // 5. Release the child. While it finishes its setup (cgroup, pivot_root,
    //    privileges), the sweep after crashed runs. The go pipe
    //    stays open until the init is executed: the child checks it after
    //    its credentials changed (`Sys::rearm_pdeathsig`).
    let _ = nix::unistd::write(&go_w, b"g");
    // What crashed runs left (this world's id is live: never its own).
    if !cgroup::sweep(layout, |id| state.is_live(id)).is_empty() && spec.rootless.is_none() {
        crate::net_host::remove_when_idle("");
    }
    state.sweep();
    crate::profile::mark("swept");
    // The report pipe closes on a successful execve, or carries the failed step.
    let mut msg = Vec::new();
    read_all(&rep_r, &mut msg);
    drop(go_w);
    if !msg.is_empty() {
        return Err(kill(WorldError::Child(String::from_utf8_lossy(&msg).into_owned())));
    }
    crate::profile::mark("child exec'd init");
    // The PATH note, judged while the world runs (off the start's critical
    // path) and said before the relay copies any of the world's output.
    if let Some(note) = spec.path_note {
        note(&crate::view::hidden_path_entries(&host, &fs, &view));
        crate::profile::mark("PATH judged");
    }
    let mut relay = relay;
    if let Some(r) = relay.as_mut() {
        r.attach_console().map_err(|e| kill(WorldError::Stdio(e)))?;
    }
    // The pool's housekeeping for later runs (spares made, the trash
    // emptied), once the world runs: done beside the child's setup, its
    // btrfs work slowed the child's overlay mount and copy-ups (about 0.2
    // ms back to back, 0.5 ms after an idle moment: docs/architecture.md,
    // *Start time*). A world whose child failed leaves it to the next run.
    scratch.housekeep(&claim.id, state);
    crate::profile::mark("pool housekeeping");
    Ok(Launched {
        pid,
        pidfd,
        scratch,
        cg,
        sigfd,
        _restore,
        control,
        net,
        relay,
        _sink: sink,
        mounts,
        userns,
        plan: print,
        spare_netns: spec.rootless.is_none(),
    })
}

/// Where a world's search for a free slot of ids starts: its id's first
/// hex digits (random), so that worlds started together rarely contend.
fn seed(id: &str) -> u64 {
    u64::from_str_radix(id.get(..15).unwrap_or("0"), 16).unwrap_or(0)
}

/// Removes the cgroup on error paths.
pub(crate) struct CgroupGuard(pub Option<WorldCgroup>);
impl Drop for CgroupGuard {
    fn drop(&mut self) {
        if let Some(c) = self.0.take() {
            let _ = c.remove();
        }
    }
}

/// Restores the signal mask.
pub(crate) struct MaskGuard(SigSet);
impl Drop for MaskGuard {
    fn drop(&mut self) {
        let _ = nix::sys::signal::sigprocmask(SigmaskHow::SIG_SETMASK, Some(&self.0), None);
    }
}

pub(crate) fn write_all(fd: &OwnedFd, mut buf: &[u8]) -> nix::Result<()> {
    while !buf.is_empty() {
        match nix::unistd::write(fd, buf) {
            Ok(n) => buf = &buf[n..],
            Err(nix::Error::EINTR) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

pub(crate) fn read_all(fd: &OwnedFd, out: &mut Vec<u8>) {
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
pub(crate) fn wait_exit(pid: libc::pid_t) -> Result<i32, WorldError> {
    wait_exit_cpu(pid).map(|(code, _)| code)
}

/// Waits for `pid` to exit: its shell-style status, and the CPU time
/// (user and system) it and every descendant it reaped used, in ms: for a
/// world's init, everything the world ran (the init reaps all of it).
pub(crate) fn wait_exit_cpu(pid: libc::pid_t) -> Result<(i32, u64), WorldError> {
    loop {
        let mut status = 0;
        // SAFETY: rusage is plain data; zeroed is a valid value.
        let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: wait4 writes into the status and rusage we own.
        let r = unsafe { libc::wait4(pid, &mut status, 0, &mut ru) };
        if r < 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            return Err(WorldError::Wait(e));
        }
        let ms = |t: libc::timeval| t.tv_sec as u64 * 1000 + t.tv_usec as u64 / 1000;
        let cpu = ms(ru.ru_utime) + ms(ru.ru_stime);
        if libc::WIFEXITED(status) {
            return Ok((libc::WEXITSTATUS(status), cpu));
        }
        if libc::WIFSIGNALED(status) {
            return Ok((128 + libc::WTERMSIG(status), cpu));
        }
    }
}
