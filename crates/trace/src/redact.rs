//! Secret redaction for commands, environments and log details.
//!
//! [`redact`] replaces the secret part of what looks like a credential with
//! `***` and keeps what names it (the variable, flag, header, URL user or the
//! token's well-known prefix), so a record still says what was passed. It is
//! a net, not a proof: it knows the common shapes (listed in docs/audit.md).
//! Every pattern is a `regex` (linear time), so hostile input cannot make it slow.

use std::borrow::Cow;
use std::sync::LazyLock;

use regex::{Captures, Regex, RegexSet};
use serde_json::Value;

/// What a secret is replaced with.
pub const MASK: &str = "***";

/// A string value in one of the shapes the rules capture.
const VALUE: &str = r#"("(?:[^"\\\n]|\\.)*"|'[^'\n]*'|[^\s'"&;|,}<>)\]]+)"#;

const AUTH_SCHEMES: &[&str] = &["bearer", "basic", "token", "digest", "negotiate", "ntlm", "apikey", "sso-key"];

type Replacer = fn(&Captures) -> String;

struct Rule {
    re: Regex,
    replace: Replacer,
}

fn rule(pattern: &str, replace: Replacer) -> Rule {
    Rule { re: Regex::new(pattern).expect("redaction pattern compiles"), replace }
}

/// `$1***` for the prefix-keeping rules.
fn keep_first(c: &Captures) -> String {
    format!("{}{MASK}", &c[1])
}

/// Masks a value, keeping its quotes; leaves variable references and
/// already-masked values alone.
fn mask_value(v: &str) -> Option<String> {
    let (open, inner, close) = match v.as_bytes().first() {
        Some(q @ (b'"' | b'\'')) if v.len() >= 2 => (*q as char, &v[1..v.len() - 1], *q as char),
        _ => ('\0', v, '\0'),
    };
    if inner.is_empty() || inner.starts_with('$') || inner.starts_with(MASK) {
        return None;
    }
    Some(if open == '\0' { MASK.to_string() } else { format!("{open}{MASK}{close}") })
}

/// Names of variables, keys and flags whose value is a secret.
pub fn is_secret_name(name: &str) -> bool {
    let upper = name.to_ascii_uppercase();
    let parts: Vec<&str> = upper.split(['_', '-', '.']).filter(|p| !p.is_empty()).collect();
    let Some(&last) = parts.last() else { return false };
    if upper.ends_with("PASSWORD") || upper.ends_with("PASSWD") || upper.ends_with("STOREPASS") {
        return true;
    }
    if upper.ends_with("KEYPASS") || upper.ends_with("SECRET_KEY_BASE") {
        return true;
    }
    let before = parts.len().checked_sub(2).map(|i| parts[i]);
    match last {
        "TOKEN" | "SECRET" | "PASS" | "PASSPHRASE" | "APIKEY" | "CREDENTIALS" | "CREDENTIAL" | "AUTHORIZATION"
        | "BEARER" => true,
        // PWD alone is the working directory.
        "PWD" => parts.len() > 1,
        "KEY" => matches!(before, Some("API" | "ACCESS" | "SECRET" | "PRIVATE" | "SIGNING" | "ENCRYPTION" | "MASTER")),
        _ => false,
    }
}

