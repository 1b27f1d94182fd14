//! Commands that run other commands: `sudo CMD`, `env A=1 CMD`,
//! `timeout 5 CMD`, `xargs CMD`, `find -exec CMD ;`, `sh -c STRING`, …

use crate::shell::Word;

/// What a wrapper runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Inner {
    /// Nothing (`env` alone, `sudo -l`, `command -v x`).
    None,
    /// The command starting at this word; `assigns` are `NAME=value` words
    /// it gets (`env A=1 CMD`).
    Words { at: usize, assigns: (usize, usize) },
    /// A shell command string in this word (`su -c STRING`).
    Shell(usize),
    /// A shell command made of the words from here on (`watch CMD ARGS`).
    Joined(usize),
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct Unwrapped {
    /// The wrapper's own words: `words[..own]`.
    pub own: usize,
    pub inner: Inner,
}

struct Spec {
    names: &'static [&'static str],
    /// Options that take a value (the next word, or attached).
    value: &'static [&'static str],
    /// Options whose value is a shell command string.
    shell: &'static [&'static str],
    /// Options after which nothing runs.
    none_if: &'static [&'static str],
    /// Operands before the command (`timeout DURATION`, `chroot DIR`).
    operands: usize,
    /// `NAME=value` words before the command (`env`).
    assigns: bool,
    /// The rest of the words form a shell string (`watch`).
    joined: bool,
    /// Runs no command of its own, only a shell string option (`su`).
    shell_only: bool,
}

const fn spec(names: &'static [&'static str], value: &'static [&'static str]) -> Spec {
    Spec { names, value, shell: &[], none_if: &[], operands: 0, assigns: false, joined: false, shell_only: false }
}

static WRAPPERS: &[Spec] = &[
    Spec {
        none_if: &[
            "-l",
            "--list",
            "-v",
            "--validate",
            "-k",
            "-K",
            "--reset-timestamp",
            "--remove-timestamp",
            "-e",
            "--edit",
            "-V",
            "--version",
        ],
        ..spec(
            &["sudo"],
            &[
                "-u",
                "-g",
                "-C",
                "-D",
                "-p",
                "-r",
                "-t",
                "-U",
                "-T",
                "--user",
                "--group",
                "--close-from",
                "--chdir",
                "--prompt",
                "--role",
                "--type",
                "--other-user",
                "--command-timeout",
                "--host",
            ],
        )
    },
    spec(&["doas"], &["-u", "-C"]),
    spec(&["pkexec"], &["--user"]),
    Spec {
        shell: &["-c", "--command", "--session-command"],
        shell_only: true,
        ..spec(&["su"], &["-s", "--shell", "-g", "--group", "-G", "--supp-group", "-w", "--whitelist-environment"])
    },
    Spec {
        assigns: true,
        shell: &["-S", "--split-string"],
        ..spec(&["env"], &["-u", "--unset", "-C", "--chdir", "-a", "--argv0"])
    },
    spec(&["nice"], &["-n", "--adjustment"]),
    Spec { operands: 1, ..spec(&["timeout"], &["-s", "--signal", "-k", "--kill-after"]) },
    spec(&["nohup", "builtin", "setsid", "unbuffer", "busybox", "toybox"], &[]),
    spec(&["stdbuf"], &["-i", "-o", "-e", "--input", "--output", "--error"]),
    spec(&["time"], &["-f", "--format", "-o", "--output"]),
    Spec { none_if: &["-v", "-V"], ..spec(&["command"], &[]) },
    spec(&["exec"], &["-a"]),
    spec(
        &["xargs"],
        &[
            "-a",
            "-d",
            "-E",
            "-I",
            "-L",
            "-n",
            "-P",
            "-s",
            "--arg-file",
            "--delimiter",
            "--eof",
            "--replace",
            "--max-lines",
            "--max-args",
            "--max-procs",
            "--max-chars",
            "--process-slot-var",
        ],
    ),
    spec(&["ionice"], &["-c", "-n", "-p", "-P", "-u", "--class", "--classdata", "--pid", "--pgid", "--uid"]),
    Spec { operands: 1, none_if: &["-p", "--pid"], ..spec(&["taskset"], &[]) },
    Spec {
        operands: 1,
        shell: &["-c", "--command"],
        ..spec(&["flock"], &["-w", "--timeout", "-E", "--conflict-exit-code"])
    },
    Spec { operands: 1, ..spec(&["chroot"], &["--userspec", "--groups"]) },
    Spec { joined: true, ..spec(&["watch"], &["-n", "--interval", "-q", "--equexit"]) },
    spec(&["strace", "ltrace"], &["-o", "-e", "-p", "-s", "-u", "-E", "-P", "-a", "-b", "-I", "-X", "-S", "-O"]),
];

