//! `cloche doctor`: what this machine offers, what is missing, how to fix it.

use crate::context::Context;
use crate::output::{Doctor, DoctorCheck, PoolSpace, Version};
use cloche_policy::Policy;
use cloche_world::cgroup::Layout;
use cloche_world::seccomp::{Profile, Program};
use std::path::Path;

pub(crate) struct Check {
    pub(crate) name: &'static str,
    pub(crate) ok: bool,
    /// Needed by the default policy (a failed required check fails doctor).
    pub(crate) required: bool,
    pub(crate) detail: String,
}

/// Every check, and whether the required ones passed.
pub fn doctor(ctx: &Context) -> Doctor {
    let pool = pool_space(ctx);
    let checks = run_checks(ctx, &pool);
    let failed = checks.iter().filter(|c| !c.ok && c.required).count();
    Doctor {
        schema_version: Version,
        ok: failed == 0,
        failed,
        checks: checks
            .into_iter()
            .map(|c| DoctorCheck { name: c.name.to_string(), ok: c.ok, required: c.required, detail: c.detail })
            .collect(),
        pool,
    }
}

fn run_checks(ctx: &Context, pool: &PoolSpace) -> Vec<Check> {
    let mut v = Vec::new();
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    v.push(Check {
        name: "root",
        ok: true,
        required: false,
        detail: if root {
            "running as root".into()
        } else {
            "not root: worlds without root (loopback only; limits in a delegated cgroup or --no-limits), or everything through the daemon (cloched)"
                .into()
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
    if !root {
        crate::doctor_user::checks(&mut v);
        return v;
    }
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
    userns_checks(ctx, &mut v);
    upper_checks(ctx, &mut v);
    pool_checks(ctx, pool, &mut v);
    network_checks(ctx, &mut v);
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

/// The user namespace of every world (`[world] userns`, on by default):
/// the reserved ids (the policy's or `/etc/subuid` and `/etc/subgid`), none
/// of them a user or group of this host nor another entry's, and a
/// namespace of theirs made with the root filesystem and every host data
/// mount a world carries seen through it. Required when the current
/// project's policy has user namespaces on.
fn userns_checks(ctx: &Context, v: &mut Vec<Check>) {
    use cloche_world::userns;
    let cwd = std::env::current_dir().unwrap_or_default();
    let world = ctx.resolve(&cwd.to_string_lossy()).map(|(_, p)| p.world).unwrap_or_else(|_| Policy::builtin().world);
    if !world.userns {
        let detail = "off in this project's policy ([world] userns = false): a world's ids are the host's".into();
        v.push(Check { name: "user namespace", ok: true, required: false, detail });
        return;
    }
    let mut check = |ok: bool, detail: String| v.push(Check { name: "user namespace", ok, required: true, detail });
    let range = match crate::run::userns_range(&world) {
        Ok(Some(r)) => r,
        Ok(None) => return,
        Err(e) => return check(false, e.to_string()),
    };
    if let Err(e) = range.check_host() {
        return check(false, e);
    }
    let from = if world.userns_ids.is_some() { "the policy's world.userns_ids" } else { "/etc/subuid, /etc/subgid" };
    let others = other_subid_entries(&range);
    if !others.is_empty() {
        return check(false, format!("the worlds' ids ({from}) overlap {}", others.join(", ")));
    }
    let mounts = cloche_world::layers::host_data_mounts(ctx.state_path());
    let mut paths = vec![Path::new("/")];
    paths.extend(mounts.iter().map(|m| m.path.as_path()));
    let what = format!(
        "uids {}+{n}, gids {}+{n} ({from}): {} worlds at once",
        range.uid,
        range.gid,
        range.slots(),
        n = range.count
    );
    match userns::probe(&range, &paths) {
        Ok(()) => check(true, format!("{what}; idmapped mounts of {} host mounts work", paths.len())),
        Err(e) => check(false, format!("{what}; {e}")),
    }
}

/// Entries of /etc/subuid and /etc/subgid other than cloche's whose ids
/// overlap the worlds' range.
fn other_subid_entries(range: &cloche_world::userns::IdRange) -> Vec<String> {
    let mut out = Vec::new();
    for (file, start) in [("/etc/subuid", range.uid), ("/etc/subgid", range.gid)] {
        let text = std::fs::read_to_string(file).unwrap_or_default();
        for line in text.lines() {
            let f: Vec<&str> = line.trim().split(':').collect();
            let (Some(name), Some(s), Some(c)) = (f.first(), f.get(1), f.get(2)) else { continue };
            let (Ok(s), Ok(c)) = (s.parse::<u64>(), c.parse::<u64>()) else { continue };
            let (a, b) = (u64::from(start), u64::from(start) + u64::from(range.count));
            if *name != cloche_world::userns::SUBID_NAME && s < b && a < s + c {
                out.push(format!("{file}'s entry {name}"));
            }
        }
    }
    out
}

/// Worlds' upper layers on disk (the state directory's pool, `[world]
/// upper = "disk"`, the default): btrfs, loop devices, `mkfs.btrfs` until
/// the pool exists, the pool writable, room on its filesystem. Required when
/// the current project's policy puts uppers on disk.
fn upper_checks(ctx: &Context, v: &mut Vec<Check>) {
    use cloche_world::pool;
    let cwd = std::env::current_dir().unwrap_or_default();
    let policy = ctx.resolve(&cwd.to_string_lossy()).map(|(_, p)| p.world).unwrap_or_else(|_| Policy::builtin().world);
    let required = policy.upper == cloche_policy::UpperStore::Disk;
    let hint = " (or set [world] upper = \"tmpfs\", or run with --upper tmpfs)";
    let mut check = |name, ok: bool, detail: String| {
        let detail = if ok || !required { detail } else { format!("{detail}{hint}") };
        v.push(Check { name, ok, required, detail })
    };
    let st = pool::status(ctx.state_path());
    let btrfs = cloche_world::raw::fsopen("btrfs");
    check(
        "btrfs",
        btrfs.is_ok(),
        match &btrfs {
            Ok(_) => "available (the disk pool's filesystem: a subvolume and a quota per world)".into(),
            Err(e) => format!("btrfs: {e} (CONFIG_BTRFS_FS, modprobe btrfs)"),
        },
    );
    let release = nix::sys::utsname::uname().map(|u| u.release().to_string_lossy().into_owned()).unwrap_or_default();
    let mut v = release.split(|c: char| !c.is_ascii_digit()).filter_map(|n| n.parse::<u32>().ok());
    let simple = (v.next().unwrap_or(0), v.next().unwrap_or(0)) >= (6, 7);
    check(
        "btrfs quotas",
        true,
        if simple {
            format!("simple quotas (kernel {release}): each world's cap is a quota group")
        } else {
            format!("full qgroups (kernel {release} predates simple quotas, 6.7): same caps, slower deletes")
        },
    );
    let loopdev = std::path::Path::new("/dev/loop-control").exists();
    check(
        "loop devices",
        loopdev,
        if loopdev {
            "/dev/loop-control (the pool's image is mounted through one)".into()
        } else {
            "/dev/loop-control missing (CONFIG_BLK_DEV_LOOP, modprobe loop)".into()
        },
    );
    if !st.mounted {
        let mkfs = pool::mkfs_path();
        check(
            "mkfs.btrfs",
            mkfs.is_some(),
            match &mkfs {
                Some(p) => format!("{} (makes the pool on first use)", p.display()),
                None => "not found: install btrfs-progs (it makes the pool on first use)".into(),
            },
        );
    }
}

/// Scoped networks (`--net allow=`): none is needed by the default policy
/// (loopback only), so these warn rather than fail.
fn network_checks(ctx: &Context, v: &mut Vec<Check>) {
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
    let policy =
        ctx.resolve(&cwd.to_string_lossy()).map(|(_, p)| p.network).unwrap_or_else(|_| Policy::builtin().network);
    let pool = policy.pool.unwrap_or(crate::net::POOL);
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

fn gib(b: u64) -> String {
    format!("{:.2} GiB", b as f64 / (1u64 << 30) as f64)
}

/// The disk pool's space and health, with the state directory opened
/// (which attaches a pool found detached, as every command does).
fn pool_space(ctx: &Context) -> PoolSpace {
    use cloche_world::pool;
    let root = ctx.state_path();
    let opened = ctx.state();
    let attach_error = match &opened {
        Ok(s) => s.pool_ready().err().map(|e| e.to_string().replace(" (see `cloche doctor`)", "")),
        Err(e) => Some(e.to_string()),
    };
    let root = opened.as_ref().map(|s| s.root.as_path()).unwrap_or(root);
    let st = pool::status(root);
    let mut p = PoolSpace {
        image: root.join(pool::IMAGE).display().to_string(),
        made: st.image.is_some(),
        image_size: st.image.map(|i| i.0).unwrap_or(0),
        image_allocated: st.image.map(|i| i.1).unwrap_or(0),
        mounted: st.mounted,
        device: st.device.as_ref().map(|d| d.display().to_string()),
        named: st.named,
        read_only: st.read_only,
        attach_error,
        device_errors: st.errors,
        used: st.used,
        size: st.size,
        host_free: st.host_free,
        ..PoolSpace::default()
    };
    if let Ok(state) = opened {
        for w in cloche_world::kept::list(state) {
            if w.store == "tmpfs" {
                p.kept_on_tmpfs += 1;
                p.kept_tmpfs_bytes += w.size;
            } else {
                p.kept_worlds += 1;
                p.kept_bytes += w.size;
            }
        }
    }
    p
}

/// The pool's checks: made and attached, writable, without device
/// errors, named (it outlives a reboot), room beside it; kept worlds on
/// disk. Required when the current project's policy puts uppers on disk.
fn pool_checks(ctx: &Context, p: &PoolSpace, v: &mut Vec<Check>) {
    use cloche_world::pool;
    let cwd = std::env::current_dir().unwrap_or_default();
    let policy = ctx.resolve(&cwd.to_string_lossy()).map(|(_, p)| p.world).unwrap_or_else(|_| Policy::builtin().world);
    let required = policy.upper == cloche_policy::UpperStore::Disk;
    let worlds = ctx.state_path().join("worlds");
    let (ok, detail) = if let Some(e) = &p.attach_error {
        (false, e.clone())
    } else if !p.mounted {
        (
            true,
            format!(
                "not made yet: the first world on disk (or kept) makes {}, mounted on {}",
                p.image,
                worlds.display()
            ),
        )
    } else if p.read_only {
        (
            false,
            format!(
                "{} is mounted read-only (a write error: the host disk filled?); `umount {}` and move {} aside \
                 (its worlds are lost): the next world makes a new pool",
                worlds.display(),
                worlds.display(),
                p.image
            ),
        )
    } else if p.device_errors.unwrap_or(0) > 0 {
        (
            false,
            format!(
                "btrfs counted {} errors on {} (see /sys/fs/btrfs/*/devinfo/1/error_stats): its worlds may be damaged",
                p.device_errors.unwrap_or(0),
                p.device.as_deref().unwrap_or("its device")
            ),
        )
    } else if !p.named {
        (
            false,
            format!(
                "{} is an unnamed image made by an older cloche: its worlds do not outlive a reboot; once they are \
                 reviewed, `umount {}` and the next world makes {}",
                worlds.display(),
                worlds.display(),
                p.image
            ),
        )
    } else {
        (
            true,
            format!(
                "{} ({}) mounted on {}: {} in use of {}; the image takes {} on disk (sparse, {} at most)",
                p.image,
                p.device.as_deref().unwrap_or("?"),
                worlds.display(),
                gib(p.used),
                gib(p.size),
                gib(p.image_allocated),
                gib(p.image_size)
            ),
        )
    };
    v.push(Check { name: "disk pool", ok, required, detail });
    let in_ram = {
        let st = pool::status(ctx.state_path());
        st.host_fs == libc::TMPFS_MAGIC || st.host_fs == 0x858458f6 /* ramfs */
    };
    let room = p.host_free > pool::RESERVE + pool::MIN_CAP;
    v.push(Check {
        name: "pool room",
        ok: room && !in_ram,
        required,
        detail: if in_ram {
            format!(
                "{} is in memory (tmpfs): the pool and kept worlds would take RAM and not outlive a reboot; use a \
                 disk-backed state dir",
                ctx.state_path().display()
            )
        } else {
            format!(
                "{:.1} GiB free beside the pool; each world is capped at min(world.upper_size = {} GiB, free - {} GiB)",
                p.host_free as f64 / (1u64 << 30) as f64,
                policy.upper_size >> 30,
                pool::RESERVE >> 30
            )
        },
    });
    v.push(Check {
        name: "kept worlds",
        ok: p.kept_on_tmpfs == 0,
        required: false,
        detail: if p.kept_on_tmpfs == 0 {
            format!("{} kept, {} on disk in the pool", p.kept_worlds, gib(p.kept_bytes))
        } else {
            format!(
                "{} kept on disk ({}); {} still on tmpfs ({} of memory, lost if the machine restarts): `cloche worlds \
                 gc` moves them when the pool has room",
                p.kept_worlds,
                gib(p.kept_bytes),
                p.kept_on_tmpfs,
                gib(p.kept_tmpfs_bytes)
            )
        },
    });
}
