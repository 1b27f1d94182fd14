//! cloche-broker: batches, their decisions and approvals, and the state
//! machine that takes them from submission to a finished run, persisted in
//! SQLite (`<state>/broker.db`) with every change in the audit log
//! (`<state>/audit.jsonl`) before it commits. See `docs/broker.md`.
//!
//! The broker does not run anything: an engine claims an approved batch
//! ([`Broker::start_run`]) and reports each entry ([`Broker::entry_started`],
//! [`Broker::entry_finished`], [`Broker::finish_run`]). Decisions come from a
//! [`Classifier`] given at [`Broker::open`].

mod agents;
pub mod batch_file;
mod broker;
mod db;
pub mod decision;
mod error;
mod history;
mod review;
mod run;
pub mod state;
mod util;
mod view;

pub use agents::{check_name as check_agent_name, AgentStatus, AgentView, Budgets, SubmitterUsage, Usage};
pub use batch_file::{normalize_abs, BatchFile, BatchFileError, EntrySpec, Format, Limits};
pub use broker::{Broker, Config, DEFAULT_APPROVAL_TTL, POLICY_ACTOR};
pub use db::SCHEMA_VERSION;
pub use decision::{categorize, Category, Classifier, Decision, Effect};
pub use error::BrokerError;
pub use history::{CommandStats, HistoryItem};
pub use review::REVIEWABLE;
pub use run::{EntryResult, RunnableEntry};
pub use state::{BatchState, EntryState};
pub use util::{runner_alive, runner_tag, runner_tag_of, Clock, ManualClock, SystemClock};
pub use view::{BatchSummary, BatchView, EntryView, ListFilter};
