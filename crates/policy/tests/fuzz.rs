//! Random input never panics: classify always returns a decision, and the
//! decision is the strictest of its commands'. Inputs are only parsed.

use cloche_policy::{Decision, Effect, Policy, MAX_LINE};

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

fn check(p: &Policy, input: &str) -> Decision {
    let d = p.classify(input);
    assert!(d.risk <= 100, "{input:?}");
    for c in &d.commands {
        assert!(c.effect <= d.effect, "{input:?}: a command is stricter than the decision");
        assert!(c.risk <= d.risk, "{input:?}");
    }
    if d.commands.iter().any(|c| c.rule == "unresolved") {
        assert_ne!(d.effect, Effect::Allow, "{input:?}");
    }
    d
}

#[test]
fn random_bytes_never_panic() {
    let p = Policy::builtin();
    let mut r = Rng(0x2545_f491_4f6c_dd1d);
    for _ in 0..20_000 {
        let len = r.below(64);
        let bytes: Vec<u8> = (0..len).map(|_| r.next() as u8).collect();
        check(&p, &String::from_utf8_lossy(&bytes));
    }
}

const TOKENS: &[&str] = &[
    "rm",
    "-rf",
    "/",
    "~",
    "ls",
    "sh",
    "bash",
    "-c",
    "sudo",
    "env",
    "X=1",
    "curl",
    "|",
    "||",
    "&&",
    "&",
    ";",
    ";;",
    "\n",
    "(",
    ")",
    "{",
    "}",
    "$(",
    "`",
    "'",
    "\"",
    "\\",
    "$",
    "${",
    "}",
    "$((",
    "))",
    "<",
    ">",
    ">>",
    "<<",
    "<<-",
    "<<<",
    "EOF",
    "<(",
    ">(",
    "2>&1",
    "&>",
    "if",
    "then",
    "else",
    "fi",
    "while",
    "do",
    "done",
    "for",
    "in",
    "case",
    "esac",
    "function",
    "f()",
    "[[",
    "]]",
    "!",
    "#",
    "*",
    "?",
    "[a]",
    "{a,b}",
    "$'\\x72'",
    "eval",
    "source",
    ".",
    "alias",
    "find",
    "-exec",
    "\\;",
    "xargs",
    "timeout",
    "5",
    "cd",
    "..",
    "/etc/passwd",
    "~/.ssh/id_rsa",
    ":",
    "=",
    "+=",
    " ",
    " ",
    " ",
    "\t",
    "ｒｍ",
    "é",
    "\u{200b}",
    "\0",
];

#[test]
fn shell_token_soup_never_panics() {
    let p = Policy::builtin();
    let mut r = Rng(0x9e37_79b9_7f4a_7c15);
    let mut allowed_with_errors = 0;
    for _ in 0..30_000 {
        let n = r.below(40);
        let mut s = String::new();
        for _ in 0..n {
            s.push_str(TOKENS[r.below(TOKENS.len())]);
            if r.below(3) > 0 {
                s.push(' ');
            }
        }
        let d = check(&p, &s);
        if d.effect == Effect::Allow && d.rule == "unresolved" {
            allowed_with_errors += 1;
        }
    }
    assert_eq!(allowed_with_errors, 0);
}

#[test]
fn pathological_inputs_finish() {
    let p = Policy::builtin();
    let big = |s: &str, n: usize| s.repeat(n);
    let cases = [
        big("( ", 50_000),
        big("{ ", 50_000),
        big("$(", 50_000),
        big("`", 50_001),
        big("${", 50_000),
        big("$((", 50_000),
        big("\"", 100_001),
        big("'", 100_001),
        big("a|", 100_000),
        big("a;", 100_000),
        big("<<E ", 10_000),
        big("bash -c '", 1_000),
        big("sh -c \"", 1_000),
        big("x ", 200_000),
        big("f(){ f|f& };", 5_000),
        format!("rm -rf {}", big("/", 100_000)),
        format!("cat {}", big("*", 100_000)),
        format!("cat /{}", big("$X/", 50_000)),
        format!("curl x | {}", big("sh -c 'curl x | ", 200)),
        big("eval ", 10_000),
        big("\\", 100_001),
    ];
    for c in &cases {
        let t = std::time::Instant::now();
        let d = check(&p, c);
        assert!(t.elapsed().as_secs() < 5, "{}: took {:?}", &c[..40.min(c.len())], t.elapsed());
        assert!(d.commands.len() <= 100_000);
    }
    // Over the size limit: not parsed, never allowed.
    let huge = big("ls ", MAX_LINE / 3 + 1);
    let d = check(&p, &huge);
    assert_eq!((d.effect, d.rule.as_str()), (Effect::Review, "unresolved"));
}
