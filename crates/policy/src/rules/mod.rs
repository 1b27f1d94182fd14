//! Command rules: the `[commands]` section of a policy file, compiled once
//! at load. The format is described in docs/policy.md.

pub(crate) mod glob;
pub(crate) mod matcher;
pub(crate) mod paths;
mod targets;

use crate::risk::{Effect, RiskProfile};
use glob::{Glob, GlobSet};
use matcher::{Conds, Flag, Matcher};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
use toml::Spanned;

/// Names the classifier itself gives to decisions no rule made.
pub const RESERVED_NAMES: &[&str] = &["unknown", "unresolved", "fork-bomb", "function", "no-command", "empty"];

/// The conditions of a rule as written in the policy file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Conditions {
    /// Command names (basename of the command word); glob patterns allowed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub programs: Vec<String>,
    /// The first argument (after `leading_flags`) is one of these.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub subcommands: Vec<String>,
    /// Flags allowed before the subcommand, e.g. git's `--no-pager`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub leading_flags: Vec<String>,
    /// Every entry present; an entry lists spellings: `"-r|-R|--recursive"`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub flags_all: Vec<String>,
    /// At least one present.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub flags_any: Vec<String>,
    /// An operand (a non-flag argument, or the value of `--name=value`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args_any: Vec<String>,
    /// Any argument, assignment, redirection target or here-document text.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mentions_any: Vec<String>,
    /// A path written: `>`, `>>`, `&>`, `<>` targets, `tee` files, `dd of=`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub writes_any: Vec<String>,
    /// A program reading this command's output (later in the pipeline, or
    /// the command a `$(…)`/`<(…)` feeds).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub piped_into: Vec<String>,
    /// An assigned variable: `NAME=v cmd`, `env NAME=v`, `export NAME=v`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub assigns_any: Vec<String>,
    /// An operand may be a directory holding a matching path (a recursive
    /// read of it reaches that path).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub contains_any: Vec<String>,
    /// A path the command deletes, overwrites, moves or changes matches.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub targets_any: Vec<String>,
    /// An argument or redirection target is only known at run time.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub runtime_args: bool,
    /// A glob argument (before `--`) may expand to a name starting with `-`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub glob_options: bool,
}

/// One compiled command rule.
#[derive(Debug, Clone, Serialize)]
pub struct Rule {
    pub name: String,
    pub effect: Effect,
    pub reason: String,
    pub risk: u8,
    pub risks: RiskProfile,
    #[serde(flatten)]
    pub conditions: Conditions,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub unless: Vec<Conditions>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub ignore_case: bool,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub dynamic_args: bool,
    pub examples: Vec<String>,
    pub counterexamples: Vec<String>,
    #[serde(skip)]
    pub(crate) matcher: Matcher,
}

/// What a command gets when no rule names it (`unknown`) or when cloche
/// cannot tell what it runs (`unresolved`).
#[derive(Debug, Clone, Serialize)]
pub struct Fallback {
    pub effect: Effect,
    pub risk: u8,
    pub reason: String,
    pub risks: RiskProfile,
}

/// The command rules of a policy, ready to classify. Cheap to clone.
#[derive(Debug, Clone)]
pub struct CommandRules {
    compiled: Arc<OnceLock<Compiled>>,
    /// The `[commands]` text, parsed and compiled on first use so that a
    /// world's run (which never classifies) does not pay for it, with the
    /// masks `@secrets` stands for (`secret_locations`, then).
    lazy: Option<(LazyText, Arc<SecretsOf>)>,
}

/// What `@secrets` stands for, worked out when the rules compile.
#[derive(Debug)]
pub(crate) struct SecretsOf {
    pub(crate) mask: Vec<std::path::PathBuf>,
    pub(crate) home_secrets: Vec<std::path::PathBuf>,
}

