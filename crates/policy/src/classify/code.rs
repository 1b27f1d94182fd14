//! Shell features that turn data into code: bash evaluates array
//! subscripts, arithmetic, `${!x}` and `${x@P}` in a variable's value, so a
//! `$(…)` hidden in a string runs there; builtins that take variable names
//! evaluate subscripts in them; `hash -p` renames programs; `trap` runs its
//! action later.

use super::wrappers::{self, ShellMode};
use crate::shell::{Redir, Word};

/// Builtins that evaluate subscripts or arithmetic in their arguments.
pub(super) const EVALUATING_BUILTINS: &[&str] = &[
    "declare",
    "typeset",
    "local",
    "export",
    "readonly",
    "read",
    "printf",
    "unset",
    "test",
    "[",
    "[[",
    "let",
    "getopts",
    "wait",
    "shift",
    "return",
    "exit",
    "break",
    "continue",
    "mapfile",
    "readarray",
];

/// A value holding a command substitution as text (quoted, so the parser
/// did not run it: `'a[$(id)]'`).
pub(super) fn holds_code(s: &str) -> bool {
    s.contains("$(") || s.contains('`')
}

/// `$(…)` (not `$((…))`), `` `…` `` or `<(…)` in a word's source text.
fn command_substitution(t: &str) -> bool {
    let b = t.as_bytes();
    t.contains('`')
        || t.contains("<(")
        || b.windows(3).any(|w| w[0] == b'$' && w[1] == b'(' && w[2] != b'(')
        || t.ends_with("$(")
}

/// The `$(…)`-holding argument of an evaluating builtin, as a reason.
pub(super) fn quoted_code(prog: &str, words: &[Word]) -> Option<String> {
    let w = words[1..].iter().find(|w| holds_code(w.subject()))?;
    Some(format!(
        "{prog} evaluates array subscripts and arithmetic in its arguments, which runs the command in {:?}",
        w.text
    ))
}

/// Builtins whose arguments name variables or options: one only known at
/// run time may be `PATH=…`, `-v PATH`, `-p` or `-k`.
pub(super) const NAME_TAKING: &[&str] = &[
    "export",
    "declare",
    "typeset",
    "local",
    "readonly",
    "read",
    "unset",
    "getopts",
    "mapfile",
    "readarray",
    "set",
    "shopt",
    "hash",
    "history",
    "let",
    "printf",
];

/// Why a name-taking builtin's run-time argument is unresolved.
pub(super) fn runtime_name(prog: &str, words: &[Word]) -> Option<String> {
    let args = &words[1..];
    if prog == "printf" {
        let first = args.iter().find(|a| !(a.literal() && a.text == "--")).is_some_and(|a| a.dynamic);
        let v_value = args.windows(2).any(|p| p[0].literal() && p[0].text == "-v" && p[1].dynamic);
        return (first || v_value).then(|| {
            "printf's first argument or -v name is only known at run time: it may be -v NAME, which sets a variable \
             such as PATH"
                .to_string()
        });
    }
    let until = if prog == "set" { args.iter().position(|a| a.literal() && a.text == "--") } else { None };
    let bad = args[..until.unwrap_or(args.len())].iter().find(|a| a.dynamic && !known_name(a))?;
    Some(format!(
        "{prog} {} : an argument only known at run time may be an option or a variable name (PATH=…, -p, -k)",
        bad.text
    ))
}

/// `NAME=…` (or `NAME+=…`) whose name is known.
fn known_name(w: &Word) -> bool {
    let s = w.subject();
    match s.find('=') {
        Some(eq) => {
            let name = s[..eq].trim_end_matches('+');
            is_name(name)
        }
        None => false,
    }
}

/// A variable name (what bash accepts from the environment as one).
pub(super) fn is_name(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty() && !b[0].is_ascii_digit() && b.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'_')
}

/// `hash -p PATH NAME`.
pub(super) fn hash_p(words: &[Word]) -> bool {
    words[1..]
        .iter()
        .any(|w| !w.literal() || (w.text.starts_with('-') && !w.text.starts_with("--") && w.text.contains('p')))
}

/// The directory operand of `cd`/`pushd` (`None`: none, the home).
pub(super) fn cd_operand(args: &[Word]) -> Option<&Word> {
    args.iter().find(|a| !a.text.starts_with('-') || a.text == "-" || !a.literal())
}

