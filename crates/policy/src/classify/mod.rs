//! Classification: a command line → the simple commands it could run →
//! the rules that match each → one decision, the strictest.

mod code;
mod wrappers;

use crate::risk::{Effect, Level, RiskProfile};
use crate::rules::matcher::View;
use crate::rules::paths::{Cwd, Mode};
use crate::rules::{CommandRules, Compiled};
use crate::shell::{self, Flow, Redir, Script, Word};
use serde::Serialize;
use wrappers::{Inner, ShellMode};

/// Lines longer than this are not parsed (they are `unresolved`).
pub const MAX_LINE: usize = 1 << 20;
/// How deep `sh -c "sh -c '…'"`, `eval`, here-documents fed to shells, …
/// are followed.
pub const MAX_DEPTH: u32 = 8;

/// The decision on a command line.
#[derive(Debug, Clone, Serialize)]
pub struct Decision {
    /// The strictest effect of any simple command (deny > review > allow).
    pub effect: Effect,
    /// The rule that decided (or `unknown`, `unresolved`, `fork-bomb`,
    /// `no-command`, `empty`).
    pub rule: String,
    pub reason: String,
    /// 0–100: the highest risk of any rule that matched any command.
    pub risk: u8,
    /// Per category, the highest level of any rule that matched.
    pub risks: RiskProfile,
    /// Every simple command the line could run, in order, nested ones after
    /// the command that runs them.
    pub commands: Vec<SimpleCommand>,
}

/// One simple command and its own decision.
#[derive(Debug, Clone, Serialize)]
pub struct SimpleCommand {
    /// Words after quote removal; run-time parts keep their source (`$X`).
    pub argv: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub assigns: Vec<String>,
    pub redirects: Vec<Redirect>,
    /// What runs it: wrappers and shells, outermost first (`sudo`,
    /// `bash -c`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub via: Vec<String>,
    pub effect: Effect,
    pub rule: String,
    pub reason: String,
    pub risk: u8,
}

#[derive(Debug, Clone, Serialize)]
pub struct Redirect {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fd: Option<u32>,
    pub op: &'static str,
    pub target: String,
}

/// A candidate decision for one command.
struct Cand<'a> {
    effect: Effect,
    risk: u8,
    /// Lower wins a tie (rule order; the classifier's own come last).
    order: usize,
    rule: &'a str,
    reason: std::borrow::Cow<'a, str>,
}

struct Run<'r> {
    rules: &'r Compiled,
    commands: Vec<SimpleCommand>,
    best: Option<(Effect, u8, String, String)>,
    risk: u8,
    risks: RiskProfile,
    scratch: Vec<u16>,
    /// Functions defined by the script being classified.
    funcs: Vec<String>,
    /// Where bash evaluates values as code on this line (see `code`).
    evals: Vec<&'static str>,
    /// The line holds values only known at run time that could reach one
    /// of those places (what, for the reason).
    runtime: Option<&'static str>,
}

/// One entry to judge.
struct Entry<'a> {
    words: &'a [Word],
    assigns: [&'a [Word]; 2],
    redirs: &'a [Redir],
    via: &'a [String],
    cwd: &'a Cwd,
}

/// The programs reading a command's output, computed when a rule asks.
struct Down<'s> {
    script: &'s Script,
    ci: usize,
    outer: &'s [String],
    cache: Option<Vec<String>>,
}

impl Down<'_> {
    fn get(&mut self) -> &[String] {
        if self.cache.is_none() {
            self.cache = Some(downstream(self.script, self.ci, self.outer));
        }
        self.cache.as_deref().unwrap_or(&[])
    }
}

fn downstream(s: &Script, ci: usize, outer: &[String]) -> Vec<String> {
    let mut out = outer.to_vec();
    let mut cur = ci;
    for _ in 0..16 {
        let c = &s.cmds[cur];
        for &(pid, stage) in &c.pipes {
            for (di, d) in s.cmds.iter().enumerate() {
                if di != cur && d.pipes.iter().any(|&(p, st)| p == pid && st > stage) {
                    wrappers::chain_names(&d.words, &mut out);
                }
            }
        }
        for d in &s.cmds {
            if d.parent == Some((cur as u32, Flow::ProcOut)) {
                wrappers::chain_names(&d.words, &mut out);
            }
        }
        match c.parent {
            Some((p, Flow::Subst | Flow::ProcIn)) if (p as usize) < s.cmds.len() => {
                cur = p as usize;
                wrappers::chain_names(&s.cmds[cur].words, &mut out);
            }
            _ => break,
        }
    }
    out
}

