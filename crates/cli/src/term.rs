//! Colour and paging, decided once per invocation.
//!
//! Colour goes through anstream (the terminal crate clap already uses): the
//! choice is `--color=auto|always|never`; `auto` honours `NO_COLOR`,
//! `CLICOLOR=0`, `CLICOLOR_FORCE` and `TERM=dumb`, and colours only a
//! terminal. The pager is `$PAGER` run by `sh -c` (so `less -R` and other
//! arguments work; git does the same), `less` when it is unset, with
//! `LESS=FRX` when that is unset; it starts only when stdout is a terminal,
//! `--no-pager` was not given, and the text is taller than the terminal.

use anstream::ColorChoice;
use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, Ordering};

/// `--color`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum ColorWhen {
    /// Colour when the output is a terminal and NO_COLOR is not set.
    #[default]
    Auto,
    /// Colour, even into a pipe or a file.
    Always,
    /// No colour.
    Never,
}

static NO_PAGER: AtomicBool = AtomicBool::new(false);

/// Records the global options (`--color`, `--no-pager`).
pub fn init(color: ColorWhen, no_pager: bool) {
    let choice = match color {
        ColorWhen::Auto => ColorChoice::Auto,
        ColorWhen::Always => ColorChoice::Always,
        ColorWhen::Never => ColorChoice::Never,
    };
    choice.write_global();
    NO_PAGER.store(no_pager, Ordering::Relaxed);
}

/// `--color` as given before clap parses (clap's own help and errors use it
/// too); `None` when absent. Only words before a `--` count.
pub fn color_from_args(args: &[std::ffi::OsString]) -> Option<ColorWhen> {
    let words: Vec<&str> = args.iter().skip(1).map_while(|a| a.to_str()).take_while(|a| *a != "--").collect();
    let mut found = None;
    for (i, w) in words.iter().enumerate() {
        let value = match w.strip_prefix("--color") {
            Some(v) if v.starts_with('=') => Some(&v[1..]),
            Some("") => words.get(i + 1).copied(),
            _ => None,
        };
        if let Some(v) = value {
            found = <ColorWhen as clap::ValueEnum>::from_str(v, false).ok().or(found);
        }
    }
    found
}

/// Whether what is written to stdout should carry colour.
pub fn color_stdout() -> bool {
    anstream::AutoStream::choice(&std::io::stdout()) != ColorChoice::Never
}

/// The height and width of the terminal on stdout, if it is one.
fn terminal_size() -> Option<(usize, usize)> {
    let (terminal_size::Width(w), terminal_size::Height(h)) = terminal_size::terminal_size_of(std::io::stdout())?;
    Some((usize::from(h), usize::from(w))).filter(|(h, w)| *h > 0 && *w > 0)
}

/// How many terminal rows `text` takes at `width` columns (escape sequences
/// take none; a long line wraps).
fn rows_of(text: &str, width: usize) -> usize {
    let plain = anstream::adapter::strip_str(text).to_string();
    plain.lines().map(|l| l.chars().count().max(1).div_ceil(width.max(1))).sum()
}

/// Writes `text` to stdout, through the pager when stdout is a terminal
/// with fewer rows than the text takes. A reader that goes away is not an
/// error.
pub fn page(text: &[u8]) -> std::io::Result<()> {
    let stdout = std::io::stdout();
    if stdout.is_terminal() && !NO_PAGER.load(Ordering::Relaxed) {
        if let Some((height, width)) = terminal_size() {
            if rows_of(&String::from_utf8_lossy(text), width) >= height {
                if let Some(r) = through_pager(text) {
                    return r;
                }
            }
        }
    }
    let mut out = stdout.lock();
    match out.write_all(text).and_then(|()| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        r => r,
    }
}

/// Runs the pager on `text`; `None` when there is none (empty `$PAGER`,
/// `cat`) or it cannot start, to write directly instead.
fn through_pager(text: &[u8]) -> Option<std::io::Result<()>> {
    let pager = std::env::var("PAGER").unwrap_or_else(|_| "less".into());
    let pager = pager.trim();
    if pager.is_empty() || pager == "cat" {
        return None;
    }
    let mut cmd = std::process::Command::new("/bin/sh");
    cmd.arg("-c").arg(pager).stdin(std::process::Stdio::piped());
    if std::env::var_os("LESS").is_none() {
        cmd.env("LESS", "FRX");
    }
    let mut child = cmd.spawn().ok()?;
    if let Some(mut stdin) = child.stdin.take() {
        // The reader may quit early (q in less): a closed pipe is fine.
        let _ = stdin.write_all(text);
    }
    Some(child.wait().map(drop))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_count_wrapped_lines_and_skip_escapes() {
        assert_eq!(rows_of("a\nb\n", 80), 2);
        assert_eq!(rows_of(&"x".repeat(81), 80), 2);
        assert_eq!(rows_of("\x1b[31mred\x1b[0m\n\n", 3), 2);
    }

    #[test]
    fn color_is_found_before_the_command() {
        let args = |v: &[&str]| v.iter().map(std::ffi::OsString::from).collect::<Vec<_>>();
        assert_eq!(color_from_args(&args(&["cloche", "--color=never", "doctor"])), Some(ColorWhen::Never));
        assert_eq!(color_from_args(&args(&["cloche", "diff", "--color", "always", "x"])), Some(ColorWhen::Always));
        assert_eq!(color_from_args(&args(&["cloche", "run", "--", "ls", "--color=always"])), None);
        assert_eq!(color_from_args(&args(&["cloche", "doctor"])), None);
    }
}
