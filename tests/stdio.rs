//! A world's stdin, stdout and stderr are pipes of its own: no host file,
//! directory, device or terminal reaches it through a descriptor, and
//! reopening `/proc/self/fd/N` gives nothing of the host's. And the streams
//! still behave as the caller's own: data (binary, large), EOF, order of
//! stdout and stderr on one file, a file's position, SIGPIPE, exit codes.
//!
//! Every check that a host object is unreachable fails when the world is
//! handed the caller's descriptors (cloche before the relay).

use crate::common;

use std::fs;
use std::io::Read;
use std::os::fd::AsRawFd;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// `cloche run OPTS -- CMD` started by a host shell with `redirs` applied
/// (e.g. `<F >>L 2>>E`): the world's stdio are then those host files.
fn run_redirected(fx: &Fixture, redirs: &str, script: &str) -> Outcome {
    let mut c = Command::new("/bin/sh");
    c.current_dir(fx.dir()).env("CLOCHE_STATE_DIR", fx.state.path()).stdin(Stdio::null());
    c.arg("-c").arg(format!("exec \"$@\" {redirs}")).arg("sh").arg(cloche_bin());
    c.args(["run", "--", "/bin/sh", "-c", script]);
    run_cmd(&mut c, DEADLINE)
}

/// What each of the world's fds 0, 1 and 2 is, as `readlink` says (to stderr
/// when stdout is taken).
const SHOW_FDS: &str = "for n in 0 1 2; do echo \"fd$n=$(readlink /proc/self/fd/$n)\"; done";

#[test]
fn stdin_from_a_host_file_cannot_be_written_through() {
    let fx = Fixture::new();
    let f = fx.out.path().join("input.txt");
    fs::write(&f, b"original\n").unwrap();
    let script = format!(
        "cat; echo X > /proc/self/fd/0; echo Y >> /proc/self/fd/0; exec 3<>/proc/self/fd/0 && echo Z >&3; {SHOW_FDS}"
    );
    let o = run_redirected(&fx, &format!("<'{}'", f.display()), &script);
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(out.starts_with("original\n"), "the world reads its stdin\n{}", o.describe());
    assert_eq!(fs::read(&f).unwrap(), b"original\n", "the host file was changed through fd 0\n{}", o.describe());
    assert!(out.contains("fd0=pipe:"), "stdin must be a pipe\n{}", o.describe());
    assert!(out.contains("fd1=pipe:") && out.contains("fd2=pipe:"), "stdout/stderr must be pipes\n{}", o.describe());
    fx.finish();
}

#[test]
fn stdout_and_stderr_logs_cannot_be_read_back_or_truncated() {
    let fx = Fixture::new();
    let log = fx.out.path().join("out.log");
    let errlog = fx.out.path().join("err.log");
    fs::write(&log, b"earlier-out-secret\n").unwrap();
    fs::write(&errlog, b"earlier-err-secret\n").unwrap();
    // Read what the logs held (non-blocking: a pipe of one's own is empty),
    // then reopen them with O_TRUNC and write.
    let script = "a=$(dd if=/proc/self/fd/1 iflag=nonblock bs=64k count=1 2>/dev/null); \
                  b=$(dd if=/proc/self/fd/2 iflag=nonblock bs=64k count=1 2>/dev/null); \
                  echo \"read-back:[$a][$b]\"; echo t1 > /proc/self/fd/1; echo t2 > /proc/self/fd/2; \
                  echo after; echo after-err >&2";
    let o = run_redirected(&fx, &format!(">>'{}' 2>>'{}'", log.display(), errlog.display()), script);
    o.expect_code(0);
    let out = fs::read_to_string(&log).unwrap();
    let err = fs::read_to_string(&errlog).unwrap();
    assert!(out.starts_with("earlier-out-secret\n"), "stdout's log was truncated: {out:?}");
    assert!(err.starts_with("earlier-err-secret\n"), "stderr's log was truncated: {err:?}");
    assert!(out.contains("read-back:[][]"), "the world read a log back: {out:?}");
    assert!(!out.contains("read-back:[earlier"), "the world read a log back: {out:?}");
    assert!(out.ends_with("after\n") && err.ends_with("after-err\n"), "output is appended: {out:?} {err:?}");
    fx.finish();
}

