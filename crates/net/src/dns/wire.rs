//! DNS messages between the world, cloche and the upstream, read and written
//! with `hickory-proto` (no async runtime). The world's query is checked
//! and asked again upstream as a fresh message (cloche's own ID, one
//! question, cloche's EDNS); the upstream's reply counts only if it answers
//! that message (ID, and the question: name without regard to case, type
//! and class); the world gets a new reply built from it, holding only what
//! cloche checked.

use super::guard::Refusal;
use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::opt::EdnsOption;
use hickory_proto::rr::rdata::svcb::SvcParamKey;
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};
use std::collections::HashMap;
use std::net::IpAddr;

/// The largest DNS message (over TCP, its length is 2 bytes).
pub const MAX_MESSAGE: usize = 65535;
/// The UDP payload cloche offers (to the world and upstream): larger
/// answers come over TCP (the size DNS Flag Day 2020 settled on, which
/// avoids fragments).
const UDP_PAYLOAD: u16 = 1232;
/// Links of a CNAME chain followed in an answer.
const CHAIN_MAX: usize = 16;
/// The longest an answer's address stays pinned (and the TTL the world
/// reads for it): a day.
const MAX_PIN_TTL: u32 = 86_400;
/// Extended DNS Error "Blocked" (RFC 8914), with the refusal's reason.
const EDE: u16 = 15;

/// A world's query cloche will answer.
#[derive(Debug)]
pub struct Question {
    query: Message,
    /// Its name, canonical ([`super::canonical`]).
    pub name: String,
}

/// What to do with a datagram or message from the world.
#[derive(Debug)]
pub enum Parsed {
    Ask(Question),
    /// A name cloche cannot read as a host name (printable form), and the
    /// NXDOMAIN that answers it.
    Invalid(String, Vec<u8>),
    /// An answer at once (an error: FORMERR, NOTIMP, REFUSED).
    Reply(Vec<u8>),
    /// Not a query: no answer at all.
    Ignore,
}

impl Question {
    fn query(&self) -> &Query {
        &self.query.queries[0]
    }

    /// The largest reply the world takes over UDP (its EDNS size, else 512).
    pub fn udp_limit(&self) -> usize {
        self.query.edns.as_ref().map_or(512, |e| usize::from(e.max_payload()).max(512))
    }

    /// A reply with `rcode` and no records.
    pub fn error(&self, rcode: ResponseCode) -> Vec<u8> {
        error(&self.query, rcode)
    }

    /// The question asked upstream: cloche's own random ID, the world's
    /// question, RD and CD as the world set them, cloche's EDNS (the
    /// world's DO bit). Returns the ID and the message.
    pub fn upstream(&self) -> (u16, Vec<u8>) {
        let mut m = Message::query();
        m.metadata.recursion_desired = self.query.metadata.recursion_desired;
        m.metadata.checking_disabled = self.query.metadata.checking_disabled;
        m.add_query(self.query().clone());
        m.set_edns(edns(self.dnssec_ok()));
        (m.metadata.id, m.to_vec().unwrap_or_default())
    }

    fn dnssec_ok(&self) -> bool {
        self.query.edns.as_ref().is_some_and(|e| e.flags().dnssec_ok)
    }

    /// The upstream's reply in `b`, if it answers the message sent with
    /// `id`: a response to a standard query, same ID, the same one
    /// question.
    pub fn reply_in(&self, b: &[u8], id: u16) -> Option<Message> {
        let m = Message::from_vec(b).ok()?;
        let q = self.query();
        let same = |a: &Query| {
            a.name().eq_ignore_root(q.name()) && a.query_type() == q.query_type() && a.query_class() == q.query_class()
        };
        let ok = m.metadata.id == id
            && m.metadata.message_type == MessageType::Response
            && m.metadata.op_code == OpCode::Query
            && m.queries.len() == 1
            && same(&m.queries[0]);
        ok.then_some(m)
    }
}

