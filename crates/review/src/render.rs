//! Git-like text of a review: the summary, `--name-status`, `--stat`, and
//! unified diffs of text files.
//!
//! Everything shown comes from an untrusted world: paths, symlink targets and
//! file contents are escaped (control characters, bidi overrides, bytes that
//! are not UTF-8) so that they cannot repaint the reviewer's terminal or fake
//! lines of the output. The fs_diff records only the new state of a modified
//! entry, so mode, owner and symlink target lines show the new value.

use crate::escape::escape_into;
pub use crate::escape::escape_path;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{self, Write};
use std::time::Duration;

use cloche_world::diff::{format_mode, Change, Entry, Kind};
use similar::{ChangeTag, TextDiff};

use crate::flags::serde_name;

/// Where file contents come from: the world's version and the base (host) version of a path.
pub trait Contents: Sync {
    /// Bytes of regular file `path` in the world, if it is a regular file of at most `limit` bytes (None otherwise).
    fn world(&self, path: &[u8], limit: u64) -> std::io::Result<Option<Vec<u8>>>;
    /// Bytes of regular file `path` on the host (the base), same rules.
    fn base(&self, path: &[u8], limit: u64) -> std::io::Result<Option<Vec<u8>>>;
    /// True when the base of `path` is a secret of the host (a home's
    /// `.npmrc` the world wrote its own of): its content is never read nor
    /// shown, the world's side is shown as if the host had none.
    fn withheld(&self, _path: &[u8]) -> bool {
        false
    }
}

/// The line a withheld base gets in the full listing.
pub const WITHHELD: &str = "the host's version is a secret: not shown";

/// What [`render`] prints after the summary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Headers and unified diffs.
    Full,
    /// `git diff --stat`-like.
    Stat,
    /// `git diff --name-status`-like.
    NameStatus,
}

/// How to render a review.
#[derive(Debug, Clone)]
pub struct RenderOptions {
    pub format: Format,
    pub color: bool,
    /// Only paths equal to or below one of these (raw bytes, absolute); empty = all.
    pub paths: Vec<Vec<u8>>,
    /// Largest file shown as a text diff (default 1 MiB); bigger ones are summarized like binary files.
    pub max_text: u64,
    /// List the touched paths too (written, but as the base has them).
    pub touched: bool,
}

impl Default for RenderOptions {
    fn default() -> Self {
        RenderOptions { format: Format::Full, color: false, paths: Vec::new(), max_text: 1 << 20, touched: false }
    }
}

const BOLD: &str = "\x1b[1m";
const RED: &str = "\x1b[31m";
const GREEN: &str = "\x1b[32m";
const CYAN: &str = "\x1b[36m";
const YELLOW: &str = "\x1b[33m";
const RESET: &str = "\x1b[0m";
const PLAIN: &str = "";

/// How many leading bytes may not contain a NUL for a file to be text (as git).
const TEXT_PROBE: usize = 8000;
/// Context lines around a hunk.
const CONTEXT: usize = 3;
/// After this long the line diff of one file gives up on a minimal diff.
const DIFF_TIMEOUT: Duration = Duration::from_secs(2);
/// Widest `+++--` bar of the stat output.
const BAR_WIDTH: u64 = 50;

/// The one-letter status of an entry: 'A' added, 'D' deleted, 'T' modified with Change::Type, 'M' other modified,
/// '=' touched (as the base has it).
pub fn status_letter(list: &str, entry: &Entry) -> char {
    match list {
        "added" => 'A',
        "deleted" => 'D',
        "touched" => '=',
        "modified" if entry.changes.contains(&Change::Type) => 'T',
        "modified" => 'M',
        _ => '?',
    }
}

