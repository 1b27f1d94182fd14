//! Terminal probes: TIOCSTI on the world's fd 0, on /dev/tty, and on a
//! pseudo-terminal the probe opens and makes its own controlling terminal.

use crate::{errname, ret_json, sys};
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;

pub fn tiocsti() -> Value {
    let mut attempts = vec![ret_json(json!({"target": "fd0"}), sys::tiocsti(0, b'#'))];

    match std::fs::OpenOptions::new().read(true).write(true).custom_flags_noctty().open("/dev/tty") {
        Ok(tty) => {
            attempts.push(ret_json(json!({"target": "/dev/tty", "open": "ok"}), sys::tiocsti(tty.as_raw_fd(), b'#')))
        }
        Err(e) => {
            let errno = e.raw_os_error().unwrap_or(0);
            attempts.push(json!({"target": "/dev/tty", "open": "failed", "ret": -1,
                                 "errno": errno, "err": errname(errno)}));
        }
    }

    attempts.push(tiocsti_own_pty());
    json!({"attempts": attempts})
}

/// Opens a new pty, makes its slave the controlling terminal of a fresh session
/// (in a child), and tries TIOCSTI there: the case `dev.tty.legacy_tiocsti=1`
/// allows without privilege, so only a seccomp rule can refuse it.
fn tiocsti_own_pty() -> Value {
    let (mut rd, wr) = match UnixStream::pair() {
        Ok(p) => p,
        Err(e) => return json!({"target": "pty", "setup": format!("socketpair: {e}"), "ret": -1}),
    };
    let f = sys::fork();
    if f.ret == 0 {
        drop(rd);
        // Closing the pty would hang up our session: stay alive to report.
        sys::ignore_signal(libc::SIGHUP);
        let v = pty_child();
        let mut wr = wr;
        let _ = wr.write_all(v.to_string().as_bytes());
        drop(wr);
        sys::exit_now(0);
    }
    drop(wr);
    if f.ret < 0 {
        return json!({"target": "pty", "setup": format!("fork: {}", errname(f.errno)), "ret": -1});
    }
    let mut buf = String::new();
    let _ = rd.read_to_string(&mut buf);
    let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(f.ret as i32), None);
    serde_json::from_str(&buf).unwrap_or_else(|_| json!({"target": "pty", "setup": "child died", "ret": -1}))
}

fn pty_child() -> Value {
    use nix::fcntl::OFlag;
    if let Err(e) = nix::unistd::setsid() {
        return json!({"target": "pty", "setup": format!("setsid: {e}"), "ret": -1});
    }
    let master = match nix::pty::posix_openpt(OFlag::O_RDWR | OFlag::O_NOCTTY) {
        Ok(m) => m,
        Err(e) => return json!({"target": "pty", "setup": format!("posix_openpt: {e}"), "ret": -1}),
    };
    if let Err(e) = nix::pty::grantpt(&master).and_then(|_| nix::pty::unlockpt(&master)) {
        return json!({"target": "pty", "setup": format!("unlockpt: {e}"), "ret": -1});
    }
    let name = match nix::pty::ptsname_r(&master) {
        Ok(n) => n,
        Err(e) => return json!({"target": "pty", "setup": format!("ptsname: {e}"), "ret": -1}),
    };
    // Opening the slave without O_NOCTTY as a session leader makes it our controlling tty.
    let slave = match std::fs::OpenOptions::new().read(true).write(true).open(&name) {
        Ok(s) => s,
        Err(e) => return json!({"target": "pty", "setup": format!("open {name}: {e}"), "ret": -1}),
    };
    let ctty = sys::tiocsctty(slave.as_raw_fd());
    let r = sys::tiocsti(slave.as_raw_fd(), b'#');
    ret_json(json!({"target": "pty", "setup": "ok", "pty": name, "ctty_ret": ctty.ret}), r)
}

/// O_NOCTTY for OpenOptions, kept apart for legibility.
trait NoCtty {
    fn custom_flags_noctty(&mut self) -> &mut Self;
}
impl NoCtty for std::fs::OpenOptions {
    fn custom_flags_noctty(&mut self) -> &mut Self {
        use std::os::unix::fs::OpenOptionsExt;
        self.custom_flags(libc::O_NOCTTY)
    }
}
