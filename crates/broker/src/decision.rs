//! Decisions (from a [`Classifier`]) and the exit categories of finished entries.

use serde::{Deserialize, Serialize};

/// What the policy says about one command. Ordered: `Allow < Review < Deny`,
/// so a batch's decision is the `max` of its entries'.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Effect {
    Allow,
    Review,
    Deny,
}

impl Effect {
    pub fn as_str(self) -> &'static str {
        match self {
            Effect::Allow => "allow",
            Effect::Review => "review",
            Effect::Deny => "deny",
        }
    }

    pub fn parse(s: &str) -> Option<Effect> {
        match s {
            "allow" => Some(Effect::Allow),
            "review" => Some(Effect::Review),
            "deny" => Some(Effect::Deny),
            _ => None,
        }
    }
}

impl std::fmt::Display for Effect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One decision: the effect, the rule that fired, why, and a risk score 0–100.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    pub effect: Effect,
    pub rule: String,
    pub reason: String,
    pub risk: u8,
}

/// Classifies one command. The broker does not know the policy crate: the
/// caller adapts its classifier to this trait (a closure also works).
pub trait Classifier {
    fn classify(&self, command: &str) -> Decision;
    /// Classifies a batch entry: its command run with its `env` added (a
    /// variable such as `PAGER` changes what an allowed command runs).
    /// The default ignores the environment.
    fn classify_entry(&self, command: &str, env: &[(String, String)]) -> Decision {
        let _ = env;
        self.classify(command)
    }
    /// The id of the policy version that decides (recorded with the batch,
    /// which later runs with that version).
    fn policy_id(&self) -> String {
        "builtin".into()
    }
}

impl<F: Fn(&str) -> Decision> Classifier for F {
    fn classify(&self, command: &str) -> Decision {
        self(command)
    }
}

/// Why an entry ended the way it did (`category` in views and the audit).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Category {
    Ok,
    NotFound,
    Permission,
    Timeout,
    Resource,
    Network,
    Syntax,
    Runtime,
}

impl Category {
    pub fn as_str(self) -> &'static str {
        match self {
            Category::Ok => "ok",
            Category::NotFound => "not_found",
            Category::Permission => "permission",
            Category::Timeout => "timeout",
            Category::Resource => "resource",
            Category::Network => "network",
            Category::Syntax => "syntax",
            Category::Runtime => "runtime",
        }
    }

    pub fn parse(s: &str) -> Option<Category> {
        [
            Category::Ok,
            Category::NotFound,
            Category::Permission,
            Category::Timeout,
            Category::Resource,
            Category::Network,
            Category::Syntax,
            Category::Runtime,
        ]
        .into_iter()
        .find(|c| c.as_str() == s)
    }
}

/// Sorts a finished command into a [`Category`] from its exit code, whether it
/// timed out, and what it wrote to stderr. The first match wins, in the order
/// of the checks below; exit 0 is always `ok`.
pub fn categorize(exit_code: i32, timed_out: bool, stderr: &[u8]) -> Category {
    if timed_out {
        return Category::Timeout;
    }
    if exit_code == 0 {
        return Category::Ok;
    }
    let text = String::from_utf8_lossy(stderr);
    let has = |needles: &[&str]| needles.iter().any(|n| text.contains(n));
    if exit_code == 127 || has(&["command not found"]) {
        Category::NotFound
    } else if exit_code == 126 || has(&["Permission denied"]) {
        Category::Permission
    } else if exit_code == 137 || has(&["Cannot allocate memory", "No space left"]) {
        Category::Resource
    } else if has(&["Could not resolve host", "Connection refused", "Network is unreachable"]) {
        Category::Network
    } else if exit_code == 2 && has(&["syntax error"]) {
        Category::Syntax
    } else {
        Category::Runtime
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn effects_are_ordered() {
        assert!(Effect::Allow < Effect::Review && Effect::Review < Effect::Deny);
        assert_eq!([Effect::Review, Effect::Deny, Effect::Allow].into_iter().max(), Some(Effect::Deny));
        assert_eq!(Effect::parse("review"), Some(Effect::Review));
        assert_eq!(serde_json::to_string(&Effect::Deny).unwrap(), "\"deny\"");
    }

    #[test]
    fn categories() {
        assert_eq!(categorize(0, false, b"warning: Permission denied"), Category::Ok);
        assert_eq!(categorize(0, true, b""), Category::Timeout);
        assert_eq!(categorize(127, false, b""), Category::NotFound);
        assert_eq!(categorize(1, false, b"sh: foo: command not found"), Category::NotFound);
        assert_eq!(categorize(126, false, b""), Category::Permission);
        assert_eq!(categorize(1, false, b"open: Permission denied"), Category::Permission);
        assert_eq!(categorize(137, false, b""), Category::Resource);
        assert_eq!(categorize(1, false, b"write: No space left on device"), Category::Resource);
        assert_eq!(categorize(1, false, b"fork: Cannot allocate memory"), Category::Resource);
        assert_eq!(categorize(6, false, b"curl: (6) Could not resolve host: x"), Category::Network);
        assert_eq!(categorize(7, false, b"Connection refused"), Category::Network);
        assert_eq!(categorize(1, false, b"connect: Network is unreachable"), Category::Network);
        assert_eq!(categorize(2, false, b"sh: 1: Syntax error: \"(\" unexpected"), Category::Runtime);
        assert_eq!(categorize(2, false, b"bash: -c: line 1: syntax error near `)'"), Category::Syntax);
        assert_eq!(categorize(1, false, b"syntax error"), Category::Runtime);
        assert_eq!(categorize(3, false, &[0xff, 0xfe]), Category::Runtime);
        for c in ["ok", "not_found", "permission", "timeout", "resource", "network", "syntax", "runtime"] {
            assert_eq!(Category::parse(c).unwrap().as_str(), c);
        }
    }
}