impl CommandRules {
    /// Classifies a command line parsed as shell.
    pub fn classify(&self, line: &str) -> Decision {
        self.classify_with_env(line, &[])
    }

    /// Classifies a command line run with these environment variables
    /// added (a batch entry's `env`): each is judged as an assignment made
    /// before the line (`PAGER=…` is `env-hijack`), and a name that is not
    /// a variable name (`BASH_FUNC_ls%%`, an exported function) is
    /// `unresolved`.
    pub fn classify_with_env(&self, line: &str, env: &[(String, String)]) -> Decision {
        let mut run = Run {
            rules: self.get(),
            commands: Vec::new(),
            best: None,
            risk: 0,
            risks: RiskProfile::default(),
            scratch: Vec::new(),
            funcs: Vec::new(),
            evals: Vec::new(),
            runtime: None,
        };
        if line.len() > MAX_LINE {
            run.unresolved("the command line is too long to classify (over 1 MiB)");
        } else {
            let script = shell::parse(line);
            run.script(&script, &[], &[], Cwd::default(), 0);
        }
        // After the line, so that a tie names the line's own rule.
        run.environment(env);
        if let (Some(what), Some(value)) = (run.evals.first(), run.runtime) {
            run.unresolved(&format!(
                "bash evaluates a variable's value as code in {what}, and the line holds {value}: a $(…) in that \
                 value would run (use literal numbers, or no run-time values)"
            ));
        }
        let (effect, rule, reason) = match run.best {
            Some((e, _, rule, reason)) => (e, rule, reason),
            None => (Effect::Allow, "empty".to_string(), "nothing to run".to_string()),
        };
        Decision { effect, rule, reason, risk: run.risk, risks: run.risks, commands: run.commands }
    }
}

impl<'r> Run<'r> {
    fn consider(&mut self, effect: Effect, risk: u8, rule: &str, reason: &str, risks: RiskProfile) {
        self.risk = self.risk.max(risk);
        self.risks = self.risks.max(risks);
        if self.best.as_ref().is_none_or(|b| (effect, risk) > (b.0, b.1)) {
            self.best = Some((effect, risk, rule.to_string(), reason.to_string()));
        }
    }

    /// A finding not tied to one command (a parse error, a depth limit).
    fn unresolved(&mut self, reason: &str) {
        let f = &self.rules.unresolved;
        let (effect, risk, risks) = (f.effect, f.risk, f.risks);
        self.consider(effect, risk, "unresolved", reason, risks);
    }

    fn script(&mut self, s: &Script, via: &[String], outer_down: &[String], cwd: Cwd, depth: u32) {
        for e in &s.errors {
            self.unresolved(&format!("cannot parse: {e}"));
        }
        for e in &s.evals {
            if !self.evals.contains(e) {
                self.evals.push(e);
            }
        }
        if s.runtime_values {
            self.runtime
                .get_or_insert("values only known at run time (a loop over them, command output in arithmetic)");
        }
        for f in &s.funcs {
            let bomb =
                s.cmds.get(f.start..f.end).unwrap_or(&[]).iter().any(|c| {
                    (c.piped || c.background) && c.words.first().is_some_and(|w| w.literal() && w.text == f.name)
                });
            if bomb {
                let risks = RiskProfile { system: Level::High, destruction: Level::Medium, ..RiskProfile::default() };
                let reason = format!("fork bomb: function {} starts copies of itself", f.name);
                self.consider(Effect::Deny, 100, "fork-bomb", &reason, risks);
            }
        }
        let funcs_before = self.funcs.len();
        self.funcs.extend(s.funcs.iter().map(|f| f.name.clone()));
        let mut cwd = cwd;
        for ci in 0..s.cmds.len() {
            let c = &s.cmds[ci];
            let mut down = Down { script: s, ci, outer: outer_down, cache: None };
            let ctx = (via, &cwd, depth);
            let last = self.words(&c.words, [&c.assigns, &[]], &c.redirs, ctx, &mut down);
            if let Some(last) = last {
                if let Some(w0) = last.first().filter(|w| w.literal()) {
                    match wrappers::basename(&w0.text) {
                        "cd" | "pushd" => cwd = cwd.after_cd(code::cd_operand(&last[1..])),
                        "popd" => cwd = Cwd::lost(),
                        _ => {}
                    }
                }
            }
        }
        if !s.set_names.is_empty() {
            // Variables the line sets without spelling out the value.
            let names: Vec<Word> = s.set_names.iter().map(|n| Word::assignment(n, "")).collect();
            self.hidden(&names, via, &cwd);
        }
        self.funcs.truncate(funcs_before);
    }

