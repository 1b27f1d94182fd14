//! Batch and entry states.

use serde::{Deserialize, Serialize};

macro_rules! states {
    ($(#[$m:meta])* $name:ident { $($variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        #[serde(rename_all = "snake_case")]
        pub enum $name { $($variant),+ }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }

            pub fn parse(s: &str) -> Option<$name> {
                match s { $($text => Some($name::$variant),)+ _ => None }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

states! {
    /// `pending → approved | rejected`, `approved → running | expired | cancelled`,
    /// `running → completed | failed | cancelled`, `pending → cancelled`;
    /// after a run, review: `completed | failed | cancelled |
    /// partially_committed → committed | partially_committed | discarded`.
    BatchState {
        Pending => "pending",
        Approved => "approved",
        Rejected => "rejected",
        Running => "running",
        Completed => "completed",
        Failed => "failed",
        Cancelled => "cancelled",
        Expired => "expired",
        Committed => "committed",
        PartiallyCommitted => "partially_committed",
        Discarded => "discarded",
    }
}

states! {
    /// `pending → skipped | running`, `running → succeeded | failed | timed_out | cancelled`.
    EntryState {
        Pending => "pending",
        Skipped => "skipped",
        Running => "running",
        Succeeded => "succeeded",
        Failed => "failed",
        TimedOut => "timed_out",
        Cancelled => "cancelled",
    }
}

impl BatchState {
    /// No transition leaves a terminal state.
    pub fn is_terminal(self) -> bool {
        !matches!(self, BatchState::Pending | BatchState::Approved | BatchState::Running)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        for s in BatchState::ALL {
            assert_eq!(BatchState::parse(s.as_str()), Some(*s));
            assert_eq!(serde_json::to_value(s).unwrap(), s.as_str());
        }
        for s in EntryState::ALL {
            assert_eq!(EntryState::parse(s.as_str()), Some(*s));
            assert_eq!(serde_json::to_value(s).unwrap(), s.as_str());
        }
        assert!(BatchState::Expired.is_terminal() && !BatchState::Running.is_terminal());
    }
}
