//! The default policy against a table of command lines: what an agent runs
//! every day, what it must never run, and the ways of hiding the latter.
//! These strings are only ever parsed, never executed.

use cloche_policy::{Effect, Policy};

#[path = "classify_table/base.rs"]
mod base;
#[path = "classify_table/unseen.rs"]
mod unseen;
use base::{OBFUSCATED, TABLE};
use unseen::UNSEEN;

fn parse_effect(s: &str) -> Effect {
    match s {
        "allow" => Effect::Allow,
        "review" => Effect::Review,
        "deny" => Effect::Deny,
        _ => panic!("bad effect {s}"),
    }
}

#[test]
fn table() {
    assert!(TABLE.len() >= 150, "{} entries", TABLE.len());
    assert!(UNSEEN.len() >= 250, "{} entries", UNSEEN.len());
    let p = Policy::builtin();
    let mut wrong = Vec::new();
    for &(cmd, effect, rule) in TABLE.iter().chain(UNSEEN) {
        let d = p.classify(cmd);
        if d.effect != parse_effect(effect) || (!rule.is_empty() && d.rule != rule) {
            wrong.push(format!("{cmd:?}: want {effect} {rule}, got {} {} ({})", d.effect, d.rule, d.reason));
        }
    }
    assert!(wrong.is_empty(), "{} of {} wrong:\n{}", wrong.len(), TABLE.len() + UNSEEN.len(), wrong.join("\n"));
}

#[test]
fn nothing_obfuscated_is_allowed() {
    let p = Policy::builtin();
    let mut wrong = Vec::new();
    for &(cmd, effect) in OBFUSCATED {
        let d = p.classify(cmd);
        if d.effect == Effect::Allow || d.effect != parse_effect(effect) {
            wrong.push(format!("{cmd:?}: want {effect}, got {} {} ({})", d.effect, d.rule, d.reason));
        }
    }
    assert!(wrong.is_empty(), "{} of {} wrong:\n{}", wrong.len(), OBFUSCATED.len(), wrong.join("\n"));
}

#[test]
fn decision_lists_the_parsed_commands() {
    let p = Policy::builtin();
    let d = p.classify("sudo -u root bash -c 'rm -rf / > /dev/null' && X=1 ls 2>&1");
    let argvs: Vec<Vec<&str>> = d.commands.iter().map(|c| c.argv.iter().map(String::as_str).collect()).collect();
    assert_eq!(
        argvs,
        vec![
            vec!["sudo", "-u", "root"],
            vec!["bash", "-c", "rm -rf / > /dev/null"],
            vec!["rm", "-rf", "/"],
            vec!["ls"]
        ]
    );
    assert_eq!(d.commands[1].via, ["sudo"]);
    assert_eq!(d.commands[2].via, ["sudo", "bash -c"]);
    assert_eq!(d.commands[2].redirects[0].target, "/dev/null");
    assert_eq!(d.commands[3].assigns, ["X=1"]);
    assert_eq!((d.commands[3].redirects[0].fd, d.commands[3].redirects[0].op), (Some(2), ">&"));
    assert_eq!((d.effect, d.rule.as_str(), d.risk), (Effect::Deny, "rm-root", 100));
    assert_eq!(d.commands[0].rule, "privilege");
    assert_eq!(d.commands[3].effect, Effect::Allow);
    // risk categories are the highest of every matched rule
    assert_eq!(d.risks.privilege, cloche_policy::Level::High);
    assert_eq!(d.risks.destruction, cloche_policy::Level::High);
    assert_eq!(d.risks.network, cloche_policy::Level::Low);
}

#[test]
fn strictest_wins_and_risk_is_the_highest() {
    let p = Policy::builtin();
    let d = p.classify("ls; npm install; cat ~/.ssh/id_rsa; git status");
    assert_eq!((d.effect, d.rule.as_str()), (Effect::Deny, "secrets"));
    assert_eq!(d.commands.len(), 4);
    let d = p.classify("ls; npm install; git push");
    assert_eq!((d.effect, d.rule.as_str(), d.risk), (Effect::Review, "pkg-install", 40));
}

#[test]
fn the_default_policys_examples_hold() {
    // from_toml checks every example (builtin() trusts this test).
    let p = Policy::from_toml(cloche_policy::DEFAULT_POLICY, "copy", None).expect("examples hold");
    for r in p.commands.rules() {
        assert!(!r.examples.is_empty(), "{}: no example", r.name);
        assert!(!r.counterexamples.is_empty(), "{}: no counterexample", r.name);
        for e in &r.examples {
            assert_eq!(p.classify(e).rule, r.name, "{e}");
        }
    }
}

#[test]
fn every_default_rule_fires_in_the_table() {
    let p = Policy::builtin();
    let fired: std::collections::HashSet<String> =
        TABLE.iter().chain(UNSEEN).map(|(c, _, _)| p.classify(c).rule).collect();
    let missing: Vec<&str> =
        p.commands.rules().iter().map(|r| r.name.as_str()).filter(|n| !fired.contains(*n)).collect();
    // The few left out are covered by their own examples.
    assert!(missing.len() <= 12, "rules no table entry decides: {missing:?}");
}