/// Puts the host's /dev/null back as it was (a world given the caller's own
/// /dev/null could chmod it: uid 0 owns it).
struct DevNullMode(u32);
impl Drop for DevNullMode {
    fn drop(&mut self) {
        use std::os::unix::fs::PermissionsExt;
        let _ = fs::set_permissions("/dev/null", fs::Permissions::from_mode(self.0));
    }
}

#[test]
fn a_callers_dev_null_is_the_worlds_own() {
    use std::os::unix::fs::PermissionsExt;
    let fx = Fixture::new();
    let mode = fs::metadata("/dev/null").unwrap().permissions().mode() & 0o7777;
    let _restore = DevNullMode(mode);
    let script = "chmod 600 /proc/self/fd/0 /proc/self/fd/1 2>&1; touch -d 2001-01-01 /proc/self/fd/1; \
                  exec 3>&1; readlink /proc/self/fd/0 /proc/self/fd/3 >&2";
    let o = run_redirected(&fx, "</dev/null >/dev/null", script);
    let now = fs::metadata("/dev/null").unwrap();
    assert_eq!(now.permissions().mode() & 0o7777, mode, "the world chmod'ed the host's /dev/null\n{}", o.describe());
    assert!(now.modified().unwrap() > std::time::UNIX_EPOCH + Duration::from_secs(1_000_000_000));
    assert_eq!(String::from_utf8_lossy(&o.stderr), "/dev/null\n/dev/null\n", "{}", o.describe());
    fx.finish();
}

#[test]
fn a_host_directory_as_stdin_is_not_reachable() {
    let fx = Fixture::new();
    // A directory the world cannot see by path (outside its cwd, under the
    // state dir's sibling out/), with a file name the world must not learn.
    let dir = fx.out.path().join("hidden-dir");
    fs::create_dir_all(&dir).unwrap();
    fs::write(dir.join("secret-name-7f3a"), b"s").unwrap();
    let mut c = fx.command();
    c.stdin(fs::File::open(&dir).unwrap());
    let o = fx.run_with(c, &[] as &[&str], &["/bin/sh", "-c", "ls -a /proc/self/fd/0/ 2>&1; readlink /proc/self/fd/0"]);
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(!out.contains("secret-name-7f3a"), "the world listed a host directory through fd 0\n{}", o.describe());
    assert!(out.contains("pipe:"), "stdin must be a pipe\n{}", o.describe());
    fx.finish();
}

#[test]
fn the_callers_terminal_is_never_the_worlds() {
    let fx = Fixture::new();
    let pty = nix::pty::openpty(None, None).expect("openpty");
    let before = nix::sys::termios::tcgetattr(&pty.slave).unwrap();
    assert!(before.local_flags.contains(nix::sys::termios::LocalFlags::ECHO), "a new pty echoes");
    let script = format!("stty -echo raw 2>/dev/null; echo stty=$?; tty; {SHOW_FDS}; echo hello-terminal");
    let mut c = fx.command();
    let slave = || Stdio::from(pty.slave.try_clone().unwrap());
    c.args(["run", "--", "/bin/sh", "-c", &script]).stdin(slave()).stdout(slave()).stderr(slave());
    let mut child = c.spawn().expect("start cloche");
    // Read the master until the world's last line (it never blocks on a full pty).
    let mut master = fs::File::from(pty.master);
    let mut out = Vec::new();
    let start = Instant::now();
    let status = loop {
        let mut buf = [0u8; 4096];
        let mut pfd = libc::pollfd { fd: master.as_raw_fd(), events: libc::POLLIN, revents: 0 };
        // SAFETY: one valid pollfd.
        if unsafe { libc::poll(&mut pfd, 1, 50) } > 0 {
            if let Ok(n) = master.read(&mut buf) {
                out.extend_from_slice(&buf[..n]);
            }
        }
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if start.elapsed() > DEADLINE {
            let _ = child.kill();
            panic!("cloche on a pty did not finish: {}", String::from_utf8_lossy(&out));
        }
    };
    std::thread::sleep(Duration::from_millis(50));
    let mut buf = [0u8; 4096];
    let mut pfd = libc::pollfd { fd: master.as_raw_fd(), events: libc::POLLIN, revents: 0 };
    // SAFETY: one valid pollfd.
    while unsafe { libc::poll(&mut pfd, 1, 0) } > 0 {
        match master.read(&mut buf) {
            Ok(n) if n > 0 => out.extend_from_slice(&buf[..n]),
            _ => break,
        }
    }
    let text = String::from_utf8_lossy(&out).into_owned();
    let after = nix::sys::termios::tcgetattr(&pty.slave).unwrap();
    assert_eq!(status.code(), Some(0), "{text}");
    assert!(text.contains("hello-terminal"), "the world's output reaches the terminal: {text:?}");
    assert!(text.contains("not a tty"), "the world must have no terminal: {text:?}");
    assert!(!text.contains("stty=0"), "stty changed a terminal: {text:?}");
    for n in 0..3 {
        assert!(text.contains(&format!("fd{n}=pipe:")), "fd {n} must be a pipe: {text:?}");
    }
    assert_eq!(after.local_flags, before.local_flags, "the caller's terminal settings changed");
    assert_eq!(after.input_flags, before.input_flags, "the caller's terminal settings changed");
    assert_eq!(after.output_flags, before.output_flags, "the caller's terminal settings changed");
    fx.finish();
}

