//! `cloche history`: past commands, searched with SQLite FTS5, and
//! per-command statistics.

use rusqlite::params;
use serde::Serialize;

use crate::broker::Broker;
use crate::error::BrokerError;

/// One past entry.
#[derive(Debug, Clone, Serialize)]
pub struct HistoryItem {
    pub batch: String,
    pub entry: String,
    pub command: String,
    pub state: String,
    pub exit_code: Option<i32>,
    pub duration_ms: Option<i64>,
}

/// How one command fared over all the runs it had.
#[derive(Debug, Clone, Serialize)]
pub struct CommandStats {
    pub command: String,
    pub runs: u64,
    /// Fraction of runs that succeeded, 0 to 1.
    pub success_rate: f64,
    pub mean_duration_ms: Option<f64>,
}

/// A user's words as one FTS5 phrase (so `-`, `*`, `"` and keywords are
/// text, never query syntax).
fn phrase(q: &str) -> String {
    format!("\"{}\"", q.replace('"', "\"\""))
}

impl Broker {
    /// Entries whose command matches `query` (words, in order), newest first.
    pub fn history(&self, query: &str, limit: usize) -> Result<Vec<HistoryItem>, BrokerError> {
        // No words: the most recent entries.
        let sql = if query.trim().is_empty() {
            "SELECT e.batch, e.id, e.command, e.state, e.exit_code, e.duration_ms
             FROM entries e JOIN batches b ON b.id = e.batch
             WHERE ?1 = ?1 ORDER BY b.created_ms DESC, e.pos LIMIT ?2"
        } else {
            "SELECT e.batch, e.id, e.command, e.state, e.exit_code, e.duration_ms
             FROM entries_fts f JOIN entries e ON e.rowid = f.rowid JOIN batches b ON b.id = e.batch
             WHERE entries_fts MATCH ?1 ORDER BY b.created_ms DESC, e.pos LIMIT ?2"
        };
        let mut stmt = self.conn.prepare(sql)?;
        let rows = stmt.query_map(params![phrase(query), limit as i64], |r| {
            Ok(HistoryItem {
                batch: r.get(0)?,
                entry: r.get(1)?,
                command: r.get(2)?,
                state: r.get(3)?,
                exit_code: r.get(4)?,
                duration_ms: r.get(5)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Runs, success rate and mean duration per command (entries that ran).
    pub fn command_stats(&self, limit: usize) -> Result<Vec<CommandStats>, BrokerError> {
        let mut stmt = self.conn.prepare(
            "SELECT command, COUNT(*), AVG(state = 'succeeded'), AVG(duration_ms) FROM entries
             WHERE state IN ('succeeded', 'failed', 'timed_out')
             GROUP BY command ORDER BY COUNT(*) DESC, command LIMIT ?1",
        )?;
        let rows = stmt.query_map(params![limit as i64], |r| {
            Ok(CommandStats {
                command: r.get(0)?,
                runs: r.get::<_, i64>(1)? as u64,
                success_rate: r.get(2)?,
                mean_duration_ms: r.get(3)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}
