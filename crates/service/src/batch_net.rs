//! The network scopes of a batch's entries (spans).

/// Per-entry network scopes of a batch world: each entry's allowed flows
/// (counter differences) and refused attempts, and the whole world's.
#[derive(Default)]
pub struct NetTally {
    /// Cumulative (packets, bytes) per allowed destination at the last entry.
    seen: std::collections::BTreeMap<(String, Option<u16>), (u64, u64)>,
    allowed: Vec<cloche_trace::span::NetAllowed>,
    denied: std::collections::BTreeMap<(String, u16), u64>,
}

impl NetTally {
    /// The span scope of the entry that just ended, from the world's scope now.
    pub fn entry(&mut self, s: &cloche_world::network::NetScope) -> cloche_trace::span::SpanNetwork {
        let mut out = cloche_trace::span::SpanNetwork { mode: Some("scoped".into()), ..Default::default() };
        self.allowed.clear();
        for a in &s.allowed {
            let key = (a.ip.clone(), a.port);
            let (p0, b0) = self.seen.insert(key, (a.packets, a.bytes)).unwrap_or((0, 0));
            let flow = cloche_trace::span::NetAllowed {
                dst: None,
                ip: a.ip.clone(),
                port: a.port.unwrap_or(0),
                packets: a.packets.saturating_sub(p0),
                bytes: a.bytes.saturating_sub(b0),
            };
            self.allowed.push(cloche_trace::span::NetAllowed { packets: a.packets, bytes: a.bytes, ..flow.clone() });
            if flow.packets > 0 {
                out.allowed.push(flow);
            }
        }
        for d in &s.denied {
            *self.denied.entry((d.ip.to_string(), d.port)).or_default() += d.attempts;
            out.denied.push(cloche_trace::span::NetDenied { ip: d.ip.to_string(), port: d.port, attempts: d.attempts });
        }
        out
    }

    /// The whole world's scope (for the batch span).
    pub fn total(&self) -> cloche_trace::span::SpanNetwork {
        cloche_trace::span::SpanNetwork {
            mode: Some("scoped".into()),
            allowed: self.allowed.clone(),
            denied: self
                .denied
                .iter()
                .map(|((ip, port), n)| cloche_trace::span::NetDenied { ip: ip.clone(), port: *port, attempts: *n })
                .collect(),
        }
    }
}
