//! `cloche doctor`: what this machine offers, what is missing, how to fix it.

use crate::find_init;
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

pub fn main() -> i32 {
    let checks = run_checks();
    let mut failed = 0;
    for c in &checks {
        let mark = match (c.ok, c.required) {
            (true, _) => "ok  ",
            (false, true) => "FAIL",
            (false, false) => "warn",
        };
        println!("{mark} {:<14} {}", c.name, c.detail);
        if !c.ok && c.required {
            failed += 1;
        }
    }
    if failed == 0 {
        println!("cloche can run worlds here.");
        0
    } else {
        println!("{failed} required check(s) failed: `cloche run` will refuse to start.");
        1
    }
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
    let nft = Path::new("/sys/module/nf_tables").exists() || Path::new("/proc/net/netfilter").exists();
    v.push(Check {
        name: "nftables",
        ok: nft,
        required: false,
        detail: if nft {
            "nf_tables present (used by network allowlists)".into()
        } else {
            "nf_tables not loaded: modprobe nf_tables (needed for network allowlists later)".into()
        },
    });
    let init = find_init();
    v.push(Check {
        name: "cloche-init",
        ok: init.is_ok(),
        required: true,
        detail: match &init {
            Ok(p) => p.display().to_string(),
            Err(e) => e.clone(),
        },
    });
    v
}
