//! Login tokens and browser sessions of the reviewer's page.
//!
//! - A **login token** is made by `POST /v1/web/login` for the caller of
//!   the Unix socket (its uid, gid and groups as `SO_PEERCRED` and
//!   `SO_PEERGROUPS` gave them) and shown to it once. The daemon keeps only
//!   its SHA-256, with that identity and an expiry, in
//!   `<state>/web-tokens.json` (0600, root's, replaced atomically): a
//!   restart keeps the tokens that have not expired. `POST /v1/web/logout`
//!   drops every token of the caller's uid (and their sessions).
//! - A **session** is what a browser gets for a token posted to `/login`:
//!   a random cookie value (its SHA-256 kept, in memory only: a restart
//!   drops every session, the token logs in again) and a random CSRF
//!   token that every state-changing request must carry. A session ends
//!   with its token (expired or revoked) or at logout.
//!
//! Roles are never stored: they are the configuration's for the token's
//! uid, gid and groups, asked again on every request.

use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The most tokens and browser sessions one uid holds at once: its own
/// oldest go beyond, never another user's (a caller cannot log a reviewer
/// out by asking for tokens).
const PER_UID_TOKENS: usize = 16;
const PER_UID_SESSIONS: usize = 32;
/// The most kept at once in all; beyond, new ones are refused.
const MAX_TOKENS: usize = 1024;
const MAX_SESSIONS: usize = 4096;

/// Who a token logs in as.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<u32>,
}

/// A token as kept: its hash, never the token.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Record {
    sha256: String,
    #[serde(flatten)]
    who: Identity,
    created_ms: u64,
    expires_ms: u64,
}

/// A browser's session.
#[derive(Debug, Clone)]
pub struct Session {
    /// The token it logged in with (its hash).
    token: String,
    /// The CSRF token its forms carry.
    pub csrf: String,
    pub who: Identity,
    /// When it began (ms), to drop a uid's oldest beyond its share.
    since_ms: u64,
}

/// The tokens and sessions.
pub struct Tokens {
    file: PathBuf,
    ttl: Duration,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    tokens: Vec<Record>,
    /// By the hash of the cookie's value.
    sessions: HashMap<String, Session>,
}

/// 32 random bytes, URL-safe base64.
pub fn random_token() -> Result<String, String> {
    let mut b = [0u8; 32];
    getrandom::fill(&mut b).map_err(|e| format!("random bytes: {e}"))?;
    Ok(B64.encode(b))
}

