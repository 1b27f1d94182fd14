//! cloche-probe: runs inside a world and reports facts as JSON lines on stdout.
//!
//! The end-to-end tests run it as the world's command and compare what it saw
//! with what the host sees from outside. Every subcommand prints one JSON
//! object per line (one line unless it says otherwise) and exits 0; a usage
//! error exits 2. Failures of what is being probed are facts, not errors:
//! they are reported as `"ok": false` or `"ret": -1` with `errno` and `err`.
//!
//! Subcommands:
//!   status                      Cap*, NoNewPrivs, Seccomp from /proc/self/status
//!   fds                         open file descriptors (the one reading /proc/self/fd excluded)
//!   syscall NAME...             one line per NAME: {"name","ret","errno","err"} (see `attempt`)
//!   tiocsti                     TIOCSTI on fd 0, on /dev/tty, and on a pty made our controlling tty
//!   connect-unix PATH           connect a stream socket to a path
//!   connect-abstract NAME       connect a stream socket to an abstract name
//!   connect-tcp ADDR:PORT       TCP connect (2 s timeout); ADDR `gateway`: the default route's
//!   udp-echo ADDR:PORT          send a datagram, wait 1 s for the answer
//!   connect-name NAME:PORT      resolve (getaddrinfo) and TCP connect to the first address
//!   listen-tcp ADDR SECS        listen, count the connections accepted
//!   dns-query SERVER NAME       one A query over UDP to SERVER (IP:PORT): rcode, TC, addresses, ms
//!   dns-query-tcp SERVER NAME   the same over TCP
//!   dns-flood SERVER N          N A queries over UDP for N names of their own, one at a time
//!   udp-spray IP FROM TO        one datagram to each port FROM..=TO of IP
//!   kill PID SIG                kill(2)
//!   ps                          pids visible in /proc, with their argv; our pid and ppid
//!   read PATH...                one line per PATH: contents (lossy text, at most 1 MiB) or errno
//!   ls PATH...                  one line per PATH: sorted entry names or errno
//!   open-write PATH...          one line per PATH: can it be opened for writing (nothing is written)
//!   stat PATH...                one line per PATH: kind, mode, size, nlink, uid, gid (lstat)
//!   netdev                      network interfaces in /proc/net/dev
//!   env                         the environment
//!   cwd                         the working directory
//!   mknod PATH c|b|p            mknod(2) of a char device (1:3), a block device (7:0) or a fifo
//!   create-bytes NAME_HEX TEXT  create a file whose name is the given raw bytes
//!   emit OUT_HEX ERR_HEX N      write the given bytes N times to stdout, then N times to stderr
//!   forkbomb [MAX]              fork idle children until fork fails (or MAX), report, kill them
//!   alloc MB                    allocate and touch MB MiB, 1 MiB at a time
//!   sleep SECS [--ignore-term]  sleep, optionally ignoring SIGTERM
//!   sleep-bg MARKER SECS        double-fork a detached child (argv holds MARKER) that ignores
//!                               SIGTERM/SIGHUP, sleeps SECS, then writes the file MARKER
//!   socket-walk MAX_FAMILY      one line per socket()/socketpair() of every family 0..=MAX_FAMILY
//!                               (and a few far ones) with the common types, every netlink
//!                               protocol 0..=33, and IP protocols (see kernel.rs)
//!   read-tree [--skip PATH]... ROOT...
//!                               one line per file under the ROOTs: bytes one read returned, or
//!                               errno (symlinks and pid dirs under /proc not followed)
//!   exec-trace FILE MS [JOBS]   run each command line of FILE (JSON strings, one a line) as
//!                               `sh -c` under ptrace, JOBS at once; one line per command
//!                               line: every exec (see trace.rs)

mod kernel;
mod net;
mod sys;
mod trace;
mod tty;

use net::{connect_name, connect_tcp, dns_flood, dns_query, listen_tcp, udp_echo, udp_spray};

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::os::unix::net::UnixStream;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::{json, Value};