/// The action of `trap [--] ACTION SIGNAL…` (none for `trap -p`, `trap -l`,
/// `trap - SIG`, `trap '' SIG`).
pub(super) fn trap_action(args: &[Word]) -> Option<&Word> {
    let action = match args.first()? {
        w if w.literal() && w.text == "--" => args.get(1)?,
        w if w.literal() && w.text.len() > 1 && w.text.starts_with('-') => return None,
        w => w,
    };
    (!(action.literal() && (action.text == "-" || action.text.is_empty()))).then_some(action)
}

/// Where a simple command makes bash evaluate a value as code.
pub(super) fn eval_context(prog: &str, words: &[Word]) -> Option<&'static str> {
    let args = words.get(1..).unwrap_or(&[]);
    let has = |names: &[&str]| args.iter().any(|a| a.literal() && names.contains(&a.text.as_str()));
    let flag = |c: char| {
        args.iter().any(|a| a.literal() && a.text.starts_with('-') && !a.text.starts_with("--") && a.text.contains(c))
    };
    match prog {
        "let" => Some("let"),
        "[[" if has(&["-eq", "-ne", "-lt", "-le", "-gt", "-ge", "-v"]) => Some("[[ … -eq … ]]"),
        "test" | "[" if has(&["-v"]) => Some("test -v"),
        "declare" | "typeset" | "local" | "export" | "readonly" if flag('i') || flag('n') => Some("declare -i/-n"),
        _ => None,
    }
}

/// A value only known at run time that a simple command brings in: read
/// from input, command output, the positional parameters, or a string
/// holding `$(…)`.
pub(super) fn runtime_source(
    prog: &str,
    words: &[Word],
    assigns: [&[Word]; 2],
    redirs: &[Redir],
) -> Option<&'static str> {
    if matches!(prog, "read" | "mapfile" | "readarray" | "getopts") {
        return Some("values read at run time");
    }
    let all = || words.iter().chain(assigns[0]).chain(assigns[1]);
    if all().any(|w| holds_code(w.subject())) || redirs.iter().any(|r| holds_code(r.target.subject())) {
        return Some("a string holding $(…) or `…`");
    }
    if redirs.iter().any(|r| r.target.quoted && r.body.as_deref().is_some_and(holds_code)) {
        return Some("a here-document holding $(…) or `…`");
    }
    let output = |w: &Word| w.dynamic && command_substitution(&w.text);
    if all().any(output) {
        return Some("command output");
    }
    let positional = |w: &Word| {
        w.dynamic && {
            let b = w.text.as_bytes();
            b.windows(2).any(|p| p[0] == b'$' && (p[1].is_ascii_digit() || matches!(p[1], b'@' | b'*')))
                || b.windows(3)
                    .any(|p| p[0] == b'$' && p[1] == b'{' && (p[2].is_ascii_digit() || matches!(p[2], b'@' | b'*')))
        }
    };
    if all().any(positional) {
        return Some("the positional parameters");
    }
    None
}

/// Commands cloche cannot see through, whatever the rules say.
pub(super) fn structural_reason(prog: &str, words: &[Word], redirs: &[Redir]) -> Option<String> {
    match prog {
        "eval" => Some("eval runs its arguments as a command".into()),
        "source" | "." => Some(format!("{prog} runs a script file cloche cannot read")),
        "alias" if words.len() > 1 => Some("an alias changes what later command names mean".into()),
        "hash" if hash_p(words) => Some("hash -p makes a command name run another program".into()),
        p if EVALUATING_BUILTINS.contains(&p) || NAME_TAKING.contains(&p) => {
            quoted_code(p, words).or_else(|| NAME_TAKING.contains(&p).then(|| runtime_name(p, words)).flatten())
        }
        p if wrappers::SHELLS.contains(&p) => match wrappers::shell_mode(words) {
            ShellMode::Stdin if redirs.iter().any(Redir::feeds_stdin) => {
                Some(format!("a here-document or here-string feeds commands to {p}"))
            }
            ShellMode::MissingCommand => Some(format!("{p} -c without a command string")),
            // Options end at the first operand: `sh -e ./x.sh -c ls` runs
            // ./x.sh with the arguments "-c ls".
            ShellMode::Script if words.iter().skip(1).any(|w| !w.literal() || w.text == "-c") => {
                Some(format!("{p} runs a script file: options after its name, -c included, are the script's arguments"))
            }
            _ => None,
        },
        _ => None,
    }
}
