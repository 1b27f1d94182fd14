//! `cloche audit verify|tail|recover`: the audit log (docs/audit.md).

use std::path::PathBuf;

use crate::output::{AuditVerify, Version};
use clap::{Args, Subcommand};
use cloche_trace::{audit, VerifyError};

#[derive(Subcommand)]
pub enum AuditCommand {
    /// Check the hash chain of the audit log; exit 1 naming the first bad line, 125 when there
    /// is no log to check.
    Verify(VerifyArgs),
    /// Print the last records of the audit log.
    Tail(TailArgs),
    /// Set aside a torn last line left by a crash, and record that it was done.
    Recover(VerifyArgs),
}

#[derive(Args)]
pub struct VerifyArgs {
    /// Print the result as one JSON document (docs/schemas/audit-verify.json, audit-recover.json).
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    file: FileArg,
}

#[derive(Args)]
pub struct FileArg {
    /// The log (default: audit.jsonl in the state directory).
    #[arg(long, value_name = "FILE")]
    file: Option<PathBuf>,
}

#[derive(Args)]
pub struct TailArgs {
    /// How many records.
    #[arg(short = 'n', long = "lines", value_name = "N", default_value_t = 10,
          allow_hyphen_values = true, value_parser = crate::whole_number)]
    n: usize,
    /// One canonical JSON record per line, as in the log (JSON Lines, no schema_version:
    /// docs/audit.md).
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    file: FileArg,
}

/// Exit code of `verify` when the chain is broken.
const EXIT_BROKEN: i32 = 1;

fn log_path(arg: &FileArg) -> PathBuf {
    arg.file.clone().unwrap_or_else(|| cloche_world::state::state_dir_from_env().join("audit.jsonl"))
}

pub fn main(cmd: AuditCommand) -> i32 {
    match cmd {
        AuditCommand::Verify(a) => verify(&log_path(&a.file), a.json),
        AuditCommand::Tail(t) => tail(&log_path(&t.file), t.n, t.json),
        AuditCommand::Recover(a) => recover(&log_path(&a.file), a.json),
    }
}

fn verify(path: &std::path::Path, json: bool) -> i32 {
    let doc = |ok| AuditVerify {
        schema_version: Version,
        log: path.display().to_string(),
        ok,
        entries: None,
        head: None,
        line: None,
        why: None,
    };
    match audit::verify(path) {
        Ok(r) if json => crate::output::emit(&AuditVerify { entries: Some(r.lines), head: Some(r.head), ..doc(true) })
            .map_or_else(crate::fail, |()| 0),
        Ok(r) => {
            println!("ok: {} entries", r.lines);
            println!("head: {}", r.head);
            0
        }
        Err(VerifyError::Bad(b)) => {
            eprintln!("cloche: {} line {}: {}", path.display(), b.line, one_line(&b.why));
            if json {
                let d = AuditVerify { line: Some(b.line), why: Some(one_line(&b.why)), ..doc(false) };
                if let Err(e) = crate::output::emit(&d) {
                    return crate::fail(e);
                }
            }
            EXIT_BROKEN
        }
        // Nothing was verified: a log that is not there (never written, or
        // removed) is no proof of anything.
        Err(VerifyError::Io(e)) if e.is_not_found() => {
            crate::fail(format!("there is no audit log at {}: nothing to verify", path.display()))
        }
        Err(VerifyError::Io(e)) => crate::fail(one_line(&e.to_string())),
    }
}

fn tail(path: &std::path::Path, n: usize, json: bool) -> i32 {
    let records = match audit::tail(path, n) {
        Ok(r) => r,
        Err(e) if e.is_not_found() => {
            eprintln!("cloche: there is no audit log at {}", path.display());
            return 0;
        }
        Err(e) => return crate::fail(format!("{} (see cloche audit verify)", one_line(&e.to_string()))),
    };
    let mut out = String::new();
    for r in &records {
        if json {
            let line = serde_json::to_value(r).ok().and_then(|v| cloche_trace::canonical_json(&v).ok());
            out.push_str(&line.unwrap_or_default());
        } else {
            out.push_str(&format!("{:>6}  {}  {:<14}  {}", r.seq, r.ts, r.event, r.actor));
            if let Some(b) = &r.batch {
                out.push_str(&format!("  batch={b}"));
            }
            if let Some(e) = &r.entry {
                out.push_str(&format!("  entry={e}"));
            }
            if r.details.as_object().is_some_and(|o| !o.is_empty()) {
                out.push_str(&format!("  {}", cloche_trace::canonical_json(&r.details).unwrap_or_default()));
            }
        }
        out.push('\n');
    }
    print!("{out}");
    0
}

fn recover(path: &std::path::Path, json: bool) -> i32 {
    let actor = cloche_service::uid_actor();
    match audit::recover(path, &actor) {
        Ok(r) if json => crate::output::emit(&crate::output::AuditRecover {
            schema_version: Version,
            log: path.display().to_string(),
            torn_bytes: r.torn_bytes,
            torn_line: r.record.details["torn_line"].as_u64().unwrap_or_default(),
            saved_to: r.saved_to.display().to_string(),
            seq: r.record.seq,
        })
        .map_or_else(crate::fail, |()| 0),
        Ok(r) => {
            println!(
                "recovered: {} torn bytes of line {} saved to {}; record {} appended",
                r.torn_bytes,
                r.record.details["torn_line"],
                r.saved_to.display(),
                r.record.seq
            );
            0
        }
        Err(e) => crate::fail(one_line(&e.to_string())),
    }
}

/// Errors are one line on stderr.
fn one_line(s: &str) -> String {
    s.replace(['\n', '\r'], " ")
}