#[test]
fn streams_keep_their_meaning() {
    let fx = Fixture::new();
    // Large binary data through stdin and out of stdout, byte for byte.
    let data: Vec<u8> = (0..24u32 << 20).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect();
    let src = fx.out.path().join("blob");
    fs::write(&src, &data).unwrap();
    let mut c = fx.command();
    c.stdin(fs::File::open(&src).unwrap());
    let o = fx.run_with(c, &[] as &[&str], &["cat"]);
    o.expect_code(0);
    assert!(o.stdout == data, "24 MiB through stdin and stdout: {} bytes back", o.stdout.len());

    // stdout and stderr on one file keep their order exactly.
    let script = "for i in 1 2 3 4 5 6 7 8; do echo out$i; echo err$i >&2; done";
    let both = fx.out.path().join("both.log");
    let o = run_redirected(&fx, &format!(">'{}' 2>&1", both.display()), script);
    o.expect_code(0);
    let want: String = (1..=8).map(|i| format!("out{i}\nerr{i}\n")).collect();
    assert_eq!(fs::read_to_string(&both).unwrap(), want, "order on one file\n{}", o.describe());

    // A file's position moves past what the world read, and no further: a
    // `while read` loop around cloche keeps its place.
    let lines = fx.out.path().join("lines");
    fs::write(&lines, b"a\nb\nc\nd\n").unwrap();
    let script = format!(
        "while read l; do \"$0\" run -- sh -c \"echo got $l; read x; echo then \\$x\"; done <'{}'",
        lines.display()
    );
    let mut c = Command::new("/bin/sh");
    c.current_dir(fx.dir()).env("CLOCHE_STATE_DIR", fx.state.path()).stdin(Stdio::null());
    c.arg("-c").arg(script).arg(cloche_bin());
    let o = run_cmd(&mut c, DEADLINE);
    o.expect_code(0);
    assert_eq!(String::from_utf8_lossy(&o.stdout), "got a\nthen b\ngot c\nthen d\n", "{}", o.describe());

    // EOF from a pipe, and SIGPIPE when the reader is gone.
    let mut c = Command::new("/bin/sh");
    c.current_dir(fx.dir()).env("CLOCHE_STATE_DIR", fx.state.path()).stdin(Stdio::null());
    c.arg("-c").arg("printf 'x\\ny\\n' | \"$0\" run -- wc -l").arg(cloche_bin());
    let o = run_cmd(&mut c, DEADLINE);
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), "2", "EOF of a pipe\n{}", o.describe());
    let mut c = Command::new("/bin/bash");
    c.current_dir(fx.dir()).env("CLOCHE_STATE_DIR", fx.state.path()).stdin(Stdio::null());
    c.arg("-c").arg("\"$0\" run -- yes | head -c 2 >/dev/null; echo ${PIPESTATUS[0]}").arg(cloche_bin());
    let o = run_cmd(&mut c, DEADLINE);
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), "141", "yes must die of SIGPIPE\n{}", o.describe());

    // Output that cannot be delivered (a full disk) is never a success.
    let o = run_redirected(&fx, ">/dev/full", "echo hi");
    o.expect_code(125);
    assert!(String::from_utf8_lossy(&o.stderr).contains("cut short: stdout"), "{}", o.describe());
    fx.finish();
}

