//! The reviewer's page (`cloched --web`, docs/web.md), end to end: a real
//! daemon on a temporary socket and a loopback port, real worlds.
//!
//! - Every state-changing route of the page refuses (4xx, nothing done)
//!   a request without a session, without or with a wrong CSRF token, or
//!   from another origin; the Host header is checked; an agent's own
//!   batch cannot be approved through the page (plain HTTP, no browser).
//! - In a real browser (headless chromium through Debian's chromedriver,
//!   driven by Python's selenium from target/web-venv, both installed by
//!   .ci/setup): tests/web/browser.py logs in with tokens from the socket,
//!   sees the agent's pending batch with its review badge, is refused
//!   its approval as the agent, approves one entry as the reviewer, runs
//!   it and watches its live output, opens the diff (10,000 paths, paged;
//!   the planted git hook flagged; a hostile file name shown as text),
//!   commits selected paths (a conflict where the host changed, then the
//!   rest), and checks that no script of the agent's ran.
//!
//! Screenshots of the main views: `CLOCHE_WEB_SCREENSHOTS=docs/web cargo
//! test --test e2e web::` writes them there (else into the test's own
//! directory, removed after).

use crate::common;

use common::*;
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// The page's configuration: on, on a loopback port the kernel picks;
/// root is admin, AGENT_B a reviewer, everyone an agent.
const CONFIG: &str =
    "[web]\nlisten = \"127.0.0.1:0\"\n[roles]\nadmin = [\"root\"]\nreviewer = [\"uid:64102\"]\nagent = [\"*\"]\n";

/// A login token of `uid` (root: `None`) from the socket: the token and the page's address.
fn login_token(d: &Daemon, uid: Option<u32>) -> (String, String) {
    let a = d.post(uid, "/v1/web/login", &json!({}));
    let v = a.expect(201);
    (v["token"].as_str().unwrap().to_string(), v["url"].as_str().unwrap().to_string())
}

/// `host:port` of a page's URL.
fn authority(url: &str) -> String {
    url.trim_start_matches("http://").trim_end_matches('/').to_string()
}

/// One HTTP/1.1 request to the page: the status, the headers and the body.
fn http(addr: &str, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> (u16, String, String) {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let mut req = format!("{method} {path} HTTP/1.1\r\nConnection: close\r\nContent-Length: {}\r\n", body.len());
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
        req.push_str(&format!("Host: {addr}\r\n"));
    }
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    if !body.is_empty() {
        req.push_str("Content-Type: application/x-www-form-urlencoded\r\n");
    }
    req.push_str("\r\n");
    req.push_str(body);
    s.write_all(req.as_bytes()).unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).unwrap();
    let text = String::from_utf8_lossy(&out).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    (status, head.to_string(), body.to_string())
}

/// A session of `token`: its cookie (`name=value`) and the CSRF token of its pages.
fn session(addr: &str, token: &str) -> (String, String) {
    let origin = format!("http://{addr}");
    let (status, head, _) = http(addr, "POST", "/login", &[("Origin", &origin)], &format!("token={token}"));
    assert_eq!(status, 303, "{head}");
    let cookie = head
        .lines()
        .find_map(|l| l.strip_prefix("set-cookie: "))
        .and_then(|c| c.split(';').next())
        .unwrap_or_else(|| panic!("no cookie: {head}"))
        .to_string();
    let (status, _, page) = http(addr, "GET", "/", &[("Cookie", &cookie)], "");
    assert_eq!(status, 200, "{page}");
    let csrf = page.split("name=\"csrf\" value=\"").nth(1).and_then(|r| r.split('"').next()).unwrap().to_string();
    (cookie, csrf)
}

fn submit_as(d: &Daemon, uid: u32, batch: Value) -> String {
    let a = d.post(Some(uid), "/v1/batches", &batch);
    a.expect(201)["id"].as_str().unwrap().to_string()
}

fn state_of(d: &Daemon, id: &str) -> Value {
    d.get(None, &format!("/v1/batches/{id}")).expect(200).clone()
}

/// A refused request: what it lacks, its headers, its form.
type Case<'a> = (&'a str, Vec<(&'a str, &'a str)>, String);

