//! What a world learns of the host's kernel, and which kinds of socket it can
//! make: both are allowlists, checked by walking everything from inside a
//! real world, with controls that show the same walk finds more without
//! cloche (so that these tests can fail).

use crate::common;

use std::collections::BTreeSet;
use std::process::{Command, Stdio};

use common::*;
use serde_json::Value;

const EAFNOSUPPORT: i64 = 97;
const AF_UNIX: i64 = 1;
const AF_INET: i64 = 2;
const AF_INET6: i64 = 10;
const AF_NETLINK: i64 = 16;

/// What the seccomp profile lets a world create (docs/security.md, "Socket
/// families"): unix sockets; IP, ICMP, TCP, UDP and ICMPv6 sockets of types
/// stream, datagram or raw; netlink route and sock_diag; socketpair of unix.
fn allowed(call: &str, family: i64, ty: i64, protocol: i64) -> bool {
    match (call, family) {
        (_, AF_UNIX) => true,
        ("socket", AF_INET | AF_INET6) => ty & 0xc == 0 && matches!(protocol, 0 | 1 | 6 | 17 | 58),
        ("socket", AF_NETLINK) => matches!(protocol, 0 | 4),
        _ => false,
    }
}

type Attempt = (String, i64, i64, i64);

fn attempt(l: &Value) -> Attempt {
    let n = |k: &str| l[k].as_i64().unwrap_or_else(|| panic!("{k} missing in {l}"));
    (l["call"].as_str().unwrap_or("").to_string(), n("family"), n("type"), n("protocol"))
}

fn made(lines: &[Value]) -> BTreeSet<Attempt> {
    lines.iter().filter(|l| l["ret"] == 0).map(attempt).collect()
}

#[test]
fn every_socket_family_and_protocol_outside_the_allowlist_is_refused() {
    let fx = Fixture::new();
    // Control: the same walk in a new network namespace without cloche's
    // seccomp makes sockets of families and netlink protocols outside the
    // allowlist (AF_VSOCK is not even namespaced: the VM's agent listens on
    // it here), so the refusals below are the filter's.
    let mut host = Command::new("unshare");
    host.args(["--net", "--"]).arg(probe_bin()).args(["socket-walk", "64"]).stdin(Stdio::null());
    let host = run_cmd(&mut host, DEADLINE);
    host.expect_code(0);
    let host_lines = host.lines();
    let outside: Vec<Attempt> = made(&host_lines).into_iter().filter(|(c, f, t, p)| !allowed(c, *f, *t, *p)).collect();
    let families: BTreeSet<i64> = outside.iter().filter(|a| a.1 != AF_NETLINK).map(|a| a.1).collect();
    let netlink: BTreeSet<i64> = outside.iter().filter(|a| a.1 == AF_NETLINK).map(|a| a.3).collect();
    println!("outside the allowlist, made without cloche: families {families:?}, netlink protocols {netlink:?}");
    assert!(!families.is_empty(), "control: no family outside the allowlist exists here:\n{}", host.describe());
    assert!(!netlink.is_empty(), "control: no netlink protocol outside the allowlist exists here");

    let o = fx.probe::<&str, _>(&[], &["socket-walk", "64"]);
    o.expect_code(0);
    let lines = o.lines();
    assert_eq!(lines.len(), host_lines.len(), "the world's walk is not the host's\n{}", o.describe());
    let mut wrong = Vec::new();
    for l in &lines {
        let (call, family, ty, protocol) = attempt(l);
        let refused = l["ret"] == -1 && l["errno"].as_i64() == Some(EAFNOSUPPORT);
        // Inside the allowlist the kernel decides (a raw socket needs
        // CAP_NET_RAW, SOCK_SEQPACKET is not TCP's): never the filter's answer.
        if allowed(&call, family, ty, protocol) == refused {
            wrong.push(format!("{l}"));
        }
    }
    assert!(wrong.is_empty(), "{} attempts got the wrong answer:\n  {}", wrong.len(), wrong.join("\n  "));
    // What a world's own tools use works.
    let world = made(&lines);
    for (call, family, ty, protocol) in [
        ("socket", AF_UNIX, 1, 0),
        ("socket", AF_UNIX, 2, 0),
        ("socket", AF_UNIX, 5, 0),
        ("socketpair", AF_UNIX, 1, 0),
        ("socketpair", AF_UNIX, 2, 0),
        ("socket", AF_INET, 1, 0),
        ("socket", AF_INET, 2, 0),
        ("socket", AF_INET, 1, 6),
        ("socket", AF_INET, 2, 17),
        ("socket", AF_INET6, 1, 0),
        ("socket", AF_INET6, 2, 17),
        ("socket", AF_NETLINK, 3, 0),
        ("socket", AF_NETLINK, 2, 0),
        ("socket", AF_NETLINK, 3, 4),
    ] {
        let a = (call.to_string(), family, ty, protocol);
        assert!(world.contains(&a), "{a:?} must work in a world\n{}", o.describe());
    }
    fx.finish();
}

