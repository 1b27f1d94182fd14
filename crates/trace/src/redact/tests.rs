use super::*;
use serde_json::json;

/// (input, expected). Expected == input means: must not be redacted.
const CASES: &[(&str, &str)] = &[
    // HTTP headers
    (
        r#"curl -H "Authorization: Bearer abc.def.ghi123" https://api.x"#,
        r#"curl -H "Authorization: Bearer ***" https://api.x"#,
    ),
    ("curl -H 'Authorization: Basic dXNlcjpwYXNz' x", "curl -H 'Authorization: Basic ***' x"),
    ("Authorization: token0123456789", "Authorization: ***"),
    ("Proxy-Authorization: Basic Zm9vOmJhcg==", "Proxy-Authorization: Basic ***"),
    (r#"curl -H "X-Api-Key: k3y-v4lue" u"#, r#"curl -H "X-Api-Key: ***" u"#),
    (r#"curl -H "Cookie: session=abc; theme=dark" u"#, r#"curl -H "Cookie: ***" u"#),
    ("wget --header=Bearer eyZ0123456789abcdef u", "wget --header=Bearer *** u"),
    // flags
    ("mysql --password=hunter2 -h db", "mysql --password=*** -h db"),
    ("tool --password hunter2 --verbose", "tool --password *** --verbose"),
    ("gh auth --token=abc123 x", "gh auth --token=*** x"),
    ("cli --token 'my token' --x", "cli --token '***' --x"),
    ("curl --oauth2-bearer tok3n u", "curl --oauth2-bearer *** u"),
    ("svc --client-secret s3cr3t --api-key=k", "svc --client-secret *** --api-key=***"),
    ("keytool -storepass changeit -keypass pw2", "keytool -storepass *** -keypass ***"),
    ("mysql -uroot -phunter2 db", "mysql -uroot -p*** db"),
    ("sudo /usr/bin/mysqldump -psecret db > dump.sql", "sudo /usr/bin/mysqldump -p*** db > dump.sql"),
    ("docker login -u me -p s3cret registry.io", "docker login -u me -p *** registry.io"),
    ("sshpass -p 'pw word' ssh host", "sshpass -p '***' ssh host"),
    ("curl -u alice:wonderland https://x", "curl -u alice:*** https://x"),
    ("openssl rsa -passin pass:hunter2 -in k.pem", "openssl rsa -passin pass:*** -in k.pem"),
    // environment
    ("AWS_SECRET_ACCESS_KEY=wJalrXUtnFEMI/K7MDENG/bPxRfiCY aws s3 ls", "AWS_SECRET_ACCESS_KEY=*** aws s3 ls"),
    ("AWS_SESSION_TOKEN=FwoGZXIvYXdzEJr//////////wEaDN", "AWS_SESSION_TOKEN=***"),
    ("export GITHUB_TOKEN=abc; make", "export GITHUB_TOKEN=***; make"),
    ("NPM_TOKEN=\"x y\" npm publish", "NPM_TOKEN=\"***\" npm publish"),
    (
        "DJANGO_SECRET=x1 MYSQL_ROOT_PASSWORD=p2 PGPASSWORD=p3 run",
        "DJANGO_SECRET=*** MYSQL_ROOT_PASSWORD=*** PGPASSWORD=*** run",
    ),
    ("DB_PWD=abc OPENAI_API_KEY=k1", "DB_PWD=*** OPENAI_API_KEY=***"),
    ("aws_secret_access_key = abcdEFGH", "aws_secret_access_key = ***"),
    (r#"{"password":"hunter2","user":"bob"}"#, r#"{"password":"***","user":"bob"}"#),
    ("db:\n  password: hunter2\n  host: x", "db:\n  password: ***\n  host: x"),
    ("https://api.x/v1?user=bob&access_token=abc123&page=2", "https://api.x/v1?user=bob&access_token=***&page=2"),
    // token shapes
    (
        "git clone https://ghp_abcdefghijklmnopqrstuvwxyz0123456789@github.com/o/r",
        "git clone https://ghp_***@github.com/o/r",
    ),
    ("echo gho_16C7e42F292c6912E7710c838347Ae178B4a", "echo gho_***"),
    ("ghs_abcdefghijklmnopqrstuvwxyz0123", "ghs_***"),
    ("github_pat_11ABCDEFG0123456789_abcdefghijklmnop", "github_pat_***"),
    ("key id AKIAIOSFODNN7EXAMPLE in use", "key id AKIA*** in use"),
    ("slack xoxb-1234567890-abcdefghij", "slack xoxb-***"),
    ("glpat-abcdefghij0123456789", "glpat-***"),
    ("sk-proj-abcdefghijklmnopqrstuvwx", "sk-proj-***"),
    ("jwt eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjMifQ.sig_part-1", "jwt eyJ***"),
    (
        "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXk=\n-----END OPENSSH PRIVATE KEY-----\nrest",
        "-----BEGIN OPENSSH PRIVATE KEY-----***-----END OPENSSH PRIVATE KEY-----\nrest",
    ),
    ("-----BEGIN RSA PRIVATE KEY-----\nMIIEow (cut)", "-----BEGIN RSA PRIVATE KEY-----***"),
    // URLs with credentials
    ("postgres://app:s3cr3t@db:5432/app", "postgres://app:***@db:5432/app"),
    (
        "pip install --index-url https://u:p%40ss@pypi.corp/simple pkg",
        "pip install --index-url https://u:***@pypi.corp/simple pkg",
    ),
    // must NOT be redacted
    ("npm install left-pad", "npm install left-pad"),
    ("mkdir -p build/out && cp -p a b", "mkdir -p build/out && cp -p a b"),
    ("ssh -p 2222 host", "ssh -p 2222 host"),
    ("docker run -p 8080:80 -u 1000:1000 img", "docker run -p 8080:80 -u 1000:1000 img"),
    ("git log -p --author=bob", "git log -p --author=bob"),
    ("echo $GITHUB_TOKEN ${AWS_SECRET_ACCESS_KEY}", "echo $GITHUB_TOKEN ${AWS_SECRET_ACCESS_KEY}"),
    ("GITHUB_TOKEN=$GH_TOKEN make", "GITHUB_TOKEN=$GH_TOKEN make"),
    (
        "PWD=/srv/app OLDPWD=/ TOKEN_COUNT=3 PASSWORD_FILE=/run/s",
        "PWD=/srv/app OLDPWD=/ TOKEN_COUNT=3 PASSWORD_FILE=/run/s",
    ),
    ("git commit -m 'fix password reset'", "git commit -m 'fix password reset'"),
    ("grep -rn PASSWORD src/", "grep -rn PASSWORD src/"),
    ("docker login --password-stdin -u me", "docker login --password-stdin -u me"),
    ("cli --token-file /run/tok --no-password x", "cli --token-file /run/tok --no-password x"),
    ("git clone git@github.com:org/repo.git", "git clone git@github.com:org/repo.git"),
    ("curl https://user@example.com/path?q=1", "curl https://user@example.com/path?q=1"),
    ("the bearer of bad news", "the bearer of bad news"),
    ("approved_by token:3f2a9c0d", "approved_by token:3f2a9c0d"),
    (
        "sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
        "sha256:9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
    ),
    ("cargo test --workspace -p cloche-trace", "cargo test --workspace -p cloche-trace"),
    ("mysql -p -h db", "mysql -p -h db"),
    ("task-abcdefghijklmnopqrstuvwxyz", "task-abcdefghijklmnopqrstuvwxyz"),
    ("", ""),
];

#[test]
fn table() {
    let mut failures = Vec::new();
    for (input, want) in CASES {
        let got = redact(input);
        if got != *want {
            failures.push(format!("  in:   {input:?}\n  want: {want:?}\n  got:  {got:?}"));
        }
        if input == want && matches!(got, Cow::Owned(_)) {
            failures.push(format!("  allocated for an unchanged input: {input:?}"));
        }
        let again = redact(&got);
        if again != got {
            failures.push(format!("  not idempotent: {got:?} -> {again:?}"));
        }
    }
    assert!(failures.is_empty(), "{} of {} cases failed:\n{}", failures.len(), CASES.len(), failures.join("\n"));
    assert!(CASES.len() >= 30);
}

#[test]
fn secret_names() {
    for yes in ["GITHUB_TOKEN", "password", "db.password", "Client-Secret", "x-api-key", "SECRET", "DB_PASS", "api_key"]
    {
        assert!(is_secret_name(yes), "{yes}");
    }
    for no in ["PWD", "PATH", "TOKEN_COUNT", "PASSWORD_FILE", "KEY", "SSH_KEY_PATH", "BYPASS", "user", ""] {
        assert!(!is_secret_name(no), "{no}");
    }
}

#[test]
fn json_values_and_secret_keys() {
    let mut v = json!({
        "cmd": "curl -u bob:pw https://x",
        "env": {"GITHUB_TOKEN": "abc", "HOME": "/root", "password": "$literal"},
        "argv": ["--password", "hunter2"],
        "output_sha256": "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
        "n": 3
    });
    redact_json(&mut v);
    assert_eq!(v["cmd"], "curl -u bob:*** https://x");
    assert_eq!(v["env"], json!({"GITHUB_TOKEN": "***", "HOME": "/root", "password": "***"}));
    // Separate argv elements are not joined: a known gap, callers redact the joined command.
    assert_eq!(v["argv"], json!(["--password", "hunter2"]));
    assert_eq!(v["output_sha256"], "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08");
    assert_eq!(v["n"], 3);
}

#[test]
fn hostile_input_is_fast_and_safe() {
    let big = "A=".repeat(200_000) + &"-p".repeat(100_000) + "-----BEGIN PRIVATE KEY-----" + &"x".repeat(100_000);
    let t = std::time::Instant::now();
    let out = redact(&big);
    assert!(out.ends_with("-----BEGIN PRIVATE KEY-----***"));
    assert!(t.elapsed() < std::time::Duration::from_secs(5), "{:?}", t.elapsed());
    let _ = redact("\u{0}\u{ffff}é--password=\u{202e}x ");
}
