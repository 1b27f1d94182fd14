//! Patterns of the policy file, matched against words.
//!
//! Syntax: `*` any run of characters without `/`, `**` any run, `?` one
//! character other than `/`, `\x` a literal x; everything else is literal.
//! A word's subject uses the same syntax for what is unknown about it (a
//! variable, an unquoted glob), so a pattern can also be tested for
//! *possibly* matching: whether some value of the word matches. To keep
//! that useful rather than paranoid, an unknown part may only stand for
//! characters a pattern spells out when it is a whole path component in a
//! known directory (`~/.ssh/$K` may be `~/.ssh/id_rsa`), those characters
//! are not preceded by a wildcard in the pattern (`dist/*` is not "maybe
//! **/id_rsa"), and do not start a hidden name (`~/*` is not "maybe
//! ~/.netrc");
//! and a word whose start is unknown only matches catch-all patterns.
//!
//! Path patterns (starting with `/` or `~`) are tested strictly instead:
//! a subject possibly matches one when some expansion of it does, as the
//! shell expands globs (`/etc/shado?`, `~/.ss*/id_*`): a glob wildcard
//! never starts a hidden name, and a run-time part (a variable) may stand
//! for anything, `/` and a leading dot included.

use std::borrow::Cow;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Tok {
    Lit(u8),
    One,
    Star,
    Any,
}

/// Patterns longer than this (in tokens) are refused at load.
pub(crate) const MAX_TOKENS: usize = 63;

#[derive(Debug, Clone)]
pub(crate) struct Glob {
    toks: Vec<Tok>,
    /// Token positions that are `*` or `**` (they may match nothing).
    star_mask: u64,
    /// Literal positions an unknown path component may stand for: no
    /// wildcard before them in the pattern, not a leading dot.
    anchored: u64,
    /// Every token is a wildcard: the pattern matches any value, including
    /// one cloche knows nothing about.
    all_wild: bool,
    /// The pattern is one literal string.
    exact: Option<String>,
    /// The first and last tokens when they are literal (quick rejects).
    first: Option<u8>,
    last: Option<u8>,
    ignore_case: bool,
    /// Starts with `/` or `~`: possible matches are strict (module doc).
    path: bool,
}

/// The patterns of one condition, with the first bytes a match can start
/// with (so that most words skip a long list at once).
#[derive(Debug, Clone, Default)]
pub(crate) struct GlobSet {
    globs: Vec<Glob>,
    firsts: [u64; 4],
    /// Some pattern starts with a wildcard.
    wild_first: bool,
}

impl GlobSet {
    pub fn new(globs: Vec<Glob>) -> GlobSet {
        let mut s = GlobSet { globs, ..GlobSet::default() };
        for g in &s.globs {
            match g.first {
                Some(b) => {
                    for b in [b, b.to_ascii_uppercase()] {
                        s.firsts[usize::from(b / 64)] |= 1 << (b % 64);
                    }
                }
                None => s.wild_first = true,
            }
        }
        s
    }

    pub fn is_empty(&self) -> bool {
        self.globs.is_empty()
    }

    pub fn iter(&self) -> std::slice::Iter<'_, Glob> {
        self.globs.iter()
    }

    /// Whether a subject starting with `first` (`None`: unknown) may match
    /// some pattern.
    pub fn may_start(&self, first: Option<u8>) -> bool {
        match first {
            Some(b) if !self.wild_first => {
                let b = b.to_ascii_lowercase();
                let hit = |b: u8| self.firsts[usize::from(b / 64)] & (1 << (b % 64)) != 0;
                hit(b) || hit(b.to_ascii_uppercase())
            }
            _ => true,
        }
    }
}

/// A word's subject prepared once for matching against many patterns.
pub(crate) enum Subject<'a> {
    /// Fully known, unescaped.
    Known(Cow<'a, str>),
    /// Partly unknown; `dynamic`: some unknown part is a run-time value
    /// (it may hold `/` and start a hidden name), not only a glob.
    Glob { toks: Vec<Tok>, dynamic: bool },
}

impl<'a> Subject<'a> {
    /// Its first byte, when known.
    pub fn first(&self) -> Option<u8> {
        match self {
            Subject::Known(t) => t.bytes().next(),
            Subject::Glob { toks, .. } => match toks.first() {
                Some(Tok::Lit(b)) => Some(*b),
                _ => None,
            },
        }
    }

