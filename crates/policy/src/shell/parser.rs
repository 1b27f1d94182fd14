//! The grammar: lists, pipelines and simple commands. Compound commands
//! are in `compound.rs`, redirections in `redirect.rs`, words in `word.rs`
//! and `expand.rs`.

use super::word::WordBuf;
use super::{Cmd, Flow, Script, Word, MAX_CMDS, MAX_NEST};

pub(super) const S_RPAREN: u32 = 1;
pub(super) const S_RBRACE: u32 = 1 << 1;
pub(super) const S_THEN: u32 = 1 << 2;
pub(super) const S_ELIF: u32 = 1 << 3;
pub(super) const S_ELSE: u32 = 1 << 4;
pub(super) const S_FI: u32 = 1 << 5;
pub(super) const S_DO: u32 = 1 << 6;
pub(super) const S_DONE: u32 = 1 << 7;
pub(super) const S_ESAC: u32 = 1 << 8;
pub(super) const S_DSEMI: u32 = 1 << 9;

/// Parses a command line (or script). Never fails: what it cannot parse is
/// in `errors`.
pub(crate) fn parse(src: &str) -> Script {
    let mut p = Parser::new(src, 0);
    p.list(0);
    p.read_heredocs();
    p.out
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum Kw {
    If,
    Then,
    Elif,
    Else,
    Fi,
    While,
    Until,
    For,
    Select,
    Do,
    Done,
    Case,
    Esac,
    In,
    Function,
    LBrace,
    RBrace,
    Bang,
    DLBrack,
}

impl Kw {
    pub(super) fn stop(self) -> u32 {
        match self {
            Kw::Then => S_THEN,
            Kw::Elif => S_ELIF,
            Kw::Else => S_ELSE,
            Kw::Fi => S_FI,
            Kw::Do => S_DO,
            Kw::Done => S_DONE,
            Kw::Esac => S_ESAC,
            Kw::RBrace => S_RBRACE,
            _ => 0,
        }
    }
}

/// A here-document waiting for the end of its line.
pub(super) struct Pending {
    pub(super) cmd: usize,
    pub(super) redir: usize,
    pub(super) delim: String,
    pub(super) strip: bool,
    pub(super) quoted: bool,
}

pub(super) struct Parser<'a> {
    pub(super) s: &'a str,
    pub(super) b: &'a [u8],
    pub(super) i: usize,
    /// Index of this parser's first command in the whole script (sub-parsers
    /// of backticks and here-documents number on from their parent).
    pub(super) base: usize,
    pub(super) out: Script,
    pub(super) pipe_ctx: Vec<(u32, u16)>,
    pub(super) next_pipe: u32,
    /// Parent link given to every command created now.
    pub(super) parent: Option<(u32, Flow)>,
    /// The simple command whose words are being read.
    pub(super) cur_cmd: Option<u32>,
    pub(super) nest: u32,
    pub(super) pending: Vec<Pending>,
    /// Inside an arithmetic context (its command output is evaluated).
    pub(super) in_arith: u32,
}

pub(super) fn is_delim(c: u8) -> bool {
    matches!(c, b' ' | b'\t' | b'\n' | b';' | b'&' | b'|' | b'<' | b'>' | b'(' | b')')
}

impl<'a> Parser<'a> {
    pub(super) fn new(s: &'a str, base: usize) -> Parser<'a> {
        Parser {
            s,
            b: s.as_bytes(),
            i: 0,
            base,
            out: Script::default(),
            pipe_ctx: Vec::new(),
            next_pipe: 0,
            parent: None,
            cur_cmd: None,
            nest: 0,
            pending: Vec::new(),
            in_arith: 0,
        }
    }

    pub(super) fn eof(&self) -> bool {
        self.i >= self.b.len()
    }

    pub(super) fn peek(&self) -> u8 {
        self.b.get(self.i).copied().unwrap_or(0)
    }

    pub(super) fn peek_at(&self, k: usize) -> u8 {
        self.b.get(self.i + k).copied().unwrap_or(0)
    }

    pub(super) fn slice(&self, a: usize, b: usize) -> &'a str {
        self.s.get(a..b.min(self.b.len())).unwrap_or("")
    }

