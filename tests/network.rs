//! Scoped networks end to end: `cloche run --net allow=…` against a test
//! host in a network namespace of the test's own (198.51.100.0/24), reached
//! through the host's forwarding (root).

use crate::common;

use common::*;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

#[test]
fn only_the_allowed_destination_is_reachable_and_the_report_shows_the_scope() {
    let fx = Fixture::new();
    let th = TestHost::new("0");
    let allowed = format!("{TEST_HOST}:{}", th.port);
    let others = [
        format!("{TEST_HOST}:{}", th.port + 1), // same host, another port
        format!("198.51.100.11:{}", th.port),   // another address
        "198.51.100.1:22".to_string(),          // the machine, through the link
        "169.254.169.254:80".to_string(),       // cloud metadata
        "127.0.0.1:1".to_string(),              // the world's own loopback: refused by nobody listening
    ];
    let mut script = format!("\"$PROBE\" netdev; \"$PROBE\" connect-tcp {allowed}");
    for o in &others {
        script += &format!("; \"$PROBE\" connect-tcp {o}");
    }
    // UDP to the allowed address and port (no protocol given: TCP and UDP)
    // and to another port; TCP to the machine's end of the world's link.
    let udp_other = format!("{TEST_HOST}:{}", th.port + 1);
    script +=
        &format!("; \"$PROBE\" udp-echo {allowed}; \"$PROBE\" udp-echo {udp_other}; \"$PROBE\" connect-tcp gateway:22");
    let t = Instant::now();
    let o = fx.sh(&["--net", &format!("allow={allowed}")], &script);
    o.expect_code(0);
    let lines = o.lines();
    assert_eq!(lines[1]["ok"], true, "the allowed destination: {}", o.describe());
    for (i, dest) in others.iter().enumerate() {
        assert_eq!(lines[2 + i]["ok"], false, "{dest} was reachable");
    }
    let n = 2 + others.len();
    assert_eq!((lines[n]["ok"].as_bool(), lines[n]["reply"].as_str()), (Some(true), Some("pong")), "{}", o.describe());
    assert_eq!(lines[n + 1]["ok"], false, "UDP to another port got an answer");
    assert_eq!(lines[n + 2]["ok"], false, "the machine's end of the link was reachable");
    assert!(t.elapsed() < Duration::from_secs(5), "refusals must be immediate, took {:?}", t.elapsed());
    let interfaces = string_list(&lines[0]["interfaces"]);
    assert!(interfaces.contains(&"eth0".to_string()) && interfaces.contains(&"lo".to_string()), "{interfaces:?}");
    let net = &o.report()["network"];
    assert_eq!(net["mode"], "scoped", "{net:#}");
    assert!(net["allowed"][0]["packets"].as_u64().unwrap_or(0) >= 2, "{net:#}");
    let denied: Vec<String> = net["denied"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| format!("{}:{}", d["ip"].as_str().unwrap(), d["port"]))
        .collect();
    for dest in &others[..4] {
        assert!(denied.contains(dest), "{dest} not in the denied scope {denied:?}");
    }
    let protos = |ip: &str, port: u16| {
        net["denied"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|d| d["ip"] == ip && d["port"] == port)
            .map(|d| d["proto"].clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(protos(&TEST_HOST.to_string(), th.port + 1), ["tcp", "udp"], "{net:#}");
    let gateway =
        net["address"].as_str().and_then(|a| a.parse::<Ipv4Addr>().ok()).map(|a| Ipv4Addr::from(u32::from(a) - 1));
    assert_eq!(protos(&gateway.unwrap().to_string(), 22), ["tcp"], "{net:#}");
    // The last world with a network takes the host's masquerade table away
    // (in the background: allow it a moment).
    let deadline = Instant::now() + Duration::from_secs(2);
    while cloche_net::nft::table_exists(&cloche_net::nft::socket().unwrap(), 1, "cloche_nat").unwrap() {
        assert!(Instant::now() < deadline, "cloche_nat left on the host");
        std::thread::sleep(Duration::from_millis(20));
    }
    th.finish("0");
    fx.finish();
}

/// Inside a scoped world: no netfilter netlink, packet sockets or raw
/// sockets of protocols outside the allowlist (seccomp: EAFNOSUPPORT), no
/// link or address changes by ioctl or rtnetlink (no CAP_NET_ADMIN: EPERM):
/// its ruleset and interfaces are not its to change, and it cannot forge
/// packets.
#[test]
fn a_world_cannot_touch_its_network_configuration() {
    let fx = Fixture::new();
    let o = fx.sh(
        &["--net", "allow=198.51.100.10:80"],
        "\"$PROBE\" syscall nfnetlink link-down rtnl-addr raw-socket packet-socket getpid; \"$PROBE\" netdev",
    );
    o.expect_code(0);
    let lines = o.lines();
    for (l, want) in lines[..5].iter().zip(["EAFNOSUPPORT", "EPERM", "EPERM", "EAFNOSUPPORT", "EAFNOSUPPORT"]) {
        assert_eq!((l["ret"].as_i64(), l["err"].as_str()), (Some(-1), Some(want)), "{l}");
    }
    assert!(lines[5]["ret"].as_i64().unwrap_or(-1) > 0, "control: {}", lines[5]);
    assert!(string_list(&lines[6]["interfaces"]).contains(&"eth0".to_string()), "{}", o.describe());
    fx.finish();
}

/// The world address behind host interface `ifname` (its /30 from
/// /proc/net/route: the world is `.2`).
fn world_address(ifname: &str) -> Option<Ipv4Addr> {
    let t = std::fs::read_to_string("/proc/net/route").ok()?;
    t.lines().skip(1).find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        (f.first() == Some(&ifname)).then(|| {
            let dst = u32::from_be(u32::from_str_radix(f[1], 16).ok()?);
            Some(Ipv4Addr::from(dst + 2))
        })?
    })
}