    /// From the escaped form (see the module doc).
    pub fn new(s: &'a str) -> Subject<'a> {
        Subject::of(s, false)
    }

    /// The same subject, owning its text.
    pub fn into_owned(self) -> Subject<'static> {
        match self {
            Subject::Known(t) => Subject::Known(Cow::Owned(t.into_owned())),
            Subject::Glob { toks, dynamic } => Subject::Glob { toks, dynamic },
        }
    }

    /// From the escaped form of a word that may hold run-time values.
    pub fn of(s: &'a str, dynamic: bool) -> Subject<'a> {
        if has_wildcard(s) {
            return Subject::Glob { toks: tokens(s, false), dynamic };
        }
        if !s.contains('\\') {
            return Subject::Known(Cow::Borrowed(s));
        }
        let bytes: Vec<u8> = tokens(s, false).into_iter().map(|t| if let Tok::Lit(b) = t { b } else { 0 }).collect();
        Subject::Known(Cow::Owned(String::from_utf8_lossy(&bytes).into_owned()))
    }
}

fn tokens(s: &str, lower: bool) -> Vec<Tok> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'\\' if i + 1 < b.len() => {
                i += 1;
                out.push(Tok::Lit(if lower { b[i].to_ascii_lowercase() } else { b[i] }));
            }
            b'*' if b.get(i + 1) == Some(&b'*') => {
                i += 1;
                if out.last() == Some(&Tok::Star) {
                    out.pop();
                }
                if out.last() != Some(&Tok::Any) {
                    out.push(Tok::Any);
                }
            }
            b'*' => {
                if !matches!(out.last(), Some(Tok::Star | Tok::Any)) {
                    out.push(Tok::Star);
                }
            }
            b'?' => out.push(Tok::One),
            c => out.push(Tok::Lit(if lower { c.to_ascii_lowercase() } else { c })),
        }
        i += 1;
    }
    out
}

impl Glob {
    pub fn new(src: &str, ignore_case: bool) -> Result<Glob, String> {
        if src.is_empty() {
            return Err("empty pattern".into());
        }
        let toks = tokens(src, ignore_case);
        if toks.len() > MAX_TOKENS {
            return Err(format!("pattern {src:?} is too long ({MAX_TOKENS} characters at most)"));
        }
        let mut star_mask = 0u64;
        for (i, t) in toks.iter().enumerate() {
            if matches!(t, Tok::Star | Tok::Any) {
                star_mask |= 1 << i;
            }
        }
        let mut anchored = 0u64;
        let mut clean = true;
        for (i, t) in toks.iter().enumerate() {
            let first = i == 0 || toks[i - 1] == Tok::Lit(b'/');
            match t {
                Tok::Lit(b'.') if first => {}
                Tok::Lit(_) if clean => anchored |= 1 << i,
                Tok::Lit(_) => {}
                _ => clean = false,
            }
        }
        let all_wild = toks.iter().all(|t| !matches!(t, Tok::Lit(_)));
        let exact = toks.iter().all(|t| matches!(t, Tok::Lit(_))).then(|| {
            String::from_utf8_lossy(&toks.iter().map(|t| if let Tok::Lit(b) = t { *b } else { 0 }).collect::<Vec<_>>())
                .into_owned()
        });
        let lit = |t: Option<&Tok>| if let Some(Tok::Lit(b)) = t { Some(*b) } else { None };
        let (first, last) = (lit(toks.first()), lit(toks.last()));
        let path = matches!(first, Some(b'/' | b'~'));
        Ok(Glob { toks, star_mask, anchored, all_wild, exact, first, last, ignore_case, path })
    }

    fn closure(&self, mut s: u64) -> u64 {
        loop {
            let add = ((s & self.star_mask) << 1) & !s;
            if add == 0 {
                return s;
            }
            s |= add;
        }
    }

    /// Matches a known string.
    pub fn matches(&self, text: &str) -> bool {
        if let Some(e) = &self.exact {
            return if self.ignore_case { e.eq_ignore_ascii_case(text) } else { e == text };
        }
        self.run(text.bytes())
    }