    pub(super) fn err(&mut self, msg: impl Into<String>) {
        if self.out.errors.len() < 8 {
            self.out.errors.push(msg.into());
        }
    }

    /// Records an error and stops parsing (limits).
    pub(super) fn abort(&mut self, msg: &str) {
        self.err(msg);
        self.i = self.b.len();
    }

    /// Blanks, line continuations and a comment up to the end of the line.
    pub(super) fn skip_blanks(&mut self) {
        loop {
            match self.peek() {
                b' ' | b'\t' if !self.eof() => self.i += 1,
                b'\\' if self.peek_at(1) == b'\n' => self.i += 2,
                b'#' if !self.eof() => {
                    while !self.eof() && self.peek() != b'\n' {
                        self.i += 1;
                    }
                }
                _ => return,
            }
        }
    }

    /// Blanks and newlines; here-document bodies start after a newline.
    pub(super) fn skip_space_nl(&mut self) {
        loop {
            self.skip_blanks();
            if !self.eof() && self.peek() == b'\n' {
                self.i += 1;
                self.read_heredocs();
            } else {
                return;
            }
        }
    }

    pub(super) fn peek_kw(&self) -> Option<(Kw, usize)> {
        let rest = self.b.get(self.i..)?;
        let n = rest.iter().take_while(|c| c.is_ascii_lowercase() || matches!(c, b'{' | b'}' | b'!' | b'[')).count();
        if n == 0 {
            return None;
        }
        let after = rest.get(n).copied();
        if !after.is_none_or(is_delim) {
            return None;
        }
        let blank_after = after.is_none_or(|c| matches!(c, b' ' | b'\t' | b'\n'));
        let kw = match &rest[..n] {
            b"if" => Kw::If,
            b"then" => Kw::Then,
            b"elif" => Kw::Elif,
            b"else" => Kw::Else,
            b"fi" => Kw::Fi,
            b"while" => Kw::While,
            b"until" => Kw::Until,
            b"for" => Kw::For,
            b"select" => Kw::Select,
            b"do" => Kw::Do,
            b"done" => Kw::Done,
            b"case" => Kw::Case,
            b"esac" => Kw::Esac,
            b"in" => Kw::In,
            b"function" => Kw::Function,
            b"{" if blank_after => Kw::LBrace,
            b"}" => Kw::RBrace,
            b"!" if blank_after => Kw::Bang,
            b"[[" if blank_after => Kw::DLBrack,
            _ => return None,
        };
        Some((kw, n))
    }

    pub(super) fn eat_kw(&mut self, want: Kw) -> bool {
        match self.peek_kw() {
            Some((kw, n)) if kw == want => {
                self.i += n;
                true
            }
            _ => false,
        }
    }

    pub(super) fn at_stop(&self, stops: u32) -> Option<u32> {
        let st = match self.peek() {
            b')' => S_RPAREN,
            b';' if matches!(self.peek_at(1), b';' | b'&') => S_DSEMI,
            _ => self.peek_kw().map_or(0, |(kw, _)| kw.stop()),
        };
        (st != 0 && stops & st != 0).then_some(st)
    }

    /// Consumes the stop token `list` returned at.
    pub(super) fn eat_stop(&mut self) {
        self.i += match (self.peek(), self.peek_at(1), self.peek_at(2)) {
            (b')', _, _) => 1,
            (b';', b';', b'&') => 3,
            (b';', _, _) => 2,
            _ => self.peek_kw().map_or(1, |(_, n)| n),
        };
    }

    /// A closing token that no open construct expects.
    pub(super) fn at_closer(&self) -> Option<(&'static str, usize)> {
        match (self.peek(), self.peek_at(1)) {
            (b')', _) => Some(("')'", 1)),
            (b';', b';') => Some(("';;'", 2)),
            (b';', b'&') => Some(("';&'", 2)),
            _ => match self.peek_kw()? {
                (Kw::Then, n) => Some(("then", n)),
                (Kw::Elif, n) => Some(("elif", n)),
                (Kw::Else, n) => Some(("else", n)),
                (Kw::Fi, n) => Some(("fi", n)),
                (Kw::Do, n) => Some(("do", n)),
                (Kw::Done, n) => Some(("done", n)),
                (Kw::Esac, n) => Some(("esac", n)),
                (Kw::RBrace, n) => Some(("'}'", n)),
                _ => None,
            },
        }
    }