/// Every state-changing route refuses without a session, without the
/// session's CSRF token (or with another's), and from another origin, and
/// nothing changes; with all three the same request works (so the
/// refusals are the checks', not a broken route). The page answers only
/// to its own Host. An agent's own batch: no approve button, and the
/// approval refused with a valid session and CSRF token.
#[test]
fn every_state_changing_route_refuses_without_session_csrf_or_origin() {
    let fx = Fixture::new();
    let proj = owned_dir(&fx, "proj", AGENT_A);
    bind_review_policy(&fx, &proj);
    let d = Daemon::start(&fx, Some(CONFIG));
    let (root_token, url) = login_token(&d, None);
    let addr = authority(&url);
    let origin = format!("http://{addr}");
    let (cookie, csrf) = session(&addr, &root_token);
    let (other_cookie, other_csrf) = session(&addr, &login_token(&d, Some(AGENT_B)).0);
    assert_ne!(csrf, other_csrf);
    let batch = json!({"project": proj, "agent": "a1", "entries": [{"command": "date > stamp"}]});
    let id = submit_as(&d, AGENT_A, batch);
    let before = state_of(&d, &id);
    assert_eq!(before["state"], "pending");

    // (route, form): every POST of the page.
    let routes: Vec<(String, String)> = ["approve", "reject", "run", "cancel", "commit", "discard"]
        .iter()
        .map(|a| (format!("/batches/{id}/{a}"), "which=all".to_string()))
        .chain([("/logout".to_string(), String::new())])
        .collect();
    for (path, form) in &routes {
        let with = |c: &str| if form.is_empty() { format!("csrf={c}") } else { format!("{form}&csrf={c}") };
        let cases: Vec<Case> = vec![
            ("no session", vec![("Origin", &origin)], with(&csrf)),
            ("a made-up session", vec![("Origin", &origin), ("Cookie", "cloche_session=forged")], with(&csrf)),
            ("no CSRF token", vec![("Origin", &origin), ("Cookie", &cookie)], form.clone()),
            ("a wrong CSRF token", vec![("Origin", &origin), ("Cookie", &cookie)], with("x")),
            ("another session's CSRF token", vec![("Origin", &origin), ("Cookie", &cookie)], with(&other_csrf)),
            ("another origin", vec![("Origin", "http://evil.example"), ("Cookie", &cookie)], with(&csrf)),
            ("no origin", vec![("Cookie", &cookie)], with(&csrf)),
            ("the CSRF token in a GET", vec![("Origin", &origin), ("Cookie", &cookie)], with(&csrf)),
        ];
        for (what, headers, body) in cases {
            let method = if what.contains("GET") { "GET" } else { "POST" };
            let (status, head, page) = http(&addr, method, path, &headers, &body);
            assert!((400..500).contains(&status), "{method} {path} with {what}: HTTP {status}\n{head}\n{page}");
        }
        let now = state_of(&d, &id);
        assert_eq!(now, before, "{path}: the batch changed after refused requests");
    }
    // The sessions still work (logout was refused each time).
    assert_eq!(http(&addr, "GET", "/", &[("Cookie", &cookie)], "").0, 200);
    assert_eq!(http(&addr, "GET", "/", &[("Cookie", &other_cookie)], "").0, 200);
    // /login: another origin or a bad token gets no session.
    let (s, head, _) =
        http(&addr, "POST", "/login", &[("Origin", "http://evil.example")], &format!("token={root_token}"));
    assert!(s == 403 && !head.contains("set-cookie"), "{head}");
    let (s, head, _) = http(&addr, "POST", "/login", &[("Origin", &origin)], "token=forged");
    assert!(s == 403 && !head.contains("set-cookie"), "{head}");
    // DNS rebinding: another Host is refused, even with a session.
    let (s, _, _) = http(&addr, "GET", "/", &[("Host", "evil.example"), ("Cookie", &cookie)], "");
    assert_eq!(s, 421);
    // The security headers.
    let (_, head, _) = http(&addr, "GET", "/login", &[], "");
    for h in [
        "content-security-policy: default-src 'none'; script-src 'self'",
        "x-content-type-options: nosniff",
        "referrer-policy: same-origin",
        "cache-control: no-store",
    ] {
        assert!(head.contains(h), "{h} missing:\n{head}");
    }

    // The agent's own batch: no approve button, and its approval refused.
    let (agent_cookie, agent_csrf) = session(&addr, &login_token(&d, Some(AGENT_A)).0);
    let (s, _, page) = http(&addr, "GET", &format!("/batches/{id}"), &[("Cookie", &agent_cookie)], "");
    assert_eq!(s, 200, "{page}");
    assert!(page.contains("date &gt; stamp") && !page.contains("/approve\""), "{page}");
    let hdr = [("Origin", origin.as_str()), ("Cookie", agent_cookie.as_str())];
    let (s, _, page) = http(&addr, "POST", &format!("/batches/{id}/approve"), &hdr, &format!("csrf={agent_csrf}"));
    assert_eq!(s, 403, "{page}");
    assert!(page.contains("needs the reviewer role"), "{page}");
    assert_eq!(state_of(&d, &id), before);

    // A reviewer's own batch: the same (the broker never lets a review
    // batch be approved by its submitter, whatever its roles).
    let own = submit_as(&d, AGENT_B, json!({"project": proj, "entries": [{"command": "date > stamp"}]}));
    let own_before = state_of(&d, &own);
    let (s, _, page) = http(&addr, "GET", &format!("/batches/{own}"), &[("Cookie", &other_cookie)], "");
    assert!(s == 200 && page.contains("reviewer") && !page.contains("/approve\""), "{page}");
    let hdr = [("Origin", origin.as_str()), ("Cookie", other_cookie.as_str())];
    let (s, _, page) = http(&addr, "POST", &format!("/batches/{own}/approve"), &hdr, &format!("csrf={other_csrf}"));
    assert!(s == 403 && page.contains("needs another approver"), "{page}");
    assert_eq!(state_of(&d, &own), own_before);

    // With a session, its CSRF token and the page's origin: done.
    let hdr = [("Origin", origin.as_str()), ("Cookie", cookie.as_str())];
    let (s, head, _) = http(&addr, "POST", &format!("/batches/{id}/reject"), &hdr, &format!("csrf={csrf}&reason=no"));
    assert_eq!(s, 303, "{head}");
    assert_eq!(state_of(&d, &id)["state"], "rejected");
    let (s, _, _) = http(&addr, "POST", "/logout", &hdr, &format!("csrf={csrf}"));
    assert_eq!(s, 303);
    assert_eq!(http(&addr, "GET", "/", &[("Cookie", &cookie)], "").0, 303, "the session outlived its logout");
    // `POST /v1/web/logout` revokes the agent's tokens and ends its sessions.
    assert_eq!(d.post(Some(AGENT_A), "/v1/web/logout", &json!({})).expect(200)["revoked"], 1);
    assert_eq!(http(&addr, "GET", "/", &[("Cookie", &agent_cookie)], "").0, 303);
    drop(d);
    // An address that is not loopback is refused unless named explicitly;
    // a wildcard always (the page answers only to its own Host).
    for (config, why) in [
        ("[web]\nlisten = \"198.51.100.1:8790\"\n", "not a loopback address"),
        ("[web]\nlisten = \"0.0.0.0:8790\"\nallow_non_loopback = true\n", "not a wildcard"),
    ] {
        let (mut child, _, log) = Daemon::spawn(&fx, Some(config), "refused.sock");
        let st = child.wait().unwrap();
        let log = std::fs::read_to_string(log).unwrap_or_default();
        assert!(!st.success() && log.contains(why), "{config}: {st}\n{log}");
    }
    fx.finish();
}