static RULES: LazyLock<Vec<Rule>> = LazyLock::new(|| {
    vec![
        // PEM private key blocks (RSA, EC, OPENSSH, ENCRYPTED, PGP ...); an unterminated one to the end.
        rule(
            r"(?s)(-----BEGIN [A-Z0-9 ]{0,40}PRIVATE KEY(?: BLOCK)?-----)(.*?)(-----END [A-Z0-9 ]{0,40}PRIVATE KEY(?: BLOCK)?-----|\z)",
            |c| if &c[2] == MASK { c[0].to_string() } else { format!("{}{MASK}{}", &c[1], &c[3]) },
        ),
        // HTTP credential headers, keeping the scheme: `Authorization: Bearer ***`.
        rule(
            r#"(?i)\b((?:proxy-)?authorization|x-api-key|x-auth-token|x-access-token|x-vault-token|private-token|api-key)([ \t]*[:=][ \t]*)((?:bearer|basic|token|digest|negotiate|ntlm|apikey|sso-key)[ \t]+)?([^\s'",;]+)"#,
            |c| {
                if &c[4] == MASK {
                    c[0].to_string()
                } else {
                    format!("{}{}{}{MASK}", &c[1], &c[2], c.get(3).map_or("", |m| m.as_str()))
                }
            },
        ),
        rule(r#"(?i)\b((?:set-)?cookie[ \t]*:[ \t]*)([^'"\r\n]+)"#, |c| {
            if &c[2] == MASK {
                c[0].to_string()
            } else {
                keep_first(c)
            }
        }),
        // user:password@ in URLs, keeping the user.
        rule(r#"\b([A-Za-z][A-Za-z0-9+.-]*://[^\s/?#@:'"]*:)([^\s/?#@'"]+)@"#, |c| {
            if &c[2] == MASK {
                c[0].to_string()
            } else {
                format!("{}{MASK}@", &c[1])
            }
        }),
        // NAME=value (env, query strings, ini), "name": "value" (JSON), name: value (YAML, headers).
        rule(
            &format!(r#"(^|[^A-Za-z0-9_$])([A-Za-z_][A-Za-z0-9_.-]*)("?)(=|[ \t]+=[ \t]+|[ \t]*:[ \t]*){VALUE}"#),
            |c| {
                let colon_bare = c[4].contains(':') && c[3].is_empty() && !c[4].ends_with([' ', '\t']);
                // `Authorization: Bearer ***`: the header rule kept the scheme.
                let scheme = AUTH_SCHEMES.iter().any(|s| c[5].eq_ignore_ascii_case(s));
                match mask_value(&c[5]) {
                    Some(m) if !colon_bare && !scheme && is_secret_name(&c[2]) => {
                        format!("{}{}{}{}{m}", &c[1], &c[2], &c[3], &c[4])
                    }
                    _ => c[0].to_string(),
                }
            },
        ),
        // --password VALUE, --token VALUE, -storepass VALUE ... (the = form is the rule above).
        rule(r#"(^|\s)(--?)([A-Za-z][A-Za-z0-9_-]*)([ \t]+)("(?:[^"\\\n]|\\.)*"|'[^'\n]*'|[^\s'"-][^\s'"]*)"#, |c| {
            match mask_value(&c[5]) {
                Some(m) if is_secret_name(&c[3]) && !c[3].starts_with("no-") => {
                    format!("{}{}{}{}{m}", &c[1], &c[2], &c[3], &c[4])
                }
                _ => c[0].to_string(),
            }
        }),
        // curl -u user:password, --user, --proxy-user (not uid:gid).
        rule(r#"(^|\s)(-u|-U|--user|--proxy-user)([ \t]+|=)([^\s:'"]+):([^\s'"]+)"#, |c| {
            if &c[5] == MASK || c[5].bytes().all(|b| b.is_ascii_digit()) {
                c[0].to_string()
            } else {
                format!("{}{}{}{}:{MASK}", &c[1], &c[2], &c[3], &c[4])
            }
        }),
        // openssl -passin pass:secret
        rule(r#"\b(pass:)([^\s'"]+)"#, |c| if &c[2] == MASK { c[0].to_string() } else { keep_first(c) }),
        // Well-known token shapes, keeping the prefix.
        rule(r"\b(gh[pousr]_)[A-Za-z0-9]{20,255}\b", keep_first),
        rule(r"\b(github_pat_)[A-Za-z0-9_]{20,255}", keep_first),
        rule(r"\b(AKIA|ASIA)[A-Z0-9]{16}\b", keep_first),
        rule(r"\b(xox[abposr]-)[A-Za-z0-9-]{10,}", keep_first),
        rule(r"\b(glpat-)[A-Za-z0-9_-]{20,}", keep_first),
        rule(r"\b(npm_)[A-Za-z0-9]{36}\b", keep_first),
        rule(r"\b(sk-(?:proj-|ant-)?)[A-Za-z0-9_-]{20,}", keep_first),
        rule(r"\b((?:sk|rk)_(?:live|test)_)[A-Za-z0-9]{16,}", keep_first),
        rule(r"\b(AIza)[0-9A-Za-z_-]{35}", keep_first),
        rule(r"\b(eyJ)[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*", keep_first),
        // A bearer token anywhere, when it looks like one.
        rule(r"(?i)\b(bearer[ \t]+)([A-Za-z0-9._~+/-]{8,}=*)", |c| {
            if c[2].bytes().any(|b| b.is_ascii_digit() || b"._~+/-".contains(&b)) {
                keep_first(c)
            } else {
                c[0].to_string()
            }
        }),
    ]
});