fn short_in(list: &[&str], c: u8) -> bool {
    list.iter().any(|o| o.len() == 2 && o.as_bytes()[1] == c)
}

fn is_assignment(t: &str) -> bool {
    match t.find('=') {
        Some(eq) if eq > 0 => {
            let name = &t.as_bytes()[..eq];
            !name[0].is_ascii_digit() && name.iter().all(|c| c.is_ascii_alphanumeric() || *c == b'_')
        }
        _ => false,
    }
}

/// If `prog` (the basename of `words[0]`) wraps a command, where that is.
pub(crate) fn unwrap(prog: &str, words: &[Word]) -> Option<Unwrapped> {
    if prog == "jobs" {
        // `jobs -x CMD ARGS` runs CMD.
        if !words.get(1).is_some_and(|w| w.literal() && w.text == "-x") {
            return None;
        }
        let inner = if words.len() > 2 { Inner::Words { at: 2, assigns: (2, 2) } } else { Inner::None };
        return Some(Unwrapped { own: 2, inner });
    }
    let spec = WRAPPERS.iter().find(|s| s.names.contains(&prog))?;
    let len = words.len();
    let all = |inner| Some(Unwrapped { own: len, inner });
    let mut k = 1;
    let mut shell_at = None;
    while k < len {
        let w = &words[k];
        let t = w.text.as_str();
        if !w.literal() {
            break;
        }
        if t == "--" {
            k += 1;
            break;
        }
        if spec.none_if.contains(&t) {
            return all(Inner::None);
        }
        if !t.starts_with('-') || t == "-" {
            break;
        }
        if let Some(long) = t.strip_prefix("--") {
            let name_len = long.find('=').map_or(t.len(), |e| e + 2);
            let name = &t[..name_len];
            let attached = name_len < t.len();
            if spec.shell.contains(&name) {
                if attached {
                    // The string is in this word after '='.
                    return all(Inner::Shell(k));
                }
                shell_at = Some(k + 1);
                k += 2;
                continue;
            }
            k += if spec.value.contains(&name) && !attached { 2 } else { 1 };
            continue;
        }
        let cl = &t.as_bytes()[1..];
        let mut step = 1;
        for (pos, &c) in cl.iter().enumerate() {
            let rest = pos + 1 < cl.len();
            if short_in(spec.shell, c) {
                if rest {
                    return all(Inner::Shell(k));
                }
                shell_at = Some(k + 1);
                step = 2;
                break;
            }
            if short_in(spec.value, c) {
                step = if rest { 1 } else { 2 };
                break;
            }
        }
        k += step;
    }
    if let Some(at) = shell_at {
        return all(if at < len { Inner::Shell(at) } else { Inner::None });
    }
    if spec.shell_only {
        // `su [options] [user] [-c STRING]`: options may follow the user.
        let at = (k..len).find(|&j| {
            let t = words[j].text.as_str();
            words[j].literal() && (spec.shell.contains(&t) || t.starts_with("--command="))
        });
        return all(match at {
            Some(j) if words[j].text.contains('=') => Inner::Shell(j),
            Some(j) if j + 1 < len => Inner::Shell(j + 1),
            _ => Inner::None,
        });
    }
    let a0 = k;
    if spec.assigns {
        while k < len && is_assignment(&words[k].text) {
            k += 1;
        }
    }
    let a1 = k;
    k += spec.operands;
    if k >= len {
        return all(Inner::None);
    }
    if spec.joined {
        return Some(Unwrapped { own: k, inner: Inner::Joined(k) });
    }
    Some(Unwrapped { own: k, inner: Inner::Words { at: k, assigns: (a0, a1) } })
}

pub(crate) const SHELLS: &[&str] =
    &["sh", "bash", "dash", "zsh", "ksh", "mksh", "ash", "yash", "posh", "lksh", "rbash", "fish", "ksh93", "pdksh"];

/// How a shell is told what to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ShellMode {
    /// `-c STRING`: the string is this word.
    Command(usize),
    /// `-c` without a string.
    MissingCommand,
    /// A script file operand.
    Script,
    /// Commands from stdin.
    Stdin,
}

