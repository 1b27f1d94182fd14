use super::*;

fn argvs(src: &str) -> Vec<Vec<String>> {
    parse(src).cmds.iter().map(|c| c.words.iter().map(|w| w.text.clone()).collect()).collect()
}

fn one(src: &str) -> Cmd {
    let s = parse(src);
    assert_eq!(s.cmds.len(), 1, "{src}: {:?}", s.cmds);
    s.cmds.into_iter().next().unwrap()
}

#[test]
fn lists_pipelines_and_groups() {
    let want = |v: &[&[&str]]| v.iter().map(|a| a.iter().map(|s| s.to_string()).collect()).collect::<Vec<Vec<_>>>();
    assert_eq!(argvs("a; b && c || d & e"), want(&[&["a"], &["b"], &["c"], &["d"], &["e"]]));
    assert_eq!(argvs("a | b |& c"), want(&[&["a"], &["b"], &["c"]]));
    assert_eq!(argvs("(a; b) && { c; }"), want(&[&["a"], &["b"], &["c"]]));
    assert_eq!(argvs("a\nb\n\n# comment\nc # trailing"), want(&[&["a"], &["b"], &["c"]]));
    assert_eq!(argvs("if a; then b; elif c; then d; else e; fi"), want(&[&["a"], &["b"], &["c"], &["d"], &["e"]]));
    assert_eq!(argvs("while a; do b; done; until c; do d; done"), want(&[&["a"], &["b"], &["c"], &["d"]]));
    assert_eq!(argvs("for x in 1 2; do echo $x; done"), want(&[&["echo", "$x"]]));
    assert_eq!(argvs("case $x in a|b) c;; *) d;; esac"), want(&[&["c"], &["d"]]));
    assert_eq!(argvs("! a && [[ -f x && y < z ]]"), want(&[&["a"], &["[[", "-f", "x", "&&", "y", "<", "z", "]]"]]));
    assert!(parse("a | b").cmds.iter().all(|c| c.piped));
    assert!(!parse("a; b").cmds.iter().any(|c| c.piped));
    assert!(parse("a &").cmds[0].background);
    for ok in ["a; b", "if a; then b; fi", "case x in y) z;; esac", "{ a; }", "(a)", "f() { a; }"] {
        assert!(parse(ok).errors.is_empty(), "{ok}: {:?}", parse(ok).errors);
    }
}