/// Reads a query from the world.
pub fn parse_query(b: &[u8]) -> Parsed {
    if b.len() < 12 || b[2] & 0x80 != 0 {
        return Parsed::Ignore; // too short for a header, or a response
    }
    let Ok(m) = Message::from_vec(b) else { return Parsed::Reply(formerr(b)) };
    if m.metadata.op_code != OpCode::Query {
        return Parsed::Reply(error(&m, ResponseCode::NotImp));
    }
    if m.queries.len() != 1 {
        return Parsed::Reply(error(&m, ResponseCode::FormErr));
    }
    let q = &m.queries[0];
    let transfer = matches!(q.query_type(), RecordType::AXFR | RecordType::IXFR | RecordType::OPT);
    if q.query_class() != DNSClass::IN || transfer {
        return Parsed::Reply(error(&m, ResponseCode::Refused));
    }
    // ASCII only on the wire: a raw UTF-8 label is not the IDNA name it
    // would map to, and must not match it.
    let labels: Option<Vec<&str>> =
        q.name().iter().map(|l| std::str::from_utf8(l).ok().filter(|s| s.is_ascii())).collect();
    match labels.and_then(|l| super::canonical(&l.join(".")).ok()) {
        Some(name) => Parsed::Ask(Question { query: m, name }),
        None => Parsed::Invalid(printable(q.name()), error(&m, ResponseCode::NXDomain)),
    }
}

/// A name as the report shows it: its labels, bytes outside printable
/// ASCII escaped, at most 300 characters.
fn printable(n: &Name) -> String {
    let mut s = String::new();
    for (i, l) in n.iter().enumerate() {
        if i > 0 {
            s.push('.');
        }
        for &b in l {
            match b {
                b'!'..=b'~' if b != b'\\' => s.push(b as char),
                _ => s.push_str(&format!("\\x{b:02x}")),
            }
        }
    }
    s.truncate(300);
    if s.is_empty() {
        s.push('.');
    }
    s
}

/// cloche's OPT record.
fn edns(dnssec_ok: bool) -> Edns {
    let mut e = Edns::new();
    e.set_max_payload(UDP_PAYLOAD).set_dnssec_ok(dnssec_ok);
    e
}

/// A reply to `m` with `rcode`: its question, RD and CD, no records.
fn error(m: &Message, rcode: ResponseCode) -> Vec<u8> {
    let mut r = response(m);
    r.metadata.response_code = rcode;
    r.to_vec().unwrap_or_else(|_| formerr(&m.metadata.id.to_be_bytes()))
}

/// An empty reply to query `m`: its ID, question, RD and CD, and an OPT
/// record if it had one.
fn response(m: &Message) -> Message {
    let mut r = Message::response(m.metadata.id, m.metadata.op_code);
    r.metadata.recursion_desired = m.metadata.recursion_desired;
    r.metadata.checking_disabled = m.metadata.checking_disabled;
    r.metadata.recursion_available = true;
    r.queries = m.queries.clone();
    r.edns = m.edns.as_ref().map(|e| edns(e.flags().dnssec_ok));
    r
}

/// FORMERR for bytes that do not parse: their ID, nothing else.
fn formerr(b: &[u8]) -> Vec<u8> {
    let mut r = vec![0u8; 12];
    r[..2].copy_from_slice(&b[..2.min(b.len())]);
    r[2] = 0x80;
    r[3] = 0x80 | 1;
    r
}

/// The world's reply, built from the upstream's, and what it means.
#[derive(Debug)]
pub struct Filtered {
    pub reply: Message,
    /// Addresses to pin, with their TTL (seconds).
    pub pins: Vec<(IpAddr, u32)>,
    /// Addresses refused, and why (not in the reply).
    pub refused: Vec<(IpAddr, Refusal)>,
}