    fn run(&self, bytes: impl Iterator<Item = u8>) -> bool {
        let n = self.toks.len();
        let accept = 1u64 << n;
        let mut st = self.closure(1);
        for c in bytes {
            let c = if self.ignore_case { c.to_ascii_lowercase() } else { c };
            let mut next = 0u64;
            let mut bits = st & !accept;
            while bits != 0 {
                let i = bits.trailing_zeros() as usize;
                bits &= bits - 1;
                next |= match self.toks[i] {
                    Tok::Lit(b) if b == c => 1 << (i + 1),
                    Tok::One if c != b'/' => 1 << (i + 1),
                    Tok::Star if c != b'/' => 1 << i,
                    Tok::Any => 1 << i,
                    _ => 0,
                };
            }
            if next == 0 {
                return false;
            }
            st = self.closure(next);
        }
        st & accept != 0
    }

    /// Matches a prepared subject. `possible`: whether some value of the
    /// subject matches; otherwise it must be fully known and match.
    pub fn matches_subject(&self, subj: &Subject, possible: bool) -> bool {
        match subj {
            Subject::Known(t) => {
                let b = t.as_bytes();
                let eq = |x: Option<u8>, y: Option<&u8>| match (x, y) {
                    (None, _) => true,
                    (Some(x), Some(&y)) => x == if self.ignore_case { y.to_ascii_lowercase() } else { y },
                    (Some(_), None) => false,
                };
                eq(self.first, b.first()) && eq(self.last, b.last()) && self.matches(t)
            }
            Subject::Glob { toks: st, dynamic } => {
                if !possible {
                    return false;
                }
                // Quick reject: the literal starts differ.
                for (x, y) in self.toks.iter().zip(st) {
                    match (x, y) {
                        (Tok::Lit(x), Tok::Lit(y))
                            if *x != if self.ignore_case { y.to_ascii_lowercase() } else { *y } =>
                        {
                            return false
                        }
                        (Tok::Lit(_), Tok::Lit(_)) => {}
                        _ => break,
                    }
                }
                // A value whose start is unknown only matches a pattern that
                // accepts anything: `$X` is not "possibly /etc/passwd", and
                // `*.rs` is not "possibly HISTFILE=x.rs".
                if !matches!(st.first(), Some(Tok::Lit(_))) {
                    return self.all_wild;
                }
                if self.path {
                    return self.intersects_strictly(st, *dynamic);
                }
                self.intersects(st)
            }
        }
    }
}

/// An unescaped `*` or `?` in an escaped subject.
pub(crate) fn has_wildcard(s: &str) -> bool {
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'\\' => i += 2,
            b'*' | b'?' => return true,
            _ => i += 1,
        }
    }
    false
}

impl Glob {
    /// Whether the pattern and a subject have a string in common, with the
    /// restrictions of the module doc on what an unknown part stands for.
    fn intersects(&self, q: &[Tok]) -> bool {
        let p = &self.toks;
        let (n, m) = (p.len(), q.len());
        let w = m + 1;
        let mut seen = vec![false; (n + 1) * w];
        let mut stack = vec![(0usize, 0usize)];
        let wild = |t: Tok| matches!(t, Tok::Star | Tok::Any);
        while let Some((i, j)) = stack.pop() {
            if seen[i * w + j] {
                continue;
            }
            seen[i * w + j] = true;
            if i == n && j == m {
                return true;
            }
            if i < n && wild(p[i]) {
                stack.push((i + 1, j));
            }
            if j < m && wild(q[j]) {
                stack.push((i, j + 1));
            }
            if i >= n || j >= m {
                continue;
            }
            let ok = match (p[i], q[j]) {
                (Tok::Lit(x), Tok::Lit(y)) => x == if self.ignore_case { y.to_ascii_lowercase() } else { y },
                (_, Tok::Lit(y)) => y != b'/' || p[i] == Tok::Any,
                // An unknown part of the subject spelling out the pattern.
                (Tok::Lit(x), _) => {
                    let component = j > 0 && q[j - 1] == Tok::Lit(b'/');
                    component && self.anchored & (1 << i) != 0 && (x != b'/' || q[j] == Tok::Any)
                }
                (_, _) => true,
            };
            if ok {
                let ni = if wild(p[i]) { i } else { i + 1 };
                let nj = if wild(q[j]) { j } else { j + 1 };
                if (ni, nj) != (i, j) {
                    stack.push((ni, nj));
                }
            }
        }
        false
    }
}