#[test]
fn quoting_and_escapes() {
    for src in [r"r\m -rf /", "'r'm -rf /", "\"rm\" -rf /", "r''m -rf /", "$'\\x72\\x6d' -rf /", "$'r\\155' -rf /"] {
        let c = one(src);
        assert_eq!(c.words[0].text, "rm", "{src}");
        assert!(c.words[0].literal() && c.words[0].quoted, "{src}");
        assert_eq!(c.words[2].text, "/", "{src}");
    }
    let c = one(r#"echo "a \"b\" \$c" 'd $e' f\ g"#);
    let texts: Vec<&str> = c.words.iter().map(|w| w.text.as_str()).collect();
    assert_eq!(texts, ["echo", "a \"b\" $c", "d $e", "f g"]);
    assert!(c.words.iter().all(Word::literal));
    // line continuation
    assert_eq!(argvs("rm -rf \\\n /"), vec![vec!["rm", "-rf", "/"]]);
}

#[test]
fn expansions_are_marked() {
    let c = one("echo $X ${Y:-z} $((1+2)) * a?c [ab]x {a,b} $HOME/x ${HOME} '*'");
    let w = &c.words;
    assert!(w[1].dynamic && w[1].subject() == "*");
    assert!(w[2].dynamic && w[3].dynamic);
    assert!(w[4].glob && w[5].glob && w[6].glob && w[7].glob);
    assert_eq!(w[7].subject(), "**");
    assert!(w[8].literal() && w[8].subject() == "~/x" && w[8].text == "$HOME/x");
    assert_eq!(w[9].subject(), "~");
    assert!(w[10].literal() && w[10].subject() == "\\*");
}

#[test]
fn substitutions_are_parsed_with_their_parent() {
    let s = parse("echo $(rm -rf /) `id` \"$(ls | sh)\" <(curl x) >(sh)");
    let names: Vec<&str> = s.cmds.iter().map(|c| c.words[0].text.as_str()).collect();
    assert_eq!(names, ["echo", "rm", "id", "ls", "sh", "curl", "sh"]);
    assert_eq!(s.cmds[1].parent, Some((0, Flow::Subst)));
    assert_eq!(s.cmds[2].parent, Some((0, Flow::Subst)));
    assert_eq!(s.cmds[5].parent, Some((0, Flow::ProcIn)));
    assert_eq!(s.cmds[6].parent, Some((0, Flow::ProcOut)));
    assert!(s.cmds[3].piped && s.cmds[4].piped);
    // nested backticks and substitutions in assignments and redirections
    let s = parse("A=$(b `c`) d > $(e)");
    let names: Vec<&str> = s.cmds.iter().filter_map(|c| c.words.first()).map(|w| w.text.as_str()).collect();
    assert_eq!(names, ["d", "b", "c", "e"]);
}

#[test]
fn assignments_and_redirections() {
    let c = one("A=1 B+=2 C=(x y) cmd D=3 2>&1 >> out <in <<<here &>/dev/null");
    let assigns: Vec<&str> = c.assigns.iter().map(|w| w.text.as_str()).collect();
    assert_eq!(assigns, ["A=1", "B+=2", "C=(x y)"]);
    let words: Vec<&str> = c.words.iter().map(|w| w.text.as_str()).collect();
    assert_eq!(words, ["cmd", "D=3"]);
    let ops: Vec<(Option<u32>, &str, &str)> =
        c.redirs.iter().map(|r| (r.fd, r.op.as_str(), r.target.text.as_str())).collect();
    assert_eq!(
        ops,
        [
            (Some(2), ">&", "1"),
            (None, ">>", "out"),
            (None, "<", "in"),
            (None, "<<<", "here"),
            (None, "&>", "/dev/null")
        ]
    );
    assert!(!c.redirs[0].writes_file() && c.redirs[1].writes_file() && c.redirs[4].writes_file());
    let only = one("> /etc/passwd");
    assert!(only.words.is_empty() && only.redirs.len() == 1);
    let compound = parse("while read l; do echo $l; done < ~/.ssh/id_rsa");
    assert_eq!(compound.cmds.last().unwrap().redirs[0].target.text, "~/.ssh/id_rsa");
}

#[test]
fn here_documents() {
    let s = parse("cat <<EOF\nhello $(id)\nEOF\nls");
    let names: Vec<&str> = s.cmds.iter().map(|c| c.words[0].text.as_str()).collect();
    assert_eq!(names, ["cat", "id", "ls"]);
    assert_eq!(s.cmds[0].redirs[0].body.as_deref(), Some("hello $(id)\n"));
    // quoted delimiter: no expansion; <<- strips tabs
    let s = parse("sh <<'X'\n$(id)\nX");
    assert_eq!(s.cmds.len(), 1);
    assert!(s.cmds[0].redirs[0].target.quoted);
    let s = parse("cat <<-E\n\t\ta\n\tE\necho done");
    assert_eq!(s.cmds[0].redirs[0].body.as_deref(), Some("a\n"));
    assert_eq!(s.cmds[1].words[0].text, "echo");
}

#[test]
fn functions() {
    let s = parse(":(){ :|:& };:");
    assert_eq!(s.funcs.len(), 1);
    let f = &s.funcs[0];
    assert_eq!((f.name.as_str(), f.end - f.start), (":", 2));
    assert!(s.cmds[f.start].piped && s.cmds[f.start + 1].background);
    let s = parse("function g { echo hi; }; g");
    assert_eq!(s.funcs[0].name, "g");
    assert_eq!(s.cmds.last().unwrap().words[0].text, "g");
}

#[test]
fn errors_are_recorded_and_parsing_goes_on() {
    for (src, err) in [
        ("ls \"x", "unterminated double quote"),
        ("ls 'x", "unterminated single quote"),
        ("echo $(ls", "unterminated $("),
        ("echo `ls", "unterminated backtick"),
        ("if a; then b", "missing fi"),
        ("a )", "unexpected ')'"),
        ("{ a", "missing '}'"),
        ("echo ${x", "unterminated ${"),
    ] {
        let s = parse(src);
        assert!(s.errors.iter().any(|e| e.contains(err)), "{src}: {:?}", s.errors);
        assert!(!s.cmds.is_empty(), "{src}");
    }
}

#[test]
fn limits_hold() {
    let deep = "( ".repeat(10_000) + "ls" + &" )".repeat(10_000);
    let s = parse(&deep);
    assert!(s.errors.iter().any(|e| e.contains("nested too deeply")));
    // `((…))` is arithmetic, however deep
    assert!(parse(&("(".repeat(10_000) + "1" + &")".repeat(10_000))).cmds.is_empty());
    let deep = "{ ".repeat(10_000) + "ls" + &"; }".repeat(10_000);
    assert!(parse(&deep).errors.iter().any(|e| e.contains("nested too deeply")));
    let deep = "$(".repeat(5_000) + "ls" + &")".repeat(5_000);
    assert!(parse(&deep).errors.iter().any(|e| e.contains("nested too deeply")));
    let many = "a;".repeat(MAX_CMDS + 10);
    let s = parse(&many);
    assert!(s.cmds.len() <= MAX_CMDS && s.errors.iter().any(|e| e.contains("too many")));
}
