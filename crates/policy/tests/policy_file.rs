//! The `[commands]` section of a policy file: what loads, what is refused,
//! and how a refusal reads (one line, naming the position).

use cloche_policy::{Effect, Policy, DEFAULT_POLICY};

/// The default policy without its command rules.
fn base() -> &'static str {
    &DEFAULT_POLICY[..DEFAULT_POLICY.find("\n[commands]").expect("policies/default.toml has [commands]")]
}

fn with(commands: &str) -> String {
    format!("{}\n{commands}", base())
}

fn load(commands: &str) -> Result<Policy, String> {
    Policy::from_toml(&with(commands), "test.toml", None).map_err(|e| e.to_string())
}

fn err(commands: &str) -> String {
    let Err(e) = load(commands) else { panic!("must be refused:\n{commands}") };
    assert_eq!(e.lines().count(), 1, "one line: {e}");
    e
}

/// The 1-based line of the first occurrence of `needle` in the whole file.
fn line_of(commands: &str, needle: &str) -> usize {
    let text = with(commands);
    text[..text.find(needle).expect(needle)].matches('\n').count() + 1
}

const RULE: &str = r#"
[commands]
unknown = { effect = "review", risk = 25, reason = "not known here" }

[[commands.rule]]
name = "make-only"
effect = "allow"
risk = 0
reason = "make is fine here"
programs = ["make"]
examples = ["make", "make -j4 all"]
counterexamples = ["make && rm -rf /", "cmake ."]
"#;

#[test]
fn a_custom_rule_set_loads_and_classifies() {
    let p = load(RULE).unwrap();
    assert_eq!(p.commands.rules().len(), 1);
    let d = p.classify("make test");
    assert_eq!((d.effect, d.rule.as_str()), (Effect::Allow, "make-only"));
    let d = p.classify("ls");
    assert_eq!(
        (d.effect, d.rule.as_str(), d.risk, d.reason.as_str()),
        (Effect::Review, "unknown", 25, "not known here")
    );
    // the classifier's own checks hold whatever the rules: never allow
    assert_eq!(p.classify("$(echo make)").effect, Effect::Review);
    assert_eq!(p.classify(":(){ :|:& };:").effect, Effect::Deny);
}

#[test]
fn without_a_commands_section_every_command_is_reviewed() {
    let p = Policy::from_toml(base(), "old.toml", None).unwrap();
    assert!(p.commands.rules().is_empty());
    let d = p.classify("ls");
    assert_eq!((d.effect, d.rule.as_str()), (Effect::Review, "unknown"));
    assert_eq!(p.classify("").effect, Effect::Allow);
}

