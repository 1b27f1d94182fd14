//! Restarts, crashes, bad input, audit failures and two brokers on one database.

mod common;

use std::io::Write;

use cloche_broker::{
    BatchFile, BatchFileError, BatchState, BrokerError, EntrySpec, EntryState, Format, Limits, ListFilter, ManualClock,
};
use common::*;

const TWO: &str = r#"{"agent": "a1", "project": "/p", "entries": [{"command": "make"}, {"command": "make test"}]}"#;

fn rows(dir: &std::path::Path) -> i64 {
    let conn = rusqlite::Connection::open(dir.join("broker.db")).unwrap();
    conn.query_row("SELECT (SELECT COUNT(*) FROM batches) + (SELECT COUNT(*) FROM entries)", [], |r| r.get(0)).unwrap()
}

#[test]
fn state_survives_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let mut b = open(dir.path(), &clock);
    let v = b.submit(&batch(TWO), "agent:a1", None).unwrap();
    b.approve(&v.id, None, "uid:1000").unwrap();
    let before = b.get(&v.id).unwrap();
    drop(b);

    let b = open(dir.path(), &clock);
    assert_eq!(b.get(&v.id).unwrap(), before);
    assert_eq!(before.state, BatchState::Approved);
    assert_eq!(before.id.len(), 16);
    assert!(before.id.bytes().all(|c| c.is_ascii_hexdigit()));
    let list = b.list(&ListFilter { agent: Some("a1".into()), ..Default::default() }).unwrap();
    assert_eq!((list.len(), list[0].entries), (1, 2));
    assert!(b.list(&ListFilter { project: Some("/q".into()), ..Default::default() }).unwrap().is_empty());
    assert!(b.recovered_at_open().is_empty());

    let conn = rusqlite::Connection::open(dir.path().join("broker.db")).unwrap();
    let mode: String = conn.query_row("PRAGMA journal_mode", [], |r| r.get(0)).unwrap();
    assert_eq!(mode, "wal");
    let version: String =
        conn.query_row("SELECT value FROM meta WHERE key = 'schema_version'", [], |r| r.get(0)).unwrap();
    assert_eq!(version, cloche_broker::SCHEMA_VERSION.to_string());
    verified(dir.path());
}

#[test]
fn a_newer_schema_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    drop(open(dir.path(), &clock));
    let conn = rusqlite::Connection::open(dir.path().join("broker.db")).unwrap();
    conn.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'", []).unwrap();
    drop(conn);
    let config = cloche_broker::Config::default();
    let e = cloche_broker::Broker::open(dir.path(), config, Box::new(classify)).err().unwrap();
    assert!(matches!(e, BrokerError::Schema { found: 99, .. }), "{e}");
}

#[test]
fn a_crashed_run_is_failed_as_interrupted() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let mut b = open(dir.path(), &clock);
    let v = b.submit(&batch(TWO), "agent:a1", None).unwrap();
    b.approve(&v.id, None, "uid:1000").unwrap();
    let run = b.start_run(&v.id).unwrap();
    b.entry_started(&v.id, &run[0].id).unwrap();
    // Our own run is alive: reopening leaves it alone.
    drop(b);
    let b = open(dir.path(), &clock);
    assert!(b.recovered_at_open().is_empty());
    assert_eq!(b.state(&v.id).unwrap(), BatchState::Running);
    drop(b);

    // The runner is gone (as after a crash: another pid, another boot).
    let conn = rusqlite::Connection::open(dir.path().join("broker.db")).unwrap();
    conn.execute("UPDATE batches SET runner = 'pid:1:0:gone' WHERE id = ?1", [&v.id]).unwrap();
    drop(conn);
    let b = open(dir.path(), &clock);
    assert_eq!(b.recovered_at_open(), std::slice::from_ref(&v.id));
    let view = b.get(&v.id).unwrap();
    assert_eq!((view.state, view.reason.as_deref()), (BatchState::Failed, Some("interrupted")));
    assert_eq!(view.entries[0].state, EntryState::Failed);
    assert_eq!(view.entries[1].state, EntryState::Skipped);
    let failed = records(dir.path()).into_iter().find(|r| r.event == "failed").unwrap();
    assert_eq!(failed.details["reason"], "interrupted");
    assert_eq!(failed.details["failed"][0], run[0].id.as_str());
    verified(dir.path());
}

