//! The five flows at the state-machine level, with the audit chain checked after each.

mod common;

use std::time::Duration;

use cloche_broker::{BatchState, BrokerError, Effect, EntryState, ListFilter, ManualClock};
use common::*;

const SAFE: &str =
    r#"{"agent": "a1", "project": "/srv/app", "entries": [{"command": "ls ~"}, {"command": "cat README"}]}"#;
const MIXED: &str = r#"{"agent": "a1", "project": "/srv/app", "entries": [
    {"command": "brew install x"}, {"command": "rm -rf ~/important"}, {"command": "ls ~"}]}"#;

#[test]
fn safe_batch_is_auto_approved_with_autonomy() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let mut b = open(dir.path(), &clock);
    let token = b.enable_autonomy("/srv/app/", "uid:1000").unwrap();
    assert_eq!(token.len(), 64);
    let fp = b.autonomy("/srv/app").unwrap().unwrap();
    assert_eq!(fp.len(), 12);

    // Without a token: pending, even though everything is allowed.
    let v = b.submit(&batch(SAFE), "agent:a1", None).unwrap();
    assert_eq!((v.state, v.decision), (BatchState::Pending, Effect::Allow));

    let v = b.submit(&batch(SAFE), "agent:a1", Some(&token)).unwrap();
    assert_eq!(v.state, BatchState::Approved);
    assert_eq!(v.approved_by.as_deref(), Some(format!("token:{fp}").as_str()));
    let approved = records(dir.path()).into_iter().find(|r| r.event == "approved").unwrap();
    assert_eq!(approved.actor, format!("token:{fp}"));
    assert_eq!(approved.batch.as_deref(), Some(v.id.as_str()));

    // A wrong token is refused and changes nothing.
    let lines = verified(dir.path());
    let e = b.submit(&batch(SAFE), "agent:a1", Some(&"0".repeat(64))).unwrap_err();
    assert!(matches!(e, BrokerError::BadToken(_)), "{e}");
    assert_eq!(verified(dir.path()), lines);
    assert_eq!(b.list(&ListFilter::default()).unwrap().len(), 2);

    // A token never approves a review-level batch.
    let v = b.submit(&batch(MIXED), "agent:a1", Some(&token)).unwrap();
    assert_eq!(v.state, BatchState::Pending);

    // Run it to the end.
    let runnable = b.start_run(&v_id(&b, BatchState::Approved)).unwrap();
    let id = v_id(&b, BatchState::Running);
    for e in &runnable {
        b.entry_started(&id, &e.id).unwrap();
        assert_eq!(b.entry_finished(&id, &e.id, &ok_result()).unwrap(), EntryState::Succeeded);
    }
    b.finish_run(&id, BatchState::Completed, None).unwrap();
    let v = b.get(&id).unwrap();
    assert_eq!(v.state, BatchState::Completed);
    assert!(v.entries.iter().all(|e| e.state == EntryState::Succeeded && e.exit_code == Some(0)));

    // Disabled: the token no longer works.
    assert!(b.disable_autonomy("/srv/app", "uid:1000").unwrap());
    assert!(matches!(b.submit(&batch(SAFE), "agent:a1", Some(&token)), Err(BrokerError::AutonomyOff(_))));
    verified(dir.path());
    drop(b);

    // The token itself is nowhere on disk.
    for name in ["audit.jsonl", "broker.db", "broker.db-wal"] {
        if let Ok(bytes) = std::fs::read(dir.path().join(name)) {
            assert!(!bytes.windows(token.len()).any(|w| w == token.as_bytes()), "token found in {name}");
        }
    }
}

fn v_id(b: &cloche_broker::Broker, state: BatchState) -> String {
    let list = b.list(&ListFilter { state: Some(state), ..Default::default() }).unwrap();
    assert_eq!(list.len(), 1, "{list:?}");
    list[0].id.clone()
}

