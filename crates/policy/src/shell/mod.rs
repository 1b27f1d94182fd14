//! A tolerant parser for POSIX/bash command lines, for classification only.
//!
//! It never executes or expands anything. It finds every simple command a
//! line could run — in pipelines, lists, subshells, groups, `if`/`while`/
//! `for`/`case` bodies, function bodies, `$(…)`, backticks, `<(…)`, here-
//! document bodies — with its words after quote removal, its assignments and
//! its redirections. What it cannot know (a variable's value, a glob's
//! expansion) is marked on the word; what it cannot parse is recorded as an
//! error and parsing goes on, so a classifier still sees the rest.

mod compound;
mod expand;
mod parser;
mod redirect;
mod word;

pub(crate) use parser::parse;

/// Deepest nesting of `$(`, `(`, `{`, `if`, … in one parse.
pub(crate) const MAX_NEST: u32 = 40;
/// Most simple commands one parse records; the rest is an error.
pub(crate) const MAX_CMDS: usize = 4096;

/// One shell word after quote removal.
#[derive(Debug, Clone, Default)]
pub(crate) struct Word {
    /// The value; parts only known at run time keep their source text
    /// (`$X`, `$(cmd)`).
    pub text: String,
    /// The match subject when it differs from `text`: a glob where `*` is
    /// any run without `/`, `**` any run, `?` one character and `\x` a
    /// literal x. Unknown parts are `*`; `$HOME` at the start is `~`.
    subj: Option<String>,
    /// Some part is only known at run time (a variable, a substitution).
    pub dynamic: bool,
    /// Some part is an active glob or brace expansion.
    pub glob: bool,
    /// Some part was quoted or escaped (so the word is not a keyword).
    pub quoted: bool,
    /// `NAME=value` in assignment position: the length of NAME.
    pub assign: Option<usize>,
}

impl Word {
    /// Fully known: no run-time value, no glob.
    pub fn literal(&self) -> bool {
        !self.dynamic && !self.glob
    }

    pub fn subject(&self) -> &str {
        self.subj.as_deref().unwrap_or(&self.text)
    }

    /// A word made from known text.
    pub fn plain(text: &str) -> Word {
        let mut w = word::WordBuf::default();
        for c in text.chars() {
            w.lit(c);
        }
        w.finish()
    }

    /// `NAME=value` as an assignment word of known text.
    pub fn assignment(name: &str, value: &str) -> Word {
        let mut w = Word::plain(&format!("{name}={value}"));
        w.assign = Some(name.len());
        w
    }

    /// The same word with every `marker` in it replaced at run time (the
    /// `{}` of `find -exec` and `xargs -I`).
    pub fn with_runtime(&self, marker: &str) -> Word {
        if !self.text.contains(marker) {
            return self.clone();
        }
        let subj = self.subject().replace(marker, "*");
        Word { subj: Some(subj), dynamic: true, ..self.clone() }
    }

    /// A process substitution `<(…)`/`>(…)`: a `/dev/fd` path whose
    /// command is classified on its own.
    pub fn procsubst(&self) -> bool {
        self.dynamic && (self.text.starts_with("<(") || self.text.starts_with(">(")) && self.subject() == "*"
    }

    /// A word only known at run time.
    pub fn runtime(text: &str) -> Word {
        Word { text: text.to_string(), subj: Some("*".into()), dynamic: true, ..Word::default() }
    }

    /// The same word reduced to a tail of its subject (an attached option
    /// value such as the `/etc/x` of `-f/etc/x`), for matching.
    pub fn with_subject(&self, subject: &str) -> Word {
        let text = match &self.subj {
            None => subject.to_string(),
            Some(_) => self.text.get(self.text.len().saturating_sub(subject.len())..).unwrap_or("").to_string(),
        };
        Word { text, subj: Some(subject.to_string()), ..self.clone() }
    }

    /// The value after `=` of an assignment, or of `--opt=value`/`key=value`.
    pub fn value_after_eq(&self) -> Option<Word> {
        let eq = self.text.find('=')?;
        if !self.literal() {
            // Rebuilding a subject slice is not worth it for a rare case: the
            // part after `=` of a partly unknown word is unknown.
            let mut w = Word { text: self.text[eq + 1..].to_string(), dynamic: true, ..Word::default() };
            w.subj = Some("*".into());
            return Some(w);
        }
        Some(Word::plain(&self.text[eq + 1..]))
    }
}

