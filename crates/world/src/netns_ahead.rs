//! A world's network namespace, made ahead on a short-lived thread while
//! the parent prepares the rest (the upper, the init, the stdio).
//!
//! Creating a network namespace is the largest single cost of cloning a
//! world (about 0.6 ms of this machine's 0.9 ms `clone3`: the loopback
//! device, the per-namespace sysctl tables). `unshare(CLONE_NEWNET)` on a
//! thread of its own moves only that thread into the new namespace; the
//! thread brings `lo` up there, keeps a descriptor of it and ends. The
//! thread is joined before the world is cloned, so cloche is single-threaded
//! again when it clones (the rule for cloning worlds), and the child enters
//! the namespace with `setns` as its first step instead of being cloned
//! into a new one. What the namespace is does not change: new, empty but
//! for `lo`, owned by the initial user namespace, held only by the world.
//! If the thread cannot be started or fails, the world is cloned into a new
//! namespace as before.

use std::fs::File;
use std::io;
use std::os::fd::OwnedFd;
use std::thread::JoinHandle;

/// A network namespace on its way (and the world's user namespace, on a
/// thread of its own: `userns::UsernsAhead`).
pub struct NetnsAhead(Option<JoinHandle<io::Result<OwnedFd>>>, Option<crate::userns::UsernsAhead>);

impl NetnsAhead {
    /// Starts making the namespace.
    pub fn start() -> NetnsAhead {
        let made = std::thread::Builder::new().name("world netns".into()).spawn(|| -> io::Result<OwnedFd> {
            // SAFETY: unshare moves only this thread (which ends next) into
            // a new network namespace.
            if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
                return Err(io::Error::last_os_error());
            }
            crate::sys::loopback_up()?;
            Ok(File::open("/proc/thread-self/ns/net")?.into())
        });
        NetnsAhead(made.ok(), Some(crate::userns::UsernsAhead::start()))
    }

    /// Nothing made ahead (no thread): a world without root makes its
    /// network namespace with its clone, owned by its user namespace.
    pub fn none() -> NetnsAhead {
        NetnsAhead(None, None)
    }

    /// The network namespace, once the thread has ended (`None`: make one
    /// with the clone), and the user namespace made ahead when it is of the
    /// range `userns` (`None`: make one, or none). After this, no thread of
    /// ours is left.
    pub(crate) fn join(
        mut self,
        userns: Option<&crate::userns::IdRange>,
    ) -> (Option<OwnedFd>, Option<crate::userns::Userns>) {
        let ahead = self.1.take();
        let made = match (ahead, userns) {
            (Some(a), Some(want)) => a.join(want),
            _ => None, // dropped: joined, and what it made dropped
        };
        (self.0.take().and_then(|t| t.join().ok()?.ok()), made)
    }
}

impl Drop for NetnsAhead {
    /// Not used (the world failed before its clone): the thread is still
    /// joined, so none outlives this.
    fn drop(&mut self) {
        if let Some(t) = self.0.take() {
            let _ = t.join();
        }
    }
}
