//! Clocks, random ids, hashes, and who is running a batch.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sha2::{Digest, Sha256};

/// Milliseconds since the Unix epoch. Injectable so tests can move time.
pub trait Clock: Send + Sync {
    fn now_ms(&self) -> i64;
}

/// The system clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
    }
}

/// A clock that moves only when told to; clones share the time.
#[derive(Debug, Clone, Default)]
pub struct ManualClock(Arc<AtomicI64>);

impl ManualClock {
    pub fn new(now_ms: i64) -> ManualClock {
        ManualClock(Arc::new(AtomicI64::new(now_ms)))
    }

    pub fn advance(&self, by: Duration) {
        self.0.fetch_add(by.as_millis() as i64, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }
}

/// `ms` since the epoch as RFC 3339 UTC with milliseconds.
pub fn rfc3339(ms: i64) -> String {
    cloche_trace::time::rfc3339_millis(UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64))
}

/// `n` random bytes from getrandom(2), as lowercase hex.
pub fn random_hex(n: usize) -> std::io::Result<String> {
    let mut buf = vec![0u8; n];
    let mut filled = 0;
    while filled < n {
        // SAFETY: the pointer and length describe the unfilled tail of `buf`.
        let r = unsafe { libc::getrandom(buf[filled..].as_mut_ptr().cast(), n - filled, 0) };
        if r < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        filled += r as usize;
    }
    Ok(hex(&buf))
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub fn sha256_hex(data: &[u8]) -> String {
    hex(&Sha256::digest(data))
}

/// Equality that does not stop at the first difference.
pub fn same(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.bytes().zip(b.bytes()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Identifies this process across pid reuse and reboots:
/// `pid:<pid>:<start time in ticks>:<boot id>`.
pub fn runner_tag() -> String {
    runner_tag_of(std::process::id()).unwrap_or_else(|| format!("pid:{}::{}", std::process::id(), boot_id()))
}

/// The [`runner_tag`] of process `pid`, while it runs.
pub fn runner_tag_of(pid: u32) -> Option<String> {
    let stat = Stat::of(pid)?;
    Some(format!("pid:{pid}:{}:{}", stat.start, boot_id()))
}

/// Whether the process named by a [`runner_tag`] still runs: same boot,
/// same pid, same start time (a pid reused since is another process), and
/// not a zombie (a runner that died, waiting for its parent to reap it,
/// runs nothing: a job killed with `kill -9` is one until its spawner
/// reaps it). An unknown or unreadable tag counts as gone.
pub fn runner_alive(tag: Option<&str>) -> bool {
    let Some(rest) = tag.and_then(|t| t.strip_prefix("pid:")) else { return false };
    let mut parts = rest.splitn(3, ':');
    let (Some(pid), Some(start), Some(boot)) = (parts.next(), parts.next(), parts.next()) else { return false };
    let Ok(pid) = pid.parse::<u32>() else { return false };
    boot == boot_id() && Stat::of(pid).is_some_and(|s| s.start.to_string() == start && !matches!(s.state, 'Z' | 'X'))
}

fn boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id").map(|s| s.trim().to_string()).unwrap_or_default()
}

/// Fields 3 (state) and 22 (start time) of /proc/<pid>/stat (read after
/// the command, which may hold spaces and parentheses).
struct Stat {
    state: char,
    start: u64,
}

impl Stat {
    fn of(pid: u32) -> Option<Stat> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        let mut after = stat[stat.rfind(')')? + 1..].split_whitespace();
        let state = after.next()?.chars().next()?;
        let start = after.nth(18)?.parse().ok()?;
        Some(Stat { state, start })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_and_tags() {
        let a = random_hex(8).unwrap();
        assert_eq!(a.len(), 16);
        assert_ne!(a, random_hex(8).unwrap());
        assert!(runner_alive(Some(&runner_tag())));
        assert!(!runner_alive(None) && !runner_alive(Some("pid:1:0:nope")) && !runner_alive(Some("x")));
        assert_eq!(runner_tag_of(std::process::id()), Some(runner_tag()));
        assert!(same("abc", "abc") && !same("abc", "abd") && !same("ab", "abc"));
        assert_eq!(rfc3339(1_000), "1970-01-01T00:00:01.000Z");
        let c = ManualClock::new(5);
        c.advance(Duration::from_secs(1));
        assert_eq!(c.now_ms(), 1005);
    }

    /// A runner that died but is not reaped yet (a zombie) is gone, and so
    /// is one whose pid now names another process (another start time).
    #[test]
    fn a_zombie_or_a_reused_pid_is_no_runner() {
        let mut child = std::process::Command::new("sleep").arg("30").spawn().unwrap();
        let tag = runner_tag_of(child.id()).unwrap();
        assert!(runner_alive(Some(&tag)));
        // SAFETY: kill with a pid and a signal.
        unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
        // Dead, not reaped: wait until the kernel says so (state Z).
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while Stat::of(child.id()).is_some_and(|s| s.state != 'Z') {
            assert!(std::time::Instant::now() < deadline, "the child never died");
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(Stat::of(child.id()).is_some(), "still there, a zombie");
        assert!(!runner_alive(Some(&tag)), "a zombie runs nothing");
        child.wait().unwrap();
        assert!(!runner_alive(Some(&tag)));
        // The same pid with another start time: another process.
        let mine = runner_tag();
        let other = mine.replacen(&format!(":{}:", Stat::of(std::process::id()).unwrap().start), ":1:", 1);
        assert_ne!(mine, other);
        assert!(!runner_alive(Some(&other)));
    }
}