#[test]
fn a_wrong_example_is_a_load_error_naming_the_rule_and_line() {
    let bad = RULE.replace(r#"examples = ["make", "make -j4 all"]"#, r#"examples = ["make", "cmake ."]"#);
    let e = err(&bad);
    assert!(e.contains("rule make-only") && e.contains("\"cmake .\"") && e.contains("unknown"), "{e}");
    assert!(e.contains(&format!("line {}:", line_of(&bad, "examples = [\"make\", \"cmake"))), "{e}");
    assert!(e.starts_with("invalid policy test.toml: "), "{e}");

    let bad =
        RULE.replace(r#"counterexamples = ["make && rm -rf /", "cmake ."]"#, r#"counterexamples = ["make clean"]"#);
    let e = err(&bad);
    assert!(e.contains("rule make-only") && e.contains("counterexample \"make clean\""), "{e}");
    assert!(e.contains(&format!("line {}:", line_of(&bad, "counterexamples ="))), "{e}");
}

/// A run loads its policy file without classifying the rules' examples (it
/// never classifies); every other error still refuses it.
#[test]
fn a_run_loads_a_file_without_checking_its_examples_only() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("p.toml");
    let wrong_example = RULE.replace(r#"examples = ["make", "make -j4 all"]"#, r#"examples = ["make", "cmake ."]"#);
    std::fs::write(&file, with(&wrong_example)).unwrap();
    assert!(Policy::load(&file).is_err(), "a wrong example refuses the file");
    let p = Policy::load_for_run(&file).expect("a run does not check examples");
    assert_eq!(p.classify("make").rule, "make-only", "the rules are the file's");
    std::fs::write(&file, with(&RULE.replace("risk = 0\n", "risk = 0\nprogram = [\"x\"]\n"))).unwrap();
    let e = Policy::load_for_run(&file).expect_err("an unknown key still refuses it").to_string();
    assert!(e.contains("program") && e.contains("line "), "{e}");
}

#[test]
fn unknown_keys_are_errors_with_a_line_number() {
    for (from, to, key) in [
        ("risk = 0\n", "risk = 0\nprogram = [\"x\"]\n", "program"),
        ("programs = [\"make\"]", "programs = [\"make\"]\nunles = []", "unles"),
        ("unknown = { effect", "unknwn = 1\nunknown = { effect", "unknwn"),
        ("reason = \"not known here\" }", "reason = \"not known here\", risks = { privilig = \"high\" } }", "privilig"),
    ] {
        assert!(RULE.contains(from), "{from}");
        let bad = RULE.replacen(from, to, 1);
        let e = err(&bad);
        assert!(e.contains(key) && e.contains("line "), "{key}: {e}");
    }
    let e = err(&RULE.replace("programs = [\"make\"]", "programs = [\"make\"]\nunless = [{ programs = [\"x\"] }]"));
    assert!(e.contains("rule make-only") && e.contains("unless"), "{e}");
}

#[test]
fn bad_rules_are_named() {
    let cases = [
        ("effect = \"allow\"", "effect = \"permit\"", "permit"),
        ("risk = 0\n", "risk = 101\n", "risk"),
        ("name = \"make-only\"", "name = \"Make Only\"", "rule name"),
        ("name = \"make-only\"", "name = \"unknown\"", "reserved"),
        ("reason = \"make is fine here\"", "reason = \" \"", "reason"),
        ("programs = [\"make\"]", "flags_any = [\"r\"]", "must start with '-'"),
        ("programs = [\"make\"]", "args_any = [\"\"]", "empty pattern"),
        ("programs = [\"make\"]", "ignore_case = true", "needs programs or at least one condition"),
        ("examples = [\"make\", \"make -j4 all\"]", "examples = []", "needs at least one example"),
        ("programs = [\"make\"]", "programs = [\"make\"]\nunless = [{}]", "at least one condition"),
        (
            "programs = [\"make\"]",
            "programs = [\"make\"]\nargs_any = [\"/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\"]",
            "too long",
        ),
        ("effect = \"review\", risk = 25", "effect = \"allow\", risk = 25", "commands.unknown.effect: must be review or deny"),
    ];
    for (from, to, want) in cases {
        assert!(RULE.contains(from), "{from}");
        let e = err(&RULE.replacen(from, to, 1));
        assert!(e.contains(want), "{to}: {e}");
        assert!(e.contains("line "), "{to}: {e}");
    }
    let dup = format!("{RULE}\n{}", &RULE[RULE.find("[[commands.rule]]").unwrap()..]);
    let e = err(&dup);
    assert!(e.contains("rule make-only: a rule of this name already exists"), "{e}");
    assert!(
        e.contains(&format!(
            "line {}:",
            with(&dup).rfind("name = \"make-only\"").map(|i| with(&dup)[..i].matches('\n').count() + 1).unwrap()
        )),
        "{e}"
    );
}

#[test]
fn rule_order_does_not_let_allow_shadow_deny() {
    // A broad allow written before a deny cannot win: the strictest does.
    let rules = r#"
[commands]
[[commands.rule]]
name = "all-rm"
effect = "allow"
risk = 0
reason = "too broad"
programs = ["rm"]
examples = ["rm x"]
counterexamples = ["rm -rf /"]

[[commands.rule]]
name = "rm-root"
effect = "deny"
risk = 100
reason = "no"
programs = ["rm"]
flags_all = ["-r|-R|--recursive"]
args_any = ["/"]
examples = ["rm -rf /"]
"#;
    let p = load(rules).unwrap();
    assert_eq!(p.classify("rm -rf /").effect, Effect::Deny);
    assert_eq!(p.classify("rm x").effect, Effect::Allow);
}

#[test]
fn allow_needs_its_conditions_for_sure() {
    let rules = r#"
[commands]
[[commands.rule]]
name = "tmp-rm"
effect = "allow"
risk = 0
reason = "scratch files"
programs = ["rm"]
args_any = ["/tmp/**"]
examples = ["rm /tmp/x/y"]
counterexamples = ["rm $X", "rm /tmp/$X", "rm /etc/x", "rm /tmp/x > $OUT", "rm $X /tmp/a"]
"#;
    let p = load(rules).unwrap();
    // a partly unknown word never satisfies an allow rule
    assert_eq!(p.classify("rm /tmp/$X").effect, Effect::Review);
    let with_dyn = rules.replace("reason = \"scratch files\"", "reason = \"scratch files\"\ndynamic_args = true");
    let e = err(&with_dyn);
    // dynamic_args lets other unknown arguments through (each condition
    // still needs a known word), so this counterexample now fails
    assert!(e.contains("counterexample \"rm $X /tmp/a\""), "{e}");
}

#[test]
fn the_builtin_policy_has_the_rules_the_cli_shows() {
    let p = Policy::builtin();
    assert!(p.commands.rules().len() >= 60);
    let names: Vec<&str> = p.commands.rules().iter().map(|r| r.name.as_str()).collect();
    for n in ["inspect", "git-read", "pkg-install", "build", "rm-root", "pipe-to-shell", "privilege", "secrets"] {
        assert!(names.contains(&n), "{n}");
    }
    assert_eq!(p.commands.unknown().effect, Effect::Review);
    assert_eq!(p.commands.unresolved().effect, Effect::Review);
}
