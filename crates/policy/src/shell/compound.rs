//! Compound commands: `{ }`, `if`, `while`/`until`, `for`/`select`,
//! `case`, function bodies, `[[ ]]`, and redirections after them.

use super::parser::{is_delim, Kw, Parser, S_DONE, S_DSEMI, S_ELIF, S_ELSE, S_ESAC, S_FI, S_THEN};
use super::{Func, Word};

impl Parser<'_> {
    pub(super) fn block(&mut self, stop: u32, name: &str) {
        if self.list(stop).is_some() {
            self.eat_stop();
        } else {
            self.err(format!("missing {name}"));
        }
    }

    pub(super) fn if_clause(&mut self) {
        loop {
            self.list(S_THEN);
            if !self.eat_kw(Kw::Then) {
                return self.err("missing then");
            }
            match self.list(S_ELIF | S_ELSE | S_FI) {
                Some(S_ELIF) => self.eat_stop(),
                Some(S_ELSE) => {
                    self.eat_stop();
                    return self.block(S_FI, "fi");
                }
                Some(_) => return self.eat_stop(),
                None => return self.err("missing fi"),
            }
        }
    }

    pub(super) fn for_clause(&mut self) {
        self.skip_blanks();
        let mut named = false;
        if self.peek() == b'(' && self.peek_at(1) == b'(' {
            self.i += 2;
            self.arith();
        } else if !self.eof() && !is_delim(self.peek()) {
            let name = self.word(false);
            self.out.set_names.push(name.text);
            named = true;
        }
        self.skip_space_nl();
        if self.eat_kw(Kw::In) {
            loop {
                self.skip_blanks();
                if self.eof() || is_delim(self.peek()) {
                    break;
                }
                let w = self.word(false);
                if !w.literal() {
                    self.out.runtime_values = true;
                }
            }
        } else if named {
            // `for x; do`: the positional parameters.
            self.out.runtime_values = true;
        }
        self.skip_blanks();
        if self.peek() == b';' {
            self.i += 1;
        }
        self.skip_space_nl();
        if self.eat_kw(Kw::Do) {
            self.block(S_DONE, "done");
        } else {
            self.err("missing do");
        }
    }

    pub(super) fn case_clause(&mut self) {
        self.skip_blanks();
        if !self.eof() && !is_delim(self.peek()) {
            self.word(false);
        }
        self.skip_space_nl();
        if !self.eat_kw(Kw::In) {
            return self.err("missing in");
        }
        loop {
            self.skip_space_nl();
            if self.eof() {
                return self.err("missing esac");
            }
            if self.eat_kw(Kw::Esac) {
                return;
            }
            if self.peek() == b'(' {
                self.i += 1;
            }
            loop {
                self.skip_blanks();
                match self.peek() {
                    _ if self.eof() => return self.err("missing esac"),
                    b')' => {
                        self.i += 1;
                        break;
                    }
                    b'|' => self.i += 1,
                    c if is_delim(c) => {
                        self.i += 1;
                        return self.err("bad case pattern");
                    }
                    _ => {
                        self.word(false);
                    }
                }
            }
            match self.list(S_DSEMI | S_ESAC) {
                Some(S_DSEMI) => self.eat_stop(),
                Some(_) => return self.eat_stop(),
                None => return self.err("missing esac"),
            }
        }
    }

    /// At `(`: consumes `( )` of a function definition if that is what it is.
    pub(super) fn empty_parens(&mut self) -> bool {
        let mut j = self.i + 1;
        while matches!(self.b.get(j), Some(b' ' | b'\t')) {
            j += 1;
        }
        if self.b.get(j) == Some(&b')') {
            self.i = j + 1;
            true
        } else {
            false
        }
    }

    pub(super) fn func_body(&mut self, name: String) {
        let start = self.base + self.out.cmds.len();
        let f = self.out.funcs.len();
        self.out.funcs.push(Func { name, start, end: start });
        self.nest += 1;
        self.command();
        self.nest -= 1;
        self.out.funcs[f].end = self.base + self.out.cmds.len();
    }

    /// Redirections after a compound command (`done < file`) become a
    /// command without words.
    pub(super) fn compound_redirs(&mut self) {
        self.skip_blanks();
        let c = self.peek();
        if !(matches!(c, b'<' | b'>') || c.is_ascii_digit() || (c == b'&' && self.peek_at(1) == b'>')) {
            return;
        }
        let idx = self.new_cmd();
        let saved = self.cur_cmd.replace(idx as u32);
        let mut redirs = Vec::new();
        loop {
            self.skip_blanks();
            match self.redirect(idx, redirs.len()) {
                Some(r) => redirs.push(r),
                None => break,
            }
        }
        self.cur_cmd = saved;
        let local = idx - self.base;
        if redirs.is_empty() && self.out.cmds.len() == local + 1 {
            self.out.cmds.pop();
        } else {
            self.out.cmds[local].redirs = redirs;
        }
    }

    /// `[[ … ]]`: one command whose operators are words.
    pub(super) fn test_cmd(&mut self) {
        let idx = self.new_cmd();
        let saved = self.cur_cmd.replace(idx as u32);
        self.i += 2;
        let mut words = vec![Word::plain("[[")];
        loop {
            self.skip_blanks();
            if self.eof() || self.peek() == b'\n' {
                self.err("missing ]]");
                break;
            }
            if self.peek() == b']' && self.peek_at(1) == b']' && (self.peek_at(2) == 0 || is_delim(self.peek_at(2))) {
                self.i += 2;
                words.push(Word::plain("]]"));
                break;
            }
            let n = match (self.peek(), self.peek_at(1)) {
                (b'&', b'&') | (b'|', b'|') => 2,
                (b'<' | b'>' | b'(' | b')' | b'!', _) => 1,
                (b';' | b'&' | b'|', _) => {
                    self.err("missing ]]");
                    break;
                }
                _ => 0,
            };
            if n > 0 {
                words.push(Word::plain(self.slice(self.i, self.i + n)));
                self.i += n;
            } else {
                words.push(self.word(false));
            }
        }
        self.cur_cmd = saved;
        self.out.cmds[idx - self.base].words = words;
    }
}
