//! Typed errors of the engine. Each variant names the step that failed.

use crate::cgroup::CgroupError;
use crate::spec::SpecError;

#[derive(Debug, thiserror::Error)]
pub enum WorldError {
    #[error("invalid request: {0}")]
    Spec(#[from] SpecError),
    #[error("invalid request: {0}")]
    Invalid(String),
    /// The cwd or an exposure would show what a mask hides.
    #[error(transparent)]
    Refused(#[from] crate::exposure::Refusal),
    #[error("required layer unavailable: {0}")]
    LayerUnavailable(String),
    #[error("state directory: {what}: {source}")]
    State { what: &'static str, source: std::io::Error },
    #[error(transparent)]
    Cgroup(#[from] CgroupError),
    #[error("world filesystem (upper/overlay): {0}")]
    Scratch(std::io::Error),
    /// The disk pool holding worlds' uppers (`pool/`).
    #[error("disk pool: {0}")]
    Pool(#[from] crate::pool::PoolError),
    #[error("cloche-init: {0}")]
    Init(String),
    #[error("seccomp: {0}")]
    Seccomp(String),
    #[error("the world's stdin/stdout/stderr pipes: {0}")]
    Stdio(std::io::Error),
    #[error("clone3 (namespaces): {0}")]
    Clone(std::io::Error),
    #[error("{step}: {source}")]
    Sys { step: &'static str, source: std::io::Error },
    /// A step inside the world failed before the command started.
    #[error("network: {0}")]
    Network(String),
    #[error("world setup: {0}")]
    Child(String),
    #[error("waiting for the world: {0}")]
    Wait(std::io::Error),
    #[error("fs_diff: {0}")]
    Diff(crate::diff::DiffError),
    /// A kept world cannot be continued (or forked): missing, in use, or
    /// the run would differ from it in what a continuation keeps.
    #[error(transparent)]
    Kept(#[from] crate::continued::KeptError),
}

impl WorldError {
    pub(crate) fn state(what: &'static str) -> impl FnOnce(std::io::Error) -> WorldError {
        move |source| WorldError::State { what, source }
    }
    pub(crate) fn nix(step: &'static str) -> impl FnOnce(nix::Error) -> WorldError {
        move |e| WorldError::Sys { step, source: std::io::Error::from_raw_os_error(e as i32) }
    }
}
