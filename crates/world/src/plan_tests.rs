use super::*;
use std::collections::BTreeMap;

/// A fake root filesystem: path -> is_dir. Symlinks map to their target.
pub(crate) struct Fake {
    pub(crate) entries: BTreeMap<PathBuf, bool>,
    pub(crate) links: BTreeMap<PathBuf, PathBuf>,
}

impl Fake {
    pub(crate) fn new(dirs: &[&str], files: &[&str]) -> Fake {
        let mut entries = BTreeMap::new();
        for d in dirs {
            entries.insert(PathBuf::from(d), true);
        }
        for f in files {
            entries.insert(PathBuf::from(f), false);
        }
        Fake { entries, links: BTreeMap::new() }
    }
}

impl HostFacts for Fake {
    fn canonical(&self, p: &Path) -> Option<PathBuf> {
        // Component by component, as the kernel resolves (targets are
        // absolute).
        let mut at = PathBuf::from("/");
        for c in p.components().skip(1) {
            at.push(c);
            if let Some(t) = self.links.get(&at) {
                at = self.canonical(t)?;
            } else if !self.entries.contains_key(&at) {
                return None;
            }
        }
        Some(at)
    }
    fn read_link(&self, p: &Path) -> Option<PathBuf> {
        self.links.get(p).cloned()
    }
    fn is_dir(&self, p: &Path) -> bool {
        p == Path::new("/") || self.entries.get(p) == Some(&true)
    }
    fn exists(&self, p: &Path) -> bool {
        self.entries.contains_key(p) || self.links.contains_key(p)
    }
}

pub(crate) fn host() -> Fake {
    let mut f = Fake::new(
        &[
            "/tmp",
            "/var",
            "/var/tmp",
            "/run",
            "/root",
            "/home",
            "/home/ann",
            "/home/ann/proj",
            "/home/ann/.ssh",
            "/home/ann/proj/.ssh",
            "/etc",
            "/proc",
            "/proc/sys",
            "/proc/acpi",
            "/var/lib",
            "/var/lib/cloche",
            "/srv",
            "/srv/app",
            "/tmp/p",
            "/root/work",
            "/root/work/app",
            "/root/.ssh",
            "/root/.aws",
            "/srv/secret",
            "/srv/secret/x",
            "/srv/app/.aws",
            "/var/lib/other-state",
            "/var/lib/cloche/worlds",
        ],
        &["/etc/shadow", "/proc/kcore", "/proc/sysrq-trigger", "/home/ann/.netrc", "/root/.ssh/known_hosts"],
    );
    f.links.insert("/var/run".into(), "/run".into());
    f
}

pub(crate) fn req(cwd: &str) -> FsRequest {
    FsRequest {
        cwd: cwd.into(),
        mask: vec!["/etc/shadow".into(), "/root".into(), "/var/run/secret".into()],
        homes: vec!["/home/ann".into(), "/root".into()],
        mask_homes: true,
        home_secrets: vec![".ssh".into(), ".netrc".into(), ".aws".into()],
        expose: vec![],
        state_dirs: vec!["/var/lib/cloche".into()],
        ..FsRequest::default()
    }
}

pub(crate) fn mounted(steps: &[Step]) -> Vec<String> {
    steps
        .iter()
        .filter_map(|s| match s {
            Step::Mount { path, fstype: "tmpfs", flags, .. } => {
                Some(format!("{}{}", path.display(), if flags & MS_RDONLY != 0 { " ro" } else { "" }))
            }
            Step::MaskFile { path } => Some(format!("{} file", path.display())),
            Step::Home { path } => Some(format!("{} home", path.display())),
            Step::Scratch { path, mode, index } => Some(format!("{} scratch {mode:o} {index}", path.display())),
            _ => None,
        })
        .collect()
}

