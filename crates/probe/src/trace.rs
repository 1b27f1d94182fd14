//! `exec-trace FILE TIMEOUT_MS [JOBS]`: runs each command line of FILE (one
//! JSON string per line) as `/bin/sh -c LINE` under ptrace, following every
//! fork, vfork and clone, and reports every program that was executed. Up to
//! JOBS lines (default 1) run at once.
//!
//! One JSON object per command line, in FILE's order:
//! `{"i": N, "execs": [{"pid", "exe", "argv"}], "execs_total": N, "status": CODE, "timed_out": BOOL, "ms": N}`
//! (`ms`: from the start of the line to its last process gone).
//! `exe` is `/proc/PID/exe` right after the exec (for a script, its
//! interpreter; `argv` then names the script). The first exec is the
//! `/bin/sh` itself. stdin, stdout and stderr are /dev/null, as no terminal
//! (batch entries run on pipes). A line still running after TIMEOUT_MS is
//! killed, with everything it started.

use std::collections::{HashMap, HashSet};
use std::ffi::CString;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::ptrace::{self, Event, Options};
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{fork, ForkResult, Pid};
use serde_json::{json, Value};

/// Execs reported per command line (all are counted in `execs_total`).
const MAX_EXECS: usize = 64;

/// One command line being traced.
struct Run {
    root: Pid,
    start: Instant,
    /// Processes of this line not yet gone.
    live: usize,
    /// Every process of this line seen so far: a child's own events can be
    /// handled before its parent's fork event (even its exit), which must
    /// then not count it again.
    seen: HashSet<Pid>,
    execs: Vec<Value>,
    total: usize,
    status: Option<i32>,
    timed_out: bool,
    /// The root has passed its first exec stop.
    started: bool,
}

pub fn exec_trace(file: &str, timeout_ms: u64, jobs: usize) {
    let text = std::fs::read_to_string(file).unwrap_or_else(|e| crate::usage(&format!("{file}: {e}")));
    let lines: Vec<String> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .enumerate()
        .map(|(i, l)| serde_json::from_str(l).unwrap_or_else(|e| crate::usage(&format!("{file}: line {i}: {e}"))))
        .collect();
    let timeout = Duration::from_millis(timeout_ms);
    // SIGCHLD is blocked and waited for (a ptrace stop or an exit of a
    // tracee sends it), so an event is handled as soon as it happens; the
    // children unblock it before their exec.
    let old_mask = block_sigchld();
    let mut runs: HashMap<usize, Run> = HashMap::new();
    // Which line each traced process belongs to.
    let mut owner: HashMap<Pid, usize> = HashMap::new();
    let mut done: Vec<Option<Value>> = vec![None; lines.len()];
    let (mut next, mut flushed) = (0, 0);
    while flushed < lines.len() {
        while runs.len() < jobs.max(1) && next < lines.len() {
            match spawn(&lines[next], &old_mask) {
                Ok(root) => {
                    owner.insert(root, next);
                    let run = Run {
                        root,
                        start: Instant::now(),
                        live: 1,
                        seen: HashSet::from([root]),
                        execs: Vec::new(),
                        total: 0,
                        status: None,
                        timed_out: false,
                        started: false,
                    };
                    runs.insert(next, run);
                }
                Err(e) => done[next] = Some(json!({"i": next, "error": e})),
            }
            next += 1;
        }
        for (&i, r) in runs.iter_mut() {
            if r.timed_out && r.start.elapsed() > timeout + Duration::from_secs(1) {
                // Killed a second ago: what has not been reported gone (a
                // thread replaced by an exec) is gone.
                r.live = 0;
            }
            if !r.timed_out && r.start.elapsed() > timeout {
                r.timed_out = true;
                let _ = kill(Pid::from_raw(-r.root.as_raw()), Signal::SIGKILL);
                for (p, _) in owner.iter().filter(|(_, &o)| o == i) {
                    let _ = kill(*p, Signal::SIGKILL);
                }
            }
        }
        match waitpid(None, Some(WaitPidFlag::__WALL | WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) => wait_sigchld(next_deadline(&runs, timeout)),
            Ok(st) => event(st, &mut runs, &mut owner),
            Err(Errno::EINTR) => {}
            Err(Errno::ECHILD) => {
                // Nothing traced is left: every running line is over.
                for r in runs.values_mut() {
                    r.live = 0;
                }
            }
            Err(e) => crate::usage(&format!("waitpid: {e}")),
        }
        let finished: Vec<usize> = runs.iter().filter(|(_, r)| r.live == 0).map(|(&i, _)| i).collect();
        for i in finished {
            if let Some(r) = runs.remove(&i) {
                owner.retain(|_, &mut o| o != i);
                done[i] = Some(json!({"i": i, "execs": r.execs, "execs_total": r.total, "status": r.status,
                                      "timed_out": r.timed_out, "ms": r.start.elapsed().as_millis() as u64}));
            }
        }
        while flushed < lines.len() {
            match done[flushed].take() {
                Some(v) => crate::emit(v),
                None => break,
            }
            flushed += 1;
        }
    }
}

