//! `cloche doctor` run by a user who is not root: what a world without
//! root needs here, and why it would not work (docs/security.md, *Worlds
//! without root*).

use super::doctor::Check;

/// The checks of a world without root for this user.
pub(crate) fn checks(v: &mut Vec<Check>) {
    let read = |p: &str| std::fs::read_to_string(p).ok().map(|s| s.trim().to_string());
    // Distributions that restrict unprivileged user namespaces.
    let mut why = Vec::new();
    if read("/proc/sys/kernel/unprivileged_userns_clone").as_deref() == Some("0") {
        why.push("kernel.unprivileged_userns_clone = 0 (set it to 1)");
    }
    if read("/proc/sys/user/max_user_namespaces").as_deref() == Some("0") {
        why.push("user.max_user_namespaces = 0 (set it above 0)");
    }
    let apparmor = read("/proc/sys/kernel/apparmor_restrict_unprivileged_userns").as_deref() == Some("1");
    let made = try_userns();
    v.push(Check {
        name: "user namespaces (without root)",
        ok: made.is_ok(),
        required: true,
        detail: match (&made, why.is_empty()) {
            (Ok(()), _) if apparmor => "a user may make one; kernel.apparmor_restrict_unprivileged_userns = 1: \
                                       if a world fails to mount, give cloche an AppArmor profile with `userns,` \
                                       or set it to 0"
                .into(),
            (Ok(()), _) => "this user may make one (and mount in it)".into(),
            (Err(e), false) => format!("refused ({e}): {}", why.join("; ")),
            (Err(e), true) if apparmor => format!(
                "refused ({e}): kernel.apparmor_restrict_unprivileged_userns = 1 (an AppArmor profile with `userns,` \
                 for cloche, or set it to 0)"
            ),
            (Err(e), true) => format!("refused ({e})"),
        },
    });
    let cg = cloche_world::cgroup_delegated::delegated_cgroup();
    v.push(Check {
        name: "limits (delegated cgroup)",
        ok: cg.is_ok(),
        required: false,
        detail: match cg {
            Ok(l) => format!("{}: worlds get their limits there", cloche_world::cgroup_delegated::describe(&l)),
            Err(why) => cloche_world::cgroup_delegated::no_cgroup_line(&why),
        },
    });
    v.push(Check {
        name: "scoped network",
        ok: false,
        required: false,
        detail: "--net allow= needs root on the host side: through the daemon (cloched) only; worlds without root \
                 have loopback only"
            .into(),
    });
    v.push(Check {
        name: "state directory",
        ok: true,
        required: false,
        detail: format!("{} (kept worlds, uppers: your disk)", cloche_world::state::state_dir_from_env().display()),
    });
}

/// Whether this user may make a user namespace and mount a tmpfs in it:
/// tried in a child process (`fork`, `unshare`, exit), never in this one.
fn try_userns() -> Result<(), String> {
    // SAFETY: the child makes only async-signal-safe calls and `_exit`s.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(std::io::Error::last_os_error().to_string());
    }
    if pid == 0 {
        // SAFETY: plain syscalls; the child ends here.
        unsafe {
            let flags = libc::CLONE_NEWUSER | libc::CLONE_NEWNS;
            let code = if libc::unshare(flags) != 0 { *libc::__errno_location() } else { 0 };
            libc::_exit(code.min(255));
        }
    }
    let mut status = 0;
    // SAFETY: waits for the child made above.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    match libc::WIFEXITED(status).then(|| libc::WEXITSTATUS(status)) {
        Some(0) => Ok(()),
        Some(e) => Err(std::io::Error::from_raw_os_error(e).to_string()),
        None => Err("the probe died".into()),
    }
}