fn main() {
    let args: Vec<String> = std::env::args_os().skip(1).map(|a| a.to_string_lossy().into_owned()).collect();
    let Some(cmd) = args.first() else {
        usage("no subcommand");
    };
    let rest = &args[1..];
    match cmd.as_str() {
        "status" => emit(status()),
        "fds" => emit(fds()),
        "syscall" => {
            if rest.is_empty() {
                usage("syscall needs at least one NAME");
            }
            for name in rest {
                syscall_in_child(name);
            }
        }
        "tiocsti" => emit(tty::tiocsti()),
        "connect-unix" => emit(connect_unix(arg(rest, 0))),
        "connect-abstract" => emit(connect_abstract(arg(rest, 0))),
        "connect-tcp" => emit(connect_tcp(arg(rest, 0))),
        "connect-name" => emit(connect_name(arg(rest, 0))),
        "listen-tcp" => emit(listen_tcp(arg(rest, 0), arg(rest, 1))),
        "dns-query" => emit(dns_query(arg(rest, 0), arg(rest, 1), false)),
        "dns-query-tcp" => emit(dns_query(arg(rest, 0), arg(rest, 1), true)),
        "dns-flood" => emit(dns_flood(arg(rest, 0), arg(rest, 1))),
        "udp-spray" => emit(udp_spray(arg(rest, 0), arg(rest, 1), arg(rest, 2))),
        "udp-echo" => emit(udp_echo(arg(rest, 0))),
        "kill" => emit(kill(arg(rest, 0), arg(rest, 1))),
        "ps" => emit(ps()),
        "read" => rest.iter().for_each(|p| emit(read(p))),
        "ls" => rest.iter().for_each(|p| emit(ls(p))),
        "open-write" => rest.iter().for_each(|p| emit(open_write(p))),
        "stat" => rest.iter().for_each(|p| emit(stat(p))),
        "netdev" => emit(netdev()),
        "env" => emit(env()),
        "cwd" => emit(cwd()),
        "mknod" => emit(mknod(arg(rest, 0), arg(rest, 1))),
        "create-bytes" => emit(create_bytes(arg(rest, 0), arg(rest, 1))),
        "emit" => emit_bytes(arg(rest, 0), arg(rest, 1), arg(rest, 2)),
        "forkbomb" => emit(forkbomb(rest.first().map(String::as_str).unwrap_or("1000"))),
        "alloc" => emit(alloc(arg(rest, 0))),
        "sleep" => emit(sleep(arg(rest, 0), rest.iter().any(|a| a == "--ignore-term"))),
        "sleep-bg" => emit(sleep_bg(arg(rest, 0), arg(rest, 1))),
        "bg-fork" => bg_fork(arg(rest, 0), arg(rest, 1)),
        "bg-child" => bg_child(arg(rest, 0), arg(rest, 1)),
        "socket-walk" => kernel::socket_walk(parse(arg(rest, 0)), &mut emit),
        "read-tree" => kernel::read_tree_args(rest, &mut emit),
        "exec-trace" => trace::exec_trace(arg(rest, 0), parse(arg(rest, 1)), rest.get(2).map_or(1, |j| parse(j))),
        other => usage(&format!("unknown subcommand {other:?}")),
    }
}

pub(crate) fn usage(why: &str) -> ! {
    eprintln!("cloche-probe: {why} (see the top of crates/probe/src/main.rs)");
    std::process::exit(2);
}

fn arg(rest: &[String], i: usize) -> &str {
    match rest.get(i) {
        Some(a) => a,
        None => usage(&format!("missing argument #{}", i + 1)),
    }
}

fn parse<T: std::str::FromStr>(s: &str) -> T {
    s.parse().unwrap_or_else(|_| usage(&format!("bad number {s:?}")))
}

/// Prints one JSON line and flushes it (children may leave through _exit).
pub(crate) fn emit(v: Value) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{v}");
    let _ = out.flush();
}

fn errname(errno: i32) -> String {
    format!("{:?}", nix::errno::Errno::from_raw(errno))
}

/// `{"ok": true}` or `{"ok": false, "errno", "err"}` merged into `base`.
fn outcome(mut base: Value, r: std::io::Result<()>) -> Value {
    match r {
        Ok(()) => base["ok"] = json!(true),
        Err(e) => {
            let errno = e.raw_os_error().unwrap_or(0);
            base["ok"] = json!(false);
            base["errno"] = json!(errno);
            base["err"] = json!(if errno != 0 { errname(errno) } else { e.to_string() });
        }
    }
    base
}

fn ret_json(base: Value, r: sys::Ret) -> Value {
    let mut v = base;
    v["ret"] = json!(r.ret);
    v["errno"] = json!(r.errno);
    v["err"] = json!(if r.ret < 0 { errname(r.errno) } else { String::new() });
    v
}

fn status() -> Value {
    let text = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let wanted =
        ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb", "NoNewPrivs", "Seccomp", "Seccomp_filters", "Uid", "Gid"];
    let mut map = serde_json::Map::new();
    for line in text.lines() {
        if let Some((k, v)) = line.split_once(':') {
            if wanted.contains(&k) {
                map.insert(k.to_string(), json!(v.trim()));
            }
        }
    }
    Value::Object(map)
}