/// How long until a running line is due to be killed (or, killed, given
/// up), at most 50 ms.
fn next_deadline(runs: &HashMap<usize, Run>, timeout: Duration) -> Duration {
    let due = |r: &Run| {
        let at = if r.timed_out { timeout + Duration::from_secs(1) } else { timeout };
        at.saturating_sub(r.start.elapsed())
    };
    runs.values().map(due).min().unwrap_or(Duration::ZERO).min(Duration::from_millis(50))
}

/// Blocks SIGCHLD for this (single-threaded) process; returns the mask before.
fn block_sigchld() -> libc::sigset_t {
    // SAFETY: sigset_t is plain data, initialised by sigemptyset; the calls
    // only read and write the two sets given.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGCHLD);
        libc::sigprocmask(libc::SIG_BLOCK, &set, &mut old);
        old
    }
}

/// Waits for a pending SIGCHLD (taking it) or for `max`, whichever is first.
fn wait_sigchld(max: Duration) {
    if max.is_zero() {
        return;
    }
    let ts = libc::timespec { tv_sec: max.as_secs() as _, tv_nsec: max.subsec_nanos() as libc::c_long };
    // SAFETY: `set` is initialised by sigemptyset/sigaddset; a null siginfo
    // is allowed; SIGCHLD is blocked (block_sigchld), as sigtimedwait needs.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGCHLD);
        libc::sigtimedwait(&set, std::ptr::null_mut(), &ts);
    }
}

/// Handles one wait status of a traced process.
fn event(st: WaitStatus, runs: &mut HashMap<usize, Run>, owner: &mut HashMap<Pid, usize>) {
    let Some(pid) = st.pid() else { return };
    // A new process may stop before its parent's fork event: its parent
    // tells which line it belongs to.
    let line = match owner.get(&pid) {
        Some(&i) => i,
        None => match parent(pid).and_then(|pp| owner.get(&pp).copied()) {
            Some(i) => {
                if let Some(r) = runs.get_mut(&i) {
                    adopt(r, owner, pid, i);
                }
                i
            }
            None => {
                let _ = ptrace::cont(pid, None);
                return;
            }
        },
    };
    let Some(r) = runs.get_mut(&line) else { return };
    match st {
        WaitStatus::Exited(..) | WaitStatus::Signaled(..) => {
            if owner.remove(&pid).is_some() {
                r.live = r.live.saturating_sub(1);
            }
            if pid == r.root {
                r.status = Some(match st {
                    WaitStatus::Signaled(_, sig, _) => 128 + sig as i32,
                    WaitStatus::Exited(_, code) => code,
                    _ => -1,
                });
            }
        }
        WaitStatus::Stopped(_, Signal::SIGTRAP) if pid == r.root && !r.started => {
            // The root's own exec (PTRACE_TRACEME): from here on, follow it.
            r.started = true;
            record(r, pid);
            let opts = Options::PTRACE_O_TRACEEXEC
                | Options::PTRACE_O_TRACEFORK
                | Options::PTRACE_O_TRACEVFORK
                | Options::PTRACE_O_TRACECLONE
                | Options::PTRACE_O_EXITKILL;
            if ptrace::setoptions(pid, opts).and_then(|_| ptrace::cont(pid, None)).is_err() {
                let _ = kill(pid, Signal::SIGKILL);
            }
        }
        WaitStatus::PtraceEvent(_, _, ev) => {
            if ev == Event::PTRACE_EVENT_EXEC as i32 {
                record(r, pid);
            } else if let Ok(new) = ptrace::getevent(pid) {
                adopt(r, owner, Pid::from_raw(new as i32), line);
            }
            let _ = ptrace::cont(pid, None);
        }
        WaitStatus::Stopped(_, sig) => {
            // A new process's first stop is SIGSTOP; other signals are
            // delivered as they were sent.
            let deliver = if sig == Signal::SIGSTOP { None } else { Some(sig) };
            let _ = ptrace::cont(pid, deliver);
        }
        _ => {}
    }
}

