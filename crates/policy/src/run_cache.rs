//! A policy's head kept as JSON for worlds' runs.
//!
//! A world's run reads every section of its policy but `[commands]`, which
//! only classification uses. The TOML parser takes about 2.8 ms for the
//! default policy's 1,600 lines, nearly all of them rules: a project bound
//! to a policy of its own (`cloche policy set`) or a `--policy FILE` paid it
//! on every `cloche run`, two thirds again of a whole run. So the first run
//! of a policy text parses it whole (its rules compiled, which checks
//! them) and writes the rest of the document, converted to JSON, to a
//! cache file named by the caller; later runs of the same text read that
//! (about 0.2 ms) and compile the rules only if something classifies.
//!
//! A cache file is one line of JSON (its format, the name it was written
//! under: the store's version id, or a policy file's FNV-1a and length;
//! the head), then the very text it was made from. It is used only when
//! that text is the run's own, byte for byte, and the format and name
//! match and it parses: the name only finds the file, so two texts that
//! share one replace each other's entry, never use it. Anything else is
//! ignored and written again; an entry is written only when the policy it
//! gives is the one the TOML gives (every field, in its Debug form).
//! Writing is a new file renamed into place, so a reader sees a whole one
//! or none; a cache that cannot be written costs the next run the parse,
//! nothing else.

use crate::rules::CommandRules;
use crate::{Policy, PolicyError, RawPolicy, Seccomp};
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::sync::Arc;

/// Bumped when what is cached changes meaning (2: the text follows the
/// JSON line).
const FORMAT: u32 = 2;

#[derive(Serialize, Deserialize)]
struct Cached {
    format: u32,
    /// The name of the text the head was taken from (its digest).
    text: String,
    head: serde_json::Value,
}

/// A cache entry found for a text (`lookup`): its head.
pub(crate) struct Found(RawPolicy);

/// The policy of `text` for a world's run: from the head `found` in the
/// cache when it was (`lookup`), else parsed whole (rules compiled,
/// examples not classified) and its head cached in `cache` under the name
/// `digest`, followed by `made_from` (the bytes a later `lookup` compares:
/// the text, or a stored version's text and profile).
pub(crate) fn for_run(
    text: &str,
    made_from: &[u8],
    digest: &str,
    origin: &str,
    seccomp: Seccomp,
    cache: &Path,
    found: Option<Found>,
) -> Result<Policy, PolicyError> {
    if let Some(Found(raw)) = found {
        return from_head(raw, text, origin, seccomp);
    }
    let whole = Policy::parse(text, origin, seccomp, false)?;
    if let Some(cached) = head_of(text, digest) {
        // Only a head that gives this very policy is kept.
        let same = serde_json::from_value::<RawPolicy>(cached.head.clone())
            .ok()
            .and_then(|raw| from_head(raw, text, origin, seccomp).ok())
            .is_some_and(|p| without_rules(&p) == without_rules(&whole));
        if same {
            write(cache, &cached, made_from);
        }
    }
    Ok(whole)
}

/// The head cached in `cache`, when it was made from these very bytes
/// (`made_from`), under the name `digest`, in this format.
pub(crate) fn lookup(cache: &Path, digest: &str, made_from: &[u8]) -> Option<Found> {
    let bytes = std::fs::read(cache).ok()?;
    let (json, from) = split(&bytes)?;
    if from != made_from {
        return None;
    }
    let c: Cached = serde_json::from_slice(json).ok()?;
    if c.format != FORMAT || c.text != digest {
        return None;
    }
    serde_json::from_value(c.head).ok().map(Found)
}

/// A cache file's JSON line and the text after it.
fn split(bytes: &[u8]) -> Option<(&[u8], &[u8])> {
    let nl = bytes.iter().position(|&b| b == b'\n')?;
    Some((&bytes[..nl], &bytes[nl + 1..]))
}

/// The policy of a head, its rules compiled from `text` on first use.
fn from_head(raw: RawPolicy, text: &str, origin: &str, seccomp: Seccomp) -> Result<Policy, PolicyError> {
    let mut p = Policy::from_raw(raw, text, origin, seccomp, false)?;
    p.commands = CommandRules::lazy_whole(Arc::from(text), p.secrets_of());
    Ok(p)
}

/// Everything of `text` but `[commands]`, as JSON.
fn head_of(text: &str, digest: &str) -> Option<Cached> {
    let mut doc: toml::Table = toml::from_str(text).ok()?;
    doc.remove("commands");
    let head = serde_json::to_value(doc).ok()?;
    Some(Cached { format: FORMAT, text: digest.to_string(), head })
}

/// A policy's Debug form with its rules left out (compiled or not).
fn without_rules(p: &Policy) -> String {
    let mut p = p.clone();
    p.commands = CommandRules::empty();
    format!("{p:?}")
}

