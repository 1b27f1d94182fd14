//! `cloche doctor`: what this machine offers, what is missing, how to fix it.

use cloche_policy::Policy;
use cloche_world::cgroup::Layout;
use cloche_world::seccomp::{Profile, Program};
use std::path::Path;

struct Check {
    name: &'static str,
    ok: bool,
    /// Needed by the default policy (a failed required check fails doctor).
    required: bool,
    detail: String,
}

/// `cloche doctor [--json]`.
#[derive(clap::Args)]
pub struct DoctorArgs {
    /// Print the checks as one JSON document (docs/schemas/doctor.json).
    #[arg(long)]
    json: bool,
}

pub fn main(args: DoctorArgs) -> i32 {
    let checks = run_checks();
    let failed = checks.iter().filter(|c| !c.ok && c.required).count();
    let code = if failed == 0 { 0 } else { 1 };
    if args.json {
        let doc = crate::output::Doctor {
            schema_version: crate::output::Version,
            ok: failed == 0,
            failed,
            checks: checks
                .iter()
                .map(|c| crate::output::DoctorCheck {
                    name: c.name.to_string(),
                    ok: c.ok,
                    required: c.required,
                    detail: c.detail.clone(),
                })
                .collect(),
        };
        return crate::output::emit(&doc).map_or_else(crate::fail, |()| code);
    }
    use anstyle::{AnsiColor, Style};
    let style = |c: AnsiColor| Style::new().fg_color(Some(c.into())).bold();
    for c in &checks {
        let (mark, s) = match (c.ok, c.required) {
            (true, _) => ("ok  ", style(AnsiColor::Green)),
            (false, true) => ("FAIL", style(AnsiColor::Red)),
            (false, false) => ("warn", style(AnsiColor::Yellow)),
        };
        anstream::println!("{s}{mark}{s:#} {:<14} {}", c.name, c.detail);
    }
    if failed == 0 {
        println!("cloche can run worlds here.");
    } else {
        println!("{failed} required check(s) failed: `cloche run` will refuse to start.");
    }
    code
}

fn run_checks() -> Vec<Check> {
    let mut v = Vec::new();
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    v.push(Check {
        name: "root",
        ok: root,
        required: true,
        detail: if root {
            "running as root".into()
        } else {
            "run cloche as root (rootless worlds are not supported yet)".into()
        },
    });
    for ns in ["mnt", "pid", "net", "ipc", "uts", "cgroup"] {
        let ok = Path::new("/proc/self/ns").join(ns).exists();
        v.push(Check {
            name: "namespace",
            ok,
            required: true,
            detail: if ok {
                ns.to_string()
            } else {
                format!("{ns}: kernel built without it (CONFIG_{}_NS)", ns.to_uppercase())
            },
        });
    }
    let filesystems = std::fs::read_to_string("/proc/filesystems").unwrap_or_default();
    let overlay = filesystems.lines().any(|l| l.trim_end().ends_with("overlay"));
    v.push(Check {
        name: "overlayfs",
        ok: overlay,
        required: true,
        detail: if overlay { "available".into() } else { "missing: modprobe overlay (CONFIG_OVERLAY_FS)".into() },
    });
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let seccomp_kernel = status.lines().any(|l| l.starts_with("Seccomp:"));
    let compiled = Profile::from_json(&Policy::builtin().seccomp_json)
        .map_err(|e| e.to_string())
        .and_then(|p| Program::compile(&p).map_err(|e| e.to_string()));
    v.push(Check {
        name: "seccomp",
        ok: seccomp_kernel && compiled.is_ok(),
        required: true,
        detail: match (&compiled, seccomp_kernel) {
            (_, false) => "kernel without seccomp (CONFIG_SECCOMP_FILTER)".into(),
            (Ok(p), true) => format!("default profile compiles ({} BPF instructions)", p.len()),
            (Err(e), true) => format!("default profile: {e} (install libseccomp2 >= 2.5)"),
        },
    });
    let layout = Layout::detect();
    v.push(Check {
        name: "cgroups",
        ok: !matches!(layout, Layout::Unavailable { .. }),
        required: true,
        detail: match &layout {
            Layout::V2 { root } => format!("v2 at {} (memory, pids, cpu)", root.display()),
            Layout::V1 { memory, pids, cpu } => {
                format!("v1: memory {}, pids {}, cpu {}", memory.display(), pids.display(), cpu.display())
            }
            Layout::Unavailable { missing } => format!(
                "controllers missing: {} (mount them, or enable them in the v2 root's cgroup.subtree_control)",
                missing.join(", ")
            ),
        },
    });
    network_checks(&mut v);
    // The init is embedded; a world executes it from a sealed memfd (which
    // vm.memfd_noexec=2 would forbid).
    let init = cloche_world::init::memfd();
    v.push(Check {
        name: "cloche-init",
        ok: init.is_ok(),
        required: true,
        detail: match &init {
            Ok(_) => format!("embedded ({} bytes), executed from a sealed memfd", cloche_world::init::INIT.len()),
            Err(e) => format!("cannot make its memfd: {e}"),
        },
    });
    if let Ok(v2) = std::fs::read_to_string("/proc/sys/vm/memfd_noexec") {
        if v2.trim() == "2" {
            v.push(Check {
                name: "memfd exec",
                ok: false,
                required: true,
                detail: "vm.memfd_noexec=2 forbids executing the init from a memfd (set it to 0 or 1)".into(),
            });
        }
    }
    v
}

