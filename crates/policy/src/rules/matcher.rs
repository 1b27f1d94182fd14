//! Rule conditions, compiled, and how they test one simple command.

use super::glob::{Glob, GlobSet, Subject};
use super::paths::{subjects, Cwd, Mode};
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

    /// Whether the flag is given. With `possible`, a long option may also be
    /// abbreviated (`--compress` for `--compress-program`), as getopt_long
    /// and git accept.
    fn present(&self, args: &[Word], possible: bool) -> bool {
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
                    let name = t.split('=').next().unwrap_or(t);
                    if possible
                        && l.starts_with("--")
                        && name.len() > 2
                        && name.starts_with("--")
                        && l.starts_with(name)
                    {
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
    pub subcommands: GlobSet,
    /// Flags that may come before the subcommand (`git --no-pager log`).
    pub leading_flags: Vec<String>,
    pub flags_all: Vec<Vec<Flag>>,
    pub flags_any: Vec<Flag>,
    pub args_any: GlobSet,
    pub mentions_any: GlobSet,
    pub writes_any: GlobSet,
    pub piped_into: GlobSet,
    pub assigns_any: GlobSet,
    pub contains_any: GlobSet,
    pub targets_any: GlobSet,
    pub runtime_args: bool,
    pub glob_options: bool,
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

/// A word's path subjects, prepared for matching.
pub(crate) struct Prepared {
    pub subject: String,
    pub outside: bool,
    pub prepared: Subject<'static>,
}

/// Path subjects of a command's own words, computed once per mode for all
/// the rules tested against the command.
#[derive(Default)]
pub(crate) struct PathCache(std::cell::RefCell<Vec<Cached>>);

/// A word (by address) in a mode, and its subjects.
type Cached = (usize, Mode, std::rc::Rc<Vec<Prepared>>);

/// Words cached per command (past this, a long command is not worth it).
const CACHED_WORDS: usize = 64;

/// The simple command a rule is tested against.
pub(crate) struct View<'a> {
    /// The command name (basename), "" when there is none or it is unknown.
    pub program: &'a str,
    pub args: &'a [Word],
    pub assigns: [&'a [Word]; 2],
    pub redirs: &'a [Redir],
    /// The working directory, as far as the line set it (`cd /; …`).
    pub cwd: &'a Cwd,
    /// Programs that read this command's output.
    pub downstream: &'a [String],
    pub cache: PathCache,
}

impl View<'_> {
    /// The path subjects of `w` (cached when `w` is one of the command's
    /// own words).
    pub fn paths(&self, w: &Word, mode: Mode) -> std::rc::Rc<Vec<Prepared>> {
        let make = || {
            let v = subjects(w, mode, self.cwd)
                .into_iter()
                .map(|p| {
                    let prepared = Subject::of(&p.subject, w.dynamic).into_owned();
                    Prepared { subject: p.subject, outside: p.outside, prepared }
                })
                .collect();
            std::rc::Rc::new(v)
        };
        let addr = w as *const Word as usize;
        let within = |s: &[Word]| s.as_ptr_range().contains(&(w as *const Word));
        let own = within(self.args)
            || self.assigns.iter().any(|a| within(a))
            || self.redirs.iter().any(|r| std::ptr::eq(&r.target, w));
        if !own {
            return make();
        }
        let mut c = self.cache.0.borrow_mut();
        if let Some((_, _, p)) = c.iter().find(|(a, m, _)| *a == addr && *m == mode) {
            return p.clone();
        }
        let p = make();
        if c.len() < CACHED_WORDS {
            c.push((addr, mode, p.clone()));
        }
        p
    }
}

const SINKS: &[&str] = &["/dev/null", "/dev/stdout", "/dev/stderr", "/dev/tty", "/dev/zero", "/dev/full"];

/// A file that is not one: writing it writes a stream.
pub(super) fn is_sink(w: &Word) -> bool {
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
            && self.contains_any.is_empty()
            && self.targets_any.is_empty()
            && !self.runtime_args
            && !self.glob_options
    }

    /// In `Possible` and `Wide` mode a condition holds if some run-time
    /// value makes it hold (review and deny rules); in `Sure` mode it must
    /// hold for sure (allow).
    pub fn holds(&self, v: &View, mode: Mode) -> bool {
        let possible = mode.possible();
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
        if !self.flags_all.iter().all(|alts| alts.iter().any(|f| f.present(v.args, possible))) {
            return false;
        }
        if !self.flags_any.is_empty() && !self.flags_any.iter().any(|f| f.present(v.args, possible)) {
            return false;
        }
        if !self.args_any.is_empty() && !any_operand(v, skip, |w| any_glob(&self.args_any, w, mode, v)) {
            return false;
        }
        if !self.mentions_any.is_empty() && !mentions(v, &self.mentions_any, mode) {
            return false;
        }
        if !self.writes_any.is_empty() && !writes(v, &self.writes_any, mode) {
            return false;
        }
        if !self.contains_any.is_empty() && !contains(v, skip, &self.contains_any, mode) {
            return false;
        }
        if !self.targets_any.is_empty()
            && !super::targets::targets(v).iter().any(|w| any_glob(&self.targets_any, w, mode, v))
        {
            return false;
        }
        if self.runtime_args
            && !(v.args.iter().any(|a| a.dynamic && !a.procsubst())
                || v.redirs.iter().any(|r| r.target.dynamic && !r.feeds_stdin()))
        {
            return false;
        }
        if self.glob_options
            && !v.args.iter().take_while(|a| !(a.literal() && a.text == "--")).any(super::paths::may_be_option)
        {
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
    pub fn matches(&self, v: &View, mode: Mode) -> bool {
        if mode == Mode::Sure {
            // Allow needs every redirection target known, and every argument
            // unless the rule says unknown arguments are harmless.
            // Globs are let through: what they may expand to is checked by
            // review rules (secret paths, file names read as options).
            let runtime = |a: &Word| a.dynamic && !a.procsubst();
            if v.redirs.iter().any(|r| !r.target.literal()) || (!self.dynamic_args && v.args.iter().any(runtime)) {
                return false;
            }
        }
        // Exceptions use the opposite: sure for review and deny rules,
        // possible for allow rules.
        let unless_mode = if mode == Mode::Sure { Mode::Possible } else { Mode::Sure };
        self.conds.holds(v, mode) && !self.unless.iter().any(|u| u.holds(v, unless_mode))
    }

    pub fn program_matches(&self, p: &str) -> bool {
        self.programs.iter().any(|x| x == p) || self.program_globs.iter().any(|g| g.matches(p))
    }
}

/// Operands: arguments that are not flags (or come after `--`), and the
/// values of `--name=value` flags.
pub(super) fn any_operand(v: &View, skip: usize, mut f: impl FnMut(&Word) -> bool) -> bool {
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

/// A word against patterns, as a path too (see `paths`).
pub(super) fn any_glob(globs: &GlobSet, w: &Word, mode: Mode, v: &View) -> bool {
    if mode == Mode::Sure && !w.literal() {
        return false;
    }
    v.paths(w, mode).iter().any(|p| {
        globs.may_start(p.prepared.first()) && globs.iter().any(|g| g.matches_subject(&p.prepared, mode.possible()))
    })
}

/// The part of a short-option word that may be an attached path:
/// `-f/etc/shadow` → `/etc/shadow`.
fn attached(w: &Word) -> Option<Word> {
    let t = w.subject();
    if !t.starts_with('-') || t.starts_with("--") {
        return None;
    }
    let at = t.find(['/', '~'])?;
    Some(w.with_subject(&t[at..]))
}

fn mentions(v: &View, globs: &GlobSet, mode: Mode) -> bool {
    let test = |w: &Word| {
        any_glob(globs, w, mode, v)
            || (w.text.contains('=') && w.value_after_eq().is_some_and(|val| any_glob(globs, &val, mode, v)))
            || (mode.possible() && attached(w).is_some_and(|val| any_glob(globs, &val, mode, v)))
    };
    v.args.iter().any(test)
        || v.assigns.iter().any(|a| a.iter().any(test))
        || v.redirs
            .iter()
            .any(|r| test(&r.target) || r.body.as_deref().is_some_and(|b| globs.iter().any(|g| g.matches(b))))
}

/// An operand (or the working directory, when the line set it) may be a
/// directory holding a path that matches: a recursive read of it reaches
/// that path. Paths inside the working directory are not tested.
fn contains(v: &View, skip: usize, globs: &GlobSet, mode: Mode) -> bool {
    let hit = |s: &str, dynamic: bool| {
        let below = if s.ends_with('/') { format!("{s}**") } else { format!("{s}/**") };
        [s, below.as_str()].iter().any(|s| {
            let subj = Subject::of(s, dynamic);
            globs.may_start(subj.first()) && globs.iter().any(|g| g.matches_subject(&subj, mode.possible()))
        })
    };
    let cwd_hit = match (&v.cwd.dir, v.cwd.lost && mode == Mode::Wide) {
        (Some(d), _) => hit(d, false),
        (None, true) => hit("/**", false),
        _ => false,
    };
    cwd_hit
        || any_operand(v, skip, |w| {
            (mode.possible() || w.literal()) && v.paths(w, mode).iter().any(|p| p.outside && hit(&p.subject, w.dynamic))
        })
}

fn writes(v: &View, globs: &GlobSet, mode: Mode) -> bool {
    if v.redirs.iter().any(|r| r.writes_file() && !is_sink(&r.target) && any_glob(globs, &r.target, mode, v)) {
        return true;
    }
    match v.program {
        "tee" => any_operand(v, 0, |w| !is_sink(w) && any_glob(globs, w, mode, v)),
        "dd" => v.args.iter().any(|a| {
            a.text.starts_with("of=")
                && a.value_after_eq().is_some_and(|w| !is_sink(&w) && any_glob(globs, &w, mode, v))
        }),
        _ => false,
    }
}

fn assign_name(w: &Word) -> &str {
    let end = w.assign.or_else(|| w.text.find('=')).unwrap_or(w.text.len());
    w.text[..end].trim_end_matches('+')
}

/// Builtins whose operands name variables they set at run time.
const SETTERS: &[&str] = &["read", "mapfile", "readarray", "getopts", "wait", "let"];

fn assigns(v: &View, globs: &GlobSet) -> bool {
    let hit = |name: &str| globs.iter().any(|g| g.matches(name));
    if v.assigns.iter().any(|a| a.iter().any(|w| hit(assign_name(w)))) {
        return true;
    }
    let named = |a: &Word| !a.text.starts_with(['-', '+']) && hit(assign_name(a));
    match v.program {
        p if EXPORTERS.contains(&p) || SETTERS.contains(&p) => v.args.iter().any(named),
        // printf -v NAME
        "printf" => v.args.iter().enumerate().any(|(i, a)| {
            (a.text == "-v" && v.args.get(i + 1).is_some_and(|n| hit(assign_name(n))))
                || a.text.strip_prefix("-v").is_some_and(|n| !n.is_empty() && hit(n))
        }),
        _ => false,
    }
}
