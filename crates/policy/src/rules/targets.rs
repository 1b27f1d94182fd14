//! What a command deletes, overwrites, moves or changes the mode of
//! (`targets_any`): program knowledge, over-approximated where an option's
//! value cannot be told from an operand.

use super::matcher::{any_operand, is_sink, View};
use crate::shell::{RedirOp, Word};

/// Every operand is a target.
const ALL_OPERANDS: &[&str] = &[
    "rm",
    "rmdir",
    "unlink",
    "shred",
    "truncate",
    "mv",
    "chmod",
    "chown",
    "chgrp",
    "chattr",
    "setfacl",
    "chcon",
    "patch",
    "rename",
    "prename",
    "file-rename",
];
/// The last operand (or the `-t` directory) is written.
const LAST_OPERAND: &[&str] = &["cp", "install", "ln", "rsync"];
/// Compressors replace each file they are given, unless told to keep it.
const COMPRESSORS: &[&str] =
    &["gzip", "gunzip", "bzip2", "bunzip2", "xz", "unxz", "lzma", "unlzma", "lzip", "compress"];

/// The paths the command would delete, overwrite, move or change.
pub(super) fn targets(v: &View) -> Vec<Word> {
    let mut out: Vec<Word> = v
        .redirs
        .iter()
        .filter(|r| {
            matches!(r.op, RedirOp::Out | RedirOp::Clobber | RedirOp::OutErr)
                || (r.op == RedirOp::DupOut && r.writes_file())
        })
        // Writing /dev/null writes nothing (deleting it is another matter).
        .filter(|r| !is_sink(&r.target))
        .map(|r| r.target.clone())
        .collect();
    let operands = || {
        let mut ops = Vec::new();
        any_operand(v, 0, |w| {
            ops.push(w.clone());
            false
        });
        ops
    };
    let has = |names: &[&str]| v.args.iter().any(|a| a.literal() && names.contains(&a.text.as_str()));
    let short = |c: char| {
        v.args
            .iter()
            .any(|a| a.literal() && a.text.starts_with('-') && !a.text.starts_with("--") && a.text[1..].contains(c))
    };
    match v.program {
        p if ALL_OPERANDS.contains(&p) => out.extend(operands()),
        p if LAST_OPERAND.contains(&p) => {
            out.extend(option_values(v.args, "-t", "--target-directory"));
            if p == "install" && short('d') {
                out.extend(operands());
            } else if let Some(last) = operands().pop() {
                out.push(last);
            }
        }
        p if COMPRESSORS.contains(&p) && !(short('c') || short('k') || has(&["--stdout", "--to-stdout", "--keep"])) => {
            out.extend(operands())
        }
        "tee" if !(short('a') || has(&["--append"])) => out.extend(operands().into_iter().filter(|w| !is_sink(w))),
        "zstd" | "unzstd" if has(&["--rm"]) => out.extend(operands()),
        "sed" | "perl" if short('i') || v.args.iter().any(|a| a.text.starts_with("--in-place")) => {
            out.extend(operands())
        }
        "find" if has(&["-delete"]) => out.extend(operands()),
        "dd" => out.extend(
            v.args
                .iter()
                .filter(|a| a.text.starts_with("of="))
                .filter_map(Word::value_after_eq)
                .filter(|w| !is_sink(w)),
        ),
        "sort" => out.extend(option_values(v.args, "-o", "--output")),
        "uniq" => out.extend(operands().into_iter().nth(1)),
        "curl" => out.extend(option_values(v.args, "-o", "--output")),
        "wget" => out.extend(option_values(v.args, "-O", "--output-document")),
        "tar"
            if short('x')
                || has(&["--extract", "--get"])
                || v.args.first().is_some_and(|a| a.text.contains('x') && !a.text.starts_with('-')) =>
        {
            out.extend(option_values(v.args, "-C", "--directory"))
        }
        "unzip" => out.extend(option_values(v.args, "-d", "")),
        _ => {}
    }
    out
}

/// Values of `-x VALUE`, `-xVALUE`, `--long=VALUE`, `--long VALUE`.
fn option_values(args: &[Word], short: &str, long: &str) -> Vec<Word> {
    let mut out = Vec::new();
    for (i, a) in args.iter().enumerate() {
        let t = a.text.as_str();
        if t == "--" {
            break;
        }
        let cluster_end = t.starts_with('-') && !t.starts_with("--") && t.len() > 2 && t.ends_with(&short[1..]);
        if t == short || (!long.is_empty() && t == long) || cluster_end {
            out.extend(args.get(i + 1).cloned());
        } else if !long.is_empty() && t.starts_with(long) && t.as_bytes().get(long.len()) == Some(&b'=') {
            out.extend(a.value_after_eq());
        } else if t.len() > short.len() && t.starts_with(short) && !t.starts_with("--") {
            out.push(a.with_subject(&a.subject()[short.len()..]));
        }
    }
    out
}