/// Scoped networks (`--net allow=`): none is needed by the default policy
/// (loopback only), so these warn rather than fail.
fn network_checks(v: &mut Vec<Check>) {
    let check = |name, ok, detail: String| Check { name, ok, required: false, detail };
    let nft = cloche_net::nft::socket().and_then(|s| cloche_net::nft::table_exists(&s, 1, "cloche_doctor"));
    v.push(check(
        "nftables",
        nft.is_ok(),
        match &nft {
            Ok(_) => "nf_tables answers over netlink (world rulesets)".into(),
            Err(e) => format!("nf_tables: {e} (modprobe nf_tables; needed by --net allow=)"),
        },
    ));
    // A veth pair in a namespace of its own: the host is not touched.
    let veth = cloche_net::Netns::create().map_err(|e| e.to_string()).and_then(|ns| {
        use std::os::fd::AsFd;
        let r = ns.rtnl().map_err(|e| e.to_string())?;
        r.add_veth("cldoctor0", "cldoctor1", ns.as_fd()).map_err(|e| e.to_string())
    });
    v.push(check(
        "veth",
        veth.is_ok(),
        match &veth {
            Ok(()) => "veth pairs can be made (one per world with a network)".into(),
            Err(e) => format!("veth: {e} (CONFIG_VETH; needed by --net allow=)"),
        },
    ));
    // The policy of the current directory's project, or the built-in one.
    let cwd = std::env::current_dir().unwrap_or_default();
    let policy = crate::policy_store_cmd::resolve(&cwd.to_string_lossy())
        .map(|(_, p)| p.network)
        .unwrap_or_else(|_| Policy::builtin().network);
    let pool = policy.pool.unwrap_or(crate::net_args::POOL);
    let conflicts = cloche_world::network::pool_conflicts(pool);
    v.push(check(
        "address pool",
        conflicts.is_empty(),
        if conflicts.is_empty() {
            format!("{}/{}: no host route overlaps it", pool.0, pool.1)
        } else {
            format!(
                "{}/{} overlaps host routes ({}): worlds skip those slots; set [network] pool elsewhere",
                pool.0,
                pool.1,
                conflicts.join(", ")
            )
        },
    ));
    let env = std::env::var("CLOCHE_DNS_UPSTREAM").ok().filter(|u| !u.is_empty());
    let upstream = env
        .map(|u| format!("{u} (CLOCHE_DNS_UPSTREAM)"))
        .or(policy.upstream.map(|u| format!("{u} (policy)")))
        .or(cloche_world::network::host_nameserver().map(|u| format!("{u} (/etc/resolv.conf)")));
    v.push(check(
        "resolver",
        upstream.is_some(),
        match upstream {
            Some(u) => format!("allowed names are asked of {u}"),
            None => "no upstream nameserver: names in allow lists cannot resolve (set [network] upstream)".into(),
        },
    ));
    let v6 = cloche_world::network::host_has_ipv6();
    let fwd = |p: &str| std::fs::read_to_string(p).is_ok_and(|v| v.trim() == "1");
    let (f4, f6) = (fwd("/proc/sys/net/ipv4/ip_forward"), fwd("/proc/sys/net/ipv6/conf/all/forwarding"));
    v.push(check(
        "forwarding",
        true,
        format!(
            "IPv4 {}, IPv6 {}{}",
            if f4 { "on" } else { "off" },
            if !v6 {
                "unavailable: IPv6 destinations will be refused"
            } else if f6 {
                "on"
            } else {
                "off"
            },
            if f4 && (f6 || !v6) { "" } else { " (the first world with a network turns it on; it stays on)" },
        ),
    ));
}