impl Glob {
    /// Whether some expansion of subject `q` matches the pattern: globs as
    /// the shell expands them (a wildcard does not start a hidden name), a
    /// run-time part (`dynamic`) anything, `/` and a leading dot included.
    fn intersects_strictly(&self, q: &[Tok], dynamic: bool) -> bool {
        let p = &self.toks;
        let (n, m) = (p.len(), q.len());
        let w = m + 1;
        // States (pattern position, subject position, whether the subject's
        // wildcard at that position has produced a character yet).
        let mut seen = vec![false; (n + 1) * w * 2];
        let mut stack = vec![(0usize, 0usize, false)];
        let wild = |t: Tok| matches!(t, Tok::Star | Tok::Any);
        let sub = |j: usize| if dynamic && q[j] == Tok::Star { Tok::Any } else { q[j] };
        let fold = |b: u8| if self.ignore_case { b.to_ascii_lowercase() } else { b };
        while let Some((i, j, k)) = stack.pop() {
            let at = (i * w + j) * 2 + usize::from(k);
            if seen[at] {
                continue;
            }
            seen[at] = true;
            if i == n && j == m {
                return true;
            }
            if i < n && wild(p[i]) {
                stack.push((i + 1, j, k));
            }
            if j < m && wild(sub(j)) {
                stack.push((i, j + 1, false));
            }
            if i >= n || j >= m {
                continue;
            }
            let (a, b) = (p[i], sub(j));
            // The subject's wildcard would produce the first character of a
            // path component.
            let starts = !k && (j == 0 || q[j - 1] == Tok::Lit(b'/'));
            let ok = match (a, b) {
                (Tok::Lit(x), Tok::Lit(y)) => x == fold(y),
                (Tok::Lit(x), Tok::One | Tok::Star) => x != b'/' && (dynamic || x != b'.' || !starts),
                (Tok::One | Tok::Star, Tok::Lit(y)) => y != b'/',
                _ => true,
            };
            if ok {
                let ni = if wild(a) { i } else { i + 1 };
                let nj = if wild(b) { j } else { j + 1 };
                let nk = wild(b) && nj == j;
                if (ni, nj, nk) != (i, j, k) {
                    stack.push((ni, nj, nk));
                }
            }
        }
        false
    }
}

/// Lexical path normalisation of an escaped subject: `//` and `/./`
/// collapse, `..` pops a known component, a trailing `/` goes.
pub(crate) fn normalize(s: &str) -> Cow<'_, str> {
    let b = s.as_bytes();
    let needs = s.contains("//")
        || s.contains("/.")
        || s.starts_with("./")
        || s == "."
        || (b.len() > 1 && b[b.len() - 1] == b'/');
    if !needs {
        return Cow::Borrowed(s);
    }
    let abs = s.starts_with('/');
    let mut segs: Vec<&str> = Vec::new();
    for seg in s.split('/') {
        match seg {
            "" | "." => {}
            ".." => match segs.last() {
                Some(&last) if last != ".." && !(segs.len() == 1 && last.starts_with('~')) && !has_wildcard(last) => {
                    segs.pop();
                }
                None if abs => {}
                _ => segs.push(".."),
            },
            _ => segs.push(seg),
        }
    }
    let mut out = String::with_capacity(s.len());
    if abs {
        out.push('/');
    }
    out.push_str(&segs.join("/"));
    if out.is_empty() {
        out.push('.');
    }
    Cow::Owned(out)
}