    /// A list of and-or lists up to the end or one of `stops` (not consumed).
    pub(super) fn list(&mut self, stops: u32) -> Option<u32> {
        loop {
            self.skip_space_nl();
            if self.peek() == b';' && !matches!(self.peek_at(1), b';' | b'&') && !self.eof() {
                self.i += 1;
                continue;
            }
            if self.eof() {
                return None;
            }
            if let Some(st) = self.at_stop(stops) {
                return Some(st);
            }
            if let Some((what, n)) = self.at_closer() {
                self.err(format!("unexpected {what}"));
                self.i += n;
                continue;
            }
            let before = self.i;
            let first = self.out.cmds.len();
            self.and_or();
            self.skip_blanks();
            match (self.peek(), self.peek_at(1)) {
                (b';', n) if n != b';' && n != b'&' => self.i += 1,
                (b'&', n) if n != b'&' && n != b'>' => {
                    self.i += 1;
                    for c in &mut self.out.cmds[first..] {
                        c.background = true;
                    }
                }
                _ => {}
            }
            if self.i == before && !self.eof() {
                let c = self.s.get(self.i..).and_then(|t| t.chars().next()).unwrap_or('\u{fffd}');
                self.err(format!("unexpected {c:?}"));
                self.i += c.len_utf8().max(1);
            }
        }
    }

    pub(super) fn and_or(&mut self) {
        self.pipeline();
        loop {
            self.skip_blanks();
            let (a, b) = (self.peek(), self.peek_at(1));
            if (a == b'&' && b == b'&') || (a == b'|' && b == b'|') {
                self.i += 2;
                self.skip_space_nl();
                self.pipeline();
            } else {
                return;
            }
        }
    }

    pub(super) fn pipeline(&mut self) {
        self.skip_blanks();
        while let Some((Kw::Bang, n)) = self.peek_kw() {
            self.i += n;
            self.skip_blanks();
        }
        let id = self.next_pipe;
        self.next_pipe = self.next_pipe.wrapping_add(1);
        let first = self.out.cmds.len();
        let mut stage = 0u16;
        loop {
            self.pipe_ctx.push((id, stage));
            self.command();
            self.pipe_ctx.pop();
            self.skip_blanks();
            if self.peek() == b'|' && self.peek_at(1) != b'|' {
                self.i += 1;
                if self.peek() == b'&' {
                    self.i += 1;
                }
                self.skip_space_nl();
                stage = stage.saturating_add(1);
            } else {
                break;
            }
        }
        if stage > 0 {
            for c in &mut self.out.cmds[first..] {
                c.piped = true;
            }
        }
    }

    pub(super) fn command(&mut self) {
        if self.nest > MAX_NEST {
            return self.abort("nested too deeply");
        }
        if self.base + self.out.cmds.len() >= MAX_CMDS {
            return self.abort("too many commands");
        }
        self.skip_blanks();
        if self.eof() {
            return;
        }
        if self.peek() == b'(' {
            self.nest += 1;
            if self.peek_at(1) == b'(' {
                self.i += 2;
                self.arith();
            } else {
                self.i += 1;
                self.block(S_RPAREN, "')'");
            }
            self.nest -= 1;
            return self.compound_redirs();
        }
        let Some((kw, n)) = self.peek_kw() else { return self.simple() };
        self.nest += 1;
        match kw {
            Kw::LBrace => {
                self.i += n;
                self.block(S_RBRACE, "'}'");
            }
            Kw::If => {
                self.i += n;
                self.if_clause();
            }
            Kw::While | Kw::Until => {
                self.i += n;
                self.list(S_DO);
                if self.eat_kw(Kw::Do) {
                    self.block(S_DONE, "done");
                } else {
                    self.err("missing do");
                }
            }
            Kw::For | Kw::Select => {
                self.i += n;
                self.for_clause();
            }
            Kw::Case => {
                self.i += n;
                self.case_clause();
            }
            Kw::Function => {
                self.i += n;
                self.skip_blanks();
                let name = self.word(false).text;
                self.skip_blanks();
                if self.peek() == b'(' {
                    self.empty_parens();
                }
                self.skip_space_nl();
                self.func_body(name);
            }
            Kw::DLBrack => self.test_cmd(),
            Kw::Bang => {
                self.i += n;
                self.command();
            }
            Kw::In => self.simple(),
            // A closer: the enclosing list reports or takes it.
            _ => {}
        }
        self.nest -= 1;
        if matches!(kw, Kw::LBrace | Kw::If | Kw::While | Kw::Until | Kw::For | Kw::Select | Kw::Case) {
            self.compound_redirs();
        }
    }