fn sha256_hex(s: &str) -> String {
    Sha256::digest(s.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// Equal without a time that depends on where they differ.
pub fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl Tokens {
    /// The tokens of `state` (the expired and unreadable ones dropped: a
    /// file that does not parse is started afresh, said in the log).
    pub fn open(state: &Path, ttl: Duration) -> Tokens {
        let file = state.join("web-tokens.json");
        let tokens: Vec<Record> = match std::fs::read(&file) {
            Ok(b) => serde_json::from_slice(&b).unwrap_or_else(|e| {
                tracing::warn!(file = %file.display(), error = %e, "web tokens unreadable: none kept");
                Vec::new()
            }),
            Err(_) => Vec::new(),
        };
        let now = now_ms();
        let tokens: Vec<Record> = tokens.into_iter().filter(|r| r.expires_ms > now).collect();
        let t = Tokens { file, ttl, inner: Mutex::new(Inner { tokens, sessions: HashMap::new() }) };
        let inner = t.lock();
        if let Err(e) = t.save(&inner) {
            tracing::warn!(error = %e, "web tokens not saved");
        }
        drop(inner);
        t
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Writes the records: a new file (0600) renamed over the old one.
    fn save(&self, inner: &Inner) -> Result<(), String> {
        let tmp = self.file.with_extension("json.tmp");
        let _ = std::fs::remove_file(&tmp);
        let bytes = serde_json::to_vec(&inner.tokens).map_err(|e| e.to_string())?;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&tmp)
            .map_err(|e| format!("{}: {e}", tmp.display()))?;
        f.write_all(&bytes).and_then(|()| f.sync_all()).map_err(|e| format!("{}: {e}", tmp.display()))?;
        std::fs::rename(&tmp, &self.file).map_err(|e| format!("{}: {e}", self.file.display()))
    }

    /// A new token for `who`: the token (shown once) and its expiry (ms).
    pub fn issue(&self, who: Identity) -> Result<(String, u64), String> {
        let token = random_token()?;
        let now = now_ms();
        let expires_ms = now + self.ttl.as_millis() as u64;
        let mut inner = self.lock();
        inner.tokens.retain(|r| r.expires_ms > now);
        // The caller's own oldest beyond its share (tokens are in issue order).
        while inner.tokens.iter().filter(|r| r.who.uid == who.uid).count() >= PER_UID_TOKENS {
            let Some(i) = inner.tokens.iter().position(|r| r.who.uid == who.uid) else { break };
            inner.tokens.remove(i);
        }
        if inner.tokens.len() >= MAX_TOKENS {
            return Err(format!("too many live login tokens ({MAX_TOKENS}, of every user): try again later"));
        }
        inner.tokens.push(Record { sha256: sha256_hex(&token), who, created_ms: now, expires_ms });
        self.save(&inner)?;
        Ok((token, expires_ms))
    }

    /// Drops every token of `uid` and their sessions; how many tokens.
    pub fn revoke_uid(&self, uid: u32) -> Result<usize, String> {
        let mut inner = self.lock();
        let before = inner.tokens.len();
        inner.tokens.retain(|r| r.who.uid != uid);
        let n = before - inner.tokens.len();
        inner.sessions.retain(|_, s| s.who.uid != uid);
        self.save(&inner)?;
        Ok(n)
    }

    /// The identity of a live token.
    fn live(inner: &Inner, hash: &str) -> Option<Identity> {
        let now = now_ms();
        inner
            .tokens
            .iter()
            .find(|r| same(r.sha256.as_bytes(), hash.as_bytes()) && r.expires_ms > now)
            .map(|r| r.who.clone())
    }

    /// A session for a token posted to `/login`: the cookie's value and the
    /// session; `None` for a token that is not live.
    pub fn login(&self, token: &str) -> Result<Option<(String, Session)>, String> {
        let hash = sha256_hex(token.trim());
        let mut inner = self.lock();
        let Some(who) = Tokens::live(&inner, &hash) else { return Ok(None) };
        let cookie = random_token()?;
        let now = now_ms();
        let uid = who.uid;
        let s = Session { token: hash, csrf: random_token()?, who, since_ms: now };
        let live: Vec<String> = inner.tokens.iter().filter(|r| r.expires_ms > now).map(|r| r.sha256.clone()).collect();
        inner.sessions.retain(|_, s| live.contains(&s.token));
        // The uid's own oldest session beyond its share.
        while inner.sessions.values().filter(|s| s.who.uid == uid).count() >= PER_UID_SESSIONS {
            let oldest = inner
                .sessions
                .iter()
                .filter(|(_, s)| s.who.uid == uid)
                .min_by_key(|(_, s)| s.since_ms)
                .map(|(k, _)| k.clone());
            let Some(k) = oldest else { break };
            inner.sessions.remove(&k);
        }
        if inner.sessions.len() >= MAX_SESSIONS {
            return Err("too many browser sessions: log out of some".into());
        }
        inner.sessions.insert(sha256_hex(&cookie), s.clone());
        Ok(Some((cookie, s)))
    }

    /// The session of a cookie's value, while its token lives.
    pub fn session(&self, cookie: &str) -> Option<Session> {
        let mut inner = self.lock();
        let key = sha256_hex(cookie);
        let s = inner.sessions.get(&key)?.clone();
        match Tokens::live(&inner, &s.token) {
            Some(_) => Some(s),
            None => {
                inner.sessions.remove(&key);
                None
            }
        }
    }

    /// Ends one session.
    pub fn logout(&self, cookie: &str) {
        self.lock().sessions.remove(&sha256_hex(cookie));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn who(uid: u32) -> Identity {
        Identity { uid, gid: uid, groups: vec![uid, 7] }
    }

    #[test]
    fn tokens_are_kept_hashed_live_until_revoked_and_survive_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let t = Tokens::open(dir.path(), Duration::from_secs(60));
        let (token, _) = t.issue(who(1000)).unwrap();
        let (other, _) = t.issue(who(1001)).unwrap();
        let file = std::fs::read_to_string(dir.path().join("web-tokens.json")).unwrap();
        assert!(!file.contains(&token) && file.contains(&sha256_hex(&token)), "{file}");
        let (cookie, s) = t.login(&token).unwrap().unwrap();
        assert_eq!(s.who, who(1000));
        assert_eq!(t.session(&cookie).unwrap().csrf, s.csrf);
        assert!(t.login("not-a-token").unwrap().is_none());
        // A restart keeps the tokens, not the sessions.
        let t = Tokens::open(dir.path(), Duration::from_secs(60));
        assert!(t.session(&cookie).is_none());
        let (cookie, _) = t.login(&token).unwrap().unwrap();
        let (cookie2, _) = t.login(&other).unwrap().unwrap();
        assert_eq!(t.revoke_uid(1000).unwrap(), 1);
        assert!(t.session(&cookie).is_none() && t.login(&token).unwrap().is_none());
        assert!(t.session(&cookie2).is_some());
        t.logout(&cookie2);
        assert!(t.session(&cookie2).is_none());
    }

    #[test]
    fn one_user_asking_for_many_tokens_and_sessions_drops_only_its_own() {
        let dir = tempfile::tempdir().unwrap();
        let t = Tokens::open(dir.path(), Duration::from_secs(60));
        let (reviewer, _) = t.issue(who(1000)).unwrap();
        let (cookie, _) = t.login(&reviewer).unwrap().unwrap();
        let (first, _) = t.issue(who(2000)).unwrap();
        let mut last = String::new();
        for _ in 0..MAX_TOKENS + 5 {
            last = t.issue(who(2000)).unwrap().0;
        }
        // The reviewer's token and session live on; the agent's first went.
        assert!(t.session(&cookie).is_some());
        assert!(t.login(&reviewer).unwrap().is_some());
        assert!(t.login(&first).unwrap().is_none());
        for _ in 0..PER_UID_SESSIONS * 3 {
            t.login(&last).unwrap().unwrap();
        }
        assert!(t.session(&cookie).is_some());
        let inner = t.lock();
        assert_eq!(inner.tokens.iter().filter(|r| r.who.uid == 2000).count(), PER_UID_TOKENS);
        assert_eq!(inner.sessions.values().filter(|s| s.who.uid == 2000).count(), PER_UID_SESSIONS);
    }

    #[test]
    fn expired_tokens_log_nobody_in() {
        let dir = tempfile::tempdir().unwrap();
        let t = Tokens::open(dir.path(), Duration::from_millis(1));
        let (token, _) = t.issue(who(5)).unwrap();
        std::thread::sleep(Duration::from_millis(5));
        assert!(t.login(&token).unwrap().is_none());
        assert!(same(b"abc", b"abc") && !same(b"abc", b"abd") && !same(b"ab", b"abc"));
    }
}
