//! Review flags (being written: see the helper's task).

use cloche_world::diff::{FsDiff, RawPath};
use std::path::PathBuf;

/// One flagged path and why.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct ReviewFlag {
    pub path: RawPath,
    pub why: String,
}

/// Every flag of `diff` for a reviewer.
pub fn review_flags(diff: &FsDiff, roots: &[PathBuf]) -> Vec<ReviewFlag> {
    let _ = roots;
    diff.flags.iter().map(|f| ReviewFlag { path: f.path.clone(), why: format!("{:?}", f.why) }).collect()
}