fn fds() -> Value {
    use nix::dir::Dir;
    use nix::fcntl::OFlag;
    use nix::sys::stat::Mode;
    let mut dir =
        match Dir::open("/proc/self/fd", OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC, Mode::empty()) {
            Ok(d) => d,
            Err(e) => return json!({"ok": false, "errno": e as i32, "err": errname(e as i32)}),
        };
    let own = dir.as_raw_fd();
    let mut fds: Vec<i32> = dir
        .iter()
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str().ok()?.parse::<i32>().ok())
        .filter(|&fd| fd != own)
        .collect();
    fds.sort_unstable();
    let targets: BTreeMap<String, String> = fds
        .iter()
        .map(|fd| {
            let t = std::fs::read_link(format!("/proc/self/fd/{fd}"))
                .map(|p| p.to_string_lossy().into_owned())
                .unwrap_or_else(|e| format!("? {e}"));
            (fd.to_string(), t)
        })
        .collect();
    json!({"ok": true, "fds": fds, "targets": targets})
}

/// The attempts of `syscall NAME` (see `sys` for what each one does exactly).
/// "unshare" and "clone" ask for CLONE_NEWUSER; "getpid" is the control.
type Attempt = (&'static str, fn() -> sys::Ret);

const ATTEMPTS: &[Attempt] = &[
    ("getpid", sys::getpid),
    ("nfnetlink", sys::nfnetlink),
    ("link-down", sys::link_down),
    ("rtnl-addr", sys::rtnl_addr),
    ("raw-socket", sys::raw_socket),
    ("packet-socket", sys::packet_socket),
    ("mount", sys::mount),
    ("umount2", sys::umount2),
    ("unshare", sys::unshare_user),
    ("unshare-mnt", sys::unshare_mnt),
    ("clone", sys::clone_user),
    ("clone3", sys::clone3_user),
    ("fsopen", sys::fsopen),
    ("open_tree", sys::open_tree),
    ("move_mount", sys::move_mount),
    ("mount_setattr", sys::mount_setattr),
    ("keyctl", sys::keyctl),
    ("add_key", sys::add_key),
    ("request_key", sys::request_key),
    ("bpf", sys::bpf),
    ("perf_event_open", sys::perf_event_open),
    ("userfaultfd", sys::userfaultfd),
    ("io_uring_setup", sys::io_uring_setup),
    ("init_module", sys::init_module),
    ("finit_module", sys::finit_module),
    ("delete_module", sys::delete_module),
    ("kexec_load", sys::kexec_load),
    ("open_by_handle_at", sys::open_by_handle_at),
    ("setns", sys::setns),
    ("clock_settime", sys::clock_settime),
    ("settimeofday", sys::settimeofday),
    ("swapon", sys::swapon),
    ("swapoff", sys::swapoff),
    ("reboot", sys::reboot),
    ("pivot_root", sys::pivot_root),
    ("chroot", sys::chroot),
];

/// Runs one attempt in a forked child so that its effects stay there; the child
/// prints the result line. A child killed by a signal (e.g. SIGSYS from a
/// seccomp kill action) is reported by the parent with `"signal"`.
fn syscall_in_child(name: &str) {
    let Some(&(_, attempt)) = ATTEMPTS.iter().find(|(n, _)| *n == name) else {
        usage(&format!("unknown syscall name {name:?}"));
    };
    let f = sys::fork();
    if f.ret == 0 {
        emit(ret_json(json!({"name": name}), attempt()));
        sys::exit_now(0);
    }
    if f.ret < 0 {
        emit(json!({"name": name, "ret": null, "errno": f.errno, "err": errname(f.errno),
                    "probe_error": "fork failed"}));
        return;
    }
    match nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(f.ret as i32), None) {
        Ok(nix::sys::wait::WaitStatus::Signaled(_, sig, _)) => {
            emit(json!({"name": name, "ret": null, "errno": null, "signal": sig as i32,
                        "err": format!("killed by {sig:?}")}));
        }
        Ok(_) => {}
        Err(e) => emit(json!({"name": name, "probe_error": format!("waitpid: {e}")})),
    }
}

fn connect_unix(path: &str) -> Value {
    outcome(json!({"path": path}), UnixStream::connect(path).map(|_| ()))
}

fn connect_abstract(name: &str) -> Value {
    use std::os::linux::net::SocketAddrExt;
    use std::os::unix::net::SocketAddr;
    let r =
        SocketAddr::from_abstract_name(name.as_bytes()).and_then(|addr| UnixStream::connect_addr(&addr)).map(|_| ());
    outcome(json!({"name": name}), r)
}

