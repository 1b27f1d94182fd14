//! The SQLite side: opening, pragmas, schema.

use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::Path;
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, TransactionBehavior};

use crate::error::BrokerError;

pub const SCHEMA_VERSION: i64 = 5;

const SCHEMA: &str = "
CREATE TABLE batches (
    id              TEXT PRIMARY KEY,
    state           TEXT NOT NULL CHECK (state IN
                      ('pending','approved','rejected','running','completed','failed','cancelled','expired')),
    agent           TEXT,
    submitter       TEXT NOT NULL,
    project         TEXT NOT NULL,
    stop_on_failure INTEGER NOT NULL,
    decision        TEXT NOT NULL CHECK (decision IN ('allow','review','deny')),
    source_sha256   TEXT NOT NULL,
    created_ms      INTEGER NOT NULL,
    updated_ms      INTEGER NOT NULL,
    approved_by     TEXT,
    approved_ms     INTEGER,
    expires_ms      INTEGER,
    runner          TEXT,
    reason          TEXT
);
CREATE INDEX batches_state ON batches(state);
CREATE TABLE entries (
    id               TEXT PRIMARY KEY,
    batch            TEXT NOT NULL REFERENCES batches(id) ON DELETE CASCADE,
    pos              INTEGER NOT NULL,
    command          TEXT NOT NULL,
    cwd              TEXT NOT NULL,
    env              TEXT NOT NULL,
    timeout          INTEGER,
    state            TEXT NOT NULL CHECK (state IN
                       ('pending','skipped','running','succeeded','failed','timed_out','cancelled')),
    effect           TEXT NOT NULL CHECK (effect IN ('allow','review','deny')),
    rule             TEXT NOT NULL,
    reason           TEXT NOT NULL,
    risk             INTEGER NOT NULL,
    note             TEXT,
    exit_code        INTEGER,
    category         TEXT,
    duration_ms      INTEGER,
    stdout_sha256    TEXT,
    stderr_sha256    TEXT,
    stdout_truncated INTEGER,
    timed_out        INTEGER,
    UNIQUE (batch, pos)
);
CREATE TABLE autonomy (
    project      TEXT PRIMARY KEY,
    token_sha256 TEXT NOT NULL,
    fingerprint  TEXT NOT NULL,
    enabled_by   TEXT NOT NULL,
    enabled_ms   INTEGER NOT NULL
);
";

/// Version 2: full-text search over entry commands (`cloche history`), an
/// external-content FTS5 index kept in step with `entries` by triggers.
const SCHEMA_V2: &str = "
CREATE VIRTUAL TABLE entries_fts USING fts5(command, content='entries', content_rowid='rowid');
CREATE TRIGGER entries_fts_ins AFTER INSERT ON entries BEGIN
    INSERT INTO entries_fts(rowid, command) VALUES (new.rowid, new.command);
END;
CREATE TRIGGER entries_fts_del AFTER DELETE ON entries BEGIN
    INSERT INTO entries_fts(entries_fts, rowid, command) VALUES ('delete', old.rowid, old.command);
END;
CREATE TRIGGER entries_fts_upd AFTER UPDATE OF command ON entries BEGIN
    INSERT INTO entries_fts(entries_fts, rowid, command) VALUES ('delete', old.rowid, old.command);
    INSERT INTO entries_fts(rowid, command) VALUES (new.rowid, new.command);
END;
INSERT INTO entries_fts(entries_fts) VALUES ('rebuild');
";

/// Version 3: the policy version a batch was classified with (it also runs
/// with it), and its approval lifetime, both fixed at submission; the world
/// it ran in; the review states `committed`, `partially_committed` and
/// `discarded`. SQLite cannot change a CHECK constraint in place, so
/// `batches` is rebuilt (with foreign keys off while its rows are copied).
const SCHEMA_V3: &str = "
CREATE TABLE batches_v3 (
    id              TEXT PRIMARY KEY,
    state           TEXT NOT NULL CHECK (state IN
                      ('pending','approved','rejected','running','completed','failed','cancelled','expired',
                       'committed','partially_committed','discarded')),
    agent           TEXT,
    submitter       TEXT NOT NULL,
    project         TEXT NOT NULL,
    stop_on_failure INTEGER NOT NULL,
    decision        TEXT NOT NULL CHECK (decision IN ('allow','review','deny')),
    source_sha256   TEXT NOT NULL,
    created_ms      INTEGER NOT NULL,
    updated_ms      INTEGER NOT NULL,
    approved_by     TEXT,
    approved_ms     INTEGER,
    expires_ms      INTEGER,
    runner          TEXT,
    reason          TEXT,
    policy          TEXT NOT NULL DEFAULT 'builtin',
    approval_ttl_ms INTEGER,
    world           TEXT
);
INSERT INTO batches_v3 (id, state, agent, submitter, project, stop_on_failure, decision, source_sha256, created_ms,
    updated_ms, approved_by, approved_ms, expires_ms, runner, reason)
  SELECT id, state, agent, submitter, project, stop_on_failure, decision, source_sha256, created_ms, updated_ms,
    approved_by, approved_ms, expires_ms, runner, reason FROM batches;