#[test]
fn two_worlds_cannot_reach_each_other() {
    use std::io::BufRead;
    let fx = Fixture::new();
    // The first world listens on every address for 4 s and, as a control,
    // connects to itself over loopback once: exactly one connection is
    // accepted unless the second world gets through.
    let script = format!(
        "PROBE='{}'\n\"$PROBE\" listen-tcp 0.0.0.0:9099 4 & sleep 0.3; \"$PROBE\" connect-tcp 127.0.0.1:9099; wait",
        probe_bin().display()
    );
    let mut cmd = fx.command();
    cmd.args(fx.run_args(&["--net", "allow=198.51.100.0/24"], &["/bin/sh", "-c", &script]));
    cmd.stdout(std::process::Stdio::piped());
    let mut first = HostChild::spawn(&mut cmd);
    let mut out = std::io::BufReader::new(first.0.stdout.take().unwrap());
    let mut line = String::new();
    while !line.contains("listening") {
        line.clear();
        assert!(out.read_line(&mut line).unwrap() > 0, "the first world never listened");
    }
    let veth = std::fs::read_dir("/sys/class/net")
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().to_string())
        .find(|n| n.starts_with("cl") && !n.starts_with("clt"))
        .expect("the first world's veth");
    let first_addr = world_address(&veth).expect("the first world's address");
    // Even with the neighbour listed as allowed, the other world refuses to
    // be reached: its input chain drops what it did not start.
    let o = fx.sh(&["--net", &format!("allow={first_addr}")], &format!("\"$PROBE\" connect-tcp {first_addr}:9099"));
    o.expect_code(0);
    assert_eq!(o.lines()[0]["ok"], false, "{first_addr} reachable: {}", o.describe());
    assert!(first.0.wait().unwrap().success());
    let rest: Vec<serde_json::Value> = out.lines().map(|l| serde_json::from_str(&l.unwrap()).unwrap()).collect();
    assert_eq!(rest[0]["ok"], true, "control: loopback inside the first world: {rest:?}");
    assert_eq!(rest[1]["accepted"], 1, "only the control connection was accepted: {rest:?}");
    fx.finish();
}