/// The review summary: counts (added, modified, deleted), total bytes (diff.totals.bytes, human readable too), whether the diff was truncated, then every flag `  ! <path>  <why>` grouped per path, and how many paths are outside the commit roots (not committable).
pub fn summary(out: &mut dyn Write, review: &crate::Review, opts: &RenderOptions) -> io::Result<()> {
    let p = Painter(opts.color);
    let t = &review.diff.totals;
    let bytes = format!("{} bytes ({})", t.bytes, human(t.bytes));
    p.line(out, BOLD, &format!("changes: {} added, {} modified, {} deleted, {bytes}", t.added, t.modified, t.deleted))?;
    if review.diff.truncated {
        p.line(out, YELLOW, "truncated: the lists do not show every change (totals count everything)")?;
    }
    if t.touched > 0 {
        let how = if opts.touched { "listed below as '='" } else { "--touched lists them" };
        let n = t.touched;
        let paths = plural(n, "path", "paths");
        p.line(out, PLAIN, &format!("touched: {n} {paths} written as the base has them, not changes ({how})"))?;
    }
    let by_path = flags_by_path(review);
    if !by_path.is_empty() {
        p.line(out, PLAIN, "flags:")?;
    }
    // One line per path, its reasons in order.
    for (path, whys) in by_path {
        p.line(out, YELLOW, &format!("  ! {}  {}", escape_path(path), escape_path(whys.join(", ").as_bytes())))?;
    }
    let d = &review.diff;
    let mut outside: Vec<&[u8]> =
        d.added.iter().chain(&d.modified).chain(&d.deleted).map(|e| e.path.as_bytes()).collect();
    outside.retain(|path| !crate::under_roots(path, &review.roots));
    outside.sort_unstable();
    outside.dedup();
    let n = outside.len();
    p.line(out, PLAIN, &format!("{n} {} outside the commit roots (not committable)", plural(n as u64, "path", "paths")))
}

/// Everything: the summary first, then per `opts.format`:
/// - NameStatus: one line per path `<letter>\t<path>` (+ `\t<entry ids comma-separated>` when review.attribution has the path), sorted by path.
/// - Stat: one line per path ` <path> | <n> <+++-->` like `git diff --stat` for text files, `Bin <old size> -> <new size> bytes` for other files, the kind for entries that are not regular files, and a final ` N files changed, X insertions(+), Y deletions(-)`.
/// - Full: per path a `diff --cloche a<path> b<path>` header, what changed in the entry, its flags and attribution, then a unified diff for text files or a `Binary files differ (...)` line.
pub fn render(
    out: &mut dyn Write,
    review: &crate::Review,
    contents: &dyn Contents,
    opts: &RenderOptions,
) -> io::Result<()> {
    summary(out, review, opts)?;
    let rows = rows(review, opts);
    if rows.is_empty() {
        return Ok(());
    }
    writeln!(out)?;
    let p = Painter(opts.color);
    match opts.format {
        Format::NameStatus => {
            for r in &rows {
                let mut line = format!("{}\t{}", status_letter(r.list, r.entry), escape_path(r.entry.path.as_bytes()));
                if let Some(ids) = review.attribution.get(r.entry.path.as_bytes()) {
                    let _ = write!(line, "\t{}", escape_path(ids.join(",").as_bytes()));
                }
                p.line(out, PLAIN, &line)?;
            }
            Ok(())
        }
        Format::Stat => stat(out, &p, &rows, contents, opts.max_text),
        Format::Full => {
            let flags = flags_by_path(review);
            rows.iter().try_for_each(|r| full(out, &p, review, &flags, r, contents, opts.max_text))
        }
    }
}

/// The reasons of `review.flags`, per path.
fn flags_by_path(review: &crate::Review) -> BTreeMap<&[u8], Vec<&str>> {
    let mut by_path: BTreeMap<&[u8], Vec<&str>> = BTreeMap::new();
    for f in &review.flags {
        by_path.entry(f.path.as_bytes()).or_default().push(&f.why);
    }
    by_path
}

/// One listed entry and the list it comes from.
struct Row<'a> {
    list: &'static str,
    entry: &'a Entry,
}