fn kill(pid: &str, sig: &str) -> Value {
    let pid: i32 = parse(pid);
    let sig: i32 = parse(sig);
    let signal = if sig == 0 {
        None
    } else {
        match nix::sys::signal::Signal::try_from(sig) {
            Ok(s) => Some(s),
            Err(_) => usage(&format!("bad signal {sig}")),
        }
    };
    let base = json!({"pid": pid, "sig": sig});
    match nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), signal) {
        Ok(()) => ret_json(base, sys::Ret { ret: 0, errno: 0 }),
        Err(e) => ret_json(base, sys::Ret { ret: -1, errno: e as i32 }),
    }
}

fn cmdline_of(pid: u32) -> Vec<String> {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .unwrap_or_default()
        .split(|&b| b == 0)
        .filter(|s| !s.is_empty())
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .collect()
}

fn ps() -> Value {
    let mut pids: Vec<u32> = std::fs::read_dir("/proc")
        .map(|rd| rd.filter_map(|e| e.ok()).filter_map(|e| e.file_name().to_str()?.parse().ok()).collect())
        .unwrap_or_default();
    pids.sort_unstable();
    let procs: Vec<Value> = pids.iter().map(|&p| json!({"pid": p, "cmdline": cmdline_of(p)})).collect();
    json!({"self": std::process::id(), "ppid": nix::unistd::getppid().as_raw(),
           "pids": pids, "procs": procs})
}

/// Reads at most 1 MiB, non-blocking (so /proc/kmsg or a FIFO cannot hang the probe).
fn read(path: &str) -> Value {
    use std::os::unix::fs::OpenOptionsExt;
    const MAX: u64 = 1 << 20;
    let r = std::fs::OpenOptions::new().read(true).custom_flags(libc::O_NONBLOCK).open(path).and_then(|f| {
        let mut bytes = Vec::new();
        f.take(MAX + 1).read_to_end(&mut bytes).map(|_| bytes)
    });
    match r {
        Ok(mut bytes) => {
            let truncated = bytes.len() as u64 > MAX;
            bytes.truncate(MAX as usize);
            json!({"path": path, "ok": true, "len": bytes.len(), "truncated": truncated,
                   "text": String::from_utf8_lossy(&bytes)})
        }
        Err(e) => outcome(json!({"path": path}), Err(e)),
    }
}

fn ls(path: &str) -> Value {
    match std::fs::read_dir(path) {
        Ok(rd) => {
            let mut names: Vec<String> =
                rd.filter_map(|e| e.ok()).map(|e| e.file_name().to_string_lossy().into_owned()).collect();
            names.sort();
            json!({"path": path, "ok": true, "entries": names})
        }
        Err(e) => outcome(json!({"path": path}), Err(e)),
    }
}

fn open_write(path: &str) -> Value {
    let r = std::fs::OpenOptions::new().write(true).open(path).map(|_| ());
    outcome(json!({"path": path}), r)
}

fn stat(path: &str) -> Value {
    match std::fs::symlink_metadata(path) {
        Ok(m) => {
            let ft = m.file_type();
            let kind = if ft.is_symlink() {
                "symlink"
            } else if ft.is_dir() {
                "dir"
            } else if ft.is_file() {
                "file"
            } else if ft.is_char_device() {
                "char"
            } else if ft.is_block_device() {
                "block"
            } else if ft.is_fifo() {
                "fifo"
            } else {
                "socket"
            };
            json!({"path": path, "ok": true, "kind": kind, "mode": format!("{:04o}", m.mode() & 0o7777),
                   "size": m.size(), "nlink": m.nlink(), "uid": m.uid(), "gid": m.gid(),
                   "ino": m.ino(), "mtime": m.mtime()})
        }
        Err(e) => outcome(json!({"path": path}), Err(e)),
    }
}

fn netdev() -> Value {
    let text = std::fs::read_to_string("/proc/net/dev").unwrap_or_default();
    let mut names: Vec<String> =
        text.lines().skip(2).filter_map(|l| Some(l.split_once(':')?.0.trim().to_string())).collect();
    names.sort();
    json!({"interfaces": names})
}

fn env() -> Value {
    let map: BTreeMap<String, String> = std::env::vars_os()
        .map(|(k, v)| (k.to_string_lossy().into_owned(), v.to_string_lossy().into_owned()))
        .collect();
    json!({"env": map})
}

fn cwd() -> Value {
    match std::env::current_dir() {
        Ok(p) => json!({"ok": true, "cwd": p.to_string_lossy()}),
        Err(e) => outcome(json!({}), Err(e)),
    }
}