/// A batch under a project policy with `[network] allow`: each entry's span
/// carries its own network scope (its flows, its refused attempts).
#[test]
fn batch_entries_carry_their_own_network_scope() {
    let fx = Fixture::new();
    let th = TestHost::new("1");
    let allowed = format!("{TEST_HOST}:{}", th.port);
    let file = fx.out.path().join("p.toml");
    std::fs::write(&file, policy_text(300, "").replace("allow = []", &format!("allow = [\"{allowed}\"]"))).unwrap();
    fx.cloche(&["policy", "set", "--project", fx.dir().to_str().unwrap(), file.to_str().unwrap()]).expect_code(0);
    // The probe, where the world sees it (the project is exposed).
    std::fs::copy(probe_bin(), fx.dir().join("probe")).unwrap();
    let batch = serde_json::json!({"agent": "a1", "project": fx.dir().to_str().unwrap(), "entries": [
        {"command": format!("./probe connect-tcp {allowed}")},
        {"command": "./probe connect-tcp 169.254.169.254:80"}]});
    let id = submit(&fx, &batch, None);
    fx.cloche(&["batch", "approve", &id]).expect_code(0);
    let o = fx.cloche(&["batch", "run", &id]);
    o.expect_code(0);
    let lines = o.lines();
    assert_eq!((lines[0]["ok"].as_bool(), lines[1]["ok"].as_bool()), (Some(true), Some(false)), "{}", o.describe());
    let o = fx.cloche(&["trace", "show", &id, "--json"]);
    o.expect_code(0);
    let spans = o.lines();
    let entries: Vec<&serde_json::Value> = spans.iter().filter(|s| s["kind"] == "entry").collect();
    assert_eq!(entries[0]["network"]["mode"], "scoped");
    assert!(entries[0]["network"]["allowed"][0]["packets"].as_u64().unwrap_or(0) > 0, "{:#}", entries[0]);
    assert_eq!(entries[0]["network"]["denied"], serde_json::json!([]));
    assert_eq!(entries[1]["network"]["denied"][0]["ip"], "169.254.169.254", "{:#}", entries[1]);
    // (entry 1's connection may still be closing when entry 2 starts: its
    // last packets then count there.)
    discard_kept(&fx);
    th.finish("1");
    fx.finish();
}

#[test]
fn allowed_names_resolve_through_cloches_resolver_and_others_do_not() {
    let fx = Fixture::new();
    let th = TestHost::new("2");
    let asked = th.dns();
    let script = format!(
        "PROBE='{}'\n\"$PROBE\" connect-name svc.test:{p}; \"$PROBE\" connect-name other.test:{p}; \"$PROBE\" dns-query 127.0.0.53:53 svc.test",
        probe_bin().display(),
        p = th.port
    );
    let mut cmd = fx.command();
    cmd.env("CLOCHE_DNS_UPSTREAM", "198.51.100.10:53");
    let o = fx.run_with(cmd, &["--net", &format!("allow=svc.test:{}", th.port)], &["/bin/sh", "-c", &script]);
    o.expect_code(0);
    let lines = o.lines();
    assert_eq!(
        (lines[0]["resolved"].as_bool(), lines[0]["ok"].as_bool()),
        (Some(true), Some(true)),
        "{}",
        o.describe()
    );
    assert_eq!(lines[0]["addr"], format!("198.51.100.10:{}", th.port));
    assert_eq!(lines[1]["resolved"], false, "{}", o.describe());
    // A resolv.conf naming a local stub (systemd-resolved's 127.0.0.53)
    // works too: the query is answered by cloche's resolver.
    assert_eq!((lines[2]["rcode"].as_u64(), &lines[2]["addrs"]), (Some(0), &serde_json::json!(["198.51.100.10"])));
    let net = &o.report()["network"];
    assert_eq!(
        (net["allowed"][0]["dst"].as_str(), net["allowed"][0]["ip"].as_str()),
        (Some("svc.test"), Some("198.51.100.10")),
        "{net:#}"
    );
    assert!(net["allowed"][0]["packets"].as_u64().unwrap_or(0) > 0, "{net:#}");
    let refused = serde_json::json!({"name": "other.test", "reason": "not allowed"});
    assert!(net["denied_names"].as_array().unwrap().contains(&refused), "{net:#}");
    let asked = asked.lock().unwrap().clone();
    assert!(asked.iter().any(|(n, _)| n == "svc.test") && !asked.iter().any(|(n, _)| n == "other.test"), "{asked:?}");
    th.finish("2");
    fx.finish();
}