#[test]
fn mixed_batch_needs_a_reviewer_and_the_denied_entry_is_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let mut b = open(dir.path(), &clock);
    let token = b.enable_autonomy("/srv/app", "uid:0").unwrap();
    let v = b.submit(&batch(MIXED), "agent:a1", Some(&token)).unwrap();
    assert_eq!((v.state, v.decision), (BatchState::Pending, Effect::Deny));
    let effects: Vec<_> = v.entries.iter().map(|e| e.decision.effect).collect();
    assert_eq!(effects, [Effect::Review, Effect::Deny, Effect::Allow]);
    let (brew, rm, ls) = (v.entries[0].id.clone(), v.entries[1].id.clone(), v.entries[2].id.clone());
    let json = serde_json::to_value(&v).unwrap();
    assert_eq!(json["entries"][1]["decision"]["rule"], "rm-recursive-home");
    assert_eq!(json["entries"][1]["decision"]["effect"], "deny");
    assert_eq!(json["entries"][1]["decision"]["risk"], 95);

    // Explicitly approving the denied entry is an error, and changes nothing.
    let lines = verified(dir.path());
    let e = b.approve(&v.id, Some(vec![brew.clone(), rm.clone()]), "uid:1000").unwrap_err();
    assert!(matches!(e, BrokerError::DeniedEntry { .. }), "{e}");
    let e = b.approve(&v.id, Some(vec!["nope".into()]), "uid:1000").unwrap_err();
    assert!(matches!(e, BrokerError::NoSuchEntry { .. }), "{e}");
    assert_eq!(verified(dir.path()), lines);
    assert_eq!(b.get(&v.id).unwrap().state, BatchState::Pending);

    let v = b.approve(&v.id, None, "uid:1000").unwrap();
    assert_eq!(v.state, BatchState::Approved);
    assert_eq!(v.approved_by.as_deref(), Some("uid:1000"));
    let states: Vec<_> = v.entries.iter().map(|e| e.state).collect();
    assert_eq!(states, [EntryState::Pending, EntryState::Skipped, EntryState::Pending]);
    assert_eq!(v.entries[1].note.as_deref(), Some("denied: rm-recursive-home"));

    let rec = records(dir.path());
    let approved = rec.iter().find(|r| r.event == "approved").unwrap();
    assert_eq!(approved.details["entries"], serde_json::json!([brew, ls]));
    assert_eq!(approved.details["skipped"][0]["entry"], rm.as_str());
    let decided: Vec<_> = rec.iter().filter(|r| r.event == "decided").collect();
    assert_eq!(decided.len(), 3);
    assert_eq!(decided[1].details["effect"], "deny");

    // The denied entry is not among those run.
    let runnable = b.start_run(&v.id).unwrap();
    let ids: Vec<_> = runnable.iter().map(|e| e.id.clone()).collect();
    assert_eq!(ids, [brew.clone(), ls.clone()]);
    assert_eq!(runnable[0].cwd, "/srv/app");
    // A deny entry can never be started.
    assert!(matches!(b.entry_started(&v.id, &rm), Err(BrokerError::WrongEntryState { .. })));
    verified(dir.path());
}

#[test]
fn partial_approval_and_reject() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let mut b = open(dir.path(), &clock);
    let v = b.submit(&batch(MIXED), "uid:1001", None).unwrap();
    let ls = v.entries[2].id.clone();
    let v = b.approve(&v.id, Some(vec![ls.clone()]), "uid:1000").unwrap();
    assert_eq!(v.entries[0].state, EntryState::Skipped);
    assert_eq!(v.entries[0].note.as_deref(), Some("not approved"));
    assert_eq!(v.entries[2].state, EntryState::Pending);
    // Approving twice is a state error.
    assert!(matches!(b.approve(&v.id, None, "uid:1000"), Err(BrokerError::WrongState { .. })));

    let v = b.submit(&batch(MIXED), "uid:1001", None).unwrap();
    let v = b.reject(&v.id, "uid:1000", Some("no brew here")).unwrap();
    assert_eq!(v.state, BatchState::Rejected);
    assert!(v.entries.iter().all(|e| e.state == EntryState::Skipped));
    assert!(records(dir.path()).iter().any(|r| r.event == "rejected" && r.details["reason"] == "no brew here"));

    // All entries denied: nothing to approve.
    let v = b.submit(&batch(r#"{"project": "/p", "entries": [{"command": "rm -rf /"}]}"#), "uid:1001", None).unwrap();
    assert!(matches!(b.approve(&v.id, None, "uid:1000"), Err(BrokerError::NothingToApprove(_))));
    verified(dir.path());
}

#[test]
fn approval_expires() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let mut b = open(dir.path(), &clock);
    let v = b.submit(&batch(MIXED), "agent:a1", None).unwrap();
    b.approve(&v.id, None, "uid:1000").unwrap();
    clock.advance(Duration::from_secs(299));
    let v2 = b.submit(&batch(MIXED), "agent:a1", None).unwrap();
    b.approve(&v2.id, None, "uid:1000").unwrap();
    clock.advance(Duration::from_secs(1));

    let e = b.claim_for_run(&v.id).unwrap_err();
    assert!(matches!(e, BrokerError::Expired(_)), "{e}");
    let view = b.get(&v.id).unwrap();
    assert_eq!(view.state, BatchState::Expired);
    assert!(view.entries.iter().all(|e| e.state == EntryState::Skipped));
    assert!(records(dir.path()).iter().any(|r| r.event == "expired" && r.batch.as_deref() == Some(v.id.as_str())));
    // Still expired, and not runnable.
    assert!(matches!(b.start_run(&v.id), Err(BrokerError::WrongState { .. })));

    // The second approval is still fresh; the sweep expires it later.
    assert!(b.expire_stale().unwrap().is_empty());
    clock.advance(Duration::from_secs(299));
    assert_eq!(b.expire_stale().unwrap(), vec![v2.id.clone()]);
    assert_eq!(b.state(&v2.id).unwrap(), BatchState::Expired);
    verified(dir.path());
}