/// The entries `opts.paths` selects, sorted by path (then added, modified,
/// deleted, touched when asked).
fn rows<'a>(review: &'a crate::Review, opts: &RenderOptions) -> Vec<Row<'a>> {
    let d = &review.diff;
    let touched: &[Entry] = if opts.touched { &d.touched } else { &[] };
    let lists = [("added", &d.added[..]), ("modified", &d.modified), ("deleted", &d.deleted), ("touched", touched)];
    let mut rows: Vec<Row<'a>> = lists
        .into_iter()
        .flat_map(|(list, entries)| entries.iter().map(move |entry| Row { list, entry }))
        .filter(|r| selected(r.entry.path.as_bytes(), &opts.paths))
        .collect();
    // Stable: equal paths keep the list order.
    rows.sort_by(|a, b| a.entry.path.cmp(&b.entry.path));
    rows
}

/// True if `path` is equal to or below one of `filters` (all when empty).
fn selected(path: &[u8], filters: &[Vec<u8>]) -> bool {
    filters.is_empty()
        || filters.iter().any(|f| {
            let mut f = f.as_slice();
            while let Some(rest) = f.strip_suffix(b"/") {
                f = rest;
            }
            // `f` empty: the filter was `/`.
            crate::at_or_below(path, if f.is_empty() { b"/" } else { f })
        })
}

/// Writes lines, in colour or not.
struct Painter(bool);

impl Painter {
    fn paint(&self, style: &str, text: &str) -> String {
        if self.0 && !style.is_empty() && !text.is_empty() {
            format!("{style}{text}{RESET}")
        } else {
            text.to_owned()
        }
    }

    fn line(&self, out: &mut dyn Write, style: &str, text: &str) -> io::Result<()> {
        writeln!(out, "{}", self.paint(style, text))
    }
}

/// One side of a regular file's content, as far as it was read.
enum Side {
    /// No regular file on this side (an added file's old side, ...): empty text.
    Empty,
    /// The whole content, at most `max_text` bytes.
    Bytes(Vec<u8>),
    /// Not read (too big, or not a regular file there any more): its size if known.
    Unread(Option<u64>),
}

impl Side {
    /// The content as text: `None` when unread or binary.
    fn text(&self) -> Option<&str> {
        match self {
            Side::Empty => Some(""),
            Side::Bytes(b) if !b.iter().take(TEXT_PROBE).any(|&c| c == 0) => std::str::from_utf8(b).ok(),
            _ => None,
        }
    }

    fn size(&self) -> String {
        match self {
            Side::Empty => "0".to_owned(),
            Side::Bytes(b) => b.len().to_string(),
            Side::Unread(Some(n)) => n.to_string(),
            Side::Unread(None) => "?".to_owned(),
        }
    }
}

/// What an entry's content comparison is: none (not a regular file, or its
/// content did not change), the two sides, or a read error.
enum Content {
    None,
    Sides(Side, Side),
    Error(io::Error),
}

/// Reads the sides of a row's content, never more than `max` bytes each.
fn load(r: &Row, contents: &dyn Contents, max: u64) -> Content {
    sides(r, contents, max).unwrap_or_else(Content::Error)
}

