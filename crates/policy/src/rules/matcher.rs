//! Rule conditions, compiled, and how they test one simple command.

use super::glob::{home_alias, normalize, Glob, Subject};
use crate::shell::{Redir, Word};

/// One way of writing a flag: a letter of a short cluster (`-r` matches
/// `-rf`) or a whole word (`--force`, `--force=…`, `-delete`, `-1`).
#[derive(Debug, Clone)]
pub(crate) enum Flag {
    Short(u8),
    Long(String),
}

impl Flag {
    pub fn parse(s: &str) -> Result<Flag, String> {
        let b = s.as_bytes();
        if b.len() < 2 || b[0] != b'-' {
            return Err(format!("flag {s:?} must start with '-'"));
        }
        if b.len() == 2 && b[1].is_ascii_alphabetic() {
            Ok(Flag::Short(b[1]))
        } else {
            Ok(Flag::Long(s.to_string()))
        }
    }

    fn present(&self, args: &[Word]) -> bool {
        for a in args {
            let t = a.text.as_str();
            if t == "--" {
                return false;
            }
            if !a.literal() || t.len() < 2 || !t.starts_with('-') {
                continue;
            }
            match self {
                Flag::Long(l) => {
                    if t == l || (t.len() > l.len() && t.starts_with(l.as_str()) && t.as_bytes()[l.len()] == b'=') {
                        return true;
                    }
                }
                Flag::Short(c) => {
                    let b = t.as_bytes();
                    if b[1] != b'-' && !b[1].is_ascii_digit() && b[1..].contains(c) {
                        return true;
                    }
                }
            }
        }
        false
    }
}

/// A set of conditions; all the non-empty ones must hold.
#[derive(Debug, Clone, Default)]
pub(crate) struct Conds {
    pub subcommands: Vec<Glob>,
    /// Flags that may come before the subcommand (`git --no-pager log`).
    pub leading_flags: Vec<String>,
    pub flags_all: Vec<Vec<Flag>>,
    pub flags_any: Vec<Flag>,
    pub args_any: Vec<Glob>,
    pub mentions_any: Vec<Glob>,
    pub writes_any: Vec<Glob>,
    pub piped_into: Vec<Glob>,
    pub assigns_any: Vec<Glob>,
}

/// A compiled rule matcher.
#[derive(Debug, Clone, Default)]
pub(crate) struct Matcher {
    pub programs: Vec<String>,
    pub program_globs: Vec<Glob>,
    pub conds: Conds,
    pub unless: Vec<Conds>,
    pub dynamic_args: bool,
}

/// The simple command a rule is tested against.
pub(crate) struct View<'a> {
    /// The command name (basename), "" when there is none or it is unknown.
    pub program: &'a str,
    pub args: &'a [Word],
    pub assigns: [&'a [Word]; 2],
    pub redirs: &'a [Redir],
    /// The working directory, when the line set it (`cd /; …`).
    pub cwd: Option<&'a str>,
    /// Programs that read this command's output.
    pub downstream: &'a [String],
}

const SINKS: &[&str] = &["/dev/null", "/dev/stdout", "/dev/stderr", "/dev/tty"];

fn is_sink(w: &Word) -> bool {
    w.literal() && (SINKS.contains(&w.text.as_str()) || w.text.starts_with("/dev/fd/"))
}

const EXPORTERS: &[&str] = &["export", "declare", "typeset", "local", "readonly"];

impl Conds {
    pub fn is_empty(&self) -> bool {
        self.subcommands.is_empty()
            && self.flags_all.is_empty()
            && self.flags_any.is_empty()
            && self.args_any.is_empty()
            && self.mentions_any.is_empty()
            && self.writes_any.is_empty()
            && self.piped_into.is_empty()
            && self.assigns_any.is_empty()
    }

    /// `possible`: a condition holds if some run-time value makes it hold
    /// (review and deny rules); otherwise it must hold for sure (allow).
    pub fn holds(&self, v: &View, possible: bool) -> bool {
        // Arguments before the operands: leading flags and the subcommand.
        let mut skip = 0;
        if !self.subcommands.is_empty() {
            skip = v.args.iter().take_while(|a| a.literal() && self.leading_flags.contains(&a.text)).count();
            let Some(a) = v.args.get(skip) else { return false };
            let subj = Subject::new(a.subject());
            if !(possible || a.literal()) || !self.subcommands.iter().any(|g| g.matches_subject(&subj, possible)) {
                return false;
            }
            skip += 1;
        }
        if !self.flags_all.iter().all(|alts| alts.iter().any(|f| f.present(v.args))) {
            return false;
        }
        if !self.flags_any.is_empty() && !self.flags_any.iter().any(|f| f.present(v.args)) {
            return false;
        }
        if !self.args_any.is_empty() && !any_operand(v, skip, |w| any_glob(&self.args_any, w, possible, v.cwd)) {
            return false;
        }
        if !self.mentions_any.is_empty() && !mentions(v, &self.mentions_any, possible) {
            return false;
        }
        if !self.writes_any.is_empty() && !writes(v, &self.writes_any, possible) {
            return false;
        }
        if !self.piped_into.is_empty() && !v.downstream.iter().any(|p| self.piped_into.iter().any(|g| g.matches(p))) {
            return false;
        }
        if !self.assigns_any.is_empty() && !assigns(v, &self.assigns_any) {
            return false;
        }
        true
    }
}