DROP TABLE batches;
ALTER TABLE batches_v3 RENAME TO batches;
CREATE INDEX batches_state ON batches(state);
";

/// Version 4: agents registered by name (an id each), and what each batch's
/// world used (CPU time, bytes to allowed destinations) for the budgets.
const SCHEMA_V4: &str = "
CREATE TABLE agents (
    name          TEXT PRIMARY KEY,
    id            TEXT NOT NULL UNIQUE,
    registered_by TEXT NOT NULL,
    registered_ms INTEGER NOT NULL
);
ALTER TABLE batches ADD COLUMN cpu_ms INTEGER;
ALTER TABLE batches ADD COLUMN egress_bytes INTEGER;
ALTER TABLE batches ADD COLUMN usage_ms INTEGER;
CREATE INDEX batches_submitter ON batches(submitter, created_ms);
";

/// Version 5: the kept world a batch runs in (`"world"` in its file: a
/// continuation of that world) when it names one.
const SCHEMA_V5: &str = "ALTER TABLE batches ADD COLUMN continues TEXT;";

/// Opens (creating, mode 0600 in a 0700 directory) `<dir>/broker.db`: WAL,
/// `synchronous=FULL`, foreign keys on, the schema at [`SCHEMA_VERSION`].
pub fn open(dir: &Path, busy: Duration) -> Result<Connection, BrokerError> {
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(BrokerError::io("create state dir"))?;
    let path = dir.join("broker.db");
    // Made with its mode when missing; an existing file is not opened here:
    // closing a descriptor of it would drop every POSIX lock this process
    // holds on it, the shared locks of its other connections among them
    // (a daemon has one per thread). Another process closing the last
    // connection it then believes it has would checkpoint and delete the
    // WAL under them, and they would go on reading a snapshot that no
    // longer changes.
    match std::fs::OpenOptions::new().read(true).write(true).create_new(true).mode(0o600).open(&path) {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(BrokerError::io("create broker.db")(e)),
    }
    let mut conn = Connection::open(&path)?;
    conn.busy_timeout(busy)?;
    let mode: String = conn.query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(BrokerError::Invalid(format!("broker.db: journal_mode is {mode}, WAL is required")));
    }
    // Foreign keys are off while the schema is created or migrated (a table
    // rebuild copies rows), and on from then on.
    conn.execute_batch("PRAGMA synchronous=FULL; PRAGMA foreign_keys=OFF;")?;
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    tx.execute_batch("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")?;
    let found: Option<String> =
        tx.query_row("SELECT value FROM meta WHERE key = 'schema_version'", [], |r| r.get(0)).optional()?;
    match found.map(|v| v.parse::<i64>().unwrap_or(-1)) {
        None => {
            tx.execute_batch(SCHEMA)?;
            tx.execute_batch(SCHEMA_V2)?;
            tx.execute_batch(SCHEMA_V3)?;
            tx.execute_batch(SCHEMA_V4)?;
            tx.execute_batch(SCHEMA_V5)?;
            tx.execute("INSERT INTO meta (key, value) VALUES ('schema_version', ?1)", [SCHEMA_VERSION.to_string()])?;
        }
        Some(v @ (1..=4)) => {
            // 1 -> 2: the search index over existing entries; 2 -> 3: the
            // policy columns (old batches: builtin), the review states;
            // 3 -> 4: agents, and the usage of batches (old ones: none);
            // 4 -> 5: the world a batch continues (old ones: none).
            if v == 1 {
                tx.execute_batch(SCHEMA_V2)?;
            }
            if v <= 2 {
                tx.execute_batch(SCHEMA_V3)?;
            }
            if v <= 3 {
                tx.execute_batch(SCHEMA_V4)?;
            }
            tx.execute_batch(SCHEMA_V5)?;
            let broken: Option<String> = tx.query_row("PRAGMA foreign_key_check", [], |r| r.get(0)).optional()?;
            if let Some(table) = broken {
                return Err(BrokerError::Invalid(format!("broker.db: migration broke a foreign key of {table}")));
            }
            tx.execute("UPDATE meta SET value = ?1 WHERE key = 'schema_version'", [SCHEMA_VERSION.to_string()])?;
        }
        Some(SCHEMA_VERSION) => {}
        Some(found) => return Err(BrokerError::Schema { found, known: SCHEMA_VERSION }),
    }
    tx.commit()?;
    conn.execute_batch("PRAGMA foreign_keys=ON;")?;
    Ok(conn)
}