/// The browser's Python (a venv of .ci/setup's).
fn python() -> PathBuf {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/web-venv/bin/python");
    assert!(p.is_file(), "{} is missing: run `bash .ci/setup` (it installs selenium)", p.display());
    for bin in ["/usr/bin/chromium", "/usr/bin/chromedriver"] {
        assert!(Path::new(bin).is_file(), "{bin} is missing: run `bash .ci/setup` (chromium, chromium-driver)");
    }
    p
}

/// The agent's batch: an allowed entry, one held for review that plants a
/// git hook, writes files (one with a hostile name), prints hostile text
/// and 50 MB, and makes 10,000 paths.
const WORK: &str = r#"mkdir -p .git/hooks many && printf '#!/bin/sh\necho owned\n' > .git/hooks/pre-commit && chmod +x .git/hooks/pre-commit && echo a > a.txt && echo world > b.txt && echo x > '<img src=x onerror=alert(1)>' && (cd many && seq -w 1 9994 | xargs touch) && printf 'start </script><script>alert(2)</script> \033[31mred\033[0m <img src=x onerror=alert(3)>\n' && yes 0123456789abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmnopqrstuvwxyz | head -c 52428800 && echo && echo the-end"#;

#[test]
fn a_reviewer_approves_watches_reviews_and_commits_in_a_browser() {
    let py = python();
    let fx = Fixture::new();
    let proj = owned_dir(&fx, "proj", AGENT_A);
    bind_review_policy(&fx, &proj);
    let d = Daemon::start(&fx, Some(CONFIG));
    let (root_token, url) = login_token(&d, None);
    let (agent_token, _) = login_token(&d, Some(AGENT_A));
    let batch = json!({"project": proj, "agent": "agent-7", "entries": [
        {"command": "echo hello"}, {"command": WORK}]});
    let id = submit_as(&d, AGENT_A, batch);
    let shots = std::env::var_os("CLOCHE_WEB_SCREENSHOTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| fx.out.path().join("screenshots"));
    std::fs::create_dir_all(&shots).unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/web/browser.py");
    let mut c = Command::new(py);
    c.arg(script).args([&url, &root_token, &agent_token, &id]).arg(&proj).arg(&shots);
    c.env("HOME", fx.out.path()).env_remove("CLOCHE_SOCKET");
    let o = run_cmd(&mut c, Duration::from_secs(240));
    assert_eq!(o.code, Some(0), "the browser's script failed:\n{}\ncloched:\n{}", o.describe(), tail(&d.log_text()));
    // What the page committed is on the host; what conflicted is the host's.
    assert_eq!(std::fs::read_to_string(proj.join("a.txt")).unwrap(), "a\n");
    assert_eq!(std::fs::read_to_string(proj.join("b.txt")).unwrap(), "host\n");
    assert!(!proj.join(".git").exists() && !proj.join("many").exists());
    let v = state_of(&d, &id);
    assert_eq!(v["state"], "partially_committed", "{v:#}");
    assert_eq!(v["approved_by"], "uid:0");
    drop(d);
    discard_kept(&fx);
    fx.finish();
}

fn tail(s: &str) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}
