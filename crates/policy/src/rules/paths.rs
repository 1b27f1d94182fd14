//! Words as paths: the subjects (see `glob`) a word may stand for when a
//! program opens it, given the working directory the line set.
//!
//! `~user` is that user's home; `/root/…` and `/home/<user>/…` are also
//! tried as `~/…`; a brace expansion gives its alternatives. For review
//! rules ([`Mode::Wide`]) a path may also be where the line cannot see:
//! a relative path that leaves the working directory with `..`, or any
//! relative path after a `cd` to a directory only known at run time, may
//! be anywhere (`/**/…`); and a path inside the working directory is also
//! tried as if the working directory were a home (the policy masks home
//! secrets such as `.ssh` below it too).

use super::glob::{home_alias, normalize};
use crate::shell::Word;
use std::borrow::Cow;

/// How a rule's conditions are tested (docs/policy.md, *Sure and possible
/// matches*).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// Allow rules: every word looked at must be known, and match.
    Sure,
    /// Deny rules: some run-time value makes the condition hold.
    Possible,
    /// Review rules: as `Possible`, and paths may also be where the line
    /// cannot see (module doc).
    Wide,
}

impl Mode {
    pub fn possible(self) -> bool {
        self != Mode::Sure
    }
}

/// The working directory of a command, as far as the line tells.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Cwd {
    /// Set by a `cd` to a known directory (an escaped subject).
    pub dir: Option<String>,
    /// A `cd` went somewhere only known at run time (or out of the
    /// working directory with `..`).
    pub lost: bool,
}

impl Cwd {
    pub fn lost() -> Cwd {
        Cwd { dir: None, lost: true }
    }

    /// After `cd WORD` (`None`: `cd` alone, the home directory).
    pub fn after_cd(&self, target: Option<&Word>) -> Cwd {
        let Some(a) = target else { return Cwd { dir: Some("~".into()), lost: false } };
        if !a.literal() || a.text == "-" {
            return Cwd::lost();
        }
        let s = user_home(a.subject()).unwrap_or_else(|| a.subject().to_string());
        if s.starts_with('/') || s.starts_with('~') {
            return Cwd { dir: Some(normalize(&s).into_owned()), lost: false };
        }
        match &self.dir {
            Some(c) => Cwd { dir: Some(normalize(&format!("{c}/{s}")).into_owned()), lost: false },
            None if self.lost || escapes(&normalize(&s)) => Cwd::lost(),
            None => self.clone(),
        }
    }
}

/// One subject a word may stand for. `outside`: a path outside the
/// working directory (absolute, or relative to a known or lost one).
pub(crate) struct PathSubject {
    pub subject: String,
    pub outside: bool,
}

/// The subjects word `w` may stand for as a path.
pub(crate) fn subjects(w: &Word, mode: Mode, cwd: &Cwd) -> Vec<PathSubject> {
    let mut out = Vec::new();
    for base in alternatives(w) {
        let base = user_home(&base).map_or(base, Cow::Owned);
        let n = normalize(&base);
        if n != base {
            // As written, too (for patterns that are not paths).
            out.push(PathSubject { subject: base.to_string(), outside: false });
        }
        if n.starts_with('/') || n.starts_with('~') {
            absolute(&n, mode, &mut out);
            continue;
        }
        out.push(PathSubject { subject: n.to_string(), outside: false });
        // A word starting with a run-time value may be anything (programs
        // that open such a word are review: `runtime_args`); it is not taken
        // as a path here, so that `echo $X` stays printing.
        if n.starts_with('-') || (w.dynamic && n.starts_with('*')) {
            continue;
        }
        if let Some(d) = &cwd.dir {
            absolute(&normalize(&format!("{d}/{n}")), mode, &mut out);
        } else if mode == Mode::Wide {
            if cwd.lost || escapes(&n) {
                anywhere(&n, &mut out);
            } else {
                out.push(PathSubject { subject: format!("~/{n}"), outside: false });
            }
        }
    }
    out
}

fn absolute(n: &str, mode: Mode, out: &mut Vec<PathSubject>) {
    out.push(PathSubject { subject: n.to_string(), outside: true });
    if let Some(h) = home_alias(n) {
        out.push(PathSubject { subject: h, outside: true });
    }
    if mode == Mode::Wide && escapes(n) {
        anywhere(n, out);
    }
}

/// A `..` component normalisation could not remove (after a wildcard, or
/// leading a relative path).
fn escapes(n: &str) -> bool {
    n.split('/').any(|seg| seg == "..")
}

/// Any absolute path ending in what follows the last `..` of `n`.
fn anywhere(n: &str, out: &mut Vec<PathSubject>) {
    let segs: Vec<&str> = n.split('/').collect();
    let tail = match segs.iter().rposition(|s| *s == "..") {
        Some(i) => segs[i + 1..].join("/"),
        None => n.to_string(),
    };
    if tail.is_empty() {
        out.push(PathSubject { subject: "/**".into(), outside: true });
    } else {
        out.push(PathSubject { subject: format!("/{tail}"), outside: true });
        out.push(PathSubject { subject: format!("/**/{tail}"), outside: true });
    }
}

/// A glob word before `--` whose expansion may start with `-`, so that
/// the program reads a file name as an option.
pub(crate) fn may_be_option(w: &Word) -> bool {
    if !w.glob || w.dynamic {
        return false;
    }
    let mut alts = Vec::new();
    if !w.text.contains('{') || !expand_braces(&w.text, &mut alts) {
        alts = vec![w.text.clone()];
    }
    alts.iter().any(|a| a.starts_with(['-', '*', '?', '[']))
}