    /// The environment a batch entry adds.
    fn environment(&mut self, env: &[(String, String)]) {
        if env.is_empty() {
            return;
        }
        for (k, v) in env {
            if !code::is_name(k) {
                self.unresolved(&format!(
                    "the environment variable {k:?} is not a variable name (bash imports BASH_FUNC_… as functions)"
                ));
            }
            if code::holds_code(v) {
                self.runtime.get_or_insert("an environment value holding $(…) or `…`");
            }
        }
        let words: Vec<Word> = env.iter().map(|(k, v)| Word::assignment(k, v)).collect();
        let via = ["environment".to_string()];
        self.entry(Entry { words: &[], assigns: [&words, &[]], redirs: &[], via: &via, cwd: &Cwd::default() }, None);
    }

    /// Assignments the line makes without spelling them out: judged, and
    /// listed only when not allowed.
    fn hidden(&mut self, names: &[Word], via: &[String], cwd: &Cwd) {
        let n = self.commands.len();
        self.entry(Entry { words: &[], assigns: [names, &[]], redirs: &[], via, cwd }, None);
        if self.commands.len() > n && self.commands[n].effect == Effect::Allow {
            self.commands.truncate(n);
        }
    }

    /// Classifies a command given as words, through its wrappers. Returns
    /// the final command's words.
    fn words<'w>(
        &mut self,
        words: &'w [Word],
        assigns: [&'w [Word]; 2],
        redirs: &'w [Redir],
        (via, cwd, depth): (&[String], &Cwd, u32),
        down: &mut Down,
    ) -> Option<&'w [Word]> {
        let mut via = via.to_vec();
        let mut words = words;
        let mut assigns = assigns;
        let mut cwd = cwd.clone();
        for _ in 0..32 {
            let prog = words.first().filter(|w| w.literal()).map(|w| wrappers::basename(&w.text));
            let Some(u) = prog.and_then(|p| wrappers::unwrap(p, words)) else { break };
            let p = prog.unwrap_or_default().to_string();
            let own_redirs = if matches!(u.inner, Inner::Words { .. }) { &[][..] } else { redirs };
            let cwd_ref = &cwd;
            self.entry(
                Entry { words: &words[..u.own], assigns, redirs: own_redirs, via: &via, cwd: cwd_ref },
                Some(down),
            );
            let own = &words[1..u.own.min(words.len())];
            if let Some(w) = own.iter().find(|w| w.dynamic && !w.quoted && !w.procsubst()) {
                self.unresolved(&format!(
                    "{p}'s argument {} is only known at run time and unquoted: it may split into options that change \
                     what {p} runs (quote it)",
                    w.text
                ));
            }
            match u.inner {
                Inner::Words { at, assigns: (a0, a1) } => {
                    if p == "env" {
                        if let Some(dir) = wrappers::env_chdir(&words[..at]) {
                            cwd = cwd.after_cd(Some(&dir));
                        }
                    }
                    assigns = [&[], &words[a0..a1]];
                    via.push(p.clone());
                    if p == "xargs" {
                        // Its input becomes arguments (or replaces `-I` text).
                        let inner = wrappers::xargs_inner(&words[..at], &words[at..]);
                        self.words(&inner, assigns, &[], (&via, &cwd, depth), down);
                        return None;
                    }
                    words = &words[at..];
                }
                Inner::Shell(k) => {
                    let w = &words[k];
                    let text =
                        if w.text.starts_with("--") { w.text.split_once('=').map_or("", |x| x.1) } else { &w.text };
                    let lit = w.literal();
                    self.string(text, lit, &format!("{p} {}", "-c"), &via, down, &cwd, depth);
                    return None;
                }
                Inner::Joined(k) => {
                    let lit = words[k..].iter().all(Word::literal);
                    let text = words[k..].iter().map(|w| w.text.as_str()).collect::<Vec<_>>().join(" ");
                    self.string(&text, lit, &p, &via, down, &cwd, depth);
                    return None;
                }
                Inner::None => return None,
            }
        }
        self.entry(Entry { words, assigns, redirs, via: &via, cwd: &cwd }, Some(down));
        self.follow(words, redirs, &via, &cwd, depth, down);
        Some(words)
    }

    /// Runs what a final command runs in turn: shell strings, eval, alias
    /// values, trap actions, here-documents fed to a shell, find -exec.
    fn follow(&mut self, words: &[Word], redirs: &[Redir], via: &[String], cwd: &Cwd, depth: u32, down: &mut Down) {
        let Some(prog) = words.first().filter(|w| w.literal()).map(|w| wrappers::basename(&w.text)) else { return };
        let lit_args = words[1..].iter().all(Word::literal);
        match prog {
            p if wrappers::SHELLS.contains(&p) => match wrappers::shell_mode(words) {
                ShellMode::Command(k) => {
                    let label = format!("{p} -c");
                    self.string(&words[k].text, words[k].literal(), &label, via, down, cwd, depth);
                }
                ShellMode::Stdin => {
                    if let Some(r) = redirs.iter().rev().find(|r| r.feeds_stdin()) {
                        let text = r.body.as_deref().unwrap_or(&r.target.text);
                        let lit = r.body.is_some() || r.target.literal();
                        self.string(text, lit, &format!("{p} <<"), via, down, cwd, depth);
                    } else if let Some((from, text)) = echoed_into(down.script, down.ci) {
                        self.string(&text, true, &format!("{from} | {p}"), via, down, cwd, depth);
                    }
                }
                _ => {}
            },
            "eval" if lit_args && words.len() > 1 => {
                let text = words[1..].iter().map(|w| w.text.as_str()).collect::<Vec<_>>().join(" ");
                self.string(&text, true, "eval", via, down, cwd, depth);
            }
            "alias" => {
                for w in &words[1..] {
                    if let Some((_, value)) = w.text.split_once('=') {
                        self.string(value, w.literal(), "alias", via, down, cwd, depth);
                    }
                }
            }
            "trap" => {
                if let Some(action) = code::trap_action(&words[1..]) {
                    self.string(&action.text, action.literal(), "trap", via, down, cwd, depth);
                }
            }
            "find" => {
                let mut v = via.to_vec();
                v.push("find -exec".into());
                for (a, b) in wrappers::find_exec(words) {
                    // `{}` is a file name only known at run time.
                    let inner: Vec<Word> = words[a..b].iter().map(|w| w.with_runtime("{}")).collect();
                    self.words(&inner, [&[], &[]], &[], (&v, cwd, depth), down);
                }
            }
            _ => {}
        }
    }

    /// A shell command string run by `label` (`bash -c`, `eval`, …).
    #[allow(clippy::too_many_arguments)]
    fn string(
        &mut self,
        text: &str,
        literal: bool,
        label: &str,
        via: &[String],
        down: &mut Down,
        cwd: &Cwd,
        depth: u32,
    ) {
        if !literal {
            return self.unresolved(&format!("the commands {label} runs are only known at run time"));
        }
        if depth + 1 >= MAX_DEPTH {
            return self.unresolved(&format!("commands nested too deeply (at {label})"));
        }
        let mut v = via.to_vec();
        v.push(label.to_string());
        let outer = down.get().to_vec();
        let script = shell::parse(text);
        self.script(&script, &v, &outer, cwd.clone(), depth + 1);
    }

    fn entry(&mut self, e: Entry, down: Option<&mut Down>) {
        let rules: &'r Compiled = self.rules;
        let w0 = e.words.first();
        let mut structural: Option<String> = None;
        let mut prog = "";
        if let Some(w0) = w0 {
            if !w0.literal() {
                structural = Some(format!("the command name {} is only known at run time", w0.text));
            } else {
                let name = wrappers::basename(&w0.text);
                if wrappers::odd_name(name) {
                    structural = Some(format!("the command name {name:?} has unusual characters (a look-alike?)"));
                } else {
                    prog = name;
                    structural = code::structural_reason(name, e.words, e.redirs);
                }
            }
        }
        if let Some(what) = code::runtime_source(prog, e.words, e.assigns, e.redirs) {
            self.runtime.get_or_insert(what);
        }
        if let Some(what) = code::eval_context(prog, e.words) {
            if !self.evals.contains(&what) {
                self.evals.push(what);
            }
        }
        // Candidate rules: by program name, by program pattern, and rules
        // about any command (aspects).
        let mut cands = std::mem::take(&mut self.scratch);
        cands.clear();
        if !prog.is_empty() {
            if let Some(list) = rules.by_program.get(prog) {
                cands.extend_from_slice(list);
            }
            cands.extend(
                rules.glob_programs.iter().copied().filter(|&i| rules.rules[i as usize].matcher.program_matches(prog)),
            );
        }
        cands.extend_from_slice(&rules.aspects);
        let needs_down = cands.iter().any(|&i| !rules.rules[i as usize].matcher.conds.piped_into.is_empty());
        let downstream: &[String] = match down {
            Some(d) if needs_down => d.get(),
            _ => &[],
        };
        let view = View {
            program: prog,
            args: e.words.get(1..).unwrap_or(&[]),
            assigns: e.assigns,
            redirs: e.redirs,
            cwd: e.cwd,
            downstream,
            cache: Default::default(),
        };
        let (mut risk, mut risks, mut named) = (0u8, RiskProfile::default(), false);
        let mut best: Option<Cand> = None;
        let offer = |c: Cand<'r>, best: &mut Option<Cand<'r>>| {
            let key = |c: &Cand| (c.effect, c.risk, std::cmp::Reverse(c.order));
            if best.as_ref().is_none_or(|b| key(&c) > key(b)) {
                *best = Some(c);
            }
        };
        for &i in &cands {
            let r = &rules.rules[i as usize];
            let mode = match r.effect {
                Effect::Allow => Mode::Sure,
                Effect::Review => Mode::Wide,
                Effect::Deny => Mode::Possible,
            };
            if !r.matcher.matches(&view, mode) {
                continue;
            }
            named |= !r.matcher.programs.is_empty() || !r.matcher.program_globs.is_empty();
            risk = risk.max(r.risk);
            risks = risks.max(r.risks);
            let c = Cand {
                effect: r.effect,
                risk: r.risk,
                order: i as usize,
                rule: &r.name,
                reason: r.reason.as_str().into(),
            };
            offer(c, &mut best);
        }
        self.scratch = cands;
        if let Some(reason) = structural {
            let f = &rules.unresolved;
            risk = risk.max(f.risk);
            risks = risks.max(f.risks);
            offer(
                Cand {
                    effect: f.effect,
                    risk: f.risk,
                    order: usize::MAX - 1,
                    rule: "unresolved",
                    reason: reason.into(),
                },
                &mut best,
            );
        }
        if !named && !prog.is_empty() && self.funcs.iter().any(|f| f == prog) {
            let reason = "calls a function defined on this line (its body is classified where it is defined)";
            offer(
                Cand { effect: Effect::Allow, risk: 0, order: usize::MAX - 3, rule: "function", reason: reason.into() },
                &mut best,
            );
        } else if !named && !prog.is_empty() {
            let f = &rules.unknown;
            risk = risk.max(f.risk);
            risks = risks.max(f.risks);
            offer(
                Cand {
                    effect: f.effect,
                    risk: f.risk,
                    order: usize::MAX - 2,
                    rule: "unknown",
                    reason: f.reason.as_str().into(),
                },
                &mut best,
            );
        }
        let (effect, rule, reason) = match best {
            Some(c) => (c.effect, c.rule.to_string(), c.reason.into_owned()),
            None => (Effect::Allow, "no-command".to_string(), "sets variables or opens files only".to_string()),
        };
        self.consider(effect, risk, &rule, &reason, risks);
        self.commands.push(SimpleCommand {
            argv: e.words.iter().map(|w| w.text.clone()).collect(),
            assigns: e.assigns.iter().flat_map(|a| a.iter().map(|w| w.text.clone())).collect(),
            redirects: e
                .redirs
                .iter()
                .map(|r| Redirect { fd: r.fd, op: r.op.as_str(), target: r.target.text.clone() })
                .collect(),
            via: e.via.to_vec(),
            effect,
            rule,
            reason,
            risk,
        });
    }
}

/// The text an `echo`/`printf` of known words pipes into command `ci`.
fn echoed_into(s: &Script, ci: usize) -> Option<(&'static str, String)> {
    let &(pid, stage) = s.cmds[ci].pipes.last()?;
    let prev = stage.checked_sub(1)?;
    let mut found = s.cmds.iter().filter(|c| c.pipes.last() == Some(&(pid, prev)));
    let c = found.next()?;
    if found.next().is_some() || !c.words.iter().all(Word::literal) {
        return None;
    }
    let name = match wrappers::basename(&c.words.first()?.text) {
        "echo" => "echo",
        "printf" => "printf",
        _ => return None,
    };
    let args = c.words[1..].iter().map(|w| w.text.as_str()).skip_while(|a| name == "echo" && a.starts_with('-'));
    Some((name, args.collect::<Vec<_>>().join(" ")))
}