#[test]
fn a_timed_out_world_does_not_wait_for_a_stalled_reader() {
    let fx = Fixture::new();
    // cloche's stdout is a pipe nobody reads: the world fills it and its own
    // pipe, times out, and cloche must still end at once with 124 (what the
    // world wrote and nobody took is dropped, not waited for).
    let (_keep_r, w) = nix::unistd::pipe().unwrap();
    let mut c = fx.command();
    c.args(["run", "--timeout", "1", "--", "yes"]).stdout(Stdio::from(w)).stderr(Stdio::null());
    let t = Instant::now();
    let mut child = c.spawn().unwrap();
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if t.elapsed() > Duration::from_secs(20) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("cloche still waits for a reader 20 s after its world timed out");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(status.code(), Some(124));
    assert!(t.elapsed() < Duration::from_secs(8), "took {:?}", t.elapsed());
    fx.finish();
}

/// A terminal the test drives: cloche runs on its slave side (as the
/// session leader, as under a real terminal), the test reads and types on
/// the master.
struct Term {
    master: fs::File,
    slave: std::os::fd::OwnedFd,
    child: std::process::Child,
    seen: Vec<u8>,
}

impl Term {
    fn start(fx: &Fixture, args: &[&str], rows: u16, cols: u16) -> Term {
        use std::os::unix::process::CommandExt;
        let ws = nix::pty::Winsize { ws_row: rows, ws_col: cols, ws_xpixel: 0, ws_ypixel: 0 };
        let pty = nix::pty::openpty(Some(&ws), None).expect("openpty");
        let mut c = fx.command();
        let slave = || Stdio::from(pty.slave.try_clone().unwrap());
        c.args(args).stdin(slave()).stdout(slave()).stderr(slave());
        // SAFETY: only async-signal-safe calls between fork and exec.
        unsafe {
            c.pre_exec(|| {
                libc::setsid();
                libc::ioctl(0, libc::TIOCSCTTY as _, 0);
                Ok(())
            });
        }
        let child = c.spawn().expect("start cloche on a pty");
        Term { master: fs::File::from(pty.master), slave: pty.slave, child, seen: Vec::new() }
    }

    /// Reads until `what` has been seen (after everything seen so far
    /// was consumed by earlier calls), or panics after 10 s.
    fn expect(&mut self, what: &str) {
        let start = Instant::now();
        loop {
            if let Some(i) = String::from_utf8_lossy(&self.seen).find(what) {
                self.seen.drain(..i + what.len());
                return;
            }
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "waited for {what:?}; the terminal showed {:?}",
                String::from_utf8_lossy(&self.seen)
            );
            let mut pfd = libc::pollfd { fd: self.master.as_raw_fd(), events: libc::POLLIN, revents: 0 };
            let mut buf = [0u8; 4096];
            // SAFETY: one valid pollfd.
            if unsafe { libc::poll(&mut pfd, 1, 100) } > 0 {
                if let Ok(n) = self.master.read(&mut buf) {
                    self.seen.extend_from_slice(&buf[..n]);
                }
            }
        }
    }

    fn send(&mut self, keys: &str) {
        use std::io::Write;
        self.master.write_all(keys.as_bytes()).unwrap();
    }

    fn wait(&mut self) -> std::process::ExitStatus {
        let start = Instant::now();
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                return st;
            }
            // Keep the terminal drained so cloche never blocks writing.
            let mut buf = [0u8; 4096];
            let mut pfd = libc::pollfd { fd: self.master.as_raw_fd(), events: libc::POLLIN, revents: 0 };
            // SAFETY: one valid pollfd.
            if unsafe { libc::poll(&mut pfd, 1, 20) } > 0 {
                if let Ok(n) = self.master.read(&mut buf) {
                    self.seen.extend_from_slice(&buf[..n]);
                }
            }
            if start.elapsed() > DEADLINE {
                let _ = self.child.kill();
                panic!("cloche on a pty did not end: {:?}", String::from_utf8_lossy(&self.seen));
            }
        }
    }
}

