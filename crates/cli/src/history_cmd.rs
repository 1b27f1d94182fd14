//! `cloche history` and `cloche trace show`: past batch entries and the
//! spans of a batch.

use crate::fail;
use clap::Subcommand;

// `cloche history [QUERY] [--stats] [--json]`.
#[derive(clap::Args)]
pub struct HistoryArgs {
    /// Words to search for in past commands (full-text, in order).
    query: Option<String>,
    /// Per-command statistics: runs, success rate, mean duration.
    #[arg(long)]
    stats: bool,
    /// Print one JSON document (docs/schemas/history.json, history-stats.json).
    #[arg(long)]
    json: bool,
    /// At most this many entries (or commands).
    #[arg(long, value_name = "N", default_value_t = 50, allow_hyphen_values = true,
          value_parser = crate::whole_number)]
    limit: usize,
}

pub fn history(a: HistoryArgs) -> i32 {
    let r = (|| -> Result<(), String> {
        let ctx = crate::context();
        let broker = ctx.broker()?;
        let e = |e: cloche_broker::BrokerError| e.to_string();
        if a.stats {
            let stats = broker.command_stats(a.limit).map_err(e)?;
            if a.json {
                crate::output::emit(&serde_json::json!({ "commands": stats }))?;
            }
            for s in stats.iter().filter(|_| !a.json) {
                let mean = s.mean_duration_ms.map(|m| format!("{m:.0} ms")).unwrap_or_else(|| "-".into());
                println!("{:>5} runs  {:>5.1}% ok  {:>9}  {}", s.runs, s.success_rate * 100.0, mean, s.command);
            }
            return Ok(());
        }
        let items = broker.history(a.query.as_deref().unwrap_or(""), a.limit).map_err(e)?;
        if a.json {
            crate::output::emit(&serde_json::json!({ "entries": items }))?;
        }
        for i in items.iter().filter(|_| !a.json) {
            let code = i.exit_code.map(|c| c.to_string()).unwrap_or_else(|| "-".into());
            println!("{} {} {:<10} exit {:<4} {}", i.batch, i.entry, i.state, code, i.command);
        }
        Ok(())
    })();
    match r {
        Ok(()) => 0,
        Err(e) => fail(e),
    }
}

#[derive(Subcommand)]
pub enum TraceCommand {
    /// The spans of a batch (one batch span, one per entry).
    Show {
        /// The batch id.
        batch: String,
        /// One span per line as JSON, as stored (JSON Lines: docs/formats.md, *Spans*).
        #[arg(long)]
        json: bool,
    },
}

pub fn trace(cmd: TraceCommand) -> i32 {
    let TraceCommand::Show { batch, json } = cmd;
    let r = (|| -> Result<(), String> {
        let ctx = crate::context();
        let got = cloche_trace::span::read_batch(&ctx.state()?.root.join("spans.jsonl"), &batch)
            .map_err(|e| e.to_string())?;
        if got.spans.is_empty() {
            return Err(format!("no spans for batch {batch}"));
        }
        for s in &got.spans {
            if json {
                println!("{}", serde_json::to_string(s).map_err(|e| e.to_string())?);
            } else {
                let totals = s
                    .fs_diff
                    .as_ref()
                    .map(|d| format!("+{} ~{} -{}", d.totals.added, d.totals.modified, d.totals.deleted));
                println!(
                    "{:<5} {} {} exit {} {} {}",
                    format!("{:?}", s.kind).to_lowercase(),
                    s.entry.as_deref().unwrap_or(&batch),
                    s.policy.as_ref().map(|p| p.decision.as_str()).unwrap_or("-"),
                    s.exit_code.map(|c| c.to_string()).unwrap_or_else(|| "-".into()),
                    totals.unwrap_or_default(),
                    s.cmd.as_deref().unwrap_or("")
                );
            }
        }
        Ok(())
    })();
    match r {
        Ok(()) => 0,
        Err(e) => fail(e),
    }
}