/// `~root/x` → `/root/x`, `~al/x` → `/home/al/x`, `~+/x` → `x`; `~-`
/// (the previous directory) is unknown.
fn user_home(s: &str) -> Option<String> {
    let rest = s.strip_prefix('~')?;
    let end = rest.find('/').unwrap_or(rest.len());
    let (name, tail) = rest.split_at(end);
    match name {
        "" => None,
        "+" => Some(format!(".{tail}")),
        "-" => Some(format!("/**{tail}")),
        "root" => Some(format!("/root{tail}")),
        n => Some(format!("/home/{n}{tail}")),
    }
}

/// Most alternatives a brace expansion is expanded into.
const MAX_ALTERNATIVES: usize = 64;

/// The word's subject, or for a brace expansion of known text, one subject
/// per alternative (`/etc/{shadow,passwd}`).
fn alternatives(w: &Word) -> Vec<Cow<'_, str>> {
    if w.glob && !w.dynamic && w.text.contains('{') {
        let mut alts = Vec::new();
        if expand_braces(&w.text, &mut alts) {
            return alts.iter().map(|a| Cow::Owned(glob_subject(a))).collect();
        }
    }
    vec![Cow::Borrowed(w.subject())]
}

/// Expands the first brace group of `s` (recursively); false when there
/// are too many alternatives.
fn expand_braces(s: &str, out: &mut Vec<String>) -> bool {
    let Some((open, close, parts)) = brace_group(s) else {
        out.push(s.to_string());
        return out.len() <= MAX_ALTERNATIVES;
    };
    for p in parts {
        if !expand_braces(&format!("{}{p}{}", &s[..open], &s[close + 1..]), out) {
            return false;
        }
    }
    true
}

/// The first `{…}` with a top-level `,` or `..`: its bounds and
/// alternatives (a sequence `{1..9}` is one `*`).
fn brace_group(s: &str) -> Option<(usize, usize, Vec<String>)> {
    let b = s.as_bytes();
    for open in (0..b.len()).filter(|&i| b[i] == b'{') {
        let (mut depth, mut parts, mut start, mut seq) = (0u32, Vec::new(), open + 1, false);
        for (i, &c) in b.iter().enumerate().skip(open) {
            match c {
                b'{' => depth += 1,
                b'}' => {
                    depth -= 1;
                    if depth == 0 {
                        if parts.is_empty() && !seq {
                            break;
                        }
                        if seq && parts.is_empty() {
                            return Some((open, i, vec!["*".into()]));
                        }
                        parts.push(s[start..i].to_string());
                        return Some((open, i, parts));
                    }
                }
                b',' if depth == 1 => {
                    parts.push(s[start..i].to_string());
                    start = i + 1;
                }
                b'.' if depth == 1 && b.get(i + 1) == Some(&b'.') => seq = true,
                _ => {}
            }
        }
    }
    None
}

/// Text with glob characters as a subject: `*`, `?` and `[…]` (one
/// character) are wildcards, a backslash is literal.
fn glob_subject(t: &str) -> String {
    let mut s = String::with_capacity(t.len());
    let mut chars = t.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        match c {
            '\\' => s.push_str("\\\\"),
            '[' => {
                let rest = &t[i + 1..];
                let mut from = usize::from(rest.starts_with(['!', '^']));
                from += usize::from(rest[from..].starts_with(']'));
                match rest[from..].find(']') {
                    Some(k) => {
                        let end = i + 1 + from + k;
                        s.push('?');
                        while chars.peek().is_some_and(|&(j, _)| j <= end) {
                            chars.next();
                        }
                    }
                    None => s.push('['),
                }
            }
            _ => s.push(c),
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn subj(w: &str, mode: Mode, cwd: &Cwd) -> Vec<String> {
        let script = crate::shell::parse(&format!("x {w}"));
        let word = &script.cmds[0].words[1];
        subjects(word, mode, cwd).into_iter().map(|p| p.subject).collect()
    }

    #[test]
    fn forms_of_a_path() {
        let here = Cwd::default();
        assert_eq!(subj("~root/.ssh", Mode::Possible, &here), ["/root/.ssh", "~/.ssh"]);
        assert_eq!(subj("/home/al/.aws/x", Mode::Possible, &here), ["/home/al/.aws/x", "~/.aws/x"]);
        assert_eq!(subj("/etc/{shadow,passwd}", Mode::Possible, &here), ["/etc/shadow", "/etc/passwd"]);
        assert_eq!(subj("/etc/sha[d]ow", Mode::Possible, &here), ["/etc/sha?ow"]);
        assert_eq!(subj("../../etc/shadow", Mode::Possible, &here), ["../../etc/shadow"]);
        assert_eq!(subj("../../etc/shadow", Mode::Wide, &here), ["../../etc/shadow", "/etc/shadow", "/**/etc/shadow"]);
        assert_eq!(subj(".aws/config", Mode::Wide, &here), [".aws/config", "~/.aws/config"]);
        assert_eq!(subj("shadow", Mode::Wide, &Cwd::lost()), ["shadow", "/shadow", "/**/shadow"]);
        let etc = here.after_cd(Some(&Word::plain("/etc")));
        assert_eq!(subj("shadow", Mode::Possible, &etc), ["shadow", "/etc/shadow"]);
        assert_eq!(here.after_cd(Some(&Word::plain(".."))), Cwd::lost());
        assert_eq!(here.after_cd(Some(&Word::plain("src"))), here);
        assert_eq!(here.after_cd(None).dir.as_deref(), Some("~"));
        assert_eq!(subj("..", Mode::Wide, &here), ["..", "/**"]);
    }
}
