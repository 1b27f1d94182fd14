//! What one step of a batch changed: the difference between the world's
//! fs_diff before and after it (both against the base).

use super::model::{Change, Entry, FsDiff, Kind, Totals};
use std::collections::BTreeMap;

#[derive(Clone, Copy, PartialEq, Eq)]
enum List {
    Added,
    Modified,
    Deleted,
    Touched,
}

fn index(d: &FsDiff) -> BTreeMap<&[u8], (List, &Entry)> {
    let mut m = BTreeMap::new();
    let lists = [
        (List::Added, &d.added),
        (List::Modified, &d.modified),
        (List::Deleted, &d.deleted),
        (List::Touched, &d.touched),
    ];
    for (list, entries) in lists {
        for e in entries {
            m.insert(e.path.as_bytes(), (list, e));
        }
    }
    m
}

/// How `after` differs from `before`, where both describe a world against
/// the same base. A path new in `after` keeps its classification (touched
/// included); a path in both that changed again is `modified` (or `deleted`
/// when it is gone now); a path that was changed before and is back to the
/// base (gone from `after`, or touched there) is reported as `deleted` when
/// it had been added, else as `modified` with the changes it had (`content`
/// when it had been deleted). A path touched before and really changed now
/// is reported as `after` has it; one touched before and no longer listed is
/// no change. Flags are those of `after` on the paths of the delta.
pub fn delta(before: &FsDiff, after: &FsDiff) -> FsDiff {
    let (b, a) = (index(before), index(after));
    let mut out = FsDiff::default();
    let mut push = |list: List, e: Entry| match list {
        List::Added => out.added.push(e),
        List::Modified => out.modified.push(e),
        List::Deleted => out.deleted.push(e),
        List::Touched => out.touched.push(e),
    };
    for (path, (alist, ae)) in &a {
        match b.get(path) {
            None => push(*alist, (*ae).clone()),
            Some((blist, be)) if blist == alist && same(be, ae) => {}
            Some(_) if *alist == List::Deleted => push(List::Deleted, (*ae).clone()),
            Some((List::Touched, _)) if *alist == List::Touched => push(List::Touched, (*ae).clone()),
            Some((blist, be)) if *alist == List::Touched => push(undone(*blist), restored(be, ae, *blist)),
            Some((_, be)) => {
                let mut e = (*ae).clone();
                if e.changes.is_empty() || *alist == List::Added {
                    e.changes = changes(be, ae);
                }
                push(List::Modified, e);
            }
        }
    }
    for (path, (blist, be)) in &b {
        if a.contains_key(path) || *blist == List::Touched {
            continue;
        }
        push(undone(*blist), restored(be, &Entry::new(be.path.clone(), be.kind), *blist));
    }
    for v in [&mut out.added, &mut out.modified, &mut out.deleted, &mut out.touched] {
        v.sort_by(|x, y| x.path.cmp(&y.path));
    }
    let keep: std::collections::BTreeSet<&[u8]> =
        out.added.iter().chain(&out.modified).chain(&out.deleted).map(|e| e.path.as_bytes()).collect();
    out.flags = after.flags.iter().filter(|f| keep.contains(f.path.as_bytes())).cloned().collect();
    let bytes = |v: &Vec<Entry>| -> u64 { v.iter().filter(|e| e.kind == Kind::File).filter_map(|e| e.size).sum() };
    out.totals = Totals {
        added: out.added.len() as u64,
        modified: out.modified.len() as u64,
        deleted: out.deleted.len() as u64,
        bytes: bytes(&out.added) + bytes(&out.modified),
        touched: out.touched.len() as u64,
    };
    out.truncated = before.truncated || after.truncated;
    out
}

/// The list of a path whose change in `was` was undone (it is back to the base).
fn undone(was: List) -> List {
    if was == List::Added {
        List::Deleted
    } else {
        List::Modified
    }
}

/// The delta entry of a path back to the base: `now` (its entry after, or
/// just its path and kind) with what was undone.
fn restored(before: &Entry, now: &Entry, was: List) -> Entry {
    if was == List::Added {
        return Entry::new(before.path.clone(), before.kind);
    }
    let mut e = now.clone();
    e.changes = before.changes.iter().copied().filter(|c| *c != Change::Mtime).collect();
    if e.changes.is_empty() {
        e.changes = vec![Change::Content];
    }
    e
}

/// Both sides hashed, to different contents. (The two diffs of a world
/// continued by runs may have been made one with sha256 and one without,
/// `--no-hash`: a hash on one side only says nothing.)
fn hashes_differ(a: &Entry, b: &Entry) -> bool {
    matches!((&a.sha256, &b.sha256), (Some(x), Some(y)) if x != y)
}

/// The same description of one path, a hash on one side only ignored.
fn same(a: &Entry, b: &Entry) -> bool {
    match (&a.sha256, &b.sha256) {
        (Some(_), Some(_)) | (None, None) => a == b,
        _ => Entry { sha256: None, ..a.clone() } == Entry { sha256: None, ..b.clone() },
    }
}

/// What differs between two descriptions of one path.
fn changes(before: &Entry, after: &Entry) -> Vec<Change> {
    let mut c = Vec::new();
    if before.kind != after.kind {
        c.push(Change::Type);
    }
    if hashes_differ(before, after) || before.size != after.size || before.rdev != after.rdev {
        c.push(Change::Content);
    }
    if before.target != after.target {
        c.push(Change::Target);
    }
    if before.mode != after.mode {
        c.push(Change::Mode);
    }
    if before.uid != after.uid || before.gid != after.gid {
        c.push(Change::Owner);
    }
    if c.is_empty() {
        c.push(Change::Mtime);
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diff::model::RawPath;

    fn file(path: &str, sha: &str) -> Entry {
        let mut e = Entry::new(RawPath::from_bytes(path.as_bytes().to_vec()), Kind::File);
        e.size = Some(1);
        e.sha256 = Some(sha.into());
        e
    }

    fn paths(v: &[Entry]) -> Vec<String> {
        v.iter().map(|e| e.path.to_string_lossy()).collect()
    }

    #[test]
    fn steps_of_a_batch() {
        // Step 1 adds /a and /b, modifies base /c.
        let s1 = FsDiff {
            added: vec![file("/a", "1"), file("/b", "1")],
            modified: vec![file("/c", "1")],
            ..Default::default()
        };
        // Step 2 changes /a again, deletes /b (its own), restores /c, deletes base /d, adds /e.
        let s2 = FsDiff {
            added: vec![file("/a", "2"), file("/e", "1")],
            deleted: vec![Entry::new(RawPath::from_bytes(b"/d".to_vec()), Kind::File)],
            ..Default::default()
        };
        let d = delta(&s1, &s2);
        assert_eq!(paths(&d.added), vec!["/e"]);
        assert_eq!(paths(&d.modified), vec!["/a", "/c"]);
        assert_eq!(d.modified[0].changes, vec![Change::Content]);
        assert_eq!(paths(&d.deleted), vec!["/b", "/d"]);
        assert_eq!((d.totals.added, d.totals.modified, d.totals.deleted), (1, 2, 2));
        // Nothing changed: empty.
        assert!(delta(&s2, &s2).is_empty());
        // The same files described without their hashes (a run with
        // --no-hash after one with them): nothing changed either.
        let mut bare = s2.clone();
        bare.added.iter_mut().for_each(|e| e.sha256 = None);
        assert!(delta(&s2, &bare).is_empty() && delta(&bare, &s2).is_empty());
        // From nothing: the whole diff.
        assert_eq!(delta(&FsDiff::default(), &s1).totals.added, 2);
    }
}