/// IPv6 like IPv4: a listed v6 destination is reachable through the host's
/// forwarding, other v6 destinations, the same host over IPv4 (not listed)
/// and the machine's own v6 address are refused at once and reported; a
/// name with only an AAAA record resolves through cloche's resolver and
/// its address is pinned into the name's IPv6 set.
#[test]
fn ipv6_destinations_work_when_listed_and_are_refused_otherwise() {
    let fx = Fixture::new();
    let th = TestHost::new("3");
    let asked = th.dns();
    let allowed = format!("[{TEST_HOST6}]:{}", th.port);
    let others = [
        format!("[{TEST_HOST6}]:{}", th.port + 1),
        format!("[2001:db8::11]:{}", th.port),
        format!("{TEST_HOST}:{}", th.port),
        format!("[{MACHINE6}]:22"),
    ];
    let mut script = format!("\"$PROBE\" connect-tcp {allowed}");
    for o in &others {
        script += &format!("; \"$PROBE\" connect-tcp {o}");
    }
    script += &format!("; \"$PROBE\" connect-name svc6.test:{}", th.port);
    // DNS sent to any server, over IPv6 too, is answered by cloche's
    // resolver (these servers do not exist: the query never leaves).
    script += "; \"$PROBE\" dns-query [2001:db8::99]:53 svc.test; \"$PROBE\" dns-query [2001:db8::99]:53 other.test";
    let mut cmd = fx.command();
    cmd.env("CLOCHE_DNS_UPSTREAM", "198.51.100.10:53");
    let t = Instant::now();
    let net = format!("allow={allowed},svc6.test:{},svc.test:{}", th.port, th.port);
    let probe = format!("PROBE='{}'\n{script}", probe_bin().display());
    let o = fx.run_with(cmd, &["--net", &net], &["/bin/sh", "-c", &probe]);
    o.expect_code(0);
    let lines = o.lines();
    assert_eq!(lines[0]["ok"], true, "the allowed v6 destination: {}", o.describe());
    for (i, dest) in others.iter().enumerate() {
        assert_eq!(lines[1 + i]["ok"], false, "{dest} was reachable");
    }
    let name = &lines[1 + others.len()];
    assert_eq!((name["resolved"].as_bool(), name["ok"].as_bool()), (Some(true), Some(true)), "{}", o.describe());
    assert_eq!(name["addr"], format!("[2001:db8::20]:{}", th.port));
    let (ok, refused) = (&lines[2 + others.len()], &lines[3 + others.len()]);
    assert_eq!((ok["rcode"].as_u64(), &ok["addrs"]), (Some(0), &serde_json::json!(["198.51.100.10"])), "{ok}");
    assert_eq!(refused["rcode"], 3, "{refused}");
    assert!(t.elapsed() < Duration::from_secs(5), "refusals must be immediate, took {:?}", t.elapsed());
    let net = &o.report()["network"];
    assert!(net["address6"].as_str().is_some_and(|a| a.starts_with("fd63:6c6f:6368:6500:")), "{net:#}");
    assert_eq!(net["allowed"][0]["ip"], format!("{TEST_HOST6}/128"), "{net:#}");
    assert!(net["allowed"][0]["packets"].as_u64().unwrap_or(0) >= 2, "{net:#}");
    assert_eq!(
        (net["allowed"][1]["dst"].as_str(), net["allowed"][1]["ip"].as_str()),
        (Some("svc6.test"), Some("2001:db8::20")),
        "{net:#}"
    );
    assert!(net["allowed"][1]["packets"].as_u64().unwrap_or(0) >= 2, "{net:#}");
    let denied: Vec<String> = net["denied"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            let ip = d["ip"].as_str().unwrap();
            if ip.contains(':') {
                format!("[{ip}]:{}", d["port"])
            } else {
                format!("{ip}:{}", d["port"])
            }
        })
        .collect();
    for dest in &others {
        assert!(denied.contains(dest), "{dest} not in the denied scope {denied:?}");
    }
    assert_eq!(denied.len(), others.len(), "only the attempts are reported: {denied:?}");
    assert_eq!(net["denied_names"], serde_json::json!([{"name": "other.test", "reason": "not allowed"}]), "{net:#}");
    assert!(!asked.lock().unwrap().iter().any(|(n, _)| n == "other.test"), "a refused name was asked upstream");
    th.finish("3");
    fx.finish();
}

