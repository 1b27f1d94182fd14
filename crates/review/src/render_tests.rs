//! Unit tests of `render`, with in-memory contents.

use super::*;
use crate::flags::ReviewFlag;
use crate::Review;
use cloche_world::diff::RawPath;
use std::collections::HashMap;
use std::path::PathBuf;

/// In-memory contents; reading `fail` errors.
#[derive(Default)]
struct Mem {
    world: HashMap<Vec<u8>, Vec<u8>>,
    base: HashMap<Vec<u8>, Vec<u8>>,
    fail: Vec<u8>,
    secret: Vec<Vec<u8>>,
}

impl Mem {
    fn get(&self, map: &HashMap<Vec<u8>, Vec<u8>>, path: &[u8], limit: u64) -> io::Result<Option<Vec<u8>>> {
        if path == self.fail.as_slice() {
            return Err(io::Error::other("boom"));
        }
        Ok(map.get(path).filter(|b| b.len() as u64 <= limit).cloned())
    }
    fn world(mut self, p: &str, b: &[u8]) -> Self {
        self.world.insert(p.as_bytes().to_vec(), b.to_vec());
        self
    }
    fn base(mut self, p: &str, b: &[u8]) -> Self {
        self.base.insert(p.as_bytes().to_vec(), b.to_vec());
        self
    }
}

impl Contents for Mem {
    fn world(&self, path: &[u8], limit: u64) -> io::Result<Option<Vec<u8>>> {
        self.get(&self.world, path, limit)
    }
    fn base(&self, path: &[u8], limit: u64) -> io::Result<Option<Vec<u8>>> {
        self.get(&self.base, path, limit)
    }
    fn withheld(&self, path: &[u8]) -> bool {
        self.secret.iter().any(|s| s.as_slice() == path)
    }
}

fn entry(p: &[u8], kind: Kind, changes: &[Change]) -> Entry {
    let mut e = Entry::new(RawPath::from_bytes(p), kind);
    e.changes = changes.to_vec();
    if kind != Kind::Symlink {
        e.mode = Some(if kind == Kind::Dir { 0o755 } else { 0o644 });
    }
    e
}

fn file(p: &str, size: u64, changes: &[Change]) -> Entry {
    Entry { size: Some(size), ..entry(p.as_bytes(), Kind::File, changes) }
}

fn review(added: Vec<Entry>, modified: Vec<Entry>, deleted: Vec<Entry>) -> Review {
    let mut r = Review { roots: vec![PathBuf::from("/srv")], ..Review::default() };
    r.diff.totals.added = added.len() as u64;
    r.diff.totals.modified = modified.len() as u64;
    r.diff.totals.deleted = deleted.len() as u64;
    (r.diff.added, r.diff.modified, r.diff.deleted) = (added, modified, deleted);
    r
}

fn run(r: &Review, mem: &Mem, opts: &RenderOptions) -> String {
    let mut out = Vec::new();
    render(&mut out, r, mem, opts).unwrap();
    String::from_utf8(out).unwrap()
}

/// What follows the summary.
fn body(r: &Review, mem: &Mem, opts: &RenderOptions) -> String {
    let s = run(r, mem, opts);
    s.split_once("\n\n").map(|(_, b)| b.to_owned()).unwrap_or_default()
}

fn full(r: &Review, mem: &Mem) -> String {
    body(r, mem, &RenderOptions::default())
}

#[test]
fn added_text_file() {
    let r = review(vec![file("/srv/a.txt", 8, &[])], vec![], vec![]);
    let got = full(&r, &Mem::default().world("/srv/a.txt", b"one\ntwo\n"));
    let want = "diff --cloche a/srv/a.txt b/srv/a.txt\nnew file mode 0644\n--- a/srv/a.txt\n+++ b/srv/a.txt\n\
                @@ -0,0 +1,2 @@\n+one\n+two\n";
    assert_eq!(got, want);
}

#[test]
fn modified_text_file_hunk_and_attribution() {
    let mut r = review(vec![], vec![file("/srv/m", 16, &[Change::Content])], vec![]);
    r.attribution.insert(b"/srv/m".to_vec(), vec!["e1".into(), "e2".into()]);
    let mem =
        Mem::default().base("/srv/m", b"a\nb\nc\nd\ne\nf\ng\nh\ni\n").world("/srv/m", b"a\nb\nc\nd\nE\nf\ng\nh\ni\n");
    let want = "diff --cloche a/srv/m b/srv/m\nchanged: content\nchanged by entry e1, e2\n--- a/srv/m\n+++ b/srv/m\n\
                @@ -2,7 +2,7 @@\n b\n c\n d\n-e\n+E\n f\n g\n h\n";
    assert_eq!(full(&r, &mem), want);
}