fn sides(r: &Row, contents: &dyn Contents, max: u64) -> io::Result<Content> {
    let e = r.entry;
    let path = e.path.as_bytes();
    let world = || -> io::Result<Side> {
        // Not even asked for when the diff already says it is too big.
        if e.size.is_some_and(|n| n > max) {
            return Ok(Side::Unread(e.size));
        }
        Ok(match contents.world(path, max)? {
            Some(b) if b.len() as u64 <= max => Side::Bytes(b),
            Some(b) => Side::Unread(Some(b.len() as u64)),
            None => Side::Unread(e.size),
        })
    };
    // `None`: no regular file of at most `max` bytes on the host.
    let base = || -> io::Result<Option<Side>> {
        if contents.withheld(path) {
            return Ok(Some(Side::Empty));
        }
        Ok(match contents.base(path, max)? {
            Some(b) if b.len() as u64 <= max => Some(Side::Bytes(b)),
            Some(b) => Some(Side::Unread(Some(b.len() as u64))),
            None => None,
        })
    };
    let is_file = e.kind == Kind::File;
    let type_changed = e.changes.contains(&Change::Type);
    Ok(match r.list {
        "added" if is_file => Content::Sides(Side::Empty, world()?),
        "deleted" if is_file => Content::Sides(base()?.unwrap_or(Side::Unread(None)), Side::Empty),
        // A new kind: the old side was not a regular file.
        "modified" if is_file && type_changed => Content::Sides(Side::Empty, world()?),
        "modified" if is_file && e.changes.contains(&Change::Content) => {
            let old = base()?.unwrap_or(Side::Unread(None));
            Content::Sides(old, world()?)
        }
        // Something else replaced what may have been a regular file: show what it held.
        "modified" if type_changed => match base()? {
            Some(old) => Content::Sides(old, Side::Empty),
            None => Content::None,
        },
        _ => Content::None,
    })
}

/// The stat listing.
/// The right-hand side of a stat line.
enum Cell {
    /// Inserted and deleted lines of a text file.
    Lines(u64, u64),
    /// Anything else (binary sizes, a kind, a read error).
    Other(String),
}

/// The stat cell of one row.
fn stat_cell(r: &Row, contents: &dyn Contents, max: u64) -> Cell {
    match load(r, contents, max) {
        Content::Sides(old, new) => match (old.text(), new.text()) {
            // One side empty (added, deleted): every line counts, no diff needed.
            (Some(""), Some(b)) => Cell::Lines(line_count(b), 0),
            (Some(a), Some("")) => Cell::Lines(0, line_count(a)),
            (Some(a), Some(b)) => {
                let diff = TextDiff::configure().timeout(DIFF_TIMEOUT).diff_lines(a, b);
                let (mut ins, mut del) = (0, 0);
                for c in diff.iter_all_changes() {
                    match c.tag() {
                        ChangeTag::Insert => ins += 1,
                        ChangeTag::Delete => del += 1,
                        ChangeTag::Equal => {}
                    }
                }
                Cell::Lines(ins, del)
            }
            _ => Cell::Other(format!("Bin {} -> {} bytes", old.size(), new.size())),
        },
        Content::Error(err) => Cell::Other(format!("(cannot read: {})", escape_path(err.to_string().as_bytes()))),
        Content::None if r.entry.kind == Kind::File => Cell::Lines(0, 0),
        Content::None => Cell::Other(kind_name(r.entry.kind).to_owned()),
    }
}

