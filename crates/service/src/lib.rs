//! cloche-service: the use cases of cloche, between the front ends (the
//! `cloche` command; the daemon to come) and the engines (world, broker,
//! policy, review, trace, net).
//!
//! A front end parses its input into typed requests, opens a [`Context`]
//! and calls the functions here; it prints what they return. Every failure
//! is an [`Error`] naming its step; its text is the line `cloche` prints.
//!
//! - [`run`]: a one-command world: [`RunRequest`] → `Spec` → [`Report`];
//! - [`net`]: the network argument grammar (`none`, `allow=DEST,...`);
//! - [`project`]: projects and cwds judged against the masks of their world;
//! - [`schema`] and [`output`]: the documents returned and their JSON Schemas.
//!
//! Nothing here starts a thread before a world is cloned: the world engine
//! forks and must be driven from a single-threaded process.

pub mod classifier;
pub mod context;
pub mod doctor;
pub mod error;
pub mod net;
pub mod output;
pub mod project;
pub mod report;
pub mod run;
pub mod schema;
pub mod values;

pub use context::{uid_actor, Context, Options};
pub use error::{Error, Result};
pub use report::Report;
pub use run::{PreparedRun, RunOutcome, RunRequest};
