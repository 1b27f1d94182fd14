use super::*;
use hickory_proto::rr::rdata::svcb::{IpHint, SvcParamValue, SVCB};
use hickory_proto::rr::rdata::{A, AAAA, CNAME, HTTPS, NS, TXT};

fn name(s: &str) -> Name {
    Name::from_ascii(s).unwrap()
}

fn query(id: u16, n: &str, t: RecordType, edns_size: Option<u16>) -> Vec<u8> {
    let mut m = Message::new(id, MessageType::Query, OpCode::Query);
    m.metadata.recursion_desired = true;
    m.add_query(Query::query(name(n), t));
    if let Some(size) = edns_size {
        let mut e = Edns::new();
        e.set_max_payload(size);
        m.set_edns(e);
    }
    m.to_vec().unwrap()
}

fn ask(b: &[u8]) -> Question {
    match parse_query(b) {
        Parsed::Ask(q) => q,
        other => panic!("{other:?}"),
    }
}

fn rec(owner: &str, d: RData) -> Record {
    Record::from_rdata(name(owner), 60, d)
}

fn a(s: &str) -> RData {
    RData::A(A(s.parse().unwrap()))
}

/// The upstream's reply to a message sent for `q`.
fn reply(q: &Question, answers: Vec<Record>) -> Message {
    reply_to(q.upstream(), answers)
}

fn reply_to((id, sent): (u16, Vec<u8>), answers: Vec<Record>) -> Message {
    let sent = Message::from_vec(&sent).unwrap();
    let mut r = Message::response(id, OpCode::Query);
    r.queries = sent.queries;
    r.metadata.authentic_data = true;
    r.answers = answers;
    r
}

fn no_loopback(ip: IpAddr) -> Option<Refusal> {
    ip.is_loopback().then_some(Refusal { kind: "loopback", via: None })
}

#[test]
fn queries_are_read_and_what_is_not_a_query_is_refused_or_ignored() {
    let q = ask(&query(7, "Svc.Test.", RecordType::A, None));
    assert_eq!((q.name.as_str(), q.query.metadata.id, q.udp_limit()), ("svc.test", 7, 512));
    assert_eq!(ask(&query(7, "svc.test.", RecordType::AAAA, Some(4096))).udp_limit(), 4096);
    let rcode = |p: Parsed| match p {
        Parsed::Reply(b) => (u16::from_be_bytes([b[0], b[1]]), b[3] & 0x0f),
        other => panic!("{other:?}"),
    };
    assert_eq!(rcode(parse_query(&query(9, "a.test.", RecordType::AXFR, None))), (9, 5));
    let mut ch = query(3, "version.bind.", RecordType::TXT, None);
    let n = ch.len();
    ch[n - 1] = 3; // class CH
    assert_eq!(rcode(parse_query(&ch)), (3, 5));
    let mut two = query(4, "a.test.", RecordType::A, None);
    two[5] = 2; // QDCOUNT 2, one present
    assert_eq!(rcode(parse_query(&two)), (4, 1));
    let mut notify = query(5, "a.test.", RecordType::A, None);
    notify[2] |= 4 << 3;
    assert_eq!(rcode(parse_query(&notify)), (5, 4));
    // a response, or fewer bytes than a header: no answer at all
    let mut resp = query(6, "a.test.", RecordType::A, None);
    resp[2] |= 0x80;
    assert!(matches!(parse_query(&resp), Parsed::Ignore));
    assert!(matches!(parse_query(&resp[..11]), Parsed::Ignore));
    // a raw UTF-8 label is not its IDNA name; a name over 63-byte labels is not one
    let mut raw = query(8, "sxx.test.", RecordType::A, None);
    raw[13..16].copy_from_slice("sü".as_bytes());
    match parse_query(&raw) {
        Parsed::Invalid(n, b) => assert_eq!((n.as_str(), b[3] & 0x0f), ("s\\xc3\\xbc.test", 3)),
        other => panic!("{other:?}"),
    }
}

#[test]
fn the_upstream_gets_a_fresh_message_and_only_its_answer_counts() {
    let q = ask(&query(0x1234, "svc.test.", RecordType::A, Some(4096)));
    let (id, bytes) = q.upstream();
    let sent = Message::from_vec(&bytes).unwrap();
    assert_eq!((sent.queries.len(), sent.metadata.recursion_desired), (1, true));
    assert_eq!(sent.edns.as_ref().map(|e| e.max_payload()), Some(1232));
    let good = reply_to((id, bytes), vec![rec("svc.test.", a("198.51.100.10"))]);
    assert!(q.reply_in(&good.to_vec().unwrap(), id).is_some());
    // the name in another case is the same question
    let mut upper = good.clone();
    upper.queries[0].set_name(name("SVC.Test."));
    assert!(q.reply_in(&upper.to_vec().unwrap(), id).is_some());
    let mut other_id = good.clone();
    other_id.metadata.id = id.wrapping_add(1);
    let mut other_name = good.clone();
    other_name.queries[0].set_name(name("evil.test."));
    let mut other_type = good.clone();
    other_type.queries[0].set_query_type(RecordType::AAAA);
    let mut not_a_reply = good.clone();
    not_a_reply.metadata.message_type = MessageType::Query;
    let mut no_question = good.clone();
    no_question.queries.clear();
    for bad in [other_id, other_name, other_type, not_a_reply, no_question] {
        assert!(q.reply_in(&bad.to_vec().unwrap(), id).is_none(), "{bad:?}");
    }
    assert!(q.reply_in(b"\x00\x01junk", id).is_none());
}