#[test]
fn malformed_batch_files_are_rejected_naming_the_place() {
    let dir = tempfile::tempdir().unwrap();
    let lim = Limits::default();
    let cases: &[(&str, &str, &str)] = &[
        ("bad.json", "{\"project\": \"/p\",\n  \"entries\": [{\"command\": \"ls\"},]}", "line 2"),
        ("unknown.json", r#"{"project": "/p", "entries": [{"command": "ls", "shell": "zsh"}]}"#, "shell"),
        ("unknown-top.json", r#"{"project": "/p", "priority": 1, "entries": [{"command": "ls"}]}"#, "priority"),
        ("relative.json", r#"{"project": "srv/app", "entries": [{"command": "ls"}]}"#, "project"),
        ("outside.json", r#"{"project": "/p", "entries": [{"command": "ls", "cwd": "/etc"}]}"#, "entries[0].cwd"),
        ("dotdot.json", r#"{"project": "/p", "entries": [{"command": "ls", "cwd": "/p/../etc"}]}"#, "entries[0].cwd"),
        ("env.json", r#"{"project": "/p", "entries": [{"command": "ls", "env": {"A=B": "x"}}]}"#, "entries[0].env"),
        ("bad.toml", "project = \"/p\"\n[[entries]]\ncommand = \"ls\"\ncwd = 3\n", "line 4"),
    ];
    for (name, text, expect) in cases {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        let e = BatchFile::from_path(&path, &lim).unwrap_err();
        assert!(e.to_string().contains(expect), "{name}: {e}");
    }
    let many: Vec<_> = (0..11).map(|i| format!(r#"{{"command": "echo {i}"}}"#)).collect();
    let text = format!(r#"{{"project": "/p", "entries": [{}]}}"#, many.join(","));
    let e = BatchFile::parse(&text, Format::Json, &lim).unwrap_err();
    assert!(matches!(&e, BatchFileError::Invalid { field, .. } if field == "entries"), "{e}");
    assert!(e.to_string().contains("at most 10"), "{e}");
    assert!(BatchFile::parse(&text, Format::Json, &Limits { max_entries: 11 }).is_ok());

    // Submitting an unvalidated batch: refused, nothing written.
    let state = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let mut b = open(state.path(), &clock);
    let bad = BatchFile {
        agent: None,
        project: "/p".into(),
        stop_on_failure: true,
        world: None,
        entries: vec![EntrySpec {
            command: "ls".into(),
            cwd: Some("/elsewhere".into()),
            env: Default::default(),
            timeout: None,
        }],
    };
    let e = b.submit(&bad, "agent:a1", None).unwrap_err();
    assert!(e.to_string().contains("entries[0].cwd"), "{e}");
    let relative = BatchFile { project: "p".into(), ..bad.clone() };
    assert!(b.submit(&relative, "agent:a1", None).is_err());
    assert!(b.submit(&batch(TWO), "bad\nactor", None).is_err());
    assert_eq!(rows(state.path()), 0);
    assert_eq!(verified(state.path()), 0);
}

#[test]
fn a_failing_audit_log_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let mut b = open(dir.path(), &clock);
    let v = b.submit(&batch(TWO), "agent:a1", None).unwrap();
    let count = rows(dir.path());
    // A torn last line: the log refuses appends until someone looks.
    let mut f = std::fs::OpenOptions::new().append(true).open(dir.path().join("audit.jsonl")).unwrap();
    f.write_all(b"{\"torn").unwrap();
    drop(f);
    assert!(matches!(b.approve(&v.id, None, "uid:1000"), Err(BrokerError::Audit(_))));
    assert!(matches!(b.submit(&batch(TWO), "agent:a1", None), Err(BrokerError::Audit(_))));
    assert_eq!(b.state(&v.id).unwrap(), BatchState::Pending);
    assert_eq!(rows(dir.path()), count);
    cloche_trace::audit::recover(&dir.path().join("audit.jsonl"), "uid:0").unwrap();
    b.approve(&v.id, None, "uid:1000").unwrap();
    verified(dir.path());
}

#[test]
fn two_brokers_share_one_database() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let mut a = open(dir.path(), &clock);
    let mut b = open(dir.path(), &clock);
    let v = a.submit(&batch(TWO), "agent:a1", None).unwrap();
    assert_eq!(b.get(&v.id).unwrap().state, BatchState::Pending);
    b.approve(&v.id, None, "uid:1000").unwrap();
    // `a` sees b's change: its own approve is refused, no lost update.
    assert!(matches!(a.approve(&v.id, None, "uid:1002"), Err(BrokerError::WrongState { .. })));

    // Racing threads: exactly one cancel wins.
    let v = a.submit(&batch(TWO), "agent:a1", None).unwrap();
    drop((a, b));
    let wins: usize = std::thread::scope(|s| {
        let handles: Vec<_> = (0..4)
            .map(|i| {
                let (dir, clock, id) = (dir.path(), clock.clone(), v.id.clone());
                s.spawn(move || open(dir, &clock).cancel(&id, &format!("uid:{i}")).is_ok() as usize)
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).sum()
    });
    assert_eq!(wins, 1);
    let cancelled = records(dir.path()).iter().filter(|r| r.event == "cancelled").count();
    assert_eq!(cancelled, 1);
    verified(dir.path());
}

/// A classifier that names its policy version.
struct Versioned;

impl cloche_broker::Classifier for Versioned {
    fn classify(&self, command: &str) -> cloche_broker::Decision {
        classify(command)
    }
    fn policy_id(&self) -> String {
        "sha256:feed".into()
    }
}

#[test]
fn policy_and_approval_lifetime_are_fixed_at_submission() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let ttl = std::time::Duration::from_secs(2);
    let config =
        cloche_broker::Config { clock: std::sync::Arc::new(clock.clone()), approval_ttl: ttl, ..Default::default() };
    let mut b = cloche_broker::Broker::open(dir.path(), config, Box::new(Versioned)).unwrap();
    let v = b.submit(&batch(TWO), "agent:a1", None).unwrap();
    assert_eq!(v.policy, "sha256:feed");
    drop(b);
    // Approved by a broker opened with the default (5 min) lifetime: the
    // batch's own 2 s still count.
    let mut b = open(dir.path(), &clock);
    b.approve(&v.id, None, "uid:1000").unwrap();
    clock.advance(std::time::Duration::from_millis(2001));
    assert!(b.start_run(&v.id).is_err());
    assert_eq!(b.state(&v.id).unwrap(), BatchState::Expired);
    let submitted = records(dir.path()).into_iter().find(|r| r.event == "submitted").unwrap();
    assert_eq!(submitted.details["policy"], "sha256:feed");
}

#[test]
fn a_version_2_database_is_migrated() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let mut b = open(dir.path(), &clock);
    let v = b.submit(&batch(TWO), "agent:a1", None).unwrap();
    drop(b);
    // Back to the version 2 shape (its CHECK knows no review state).
    let conn = rusqlite::Connection::open(dir.path().join("broker.db")).unwrap();
    conn.execute_batch(V5_TO_V4).unwrap();
    conn.execute_batch(V4_TO_V3).unwrap();
    conn.execute_batch(
        "ALTER TABLE batches DROP COLUMN policy; ALTER TABLE batches DROP COLUMN approval_ttl_ms;
         ALTER TABLE batches DROP COLUMN world;
         UPDATE meta SET value = '2' WHERE key = 'schema_version';",
    )
    .unwrap();
    let sql: String = conn.query_row("SELECT sql FROM sqlite_master WHERE name = 'batches'", [], |r| r.get(0)).unwrap();
    conn.execute_batch("PRAGMA writable_schema = ON;").unwrap();
    conn.execute(
        "UPDATE sqlite_master SET sql = ?1 WHERE name = 'batches'",
        [sql.replace(",\n                       'committed','partially_committed','discarded'", "")],
    )
    .unwrap();
    drop(conn);
    let conn = rusqlite::Connection::open(dir.path().join("broker.db")).unwrap();
    let sql: String = conn.query_row("SELECT sql FROM sqlite_master WHERE name = 'batches'", [], |r| r.get(0)).unwrap();
    assert!(!sql.contains("committed"), "{sql}");
    drop(conn);
    let mut b = open(dir.path(), &clock);
    let got = b.get(&v.id).unwrap();
    assert_eq!(got.policy, "builtin");
    assert_eq!(got.entries.len(), 2, "entries kept through the rebuild");
    let conn = rusqlite::Connection::open(dir.path().join("broker.db")).unwrap();
    let sql: String = conn.query_row("SELECT sql FROM sqlite_master WHERE name = 'batches'", [], |r| r.get(0)).unwrap();
    assert!(sql.contains("partially_committed"), "{sql}");
    // No recorded lifetime: the broker's own (5 minutes) applies.
    b.approve(&v.id, None, "uid:1000").unwrap();
    clock.advance(std::time::Duration::from_secs(299));
    assert!(b.start_run(&v.id).is_ok());
}

/// Back from version 5 to the version 4 shape: no world continued.
const V5_TO_V4: &str =
    "ALTER TABLE batches DROP COLUMN continues; UPDATE meta SET value = '4' WHERE key = 'schema_version';";

/// Back from version 4 to the version 3 shape: no agents, no usage.
const V4_TO_V3: &str = "DROP TABLE agents; DROP INDEX batches_submitter;
    ALTER TABLE batches DROP COLUMN cpu_ms; ALTER TABLE batches DROP COLUMN egress_bytes;
    ALTER TABLE batches DROP COLUMN usage_ms; UPDATE meta SET value = '3' WHERE key = 'schema_version';";

#[test]
fn a_version_3_database_is_migrated() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let mut b = open(dir.path(), &clock);
    let v = b.submit(&batch(TWO), "agent:a1", None).unwrap();
    drop(b);
    let conn = rusqlite::Connection::open(dir.path().join("broker.db")).unwrap();
    conn.execute_batch(V5_TO_V4).unwrap();
    conn.execute_batch(V4_TO_V3).unwrap();
    drop(conn);
    let mut b = open(dir.path(), &clock);
    assert_eq!(b.get(&v.id).unwrap().entries.len(), 2);
    // The old batch counts for its agent, which registers on first use.
    assert!(b.agents().unwrap().is_empty(), "agents before version 4 were not registered");
    let a = b.register_agent("a1", "uid:0").unwrap();
    assert_eq!((a.usage.batches_last_hour, a.usage.cpu_ms_last_hour), (1, 0));
    assert_eq!(a.status, cloche_broker::AgentStatus::Waiting);
}

#[test]
fn a_version_4_database_is_migrated_and_batches_name_the_world_they_continue() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let mut b = open(dir.path(), &clock);
    let old = b.submit(&batch(TWO), "agent:a1", None).unwrap();
    drop(b);
    let conn = rusqlite::Connection::open(dir.path().join("broker.db")).unwrap();
    conn.execute_batch(V5_TO_V4).unwrap();
    drop(conn);
    let mut b = open(dir.path(), &clock);
    assert_eq!(b.get(&old.id).unwrap().continues, None, "a batch before version 5 continues no world");
    let mut f = batch(TWO);
    f.world = Some("0123456789abcdef".into());
    let v = b.submit(&f, "agent:a1", None).unwrap();
    assert_eq!(v.continues.as_deref(), Some("0123456789abcdef"));
    let submitted = records(dir.path()).into_iter().rfind(|r| r.event == "submitted").unwrap();
    assert_eq!(submitted.details["world"], "0123456789abcdef");
    for bad in ["0123", "0123456789ABCDEF", "../../../etc/pass"] {
        let mut f = batch(TWO);
        f.world = Some(bad.into());
        assert!(b.submit(&f, "agent:a1", None).is_err(), "{bad}");
    }
}