/// Files under the walked roots that a world may read. Everything else
/// there must read empty (masked) or not at all.
const READABLE: &[&str] = &[
    "/proc/cpuinfo",     // CPU count and features: runtimes, JITs, lscpu
    "/proc/meminfo",     // memory size: free, runtimes, allocators
    "/proc/stat",        // boot time and CPU times: ps, top
    "/proc/uptime",      // uptime, process ages
    "/proc/loadavg",     // uptime, top, make -l
    "/proc/version",     // what uname(2) tells anyway
    "/proc/vmstat",      // vmstat, psutil's swap counters
    "/proc/filesystems", // mount, libmount
    "/proc/cgroups",     // cgroup version detection (the JVM)
    "/proc/execdomains", // a fixed table of the kernel's personalities
    "/proc/tty/drivers", // ps maps terminal numbers to names
    "/proc/tty/ldiscs",
];

/// Walked in the world: all of /proc but the processes (pid directories,
/// self), the world's own network namespace and IPC, and /proc/sys (read-only
/// sysctls, tested in isolation.rs); and the /sys trees about the kernel,
/// its modules, firmware and machine.
const ROOTS: &[&str] = &[
    "/proc",
    "/sys/kernel",
    "/sys/module",
    "/sys/firmware",
    "/sys/hypervisor",
    "/sys/devices/virtual/dmi",
    "/sys/devices/virtual/powercap",
    "/sys/devices/system/cpu/vulnerabilities",
];
const SKIP: &[&str] = &["/proc/self", "/proc/thread-self", "/proc/net", "/proc/sys", "/proc/sysvipc"];

/// Found readable on the host (by this test, as root): the kinds of file the
/// walk must catch. Per-host addresses and layout, slab, page and key
/// statistics, the boot command line, host-wide pressure, build facts.
const HOST_CONTROLS: &[&str] = &[
    "/proc/cmdline",
    "/proc/slabinfo",
    "/proc/key-users",
    "/proc/kallsyms",
    "/proc/vmallocinfo",
    "/proc/zoneinfo",
    "/proc/buddyinfo",
    "/proc/interrupts",
    "/proc/pressure/cpu",
    "/proc/config.gz",
    "/sys/kernel/vmcoreinfo",
    "/sys/kernel/notes",
    "/sys/kernel/btf/vmlinux",
];

#[test]
fn a_world_reads_only_the_allowlisted_kernel_files() {
    let fx = Fixture::new();
    // Control: what the walk must catch exists here, non-empty, outside a world.
    let on_host: Vec<&str> =
        HOST_CONTROLS.iter().copied().filter(|p| std::fs::read(p).map(|b| !b.is_empty()).unwrap_or(false)).collect();
    println!("readable on the host: {on_host:?}");
    assert!(on_host.len() >= 5, "control: only {on_host:?} of {HOST_CONTROLS:?} are readable on the host");

    let mut args: Vec<&str> = vec!["read-tree"];
    for s in SKIP {
        args.extend(["--skip", s]);
    }
    args.extend(ROOTS);
    let o = fx.probe::<&str, _>(&[], &args);
    o.expect_code(0);
    let lines = o.lines();
    let read = |l: &Value| l["ok"] == true && l["len"].as_u64().unwrap_or(0) > 0;
    let path = |l: &Value| l["path"].as_str().unwrap_or("").to_string();
    let leaks: Vec<String> =
        lines.iter().filter(|l| read(l) && !READABLE.contains(&path(l).as_str())).map(|l| format!("{l}")).collect();
    assert!(leaks.is_empty(), "readable in a world, not on the allowlist:\n  {}", leaks.join("\n  "));
    // A mask is /dev/null, where writes vanish; nothing else may take one.
    let writable: Vec<String> = lines.iter().filter(|l| l["writable"] == true && l["null"] != true).map(path).collect();
    assert!(writable.is_empty(), "writable in a world: {writable:?}");
    // Not vacuous: the walk saw /proc's files, and what a world needs reads.
    assert!(lines.len() > 30, "the walk saw only {} files\n{}", lines.len(), o.describe());
    for need in ["/proc/cpuinfo", "/proc/meminfo", "/proc/stat", "/proc/uptime", "/proc/loadavg", "/proc/version"] {
        assert!(lines.iter().any(|l| path(l) == need && read(l)), "{need} must be readable in a world");
    }
    let unreadable: Vec<String> = lines.iter().filter(|l| l["ok"] == false).map(path).collect();
    println!("unreadable in the world (refused by the kernel): {unreadable:?}");
    fx.finish();
}
