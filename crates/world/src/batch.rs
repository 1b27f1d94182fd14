//! A world that runs several commands in turn: the engine side of a batch.
//!
//! [`World::start`] builds the world exactly as a one-shot run does, but its
//! init serves entries over a control socket instead of running one command
//! (see `crates/init`). Each [`World::run_entry`] sends one command with its
//! own environment, working directory and stdin/stdout/stderr, and waits
//! for its status, its output (captured up to a cap, or passed through), a
//! per-entry timeout, or a stop signal. Entries see the previous entries'
//! changes; what an entry leaves running is killed when it ends.
//! [`World::finish`] ends the world and returns the fs_diff of all entries.
//!
//! Timeout of one entry: every process of the world's cgroup but the init is
//! killed; the init reports the entry as killed and the world goes on.
//! Cancel: [`Canceller::cancel`] kills the init, which takes the whole world
//! with it at once.

use crate::cgroup::Layout;
use crate::continued::Taken;
use crate::diff::FsDiff;
use crate::error::WorldError;
use crate::launch::{launch, wait_exit, Launched, Mode, Store};
use crate::layers::HostMount;
use crate::raw;
use crate::spec::Spec;
use crate::state::{Claim, StateDir};
use crate::world::{collect_diff, ms, Outcome, Timings};
use std::ffi::OsString;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// One command of a batch.
#[derive(Debug, Clone)]
pub struct Entry {
    pub argv: Vec<OsString>,
    /// The complete environment of the command.
    pub env: Vec<(OsString, OsString)>,
    /// Working directory inside the world (absolute).
    pub cwd: PathBuf,
    pub timeout: Option<Duration>,
}

/// Where an entry's stdio goes. (Never the caller's own descriptors: an
/// open file reaches the world as the host's inode, see `stdio/`.)
#[derive(Debug, Clone, Copy)]
pub enum Io {
    /// stdin empty; stdout and stderr captured, each up to `cap` bytes.
    Capture { cap: usize },
}

/// Which output stream of an entry a chunk was read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutStream {
    Stdout,
    Stderr,
}

/// What one entry did.
#[derive(Debug, Clone)]
pub struct EntryOutcome {
    /// Shell-style: the command's code, 128+N for signal N, 124 on timeout,
    /// 125 when the world could not start it (bad cwd), 126/127 not executable/found.
    pub exit_code: i32,
    pub timed_out: bool,
    /// Set when cloche was asked to stop (the world is gone).
    pub interrupted: Option<i32>,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
    /// Bytes written in all, past the cap included.
    pub stdout_total: u64,
    pub stderr_total: u64,
    pub duration_ms: f64,
    /// Limits reached during this entry: "memory", "pids", "timeout".
    pub limits_hit: Vec<String>,
    /// The world's fs_diff after this entry (all entries so far).
    pub fs_diff: FsDiff,
    /// What this entry itself changed (`diff::delta` of the world's fs_diff
    /// before and after it).
    pub fs_delta: FsDiff,
}

/// Kills a world from elsewhere (another thread, a signal handler's flag).
pub struct Canceller(OwnedFd);

impl Canceller {
    /// Kills the world's init: every process of the world dies with it.
    pub fn cancel(&self) -> std::io::Result<()> {
        raw::pidfd_kill(self.0.as_fd(), libc::SIGKILL)
    }
}

/// A running world serving entries.
pub struct World<'a> {
    spec: &'a Spec,
    state: &'a StateDir,
    /// The world's id: a new one's claim, or the kept world's it continues.
    claim: Option<Claim>,
    /// The kept world this one continues (`continued::take`), held until
    /// it ends.
    taken: Option<Taken>,
    layout: Layout,
    layers: Vec<HostMount>,
    w: Launched,
    t0: Instant,
    t_setup: Duration,
    /// The init is gone (cancelled or interrupted).
    dead: bool,
    /// The world's fs_diff after the last entry.
    last_diff: FsDiff,
    /// Its fs_diff before the first entry (a continued world's, as its last
    /// run left it; else empty).
    first_diff: FsDiff,
    /// With `spec.keep`: the description the world was attached with at
    /// `worlds/<id>/fs` from the start (so an interrupted run leaves it for
    /// review); `None` once finished.
    attached: Option<serde_json::Value>,
}