fn stat(out: &mut dyn Write, p: &Painter, rows: &[Row], contents: &dyn Contents, max: u64) -> io::Result<()> {
    // Count first (one file per worker in memory at a time), then align.
    // Reading thousands of small files is syscall-bound: split the rows
    // over the cores.
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get()).clamp(1, 4);
    let chunk = rows.len().div_ceil(workers).max(1);
    let cells: Vec<Cell> = std::thread::scope(|s| {
        let handles: Vec<_> = rows
            .chunks(chunk)
            .map(|part| s.spawn(move || part.iter().map(|r| stat_cell(r, contents, max)).collect::<Vec<_>>()))
            .collect();
        handles.into_iter().flat_map(|h| h.join().unwrap_or_default()).collect()
    });
    let names: Vec<String> = rows.iter().map(|r| escape_path(r.entry.path.as_bytes())).collect();
    let name_width = names.iter().map(|n| n.chars().count()).max().unwrap_or(0).min(60);
    let (mut total_ins, mut total_del, mut widest) = (0u64, 0u64, 0u64);
    for c in &cells {
        if let Cell::Lines(i, d) = c {
            total_ins += i;
            total_del += d;
            widest = widest.max(i + d);
        }
    }
    let count_width = widest.to_string().len();
    for (name, cell) in names.iter().zip(&cells) {
        let mut line = format!(" {name:<name_width$} | ");
        let (plus, minus) = match cell {
            Cell::Lines(i, d) => {
                let _ = write!(line, "{:>count_width$}", i + d);
                bar(*i, *d, widest)
            }
            Cell::Other(s) => {
                line.push_str(s);
                (0, 0)
            }
        };
        if plus + minus > 0 {
            line.push(' ');
        }
        line += &p.paint(GREEN, &"+".repeat(plus as usize));
        line += &p.paint(RED, &"-".repeat(minus as usize));
        p.line(out, PLAIN, &line)?;
    }
    let n = rows.len() as u64;
    let last = format!(
        " {n} {} changed, {total_ins} {}(+), {total_del} {}(-)",
        plural(n, "file", "files"),
        plural(total_ins, "insertion", "insertions"),
        plural(total_del, "deletion", "deletions"),
    );
    p.line(out, PLAIN, &last)
}

/// The `+` and `-` counts of a stat bar, scaled (as git) so that the row
/// with the most changed lines, `widest`, fills at most [`BAR_WIDTH`].
/// Lines of a text as a line diff counts them (a last line without a
/// newline counts too).
fn line_count(s: &str) -> u64 {
    let n = s.bytes().filter(|&b| b == b'\n').count() as u64;
    n + u64::from(!s.is_empty() && !s.ends_with('\n'))
}

fn bar(ins: u64, del: u64, widest: u64) -> (u64, u64) {
    if widest <= BAR_WIDTH {
        return (ins, del);
    }
    // Any change keeps at least one mark.
    let scale = |n: u64| if n == 0 { 0 } else { (n.saturating_mul(BAR_WIDTH) / widest).max(1) };
    (scale(ins), scale(del))
}

/// The full listing of one entry.
fn full(
    out: &mut dyn Write,
    p: &Painter,
    review: &crate::Review,
    flags: &BTreeMap<&[u8], Vec<&str>>,
    r: &Row,
    contents: &dyn Contents,
    max: u64,
) -> io::Result<()> {
    let e = r.entry;
    let path = escape_path(e.path.as_bytes());
    let content = load(r, contents, max);
    let mut meta = vec![format!("diff --cloche a{path} b{path}")];
    let kind = kind_name(e.kind);
    let mode = e.mode.map(format_mode);
    match r.list {
        "added" => meta.push(match &mode {
            Some(m) => format!("new {kind} mode {m}"),
            None => format!("new {kind}"),
        }),
        "deleted" => meta.push(format!("deleted {kind}")),
        "touched" => meta.push(match e.changes.contains(&Change::Mtime) {
            true => format!("touched {kind}: as the base has it, new mtime"),
            false => format!("touched {kind}: as the base has it"),
        }),
        _ => {
            let changes: Vec<String> = e.changes.iter().map(serde_name).collect();
            meta.push(format!("changed: {}", changes.join(", ")));
            if e.changes.contains(&Change::Type) {
                // The fs_diff keeps only the new kind; the base tells a regular file.
                let old = if matches!(content, Content::Sides(_, Side::Empty)) { "file" } else { "?" };
                meta.push(format!("type: {old} -> {kind}"));
            }
            if let Some(m) =
                mode.as_ref().filter(|_| e.changes.iter().any(|c| matches!(c, Change::Mode | Change::Type)))
            {
                meta.push(format!("new mode {m}"));
            }
            if let (true, Some(uid), Some(gid)) = (e.changes.contains(&Change::Owner), e.uid, e.gid) {
                meta.push(format!("new owner {uid}:{gid}"));
            }
        }
    }
    if r.list != "deleted" {
        if let Some(t) = &e.target {
            meta.push(format!("symlink -> {}", escape_path(t.as_bytes())));
        }
        if let Some((major, minor)) = e.rdev {
            meta.push(format!("device {major}:{minor}"));
        }
        if let Some(l) = &e.links_to {
            meta.push(format!("hard link to {}", escape_path(l.as_bytes())));
        }
    }
    if let Some(ids) = review.attribution.get(e.path.as_bytes()) {
        let verb = if r.list == "touched" { "written" } else { "changed" };
        meta.push(format!("{verb} by entry {}", escape_path(ids.join(", ").as_bytes())));
    }
    if r.list != "added" && contents.withheld(e.path.as_bytes()) {
        meta.push(WITHHELD.to_owned());
    }
    for m in &meta {
        p.line(out, BOLD, m)?;
    }
    for why in flags.get(e.path.as_bytes()).into_iter().flatten() {
        p.line(out, YELLOW, &format!("! {}", escape_path(why.as_bytes())))?;
    }
    match content {
        Content::None => Ok(()),
        Content::Error(err) => {
            p.line(out, PLAIN, &format!("(cannot read: {})", escape_path(err.to_string().as_bytes())))
        }
        Content::Sides(old, new) => match (old.text(), new.text()) {
            (Some(a), Some(b)) => text_diff(out, p, &path, a, b),
            _ => {
                let sha = match (&new, &e.sha256) {
                    (Side::Empty, _) | (_, None) => "-".to_owned(),
                    (_, Some(s)) => escape_path(s.as_bytes()),
                };
                let line = format!("Binary files differ ({} -> {} bytes, sha256 {sha})", old.size(), new.size());
                p.line(out, PLAIN, &line)
            }
        },
    }
}

