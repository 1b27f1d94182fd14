//! `cloche policy check|show` as a user runs them. No root and no world:
//! command lines are only classified, never run.

use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;

fn cloche(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_cloche")).args(args).output().expect("run cloche")
}

fn describe(o: &Output) -> String {
    format!(
        "exit {:?}\n--- stdout\n{}--- stderr\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn check_json(args: &[&str]) -> Value {
    let mut all = vec!["policy", "check", "--json"];
    all.extend_from_slice(args);
    let o = cloche(&all);
    assert_eq!(o.status.code(), Some(0), "{}", describe(&o));
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", describe(&o)))
}

#[test]
fn check_prints_decision_rule_reason_risk_and_commands() {
    for (cmd, effect, rule) in
        [("ls -la", "allow", "inspect"), ("npm install", "review", "pkg-install"), ("sudo rm -rf /", "deny", "rm-root")]
    {
        let o = cloche(&["policy", "check", cmd]);
        // a query: exit 0 whatever the effect
        assert_eq!(o.status.code(), Some(0), "{cmd}: {}", describe(&o));
        let out = String::from_utf8_lossy(&o.stdout);
        let first = out.lines().next().unwrap_or("");
        assert!(first.starts_with(effect) && first.contains(rule) && first.contains("risk"), "{cmd}: {out}");
        assert!(out.contains("reason:") && out.contains("risks:") && out.contains("commands:"), "{cmd}: {out}");
        assert!(o.stderr.is_empty(), "{cmd}: {}", describe(&o));
    }
    let o = cloche(&["policy", "check", "sudo rm -rf / > /dev/null"]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("rm -rf / >/dev/null") && out.contains("(via sudo)"), "{out}");
}

#[test]
fn check_json_has_the_documented_fields() {
    let v = check_json(&["bash -c \"rm -rf / 2>&1\" && X=1 ls"]);
    assert_eq!(v["effect"], "deny");
    assert_eq!(v["rule"], "rm-root");
    assert!(v["reason"].as_str().is_some_and(|r| !r.is_empty()));
    assert_eq!(v["risk"], 100);
    assert_eq!(v["policy"], "builtin");
    for cat in ["privilege", "destruction", "network", "system"] {
        assert!(["low", "medium", "high"].contains(&v["risks"][cat].as_str().unwrap_or("")), "{cat}: {v}");
    }
    assert_eq!(v["risks"]["destruction"], "high");
    let cmds = v["commands"].as_array().expect("commands");
    let argvs: Vec<Value> = cmds.iter().map(|c| c["argv"].clone()).collect();
    assert_eq!(
        argvs,
        [
            serde_json::json!(["bash", "-c", "rm -rf / 2>&1"]),
            serde_json::json!(["rm", "-rf", "/"]),
            serde_json::json!(["ls"])
        ]
    );
    assert_eq!(cmds[1]["via"], serde_json::json!(["bash -c"]));
    assert_eq!(cmds[1]["redirects"], serde_json::json!([{"fd": 2, "op": ">&", "target": "1"}]));
    assert_eq!(cmds[2]["assigns"], serde_json::json!(["X=1"]));
    for c in cmds {
        for key in ["argv", "redirects", "effect", "rule", "reason", "risk"] {
            assert!(c.get(key).is_some(), "{key} missing in {c}");
        }
    }
}

#[test]
fn obfuscations_come_out_the_same_through_the_cli() {
    for cmd in ["r\\m -rf /", "'rm' -rf /", "env rm -rf /", "sh -c 'rm -rf ~'", "echo `rm -rf /`"] {
        assert_eq!(check_json(&[cmd])["effect"], "deny", "{cmd}");
    }
    for cmd in ["$(echo rm) -rf /", "eval \"$X\"", "ls 'unbalanced"] {
        let v = check_json(&[cmd]);
        assert_eq!((v["effect"].as_str(), v["rule"].as_str()), (Some("review"), Some("unresolved")), "{cmd}: {v}");
    }
    // a command line that starts with '-' after `--`
    assert_eq!(check_json(&["--", "-x"])["rule"], "unknown");
}

#[test]
fn usage_errors_exit_2_with_one_line() {
    for args in [
        &["policy", "check"][..],
        &["policy", "check", "--bogus", "ls"],
        &["policy", "check", "ls", "extra"],
        &["policy", "show", "extra"],
        &["policy", "check", "--policy"],
    ] {
        let o = cloche(args);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", describe(&o));
        assert_eq!(err.lines().count(), 1, "{args:?}: {}", describe(&o));
        assert!(err.starts_with("cloche: ") && o.stdout.is_empty(), "{args:?}: {}", describe(&o));
    }
    let o = cloche(&["policy", "check", "--help"]);
    assert_eq!(o.status.code(), Some(0), "{}", describe(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("--json"), "{}", describe(&o));
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p.display().to_string()
}

const DEFAULT: &str = include_str!("../policies/default.toml");

#[test]
fn a_bad_policy_file_is_one_line_and_exit_125() {
    let dir = tempfile::tempdir().unwrap();
    let wrong_example = DEFAULT.replacen("examples = [\"ls -la\",", "examples = [\"rm -rf /\", \"ls -la\",", 1);
    assert_ne!(wrong_example, DEFAULT, "the inspect rule's examples moved");
    let unknown_key = DEFAULT.replacen("name = \"inspect\"", "name = \"inspect\"\nefect = \"allow\"", 1);
    let cases = [
        (write(dir.path(), "wrong-example.toml", &wrong_example), vec!["rule inspect", "rm -rf /", "line "]),
        (write(dir.path(), "unknown-key.toml", &unknown_key), vec!["efect", "line "]),
        (dir.path().join("missing.toml").display().to_string(), vec!["missing.toml"]),
    ];
    for (path, wants) in cases {
        for sub in [&["check", "ls"][..], &["show"]] {
            let mut args = vec!["policy", sub[0], "--policy", &path];
            args.extend_from_slice(&sub[1..]);
            let o = cloche(&args);
            let err = String::from_utf8_lossy(&o.stderr);
            assert_eq!(o.status.code(), Some(125), "{path}: {}", describe(&o));
            assert_eq!(err.lines().count(), 1, "{path}: {}", describe(&o));
            assert!(o.stdout.is_empty(), "{path}: {}", describe(&o));
            for w in &wants {
                assert!(err.contains(w), "{path}: want {w:?} in {err}");
            }
        }
    }
}

#[test]
fn a_custom_policy_is_used_and_shown() {
    let dir = tempfile::tempdir().unwrap();
    let base = &DEFAULT[..DEFAULT.find("\n[commands]").unwrap()];
    let custom = format!(
        "{base}\n[commands]\nunknown = {{ effect = \"deny\", risk = 70, reason = \"only make here\" }}\n\n\
         [[commands.rule]]\nname = \"make\"\neffect = \"allow\"\nrisk = 0\nreason = \"builds\"\n\
         programs = [\"make\"]\nexamples = [\"make all\"]\ncounterexamples = [\"ls\"]\n"
    );
    let path = write(dir.path(), "custom.toml", &custom);
    let v = check_json(&["--policy", &path, "make all"]);
    assert_eq!((v["effect"].as_str(), v["rule"].as_str()), (Some("allow"), Some("make")));
    assert_eq!(v["policy"].as_str(), Some(path.as_str()));
    let v = check_json(&["--policy", &path, "ls"]);
    assert_eq!(
        (v["effect"].as_str(), v["rule"].as_str(), v["risk"].as_u64()),
        (Some("deny"), Some("unknown"), Some(70))
    );

    let o = cloche(&["policy", "show", "--policy", &path]);
    assert_eq!(o.status.code(), Some(0), "{}", describe(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("(1 command rules)") && out.contains("make") && out.contains("only make here"), "{out}");
    let o = cloche(&["policy", "show", "--policy", &path, "--json"]);
    let v: Value = serde_json::from_slice(&o.stdout).expect("json");
    assert_eq!(v["rules"][0]["name"], "make");
    assert_eq!(v["rules"][0]["programs"], serde_json::json!(["make"]));
    assert_eq!(v["unknown"]["effect"], "deny");
}

#[test]
fn show_lists_every_builtin_rule() {
    let o = cloche(&["policy", "show", "--json"]);
    assert_eq!(o.status.code(), Some(0), "{}", describe(&o));
    let v: Value = serde_json::from_slice(&o.stdout).expect("json");
    let rules = v["rules"].as_array().expect("rules");
    assert!(rules.len() >= 60, "{} rules", rules.len());
    for r in rules {
        for key in ["name", "effect", "reason", "risk", "risks", "examples"] {
            assert!(r.get(key).is_some(), "{key} missing in {r}");
        }
    }
    let o = cloche(&["policy", "show"]);
    let out = String::from_utf8_lossy(&o.stdout);
    for r in rules {
        assert!(out.contains(r["name"].as_str().unwrap()), "{}", r["name"]);
    }
}