#[test]
fn deleted_file_and_no_newline_marker() {
    let r = review(vec![file("/srv/n", 1, &[])], vec![], vec![Entry::new(RawPath::from("/srv/old"), Kind::File)]);
    let mem = Mem::default().world("/srv/n", b"a").base("/srv/old", b"x\ny\n");
    let want = "diff --cloche a/srv/n b/srv/n\nnew file mode 0644\n--- a/srv/n\n+++ b/srv/n\n@@ -0,0 +1 @@\n+a\n\
                \\ No newline at end of file\ndiff --cloche a/srv/old b/srv/old\ndeleted file\n--- a/srv/old\n\
                +++ b/srv/old\n@@ -1,2 +0,0 @@\n-x\n-y\n";
    assert_eq!(full(&r, &mem), want);
}

#[test]
fn binary_and_big_files() {
    let mut bin = file("/srv/bin", 3, &[]);
    bin.sha256 = Some("abc".into());
    let big = file("/srv/big", 100, &[Change::Content]);
    let r = review(vec![bin], vec![big], vec![]);
    // The diff says the big file is too big: its (small) world content is never read.
    let mem = Mem::default().world("/srv/bin", b"a\0b").world("/srv/big", b"x\n").base("/srv/big", b"y\n");
    let opts = RenderOptions { max_text: 10, ..RenderOptions::default() };
    let got = body(&r, &mem, &opts);
    assert!(got.contains("new file mode 0644\nBinary files differ (0 -> 3 bytes, sha256 abc)\n"), "{got}");
    assert!(got.contains("changed: content\nBinary files differ (2 -> 100 bytes, sha256 -)\n"), "{got}");
    // A base too big to read has an unknown size.
    let mem = Mem::default().world("/srv/bin", b"a\0b").base("/srv/big", &[b'y'; 11]);
    let got = body(&r, &mem, &opts);
    assert!(got.contains("changed: content\nBinary files differ (? -> 100 bytes, sha256 -)\n"), "{got}");
}

#[test]
fn mode_owner_change_reads_nothing() {
    let mut e = file("/srv/x", 5, &[Change::Mode, Change::Owner]);
    (e.mode, e.uid, e.gid) = (Some(0o4755), Some(0), Some(7));
    let mut r = review(vec![], vec![e], vec![]);
    r.flags = vec![ReviewFlag { path: RawPath::from("/srv/x"), why: "setuid".into() }];
    let mem = Mem { fail: b"/srv/x".to_vec(), ..Mem::default() };
    let want = "diff --cloche a/srv/x b/srv/x\nchanged: mode, owner\nnew mode 4755\nnew owner 0:7\n! setuid\n";
    assert_eq!(full(&r, &mem), want);
}

#[test]
fn symlinks_and_type_change() {
    let mut l = entry(b"/srv/l", Kind::Symlink, &[]);
    l.target = Some(RawPath::from("../x"));
    let mut t = entry(b"/srv/t", Kind::Symlink, &[Change::Type]);
    t.target = Some(RawPath::from("/etc"));
    let mut f = file("/srv/f", 3, &[Change::Type]);
    f.mode = Some(0o755);
    let r = review(vec![l], vec![f, t], vec![]);
    let mem = Mem::default().base("/srv/t", b"old\n").world("/srv/f", b"new");
    let want = "diff --cloche a/srv/f b/srv/f\nchanged: type\ntype: ? -> file\nnew mode 0755\n--- a/srv/f\n\
                +++ b/srv/f\n@@ -0,0 +1 @@\n+new\n\\ No newline at end of file\n\
                diff --cloche a/srv/l b/srv/l\nnew symlink\nsymlink -> ../x\n\
                diff --cloche a/srv/t b/srv/t\nchanged: type\ntype: file -> symlink\nsymlink -> /etc\n\
                --- a/srv/t\n+++ b/srv/t\n@@ -1 +0,0 @@\n-old\n";
    assert_eq!(full(&r, &mem), want);
}

