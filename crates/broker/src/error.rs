//! Errors of the broker. Each refused operation changes nothing.

use crate::batch_file::BatchFileError;
use crate::state::{BatchState, EntryState};

#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error(transparent)]
    BatchFile(#[from] BatchFileError),
    #[error("no batch {0}")]
    NoSuchBatch(String),
    #[error("batch {batch} has no entry {entry}")]
    NoSuchEntry { batch: String, entry: String },
    #[error("batch {batch} is {state}: cannot {op}")]
    WrongState { batch: String, state: BatchState, op: &'static str },
    #[error("entry {entry} is {state}: cannot {op}")]
    WrongEntryState { entry: String, state: EntryState, op: &'static str },
    #[error("{actor} submitted batch {batch}: a review-level batch needs another approver")]
    SelfApproval { batch: String, actor: String },
    #[error("{actor}: an autonomy token cannot approve a batch; a reviewer must")]
    TokenApprover { actor: String },
    #[error("entry {entry} is denied by rule {rule}: it can never run")]
    DeniedEntry { entry: String, rule: String },
    #[error("batch {0}: nothing left to approve (every entry is denied); reject it")]
    NothingToApprove(String),
    #[error("batch {0}: the approval expired before the run; submit it again")]
    Expired(String),
    #[error("autonomy is not enabled for project {0}")]
    AutonomyOff(String),
    #[error("the autonomy token is not valid for project {0}")]
    BadToken(String),
    #[error("no agent {0}")]
    NoSuchAgent(String),
    #[error(
        "{agent}: over its budget {budget} ({used} used, at most {limit}): wait, or raise [budgets] {budget} in the policy"
    )]
    Budget { agent: String, budget: &'static str, used: u64, limit: u64 },
    #[error("invalid argument: {0}")]
    Invalid(String),
    #[error("broker database: schema version {found}; this cloche knows {known}")]
    Schema { found: i64, known: i64 },
    #[error("broker: {op}: {source}")]
    Io {
        op: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("broker audit log: {0}")]
    Audit(#[from] cloche_trace::audit::AuditError),
    #[error("broker database: {0}")]
    Db(#[from] rusqlite::Error),
}

impl BrokerError {
    pub(crate) fn io(op: &'static str) -> impl FnOnce(std::io::Error) -> BrokerError {
        move |source| BrokerError::Io { op, source }
    }
}
