//! Words: quoting, escapes, expansions and globs.

use super::parser::{is_delim, Parser};
use super::Word;

/// A word being built: its value and its match subject (see [`Word`]).
#[derive(Default)]
pub(crate) struct WordBuf {
    text: String,
    subj: Option<String>,
    pub dynamic: bool,
    pub glob: bool,
    pub quoted: bool,
    assign: Option<usize>,
    /// The subject ends with a wildcard: 1 `*`, 2 `**`.
    last_wild: u8,
    /// Inside a brace expansion: the subject already has `**` for it.
    brace: u32,
}

fn escape(t: &str) -> String {
    let mut s = String::with_capacity(t.len() + 4);
    for c in t.chars() {
        if matches!(c, '*' | '?' | '\\') {
            s.push('\\');
        }
        s.push(c);
    }
    s
}

impl WordBuf {
    pub fn is_empty(&self) -> bool {
        self.text.is_empty()
    }

    fn subj(&mut self) -> &mut String {
        let text = &self.text;
        self.subj.get_or_insert_with(|| escape(text))
    }

    /// A known character.
    pub fn lit(&mut self, c: char) {
        if self.brace == 0 {
            let meta = matches!(c, '*' | '?' | '\\');
            if meta || self.subj.is_some() {
                let s = self.subj();
                if meta {
                    s.push('\\');
                }
                s.push(c);
            }
            self.last_wild = 0;
        }
        self.text.push(c);
    }

    /// Source text standing for any run of characters without `/`.
    pub fn star(&mut self, src: &str) {
        if self.brace == 0 && self.last_wild == 0 {
            self.subj().push('*');
            self.last_wild = 1;
        }
        self.text.push_str(src);
    }

    /// Source text standing for any run of characters.
    pub fn any(&mut self, src: &str) {
        if self.brace == 0 {
            match self.last_wild {
                0 => self.subj().push_str("**"),
                1 => self.subj().push('*'),
                _ => {}
            }
            self.last_wild = 2;
        }
        self.text.push_str(src);
    }

    /// Source text standing for one character.
    pub fn one(&mut self, src: &str) {
        if self.brace == 0 {
            self.subj().push('?');
            self.last_wild = 0;
        }
        self.text.push_str(src);
    }

    /// `$HOME` at the start of a word: `~` for matching.
    pub fn home(&mut self, src: &str) {
        self.subj().push('~');
        self.text.push_str(src);
    }

    /// A value only known at run time.
    pub fn unknown(&mut self, src: &str) {
        self.dynamic = true;
        self.star(src);
    }

    pub fn finish(self) -> Word {
        Word {
            text: self.text,
            subj: self.subj,
            dynamic: self.dynamic,
            glob: self.glob,
            quoted: self.quoted,
            assign: self.assign,
        }
    }
}

