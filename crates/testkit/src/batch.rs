//! Helpers of the batch and review tests: submit, show, policies, audit.

use crate::*;
use serde_json::Value;

pub fn show(fx: &Fixture, id: &str) -> Value {
    let o = fx.cloche(&["batch", "show", id, "--json"]);
    o.expect_code(0);
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("show --json: {e}\n{}", o.describe()))
}

pub fn submit(fx: &Fixture, batch: &Value, token: Option<&str>) -> String {
    let path = fx.out.path().join(format!("batch-{}.json", unique_tag()));
    std::fs::write(&path, serde_json::to_vec(batch).unwrap()).unwrap();
    let p = path.to_str().unwrap().to_string();
    let mut args = vec!["batch", "submit", p.as_str()];
    if let Some(t) = token {
        args.extend(["--token", t]);
    }
    let o = fx.cloche(&args);
    o.expect_code(0);
    let id = String::from_utf8(o.stdout.clone()).unwrap().trim().to_string();
    assert_eq!(id.len(), 16, "submit prints the id alone: {}", o.describe());
    id
}

/// Kept worlds are mounted under the state dir: take them away before the
/// leak check.
pub fn discard_kept(fx: &Fixture) {
    for id in fx.worlds() {
        let dir = fx.worlds_dir().join(&id);
        let fs = std::ffi::CString::new(dir.join("fs").as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        unsafe { libc::umount2(fs.as_ptr(), libc::MNT_DETACH) };
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

/// The default policy text with `approval_ttl` changed and `extra` appended
/// to its command rules (the last section).
pub fn policy_text(ttl: u64, extra: &str) -> String {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../policies/default.toml")).unwrap();
    assert!(text.contains("approval_ttl = 300"));
    text.replace("approval_ttl = 300", &format!("approval_ttl = {ttl}")) + extra
}

pub fn audit_events(fx: &Fixture, event: &str) -> Vec<Value> {
    let text = std::fs::read_to_string(fx.state.path().join("audit.jsonl")).unwrap_or_default();
    json_lines(text.as_bytes()).unwrap().into_iter().filter(|r| r["event"] == event).collect()
}

/// The default policy with the command rules of tests/mcp/policy.toml
/// instead of its own (echo, printf and cat allowed, rm denied, the rest
/// held for review), bound to `project` (the MCP and web page tests).
pub fn bind_review_policy(fx: &Fixture, project: &std::path::Path) {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let default = std::fs::read_to_string(root.join("policies/default.toml")).unwrap();
    let ours = std::fs::read_to_string(root.join("tests/mcp/policy.toml")).unwrap();
    let text =
        format!("{}\n{}", &default[..default.find("\n[commands]").unwrap()], &ours[ours.find("[commands]").unwrap()..]);
    let file = fx.out.path().join("policy.toml");
    std::fs::write(&file, text).unwrap();
    let p = project.to_str().unwrap();
    fx.cloche(&["--no-daemon", "policy", "set", "--project", p, file.to_str().unwrap()]).expect_code(0);
}