#[test]
fn name_status_and_filter() {
    let mut r = review(
        vec![file("/srv/a", 0, &[]), file("/srv/ab", 0, &[]), file("/srv/a/in", 0, &[])],
        vec![file("/srv/c", 0, &[Change::Content]), entry(b"/srv/d", Kind::Dir, &[Change::Type])],
        vec![Entry::new(RawPath::from("/srv/b"), Kind::Dir)],
    );
    r.attribution.insert(b"/srv/a".to_vec(), vec!["1".into(), "2".into()]);
    let mut opts = RenderOptions { format: Format::NameStatus, ..RenderOptions::default() };
    let mem = Mem::default();
    let all = "A\t/srv/a\t1,2\nA\t/srv/a/in\nA\t/srv/ab\nD\t/srv/b\nM\t/srv/c\nT\t/srv/d\n";
    assert_eq!(body(&r, &mem, &opts), all);
    opts.paths = vec![b"/srv/a/".to_vec(), b"/srv/d".to_vec()];
    let out = run(&r, &mem, &opts);
    assert!(out.starts_with("changes: 3 added, 2 modified, 1 deleted, 0 bytes (0 B)\n"), "{out}");
    assert!(out.ends_with("\n\nA\t/srv/a\t1,2\nA\t/srv/a/in\nT\t/srv/d\n"), "{out}");
    opts.paths = vec![b"/nothing".to_vec()];
    assert_eq!(body(&r, &mem, &opts), "");
    assert!(selected(b"/x", &[b"/".to_vec()]) && !selected(b"/x", &[b"/y".to_vec()]));
}

#[test]
fn stat_output() {
    let r = review(
        vec![file("/srv/new.txt", 4, &[]), file("/srv/bin", 2, &[]), entry(b"/srv/dir", Kind::Dir, &[])],
        vec![file("/srv/m", 4, &[Change::Content]), file("/srv/mode", 4, &[Change::Mode])],
        vec![],
    );
    let mem = Mem::default()
        .world("/srv/new.txt", b"1\n2\n")
        .world("/srv/bin", b"\0\0")
        .base("/srv/m", b"a\nb\nc\n")
        .world("/srv/m", b"a\nB\n");
    let opts = RenderOptions { format: Format::Stat, ..RenderOptions::default() };
    let want = " /srv/bin     | Bin 0 -> 2 bytes\n /srv/dir     | dir\n /srv/m       | 3 +--\n \
                /srv/mode    | 0\n /srv/new.txt | 2 ++\n 5 files changed, 3 insertions(+), 2 deletions(-)\n";
    assert_eq!(body(&r, &mem, &opts), want);
    assert_eq!(bar(100, 0, 100), (50, 0));
    assert_eq!(bar(1, 199, 200), (1, 49));
    assert_eq!(bar(3, 2, 10), (3, 2));
}

#[test]
fn escaping_paths_and_content() {
    let evil = b"/srv/a\nM\t/srv/fake\x1b[2J\\\xff\xe2\x80\xae";
    let r = review(vec![entry(evil, Kind::File, &[])], vec![], vec![]);
    let mem = Mem {
        world: HashMap::from([(evil.to_vec(), b"ok\tfine\n\x1b]0;owned\x07\r\n\xc2\x9b31m\n".to_vec())]),
        ..Mem::default()
    };
    let opts = RenderOptions { format: Format::NameStatus, ..RenderOptions::default() };
    let shown = "/srv/a\\nM\\t/srv/fake\\x1b[2J\\\\\\xff\\u{202e}";
    assert_eq!(body(&r, &mem, &opts), format!("A\t{shown}\n"));
    let out = run(&r, &mem, &RenderOptions::default());
    assert!(!out.contains('\x1b') && !out.contains('\r') && !out.contains('\u{9b}'), "{out:?}");
    assert!(out.contains("+ok\tfine\n+\\x1b]0;owned\\x07\\r\n+\\u{9b}31m\n"), "{out}");
    assert!(out.contains(&format!("diff --cloche a{shown} b{shown}\n")), "{out}");
    let mut s = String::new();
    escape_into(&mut s, b"\xf0\x9f", true);
    assert_eq!(s, "\\xf0\\x9f");
}

#[test]
fn colour_only_when_asked() {
    let mut r = review(vec![file("/srv/a", 2, &[])], vec![], vec![]);
    r.flags = vec![ReviewFlag { path: RawPath::from("/srv/a"), why: "CI configuration".into() }];
    let mem = Mem::default().base("/srv/a", b"x\n").world("/srv/a", b"y\n");
    let plain = run(&r, &mem, &RenderOptions::default());
    assert!(!plain.contains('\x1b'));
    let coloured = run(&r, &mem, &RenderOptions { color: true, ..RenderOptions::default() });
    for want in ["\x1b[1mdiff --cloche a/srv/a b/srv/a\x1b[0m", "\x1b[32m+y\x1b[0m", "\x1b[36m@@ -0,0 +1 @@\x1b[0m"] {
        assert!(coloured.contains(want), "{want:?} in {coloured:?}");
    }
    assert!(coloured.contains("\x1b[33m  ! /srv/a  CI configuration\x1b[0m"));
}

