//! cloche evidence: the tamper-evident audit log ([`audit`]), trace spans
//! ([`span`]) and secret redaction ([`redact`]).
//!
//! This crate knows nothing of worlds or the state directory: every function
//! takes the path of the file it works on. The formats are documented in
//! `docs/audit.md`.

pub mod audit;
pub mod canon;
mod fsio;
pub mod redact;
pub mod span;
pub mod time;

pub use audit::{events, tail, verify, AuditError, AuditLog, BadLine, Record, VerifyError, VerifyReport};
pub use canon::canonical_json;
pub use redact::{redact, redact_json};
pub use span::{read_batch, Span, SpanError, SpanKind, SpanWriter};
