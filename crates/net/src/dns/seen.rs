//! What the resolver saw, kept within bounds: a world can send any number
//! of queries, and each costs the host a constant amount of work and at
//! most one entry of a list with a cap. What does not fit is counted.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::net::IpAddr;

/// Refusals listed per world (names refused, or answers refused).
pub const DENIED_NAMES_CAP: usize = 256;
/// Addresses listed per world (over all allowed names).
pub const ANSWERS_CAP: usize = 256;

/// One refusal: a name the world may not ask for, or an address an allowed
/// name's answer carried and the resolver refused.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DeniedName {
    pub name: String,
    /// The refused address (none when the name itself was refused).
    pub ip: Option<IpAddr>,
    pub reason: String,
}

#[derive(Debug, Clone, Default)]
pub struct Seen {
    /// Refusals in the order first seen, each once.
    pub denied: Vec<DeniedName>,
    /// Refusals not listed (the list was full), repeats included.
    pub denied_dropped: u64,
    /// Per allowed name (its set index) the addresses pinned for it.
    pub answered: BTreeMap<u16, BTreeSet<IpAddr>>,
    /// Pinned addresses not listed (the list was full), repeats included.
    pub answers_dropped: u64,
    listed: HashSet<DeniedName>,
    answers: usize,
}

impl Seen {
    /// Notes a refusal: O(1) (one hash lookup), whatever came before.
    pub fn deny(&mut self, name: &str, ip: Option<IpAddr>, reason: &str) {
        let d = DeniedName { name: name.to_string(), ip, reason: reason.to_string() };
        if self.listed.contains(&d) {
            return;
        }
        if self.denied.len() >= DENIED_NAMES_CAP {
            self.denied_dropped += 1;
            return;
        }
        self.listed.insert(d.clone());
        self.denied.push(d);
    }

    /// Notes an address pinned for allowed name `set`: O(log cap).
    pub fn answer(&mut self, set: u16, ip: IpAddr) {
        let known = self.answered.get(&set).is_some_and(|s| s.contains(&ip));
        if known {
            return;
        }
        if self.answers >= ANSWERS_CAP {
            self.answers_dropped += 1;
            return;
        }
        self.answers += 1;
        self.answered.entry(set).or_default().insert(ip);
    }

    /// A copy of what is listed (bounded), without the lookup index.
    pub fn snapshot(&self) -> Seen {
        Seen {
            denied: self.denied.clone(),
            denied_dropped: self.denied_dropped,
            answered: self.answered.clone(),
            answers_dropped: self.answers_dropped,
            listed: HashSet::new(),
            answers: self.answers,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_are_capped_and_what_does_not_fit_is_counted() {
        let mut s = Seen::default();
        for i in 0..1000 {
            s.deny(&format!("n{i}.test"), None, "not allowed");
            s.deny("n0.test", None, "not allowed"); // a repeat: listed once, never dropped
        }
        assert_eq!((s.denied.len(), s.denied_dropped), (DENIED_NAMES_CAP, 1000 - DENIED_NAMES_CAP as u64));
        assert_eq!(s.denied[0].name, "n0.test");
        let lo: IpAddr = "127.0.0.1".parse().unwrap();
        s.deny("svc.test", Some(lo), "loopback");
        assert_eq!(s.denied_dropped, 1001 - DENIED_NAMES_CAP as u64);
        for i in 0..300u32 {
            s.answer((i % 2) as u16, IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + i)));
            s.answer(0, IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000)));
        }
        let listed: usize = s.answered.values().map(|v| v.len()).sum();
        assert_eq!((listed, s.answers_dropped), (ANSWERS_CAP, 300 - ANSWERS_CAP as u64));
        let snap = s.snapshot();
        assert_eq!(snap.denied.len(), DENIED_NAMES_CAP);
        assert!(snap.listed.is_empty());
    }
}
