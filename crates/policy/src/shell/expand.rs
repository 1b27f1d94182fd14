//! Expansions: `$NAME`, `${…}`, `$(…)`, `$((…))`, backticks, `$'…'`.

use super::parser::Parser;
use super::word::WordBuf;
use super::{Flow, MAX_NEST};

impl Parser<'_> {
    /// At `$`.
    pub(super) fn dollar(&mut self, w: &mut WordBuf, in_dq: bool) {
        let start = self.i;
        match self.peek_at(1) {
            b'(' => {
                if self.peek_at(2) == b'(' {
                    self.i += 3;
                    self.arith();
                } else {
                    self.i += 2;
                    if self.in_arith > 0 {
                        self.out.runtime_values = true;
                    }
                    self.nested_list(self.cur_cmd.map(|c| (c, Flow::Subst)), "unterminated $(");
                }
                w.unknown(self.slice(start, self.i));
            }
            b'[' => {
                // `$[…]`: bash's old arithmetic expansion.
                self.i += 2;
                self.note_eval("arithmetic $[…]");
                self.bracket_arith();
                w.unknown(self.slice(start, self.i));
            }
            b'{' => {
                self.i += 2;
                let closed = self.param();
                let inner = if closed { self.slice(start + 2, self.i - 1) } else { "" };
                self.param_kind(inner);
                if inner == "HOME" && w.is_empty() {
                    w.home(self.slice(start, self.i));
                } else {
                    w.unknown(self.slice(start, self.i));
                }
            }
            b'\'' if !in_dq => {
                self.i += 2;
                w.quoted = true;
                self.ansi_c(w);
            }
            b'"' if !in_dq => {
                self.i += 2;
                w.quoted = true;
                self.dquote(w, true);
            }
            c if c.is_ascii_alphabetic() || c == b'_' => {
                self.i += 1;
                let s = self.i;
                while self.peek().is_ascii_alphanumeric() || self.peek() == b'_' {
                    self.i += 1;
                }
                if self.slice(s, self.i) == "HOME" && w.is_empty() {
                    w.home(self.slice(start, self.i));
                } else {
                    w.unknown(self.slice(start, self.i));
                }
            }
            c if c.is_ascii_digit() || matches!(c, b'@' | b'*' | b'#' | b'?' | b'$' | b'!' | b'-') => {
                self.i += 2;
                w.unknown(self.slice(start, self.i));
            }
            _ => {
                self.i += 1;
                w.lit('$');
            }
        }
    }

    /// After `${`: up to the matching `}`; nested substitutions are parsed.
    /// Returns whether it was closed.
    pub(super) fn param(&mut self) -> bool {
        if self.nest >= MAX_NEST {
            self.abort("nested too deeply");
            return false;
        }
        self.nest += 1;
        self.in_arith += 1;
        let mut depth = 1u32;
        let mut scratch = WordBuf::default();
        while !self.eof() {
            match self.peek() {
                b'}' => {
                    self.i += 1;
                    depth -= 1;
                    if depth == 0 {
                        self.in_arith -= 1;
                        self.nest -= 1;
                        return true;
                    }
                }
                b'{' => {
                    depth += 1;
                    self.i += 1;
                }
                _ => self.skip_inner(&mut scratch),
            }
        }
        self.in_arith -= 1;
        self.nest -= 1;
        self.err("unterminated ${");
        false
    }

    /// Inside `${…}` or `$((…))`: one substitution, quoted part, escape or
    /// plain byte (substitutions inside are still found and classified).
    fn skip_inner(&mut self, scratch: &mut WordBuf) {
        match self.peek() {
            b'$' => self.dollar(scratch, true),
            b'`' => self.backtick(scratch, true),
            b'"' => {
                self.i += 1;
                self.dquote(scratch, true);
            }
            b'\'' => {
                self.i += 1;
                self.squote(scratch);
            }
            b'\\' => self.i = (self.i + 2).min(self.b.len()),
            _ => self.i += 1,
        }
    }

    pub(super) fn note_eval(&mut self, what: &'static str) {
        if !self.out.evals.contains(&what) {
            self.out.evals.push(what);
        }
    }

    /// What a `${…}` does with a value (its text between the braces).
    fn param_kind(&mut self, inner: &str) {
        if inner.starts_with('!') && inner.len() > 1 {
            self.note_eval("indirect expansion ${!…}");
        }
        let name_end = inner.bytes().position(|c| !(c.is_ascii_alphanumeric() || c == b'_')).unwrap_or(inner.len());
        let rest = &inner[name_end..];
        if rest.starts_with('[') {
            self.note_eval("an array subscript");
        }
        if let Some(op) = rest.strip_prefix(':') {
            if !op.starts_with(['-', '=', '?', '+']) {
                self.note_eval("a substring offset ${x:…}");
            }
        }
        if rest.contains("@P") {
            self.note_eval("prompt expansion ${x@P}");
        }
        if name_end > 0 && (rest.starts_with(":=") || rest.starts_with('=')) {
            self.out.set_names.push(inner[..name_end].to_string());
        }
    }

    /// After `$[`: up to the matching `]`.
    fn bracket_arith(&mut self) {
        self.arith_body(b'[', b']', false);
    }

    /// After `((` or `$((`: up to the matching `))`.
    pub(super) fn arith(&mut self) {
        self.note_eval("arithmetic");
        self.arith_body(b'(', b')', true);
    }

    /// An arithmetic body up to the `close` that matches (`close` twice when
    /// `double`), nested `open`/`close` pairs and expansions skipped.
    fn arith_body(&mut self, open: u8, close: u8, double: bool) {
        let missing = if double { "missing ))" } else { "missing ]" };
        if self.nest >= MAX_NEST {
            return self.abort("nested too deeply");
        }
        self.nest += 1;
        self.in_arith += 1;
        let mut depth = 0u32;
        let mut scratch = WordBuf::default();
        loop {
            if self.eof() {
                self.err(missing);
                break;
            }
            let c = self.peek();
            if c == open {
                depth += 1;
                self.i += 1;
            } else if c == close && depth > 0 {
                depth -= 1;
                self.i += 1;
            } else if c == close {
                if !double || self.peek_at(1) == close {
                    self.i += 1 + usize::from(double);
                } else {
                    self.err(missing);
                    self.i += 1;
                }
                break;
            } else {
                self.skip_inner(&mut scratch);
            }
        }
        self.in_arith -= 1;
        self.nest -= 1;
    }

    /// At a backtick: its body is unescaped and parsed as a script.
    pub(super) fn backtick(&mut self, w: &mut WordBuf, in_dq: bool) {
        let start = self.i;
        if self.in_arith > 0 {
            self.out.runtime_values = true;
        }
        self.i += 1;
        let mut body = Vec::new();
        let mut closed = false;
        while !self.eof() {
            let c = self.peek();
            if c == b'`' {
                self.i += 1;
                closed = true;
                break;
            }
            let n = self.peek_at(1);
            if c == b'\\' && (matches!(n, b'`' | b'\\' | b'$') || (in_dq && n == b'"')) {
                body.push(n);
                self.i += 2;
                continue;
            }
            body.push(c);
            self.i += 1;
        }
        if !closed {
            self.err("unterminated backtick");
        }
        let body = String::from_utf8_lossy(&body).into_owned();
        self.sub_parse(&body, false, self.cur_cmd.map(|c| (c, Flow::Subst)));
        w.unknown(self.slice(start, self.i));
    }

    /// After `$'`: ANSI-C escapes.
    pub(super) fn ansi_c(&mut self, w: &mut WordBuf) {
        while !self.eof() {
            let c = self.peek();
            if c == b'\'' {
                self.i += 1;
                return;
            }
            if c != b'\\' {
                let ch = self.next_char();
                w.lit(ch);
                continue;
            }
            self.i += 1;
            if self.eof() {
                w.lit('\\');
                break;
            }
            let e = self.peek();
            if e >= 0x80 {
                w.lit('\\');
                continue;
            }
            self.i += 1;
            let ch = match e {
                b'a' => Some('\x07'),
                b'b' => Some('\x08'),
                b'e' | b'E' => Some('\x1b'),
                b'f' => Some('\x0c'),
                b'n' => Some('\n'),
                b'r' => Some('\r'),
                b't' => Some('\t'),
                b'v' => Some('\x0b'),
                b'0'..=b'7' => {
                    let mut v = u32::from(e - b'0');
                    for _ in 0..2 {
                        match self.peek() {
                            d @ b'0'..=b'7' if !self.eof() => {
                                v = v * 8 + u32::from(d - b'0');
                                self.i += 1;
                            }
                            _ => break,
                        }
                    }
                    char::from_u32(v & 0xff)
                }
                b'x' => self.hex(2).and_then(char::from_u32),
                b'u' => Some(self.hex(4).and_then(char::from_u32).unwrap_or('\u{fffd}')),
                b'U' => Some(self.hex(8).and_then(char::from_u32).unwrap_or('\u{fffd}')),
                b'c' if !self.eof() => {
                    let x = self.peek();
                    self.i += 1;
                    Some(char::from(x & 0x1f))
                }
                other => {
                    if !matches!(other, b'\\' | b'\'' | b'"' | b'?') {
                        w.lit('\\');
                    }
                    Some(char::from(other))
                }
            };
            match ch {
                // NUL ends the string in bash; drop it.
                Some('\0') => {}
                Some(ch) => w.lit(ch),
                None => {
                    w.lit('\\');
                    w.lit(char::from(e));
                }
            }
        }
        self.err("unterminated $'");
    }

    pub(super) fn hex(&mut self, max: usize) -> Option<u32> {
        let mut v = 0u32;
        let mut n = 0;
        while n < max && self.peek().is_ascii_hexdigit() && !self.eof() {
            v = v * 16 + (self.peek() as char).to_digit(16).unwrap_or(0);
            self.i += 1;
            n += 1;
        }
        (n > 0).then_some(v)
    }
}
