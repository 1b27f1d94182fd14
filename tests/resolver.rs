//! cloche's resolver end to end, against a fake upstream on a test host of
//! the test's own: answers pointing where no allowed name may pin are
//! refused and reported, the forwarder takes only its upstream's answer to
//! its own question, asks over TCP when it must, answers queries
//! concurrently, and a world flooding it with refused names or refused
//! packets gets a small report at a small cost.

use crate::common;

use common::*;
use serde_json::{json, Value};
use std::net::{Ipv4Addr, Ipv6Addr, TcpListener};
use std::time::{Duration, Instant};

/// Runs `script` in a world with `--net NET`, the fake upstream on the
/// test host as its resolver's upstream.
fn run(fx: &Fixture, net: &str, script: &str) -> Outcome {
    let mut cmd = fx.command();
    cmd.env("CLOCHE_DNS_UPSTREAM", format!("{TEST_HOST}:53"));
    let script = format!("PROBE='{}'\n{script}", probe_bin().display());
    fx.run_with(cmd, &["--net", net], &["/bin/sh", "-c", &script])
}

/// The probe's line about `name` (its `target` or `name` field).
fn about<'a>(lines: &'a [Value], name: &str) -> &'a Value {
    lines
        .iter()
        .find(|l| l["name"] == name || l["target"].as_str().is_some_and(|t| t.starts_with(&format!("{name}:"))))
        .unwrap_or_else(|| panic!("no line about {name}: {lines:?}"))
}