#[test]
fn only_the_chain_counts_and_refused_addresses_are_left_out() {
    let q = ask(&query(1, "svc.test.", RecordType::A, Some(1232)));
    let up = reply(
        &q,
        vec![
            rec("svc.test.", RData::CNAME(CNAME(name("edge.cdn.test.")))),
            rec("edge.cdn.test.", RData::CNAME(CNAME(name("node.cdn.test.")))),
            rec("node.cdn.test.", a("198.51.100.10")),
            rec("node.cdn.test.", a("127.0.0.1")),
            rec("unrelated.test.", a("198.51.100.66")),
            // a chain that loops back on itself ends
            rec("node.cdn.test.", RData::CNAME(CNAME(name("svc.test.")))),
            rec("svc.test.", RData::TXT(TXT::new(vec!["kept".into()]))),
        ],
    );
    let mut up = up;
    up.authorities.push(rec("test.", RData::NS(NS(name("ns.test.")))));
    up.additionals.push(rec("ns.test.", a("198.51.100.53")));
    let f = filter(&q, up, no_loopback);
    assert_eq!(f.pins, vec![("198.51.100.10".parse().unwrap(), 60)]);
    assert_eq!(f.refused, vec![("127.0.0.1".parse().unwrap(), Refusal { kind: "loopback", via: None })]);
    let kept: Vec<String> = f.reply.answers.iter().map(|r| format!("{} {}", r.name, r.record_type())).collect();
    assert_eq!(
        kept,
        ["svc.test. CNAME", "edge.cdn.test. CNAME", "node.cdn.test. A", "node.cdn.test. CNAME", "svc.test. TXT"]
    );
    assert_eq!((f.reply.authorities.len(), f.reply.additionals.len()), (1, 0), "glue is never pinned: left out");
    assert!(!f.reply.metadata.authentic_data, "AD is not kept when something was left out");
    assert_eq!(f.reply.metadata.id, 1);
    let ede = f.reply.edns.as_ref().unwrap().options().get(hickory_proto::rr::rdata::opt::EdnsCode::Unknown(EDE));
    assert!(matches!(ede, Some(EdnsOption::Unknown(15, d)) if d.ends_with(b"127.0.0.1: loopback")), "{ede:?}");
    // What the world reads holds no refused address.
    let bytes = encode(&f.reply, 65535);
    let read = Message::from_vec(&bytes).unwrap();
    assert!(read.answers.iter().all(|r| address(r) != Some("127.0.0.1".parse().unwrap())));
    // nothing left out: AD stays
    let clean = filter(&q, reply(&q, vec![rec("svc.test.", a("198.51.100.10"))]), no_loopback);
    assert!(clean.reply.metadata.authentic_data && clean.refused.is_empty());
}

#[test]
fn address_hints_and_ipv6_answers_are_handled_like_addresses() {
    let q = ask(&query(2, "svc.test.", RecordType::HTTPS, None));
    let hints = vec![
        (SvcParamKey::Alpn, SvcParamValue::Alpn(hickory_proto::rr::rdata::svcb::Alpn(vec!["h2".into()]))),
        (SvcParamKey::Ipv4Hint, SvcParamValue::Ipv4Hint(IpHint(vec![A("127.0.0.1".parse().unwrap())]))),
        (SvcParamKey::Ipv6Hint, SvcParamValue::Ipv6Hint(IpHint(vec![AAAA("::1".parse().unwrap())]))),
    ];
    let https = RData::HTTPS(HTTPS(SVCB::new(1, name("."), hints)));
    let v6 = RData::AAAA(AAAA("::1".parse().unwrap()));
    let f = filter(&q, reply(&q, vec![rec("svc.test.", https), rec("svc.test.", v6)]), no_loopback);
    assert_eq!(f.reply.answers.len(), 1);
    let RData::HTTPS(h) = &f.reply.answers[0].data else { panic!("{f:?}") };
    assert_eq!(h.0.svc_params.len(), 1, "only the ALPN is left");
    assert_eq!(f.refused.len(), 1);
    assert!(f.reply.edns.is_none(), "no OPT record for a world that sent none");
}

#[test]
fn replies_too_large_for_udp_are_truncated() {
    let q = ask(&query(3, "big.test.", RecordType::TXT, None));
    let long: Vec<Record> =
        (0..20).map(|i| rec("big.test.", RData::TXT(TXT::new(vec![format!("{i:0>200}")])))).collect();
    let f = filter(&q, reply(&q, long), |_| None);
    let whole = encode(&f.reply, MAX_MESSAGE);
    assert!(whole.len() > 4000);
    let small = Message::from_vec(&encode(&f.reply, q.udp_limit())).unwrap();
    assert!(small.metadata.truncation && small.answers.is_empty());
    assert_eq!((small.metadata.id, small.queries.len()), (3, 1));
}