/// Counts `pid` as a live process of line `line`, once.
fn adopt(r: &mut Run, owner: &mut HashMap<Pid, usize>, pid: Pid, line: usize) {
    if r.seen.insert(pid) {
        owner.insert(pid, line);
        r.live += 1;
    }
}

fn record(r: &mut Run, pid: Pid) {
    r.total += 1;
    if r.execs.len() < MAX_EXECS {
        r.execs.push(exec_of(pid));
    }
}

/// The parent pid of a process (field 4 of /proc/PID/stat).
fn parent(pid: Pid) -> Option<Pid> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &stat[stat.rfind(')')? + 2..];
    after.split(' ').nth(1)?.parse().ok().map(Pid::from_raw)
}

/// Starts `/bin/sh -c LINE`, traced; it stops at its exec.
fn spawn(line: &str, mask: &libc::sigset_t) -> Result<Pid, String> {
    let argv: Vec<CString> = ["/bin/sh", "-c", line]
        .iter()
        .map(|a| CString::new(a.as_bytes()).unwrap_or_else(|_| CString::from(c"false")))
        .collect();
    // SAFETY: the probe is single-threaded; the child only calls
    // async-signal-safe functions before exec.
    match unsafe { fork() } {
        Ok(ForkResult::Child) => child_exec(&argv, c"/dev/null", mask),
        Ok(ForkResult::Parent { child }) => Ok(child),
        Err(e) => Err(format!("fork: {e}")),
    }
}

/// The child: its own process group, /dev/null for stdio, the signal mask
/// the probe was started with, traced, exec.
fn child_exec(argv: &[CString], null: &std::ffi::CStr, mask: &libc::sigset_t) -> ! {
    // SAFETY: plain system calls on our own process between fork and exec;
    // `null`, `argv` and `mask` were built before the fork.
    unsafe {
        libc::setpgid(0, 0);
        libc::sigprocmask(libc::SIG_SETMASK, mask, std::ptr::null_mut());
        let fd = libc::open(null.as_ptr(), libc::O_RDWR);
        if fd >= 0 {
            for target in 0..3 {
                libc::dup2(fd, target);
            }
        }
        libc::ptrace(libc::PTRACE_TRACEME, 0, 0, 0);
        let mut ptrs: Vec<*const libc::c_char> = argv.iter().map(|a| a.as_ptr()).collect();
        ptrs.push(std::ptr::null());
        libc::execv(ptrs[0], ptrs.as_ptr());
        libc::_exit(127)
    }
}

/// What a tracee runs right after an exec.
fn exec_of(pid: Pid) -> Value {
    let exe = std::fs::read_link(format!("/proc/{pid}/exe")).map(|p| p.to_string_lossy().into_owned());
    let argv: Vec<String> = std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| {
            b.split(|&c| c == 0).filter(|a| !a.is_empty()).map(|a| String::from_utf8_lossy(a).into_owned()).collect()
        })
        .unwrap_or_default();
    json!({"pid": pid.as_raw(), "exe": exe.unwrap_or_default(), "argv": argv})
}