impl Matcher {
    pub fn has_conditions(&self) -> bool {
        !self.programs.is_empty() || !self.program_globs.is_empty() || !self.conds.is_empty()
    }

    /// The program part is checked by the caller (the rule index).
    pub fn matches(&self, v: &View, possible: bool) -> bool {
        if !possible {
            // Allow needs every redirection target known, and every argument
            // unless the rule says unknown arguments are harmless.
            if v.redirs.iter().any(|r| !r.target.literal())
                || (!self.dynamic_args && v.args.iter().any(|a| !a.literal()))
            {
                return false;
            }
        }
        self.conds.holds(v, possible) && !self.unless.iter().any(|u| u.holds(v, !possible))
    }

    pub fn program_matches(&self, p: &str) -> bool {
        self.programs.iter().any(|x| x == p) || self.program_globs.iter().any(|g| g.matches(p))
    }
}

/// Operands: arguments that are not flags (or come after `--`), and the
/// values of `--name=value` flags.
fn any_operand(v: &View, skip: usize, mut f: impl FnMut(&Word) -> bool) -> bool {
    let mut after_dd = false;
    for a in v.args.iter().skip(skip) {
        let t = a.text.as_str();
        if !after_dd && t.len() > 1 && t.starts_with('-') {
            if t == "--" {
                after_dd = true;
            } else if t.starts_with("--") && t.contains('=') {
                if let Some(val) = a.value_after_eq() {
                    if f(&val) {
                        return true;
                    }
                }
            }
            continue;
        }
        if f(a) {
            return true;
        }
    }
    false
}

/// A word against patterns, as a path too: normalised, `/root`/`/home/u`
/// as `~`, and relative to a working directory the line set.
fn any_glob(globs: &[Glob], w: &Word, possible: bool, cwd: Option<&str>) -> bool {
    if !possible && !w.literal() {
        return false;
    }
    let test = |s: &str| {
        let subj = Subject::new(s);
        globs.iter().any(|g| g.matches_subject(&subj, possible))
    };
    let n = normalize(w.subject());
    if test(&n) || home_alias(&n).is_some_and(|h| test(&h)) {
        return true;
    }
    if let Some(cwd) = cwd {
        if !(n.starts_with('/') || n.starts_with('~') || n.starts_with('-')) {
            let joined = format!("{cwd}/{n}");
            let j = normalize(&joined);
            return test(&j) || home_alias(&j).is_some_and(|h| test(&h));
        }
    }
    false
}

fn mentions(v: &View, globs: &[Glob], possible: bool) -> bool {
    let test = |w: &Word| {
        any_glob(globs, w, possible, v.cwd)
            || (w.text.contains('=') && w.value_after_eq().is_some_and(|val| any_glob(globs, &val, possible, v.cwd)))
    };
    v.args.iter().any(test)
        || v.assigns.iter().any(|a| a.iter().any(test))
        || v.redirs
            .iter()
            .any(|r| test(&r.target) || r.body.as_deref().is_some_and(|b| globs.iter().any(|g| g.matches(b))))
}

fn writes(v: &View, globs: &[Glob], possible: bool) -> bool {
    if v.redirs.iter().any(|r| r.writes_file() && !is_sink(&r.target) && any_glob(globs, &r.target, possible, v.cwd)) {
        return true;
    }
    match v.program {
        "tee" => any_operand(v, 0, |w| !is_sink(w) && any_glob(globs, w, possible, v.cwd)),
        "dd" => v.args.iter().any(|a| {
            a.text.starts_with("of=")
                && a.value_after_eq().is_some_and(|w| !is_sink(&w) && any_glob(globs, &w, possible, v.cwd))
        }),
        _ => false,
    }
}

fn assign_name(w: &Word) -> &str {
    let end = w.assign.or_else(|| w.text.find('=')).unwrap_or(w.text.len());
    w.text[..end].trim_end_matches('+')
}

fn assigns(v: &View, globs: &[Glob]) -> bool {
    let hit = |w: &Word| globs.iter().any(|g| g.matches(assign_name(w)));
    if v.assigns.iter().any(|a| a.iter().any(hit)) {
        return true;
    }
    EXPORTERS.contains(&v.program) && v.args.iter().any(|a| !a.text.starts_with('-') && a.text.contains('=') && hit(a))
}
