//! Step timings for performance work: `CLOCHE_PROFILE=1 cloche run ...`
//! prints, on stderr, a monotonic timestamp and the time since the previous
//! mark for every step of the parent and of the world's child side (the
//! child prints just before it executes the init). Off, a mark costs one
//! atomic load.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

static ON: AtomicBool = AtomicBool::new(false);
static MARKS: Mutex<Vec<(&'static str, f64)>> = Mutex::new(Vec::new());

/// Turns profiling on when `CLOCHE_PROFILE` is set (call once, early).
pub fn init_from_env() {
    ON.store(std::env::var_os("CLOCHE_PROFILE").is_some(), Ordering::Relaxed);
}

fn now_ms() -> f64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes into the timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as f64 * 1e3 + ts.tv_nsec as f64 / 1e6
}

/// Records that `label` just finished.
pub fn mark(label: &'static str) {
    if ON.load(Ordering::Relaxed) {
        if let Ok(mut m) = MARKS.lock() {
            m.push((label, now_ms()));
        }
    }
}

/// Prints the marks recorded so far (one write) and forgets them.
pub fn dump(who: &str) {
    if !ON.load(Ordering::Relaxed) {
        return;
    }
    let Ok(mut m) = MARKS.lock() else { return };
    let mut out = String::new();
    let mut prev = None;
    for (label, t) in m.drain(..) {
        let d = prev.map(|p| t - p).unwrap_or(0.0);
        out.push_str(&format!("[{who}] {:10.3} +{d:7.3} ms  {label}\n", t % 1e6));
        prev = Some(t);
    }
    eprint!("{out}");
}
