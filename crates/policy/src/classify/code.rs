//! Shell features that turn data into code: bash evaluates array
//! subscripts, arithmetic, `${!x}` and `${x@P}` in a variable's value, so a
//! `$(…)` hidden in a string runs there; builtins that take variable names
//! evaluate subscripts in them; `hash -p` renames programs; `trap` runs its
//! action later.

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

/// The `$(…)`-holding argument of an evaluating builtin, as a reason.
pub(super) fn quoted_code(prog: &str, words: &[Word]) -> Option<String> {
    let w = words[1..].iter().find(|w| holds_code(w.subject()))?;
    Some(format!(
        "{prog} evaluates array subscripts and arithmetic in its arguments, which runs the command in {:?}",
        w.text
    ))
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
    let mut it = args.iter();
    let action = loop {
        match it.next() {
            Some(w) if w.literal() && w.text == "--" => break it.next(),
            Some(w) if w.literal() && w.text.len() > 1 && w.text.starts_with('-') => return None,
            other => break other,
        }
    }?;
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
    let output = |w: &Word| w.dynamic && (w.text.contains("$(") || w.text.contains('`') || w.text.contains("<("));
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
