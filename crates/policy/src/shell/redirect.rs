//! Redirections, here-document bodies, and sub-parses (backtick bodies,
//! here-document expansions).

use super::parser::{is_delim, Parser, Pending};
use super::word::WordBuf;
use super::{Flow, Redir, RedirOp, Word, MAX_NEST};

impl Parser<'_> {
    pub(super) fn redirect(&mut self, cmd: usize, ridx: usize) -> Option<Redir> {
        let mut j = self.i;
        while self.b.get(j).is_some_and(u8::is_ascii_digit) {
            j += 1;
        }
        let fd = if j > self.i && matches!(self.b.get(j), Some(b'<' | b'>')) {
            Some(self.slice(self.i, j).parse::<u32>().unwrap_or(u32::MAX))
        } else {
            j = self.i;
            None
        };
        let rest = &self.b[j..];
        let (op, n) = if rest.starts_with(b"&>>") {
            (RedirOp::AppendErr, 3)
        } else if rest.starts_with(b"&>") {
            (RedirOp::OutErr, 2)
        } else if rest.starts_with(b"<<<") {
            (RedirOp::HereString, 3)
        } else if rest.starts_with(b"<<-") {
            (RedirOp::HereDocStrip, 3)
        } else if rest.starts_with(b"<<") {
            (RedirOp::HereDoc, 2)
        } else if rest.starts_with(b"<>") {
            (RedirOp::ReadWrite, 2)
        } else if rest.starts_with(b"<&") {
            (RedirOp::DupIn, 2)
        } else if rest.starts_with(b">>") {
            (RedirOp::Append, 2)
        } else if rest.starts_with(b">|") {
            (RedirOp::Clobber, 2)
        } else if rest.starts_with(b">&") {
            (RedirOp::DupOut, 2)
        } else if rest.starts_with(b"<(") || rest.starts_with(b">(") {
            return None;
        } else if rest.starts_with(b"<") {
            (RedirOp::In, 1)
        } else if rest.starts_with(b">") {
            (RedirOp::Out, 1)
        } else {
            return None;
        };
        self.i = j + n;
        self.skip_blanks();
        let target = if matches!(self.peek(), b'<' | b'>') && self.peek_at(1) == b'(' {
            self.procsubst()
        } else if self.eof() || is_delim(self.peek()) {
            self.err(format!("{} without a target", op.as_str()));
            Word::default()
        } else {
            self.word(false)
        };
        if matches!(op, RedirOp::HereDoc | RedirOp::HereDocStrip) {
            self.pending.push(Pending {
                cmd,
                redir: ridx,
                delim: target.text.clone(),
                strip: op == RedirOp::HereDocStrip,
                quoted: target.quoted,
            });
        }
        Some(Redir { fd, op, target, body: None })
    }

    /// Reads the bodies of the here-documents of the line just ended.
    pub(super) fn read_heredocs(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        for p in std::mem::take(&mut self.pending) {
            let mut body = String::new();
            while !self.eof() {
                let end = self.b[self.i..].iter().position(|&c| c == b'\n').map_or(self.b.len(), |k| self.i + k);
                let line = self.slice(self.i, end);
                self.i = (end + 1).min(self.b.len());
                let line = if p.strip { line.trim_start_matches('\t') } else { line };
                if line == p.delim {
                    break;
                }
                body.push_str(line);
                body.push('\n');
            }
            if !p.quoted && (body.contains('$') || body.contains('`')) {
                self.sub_parse(&body, true, Some((p.cmd as u32, Flow::Subst)));
            }
            if let Some(r) = self.out.cmds.get_mut(p.cmd - self.base).and_then(|c| c.redirs.get_mut(p.redir)) {
                r.body = Some(body);
            }
        }
    }

    /// Parses `text` (a backtick body, or a here-document body in double-
    /// quote mode) and appends its commands.
    pub(super) fn sub_parse(&mut self, text: &str, dq_mode: bool, parent: Option<(u32, Flow)>) {
        if self.nest >= MAX_NEST {
            return self.abort("nested too deeply");
        }
        let mut p = Parser::new(text, self.base + self.out.cmds.len());
        p.nest = self.nest + 1;
        p.next_pipe = self.next_pipe;
        p.pipe_ctx = self.pipe_ctx.clone();
        p.parent = parent;
        if dq_mode {
            let mut w = WordBuf::default();
            p.dquote(&mut w, false);
        } else {
            p.list(0);
            p.read_heredocs();
        }
        self.next_pipe = p.next_pipe;
        self.out.cmds.append(&mut p.out.cmds);
        self.out.funcs.append(&mut p.out.funcs);
        for e in p.out.evals {
            self.note_eval(e);
        }
        self.out.set_names.append(&mut p.out.set_names);
        self.out.runtime_values |= p.out.runtime_values;
        for e in p.out.errors {
            self.err(e);
        }
    }
}