impl Drop for World<'_> {
    /// A world dropped before `finish` (an error in the runner) is settled
    /// as interrupted now: kept for review or removed, as its spec asked. A
    /// continued world stays kept, as the entries that ran left it.
    fn drop(&mut self) {
        if (self.attached.is_some() || self.taken.is_some()) && !self.dead {
            // Abandoned: the world ends now, before its upper is settled
            // (and, on a tmpfs, copied to disk).
            let _ = raw::pidfd_kill(self.w.pidfd.as_fd(), libc::SIGKILL);
            let _ = wait_exit(self.w.pid);
            self.dead = true;
        }
        if self.attached.take().is_some() && self.state.settle_interrupted(self.id()).is_err() {
            let _ = crate::state::remove_world_dir(&self.state.world_path(self.id()));
        }
    }
}

impl<'a> World<'a> {
    /// Builds and starts a world (`spec.argv` is not used).
    pub fn start(spec: &'a Spec, state: &'a StateDir) -> Result<World<'a>, WorldError> {
        Self::start_in(spec, state, None)
    }

    /// Starts a world that continues the kept world `taken`
    /// (`continued::take`): its entries run on top of what the world's
    /// earlier runs left, and it stays kept. The world's frame is checked
    /// against `spec` first: a refusal changes nothing.
    pub fn continue_in(spec: &'a Spec, state: &'a StateDir, taken: Taken) -> Result<World<'a>, WorldError> {
        Self::start_in(spec, state, Some(taken))
    }

    fn start_in(spec: &'a Spec, state: &'a StateDir, taken: Option<Taken>) -> Result<World<'a>, WorldError> {
        let t0 = Instant::now();
        let (layout, mut layers, seen) = crate::world::host_facts(spec, state)?;
        let (claim, store) = match &taken {
            Some(t) => {
                t.check_frame(spec)?;
                layers = t.assign_slots(layers)?;
                crate::cgroup::remove_stale(&layout, t.id())?;
                (None, Store::Resume)
            }
            None => {
                let c = state.claim().map_err(WorldError::state("claim a world id"))?;
                crate::upper::prepare_keep(spec, state)?;
                (Some(c), Store::New)
            }
        };
        let held = claim.as_ref().or(taken.as_ref().map(|t| &t.claim)).expect("a claim or a kept world");
        let mut w = launch(spec, &layout, &layers, &seen, held, state, Mode::Serve, store)?;
        // A kept world is attached on the host from the start: its upper
        // outlives a runner that dies, for review (or the sweep). A
        // continued one is there, kept, already.
        let attached = if spec.keep && store == Store::New {
            let meta = crate::world::world_meta(held, spec, &layers, "running", None);
            state
                .attach(held, &meta, |fsdir| w.scratch.place(fsdir))
                .map_err(WorldError::state("attach the kept world"))?;
            w.scratch.hand_over();
            Some(meta)
        } else {
            None
        };
        let first_diff = taken.as_ref().map(|t| t.last_diff()).unwrap_or_default();
        Ok(World {
            spec,
            state,
            claim,
            taken,
            layout,
            layers,
            w,
            t0,
            t_setup: t0.elapsed(),
            dead: false,
            last_diff: first_diff.clone(),
            first_diff,
            attached,
        })
    }

    pub fn id(&self) -> &str {
        match (&self.claim, &self.taken) {
            (Some(c), _) => &c.id,
            (None, Some(t)) => t.id(),
            (None, None) => unreachable!("a world has a claim or a kept world"),
        }
    }

    /// The isolation layers this world enforces.
    pub fn layers(&self) -> Vec<String> {
        crate::spec::layers(self.w.cg.0.is_some(), self.w.userns.is_some())
    }

    /// The world's id mapping (`None`: no user namespace).
    pub fn userns(&self) -> Option<crate::userns::WorldIds> {
        self.w.ids()
    }

    /// The network scope so far (`None`: loopback only). Allowed counters
    /// are cumulative; refused attempts are those logged since the last call.
    pub fn network_scope(&self) -> Option<crate::network::NetScope> {
        self.w.net.as_ref().map(|n| n.scope())
    }

    /// `v1`, `v2` or `none`: the cgroup layout the world was made with.
    pub fn cgroup_name(&self) -> &'static str {
        self.layout.name()
    }

    /// Whether the world's init is still there (a world that died while
    /// it waited serves nothing).
    /// Whether a world of `spec` (of this world's shape: the run a world
    /// made ahead is asked to serve) made now would get the mount plan this
    /// one was made with: the same masks, exposures and mount points (host
    /// paths that appeared or went since, a changed PATH, a secret created
    /// in the meantime change it) and the same directories behind its
    /// exposures (not a project removed and made again). Else why not.
    pub fn plan_holds(&self, spec: &Spec) -> Result<(), String> {
        let now = crate::mount_plan::PlanPrint::of(spec, self.state, &self.layers).map_err(|e| e.to_string())?;
        match now == self.w.plan {
            true => Ok(()),
            false => Err("the host changed since the world was made (its mount plan differs)".into()),
        }
    }

    pub fn alive(&self) -> bool {
        if self.dead {
            return false;
        }
        let mut p = [pollfd(self.w.pidfd.as_fd())];
        // SAFETY: a valid pollfd array; no wait (the pidfd reads on exit).
        let n = unsafe { libc::poll(p.as_mut_ptr(), 1, 0) };
        n == 0
    }

    /// A handle that kills this world.
    pub fn canceller(&self) -> Result<Canceller, WorldError> {
        let fd = self.w.pidfd.try_clone().map_err(WorldError::Wait)?;
        Ok(Canceller(fd))
    }

    /// Runs one entry to its end.
    pub fn run_entry(&mut self, e: &Entry, io: Io) -> Result<EntryOutcome, WorldError> {
        self.run_entry_live(e, io, &mut |_, _| {})
    }

    /// Runs one entry to its end, handing `live` every chunk of its output
    /// as it is read: all of it (the outcome keeps `cap` bytes of each
    /// stream), in the order read (each stream in order; between the two,
    /// as the pipes delivered them).
    pub fn run_entry_live(
        &mut self,
        e: &Entry,
        io: Io,
        live: &mut dyn FnMut(OutStream, &[u8]),
    ) -> Result<EntryOutcome, WorldError> {
        if self.dead {
            return Err(WorldError::Invalid("the world is gone".into()));
        }
        let t = Instant::now();
        let before = self.w.cg.0.as_ref().map(|c| c.limit_events()).unwrap_or_default();
        let control = self.w.control.as_ref().expect("serve mode has a control socket");
        let msg = request(e)?;
        // stdio for the entry: an empty pipe and two pipes we read (no
        // host inode: not even /dev/null's).
        let Io::Capture { cap } = io;
        let null = crate::stdio::empty_stdin().map_err(WorldError::Stdio)?;
        let (or, ow) = pipe()?;
        let (er, ew) = pipe()?;
        // In a user namespace, made the world root's (or its user's), so
        // that an entry can reopen them (`>/dev/stderr`), as the child does
        // with a one-shot world's.
        if let Some(u) = &self.w.userns {
            let (uid, gid) = u.ids.host_owner(self.spec.user.as_ref());
            for fd in [&null, &ow, &ew] {
                nix::unistd::fchown(fd, Some(uid.into()), Some(gid.into()))
                    .map_err(WorldError::nix("fchown a pipe"))?;
            }
        }
        send(control, &msg, &[null.as_raw_fd(), ow.as_raw_fd(), ew.as_raw_fd()])?;
        drop((null, ow, ew));
        let (mut out_r, mut err_r) = (Some(or), Some(er));
        let mut out = Capture::new(cap);
        let mut err = Capture::new(cap);
        let deadline = e.timeout.map(|d| Instant::now() + d);
        let mut timed_out = false;
        let mut status = None;
        let mut interrupted = None;
        while status.is_none() || out_r.is_some() || err_r.is_some() {
            let wait_ms = match (deadline, timed_out, status) {
                (Some(d), false, None) => d.saturating_duration_since(Instant::now()).as_millis().min(60_000) as i32,
                _ => -1,
            };
            let mut pfds = vec![
                pollfd(self.w.pidfd.as_fd()),
                pollfd(self.w.sigfd.as_fd()),
                match status {
                    None => pollfd(control.as_fd()),
                    Some(_) => libc::pollfd { fd: -1, events: 0, revents: 0 },
                },
            ];
            let (oi, ei) = (pfds.len(), pfds.len() + 1);
            for p in [&out_r, &err_r] {
                pfds.push(match p {
                    Some(fd) => pollfd(fd.as_fd()),
                    None => libc::pollfd { fd: -1, events: 0, revents: 0 },
                });
            }
            // SAFETY: valid pollfd array.
            let n = unsafe { libc::poll(pfds.as_mut_ptr(), pfds.len() as libc::nfds_t, wait_ms) };
            if n < 0 {
                let err = std::io::Error::last_os_error();
                if err.raw_os_error() == Some(libc::EINTR) {
                    continue;
                }
                return Err(WorldError::Wait(err));
            }
            if pfds[0].revents != 0 {
                // The init is gone: cancelled, or killed with the world.
                let _ = wait_exit(self.w.pid);
                self.dead = true;
                status = Some(137);
                break;
            }
            if pfds[1].revents != 0 {
                if let Ok(Some(info)) = self.w.sigfd.read_signal() {
                    let _ = raw::pidfd_kill(self.w.pidfd.as_fd(), libc::SIGKILL);
                    let _ = wait_exit(self.w.pid);
                    self.dead = true;
                    interrupted = Some(info.ssi_signo as i32);
                    status = Some(128 + libc::SIGKILL);
                    break;
                }
            }
            if status.is_none() && pfds[2].revents != 0 {
                match read_status(control)? {
                    Some(st) => status = Some(st),
                    None => {
                        // EOF: the init died (cancelled); its exit follows.
                        let _ = wait_exit(self.w.pid);
                        self.dead = true;
                        status = Some(137);
                        break;
                    }
                }
            }
            drain(&mut out_r, pfds[oi].revents, &mut out, &mut |b| live(OutStream::Stdout, b));
            drain(&mut err_r, pfds[ei].revents, &mut err, &mut |b| live(OutStream::Stderr, b));
            if n == 0 && status.is_none() && !timed_out && deadline.is_some_and(|d| Instant::now() >= d) {
                // Kill the entry (everything but the init); the init reports it.
                timed_out = true;
                if let Some(c) = self.w.cg.0.as_ref() {
                    c.kill_all_but(self.w.pid);
                } else {
                    let _ = raw::pidfd_kill(self.w.pidfd.as_fd(), libc::SIGKILL);
                }
            }
        }
        let after = self.w.cg.0.as_ref().map(|c| c.limit_events()).unwrap_or_default();
        let mut limits_hit: Vec<String> =
            crate::cgroup::newly_hit(&before, &after).into_iter().map(String::from).collect();
        if timed_out {
            limits_hit.push("timeout".into());
        }
        let fs_diff = self.diff()?;
        let fs_delta = crate::diff::delta(&self.last_diff, &fs_diff);
        self.last_diff = fs_diff.clone();
        Ok(EntryOutcome {
            exit_code: if timed_out { 124 } else { status.unwrap_or(125) },
            timed_out,
            interrupted,
            stdout_total: out.total,
            stderr_total: err.total,
            stdout: out.data,
            stderr: err.data,
            duration_ms: ms(t.elapsed()),
            limits_hit,
            fs_diff,
            fs_delta,
        })
    }

    /// The fs_diff of the world's upper as it is now.
    fn diff(&self) -> Result<FsDiff, WorldError> {
        collect_diff(
            self.w.scratch.fd(),
            &self.layers,
            self.spec.hash,
            self.spec.rootless.is_some(),
            &mut Default::default(),
        )
    }

    /// Ends the world: its init kills what is left and exits; the fs_diff of
    /// all entries is collected; the world is kept (`spec.keep`) or discarded.
    pub fn finish(mut self) -> Result<Outcome, WorldError> {
        let t_run = self.t0.elapsed();
        drop(self.w.control.take()); // EOF: the init kills the rest and exits
        let (status, cpu_ms) = match self.dead {
            true => (137, None),
            false => {
                let (status, cpu) = crate::launch::wait_exit_cpu(self.w.pid)?;
                (status, Some(cpu))
            }
        };
        self.dead = true;
        let fs_diff = self.diff()?;
        let t_diff = self.t0.elapsed();
        let has_cg = self.w.cg.0.is_some();
        if let Some(c) = self.w.cg.0.take() {
            c.remove()?;
        }
        let mut outcome = Outcome {
            world: self.id().to_string(),
            exit_code: status,
            timed_out: false,
            interrupted: None,
            fs_diff,
            layers: crate::spec::layers(has_cg, self.w.userns.is_some()),
            userns: self.w.ids(),
            cgroup: self.layout.name(),
            limits_hit: Vec::new(),
            timings: Timings {
                setup_ms: ms(self.t_setup),
                run_ms: ms(t_run - self.t_setup),
                diff_ms: ms(t_diff - t_run),
                teardown_ms: 0.0,
                total_ms: 0.0,
            },
            kept: None,
            run: None,
            run_diff: None,
            network: self.w.net.as_ref().map(|n| n.scope()),
            output_error: None,
            cpu_ms,
            teardown: Default::default(),
        };
        let meta = match (&self.taken, self.attached.take()) {
            (Some(t), _) => {
                outcome.run = Some(t.next_run());
                outcome.run_diff = Some(crate::diff::delta(&self.first_diff, &outcome.fs_diff));
                Some(t.after_run(self.spec, &self.layers, status))
            }
            (None, Some(mut meta)) => {
                meta["state"] = "kept".into();
                meta["exit_code"] = status.into();
                outcome.run = Some(1);
                Some(meta)
            }
            (None, None) => None,
        };
        if let Some(meta) = meta {
            // Kept, with the fs_diff the next run starts from (a continued
            // world's earlier scratch goes).
            self.w.scratch.drop_old_scratch();
            let id = self.id().to_string();
            crate::continued::save_diff(self.state, &id, &outcome.fs_diff)
                .map_err(WorldError::state("record the world's fs_diff"))?;
            self.state.mark_kept(&id, &meta).map_err(WorldError::state("keep the world"))?;
            outcome.kept = Some(self.state.world_path(&id));
        }
        outcome.timings.teardown_ms = ms(self.t0.elapsed() - t_diff);
        outcome.timings.total_ms = ms(self.t0.elapsed());
        Ok(outcome)
    }
}