impl Parser<'_> {
    pub(super) fn next_char(&mut self) -> char {
        match self.s.get(self.i..).and_then(|t| t.chars().next()) {
            Some(c) => {
                self.i += c.len_utf8();
                c
            }
            None => {
                self.i += 1;
                '\u{fffd}'
            }
        }
    }

    /// One word, up to an unquoted blank or operator. `assign_ok`: a
    /// leading `NAME=` makes it an assignment.
    pub(super) fn word(&mut self, assign_ok: bool) -> Word {
        let mut w = WordBuf::default();
        let mut ident = assign_ok;
        while !self.eof() {
            let c = self.peek();
            match c {
                _ if is_delim(c) => break,
                b'\\' => {
                    ident = false;
                    self.i += 1;
                    if self.eof() {
                        w.lit('\\');
                        break;
                    }
                    if self.peek() == b'\n' {
                        self.i += 1;
                        continue;
                    }
                    w.quoted = true;
                    let ch = self.next_char();
                    w.lit(ch);
                }
                b'\'' => {
                    ident = false;
                    w.quoted = true;
                    self.i += 1;
                    self.squote(&mut w);
                }
                b'"' => {
                    ident = false;
                    w.quoted = true;
                    self.i += 1;
                    self.dquote(&mut w, true);
                }
                b'$' => {
                    ident = false;
                    self.dollar(&mut w, false);
                }
                b'`' => {
                    ident = false;
                    self.backtick(&mut w, false);
                }
                b'*' => {
                    ident = false;
                    w.glob = true;
                    if self.peek_at(1) == b'*' {
                        self.i += 2;
                        w.any("**");
                    } else {
                        self.i += 1;
                        w.star("*");
                    }
                }
                b'?' => {
                    ident = false;
                    w.glob = true;
                    self.i += 1;
                    w.one("?");
                }
                b'[' if self.class_end().is_some() => {
                    ident = false;
                    let end = self.class_end().unwrap_or(self.i + 1);
                    w.glob = true;
                    w.one(self.slice(self.i, end));
                    self.i = end;
                }
                b'{' if self.brace_group() => {
                    ident = false;
                    w.glob = true;
                    w.any("{");
                    w.brace += 1;
                    self.i += 1;
                }
                b'}' if w.brace > 0 => {
                    w.brace -= 1;
                    w.text.push('}');
                    self.i += 1;
                }
                b'=' | b'+' if ident && !w.is_empty() && w.assign.is_none() => {
                    if c == b'+' && self.peek_at(1) != b'=' {
                        ident = false;
                        w.lit('+');
                        self.i += 1;
                        continue;
                    }
                    w.assign = Some(w.text.len());
                    ident = false;
                    if c == b'+' {
                        w.lit('+');
                        self.i += 1;
                    }
                    w.lit('=');
                    self.i += 1;
                    if self.peek() == b'(' {
                        self.array(&mut w);
                    }
                }
                _ => {
                    let ch = self.next_char();
                    if ident && !(ch.is_ascii_alphanumeric() || ch == '_') || (w.is_empty() && ch.is_ascii_digit()) {
                        ident = false;
                    }
                    w.lit(ch);
                }
            }
        }
        w.finish()
    }

    /// `name=(a b c)`: the elements' substitutions are parsed; the value is
    /// unknown.
    fn array(&mut self, w: &mut WordBuf) {
        let start = self.i;
        self.i += 1;
        loop {
            while matches!(self.peek(), b' ' | b'\t' | b'\n') && !self.eof() {
                self.i += 1;
            }
            if self.eof() {
                self.err("unterminated array");
                break;
            }
            if self.peek() == b')' {
                self.i += 1;
                break;
            }
            if is_delim(self.peek()) {
                self.err("bad array element");
                break;
            }
            self.word(false);
        }
        w.unknown(self.slice(start, self.i));
    }

    /// At `[`: the end of a bracket expression, if this is one.
    fn class_end(&self) -> Option<usize> {
        let mut j = self.i + 1;
        if matches!(self.b.get(j), Some(b'!' | b'^')) {
            j += 1;
        }
        if self.b.get(j) == Some(&b']') {
            j += 1;
        }
        while let Some(&c) = self.b.get(j) {
            if c == b']' {
                return Some(j + 1);
            }
            if is_delim(c) || matches!(c, b'\'' | b'"' | b'\\' | b'$' | b'`') {
                return None;
            }
            j += 1;
        }
        None
    }

    /// At `{`: a brace expansion (`{a,b}`, `{1..3}`) follows.
    fn brace_group(&self) -> bool {
        let (mut depth, mut sep) = (0u32, false);
        let mut j = self.i;
        while let Some(&c) = self.b.get(j) {
            match c {
                b'{' => depth += 1,
                b'}' => {
                    depth -= 1;
                    if depth == 0 {
                        return sep;
                    }
                }
                b',' if depth == 1 => sep = true,
                b'.' if depth == 1 && self.b.get(j + 1) == Some(&b'.') => sep = true,
                b'\\' => j += 1,
                b'\'' | b'"' => return false,
                _ if is_delim(c) => return false,
                _ => {}
            }
            j += 1;
        }
        false
    }

    /// After `'`: up to the closing quote.
    pub(super) fn squote(&mut self, w: &mut WordBuf) {
        let rest = &self.b[self.i..];
        let (end, closed) = match rest.iter().position(|&c| c == b'\'') {
            Some(k) => (self.i + k, true),
            None => (self.b.len(), false),
        };
        for c in String::from_utf8_lossy(&self.b[self.i..end]).chars() {
            w.lit(c);
        }
        self.i = if closed { end + 1 } else { end };
        if !closed {
            self.err("unterminated single quote");
        }
    }

    /// After `"` (or a here-document body when `closed` is false).
    pub(super) fn dquote(&mut self, w: &mut WordBuf, closed: bool) {
        loop {
            if self.eof() {
                if closed {
                    self.err("unterminated double quote");
                }
                return;
            }
            match self.peek() {
                b'"' if closed => {
                    self.i += 1;
                    return;
                }
                b'\\' => match self.peek_at(1) {
                    n @ (b'$' | b'`' | b'"' | b'\\') if closed || n != b'"' => {
                        self.i += 2;
                        w.lit(n as char);
                    }
                    b'\n' => self.i += 2,
                    _ => {
                        self.i += 1;
                        w.lit('\\');
                    }
                },
                b'$' => self.dollar(w, true),
                b'`' => self.backtick(w, true),
                _ => {
                    let c = self.next_char();
                    w.lit(c);
                }
            }
        }
    }
}