fn mknod(path: &str, kind: &str) -> Value {
    use nix::sys::stat::{makedev, Mode, SFlag};
    let (flag, dev) = match kind {
        "c" => (SFlag::S_IFCHR, makedev(1, 3)),
        "b" => (SFlag::S_IFBLK, makedev(7, 0)),
        "p" => (SFlag::S_IFIFO, 0),
        _ => usage("mknod KIND is c, b or p"),
    };
    let r = nix::sys::stat::mknod(path, flag, Mode::from_bits_truncate(0o644), dev);
    let base = json!({"path": path, "kind": kind});
    match r {
        Ok(()) => ret_json(base, sys::Ret { ret: 0, errno: 0 }),
        Err(e) => ret_json(base, sys::Ret { ret: -1, errno: e as i32 }),
    }
}

fn hex(s: &str) -> Vec<u8> {
    s.as_bytes()
        .chunks(2)
        .map(|pair| {
            std::str::from_utf8(pair)
                .ok()
                .filter(|p| p.len() == 2)
                .and_then(|p| u8::from_str_radix(p, 16).ok())
                .unwrap_or_else(|| usage("bad hex string"))
        })
        .collect()
}

fn create_bytes(name_hex: &str, text: &str) -> Value {
    let name = hex(name_hex);
    let r = std::fs::write(OsStr::from_bytes(&name), text);
    outcome(json!({"name_hex": name_hex}), r)
}

fn emit_bytes(out_hex: &str, err_hex: &str, n: &str) {
    let (out, err, n) = (hex(out_hex), hex(err_hex), parse::<usize>(n));
    let mut so = std::io::stdout().lock();
    for _ in 0..n {
        so.write_all(&out).expect("stdout");
    }
    so.flush().expect("stdout");
    let mut se = std::io::stderr().lock();
    for _ in 0..n {
        se.write_all(&err).expect("stderr");
    }
    se.flush().expect("stderr");
}

fn forkbomb(max: &str) -> Value {
    let max: usize = parse(max);
    let mut children = Vec::new();
    let mut failure = None;
    while children.len() < max {
        let f = sys::fork();
        if f.ret == 0 {
            sys::pause_forever();
        }
        if f.ret < 0 {
            failure = Some(f.errno);
            break;
        }
        children.push(f.ret as i32);
    }
    for &c in &children {
        let pid = nix::unistd::Pid::from_raw(c);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
        let _ = nix::sys::wait::waitpid(pid, None);
    }
    match failure {
        Some(e) => json!({"forked": children.len(), "max": max, "fork_failed": true,
                          "errno": e, "err": errname(e)}),
        None => json!({"forked": children.len(), "max": max, "fork_failed": false}),
    }
}

fn alloc(mb: &str) -> Value {
    let mb: usize = parse(mb);
    let mut held: Vec<Vec<u8>> = Vec::with_capacity(mb);
    for i in 0..mb {
        // vec! of a non-zero byte writes every page.
        held.push(std::hint::black_box(vec![0xA5u8; 1 << 20]));
        if i % 16 == 0 {
            eprintln!("cloche-probe: allocated {i} MiB");
        }
    }
    json!({"allocated_mb": held.len(), "done": true})
}

fn sleep(secs: &str, ignore_term: bool) -> Value {
    let secs: f64 = parse(secs);
    if ignore_term {
        sys::ignore_signal(libc::SIGTERM);
    }
    std::thread::sleep(Duration::from_secs_f64(secs));
    json!({"slept": secs})
}

/// `sleep-bg`: runs `bg-fork` and waits for it; `bg-fork` starts `bg-child` and
/// leaves at once, so `bg-child` is orphaned (re-parented to the world's init).
fn sleep_bg(marker: &str, secs: &str) -> Value {
    let me = std::env::current_exe().unwrap_or_else(|_| "/proc/self/exe".into());
    let status = Command::new(me)
        .args(["bg-fork", marker, secs])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    match status {
        Ok(s) => json!({"started": s.success(), "marker": marker}),
        Err(e) => outcome(json!({"started": false}), Err(e)),
    }
}

fn bg_fork(marker: &str, secs: &str) {
    let me = std::env::current_exe().unwrap_or_else(|_| "/proc/self/exe".into());
    let r = Command::new(me)
        .args(["bg-child", marker, secs])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn();
    std::process::exit(if r.is_ok() { 0 } else { 1 });
}

fn bg_child(marker: &str, secs: &str) {
    let _ = nix::unistd::setsid();
    sys::ignore_signal(libc::SIGTERM);
    sys::ignore_signal(libc::SIGHUP);
    std::thread::sleep(Duration::from_secs_f64(parse(secs)));
    let _ = std::fs::write(marker, "the background child outlived its command\n");
}