impl Drop for Term {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn with_t_the_world_has_a_terminal_of_its_own_with_job_control() {
    let fx = Fixture::new();
    let mut t = Term::start(&fx, &["run", "-t", "--", "bash", "--norc", "--noprofile", "-i"], 33, 111);
    let before = nix::sys::termios::tcgetattr(&t.slave).unwrap();
    t.send("PS1='P''> '; stty size; tty; echo fds $(readlink /proc/self/fd/0)\n");
    t.expect("33 111");
    t.expect("/dev/pts/0");
    t.expect("fds /dev/pts/0");
    // The caller's terminal is raw while the world runs.
    let during = nix::sys::termios::tcgetattr(&t.slave).unwrap();
    assert!(!during.local_flags.contains(nix::sys::termios::LocalFlags::ICANON), "raw while the world runs");
    // ^C reaches only the foreground job: the shell lives on.
    t.send("sleep 100\n");
    std::thread::sleep(Duration::from_millis(400));
    t.send("\x03");
    t.expect("P> ");
    t.send("echo alive $?\n");
    t.expect("alive 130");
    // ^Z stops the foreground job; the shell has job control.
    t.send("sleep 100\n");
    std::thread::sleep(Duration::from_millis(400));
    t.send("\x1a");
    t.expect("Stopped");
    t.send("kill %1; echo jobs-done\n");
    t.expect("jobs-done");
    // The window size follows the caller's.
    let ws = nix::pty::Winsize { ws_row: 40, ws_col: 90, ws_xpixel: 0, ws_ypixel: 0 };
    // SAFETY: TIOCSWINSZ reads one winsize; the kernel signals SIGWINCH to
    // the terminal's foreground group (cloche).
    unsafe { libc::ioctl(t.slave.as_raw_fd(), libc::TIOCSWINSZ as _, &ws) };
    std::thread::sleep(Duration::from_millis(200));
    t.send("stty size\n");
    t.expect("40 90");
    t.send("exit 3\n");
    assert_eq!(t.wait().code(), Some(3));
    let after = nix::sys::termios::tcgetattr(&t.slave).unwrap();
    assert_eq!(after.local_flags, before.local_flags, "the caller's terminal settings are restored");
    assert_eq!(after.input_flags, before.input_flags);
    drop(t);
    fx.finish();
}

#[test]
fn the_callers_terminal_is_restored_however_the_world_ends() {
    let fx = Fixture::new();
    // Killed by its timeout, in the middle of changing its own terminal.
    let mut t =
        Term::start(&fx, &["run", "-t", "--timeout", "1", "--", "sh", "-c", "stty -echo -icanon; sleep 30"], 24, 80);
    let before = nix::sys::termios::tcgetattr(&t.slave).unwrap();
    assert_eq!(t.wait().code(), Some(124));
    let after = nix::sys::termios::tcgetattr(&t.slave).unwrap();
    assert_eq!(after.local_flags, before.local_flags, "the caller's terminal settings are restored");
    // Stopped by SIGTERM to cloche.
    let mut t = Term::start(&fx, &["run", "-t", "--", "sh", "-c", "echo started; sleep 30"], 24, 80);
    t.expect("started");
    // SAFETY: kill(2) of the cloche we started.
    unsafe { libc::kill(t.child.id() as i32, libc::SIGTERM) };
    let st = t.wait();
    assert!(st.code().is_some(), "cloche handles SIGTERM: {st:?}");
    let after = nix::sys::termios::tcgetattr(&t.slave).unwrap();
    assert_eq!(after.local_flags, before.local_flags, "the caller's terminal settings are restored");
    drop(t);
    fx.finish();
}
