//! Latency of one audit append (read the last line, one write, fsync) on the
//! filesystem of DIR: `cargo run --release -p cloche-trace --example audit_bench [DIR] [N]`.
//! DIR defaults to the system temp directory, N to 1000.

use std::time::Instant;

use cloche_trace::audit::{events, verify};
use cloche_trace::AuditLog;
use serde_json::json;

fn main() {
    let mut args = std::env::args().skip(1);
    let dir = args.next().map(std::path::PathBuf::from).unwrap_or_else(std::env::temp_dir);
    let n: usize = args.next().and_then(|s| s.parse().ok()).unwrap_or(1000);
    let tmp = tempfile::tempdir_in(&dir).expect("temporary directory");
    let path = tmp.path().join("audit.jsonl");
    let mut log = AuditLog::open(&path).expect("open");
    let mut micros = Vec::with_capacity(n);
    let all = Instant::now();
    for i in 0..n {
        let details = json!({"cmd": "npm install left-pad", "exit_code": 0, "output_sha256": format!("{i:064x}")});
        let t = Instant::now();
        log.append(events::ENTRY_FINISHED, "uid:1000", Some("b-bench"), Some("e1"), details).expect("append");
        micros.push(t.elapsed().as_secs_f64() * 1e6);
    }
    let total = all.elapsed();
    micros.sort_by(f64::total_cmp);
    let pct = |p: f64| micros[((micros.len() as f64 * p) as usize).min(micros.len() - 1)];
    let t = Instant::now();
    let report = verify(&path).expect("verify");
    println!(
        "audit append with fsync on {}: n={n} median {:.0} us, p90 {:.0} us, p99 {:.0} us, max {:.0} us ({:.0} appends/s); verify of {} lines {:.1} ms",
        dir.display(),
        pct(0.5),
        pct(0.9),
        pct(0.99),
        micros[micros.len() - 1],
        n as f64 / total.as_secs_f64(),
        report.lines,
        t.elapsed().as_secs_f64() * 1e3
    );
}