/// The request the init parses (see `crates/init`): `R`, argc, argv, envc,
/// env, cwd, every string NUL-terminated.
fn request(e: &Entry) -> Result<Vec<u8>, WorldError> {
    let bad = |m: &str| Err(WorldError::Invalid(m.to_string()));
    if e.argv.is_empty() || e.argv[0].is_empty() {
        return bad("an entry needs a command");
    }
    if !e.cwd.is_absolute() {
        return bad("an entry's cwd must be absolute");
    }
    if e.argv.len() > 1000 || e.env.len() > 1000 {
        return bad("an entry may have at most 1000 arguments and 1000 environment variables");
    }
    let mut m = vec![b'R'];
    let string = |m: &mut Vec<u8>, b: &[u8]| -> Result<(), WorldError> {
        if b.contains(&0) {
            return Err(WorldError::Invalid("NUL byte in an entry's command, environment or cwd".into()));
        }
        m.extend_from_slice(b);
        m.push(0);
        Ok(())
    };
    m.extend_from_slice(&(e.argv.len() as u32).to_le_bytes());
    for a in &e.argv {
        string(&mut m, a.as_bytes())?;
    }
    m.extend_from_slice(&(e.env.len() as u32).to_le_bytes());
    for (k, v) in &e.env {
        if k.is_empty() || k.as_bytes().contains(&b'=') {
            return bad("bad environment variable name");
        }
        let mut kv = k.as_bytes().to_vec();
        kv.push(b'=');
        kv.extend_from_slice(v.as_bytes());
        string(&mut m, &kv)?;
    }
    string(&mut m, e.cwd.as_os_str().as_bytes())?;
    if m.len() > 200 * 1024 {
        return bad("an entry's command and environment exceed 200 KiB");
    }
    Ok(m)
}