/// Tools where `-pSECRET` (attached) is a password, and tools where `-p SECRET` is.
static ATTACHED_P: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?:^|[\s/])(?:mysql|mysqldump|mysqladmin|mysqlimport|mysqlshow|mysqlcheck|mysqlslap|mysqlpump|mysqlsh|mariadb|mariadb-dump|mariadb-admin)(?:\s|$)").expect("compiles")
});
static SPACED_P: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?:^|[\s/])(?:sshpass(?:\s|$)|(?:docker|podman|nerdctl|buildah|skopeo|helm|oras)\s.*\blogin\b)")
        .expect("compiles")
});
static P_ATTACHED: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r#"(^|\s)(-p)("(?:[^"\\\n]|\\.)*"|'[^'\n]*'|[^\s'"]+)"#).expect("compiles"));
static P_SPACED: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r#"(^|\s)(-p[ \t]*)("(?:[^"\\\n]|\\.)*"|'[^'\n]*'|[^\s'"-][^\s'"]*)"#).expect("compiles")
});

/// `-p` passwords of the tools above, one shell command (between `;`, `&`, `|`, newlines) at a time.
fn redact_dash_p(text: &str) -> Cow<'_, str> {
    if !text.contains("-p") {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len());
    let mut changed = false;
    for segment in text.split_inclusive([';', '&', '|', '\n']) {
        let re = if SPACED_P.is_match(segment) {
            &*P_SPACED
        } else if ATTACHED_P.is_match(segment) {
            &*P_ATTACHED
        } else {
            out.push_str(segment);
            continue;
        };
        let new = re.replace_all(segment, |c: &Captures| match mask_value(&c[3]) {
            Some(m) => format!("{}{}{m}", &c[1], &c[2]),
            None => c[0].to_string(),
        });
        changed |= new != segment;
        out.push_str(&new);
    }
    if changed {
        Cow::Owned(out)
    } else {
        Cow::Borrowed(text)
    }
}

/// Every rule's pattern at once: one pass says which rules match a text
/// at all (most strings, paths and hashes in an audit record match none
/// or one), so only those run their slower replacing search.
static ANY_RULE: LazyLock<RegexSet> =
    LazyLock::new(|| RegexSet::new(RULES.iter().map(|r| r.re.as_str())).expect("redaction patterns compile"));

/// Compiles every pattern now rather than at the first redaction (the
/// daemon's spawner does it before it forks any job: each job inherits
/// them compiled instead of compiling them for its one audit record).
pub fn compile_now() {
    for re in [&ATTACHED_P, &SPACED_P, &P_ATTACHED, &P_SPACED] {
        LazyLock::force(re);
    }
    LazyLock::force(&ANY_RULE); // and RULES, which it is made of
}

/// `text` with secrets replaced by `***`; borrowed when nothing was found.
pub fn redact(text: &str) -> Cow<'_, str> {
    let mut current: Cow<'_, str> = Cow::Borrowed(text);
    // The same as running every rule in turn: a rule that does not match
    // the text as it stands changes nothing, and the set is asked again
    // whenever a rule changed the text.
    let mut hits = ANY_RULE.matches(&current);
    for (i, r) in RULES.iter().enumerate() {
        if !hits.matched(i) {
            continue;
        }
        let next = match r.re.replace_all(&current, |c: &Captures| (r.replace)(c)) {
            Cow::Owned(o) if o != *current => Some(o),
            _ => None,
        };
        if let Some(o) = next {
            current = Cow::Owned(o);
            hits = ANY_RULE.matches(&current);
        }
    }
    let next = match redact_dash_p(&current) {
        Cow::Owned(o) => Some(o),
        Cow::Borrowed(_) => None,
    };
    if let Some(o) = next {
        current = Cow::Owned(o);
    }
    current
}

/// Redacts every string in `value` in place; a string under a key that
/// names a secret (`password`, `GITHUB_TOKEN`, ...) is masked whole.
pub fn redact_json(value: &mut Value) {
    match value {
        Value::String(s) => {
            if let Cow::Owned(o) = redact(s) {
                *s = o;
            }
        }
        Value::Array(items) => items.iter_mut().for_each(redact_json),
        Value::Object(map) => {
            for (k, v) in map.iter_mut() {
                match v {
                    Value::String(s) if is_secret_name(k) && !s.is_empty() => *s = MASK.to_string(),
                    _ => redact_json(v),
                }
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests;
