//! cloche-service: the use cases of cloche, between the front ends (the
//! `cloche` command; the daemon to come) and the engines (world, broker,
//! policy, review, trace, net).
//!
//! A front end parses its input into typed requests, opens a [`Context`]
//! and calls the functions here; it prints what they return. Every failure
//! is an [`Error`] naming its step; its text is the line `cloche` prints.
//!
//! - [`run`]: a one-command world: [`RunRequest`] → `Spec` → [`Report`];
//! - [`batch`], [`batch_run`]: batches submitted with their project's
//!   policy, cancelled, run entry by entry (a [`batch_run::BatchObserver`]
//!   hears every step and the entries' output);
//! - [`review`], [`commit`]: what a kept world changed, for a reviewer, and
//!   its audited commit with a typed result;
//! - [`worlds`]: kept worlds listed, discarded, the retention limit;
//! - [`project`], [`policy_store`]: projects judged against the masks of
//!   their world, the policy bound to each;
//! - [`net`], [`values`]: the grammar of a request's values (`--net`,
//!   sizes, durations);
//! - [`doctor`]: what this machine offers;
//! - [`schema`] and [`output`]: the documents returned and their JSON Schemas.
//!
//! Nothing here starts a thread before a world is cloned: the world engine
//! forks and must be driven from a single-threaded process.

pub mod agents;
pub mod batch;
pub mod batch_net;
pub mod batch_run;
pub mod classifier;
pub mod commit;
mod commit_owner;
pub mod context;
pub mod doctor;
mod doctor_user;
pub mod error;
pub mod host_user;
pub mod ingest;
pub mod net;
pub mod output;
pub mod policy_store;
pub mod premade;
pub mod project;
pub mod report;
pub mod review;
pub mod rootless;
pub mod run;
pub mod schema;
pub mod session;
pub mod values;
pub mod worlds;

pub use context::{uid_actor, Context, Options};
pub use error::{Error, Result};
pub use host_user::HostUser;
pub use report::Report;
pub use run::{PreparedRun, RunOutcome, RunRequest};