/// Sends a request with three fds (SCM_RIGHTS).
fn send(control: &OwnedFd, msg: &[u8], fds: &[RawFd; 3]) -> Result<(), WorldError> {
    use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};
    let iov = [std::io::IoSlice::new(msg)];
    let cmsg = [ControlMessage::ScmRights(fds)];
    sendmsg::<()>(control.as_raw_fd(), &iov, &cmsg, MsgFlags::MSG_NOSIGNAL, None)
        .map_err(WorldError::nix("send an entry to the world"))?;
    Ok(())
}

/// Reads the init's answer `E` + i32; None at EOF (the init is gone).
fn read_status(control: &OwnedFd) -> Result<Option<i32>, WorldError> {
    let mut b = [0u8; 16];
    let n = match nix::unistd::read(control, &mut b) {
        Ok(n) => n,
        Err(nix::Error::ECONNRESET) => 0,
        Err(e) => return Err(WorldError::nix("read an entry's status")(e)),
    };
    if n == 0 {
        return Ok(None);
    }
    if n != 5 || b[0] != b'E' {
        return Err(WorldError::Child("the world's init sent a malformed status".into()));
    }
    Ok(Some(i32::from_le_bytes([b[1], b[2], b[3], b[4]])))
}

fn pipe() -> Result<(OwnedFd, OwnedFd), WorldError> {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(WorldError::nix("pipe"))
}

fn pollfd(fd: BorrowedFd<'_>) -> libc::pollfd {
    libc::pollfd { fd: fd.as_raw_fd(), events: libc::POLLIN, revents: 0 }
}

/// Output kept up to a cap, counted in full.
struct Capture {
    data: Vec<u8>,
    total: u64,
    cap: usize,
}

impl Capture {
    fn new(cap: usize) -> Capture {
        Capture { data: Vec::new(), total: 0, cap }
    }
}

/// Reads what a pipe has (handed to `live`, kept up to the cap); drops it
/// at EOF.
fn drain(fd: &mut Option<OwnedFd>, revents: i16, into: &mut Capture, live: &mut dyn FnMut(&[u8])) {
    if revents == 0 {
        return;
    }
    let Some(f) = fd.as_ref() else { return };
    let mut buf = [0u8; 16384];
    match nix::unistd::read(f, &mut buf) {
        Ok(0) | Err(_) => *fd = None,
        Ok(n) => {
            live(&buf[..n]);
            into.total += n as u64;
            let room = into.cap.saturating_sub(into.data.len());
            into.data.extend_from_slice(&buf[..n.min(room)]);
        }
    }
}