/// An allowed name whose answer is loopback, unspecified, link-local, cloud
/// metadata, multicast, the host's own address (v4 and v6), a world pool's,
/// an IPv4-mapped loopback, NAT64 of the metadata address, or reached
/// through a CNAME chain: the world reads none of these addresses, cannot
/// connect, and the report lists each with its reason. Records for other
/// owners are never pinned. Listed by the policy itself, the same
/// addresses work.
#[test]
fn answers_pointing_where_no_name_may_pin_are_refused_and_reported() {
    let fx = Fixture::new();
    let th = TestHost::new("4");
    // A server on the host itself: the machine's end of the test link.
    let on_host = TcpListener::bind((MACHINE, 0)).unwrap();
    let hp = on_host.local_addr().unwrap().port();
    let v4 = |n: &str, ip: [u8; 4]| (n.to_string(), vec![Rr::a(n, Ipv4Addr::from(ip))]);
    let v6 = |n: &str, ip: &str| (n.to_string(), vec![Rr::aaaa(n, ip.parse::<Ipv6Addr>().unwrap())]);
    let forbidden = vec![
        (v4("lo.test", [127, 0, 0, 1]), "127.0.0.1", "loopback"),
        (v4("zero.test", [0, 0, 0, 0]), "0.0.0.0", "unspecified"),
        (v4("ll.test", [169, 254, 10, 1]), "169.254.10.1", "link-local"),
        (v4("meta.test", [169, 254, 169, 254]), "169.254.169.254", "cloud metadata"),
        (v4("azure.test", [168, 63, 129, 16]), "168.63.129.16", "cloud metadata"),
        (v4("mcast.test", [224, 0, 0, 251]), "224.0.0.251", "multicast"),
        (v4("bcast.test", [255, 255, 255, 255]), "255.255.255.255", "broadcast"),
        (v4("host.test", MACHINE.octets()), "198.51.100.1", "host address"),
        (v4("pool.test", [10, 203, 255, 254]), "10.203.255.254", "world address"),
        (v6("host6.test", "2001:db8::1"), "2001:db8::1", "host address"),
        (v6("lo6.test", "::1"), "::1", "loopback"),
        (v6("mapped.test", "::ffff:127.0.0.1"), "::ffff:127.0.0.1", "IPv4-mapped IPv6"),
        (v6("nat64.test", "64:ff9b::a9fe:a9fe"), "64:ff9b::a9fe:a9fe", "cloud metadata (IPv4 inside NAT64)"),
        (v6("sixtofour.test", "2002:7f00:1::1"), "2002:7f00:1::1", "loopback (IPv4 inside 6to4)"),
        (
            (
                "alias.test".to_string(),
                vec![Rr::cname("alias.test", "edge.elsewhere"), Rr::a("edge.elsewhere", [127, 0, 0, 2].into())],
            ),
            "127.0.0.2",
            "loopback",
        ),
    ];
    let mut table: Vec<(String, Vec<Rr>)> = forbidden.iter().map(|(t, _, _)| t.clone()).collect();
    // One good address beside a refused one, and a record for another
    // owner (never part of the answer).
    table.push((
        "mixed.test".into(),
        vec![
            Rr::a("mixed.test", [127, 0, 0, 1].into()),
            Rr::a("mixed.test", TEST_HOST),
            Rr::a("other.owner", [198, 51, 100, 66].into()),
        ],
    ));
    let _asked = th.dns_with(move |name| match table.iter().find(|(n, _)| n == name) {
        Some((_, rrs)) => Fake::Records(rrs.clone()),
        None => Fake::NxDomain,
    });
    let mut script = String::new();
    for ((name, _), _, _) in &forbidden {
        script += &format!("\"$PROBE\" connect-name {name}:{hp}\n");
    }
    script += &format!("\"$PROBE\" connect-name mixed.test:{}\n", th.port);
    let o = run(&fx, "allow=*.test", &script);
    o.expect_code(0);
    let lines = o.lines();
    for ((name, _), ip, _) in &forbidden {
        let l = about(&lines, name);
        assert_eq!((l["resolved"].as_bool(), l["ok"].as_bool()), (Some(false), Some(false)), "{name} ({ip}): {l}");
    }
    let mixed = about(&lines, "mixed.test");
    assert_eq!(
        (mixed["ok"].as_bool(), mixed["addr"].as_str()),
        (Some(true), Some(&*format!("{TEST_HOST}:{}", th.port)))
    );
    let net = &o.report()["network"];
    let denied = net["denied_names"].as_array().unwrap();
    for ((name, _), ip, reason) in &forbidden {
        let want = json!({"name": name, "ip": ip, "reason": reason});
        assert!(denied.contains(&want), "{want} not in the report: {net:#}");
    }
    assert!(denied.contains(&json!({"name": "mixed.test", "ip": "127.0.0.1", "reason": "loopback"})), "{net:#}");
    // Pinned for *.test: only the good address (not the other owner's).
    assert_eq!(net["allowed"][0]["ip"], TEST_HOST.to_string(), "{net:#}");
    assert_eq!(net["dropped"], json!({"denied": 0, "denied_names": 0, "answers": 0}), "{net:#}");

    // Listed by the policy itself, the host's address and the metadata
    // address are the policy's choice: they resolve, and the host's serves.
    let script = format!(
        "\"$PROBE\" connect-name host.test:{hp}\n\"$PROBE\" dns-query 127.0.0.1:53 meta.test\n\"$PROBE\" connect-name lo.test:{hp}"
    );
    let o = run(&fx, &format!("allow=*.test,{MACHINE}:{hp},169.254.169.254/32"), &script);
    o.expect_code(0);
    let lines = o.lines();
    assert_eq!(about(&lines, "host.test")["ok"], true, "{}", o.describe());
    assert_eq!(about(&lines, "meta.test")["addrs"], json!(["169.254.169.254"]), "{}", o.describe());
    assert_eq!(about(&lines, "lo.test")["resolved"], false, "not listed: still refused");
    let denied = o.report()["network"]["denied_names"].clone();
    assert_eq!(denied, json!([{"name": "lo.test", "ip": "127.0.0.1", "reason": "loopback"}]), "{denied:#}");
    drop(on_host);
    th.finish("4");
    fx.finish();
}

