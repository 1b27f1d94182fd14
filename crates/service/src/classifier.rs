//! The policies that classify a batch, as the broker sees them.

use cloche_broker::{Classifier, Decision};
use cloche_policy::store::BUILTIN;
use cloche_policy::Policy;

/// The project's policy and, from `submit --policy`, one that can only
/// tighten. Its id is the project policy's, then `+` and the tightening
/// one's.
pub struct PolicyClassifier {
    pub id: String,
    pub policies: Vec<Policy>,
}

impl PolicyClassifier {
    /// The built-in policy alone.
    pub fn builtin() -> PolicyClassifier {
        PolicyClassifier { id: BUILTIN.into(), policies: vec![Policy::builtin()] }
    }
}

impl Classifier for PolicyClassifier {
    fn classify(&self, command: &str) -> Decision {
        self.classify_entry(command, &[])
    }

    fn classify_entry(&self, command: &str, env: &[(String, String)]) -> Decision {
        let d = self
            .policies
            .iter()
            .map(|p| p.commands.classify_with_env(command, env))
            .reduce(|a, b| if (b.effect, b.risk) > (a.effect, a.risk) { b } else { a })
            .expect("at least one policy");
        let effect = match d.effect {
            cloche_policy::Effect::Allow => cloche_broker::Effect::Allow,
            cloche_policy::Effect::Review => cloche_broker::Effect::Review,
            cloche_policy::Effect::Deny => cloche_broker::Effect::Deny,
        };
        Decision { effect, rule: d.rule, reason: d.reason, risk: d.risk }
    }

    fn policy_id(&self) -> String {
        self.id.clone()
    }
}