/// `kill -9` of cloche while a world with a network runs: the world, its
/// namespace and its veth die with it, but the host's masquerade table
/// stays (nobody was left to remove it) until the next run's start-up
/// sweep finds the crashed run and removes it.
#[test]
fn a_crashed_networked_run_leaves_nothing_after_the_next_start() {
    let fx = Fixture::new();
    let table = || cloche_net::nft::table_exists(&cloche_net::nft::socket().unwrap(), 1, "cloche_nat").unwrap();
    let veths = || {
        std::fs::read_dir("/sys/class/net")
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().to_string())
            .filter(|n| n.len() == 14 && n.starts_with("cl") && !n.starts_with("clt"))
            .count()
    };
    let mut cmd = fx.command();
    cmd.args(fx.run_args(&["--net", "allow=198.51.100.10:80"], &["/bin/sh", "-c", "echo up; exec sleep 31.9"]));
    cmd.stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::null());
    let mut child = HostChild::spawn(&mut cmd);
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(child.0.stdout.take().unwrap()), &mut line).unwrap();
    assert_eq!(line, "up\n");
    assert!(table() && veths() == 1, "the world's network is not there");
    // SAFETY: kill with a pid and a signal.
    unsafe { libc::kill(child.pid(), libc::SIGKILL) };
    let _ = child.0.wait();
    let wait_for = |what: &str, done: &dyn Fn() -> bool| {
        let deadline = Instant::now() + Duration::from_secs(5);
        while !done() {
            assert!(Instant::now() < deadline, "{what}");
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    wait_for("the crashed world's veth outlived it", &|| veths() == 0);
    assert!(table(), "expected the host table to stay until the next run");
    fx.run(&[] as &[&str], &["true"]).expect_code(0);
    wait_for("the next run's sweep left the host table", &|| !table());
    fx.finish();
}

/// A policy whose `[network]` cannot work is refused when it is set, with
/// the bad value named, and nothing is bound.
#[test]
fn a_policy_with_a_bad_network_section_is_refused() {
    let fx = Fixture::new();
    for (bad, named) in [
        ("allow = [\"1.2.3\"]", "1.2.3"),
        ("allow = [\"[2001:db8::1\"]", "missing ]"),
        ("allow = []\npool = \"10.0.0.0/31\"", "network.pool"),
        ("allow = []\nupstream = \"resolver.example\"", "network.upstream"),
    ] {
        let file = fx.out.path().join("bad.toml");
        std::fs::write(&file, policy_text(300, "").replace("allow = []", bad)).unwrap();
        let o = fx.cloche(&["policy", "set", "--project", fx.dir().to_str().unwrap(), file.to_str().unwrap()]);
        o.expect_code(125);
        assert!(String::from_utf8_lossy(&o.stderr).contains(named), "{bad}: {}", o.describe());
    }
    let o = fx.cloche(&["policy", "list", "--json"]);
    assert!(!String::from_utf8_lossy(&o.stdout).contains(fx.dir().to_str().unwrap()), "{}", o.describe());
    fx.finish();
}

/// A policy gives its worlds addresses from its own pools, and the host
/// masquerades those too while a world under the default pools holds the
/// host table; the table still goes with the last world.
#[test]
fn a_policys_own_pools_give_the_addresses_and_are_masqueraded_too() {
    let fx = Fixture::new();
    let table = || cloche_net::nft::table_exists(&cloche_net::nft::socket().unwrap(), 1, "cloche_nat").unwrap();
    let tags = || cloche_net::scope::rule_tags(&cloche_net::nft::socket().unwrap(), 1, "cloche_nat").unwrap();
    let file = fx.out.path().join("pools.toml");
    let network = "allow = [\"198.51.100.10:80\"]\npool = \"10.77.0.0/24\"\npool6 = \"fd77:77::/64\"";
    std::fs::write(&file, policy_text(300, "").replace("allow = []", network)).unwrap();
    // World A, under the built-in policy, holds the host table with the
    // default pools while world B, under the file's, runs.
    let mut cmd = fx.command();
    cmd.args(["run", "--net", "allow=198.51.100.10:80", "--", "/bin/sh", "-c", "echo up; exec sleep 31.8"]);
    cmd.stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::null());
    let mut a = HostChild::spawn(&mut cmd);
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(a.0.stdout.take().unwrap()), &mut line).unwrap();
    assert_eq!(line, "up\n");
    assert_eq!(tags().len(), 2, "the default pools' rules");
    let o = fx.run(&["--policy", file.to_str().unwrap()], &["true"]);
    o.expect_code(0);
    let net = &o.report()["network"];
    assert!(net["address"].as_str().is_some_and(|a| a.starts_with("10.77.0.")), "{net:#}");
    assert!(net["address6"].as_str().is_some_and(|a| a.starts_with("fd77:77::")), "{net:#}");
    let have = tags();
    for (pool, prefix) in [("10.77.0.0", 24), ("fd77:77::", 64)] {
        let tag = cloche_net::nft::pool_tag(pool.parse().unwrap(), prefix);
        assert!(have.contains(&tag), "no masquerade rule for {pool}/{prefix}: {have:?}");
    }
    assert!(table(), "world A still runs: the table stays");
    // SAFETY: kill with a pid and a signal.
    unsafe { libc::kill(a.pid(), libc::SIGTERM) };
    let _ = a.0.wait();
    let deadline = Instant::now() + Duration::from_secs(5);
    while table() {
        assert!(Instant::now() < deadline, "the last world left the host table");
        std::thread::sleep(Duration::from_millis(20));
    }
    fx.finish();
}

/// cloche's end leaves nothing holding the caller's pipes: the host table's
/// removal, a moment later, runs in a process that keeps none of them (a
/// pipeline would otherwise wait for it).
#[test]
fn a_networked_run_leaves_no_one_holding_its_output() {
    use std::io::Read;
    let fx = Fixture::new();
    let mut cmd = fx.command();
    cmd.args(["run", "--net", "allow=198.51.100.10:80", "--", "true"]);
    cmd.stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    assert!(child.wait().unwrap().success());
    let t = Instant::now();
    let mut out = Vec::new();
    child.stdout.take().unwrap().read_to_end(&mut out).unwrap();
    child.stderr.take().unwrap().read_to_end(&mut out).unwrap();
    let open = t.elapsed();
    assert!(open < Duration::from_millis(150), "its output stayed open {open:?} after cloche exited");
    fx.finish();
}
