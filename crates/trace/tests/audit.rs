//! The audit log through its public API: appends, the chain, tampering,
//! torn writes, concurrency.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use cloche_trace::audit::{self, events, recover, verify_bytes, GENESIS};
use cloche_trace::{canonical_json, AuditError, AuditLog, BadLine, VerifyError};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

fn log_with(n: u64) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("audit.jsonl");
    let mut log = AuditLog::open(&path).unwrap();
    for i in 1..=n {
        log.append(events::DECIDED, "uid:1000", Some("b1"), Some(&format!("e{i}")), json!({"i": i})).unwrap();
    }
    (dir, path)
}

fn lines(path: &Path) -> Vec<String> {
    fs::read_to_string(path).unwrap().lines().map(str::to_string).collect()
}

fn bad(data: &str) -> BadLine {
    verify_bytes(data.as_bytes()).expect_err("verify should fail")
}

#[test]
fn appends_chain_and_match_the_documented_hash() {
    let (_d, path) = log_with(0);
    let mut log = AuditLog::open(&path).unwrap();
    let r1 = log.append(events::SUBMITTED, "uid:1000", Some("b1"), None, json!({"entries": 2})).unwrap();
    let r2 = log.append(events::APPROVED, "token:ab12", Some("b1"), Some("e1"), json!({"é": "x\ny"})).unwrap();
    assert_eq!((r1.seq, r2.seq), (1, 2));
    assert_eq!(r1.prev, GENESIS);
    assert_eq!(r2.prev, r1.hash);
    assert_eq!(r1.ts.len(), 24);
    assert_eq!(fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);

    // The documented definition, recomputed by hand for each line.
    let mut prev = GENESIS.to_string();
    for (i, line) in lines(&path).iter().enumerate() {
        let mut v: Value = serde_json::from_str(line).unwrap();
        assert_eq!(canonical_json(&v).unwrap(), *line, "lines are canonical JSON");
        let hash = v.as_object_mut().unwrap().remove("hash").unwrap();
        assert_eq!(v["seq"], json!(i + 1));
        assert_eq!(v["prev"], json!(prev));
        let want = Sha256::digest(format!("{prev}{}", canonical_json(&v).unwrap()));
        let want: String = want.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hash, json!(want));
        prev = want;
    }
    assert!(lines(&path)[0].starts_with(
        r#"{"actor":"uid:1000","batch":"b1","details":{"entries":2},"entry":null,"event":"submitted","hash":""#
    ));

    // A second writer continues the same chain.
    drop(log);
    let r3 = AuditLog::open(&path).unwrap().append(events::STARTED, "uid:0", Some("b1"), None, json!({})).unwrap();
    assert_eq!((r3.seq, r3.prev), (3, r2.hash.clone()));
    let report = audit::verify(&path).unwrap();
    assert_eq!((report.lines, report.head), (3, r3.hash));
}