/// A unified diff of `old` and `new` (3 lines of context), escaped.
fn text_diff(out: &mut dyn Write, p: &Painter, path: &str, old: &str, new: &str) -> io::Result<()> {
    let diff = TextDiff::configure().timeout(DIFF_TIMEOUT).diff_lines(old, new);
    let mut unified = diff.unified_diff();
    unified.context_radius(CONTEXT);
    for (i, hunk) in unified.iter_hunks().enumerate() {
        if i == 0 {
            p.line(out, BOLD, &format!("--- a{path}"))?;
            p.line(out, BOLD, &format!("+++ b{path}"))?;
        }
        p.line(out, CYAN, &hunk.header().to_string())?;
        for change in hunk.iter_changes() {
            let (sign, style) = match change.tag() {
                ChangeTag::Delete => ('-', RED),
                ChangeTag::Insert => ('+', GREEN),
                ChangeTag::Equal => (' ', PLAIN),
            };
            let value = change.value();
            let mut line = String::with_capacity(value.len() + 1);
            line.push(sign);
            escape_into(&mut line, value.strip_suffix('\n').unwrap_or(value).as_bytes(), false);
            p.line(out, style, &line)?;
            if change.missing_newline() {
                p.line(out, PLAIN, "\\ No newline at end of file")?;
            }
        }
    }
    Ok(())
}

/// A kind as the listing names it.
fn kind_name(kind: Kind) -> &'static str {
    match kind {
        Kind::File => "file",
        Kind::Dir => "dir",
        Kind::Symlink => "symlink",
        Kind::Char => "char device",
        Kind::Block => "block device",
        Kind::Fifo => "fifo",
        Kind::Socket => "socket",
    }
}

fn plural<'a>(n: u64, one: &'a str, many: &'a str) -> &'a str {
    if n == 1 {
        one
    } else {
        many
    }
}

/// `n` bytes for a human: "512 B", "1.5 KiB", "3.0 GiB".
fn human(n: u64) -> String {
    const UNITS: [&str; 6] = ["KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut v = n as f64 / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.1} {}", UNITS[unit])
}

#[cfg(test)]
#[path = "render_tests.rs"]
mod tests;