#[test]
fn defaults_mask_secrets_homes_state_and_scratch() {
    let steps = build(&host(), &req("/srv/app")).unwrap();
    let m = mounted(&steps);
    for want in [
        "/etc/shadow file",
        "/root home",
        "/home/ann home",
        "/var/lib/cloche ro",
        "/run scratch 755 0",
        "/tmp scratch 1777 1",
        "/var/tmp scratch 1777 2",
        "/proc/kcore file",
    ] {
        assert!(m.contains(&want.to_string()), "{want} missing from {m:?}");
    }
    // /srv/app is not under any mask: nothing to grab.
    assert!(!steps.iter().any(|s| matches!(s, Step::Grab { .. })));
    // a mask path that does not exist is skipped.
    assert!(!m.iter().any(|x| x.contains("secret")));
    assert!(steps.contains(&Step::ReadOnly { path: "/proc/sys".into() }));
}

#[test]
fn cwd_inside_a_home_is_exposed_and_its_secrets_masked() {
    let steps = build(&host(), &req("/home/ann/proj")).unwrap();
    let grab =
        steps.iter().position(|s| matches!(s, Step::Grab { path, .. } if path == Path::new("/home/ann/proj"))).unwrap();
    let copy = |p: &str| steps.iter().position(|s| matches!(s, Step::CopyUp { path } if path == Path::new(p))).unwrap();
    let home = steps.iter().position(|s| matches!(s, Step::Home { path } if path == Path::new("/home/ann"))).unwrap();
    let attach = steps
        .iter()
        .position(|s| matches!(s, Step::Attach { path, .. } if path == Path::new("/home/ann/proj")))
        .unwrap();
    let secret = steps
        .iter()
        .position(|s| matches!(s, Step::Mount { path, .. } if path == Path::new("/home/ann/proj/.ssh")))
        .unwrap();
    // mount points copied up, the cwd grabbed, the home bound, the cwd
    // attached in it, then the masks below the cwd.
    assert!(copy("/home/ann") < copy("/home/ann/proj") && copy("/home/ann/proj") < grab, "{steps:#?}");
    assert!(grab < home && home < attach && attach < secret, "{steps:#?}");
    // a writable home is never made read-only, and nothing is created in it
    // but by copy-up.
    assert!(!steps.iter().any(|s| matches!(s, Step::RemountRo { .. } | Step::Mkdir { .. } | Step::Touch { .. })));
    // the home's own .ssh stays hidden by the home: no separate mount.
    assert!(!mounted(&steps).iter().any(|m| m.starts_with("/home/ann/.ssh")), "{steps:#?}");
}

#[test]
fn cwd_in_tmp_survives_the_fresh_tmp() {
    let steps = build(&host(), &req("/tmp/p")).unwrap();
    assert!(steps.iter().any(|s| matches!(s, Step::Grab { path, .. } if path == Path::new("/tmp/p"))));
    assert!(steps.iter().any(|s| matches!(s, Step::Attach { path, .. } if path == Path::new("/tmp/p"))));
    // scratch stays writable
    assert!(!steps.iter().any(|s| matches!(s, Step::RemountRo { path } if path == Path::new("/tmp"))));
}

#[test]
fn explicit_expose_unmasks() {
    let mut r = req("/srv/app");
    r.expose = vec!["/etc/shadow".into(), "/home/ann".into()];
    let m = mounted(&build(&host(), &r).unwrap());
    assert!(!m.contains(&"/etc/shadow file".to_string()));
    assert!(!m.iter().any(|x| x.starts_with("/home/ann ")));
    // secrets inside an exposed home stay masked
    assert!(m.contains(&"/home/ann/.ssh ro".to_string()), "{m:?}");
    assert!(m.contains(&"/home/ann/.netrc file".to_string()), "{m:?}");
}

#[test]
fn symlinked_paths_are_canonicalized() {
    let mut h = host();
    h.links.insert("/etc/link-to-root".into(), "/root".into());
    let mut r = req("/srv/app");
    r.mask = vec!["/etc/link-to-root".into()];
    let m = mounted(&build(&h, &r).unwrap());
    assert!(m.contains(&"/root home".to_string()));
    assert!(!m.iter().any(|x| x.contains("link-to-root")));
}