/// The world's reply to `q` from the upstream's `up`. In the answer section
/// only records of the question's chain (its name, and the targets of
/// CNAMEs of the chain) are kept; their addresses are judged by `judge`: a
/// refused one is left out (the world never reads it), the others are
/// pinned. Addresses elsewhere (glue in the authority and additional
/// sections, address hints of SVCB and HTTPS records) are never pinned, so
/// they are left out too. AD is kept only when nothing was left out.
pub fn filter(q: &Question, up: Message, judge: impl Fn(IpAddr) -> Option<Refusal>) -> Filtered {
    let mut chain: Vec<Name> = vec![q.query().name().clone()];
    let linked = |chain: &[Name], n: &Name| chain.iter().any(|c| c.eq_ignore_root(n));
    loop {
        let before = chain.len();
        for r in &up.answers {
            if let RData::CNAME(t) = &r.data {
                if chain.len() <= CHAIN_MAX && linked(&chain, &r.name) && !linked(&chain, &t.0) {
                    chain.push(t.0.clone());
                }
            }
        }
        if chain.len() == before {
            break;
        }
    }
    let (mut pins, mut refused, mut left_out): (Vec<(IpAddr, u32)>, _, _) = (Vec::new(), Vec::new(), false);
    // Each address judged once, however often the answer repeats it.
    let mut verdicts: HashMap<IpAddr, Option<Refusal>> = HashMap::new();
    let mut pinned: HashMap<IpAddr, usize> = HashMap::new();
    let mut answers = Vec::new();
    for mut r in up.answers {
        if r.dns_class != DNSClass::IN || !linked(&chain, &r.name) {
            left_out = true;
            continue;
        }
        if let Some(ip) = address(&r) {
            let first = !verdicts.contains_key(&ip);
            let verdict = *verdicts.entry(ip).or_insert_with(|| judge(ip));
            match verdict {
                Some(why) => {
                    if first {
                        refused.push((ip, why));
                    }
                    left_out = true;
                    continue;
                }
                None => {
                    r.ttl = r.ttl.min(MAX_PIN_TTL);
                    match pinned.get(&ip) {
                        Some(&at) => pins[at].1 = u32::max(pins[at].1, r.ttl),
                        None => {
                            pinned.insert(ip, pins.len());
                            pins.push((ip, r.ttl));
                        }
                    }
                }
            }
        }
        left_out |= strip_hints(&mut r.data);
        answers.push(r);
    }
    let mut rest = |records: Vec<Record>| -> Vec<Record> {
        let n = records.len();
        let mut kept: Vec<Record> = records.into_iter().filter(|r| address(r).is_none()).collect();
        left_out |= kept.len() != n;
        for r in &mut kept {
            left_out |= strip_hints(&mut r.data);
        }
        kept
    };
    let (authorities, additionals) = (rest(up.authorities), rest(up.additionals));
    let mut reply = response(&q.query);
    reply.metadata.response_code = up.metadata.response_code;
    reply.metadata.recursion_available = up.metadata.recursion_available;
    reply.metadata.authentic_data = up.metadata.authentic_data && !left_out;
    reply.answers = answers;
    reply.authorities = authorities;
    reply.additionals = additionals;
    if let (Some(e), Some((ip, why))) = (reply.edns.as_mut(), refused.first()) {
        let mut info = EDE.to_be_bytes().to_vec();
        info.extend_from_slice(format!("cloche refused {ip}: {why}").as_bytes());
        e.options_mut().insert(EdnsOption::Unknown(EDE, info));
    }
    Filtered { reply, pins, refused }
}

/// The address of an A or AAAA record.
fn address(r: &Record) -> Option<IpAddr> {
    match &r.data {
        RData::A(a) => Some(IpAddr::V4(a.0)),
        RData::AAAA(a) => Some(IpAddr::V6(a.0)),
        _ => None,
    }
}

/// Removes the address hints of an SVCB or HTTPS record (a client may
/// connect to them without asking for A or AAAA): true if it had any.
fn strip_hints(d: &mut RData) -> bool {
    let s = match d {
        RData::SVCB(s) => s,
        RData::HTTPS(h) => &mut h.0,
        _ => return false,
    };
    let n = s.svc_params.len();
    s.svc_params.retain(|(k, _)| !matches!(k, SvcParamKey::Ipv4Hint | SvcParamKey::Ipv6Hint));
    n != s.svc_params.len()
}

/// `m` in at most `limit` bytes: whole, or (too large) its header and
/// question with TC set, so that the world asks again over TCP.
pub fn encode(m: &Message, limit: usize) -> Vec<u8> {
    match m.to_vec() {
        Ok(b) if b.len() <= limit.min(MAX_MESSAGE) => b,
        Ok(_) => m.truncate().to_vec().unwrap_or_default(),
        Err(_) => error(m, ResponseCode::ServFail),
    }
}

#[cfg(test)]
#[path = "wire_tests.rs"]
mod tests;