/// `/root/…` and `/home/<user>/…` as `~/…`.
pub(crate) fn home_alias(s: &str) -> Option<String> {
    let rest = if let Some(r) = s.strip_prefix("/root") {
        r
    } else {
        let r = s.strip_prefix("/home/")?;
        let user_end = r.find('/').unwrap_or(r.len());
        if user_end == 0 {
            return None;
        }
        &r[user_end..]
    };
    if !(rest.is_empty() || rest.starts_with('/')) {
        return None;
    }
    Some(format!("~{rest}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn g(p: &str) -> Glob {
        Glob::new(p, false).unwrap()
    }

    impl Glob {
        fn ms(&self, s: &str, possible: bool) -> bool {
            self.matches_subject(&Subject::new(s), possible)
        }
    }

    #[test]
    fn literal_matching() {
        assert!(g("/").matches("/"));
        assert!(g("/*").matches("/etc"));
        assert!(!g("/*").matches("/etc/x"));
        assert!(g("~/**").matches("~/a/b/c"));
        assert!(g("**.pem").matches("/a/b/key.pem"));
        assert!(g("mkfs*").matches("mkfs.ext4"));
        assert!(g("of=/dev/sd*").matches("of=/dev/sda1"));
        assert!(!g("of=/dev/sd*").matches("of=/dev/null"));
        assert!(g("4???").matches("4755"));
        assert!(g("a\\*b").matches("a*b"));
        assert!(!g("a\\*b").matches("axb"));
        assert!(Glob::new("**DROP TABLE**", true).unwrap().matches("x; drop table users"));
    }

    #[test]
    fn possible_matching() {
        // `/$X` may be `/etc`; `$X` alone matches only catch-alls.
        assert!(g("/*").ms("/*", true));
        assert!(!g("/*").ms("/*", false));
        assert!(!g("/").ms("*", true));
        assert!(g("**").ms("*", true));
        assert!(g("~/.ssh/id_*").ms("~/.ssh/*", true));
        // Path patterns are strict: a glob may be any of its expansions.
        assert!(g("~/.ssh/id_*").ms("~/.s*/id*", true));
        assert!(g("/etc/shadow").ms("/etc/shado?", true));
        assert!(g("/etc/shadow").ms("/etc/sha*", true));
        assert!(g("~/.ssh/**").ms("~/.ss?/id_*", true));
        // … but a glob wildcard does not start a hidden name, while a
        // run-time value may.
        assert!(!g("~/.aws/**").ms("~/*/credentials", true));
        let dynamic = |s| Subject::of(s, true);
        assert!(g("~/.aws/**").matches_subject(&dynamic("~/*/credentials"), true));
        assert!(g("/etc/ssh/ssh_host_*_key").matches_subject(&dynamic("/etc/*"), true));
        assert!(!g("/etc/ssh/ssh_host_*_key").ms("/etc/*", true));
        assert!(!g("/etc/**").ms("/tmp/*", true));
        assert!(g("/etc/passwd").ms("/etc/*", true));
        assert!(!g("~/.netrc").ms("~/*", true));
        assert!(!g("**.pem").ms("~/*", true));
        assert!(!g("**.pem").ms("hello *", true));
        assert!(!g("**/id_rsa").ms("dist/*", true));
        assert!(!g("~/.ssh/id_*").ms("~/.config/*", true));
        assert!(g("/").ms("/**", true));
        assert!(!g("/*").ms("/tmp/*", true));
        assert!(!g("**.pem").ms("*.pem", true));
        assert!(g("**.pem").ms("k*.pem", true));
        assert!(!g("HISTFILE=**").ms("*.rs", true));
        // escaped literal stars are literal
        assert!(!g("/etc").ms("/\\*", true));
        assert!(g("/\\*").ms("/\\*", false));
    }

    #[test]
    fn normalisation() {
        assert_eq!(normalize("//"), "/");
        assert_eq!(normalize("/./"), "/");
        assert_eq!(normalize("/usr/.."), "/");
        assert_eq!(normalize("/.."), "/");
        assert_eq!(normalize("~/"), "~");
        assert_eq!(normalize("~/.ssh/../.ssh/id_rsa"), "~/.ssh/id_rsa");
        assert_eq!(normalize("~/.."), "~/..");
        assert_eq!(normalize("./x"), "x");
        assert_eq!(normalize("a/b"), "a/b");
        assert_eq!(home_alias("/root/.ssh/id_rsa").as_deref(), Some("~/.ssh/id_rsa"));
        assert_eq!(home_alias("/home/al/.aws").as_deref(), Some("~/.aws"));
        assert_eq!(home_alias("/home/al").as_deref(), Some("~"));
        assert_eq!(home_alias("/home"), None);
        assert_eq!(home_alias("/rootfs"), None);
    }
}
