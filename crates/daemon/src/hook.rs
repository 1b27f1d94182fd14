//! The review hook (`[hooks] review_needed` in the daemon's configuration):
//! a command run on the host once per submitted batch that waits for a
//! reviewer, e.g. to send a desktop or chat notification.
//!
//! It comes only from the daemon's configuration file, which root writes:
//! never from a policy or a request, which agents can write. It runs as the
//! daemon's user (root), detached from the request: with `/` as its
//! directory, stdin, stdout and stderr on /dev/null, in its own process
//! group, and an environment of its own (no variable of the daemon's):
//! `PATH` and the batch's `CLOCHE_BATCH_*` (see [`environment`]). The
//! submission is answered without waiting for it; a hook that fails is
//! logged, one still running after `timeout_secs` is killed (its whole
//! process group) and logged. Nothing it does changes the batch.

use crate::config::Hooks;
use cloche_broker::{BatchState, BatchView, Effect};
use std::process::Stdio;
use std::time::Duration;

/// The most bytes of `CLOCHE_BATCH_SUMMARY`.
const SUMMARY_MAX: usize = 1024;

/// Whether a batch just submitted waits for a reviewer: pending (not
/// approved by an autonomy token) with something a reviewer could approve.
pub fn needs_review(v: &BatchView) -> bool {
    v.state == BatchState::Pending && v.entries.iter().any(|e| e.decision.effect != Effect::Deny)
}

/// The hook's environment. The agent and the commands are the submitter's
/// text: control characters are escaped, and a hook must still treat them
/// as untrusted (quote them; never `eval` them).
pub fn environment(v: &BatchView) -> Vec<(&'static str, String)> {
    let review = v.entries.iter().filter(|e| e.decision.effect == Effect::Review).count();
    let mut summary = format!("{} entries ({review} to review): ", v.entries.len());
    let commands: Vec<String> = v.entries.iter().map(|e| escape(&e.command)).collect();
    summary.push_str(&commands.join("; "));
    if summary.len() > SUMMARY_MAX {
        let mut cut = SUMMARY_MAX - 3;
        while !summary.is_char_boundary(cut) {
            cut -= 1;
        }
        summary.truncate(cut);
        summary.push_str("...");
    }
    vec![
        ("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into()),
        ("CLOCHE_BATCH_ID", v.id.clone()),
        ("CLOCHE_BATCH_PROJECT", escape(&v.project)),
        ("CLOCHE_BATCH_AGENT", v.agent.clone().unwrap_or_default()),
        ("CLOCHE_BATCH_SUBMITTER", v.submitter.clone()),
        ("CLOCHE_BATCH_DECISION", v.decision.as_str().into()),
        ("CLOCHE_BATCH_ENTRIES", v.entries.len().to_string()),
        ("CLOCHE_BATCH_REVIEW_ENTRIES", review.to_string()),
        ("CLOCHE_BATCH_APPROVAL_TTL", v.approval_ttl.map(|t| t.to_string()).unwrap_or_default()),
        ("CLOCHE_BATCH_SUMMARY", summary),
    ]
}

/// Control characters (newlines included) as `\n`, `\u{1b}`: the value
/// stays one line.
fn escape(s: &str) -> String {
    s.chars().map(|c| if c.is_control() { c.escape_default().to_string() } else { c.to_string() }).collect()
}

/// Starts the hook for `v` when one is configured and `v` needs review;
/// returns at once.
pub fn review_needed(hooks: &Hooks, v: &BatchView) {
    let Some(argv) = hooks.review_needed.clone() else { return };
    if !needs_review(v) {
        return;
    }
    let env = environment(v);
    let (timeout, batch) = (hooks.timeout, v.id.clone());
    tokio::spawn(async move { run(argv, env, timeout, &batch).await });
}

async fn run(argv: Vec<String>, env: Vec<(&'static str, String)>, timeout: Duration, batch: &str) {
    let mut cmd = tokio::process::Command::new(&argv[0]);
    cmd.args(&argv[1..])
        .env_clear()
        .envs(env)
        .current_dir("/")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .kill_on_drop(true);
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => return tracing::warn!(batch, hook = %argv[0], error = %e, "review hook did not start"),
    };
    let pid = child.id();
    match tokio::time::timeout(timeout, child.wait()).await {
        Ok(Ok(st)) if st.success() => tracing::info!(batch, hook = %argv[0], "review hook ran"),
        Ok(Ok(st)) => tracing::warn!(batch, hook = %argv[0], status = %st, "review hook failed"),
        Ok(Err(e)) => tracing::warn!(batch, hook = %argv[0], error = %e, "review hook: wait"),
        Err(_) => {
            if let Some(pid) = pid {
                kill_group(pid);
            }
            let _ = child.wait().await;
            tracing::warn!(batch, hook = %argv[0], timeout_secs = timeout.as_secs(), "review hook killed after its timeout");
        }
    }
}

/// SIGKILL to the hook's process group (it leads it: `process_group(0)`).
fn kill_group(pid: u32) {
    // SAFETY: kill with a pid and a signal touches no memory.
    unsafe { libc::kill(-(pid as i32), libc::SIGKILL) };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn environment_is_one_line_per_value_and_capped() {
        let e = |command: &str, effect| cloche_broker::EntryView {
            id: "e".into(),
            index: 0,
            command: command.into(),
            cwd: "/p".into(),
            env: Default::default(),
            timeout: None,
            state: cloche_broker::EntryState::Pending,
            decision: cloche_broker::Decision { effect, rule: "r".into(), reason: "x".into(), risk: 0 },
            note: None,
            exit_code: None,
            category: None,
            duration_ms: None,
            stdout_sha256: None,
            stderr_sha256: None,
            stdout_truncated: None,
            timed_out: None,
        };
        let mut v: BatchView = serde_json::from_value(serde_json::json!({
            "id": "b1", "state": "pending", "agent": "a1", "submitter": "uid:1000", "project": "/p",
            "stop_on_failure": true, "created": "t", "updated": "t", "decision": "review", "approved_by": null,
            "approved_at": null, "expires_at": null, "approval_ttl": 300, "reason": null, "runner": null,
            "policy": "p", "world": null, "entries": []
        }))
        .unwrap();
        v.entries = vec![e("ls\necho \u{1b}[31m", Effect::Allow), e(&"x".repeat(2000), Effect::Review)];
        assert!(needs_review(&v));
        let env: std::collections::BTreeMap<_, _> = environment(&v).into_iter().collect();
        assert_eq!(env["CLOCHE_BATCH_ID"], "b1");
        assert_eq!(env["CLOCHE_BATCH_APPROVAL_TTL"], "300");
        assert_eq!(env["CLOCHE_BATCH_REVIEW_ENTRIES"], "1");
        let s = &env["CLOCHE_BATCH_SUMMARY"];
        assert!(s.starts_with("2 entries (1 to review): ls\\necho \\u{1b}[31m; xxx"), "{s}");
        assert!(s.len() <= SUMMARY_MAX && s.ends_with("..."));
        v.entries.truncate(0);
        v.entries.push(e("rm -rf /", Effect::Deny));
        assert!(!needs_review(&v), "nothing a reviewer could approve");
    }
}