#[test]
fn cancel_a_running_batch() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let mut b = open(dir.path(), &clock);
    let json = r#"{"project": "/p", "entries": [{"command": "a"}, {"command": "b"}, {"command": "c"}]}"#;
    let v = b.submit(&batch(json), "agent:a1", None).unwrap();
    b.approve(&v.id, None, "uid:1000").unwrap();
    let run = b.start_run(&v.id).unwrap();
    b.entry_started(&v.id, &run[0].id).unwrap();
    b.entry_finished(&v.id, &run[0].id, &ok_result()).unwrap();
    b.entry_started(&v.id, &run[1].id).unwrap();
    // Only one entry at a time.
    assert!(b.entry_started(&v.id, &run[2].id).is_err());

    let stopped = b.cancel(&v.id, "uid:1000").unwrap();
    assert_eq!(stopped, vec![run[1].id.clone()]);
    let view = b.get(&v.id).unwrap();
    assert_eq!(view.state, BatchState::Cancelled);
    let states: Vec<_> = view.entries.iter().map(|e| e.state).collect();
    assert_eq!(states, [EntryState::Succeeded, EntryState::Cancelled, EntryState::Skipped]);
    // The engine reporting late is refused; cancelling twice too.
    assert!(matches!(b.entry_finished(&v.id, &run[1].id, &ok_result()), Err(BrokerError::WrongState { .. })));
    assert!(matches!(b.cancel(&v.id, "uid:1000"), Err(BrokerError::WrongState { .. })));
    let rec = records(dir.path());
    let c = rec.iter().find(|r| r.event == "cancelled").unwrap();
    assert_eq!(c.actor, "uid:1000");
    assert_eq!(c.details["from"], "running");

    // Cancel before the run.
    let v = b.submit(&batch(json), "agent:a1", None).unwrap();
    assert!(b.cancel(&v.id, "agent:a1").unwrap().is_empty());
    assert_eq!(b.state(&v.id).unwrap(), BatchState::Cancelled);
    verified(dir.path());
}

#[test]
fn stop_on_failure() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let mut b = open(dir.path(), &clock);
    for stop in [true, false] {
        let json = format!(
            r#"{{"project": "/p", "stop_on_failure": {stop}, "entries": [{{"command": "a"}}, {{"command": "b"}}]}}"#
        );
        let v = b.submit(&batch(&json), "agent:a1", None).unwrap();
        b.approve(&v.id, None, "uid:1000").unwrap();
        let run = b.start_run(&v.id).unwrap();
        b.entry_started(&v.id, &run[0].id).unwrap();
        assert_eq!(b.entry_finished(&v.id, &run[0].id, &failed_result(1)).unwrap(), EntryState::Failed);
        let second = b.get(&v.id).unwrap().entries[1].state;
        assert_eq!(second, if stop { EntryState::Skipped } else { EntryState::Pending });
        if !stop {
            b.entry_started(&v.id, &run[1].id).unwrap();
            let timed_out = cloche_broker::EntryResult { timed_out: true, exit_code: 124, ..ok_result() };
            assert_eq!(b.entry_finished(&v.id, &run[1].id, &timed_out).unwrap(), EntryState::TimedOut);
        }
        b.finish_run(&v.id, BatchState::Failed, Some("entry failed")).unwrap();
        let view = b.get(&v.id).unwrap();
        assert_eq!((view.state, view.reason.as_deref()), (BatchState::Failed, Some("entry failed")));
        assert_eq!(view.entries[0].exit_code, Some(1));
    }
    verified(dir.path());
}

#[test]
fn an_agent_cannot_approve_its_own_review_batch() {
    let dir = tempfile::tempdir().unwrap();
    let clock = ManualClock::new(T0);
    let mut b = open(dir.path(), &clock);
    let v = b.submit(&batch(MIXED), "uid:1001", None).unwrap();
    let lines = verified(dir.path());
    for actor in ["uid:1001", "a1", "agent:a1"] {
        let e = b.approve(&v.id, None, actor).unwrap_err();
        assert!(matches!(e, BrokerError::SelfApproval { .. }), "{actor}: {e}");
    }
    let e = b.approve(&v.id, None, "token:0123456789ab").unwrap_err();
    assert!(matches!(e, BrokerError::TokenApprover { .. }), "{e}");
    assert_eq!(verified(dir.path()), lines);
    assert_eq!(b.state(&v.id).unwrap(), BatchState::Pending);
    b.approve(&v.id, None, "uid:1000").unwrap();

    // An allow-only batch may be approved by whoever submitted it.
    let v = b.submit(&batch(SAFE), "uid:1001", None).unwrap();
    assert_eq!(b.approve(&v.id, None, "uid:1001").unwrap().state, BatchState::Approved);
    verified(dir.path());
}
