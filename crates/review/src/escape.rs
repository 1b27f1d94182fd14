//! Text from a world made safe to print on a reviewer's terminal.

use std::fmt::Write as _;

/// A path (or symlink target, or any other name from a world) safe to print
/// on a terminal: control characters, bidi controls and bytes that are not
/// UTF-8 are escaped (see [`escape_into`]), `\` itself is doubled and tabs
/// escaped, so that the form is unambiguous and fits tab-separated output.
pub fn escape_path(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len());
    escape_into(&mut s, bytes, true);
    s
}

/// Appends `bytes` to `out` as text a terminal shows literally: UTF-8 is
/// kept, bytes that are not UTF-8 become `\xff`; control characters (C0,
/// DEL, C1: ESC, CSI, newline, carriage return, ...) become `\n`, `\r`,
/// `\t`, `\x1b`, `\u{9b}`; so do the invisible bidi controls that can make
/// text read differently from what it is. `path`: also escape `\` and tab
/// (file content keeps its tabs and backslashes).
pub fn escape_into(out: &mut String, bytes: &[u8], path: bool) {
    let mut rest = bytes;
    while !rest.is_empty() {
        let (good, bad) = match std::str::from_utf8(rest) {
            Ok(s) => (s, &[][..]),
            Err(e) => {
                // `good` is valid UTF-8 by construction; then come one or
                // more bad bytes (all the rest when the input ends early).
                let (good, bad) = rest.split_at(e.valid_up_to());
                let n = e.error_len().unwrap_or(bad.len());
                (std::str::from_utf8(good).unwrap_or_default(), bad.get(..n).unwrap_or(bad))
            }
        };
        for c in good.chars() {
            match c {
                '\t' if !path => out.push('\t'),
                '\\' if path => out.push_str("\\\\"),
                '\t' => out.push_str("\\t"),
                '\n' => out.push_str("\\n"),
                '\r' => out.push_str("\\r"),
                c if c.is_ascii_control() => {
                    let _ = write!(out, "\\x{:02x}", c as u32);
                }
                c if c.is_control() || is_bidi_or_separator(c) => {
                    let _ = write!(out, "\\u{{{:x}}}", c as u32);
                }
                c => out.push(c),
            }
        }
        for b in bad {
            let _ = write!(out, "\\x{b:02x}");
        }
        rest = rest.get(good.len() + bad.len()..).unwrap_or_default();
    }
}

/// Invisible characters that reorder or break displayed text.
fn is_bidi_or_separator(c: char) -> bool {
    matches!(c, '\u{061c}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' | '\u{2028}' | '\u{2029}')
}