/// Where the rules of a [`CommandRules`] compiled on first use are.
#[derive(Debug, Clone)]
enum LazyText {
    /// The compiled-in policy's `[commands]` section alone (`Policy::builtin()`).
    Builtin(&'static str),
    /// A whole policy document that was parsed and checked whole before:
    /// a stored version, or a policy file whose head a run read from its
    /// cache (`run_cache.rs`).
    Whole(Arc<str>),
}

#[derive(Debug)]
pub(crate) struct Compiled {
    pub(crate) rules: Vec<Rule>,
    pub(crate) by_program: HashMap<String, Vec<u16>>,
    pub(crate) glob_programs: Vec<u16>,
    pub(crate) aspects: Vec<u16>,
    pub(crate) unknown: Fallback,
    pub(crate) unresolved: Fallback,
}

impl Compiled {
    fn empty() -> Compiled {
        Compiled {
            rules: Vec::new(),
            by_program: HashMap::new(),
            glob_programs: Vec::new(),
            aspects: Vec::new(),
            unknown: default_unknown(),
            unresolved: default_unresolved(),
        }
    }
}

impl CommandRules {
    pub fn rules(&self) -> &[Rule] {
        &self.get().rules
    }

    pub fn unknown(&self) -> &Fallback {
        &self.get().unknown
    }

    pub fn unresolved(&self) -> &Fallback {
        &self.get().unresolved
    }

    /// No rules: every command is `unknown`.
    pub fn empty() -> CommandRules {
        CommandRules::ready(Compiled::empty())
    }

    fn ready(c: Compiled) -> CommandRules {
        CommandRules { compiled: Arc::new(OnceLock::from(c)), lazy: None }
    }

    /// Rules compiled from `text` (a TOML document whose only table is
    /// `[commands]`) when first used. For the compiled-in policy only: its
    /// validity and examples are checked by this crate's tests.
    pub(crate) fn lazy(text: &'static str, secrets: SecretsOf) -> CommandRules {
        CommandRules { compiled: Arc::new(OnceLock::new()), lazy: Some((LazyText::Builtin(text), Arc::new(secrets))) }
    }

    /// Rules compiled from the `[commands]` of `text`, a whole policy
    /// document already parsed and checked, when first used.
    pub(crate) fn lazy_whole(text: Arc<str>, secrets: SecretsOf) -> CommandRules {
        CommandRules { compiled: Arc::new(OnceLock::new()), lazy: Some((LazyText::Whole(text), Arc::new(secrets))) }
    }

