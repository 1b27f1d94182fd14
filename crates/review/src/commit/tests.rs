//! The commit's planning checks (`Commit::prepare`).

use super::*;
use cloche_world::diff::{FsDiff, RawPath};

fn entry(path: &str, kind: Kind, mode: u32) -> Entry {
    let mut e = Entry::new(RawPath::from(path), kind);
    e.mode = Some(mode);
    e
}

/// Entries a world cannot make without privileges (device nodes) or that
/// reach out (absolute symlinks) are refused at planning, whatever else
/// the commit holds; setuid bits are stripped or refused as asked.
#[test]
fn devices_sockets_and_escaping_links_are_refused_at_planning() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("proj");
    std::fs::create_dir(&root).unwrap();
    let r = root.to_str().unwrap();
    let mut link = entry(&format!("{r}/l"), Kind::Symlink, 0o777);
    link.target = Some(RawPath::from("/etc/shadow"));
    let mut inside = entry(&format!("{r}/m"), Kind::Symlink, 0o777);
    inside.target = Some(RawPath::from("sub/x"));
    let added = vec![
        entry(&format!("{r}/blk"), Kind::Block, 0o600),
        entry(&format!("{r}/chr"), Kind::Char, 0o600),
        link,
        inside,
        entry(&format!("{r}/sock"), Kind::Socket, 0o755),
        entry(&format!("{r}/suid"), Kind::File, 0o4755),
    ];
    let review = Review { diff: FsDiff { added, ..FsDiff::default() }, roots: vec![root.clone()], ..Review::default() };
    let world = KeptWorld {
        id: "0123456789abcdef".into(),
        state: "kept".into(),
        exit_code: Some(0),
        store: "disk".into(),
        path: tmp.path().to_path_buf(),
        ..KeptWorld::default()
    };
    let base = HashMap::new();
    let c = Commit::prepare(&review, &world, &base, &Options::default()).unwrap();
    let why = |name: &str| c.plan.refused.iter().find(|i| i.path.ends_with(name.as_bytes())).map(|i| i.why.clone());
    assert_eq!(why("/blk").as_deref(), Some("device node"));
    assert_eq!(why("/chr").as_deref(), Some("device node"));
    assert_eq!(why("/sock").as_deref(), Some("socket"));
    assert_eq!(why("/l").as_deref(), Some("symlink leaves the commit roots"));
    assert_eq!(why("/m"), None);
    assert!(!c.plan.ok());
    assert!(c
        .plan
        .ops
        .iter()
        .any(|o| o.path.ends_with(b"/suid") && o.action == Action::Write { mode: 0o755, size: 0 }));
    assert_eq!(c.plan.stripped.len(), 1);
    let strict = Options { refuse_setuid: true, ..Options::default() };
    let c = Commit::prepare(&review, &world, &base, &strict).unwrap();
    assert!(c.plan.refused.iter().any(|i| i.path.ends_with(b"/suid") && i.why == "setuid"));
    // A commit of a refused plan applies nothing.
    let report = c.apply();
    assert!(report.applied.is_empty() && report.error.is_some());
    assert_eq!(std::fs::read_dir(&root).unwrap().count(), 0);
}

#[test]
fn paths_relative_to_roots() {
    assert_eq!(rel(b"/r", b"/r/a/b"), b"a/b");
    assert_eq!(rel(b"/r", b"/r"), b"");
    assert_eq!(rel(b"/", b"/a"), b"a");
    assert!(at_or_below(b"/r/a", b"/r") && !at_or_below(b"/rx", b"/r") && at_or_below(b"/x", b"/"));
}