#[test]
fn every_kind_of_tampering_names_its_line() {
    let (_d, path) = log_with(12);
    let good = lines(&path);
    let join = |ls: &[String]| ls.iter().map(|l| format!("{l}\n")).collect::<String>();
    assert_eq!(verify_bytes(join(&good).as_bytes()).unwrap().lines, 12);

    let mut edited = good.clone();
    edited[6] = edited[6].replace("\"i\":7", "\"i\":8");
    let b = bad(&join(&edited));
    assert_eq!(b.line, 7);
    assert!(b.why.contains("hash mismatch"), "{b:?}");

    // Edited and its own hash recomputed: the next line's prev no longer matches.
    let mut v: Value = serde_json::from_str(&edited[6]).unwrap();
    let obj = v.as_object_mut().unwrap();
    obj.remove("hash");
    let prev = v["prev"].as_str().unwrap().to_string();
    let h = audit::chain_hash(&prev, &v).unwrap();
    v["hash"] = json!(h);
    edited[6] = canonical_json(&v).unwrap();
    let b = bad(&join(&edited));
    assert_eq!(b.line, 8, "{b:?}");
    assert!(b.why.contains("prev"), "{b:?}");

    let mut deleted = good.clone();
    deleted.remove(4);
    assert_eq!(bad(&join(&deleted)).line, 5);
    let mut first_deleted = good.clone();
    first_deleted.remove(0);
    assert_eq!(bad(&join(&first_deleted)).line, 1);

    let mut swapped = good.clone();
    swapped.swap(7, 8);
    let b = bad(&join(&swapped));
    assert_eq!(b.line, 8);
    assert!(b.why.contains("seq 9"), "{b:?}");

    let mut duplicated = good.clone();
    duplicated.insert(3, good[2].clone());
    assert_eq!(bad(&join(&duplicated)).line, 4);

    let all = join(&good);
    let cut = all.len() - good[11].len() / 2;
    let b = bad(&all[..cut]);
    assert_eq!(b.line, 12);
    assert!(b.why.contains("incomplete last line"), "{b:?}");
    let b = bad(&all[..all.len() - 1]);
    assert_eq!(b.line, 12, "a missing final newline alone is reported");
    assert!(b.why.contains("valid JSON"), "{b:?}");

    assert_eq!(bad(&format!("{all}garbage\n")).line, 13);
    assert_eq!(bad(&format!("{all}\n")).line, 13);
    assert_eq!(bad(&format!("{all}[1,2]\n")).line, 13);
    let mut reformatted = good.clone();
    reformatted[2] = reformatted[2].replacen(",", ", ", 1);
    assert!(bad(&join(&reformatted)).why.contains("canonical"));
    let mut dup_key = good.clone();
    dup_key[1] = dup_key[1].replacen("{", r#"{"event":"rejected","#, 1);
    assert_eq!(bad(&join(&dup_key)).line, 2);
    let mut float = good.clone();
    float[0] = float[0].replace("\"i\":1", "\"i\":1.0");
    assert_eq!(bad(&join(&float)).line, 1);
    let mut bytes = all.clone().into_bytes();
    bytes.extend_from_slice(b"\xff\xfe\n");
    assert_eq!(verify_bytes(&bytes).unwrap_err().line, 13);
}

#[test]
fn hostile_bytes_never_panic() {
    let (_d, path) = log_with(3);
    let good = fs::read(&path).unwrap();
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    for round in 0..2000 {
        let mut data = good.clone();
        for _ in 0..(round % 7 + 1) {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let at = (seed as usize) % data.len();
            data[at] = (seed >> 32) as u8;
        }
        let _ = verify_bytes(&data);
    }
    let deep = "[".repeat(10_000) + &"]".repeat(10_000) + "\n";
    assert_eq!(verify_bytes(deep.as_bytes()).unwrap_err().line, 1);
    let long = "x".repeat(audit::MAX_LINE + 10) + "\n";
    assert!(verify_bytes(long.as_bytes()).unwrap_err().why.contains("longer"));
}

#[test]
fn bad_arguments_change_nothing() {
    let (_d, path) = log_with(2);
    let before = fs::read(&path).unwrap();
    let mut log = AuditLog::open(&path).unwrap();
    for (event, actor, details) in [
        ("Approved", "uid:1", json!({})),
        ("", "uid:1", json!({})),
        ("approved", "", json!({})),
        ("approved", "uid:1\n", json!({})),
        ("approved", "uid:1", json!([1])),
        ("approved", "uid:1", json!({"ratio": 0.5})),
        ("approved", "uid:1", json!({"big": "x".repeat(audit::MAX_LINE)})),
    ] {
        let err = log.append(event, actor, None, None, details).unwrap_err();
        assert!(matches!(err, AuditError::Invalid { .. }), "{err}");
        assert!(err.to_string().contains("audit.jsonl"), "errors name the file: {err}");
    }
    assert_eq!(fs::read(&path).unwrap(), before);
}

#[test]
fn details_are_redacted_before_they_are_written() {
    let (_d, path) = log_with(0);
    let mut log = AuditLog::open(&path).unwrap();
    let r = log
        .append(
            events::SUBMITTED,
            "uid:1",
            None,
            None,
            json!({"cmd": "mysql -phunter2 db", "env": {"API_TOKEN": "t0k"}}),
        )
        .unwrap();
    assert_eq!(r.details, json!({"cmd": "mysql -p*** db", "env": {"API_TOKEN": "***"}}));
    let text = fs::read_to_string(&path).unwrap();
    assert!(!text.contains("hunter2") && !text.contains("t0k"));
}

#[test]
fn a_torn_tail_stops_appends_until_recovered() {
    let (_d, path) = log_with(5);
    let full = fs::read(&path).unwrap();
    let cut = full.len() - 40;
    fs::write(&path, &full[..cut]).unwrap();
    let err = AuditLog::open(&path).unwrap_err();
    assert!(matches!(err, AuditError::Damaged { line: 5, .. }), "{err}");
    assert!(matches!(audit::verify(&path), Err(VerifyError::Bad(BadLine { line: 5, .. }))));

    let rec = recover(&path, "uid:0").unwrap();
    assert_eq!(rec.record.seq, 5);
    assert_eq!(rec.record.event, events::RECOVERED);
    assert_eq!(rec.record.details["torn_line"], 5);
    let saved = fs::read(&rec.saved_to).unwrap();
    assert_eq!(saved.len() as u64, rec.torn_bytes);
    assert!(full[..cut].ends_with(&saved));
    assert_eq!(audit::verify(&path).unwrap().lines, 5);
    AuditLog::open(&path).unwrap().append(events::STARTED, "uid:0", None, None, json!({})).unwrap();
    assert_eq!(audit::verify(&path).unwrap().lines, 6);
    assert!(matches!(recover(&path, "uid:0"), Err(AuditError::Invalid { .. })), "nothing left to recover");

    // A damaged line before the torn one: recover refuses and touches nothing.
    let mut text = fs::read_to_string(&path).unwrap().replace("\"i\":2", "\"i\":3");
    text.push_str("{\"seq\":");
    let text = text.replace(&lines(&path)[5], "not json");
    fs::write(&path, &text).unwrap();
    assert!(recover(&path, "uid:0").is_err());
    assert_eq!(fs::read_to_string(&path).unwrap(), text);
}

#[test]
fn tail_returns_the_last_records() {
    let (_d, path) = log_with(30);
    let t = audit::tail(&path, 3).unwrap();
    assert_eq!(t.iter().map(|r| r.seq).collect::<Vec<_>>(), vec![28, 29, 30]);
    assert_eq!(audit::tail(&path, 100).unwrap().len(), 30);
    assert!(audit::tail(&path, 0).unwrap().is_empty());
    assert!(audit::tail(&path.with_file_name("nope"), 3).unwrap_err().is_not_found());
    // A missing log is not an empty one: nothing was verified.
    match audit::verify(&path.with_file_name("nope")) {
        Err(audit::VerifyError::Io(e)) => assert!(e.is_not_found(), "{e}"),
        other => panic!("verify of a missing log: {other:?}"),
    }
    let mut text = fs::read_to_string(&path).unwrap();
    text.truncate(text.len() - 10);
    fs::write(&path, text).unwrap();
    assert!(matches!(audit::tail(&path, 2), Err(AuditError::Damaged { line: 30, .. })));
}

#[test]
fn refuses_symlinks_and_directories() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("elsewhere");
    fs::write(&target, "").unwrap();
    std::os::unix::fs::symlink(&target, dir.path().join("audit.jsonl")).unwrap();
    assert!(AuditLog::open(dir.path().join("audit.jsonl")).is_err());
    let err = AuditLog::open(dir.path()).unwrap_err();
    assert!(err.to_string().contains("open"), "{err}");
}

#[test]
fn concurrent_writers_keep_one_chain() {
    let (_d, path) = log_with(0);
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let path = path.clone();
            std::thread::spawn(move || {
                let mut log = AuditLog::open(&path).unwrap();
                for i in 0..50 {
                    log.append(events::ENTRY_FINISHED, &format!("uid:{t}"), Some("b"), None, json!({"i": i})).unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(audit::verify(&path).unwrap().lines, 200);
}