    pub(crate) fn get(&self) -> &Compiled {
        self.compiled.get_or_init(|| {
            let Some((text, of)) = &self.lazy else { return Compiled::empty() };
            let secrets = &secret_locations(&of.mask, &of.home_secrets);
            match text {
                LazyText::Builtin(text) => {
                    let doc: CommandsDoc =
                        toml::from_str(text).expect("the compiled-in [commands] section parses (unit tests)");
                    compile_rules(doc.commands, text, secrets)
                        .expect("the compiled-in [commands] section is valid (unit tests)")
                        .0
                }
                LazyText::Whole(text) => {
                    let doc = toml::from_str::<WholeDoc>(text).map_err(|e| e.to_string());
                    match doc.and_then(|d| compile_rules(d.commands, text, secrets)) {
                        Ok((c, _)) => c,
                        // It compiled when it was checked; only a cloche
                        // whose rules changed since could get here. Then no
                        // rule allows anything: every command is reviewed.
                        Err(_) => Compiled::empty(),
                    }
                }
            }
        })
    }
}

fn default_unknown() -> Fallback {
    Fallback {
        effect: Effect::Review,
        risk: 30,
        reason: "no rule covers this command".into(),
        risks: RiskProfile::default(),
    }
}

fn default_unresolved() -> Fallback {
    Fallback {
        effect: Effect::Review,
        risk: 50,
        reason: "cloche cannot tell what this runs".into(),
        risks: RiskProfile::default(),
    }
}

// ---- raw file shape -------------------------------------------------------

/// A whole policy document, read for its `[commands]` only.
#[derive(Deserialize)]
struct WholeDoc {
    #[serde(default)]
    commands: Option<RawCommands>,
}

/// A document holding only `[commands]`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CommandsDoc {
    commands: Option<RawCommands>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawCommands {
    #[serde(default)]
    unknown: Option<RawFallback>,
    #[serde(default)]
    unresolved: Option<RawFallback>,
    #[serde(default)]
    rule: Vec<RawRule>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFallback {
    effect: Spanned<Effect>,
    risk: u32,
    #[serde(default)]
    reason: Option<String>,
    #[serde(default)]
    risks: RiskProfile,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    name: Spanned<String>,
    effect: Effect,
    reason: String,
    risk: u32,
    #[serde(default)]
    risks: RiskProfile,
    #[serde(default)]
    programs: Vec<String>,
    #[serde(default)]
    subcommands: Vec<String>,
    #[serde(default)]
    leading_flags: Vec<String>,
    #[serde(default)]
    flags_all: Vec<String>,
    #[serde(default)]
    flags_any: Vec<String>,
    #[serde(default)]
    args_any: Vec<String>,
    #[serde(default)]
    mentions_any: Vec<String>,
    #[serde(default)]
    writes_any: Vec<String>,
    #[serde(default)]
    piped_into: Vec<String>,
    #[serde(default)]
    assigns_any: Vec<String>,
    #[serde(default)]
    contains_any: Vec<String>,
    #[serde(default)]
    targets_any: Vec<String>,
    #[serde(default)]
    runtime_args: bool,
    #[serde(default)]
    glob_options: bool,
    #[serde(default)]
    unless: Vec<Conditions>,
    #[serde(default)]
    ignore_case: bool,
    #[serde(default)]
    dynamic_args: bool,
    #[serde(default)]
    examples: Vec<Spanned<String>>,
    #[serde(default)]
    counterexamples: Vec<Spanned<String>>,
}

/// Line numbers (1-based) of byte offsets.
struct Lines(Vec<usize>);

impl Lines {
    fn new(text: &str) -> Lines {
        Lines(text.bytes().enumerate().filter(|&(_, b)| b == b'\n').map(|(i, _)| i).collect())
    }

    fn at(&self, offset: usize) -> usize {
        self.0.partition_point(|&nl| nl < offset) + 1
    }
}

/// The patterns of a list, `@secrets` replaced by the policy's secret
/// locations.
fn globs(list: &[String], ic: bool, what: &str, secrets: &[String]) -> Result<GlobSet, String> {
    let mut out = Vec::new();
    for p in list {
        if p == SECRETS {
            for s in secrets {
                out.push(Glob::new(s, ic).map_err(|e| format!("{what}: @secrets: {e}"))?);
            }
        } else if p.starts_with('@') {
            return Err(format!("{what}: unknown name {p:?} (the only one is {SECRETS})"));
        } else {
            out.push(Glob::new(p, ic).map_err(|e| format!("{what}: {e}"))?);
        }
    }
    Ok(GlobSet::new(out))
}

/// In a pattern list: the policy's secret locations (docs/policy.md).
pub const SECRETS: &str = "@secrets";

/// What `@secrets` stands for: every `[fs] mask` path, every home secret
/// below `~`, `/home/*` and `/root`, and cloche's state directory
/// (`/var/lib/cloche` and `$CLOCHE_STATE_DIR`), each with what is below it.
pub fn secret_locations(mask: &[std::path::PathBuf], home_secrets: &[std::path::PathBuf]) -> Vec<String> {
    let lit = |p: &str| {
        let mut s = String::with_capacity(p.len());
        for c in p.chars() {
            if matches!(c, '*' | '?' | '\\') {
                s.push('\\');
            }
            s.push(c);
        }
        s
    };
    let mut roots: Vec<String> = mask.iter().map(|m| lit(&m.to_string_lossy())).collect();
    for h in home_secrets {
        let h = lit(&h.to_string_lossy());
        roots.extend([format!("~/{h}"), format!("/home/*/{h}"), format!("/root/{h}")]);
    }
    roots.push("/var/lib/cloche".into());
    if let Some(d) = std::env::var_os("CLOCHE_STATE_DIR") {
        let d = d.to_string_lossy();
        if d.starts_with('/') && d.len() > 1 {
            roots.push(lit(d.trim_end_matches('/')));
        }
    }
    let mut out = Vec::new();
    for r in roots {
        // A location too long for a pattern is cut to a prefix (which still
        // covers it).
        let r = if r.len() > glob::MAX_TOKENS - 4 {
            let mut cut = glob::MAX_TOKENS - 6;
            while !r.is_char_boundary(cut) || r[..cut].ends_with('\\') {
                cut -= 1;
            }
            format!("{}**", &r[..cut])
        } else {
            r
        };
        out.push(format!("{r}/**"));
        out.push(r);
    }
    out.sort();
    out.dedup();
    out
}

fn conds(c: &Conditions, ic: bool, secrets: &[String]) -> Result<Conds, String> {
    let flag_list = |l: &[String], what: &str| -> Result<Vec<Vec<Flag>>, String> {
        l.iter()
            .map(|e| e.split('|').map(Flag::parse).collect::<Result<Vec<_>, _>>().map_err(|m| format!("{what}: {m}")))
            .collect()
    };
    Ok(Conds {
        subcommands: globs(&c.subcommands, false, "subcommands", secrets)?,
        leading_flags: c.leading_flags.clone(),
        flags_all: flag_list(&c.flags_all, "flags_all")?,
        flags_any: flag_list(&c.flags_any, "flags_any")?.into_iter().flatten().collect(),
        args_any: globs(&c.args_any, ic, "args_any", secrets)?,
        mentions_any: globs(&c.mentions_any, ic, "mentions_any", secrets)?,
        writes_any: globs(&c.writes_any, ic, "writes_any", secrets)?,
        piped_into: globs(&c.piped_into, false, "piped_into", secrets)?,
        assigns_any: globs(&c.assigns_any, false, "assigns_any", secrets)?,
        contains_any: globs(&c.contains_any, ic, "contains_any", secrets)?,
        targets_any: globs(&c.targets_any, ic, "targets_any", secrets)?,
        runtime_args: c.runtime_args,
        glob_options: c.glob_options,
    })
}

fn fallback(raw: Option<RawFallback>, lines: &Lines, what: &str, default: Fallback) -> Result<Fallback, String> {
    let Some(raw) = raw else { return Ok(default) };
    let line = lines.at(raw.effect.span().start);
    if *raw.effect.get_ref() == Effect::Allow {
        return Err(format!("line {line}: commands.{what}.effect: must be review or deny"));
    }
    if raw.risk > 100 {
        return Err(format!("line {line}: commands.{what}.risk: 0 to 100"));
    }
    Ok(Fallback {
        effect: raw.effect.into_inner(),
        risk: raw.risk as u8,
        reason: raw.reason.unwrap_or(default.reason),
        risks: raw.risks,
    })
}

fn valid_name(n: &str) -> bool {
    let b = n.as_bytes();
    !b.is_empty()
        && b.len() <= 64
        && b[0].is_ascii_alphanumeric()
        && b.iter().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-' || *c == b'_')
}

/// Compiles the `[commands]` section. `text` is the whole file (for line
/// numbers). With `check_examples`, every rule's examples are classified and
/// must come out decided by that rule, and its counterexamples must not.
pub(crate) fn compile(
    raw: Option<RawCommands>,
    text: &str,
    check_examples: bool,
    secrets: &[String],
) -> Result<CommandRules, String> {
    let (compiled, spans) = compile_rules(raw, text, secrets)?;
    let out = CommandRules::ready(compiled);
    if check_examples {
        check(&out, &spans)?;
    }
    Ok(out)
}

/// Example and counterexample lines of each rule.
type Spans = Vec<(Vec<usize>, Vec<usize>)>;

fn compile_rules(raw: Option<RawCommands>, text: &str, secrets: &[String]) -> Result<(Compiled, Spans), String> {
    let raw = raw.unwrap_or_default();
    let lines = Lines::new(text);
    let mut out = Compiled::empty();
    out.unknown = fallback(raw.unknown, &lines, "unknown", default_unknown())?;
    out.unresolved = fallback(raw.unresolved, &lines, "unresolved", default_unresolved())?;
    let mut spans = Vec::new();
    for r in raw.rule {
        let line = lines.at(r.name.span().start);
        let name = r.name.into_inner();
        let bad = |m: String| format!("line {line}: rule {name}: {m}");
        if !valid_name(&name) {
            return Err(format!("line {line}: rule name {name:?}: lowercase letters, digits, '-' and '_'"));
        }
        if RESERVED_NAMES.contains(&name.as_str()) {
            return Err(bad("this name is reserved for the classifier's own decisions".into()));
        }
        if out.rules.iter().any(|x| x.name == name) {
            return Err(bad("a rule of this name already exists".into()));
        }
        if r.risk > 100 {
            return Err(bad("risk: 0 to 100".into()));
        }
        if r.reason.trim().is_empty() {
            return Err(bad("reason: must not be empty".into()));
        }
        if r.examples.is_empty() {
            return Err(bad("needs at least one example".into()));
        }
        let conditions = Conditions {
            programs: r.programs,
            subcommands: r.subcommands,
            leading_flags: r.leading_flags,
            flags_all: r.flags_all,
            flags_any: r.flags_any,
            args_any: r.args_any,
            mentions_any: r.mentions_any,
            writes_any: r.writes_any,
            piped_into: r.piped_into,
            assigns_any: r.assigns_any,
            contains_any: r.contains_any,
            targets_any: r.targets_any,
            runtime_args: r.runtime_args,
            glob_options: r.glob_options,
        };
        let ic = r.ignore_case;
        let mut matcher = Matcher {
            conds: conds(&conditions, ic, secrets).map_err(bad)?,
            dynamic_args: r.dynamic_args,
            ..Matcher::default()
        };
        for p in &conditions.programs {
            if p.is_empty() {
                return Err(bad("programs: empty name".into()));
            }
            if p.contains(['*', '?', '\\']) {
                matcher.program_globs.push(Glob::new(p, false).map_err(|e| bad(format!("programs: {e}")))?);
            } else {
                matcher.programs.push(p.clone());
            }
        }
        if !matcher.has_conditions() {
            return Err(bad("needs programs or at least one condition".into()));
        }
        for u in &r.unless {
            if !u.programs.is_empty() {
                return Err(bad("unless: programs belong to the rule, not to an exception".into()));
            }
            let c = conds(u, ic, secrets).map_err(|m| bad(format!("unless: {m}")))?;
            if c.is_empty() {
                return Err(bad("unless: an exception needs at least one condition".into()));
            }
            matcher.unless.push(c);
        }
        let idx = out.rules.len() as u16;
        if matcher.programs.is_empty() && matcher.program_globs.is_empty() {
            out.aspects.push(idx);
        } else {
            for p in &matcher.programs {
                out.by_program.entry(p.clone()).or_default().push(idx);
            }
            if !matcher.program_globs.is_empty() {
                out.glob_programs.push(idx);
            }
        }
        let ex_lines = r.examples.iter().map(|e| lines.at(e.span().start)).collect::<Vec<_>>();
        let cx_lines = r.counterexamples.iter().map(|e| lines.at(e.span().start)).collect::<Vec<_>>();
        spans.push((ex_lines, cx_lines));
        out.rules.push(Rule {
            name,
            effect: r.effect,
            reason: r.reason,
            risk: r.risk as u8,
            risks: r.risks,
            conditions,
            unless: r.unless,
            ignore_case: ic,
            dynamic_args: r.dynamic_args,
            examples: r.examples.into_iter().map(Spanned::into_inner).collect(),
            counterexamples: r.counterexamples.into_iter().map(Spanned::into_inner).collect(),
            matcher,
        });
        if out.rules.len() > u16::MAX as usize {
            return Err("too many rules".into());
        }
    }
    Ok((out, spans))
}

fn check(rules: &CommandRules, spans: &Spans) -> Result<(), String> {
    for (r, (ex_lines, cx_lines)) in rules.rules().iter().zip(spans) {
        for (ex, line) in r.examples.iter().zip(ex_lines) {
            let d = rules.classify(ex);
            if d.rule != r.name {
                return Err(format!(
                    "line {line}: rule {}: example {ex:?} is decided by {} ({}), not by this rule",
                    r.name, d.rule, d.effect
                ));
            }
        }
        for (cx, line) in r.counterexamples.iter().zip(cx_lines) {
            let d = rules.classify(cx);
            if d.rule == r.name {
                return Err(format!("line {line}: rule {}: counterexample {cx:?} is decided by this rule", r.name));
            }
        }
    }
    Ok(())
}