#[test]
fn system_mounts_need_no_host_facts_and_masks_need_them() {
    // /proc and /dev (with /dev/null, the source of file masks) are the
    // fixed first part; the child mounts them before the host-dependent part
    // arrives, which holds no other `Mount` of a system filesystem (sysfs is
    // its own step, late: below).
    let sys = system_steps();
    assert!(sys.iter().any(|s| matches!(s, Step::Mount { fstype: "proc", .. })));
    assert!(sys.iter().any(|s| matches!(s, Step::Mknod { path, .. } if path == Path::new("/dev/null"))));
    assert!(sys.iter().all(|s| !matches!(s, Step::MaskFile { .. } | Step::Grab { .. })));
    let steps = build(&host(), &req("/srv/app")).unwrap();
    assert!(steps.iter().any(|s| matches!(s, Step::MaskFile { path } if path == Path::new("/proc/kcore"))));
    assert!(steps.iter().any(|s| matches!(s, Step::MaskFile { path } if path == Path::new("/etc/shadow"))));
    assert!(!steps.iter().any(|s| matches!(s, Step::Mount { fstype: "proc" | "sysfs" | "devpts", .. })));
    // sysfs is the plan's (it needs the world's network namespace, which
    // the parent makes meanwhile): once, after /proc's masks, before /sys's.
    assert!(!sys.iter().any(|s| matches!(s, Step::Mount { fstype: "sysfs", .. } | Step::Sysfs { .. })));
    let at = |f: &dyn Fn(&Step) -> bool| steps.iter().position(f).expect("present");
    let sysfs = at(&|s| matches!(s, Step::Sysfs { path } if path == Path::new("/sys")));
    assert_eq!(steps.iter().filter(|s| matches!(s, Step::Sysfs { .. })).count(), 1);
    let last_proc_mask = steps
        .iter()
        .rposition(|s| matches!(s, Step::MaskFile { path } | Step::MaskDir { path } if path.starts_with("/proc")))
        .unwrap();
    assert!(last_proc_mask < sysfs, "{steps:#?}");
    let sys_mask = steps.iter().position(|s| matches!(s, Step::MaskDir { path } if path.starts_with("/sys")));
    assert!(sys_mask.is_none_or(|k| k > sysfs), "{steps:#?}");
}

#[test]
fn masks_below_the_cwd_stay_in_force() {
    // /etc as cwd: /etc/shadow stays masked (nothing to grab: /etc is under no mask).
    let m = mounted(&build(&host(), &req("/etc")).unwrap());
    assert!(m.contains(&"/etc/shadow file".to_string()), "{m:?}");
    // /srv as cwd, with /srv/secret in fs.mask and /srv/app/.aws below: both masked.
    let mut r = req("/srv");
    r.mask.push("/srv/secret".into());
    let m = mounted(&build(&host(), &r).unwrap());
    assert!(m.contains(&"/srv/secret ro".to_string()), "{m:?}");
    // A cwd inside a home: grabbed, attached, then the masks below it.
    let steps = build(&host(), &req("/root/work")).unwrap();
    let at = |want: &Step| steps.iter().position(|s| s == want).unwrap_or_else(|| panic!("{want:?} in {steps:#?}"));
    let attach = at(&Step::Attach { slot: 0, path: "/root/work".into() });
    let grab = at(&Step::Grab { slot: 0, path: "/root/work".into(), read_only: false });
    assert!(at(&Step::CopyUp { path: "/root/work".into() }) < grab && grab < attach);
    assert!(at(&Step::Home { path: "/root".into() }) < attach);
}

#[test]
fn the_state_dir_is_masked_under_every_exposure_and_never_exposed() {
    // --expose of a parent of the state dir: it stays masked (today's code
    // dropped every mask an exposure contained).
    let mut r = req("/srv/app");
    r.expose = vec!["/var/lib".into()];
    let m = mounted(&build(&host(), &r).unwrap());
    assert!(m.contains(&"/var/lib/cloche ro".to_string()), "{m:?}");
    // --expose of the state dir or below: refused.
    for e in ["/var/lib/cloche", "/var/lib/cloche/worlds"] {
        let mut r = req("/srv/app");
        r.expose = vec![e.into()];
        let err = build(&host(), &r).unwrap_err();
        assert!(err.to_string().contains("cloche's state directory"), "{err}");
    }
    // Every state dir listed (this run's and the default one) is masked.
    let mut r = req("/srv/app");
    r.state_dirs.push("/var/lib/other-state".into());
    let m = mounted(&build(&host(), &r).unwrap());
    assert!(m.contains(&"/var/lib/other-state ro".to_string()), "{m:?}");
}