/// Where a nested command's output goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Flow {
    /// `$(…)`, backticks, a here-document body: its output becomes part of
    /// the parent's words.
    Subst,
    /// `<(…)`: the parent reads its output.
    ProcIn,
    /// `>(…)`: it reads the parent's output.
    ProcOut,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RedirOp {
    In,
    Out,
    Append,
    Clobber,
    ReadWrite,
    HereDoc,
    HereDocStrip,
    HereString,
    DupIn,
    DupOut,
    OutErr,
    AppendErr,
}

impl RedirOp {
    pub fn as_str(self) -> &'static str {
        match self {
            RedirOp::In => "<",
            RedirOp::Out => ">",
            RedirOp::Append => ">>",
            RedirOp::Clobber => ">|",
            RedirOp::ReadWrite => "<>",
            RedirOp::HereDoc => "<<",
            RedirOp::HereDocStrip => "<<-",
            RedirOp::HereString => "<<<",
            RedirOp::DupIn => "<&",
            RedirOp::DupOut => ">&",
            RedirOp::OutErr => "&>",
            RedirOp::AppendErr => "&>>",
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) struct Redir {
    pub fd: Option<u32>,
    pub op: RedirOp,
    /// The file, the duplicated descriptor, the here-string or the
    /// here-document delimiter.
    pub target: Word,
    /// A here-document's body.
    pub body: Option<String>,
}

impl Redir {
    /// Opens `target` as a file for writing (not a descriptor duplication).
    pub fn writes_file(&self) -> bool {
        match self.op {
            RedirOp::Out | RedirOp::Append | RedirOp::Clobber | RedirOp::ReadWrite => true,
            RedirOp::OutErr | RedirOp::AppendErr => true,
            // `>&file` (not a number or `-`) is `&>file`.
            RedirOp::DupOut => !is_fd_target(&self.target),
            _ => false,
        }
    }

    /// Feeds text (here-document or here-string) to the command's stdin.
    pub fn feeds_stdin(&self) -> bool {
        matches!(self.op, RedirOp::HereDoc | RedirOp::HereDocStrip | RedirOp::HereString) && self.fd.unwrap_or(0) == 0
    }
}

fn is_fd_target(w: &Word) -> bool {
    w.literal() && (w.text == "-" || (!w.text.is_empty() && w.text.bytes().all(|b| b.is_ascii_digit())))
}

/// One simple command as written: `A=1 cmd arg >out`.
#[derive(Debug, Clone, Default)]
pub(crate) struct Cmd {
    pub words: Vec<Word>,
    pub assigns: Vec<Word>,
    pub redirs: Vec<Redir>,
    /// The pipelines around it: (pipeline id, stage), outermost first.
    pub pipes: Vec<(u32, u16)>,
    /// Part of a pipeline of two or more stages.
    pub piped: bool,
    /// Run in the background (`&`).
    pub background: bool,
    /// The command whose words or streams this one feeds (index in the
    /// script's `cmds`).
    pub parent: Option<(u32, Flow)>,
}

/// A function definition: its body is `cmds[start..end]`.
#[derive(Debug, Clone)]
pub(crate) struct Func {
    pub name: String,
    pub start: usize,
    pub end: usize,
}

/// Everything a command line could run.
#[derive(Debug, Clone, Default)]
pub(crate) struct Script {
    pub cmds: Vec<Cmd>,
    pub funcs: Vec<Func>,
    /// What could not be parsed; parsing went on past each.
    pub errors: Vec<String>,
    /// Places where bash evaluates a variable's value as code: arithmetic
    /// (`$((…))`, `((…))`, `$[…]`, array subscripts, `${x:1:2}`),
    /// indirection (`${!x}`) and prompt expansion (`${x@P}`). Their
    /// description, for the reason.
    pub evals: Vec<&'static str>,
    /// Variables given values the line does not spell out: `for`/`select`
    /// loop variables and `${NAME:=…}` defaults.
    pub set_names: Vec<String>,
    /// Values only known at run time reach a variable or an evaluation:
    /// a `for`/`select` loop over globs, substitutions or the positional
    /// parameters, or command output inside arithmetic.
    pub runtime_values: bool,
}

#[cfg(test)]
mod tests;