/// The forwarder: a stalled upstream answer holds up no other query; a
/// forged reply from another port, and a reply to another question, are
/// not taken; a truncated UDP answer is asked again over TCP; a TCP query
/// is asked over TCP, and its 40 KB answer reaches the world whole (over
/// UDP the world gets TC instead).
#[test]
fn the_forwarder_takes_only_its_answer_asks_over_tcp_and_never_waits_in_line() {
    let fx = Fixture::new();
    let th = TestHost::new("5");
    // 2,500 records: 62 KB from the fake (no compression), 40 KB from cloche.
    let many: Vec<Rr> = (0..2500).map(|_| Rr::a("huge.test", TEST_HOST)).collect();
    let asked = th.dns_with(move |name| match name {
        "svc.test" => Fake::Records(vec![Rr::a("svc.test", TEST_HOST)]),
        "stall.test" => Fake::Silent,
        "spoof.test" => Fake::Forged {
            forged: vec![Rr::a("spoof.test", [198, 51, 100, 66].into())],
            records: vec![Rr::a("spoof.test", TEST_HOST)],
        },
        "big.test" => Fake::Truncated(vec![Rr::a("big.test", TEST_HOST)]),
        "huge.test" => Fake::Truncated(many.clone()),
        _ => Fake::NxDomain,
    });
    let script = "\"$PROBE\" dns-query 127.0.0.1:53 stall.test &\nsleep 0.3\n\
                  \"$PROBE\" dns-query 127.0.0.1:53 svc.test\n\
                  \"$PROBE\" dns-query 127.0.0.1:53 spoof.test\n\
                  \"$PROBE\" dns-query 127.0.0.1:53 big.test\n\
                  \"$PROBE\" dns-query-tcp 127.0.0.1:53 huge.test\n\
                  wait";
    let t = Instant::now();
    let o = run(&fx, "allow=svc.test,stall.test,spoof.test,big.test,huge.test", script);
    o.expect_code(0);
    let lines = o.lines();
    let svc = about(&lines, "svc.test");
    assert_eq!((svc["rcode"].as_u64(), &svc["addrs"]), (Some(0), &json!([TEST_HOST.to_string()])), "{svc}");
    assert!(svc["ms"].as_u64().unwrap() < 800, "svc.test waited behind stall.test: {svc}");
    let spoof = about(&lines, "spoof.test");
    assert_eq!(spoof["addrs"], json!([TEST_HOST.to_string()]), "a forged or mismatched reply was taken: {spoof}");
    let big = about(&lines, "big.test");
    assert_eq!((big["tc"].as_bool(), &big["addrs"]), (Some(false), &json!([TEST_HOST.to_string()])), "{big}");
    let huge = about(&lines, "huge.test");
    assert_eq!(huge["ok"], true, "{}", o.describe());
    assert!(huge["size"].as_u64().unwrap() > 38_000, "{}", o.describe());
    assert_eq!(huge["addrs"].as_array().map(Vec::len), Some(2500));
    assert!(t.elapsed() < Duration::from_secs(10), "took {:?}", t.elapsed());
    let asked = asked.lock().unwrap().clone();
    let over = |name: &str, tcp: bool| asked.iter().any(|(n, t)| n == name && *t == tcp);
    assert!(over("big.test", false) && over("big.test", true), "{asked:?}");
    assert!(over("huge.test", true) && !over("huge.test", false), "a TCP query is asked over TCP: {asked:?}");
    // Over UDP the same answer is too large for the world: TC, no records.
    let o = run(&fx, "allow=huge.test", "\"$PROBE\" dns-query 127.0.0.1:53 huge.test");
    let huge = o.one();
    assert_eq!((huge["tc"].as_bool(), huge["addrs"].as_array().map(Vec::len)), (Some(true), Some(0)), "{huge}");
    th.finish("5");
    fx.finish();
}

/// 20,000 distinct refused names and 2,000 refused datagrams from inside a
/// world: each answered at once, and the report stays small: at most 256
/// names and 256 refused destinations listed, the rest counted.
#[test]
fn a_flood_of_refused_names_and_packets_gives_a_small_report() {
    let fx = Fixture::new();
    let mut cmd = fx.command();
    // Never asked: every name of the flood is refused.
    cmd.env("CLOCHE_DNS_UPSTREAM", "127.0.0.1:9");
    let script = format!(
        "PROBE='{}'\n\"$PROBE\" dns-flood 127.0.0.1:53 20000; \"$PROBE\" udp-spray 198.51.100.10 10000 11999",
        probe_bin().display()
    );
    let t = Instant::now();
    let o = fx.run_with(cmd, &["--net", "allow=svc.test"], &["/bin/sh", "-c", &script]);
    let took = t.elapsed();
    o.expect_code(0);
    let lines = o.lines();
    assert_eq!(
        (lines[0]["answered"].as_u64(), lines[0]["nxdomain"].as_u64()),
        (Some(20000), Some(20000)),
        "{}",
        o.describe()
    );
    assert_eq!(lines[1]["tried"], 2000, "{}", o.describe());
    let net = &o.report()["network"];
    let size = net.to_string().len();
    assert!(size < 64 << 10, "the network section is {size} bytes");
    assert_eq!(net["denied_names"].as_array().map(Vec::len), Some(256));
    assert_eq!(net["denied_names"][0], json!({"name": "f0.flood.test", "reason": "not allowed"}));
    assert_eq!(net["dropped"]["denied_names"], 20000 - 256, "{}", net["dropped"]);
    let denied = net["denied"].as_array().unwrap();
    let listed: u64 = denied.iter().map(|d| d["attempts"].as_u64().unwrap()).sum();
    assert!(denied.len() <= 256, "{} refused destinations listed", denied.len());
    assert_eq!(listed + net["dropped"]["denied"].as_u64().unwrap(), 2000, "every refused packet listed or counted");
    assert!(took < Duration::from_secs(30), "took {took:?}");
    fx.finish();
}