    pub(super) fn new_cmd(&mut self) -> usize {
        let idx = self.base + self.out.cmds.len();
        self.out.cmds.push(Cmd { pipes: self.pipe_ctx.clone(), parent: self.parent, ..Cmd::default() });
        idx
    }

    pub(super) fn simple(&mut self) {
        let idx = self.new_cmd();
        let saved = self.cur_cmd.replace(idx as u32);
        let (mut words, mut assigns, mut redirs) = (Vec::new(), Vec::new(), Vec::new());
        loop {
            self.skip_blanks();
            if self.eof() {
                break;
            }
            let c = self.peek();
            match c {
                b'\n' | b';' | b'|' | b')' => break,
                b'&' if self.peek_at(1) != b'>' => break,
                b'(' => {
                    let is_name = words.len() == 1 && assigns.is_empty() && redirs.is_empty() && {
                        let w: &Word = &words[0];
                        w.literal() && !w.quoted && !w.text.is_empty()
                    };
                    if is_name && self.empty_parens() {
                        self.cur_cmd = saved;
                        let name = words.pop().map(|w: Word| w.text).unwrap_or_default();
                        if self.out.cmds.len() == idx - self.base + 1 {
                            self.out.cmds.pop();
                        }
                        self.skip_space_nl();
                        return self.func_body(name);
                    }
                    self.err("unexpected '('");
                    break;
                }
                _ => {}
            }
            if matches!(c, b'<' | b'>') && self.peek_at(1) == b'(' {
                let w = self.procsubst();
                words.push(w);
                continue;
            }
            if let Some(r) = self.redirect(idx, redirs.len()) {
                redirs.push(r);
                continue;
            }
            let w = self.word(words.is_empty());
            if w.assign.is_some() && words.is_empty() {
                assigns.push(w);
            } else {
                words.push(w);
            }
        }
        self.cur_cmd = saved;
        let local = idx - self.base;
        if words.is_empty() && assigns.is_empty() && redirs.is_empty() && self.out.cmds.len() == local + 1 {
            self.out.cmds.pop();
            return;
        }
        let cmd = &mut self.out.cmds[local];
        cmd.words = words;
        cmd.assigns = assigns;
        cmd.redirs = redirs;
    }

    /// `<(…)` or `>(…)` as a word.
    pub(super) fn procsubst(&mut self) -> Word {
        let start = self.i;
        let flow = if self.peek() == b'<' { Flow::ProcIn } else { Flow::ProcOut };
        self.i += 2;
        self.nested_list(self.cur_cmd.map(|c| (c, flow)), "missing ')'");
        let mut w = WordBuf::default();
        w.unknown(self.slice(start, self.i));
        w.finish()
    }

    /// The body of `$(…)`, `<(…)`, `>(…)` up to and including `)`.
    pub(super) fn nested_list(&mut self, parent: Option<(u32, Flow)>, missing: &str) {
        let (saved_parent, saved_cur) = (self.parent, self.cur_cmd);
        self.parent = parent;
        self.nest += 1;
        if self.list(S_RPAREN).is_some() {
            self.i += 1;
        } else {
            self.err(missing);
        }
        self.nest -= 1;
        self.parent = saved_parent;
        self.cur_cmd = saved_cur;
    }
}
