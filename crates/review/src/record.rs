//! Per-entry attribution and base-state records.
