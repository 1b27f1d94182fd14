//! What a restart of the machine does to cloche's state, as far as a test
//! can do it: every mount under the state dir gone (a kept world's tmpfs,
//! the disk pool), their loop devices detached, `/run/cloche` emptied (the
//! liveness and network locks). Files of the state dir stay, as on a disk.

use crate::*;
use std::fs;
use std::time::Instant;

/// `/run/cloche`: what cloche keeps in `/run`, lost at a reboot.
pub const RUN_DIR: &str = "/run/cloche";

/// Takes away what a reboot takes from this fixture's state dir, and
/// empties `/run/cloche` once no other cloche on the machine holds a world
/// there (their locks would be lost with it).
pub fn simulate_reboot(fx: &Fixture) {
    let state = fx.state.path();
    let mut under: Vec<PathBuf> = mount_points().into_iter().filter(|m| m.starts_with(state)).collect();
    under.sort_by_key(|m| std::cmp::Reverse(m.as_os_str().len()));
    under.dedup();
    for m in &under {
        let c = std::ffi::CString::new(m.as_os_str().as_bytes()).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        // SAFETY: a valid NUL-terminated path.
        while unsafe { libc::umount2(c.as_ptr(), 0) } != 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EINVAL) && !mount_points().contains(m) {
                break; // covered mounts of one path: gone with the first
            }
            assert!(Instant::now() < deadline, "cannot unmount {}: {e}", m.display());
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    assert!(!mount_points().iter().any(|m| m.starts_with(state)), "mounts left under {}", state.display());
    // The pool's loop device detaches itself when its filesystem is
    // released (the last world's mount namespace may still hold it a
    // moment).
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let bound = loops_backed_under(state);
        if bound.is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "loop devices still bound to the state dir: {bound:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
    empty_run_dir();
}

/// Loop devices whose backing file lies in `dir`.
pub fn loops_backed_under(dir: &Path) -> Vec<String> {
    let mut v = Vec::new();
    for e in fs::read_dir("/sys/block").into_iter().flatten().flatten() {
        if let Ok(b) = fs::read_to_string(e.path().join("loop/backing_file")) {
            if Path::new(b.trim()).starts_with(dir) {
                v.push(format!("{} -> {}", e.file_name().to_string_lossy(), b.trim()));
            }
        }
    }
    v
}

/// Whether some process holds a lock on `path`: an OFD or POSIX lock on
/// any byte (live.lock), or a flock (net.lock).
fn locked(path: &Path) -> bool {
    use std::os::fd::AsRawFd;
    let Ok(f) = fs::OpenOptions::new().read(true).write(true).open(path) else { return false };
    // SAFETY: flock is plain data; zeroed is valid (l_pid 0 for OFD locks).
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = libc::F_WRLCK as i16;
    fl.l_whence = libc::SEEK_SET as i16;
    fl.l_len = 0; // the whole file
                  // SAFETY: fcntl with a pointer to our flock.
    let byte =
        unsafe { libc::fcntl(f.as_raw_fd(), libc::F_OFD_GETLK, &mut fl) } == 0 && fl.l_type != libc::F_UNLCK as i16;
    // SAFETY: flock on a descriptor we own, released when it closes.
    let whole = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0;
    byte || whole
}

/// Empties `/run/cloche` as a reboot does, once no lock in it is held
/// (waits for other cloche runs on the machine to end).
fn empty_run_dir() {
    let run = Path::new(RUN_DIR);
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let busy: Vec<PathBuf> =
            fs::read_dir(run).into_iter().flatten().flatten().map(|e| e.path()).filter(|p| locked(p)).collect();
        if busy.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "another cloche on this machine holds {busy:?}: a reboot cannot be simulated without breaking it"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    for e in fs::read_dir(run).into_iter().flatten().flatten() {
        let _ = fs::remove_file(e.path());
    }
    let _ = fs::remove_dir(run);
}