/// Writes `c` and the bytes it was made from to `cache` whole (a new file
/// renamed over it), or not at all. (Compact JSON holds no newline: one
/// within a string is written `\n`.)
fn write(cache: &Path, c: &Cached, made_from: &[u8]) {
    let Ok(mut json) = serde_json::to_vec(c) else { return };
    json.push(b'\n');
    json.extend_from_slice(made_from);
    let tmp = cache.with_extension(format!("tmp{}", std::process::id()));
    let written = (|| {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp)?;
        f.write_all(&json)?;
        std::fs::rename(&tmp, cache)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::DEFAULT_POLICY;

    fn run(text: &str, cache: &Path) -> Policy {
        let found = lookup(cache, "digest-a", text.as_bytes());
        for_run(text, text.as_bytes(), "digest-a", "t", Seccomp::Given(None), cache, found).unwrap()
    }

    /// The first run writes the head; later runs read it and give the same
    /// policy, whose rules (compiled on first use) classify as the whole
    /// document's do.
    #[test]
    fn a_later_run_reads_the_head_and_gives_the_same_policy() {
        let tmp = tempfile::tempdir().unwrap();
        let cache = tmp.path().join("head.json");
        let whole = Policy::parse(DEFAULT_POLICY, "t", Seccomp::Given(None), false).unwrap();
        let first = run(DEFAULT_POLICY, &cache);
        let bytes = std::fs::read(&cache).unwrap();
        let (json, made_from) = split(&bytes).unwrap();
        assert_eq!(made_from, DEFAULT_POLICY.as_bytes(), "the text after the JSON line");
        let c: Cached = serde_json::from_slice(json).unwrap();
        assert_eq!((c.format, c.text.as_str()), (FORMAT, "digest-a"));
        assert!(c.head.get("commands").is_none() && c.head.get("fs").is_some(), "the head without the rules");
        let later = run(DEFAULT_POLICY, &cache);
        assert_eq!(without_rules(&first), without_rules(&whole));
        assert_eq!(without_rules(&later), without_rules(&whole));
        assert!(!whole.commands.rules().is_empty());
        assert_eq!(later.commands.rules().len(), whole.commands.rules().len());
        for line in ["git status", "rm -rf /", "curl https://example.com | sh", "cat ~/.ssh/id_rsa"] {
            assert_eq!(format!("{:?}", later.classify(line)), format!("{:?}", whole.classify(line)), "{line}");
        }
    }

    /// What the cache holds is what a later run uses (so a test of its
    /// speed-up measures something), but only for the very text it was
    /// made from and names, in this format, and only when it parses.
    #[test]
    fn the_cache_is_used_only_for_its_own_text() {
        let tmp = tempfile::tempdir().unwrap();
        let cache = tmp.path().join("head.json");
        run(DEFAULT_POLICY, &cache);
        let doctor_text = |f: &dyn Fn(&mut Cached), made_from: &str| {
            let bytes = std::fs::read(&cache).unwrap();
            let mut c: Cached = serde_json::from_slice(split(&bytes).unwrap().0).unwrap();
            c.head["world"]["hostname"] = "from-the-cache".into();
            f(&mut c);
            let mut out = serde_json::to_vec(&c).unwrap();
            out.push(b'\n');
            out.extend_from_slice(made_from.as_bytes());
            std::fs::write(&cache, out).unwrap();
        };
        let doctor = |f: &dyn Fn(&mut Cached)| doctor_text(f, DEFAULT_POLICY);
        doctor(&|_| {});
        assert_eq!(run(DEFAULT_POLICY, &cache).world.hostname, "from-the-cache");
        // The same name, another text (a name shared by two texts): the
        // run's own text is parsed, and its entry written again.
        let other = DEFAULT_POLICY.replacen("hostname = \"cloche\"", "hostname = \"other\"", 1);
        assert_ne!(other, DEFAULT_POLICY);
        doctor_text(&|_| {}, &other);
        assert_eq!(run(DEFAULT_POLICY, &cache).world.hostname, "cloche", "another text's head");
        assert_eq!(split(&std::fs::read(&cache).unwrap()).unwrap().1, DEFAULT_POLICY.as_bytes());
        doctor_text(&|_| {}, &DEFAULT_POLICY[..DEFAULT_POLICY.len() - 1]);
        assert_eq!(run(DEFAULT_POLICY, &cache).world.hostname, "cloche", "a text one byte short");
        doctor(&|c| c.text = "digest-b".into());
        assert_eq!(run(DEFAULT_POLICY, &cache).world.hostname, "cloche", "another text's head");
        // ...and written again for this text.
        assert_eq!(run(DEFAULT_POLICY, &cache).world.hostname, "cloche");
        doctor(&|c| c.format = FORMAT + 1);
        assert_eq!(run(DEFAULT_POLICY, &cache).world.hostname, "cloche", "another format");
        let mut bad = b"{\"format\": 2, \"text\": \"digest-a\", \"head\": {\"world\": 3}}\n".to_vec();
        bad.extend_from_slice(DEFAULT_POLICY.as_bytes());
        std::fs::write(&cache, bad).unwrap();
        assert_eq!(run(DEFAULT_POLICY, &cache).world.hostname, "cloche", "a head that does not parse");
        // An entry of the first format (JSON alone, no text after it).
        let c = Cached { format: 1, text: "digest-a".into(), head: serde_json::json!({"world": {"hostname": "old"}}) };
        std::fs::write(&cache, serde_json::to_vec(&c).unwrap()).unwrap();
        assert_eq!(run(DEFAULT_POLICY, &cache).world.hostname, "cloche", "the first format");
        std::fs::write(&cache, b"not json").unwrap();
        assert_eq!(run(DEFAULT_POLICY, &cache).world.hostname, "cloche");
    }

    /// An invalid policy is refused whether or not a cache exists, and no
    /// cache is written for it; a cache that cannot be written costs nothing
    /// but the parse.
    #[test]
    fn invalid_policies_are_refused_and_unwritable_caches_ignored() {
        let tmp = tempfile::tempdir().unwrap();
        let cache = tmp.path().join("head.json");
        let bad = DEFAULT_POLICY.replacen("[world]", "[world]\nnope = 1", 1);
        assert!(for_run(&bad, bad.as_bytes(), "digest-c", "t", Seccomp::Given(None), &cache, None).is_err());
        assert!(!cache.exists());
        let nowhere = tmp.path().join("missing-dir").join("head.json");
        assert_eq!(run(DEFAULT_POLICY, &nowhere).world.hostname, "cloche");
        assert!(!nowhere.exists());
        assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 0, "no temporary file left");
    }
}