#[test]
fn explicit_exposures_unmask_only_what_they_name() {
    // --expose /etc no longer unmasks /etc/shadow below it.
    let mut r = req("/srv/app");
    r.expose = vec!["/etc".into()];
    assert!(mounted(&build(&host(), &r).unwrap()).contains(&"/etc/shadow file".to_string()));
    // A file exposed inside a secret dir that the home hides: copied up and
    // attached in the home.
    let mut r = req("/srv/app");
    r.expose = vec!["/root/.ssh/known_hosts".into()];
    let steps = build(&host(), &r).unwrap();
    assert!(steps.contains(&Step::CopyUp { path: "/root/.ssh/known_hosts".into() }), "{steps:#?}");
    assert!(
        steps.contains(&Step::Grab { slot: 0, path: "/root/.ssh/known_hosts".into(), read_only: false }),
        "{steps:#?}"
    );
    assert!(steps.contains(&Step::Attach { slot: 0, path: "/root/.ssh/known_hosts".into() }), "{steps:#?}");
    assert!(!mounted(&steps).contains(&"/root/.ssh ro".to_string()));
}

#[test]
fn the_cwd_is_judged_before_anything_is_planned() {
    for (cwd, want) in [
        ("/", "root directory"),
        ("/root", "home directory"),
        ("/home/ann", "home directory"),
        ("/root/.aws", "masked path /root/.aws (fs.home_secrets .aws)"),
        ("/var/lib/cloche", "masked path /var/lib/cloche (cloche's state directory)"),
        ("/var/lib", "contains cloche's state directory /var/lib/cloche"),
        ("/tmp", "scratch directory"),
        ("/run", "runtime directory"),
    ] {
        let err = build(&host(), &req(cwd)).unwrap_err();
        assert!(err.to_string().starts_with(&format!("cwd {cwd} ")), "{err}");
        assert!(err.to_string().contains(want), "{cwd}: {err}");
    }
}

#[test]
fn kernel_files_and_dirs_are_listed_without_asking_the_host() {
    // A host that has none of them: the plan lists every one anyway (the
    // child skips what its own /proc and /sys lack), in order: /proc's
    // files, /proc's directories, sysfs, /sys's directories, /proc/sys.
    let h = Fake::new(&["/var/lib"], &[]);
    let steps = build(&h, &FsRequest { cwd: "/srv/app".into(), ..FsRequest::default() }).unwrap();
    let files: Vec<&Path> = steps
        .iter()
        .filter_map(|s| if let Step::MaskFile { path } = s { Some(path.as_path()) } else { None })
        .collect();
    let dirs: Vec<&Path> =
        steps.iter().filter_map(|s| if let Step::MaskDir { path } = s { Some(path.as_path()) } else { None }).collect();
    assert_eq!(files, PROC_MASK_FILES.iter().map(Path::new).collect::<Vec<_>>());
    assert_eq!(dirs, PROC_MASK_DIRS.iter().map(Path::new).collect::<Vec<_>>());
    for f in ["/proc/kallsyms", "/proc/kmsg", "/proc/cmdline", "/proc/slabinfo", "/proc/sysrq-trigger"] {
        assert!(files.contains(&Path::new(f)), "{f}");
    }
    assert!(!files.contains(&Path::new("/proc/meminfo")) && !files.contains(&Path::new("/proc/self")));
    // /proc/sys stays readable, read-only.
    let ro: Vec<&Step> = steps.iter().filter(|s| matches!(s, Step::ReadOnly { .. })).collect();
    assert_eq!(ro, [&Step::ReadOnly { path: "/proc/sys".into() }]);
    // The whole plan survives the wire.
    let wire = crate::plan_wire::encode(&steps);
    assert_eq!(crate::plan_wire::decode(&wire[4..]).unwrap(), steps);
}