#[test]
fn read_errors_do_not_stop() {
    let r = review(vec![file("/srv/a", 1, &[]), file("/srv/b", 2, &[])], vec![], vec![]);
    let mem = Mem { fail: b"/srv/a".to_vec(), ..Mem::default() }.world("/srv/b", b"b\n");
    let got = full(&r, &mem);
    assert!(got.starts_with("diff --cloche a/srv/a b/srv/a\nnew file mode 0644\n(cannot read: boom)\n"), "{got}");
    assert!(got.ends_with("@@ -0,0 +1 @@\n+b\n"), "{got}");
}

#[test]
fn summary_text() {
    let mut r = review(vec![file("/etc/x", 1, &[])], vec![], vec![Entry::new(RawPath::from("/srv/y"), Kind::File)]);
    r.diff.totals.bytes = 1536;
    r.diff.truncated = true;
    let flag = |p: &str, why: &str| ReviewFlag { path: RawPath::from(p), why: why.into() };
    r.flags = vec![flag("/etc/x", "outside the commit roots"), flag("/etc/x", "setuid"), flag("/a\x1b", "x")];
    let mut out = Vec::new();
    summary(&mut out, &r, &RenderOptions::default()).unwrap();
    let want = "changes: 1 added, 0 modified, 1 deleted, 1536 bytes (1.5 KiB)\n\
                truncated: the lists do not show every change (totals count everything)\nflags:\n  ! /a\\x1b  x\n\
                \x20 ! /etc/x  outside the commit roots, setuid\n1 path outside the commit roots (not committable)\n";
    assert_eq!(String::from_utf8(out).unwrap(), want);
    assert_eq!((human(0), human(1023), human(5 << 30)), ("0 B".into(), "1023 B".into(), "5.0 GiB".into()));
    assert_eq!(status_letter("nope", &r.diff.added[0]), '?');
}

#[test]
fn a_withheld_base_is_never_shown() {
    // The world wrote its own ~/.npmrc over the host's secret one: the
    // world's side is shown whole, the host's not at all, in every format.
    let r = review(vec![], vec![file("/root/.npmrc", 11, &[Change::Content])], vec![]);
    let mut mem = Mem::default().base("/root/.npmrc", b"_authToken=s3cret\n").world("/root/.npmrc", b"fund=false\n");
    mem.secret.push(b"/root/.npmrc".to_vec());
    let want =
        "diff --cloche a/root/.npmrc b/root/.npmrc\nchanged: content\nthe host's version is a secret: not shown\n\
                --- a/root/.npmrc\n+++ b/root/.npmrc\n@@ -0,0 +1 @@\n+fund=false\n";
    assert_eq!(full(&r, &mem), want);
    let stat = body(&r, &mem, &RenderOptions { format: Format::Stat, ..RenderOptions::default() });
    assert!(!stat.contains("s3cret") && stat.contains("/root/.npmrc"), "{stat}");
}

/// Touched paths (written as the base has them) are counted in the
/// summary and left out of every listing unless asked for.
#[test]
fn touched_paths_are_counted_not_listed() {
    let mut r = review(vec![], vec![file("/srv/m", 2, &[Change::Content])], vec![]);
    r.diff.touched =
        vec![Entry::new(RawPath::from("/srv/d"), Kind::Dir), entry(b"/srv/t", Kind::File, &[Change::Mtime])];
    r.diff.touched[1].mode = None;
    r.diff.totals.touched = 2;
    let mem = Mem::default().base("/srv/m", b"a\n").world("/srv/m", b"b\n");
    let text = run(&r, &mem, &RenderOptions::default());
    assert!(
        text.contains("touched: 2 paths written as the base has them, not changes (--touched lists them)\n"),
        "{text}"
    );
    for format in [Format::Full, Format::NameStatus, Format::Stat] {
        let b = body(&r, &mem, &RenderOptions { format, ..RenderOptions::default() });
        assert!(b.contains("/srv/m") && !b.contains("/srv/t") && !b.contains("/srv/d"), "{format:?}: {b}");
    }
    let opts = RenderOptions { format: Format::NameStatus, touched: true, ..RenderOptions::default() };
    assert_eq!(body(&r, &mem, &opts), "=\t/srv/d\nM\t/srv/m\n=\t/srv/t\n");
    let opts = RenderOptions { touched: true, ..RenderOptions::default() };
    let b = body(&r, &mem, &opts);
    assert!(b.contains("diff --cloche a/srv/t b/srv/t\ntouched file: as the base has it, new mtime\n"), "{b}");
    assert!(b.contains("diff --cloche a/srv/d b/srv/d\ntouched dir: as the base has it\n"), "{b}");
}
