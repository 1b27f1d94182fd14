//! Effects and risk: what a decision says and how bad it would be.

use serde::{Deserialize, Serialize};
use std::fmt;

/// What happens to a command: runs, waits for a person, or never runs.
/// Ordered from the most to the least permissive, so `max` is the strictest.
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
}

impl fmt::Display for Effect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

/// How much of one kind of risk a command carries.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    #[default]
    Low,
    Medium,
    High,
}

impl Level {
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Low => "low",
            Level::Medium => "medium",
            Level::High => "high",
        }
    }
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

/// The risk categories of a rule or a decision. A decision's profile is the
/// highest level of each category over every rule that matched any of its
/// commands.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RiskProfile {
    /// Acting as another user or with more rights (sudo, setuid, credentials).
    pub privilege: Level,
    /// Losing data (rm -rf, mkfs, dd to a disk, DROP TABLE).
    pub destruction: Level,
    /// Reaching or exposing other machines (downloads, ssh, scans).
    pub network: Level,
    /// Changing the system itself (packages, services, kernel, firewall).
    pub system: Level,
}

impl RiskProfile {
    /// The higher level of each category.
    pub fn max(self, o: RiskProfile) -> RiskProfile {
        RiskProfile {
            privilege: self.privilege.max(o.privilege),
            destruction: self.destruction.max(o.destruction),
            network: self.network.max(o.network),
            system: self.system.max(o.system),
        }
    }
}

impl fmt::Display for RiskProfile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "privilege {}, destruction {}, network {}, system {}",
            self.privilege, self.destruction, self.network, self.system
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strictest_is_max() {
        assert_eq!(Effect::Allow.max(Effect::Deny), Effect::Deny);
        assert_eq!(Effect::Review.max(Effect::Allow), Effect::Review);
        let a = RiskProfile { network: Level::High, ..Default::default() };
        let b = RiskProfile { privilege: Level::Medium, network: Level::Low, ..Default::default() };
        let m = a.max(b);
        assert_eq!((m.privilege, m.network, m.system), (Level::Medium, Level::High, Level::Low));
    }
}
