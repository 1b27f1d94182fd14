//! The one error type of the service: each variant names the step that
//! failed; its text is the one line a front end shows (`cloche` prints it
//! after `cloche: ` and exits 125).

use std::path::PathBuf;

/// Why a use case failed. Nothing is left half-done by a refusal of the
/// request (`Invalid`, `Exposure`, ...): those are checked
/// before anything is created.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The caller may not do this (its identity, not the request, is refused).
    #[error("{0}")]
    Forbidden(String),
    /// A value of the request is refused (an option, a path, an id): the
    /// text names it.
    #[error("{0}")]
    Invalid(String),
    /// The state directory cannot be opened (or made).
    #[error("state directory {}: {source}", path.display())]
    State { path: PathBuf, source: std::io::Error },
    /// A policy: its file, the policy store, a stored version, a binding.
    #[error("{0}")]
    Policy(String),
    /// The seccomp profile of a policy cannot be compiled.
    #[error("seccomp profile {origin}: {reason}")]
    Seccomp { origin: String, reason: String },
    /// The network a world would get: a destination, the upstream resolver.
    #[error("{0}")]
    Network(String),
    /// The world's spec is inconsistent.
    #[error("{0}")]
    Spec(String),
    /// A project, cwd or exposure is not allowed (a mask, a secret, `/`).
    #[error("{0}")]
    Exposure(String),
    /// A batch's project: not a directory, moved, not canonical.
    #[error("{0}")]
    Project(String),
    /// A batch file cannot be read or parsed.
    #[error("{0}")]
    BatchFile(String),
    /// The broker refused or failed (state machine, approvals, database).
    #[error(transparent)]
    Broker(#[from] cloche_broker::BrokerError),
    /// The world engine failed (launching, running, finishing a world).
    #[error(transparent)]
    World(#[from] cloche_world::WorldError),
    /// A batch's world could not be started.
    #[error("world: {0}")]
    WorldStart(cloche_world::WorldError),
    /// A world's records (per-entry paths, host bases) cannot be read or written.
    #[error("world records: {0}")]
    Records(String),
    /// The spans file.
    #[error("{0}")]
    Spans(String),
    /// No such kept world or batch, or a batch without a world.
    #[error("{0}")]
    NotFound(String),
    /// The world is in use (still running).
    #[error("{0}")]
    Busy(String),
    /// A kept world's fs_diff cannot be computed.
    #[error("{0}")]
    Diff(String),
    /// A commit cannot be prepared (the batch's state, the world's lock, the plan).
    #[error("{0}")]
    Commit(String),
    /// A kept world cannot be removed.
    #[error("{0}")]
    Discard(String),
}

/// The service's results.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Front ends that report errors as one line of text.
impl From<Error> for String {
    fn from(e: Error) -> String {
        e.to_string()
    }
}

/// An I/O error without Rust's ` (os error N)` suffix.
pub fn io_reason(e: &std::io::Error) -> String {
    let s = e.to_string();
    match s.find(" (os error") {
        Some(i) => s[..i].to_string(),
        None => s,
    }
}