pub(crate) fn shell_mode(words: &[Word]) -> ShellMode {
    let mut cmode = false;
    let mut k = 1;
    while k < words.len() {
        let t = words[k].text.as_str();
        if t == "--" {
            k += 1;
            break;
        }
        if t.len() < 2 || !(t.starts_with('-') || t.starts_with('+')) || !words[k].literal() {
            break;
        }
        if t.starts_with("--") {
            k += if matches!(t, "--rcfile" | "--init-file") { 2 } else { 1 };
            continue;
        }
        let cl = &t.as_bytes()[1..];
        let mut step = 1;
        for &c in cl {
            match c {
                b'c' => cmode = true,
                b'o' | b'O' => step = 2,
                _ => {}
            }
        }
        k += step;
    }
    match (cmode, k < words.len()) {
        (true, true) => ShellMode::Command(k),
        (true, false) => ShellMode::MissingCommand,
        (false, true) => ShellMode::Script,
        (false, false) => ShellMode::Stdin,
    }
}

/// The commands `find` runs: `-exec CMD … ;` (or `{} +`), `-execdir`, `-ok`.
pub(crate) fn find_exec(words: &[Word]) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut k = 1;
    while k < words.len() {
        if matches!(words[k].text.as_str(), "-exec" | "-execdir" | "-ok" | "-okdir") {
            let start = k + 1;
            let mut end = start;
            while end < words.len() {
                let t = words[end].text.as_str();
                if t == ";" || (t == "+" && end > start && words[end - 1].text == "{}") {
                    break;
                }
                end += 1;
            }
            if end > start {
                out.push((start, end));
            }
            k = end;
        }
        k += 1;
    }
    out
}

/// The directory `env -C DIR`/`--chdir=DIR` runs its command in.
pub(crate) fn env_chdir(own: &[Word]) -> Option<Word> {
    for (k, w) in own.iter().enumerate().skip(1) {
        let t = w.text.as_str();
        if t == "-C" || t == "--chdir" {
            return own.get(k + 1).cloned();
        }
        if t.starts_with("--chdir=") {
            return w.value_after_eq();
        }
        if t.len() > 2 && t.starts_with("-C") {
            return Some(w.with_subject(&w.subject()[2..]));
        }
    }
    None
}

/// The command xargs runs: its words, with the input appended (a word
/// only known at run time) or, with `-I R`/`-i`/`--replace`, put where `R`
/// is.
pub(crate) fn xargs_inner(own: &[Word], cmd: &[Word]) -> Vec<Word> {
    let mut replace = None;
    for (i, w) in own.iter().enumerate().skip(1) {
        let t = w.text.as_str();
        replace = match t {
            "-I" => own.get(i + 1).map(|r| r.text.clone()),
            "-i" | "--replace" => Some("{}".into()),
            _ if t.starts_with("-I") => Some(t[2..].to_string()),
            _ if t.starts_with("--replace=") => Some(t["--replace=".len()..].to_string()),
            _ if t.starts_with("-i") && !t.starts_with("--") => Some(t[2..].to_string()),
            _ => replace,
        };
    }
    match replace.filter(|r| !r.is_empty()) {
        Some(r) => cmd.iter().map(|w| w.with_runtime(&r)).collect(),
        None => {
            let mut v = cmd.to_vec();
            v.push(Word::runtime("(input)"));
            v
        }
    }
}

/// The command name: basename of a fully known first word.
pub(crate) fn basename(t: &str) -> &str {
    t.rsplit('/').next().unwrap_or(t)
}

/// A name with characters no real command has (look-alikes, control
/// characters, an empty basename).
pub(crate) fn odd_name(n: &str) -> bool {
    if matches!(n, "[" | "[[" | ":" | ".") {
        return false;
    }
    n.is_empty() || !n.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'+' | b'-'))
}

/// Every program a command runs through its wrappers: `sudo -E bash` →
/// sudo, bash.
pub(crate) fn chain_names(words: &[Word], out: &mut Vec<String>) {
    let mut start = 0;
    for _ in 0..16 {
        let Some(w) = words.get(start) else { return };
        if !w.literal() {
            return;
        }
        let p = basename(&w.text);
        out.push(p.to_string());
        match unwrap(p, &words[start..]) {
            Some(Unwrapped { inner: Inner::Words { at, .. }, .. }) => start += at,
            _ => return,
        }
    }
}
