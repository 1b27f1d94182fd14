#![allow(dead_code)]

use std::path::Path;
use std::sync::Arc;

use cloche_broker::{BatchFile, Broker, Config, Decision, Effect, EntryResult, Format, Limits, ManualClock};
use cloche_trace::audit::{self, Record};

pub const T0: i64 = 1_780_000_000_000;

pub fn classify(command: &str) -> Decision {
    let (effect, rule, risk) = if command.starts_with("brew install") {
        (Effect::Review, "pkg-install", 40)
    } else if command.contains("rm -rf") {
        (Effect::Deny, "rm-recursive-home", 95)
    } else {
        (Effect::Allow, "read-only", 0)
    };
    Decision { effect, rule: rule.into(), reason: format!("{rule} fired"), risk }
}

pub fn open(dir: &Path, clock: &ManualClock) -> Broker {
    let config = Config { clock: Arc::new(clock.clone()), ..Config::default() };
    Broker::open(dir, config, Box::new(classify)).unwrap()
}

pub fn batch(json: &str) -> BatchFile {
    BatchFile::parse(json, Format::Json, &Limits::default()).unwrap()
}

pub fn records(dir: &Path) -> Vec<Record> {
    audit::tail(&dir.join("audit.jsonl"), 10_000).unwrap()
}

/// Verifies the chain; returns the number of lines.
pub fn verified(dir: &Path) -> u64 {
    audit::verify(&dir.join("audit.jsonl")).expect("audit chain verifies").lines
}

pub fn ok_result() -> EntryResult {
    EntryResult {
        exit_code: 0,
        category: cloche_broker::Category::Ok,
        duration_ms: 12,
        stdout_sha256: "a".repeat(64),
        stderr_sha256: "b".repeat(64),
        stdout_truncated: false,
        timed_out: false,
    }
}

pub fn failed_result(code: i32) -> EntryResult {
    EntryResult { exit_code: code, category: cloche_broker::Category::Runtime, ..ok_result() }
}
